"""Smoke test of remora-bench against a test remorad: the tool runs, finds the daemon,
writes JSON that parses, and marks what the daemon does not implement as unsupported.
It asserts no performance figure. Runs with the integration suite's fixtures loaded as a
plugin (ctest passes -p remora_fixtures), so the daemon is started the same way."""
import json
import os
import signal
import subprocess
import time

import grpc
import pytest


@pytest.fixture(scope="session")
def bench_bin():
    path = os.environ.get("REMORA_BENCH")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("set REMORA_BENCH=/path/to/remora-bench (ctest does this)")
    return path


def implemented(cri, method, **fields):
    try:
        cri.call(method, timeout=10, **fields)
    except grpc.RpcError as e:
        return e.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


def run_bench(bench_bin, *args, timeout=300):
    return subprocess.run([bench_bin] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def test_smoke_json(bench_bin, daemon, cri, tmp_path):
    out = tmp_path / "bench.json"
    sock = "unix://" + daemon.socket
    r = run_bench(bench_bin, "--endpoint", sock, "-n", "3", "--warmup", "1", "--parallel", "2",
                  "--pods", "1", "--list-sizes", "2", "--timeout", "60", "--json", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())

    ep = report["endpoints"][0]
    assert ep["endpoint"] == sock
    assert ep["runtime"].startswith("remora ")
    # The daemon was found through the socket's peer credentials, not guessed.
    assert ep["pid"] == daemon.proc.pid
    assert report["machine"]["nproc"] >= 1

    figs = {f["name"]: f for f in report["figures"]}
    for name in ("Version", "Status"):
        res = figs[name]["results"][0]
        assert res["state"] == "ok", res
        assert res["n"] == 3
        assert 0 < res["p50"] <= res["p95"] <= res["max"]
    idle = figs["daemon RSS idle"]["results"][0]
    assert idle["state"] == "ok" and idle["value"] > 1  # MB; remorad is not that small

    for f in report["figures"]:
        res = f["results"][0]
        assert res["state"] in ("ok", "unsupported", "failed"), f
        if res["state"] != "ok":
            assert res.get("note"), f  # a missing figure always says why
        if res["state"] == "unsupported":
            assert "UNIMPLEMENTED" in res["note"], f

    # What the daemon answers UNIMPLEMENTED for must be reported unsupported, not failed.
    if not implemented(cri, "RunPodSandbox", config=cri.message("PodSandboxConfig")):
        for name in ("RunPodSandbox", "StopPodSandbox", "pod+container to RUNNING"):
            assert figs[name]["results"][0]["state"] == "unsupported", figs[name]
        assert "unsupported" in r.stdout
    if not implemented(cri, "ListImages"):
        assert figs["ListImages"]["results"][0]["state"] == "unsupported"

    # Nothing it created is left behind.
    if implemented(cri, "ListPodSandbox"):
        left = [p for p in cri.call("ListPodSandbox").items
                if p.metadata.namespace == "remora-bench"]
        assert left == []


def test_two_endpoints_ratio(bench_bin, make_daemon, tmp_path):
    a = make_daemon().start()
    b = make_daemon().start()
    out = tmp_path / "bench.json"
    r = run_bench(bench_bin, "--endpoint", "unix://" + a.socket, "--endpoint",
                  "unix://" + b.socket, "-n", "3", "--only", "rpc", "--json", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert [e["pid"] for e in report["endpoints"]] == [a.proc.pid, b.proc.pid]
    version = next(f for f in report["figures"] if f["name"] == "Version")
    assert [x["state"] for x in version["results"]] == ["ok", "ok"]
    assert version["ratio_p50"] > 0
    assert "A/B p50" in r.stdout


def test_bad_arguments(bench_bin):
    assert run_bench(bench_bin).returncode == 2
    r = run_bench(bench_bin, "--endpoint", "tcp://127.0.0.1:1")
    assert r.returncode == 2 and "unix://" in r.stderr
    r = run_bench(bench_bin, "--endpoint", "unix:///nonexistent/remora.sock", "--timeout", "2")
    assert r.returncode == 1 and "Version" in r.stderr


def test_sigint_stops_and_reports(bench_bin, daemon, tmp_path):
    """SIGINT ends the loops, runs the cleanup and still writes the report (exit 130)."""
    out = tmp_path / "bench.json"
    p = subprocess.Popen([bench_bin, "--endpoint", "unix://" + daemon.socket, "-n", "100000",
                          "--only", "rpc", "--json", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert p.poll() is None, "finished before the signal: raise -n"
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 130, stderr
    assert "interrupted" in stderr
    report = json.loads(out.read_text())
    version = next(f for f in report["figures"] if f["name"] == "Version")["results"][0]
    assert version["state"] == "ok" and 0 < version["n"] < 100000
    assert "Version" in stdout
