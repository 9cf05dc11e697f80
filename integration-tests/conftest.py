"""The suite's fixtures live in remora_fixtures.py so other suites can load them too."""
from remora_fixtures import *  # noqa: F401,F403  (fixtures and pytest_addoption)
