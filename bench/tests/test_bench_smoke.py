"""Smoke test of remora-bench against a test remorad: the tool runs, finds the daemon,
writes JSON that parses, and marks what the daemon does not implement as unsupported.
It asserts no performance figure. Runs with the integration suite's fixtures loaded as a
plugin (ctest passes -p remora_fixtures), so the daemon is started the same way."""
import html.parser
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


class Page(html.parser.HTMLParser):
    """What the report page holds: its tags, text, and any reference to elsewhere."""

    def __init__(self):
        super().__init__()
        self.tags, self.text, self.refs, self.rects = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href")]
        if tag == "rect":
            self.rects.append((int(a["y"]), int(a["width"]), a["fill"]))

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_from_two_endpoints(bench_bin, make_daemon, tmp_path):
    """--html: one self-contained page, a chart per scenario with both runtimes, and the
    same figures as the JSON of the same run."""
    a = make_daemon().start()
    b = make_daemon().start()
    out_json, out_html = tmp_path / "bench.json", tmp_path / "bench.html"
    r = run_bench(bench_bin, "--endpoint", "unix://" + a.socket, "--endpoint",
                  "unix://" + b.socket, "-n", "3", "--only", "rpc,lists", "--list-sizes", "2",
                  "--json", str(out_json), "--html", str(out_html))
    assert r.returncode == 0, r.stderr
    report = json.loads(out_json.read_text())
    page = Page()
    page.feed(out_html.read_text())
    text = " ".join(page.text)
    scenarios = {f["scenario"] for f in report["figures"]}
    assert scenarios == {"rpc", "lists"}
    assert page.tags.count("svg") == len(scenarios)
    assert page.refs == []  # nothing loaded from elsewhere
    for f in report["figures"]:
        assert f["name"] in text
    assert report["endpoints"][0]["runtime"] in text and "A/B p50" in text


def test_html_report_from_saved_json(bench_bin, tmp_path):
    """--from-json draws a saved run without a daemon; what the JSON says is escaped, and
    each row is scaled to its own largest p95."""
    doc = {
        "tool": "remora-bench", "run_id": "t1",
        "machine": {"os": "Debian", "kernel": "6.1", "arch": "x86_64", "nproc": 2},
        "options": {"n": 3, "warmup": 1, "image": "img"},
        "endpoints": [{"label": "A", "endpoint": "unix:///a", "runtime": "<script>x</script>"},
                      {"label": "B", "endpoint": "unix:///b", "runtime": "other & co"}],
        "figures": [
            {"name": "Version", "unit": "ms", "scenario": "rpc", "ratio_p50": 0.5,
             "results": [{"endpoint": "A", "state": "ok", "n": 3, "p50": 1, "p95": 2, "max": 2},
                         {"endpoint": "B", "state": "ok", "n": 3, "p50": 2, "p95": 4,
                          "max": 5}]},
            {"name": "daemon RSS idle", "unit": "MB", "scenario": "memory",
             "results": [{"endpoint": "A", "state": "ok", "value": 10},
                         {"endpoint": "B", "state": "unsupported", "note": "no pid"}]},
        ],
    }
    src, out = tmp_path / "run.json", tmp_path / "run.html"
    src.write_text(json.dumps(doc))
    r = run_bench(bench_bin, "--from-json", str(src), "--html", str(out))
    assert r.returncode == 0, r.stderr
    body = out.read_text()
    assert "<script>" not in body and "&lt;script&gt;" in body and "other &amp; co" in body
    page = Page()
    page.feed(body)
    assert page.tags.count("svg") == 2
    # Version: B's p95 (4) fills the row (460 px), A's p95 (2) half of it, A's p50 a quarter.
    widths = sorted(w for _, w, _ in page.rects)
    assert 460 in widths and 230 in widths and 115 in widths
    assert "unsupported" in " ".join(page.text)
    # Without --html, or with endpoints as well, it is a usage error.
    assert run_bench(bench_bin, "--from-json", str(src)).returncode == 2
    assert run_bench(bench_bin, "--from-json", str(tmp_path / "none.json"),
                     "--html", str(out)).returncode == 1
