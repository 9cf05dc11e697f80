def pytest_addoption(parser):
    parser.addoption("--rmnet", help="the rmnet-test driver binary")
