"""What both real-kernel network test files need: shell calls, the node's address, and the
rmnet-test driver with its store and the namespaces a test pins."""
import os
import subprocess

import pytest


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check)


def node_address(skip_prefixes):
    """A global IPv4 address of the node on an interface whose name starts with none of
    skip_prefixes (the test's bridge and veths); skips the test when there is none."""
    r = sh("ip", "-4", "-o", "addr", "show", "scope", "global", check=False)
    for line in r.stdout.splitlines():
        f = line.split()
        if not f[1].startswith(tuple(skip_prefixes)):
            return f[3].split("/")[0]
    pytest.skip("the node has no global IPv4 address")


def driver_binary(request):
    binary = request.config.getoption("--rmnet")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail("pass --rmnet=/path/to/rmnet-test (ctest does this)")
    return binary


class Driver:
    """rmnet-test runs with a config and a store under base; namespaces go in nsdir."""

    def __init__(self, binary, base, config):
        self.binary = binary
        self.base = base
        self.config = config
        self.store = os.path.join(base, "store")
        self.nsdir = os.path.join(base, "netns")
        os.makedirs(self.nsdir)
        self.netns = []
        self.procs = []

    def run(self, *args, check=True, config=None):
        r = subprocess.run([self.binary, config or self.config, self.store, *args],
                           capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"rmnet-test {' '.join(args)}: {r.stderr}")
        return r

    def make_netns(self, name):
        """A pinned namespace the way the sandbox layer makes one: a bind-mounted nsfs."""
        path = os.path.join(self.nsdir, name)
        open(path, "w").close()
        self.netns.append(path)
        sh("unshare", f"--net={path}", "true")
        return path

    def in_ns(self, ns, *args, **kw):
        return subprocess.run(["nsenter", f"--net={ns}", *args], capture_output=True, text=True,
                              **kw)

    def stop_procs(self):
        for p in self.procs:
            p.kill()
            p.wait()

    def unpin(self):
        for path in self.netns:
            sh("umount", path, check=False)
