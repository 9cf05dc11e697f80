"""Fixtures: a CRI client generated from proto/api.proto at test time, and remorad
instances on private sockets with private root and state directories.

A plain module, not a conftest: the integration suite's conftest re-exports it, and the
bench smoke test loads it with `-p remora_fixtures`. A file named conftest.py loaded as a
plugin would have its fixtures scoped to its own directory, invisible to bench/tests."""
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import grpc
import pytest


def pytest_addoption(parser):
    parser.addoption("--remorad", default=os.environ.get("REMORAD"), help="remorad binary")
    parser.addoption("--proto", default=os.environ.get("REMORA_PROTO"), help="proto/api.proto")
    parser.addoption("--protoc", default="protoc", help="protoc binary")


@pytest.fixture(scope="session")
def remorad_bin(request):
    path = request.config.getoption("--remorad")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("pass --remorad=/path/to/remorad (ctest does this)")
    return path


@pytest.fixture(scope="session")
def api(request, tmp_path_factory):
    """The CRI v1 messages, compiled from the project's own proto with protoc."""
    proto = request.config.getoption("--proto")
    out = tmp_path_factory.mktemp("gen")
    subprocess.run([request.config.getoption("--protoc"), "-I", os.path.dirname(proto),
                    "--python_out", str(out), proto], check=True)
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("api_pb2")
    finally:
        sys.path.remove(str(out))


class Cri:
    """A CRI client over grpc's generic calls: cri.call("Version", field=value)."""

    def __init__(self, api, target):
        self.api = api
        self.channel = grpc.insecure_channel(target)
        self.services = {
            m.name: (s.full_name, m)
            for s in api.DESCRIPTOR.services_by_name.values() for m in s.methods
        }

    def message(self, name, **fields):
        return getattr(self.api, name)(**fields)

    def path(self, method):
        return "/%s/%s" % (self.services[method][0], method)

    def call(self, method, request=None, timeout=10, **fields):
        _, m = self.services[method]
        if request is None:
            request = self.message(m.input_type.name, **fields)
        fn = self.channel.unary_unary(
            self.path(method), request_serializer=lambda r: r.SerializeToString(),
            response_deserializer=getattr(self.api, m.output_type.name).FromString)
        return fn(request, timeout=timeout)

    def raw(self, path, payload, timeout=10):
        fn = self.channel.unary_unary(path, request_serializer=None,
                                      response_deserializer=None)
        return fn(payload, timeout=timeout)

    def close(self):
        self.channel.close()


# remorad's built-in "network" section (network/config.c, README "Pod networking").
BUILTIN_NETWORK = {"bridge": "remora0", "subnet": "10.77.0.0/16", "nft_table": "remora",
                   "veth_prefix": "rmv"}
# What the suite's daemons use instead: the built-in names belong to a remorad the host
# may be running, whose nft table a test daemon would rebuild at its start, and whose
# bridge the suite would otherwise leave behind.
SUITE_NETWORK = {"bridge": "rmit0", "subnet": "10.76.0.0/16", "nft_table": "remora_it",
                 "veth_prefix": "rit"}


def suite_network():
    """REMORA_IT_NETWORK (a JSON object) when set, so that two suites can run at once on
    one host, each with its own bridge, subnet, nft table and veth prefix; else
    SUITE_NETWORK."""
    extra = os.environ.get("REMORA_IT_NETWORK")
    return json.loads(extra) if extra else dict(SUITE_NETWORK)


def with_test_network(config):
    """The suite's network (suite_network) becomes the "network" section of every daemon
    config that has none."""
    try:
        doc = json.loads(config)
    except ValueError:
        return config  # a test feeding remorad a broken config on purpose
    if isinstance(doc, dict) and "network" not in doc:
        doc["network"] = suite_network()
        return json.dumps(doc)
    return config


def it_network_setting(key):
    """What the daemons of this run use for one network key (see with_test_network)."""
    return suite_network().get(key, BUILTIN_NETWORK[key])


def remove_suite_network():
    """The bridge and nft tables the suite's daemons made (remorad leaves its bridge at
    exit on purpose, as CNI's bridge plugin does); never the built-in ones."""
    bridge, table = it_network_setting("bridge"), it_network_setting("nft_table")
    if bridge != BUILTIN_NETWORK["bridge"]:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    if table != BUILTIN_NETWORK["nft_table"]:
        for family in ("ip", "ip6"):
            subprocess.run(["nft", "delete", "table", family, table], capture_output=True)


class Daemon:
    """One remorad with its own root, state and socket under a short temp dir (unix
    socket paths are limited to 107 bytes, pytest's tmp_path can be longer)."""

    def __init__(self, binary, api, base=None, extra_args=(), config=None):
        self.binary = binary
        self.api = api
        self.base = base or tempfile.mkdtemp(prefix="remora-it-", dir="/tmp")
        self.root = os.path.join(self.base, "root")
        self.state = os.path.join(self.base, "state")
        self.socket = os.path.join(self.state, "remora.sock")
        self.config = os.path.join(self.base, "config.json")
        if not os.path.exists(self.config) or config is not None:
            with open(self.config, "w") as f:
                f.write(with_test_network(config if config is not None else "{}"))
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = os.path.join(self.base, "remorad.log")
        self.clients = []

    def args(self):
        return [self.binary, "--config", self.config, "--root", self.root,
                "--state", self.state, "--log-level", "debug"] + self.extra_args

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("remorad exited with %s:\n%s" % (self.proc.returncode,
                                                                      self.read_log()))
            if os.path.exists(self.socket):
                c = self.client()
                try:
                    c.call("Version", timeout=2)
                    return
                except grpc.RpcError:
                    pass
                finally:
                    c.close()
            time.sleep(0.05)
        raise AssertionError("remorad not ready in %ss:\n%s" % (timeout, self.read_log()))

    def client(self):
        return Cri(self.api, "unix://" + self.socket)

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("remorad ignored %s for %ss" % (sig, timeout))
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        try:
            if self.proc and self.proc.poll() not in (None, 0, -signal.SIGKILL,
                                                      -signal.SIGTERM):
                # It died by itself (a crash, a sanitizer report): show why before the
                # directory and its log go.
                try:
                    log = self.read_log()[-20000:]
                except OSError as e:  # a test sharing the directory already removed it
                    log = str(e)
                print("remorad exited with %s; the end of its log:\n%s" % (
                    self.proc.returncode, log))
            self.stop(signal.SIGKILL)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def suite_network_removed():
    """After the last test: no bridge or nft table of the suite's left on the host."""
    yield
    remove_suite_network()


@pytest.fixture
def make_daemon(remorad_bin, api):
    made = []

    def make(**kw):
        d = Daemon(remorad_bin, api, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


@pytest.fixture
def daemon(make_daemon):
    return make_daemon().start()


@pytest.fixture
def cri(daemon):
    c = daemon.client()
    yield c
    c.close()
