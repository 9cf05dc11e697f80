"""`remorad --check`: one OK / WARN / FAIL line per host check, exit 1 only on a FAIL, and
nothing on the host changed. What each line should say is worked out here from the host
itself (mountinfo, /proc), independently of remorad's C code."""
import json
import os
import re
import subprocess
import tempfile

import pytest

LINE = re.compile(r"^(OK|WARN|FAIL) +(\S+(?: \S+)?) {2,}\S")
NAMES = ["config", "runtime", "helpers", "cgroups", "cgroup controllers", "overlayfs",
         "idmapped mounts", "nftables", "bridge", "ip forwarding", "root", "state",
         "state lock", "socket", "oom_score_adj"]


def run_check(remorad_bin, base, *args, config=None):
    cmd = [remorad_bin, "--check", "--root", os.path.join(base, "root"),
           "--state", os.path.join(base, "state")]
    if config is not None:
        path = os.path.join(base, "check.json")
        with open(path, "w") as f:
            json.dump(config, f)
        cmd += ["--config", path]
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    checks = {}
    for line in lines[:-1]:
        m = LINE.match(line)
        assert m, "not a check line: %r" % line
        checks.setdefault(m.group(2), []).append((m.group(1), line))
    return p.returncode, checks, lines[-1] if lines else ""


def levels(checks, name):
    return [lvl for lvl, _ in checks[name]]


def cgroup_layout():
    """v1, hybrid or v2, from mountinfo."""
    v1 = v2 = False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fstype = line.split(" - ")[1].split()[0]
            v1 |= fstype == "cgroup"
            v2 |= fstype == "cgroup2"
    return "hybrid" if v1 and v2 else "v1" if v1 else "v2"


def may_lower_oom_score_adj():
    """What remorad's probe finds: can this process lower its own oom_score_adj?"""
    with open("/proc/self/oom_score_adj") as f:
        cur = int(f.read())
    if cur <= -1000:
        return True
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(cur - 1))
    except OSError:
        return False
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(cur))
    return True


@pytest.fixture
def base():
    d = tempfile.mkdtemp(prefix="remora-chk-", dir="/tmp")
    yield d
    subprocess.run(["rm", "-rf", d])


def test_check_on_this_host(remorad_bin, base):
    rc, checks, summary = run_check(remorad_bin, base)
    assert sorted(checks) == sorted(NAMES)
    fails = [line for v in checks.values() for lvl, line in v if lvl == "FAIL"]
    assert rc == 0 and not fails, fails
    assert re.fullmatch(r"0 failed, \d+ warnings", summary)
    # The runtime line carries runc's own version.
    version = subprocess.run(["runc", "--version"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    assert version in checks["runtime"][0][1]
    # The cgroup layout is named as the host has it; v1 and hybrid are warnings.
    layout = cgroup_layout()
    lvl, line = checks["cgroups"][0]
    if layout == "hybrid":
        assert lvl == "WARN" and "hybrid" in line and "/sys/fs/cgroup/unified" in line
    elif layout == "v1":
        assert lvl == "WARN" and "v1 only" in line
    else:
        assert lvl == "OK" and "v2" in line
    # The oom_score_adj restriction is a warning exactly where the host has it.
    assert levels(checks, "oom_score_adj") == (["OK"] if may_lower_oom_score_adj() else ["WARN"])
    if not may_lower_oom_score_adj():
        assert "refuses lowering" in checks["oom_score_adj"][0][1]
    # Nothing was created: the directories are reported as made at start.
    assert os.listdir(base) == []
    assert "(created at start)" in checks["root"][0][1]


def test_missing_runtime_fails(remorad_bin, base):
    rc, checks, summary = run_check(remorad_bin, base, "--runtime-path", "/nonexistent/runc")
    assert rc == 1
    assert levels(checks, "runtime") == ["FAIL"]
    assert "/nonexistent/runc" in checks["runtime"][0][1]
    assert summary.startswith("1 failed")


def test_bad_network_section_fails_naming_the_key(remorad_bin, base):
    rc, checks, _ = run_check(remorad_bin, base, config={"network": {"subnet": "bogus"}})
    assert rc == 1
    assert levels(checks, "config") == ["FAIL"]
    assert "network.subnet" in checks["config"][0][1]


def test_unloadable_config_fails(remorad_bin, base):
    rc, checks, _ = run_check(remorad_bin, base, config={"no_such_key": 1})
    assert rc == 1 and list(checks) == ["config"]
    assert "no_such_key" in checks["config"][0][1]


def test_running_daemon_fails_socket_and_lock(make_daemon, remorad_bin):
    d = make_daemon().start()
    rc, checks, _ = run_check(remorad_bin, d.base, "--root", d.root, "--state", d.state)
    assert rc == 1
    assert levels(checks, "socket") == ["FAIL"] and d.socket in checks["socket"][0][1]
    assert levels(checks, "state lock") == ["FAIL"]
    # and the daemon is untouched by the check
    c = d.client()
    c.call("Version")
    c.close()


def test_stale_socket_is_fine(make_daemon, remorad_bin):
    d = make_daemon().start()
    d.stop(sig=9)
    rc, checks, _ = run_check(remorad_bin, d.base, "--root", d.root, "--state", d.state)
    assert levels(checks, "socket") == ["OK"] and "stale" in checks["socket"][0][1]
    assert levels(checks, "state lock") == ["OK"]
    assert rc == 0
