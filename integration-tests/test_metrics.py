"""/metrics: the Prometheus endpoint (metrics.address). Scraped before and after a pod and
container lifecycle and an image pull, the counters move as they should; every scrape is
parsed by python3-prometheus-client's own parser, so the exposition format is checked by
code that is not Remora's."""
import http.client
import json
import os
import socket

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctr_helpers import container_config, create, image_ref, wait_until  # noqa: F401

FAMILIES = {
    "remora_cri_calls": "counter",
    "remora_cri_call_duration_seconds": "histogram",
    "remora_cri_calls_in_flight": "gauge",
    "remora_pods": "gauge",
    "remora_containers": "gauge",
    "remora_images": "gauge",
    "remora_image_pulls": "counter",
    "remora_image_pull_duration_seconds": "histogram",
    "remora_image_pull_bytes": "counter",
    "remora_image_layers_unpacked": "counter",
    "remora_pod_network_setup_duration_seconds": "histogram",
    "remora_pod_network_teardown_duration_seconds": "histogram",
    "remora_process_resident_memory_bytes": "gauge",
    "remora_process_open_fds": "gauge",
    "remora_process_threads": "gauge",
    "remora_shim_processes": "gauge",
    "remora_start_time_seconds": "gauge",
    "remora_startup_duration_seconds": "gauge",
    "remora_startup_repairs": "gauge",
    "remora_ipam_addresses": "gauge",
    "remora_cni_plugin_failures": "counter",
    "remora_exec_sessions": "gauge",
    "remora_streaming_sessions": "gauge",
    "remora_cri_call_wait_seconds": "histogram",
    "remora_call_pool_threads": "gauge",
}


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def get(sock_path, url="/metrics", method="GET"):
    c = UnixHTTP(sock_path)
    c.request(method, url)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, r.getheader("Content-Type"), body


class Scrape:
    """One scrape, parsed: value(name, **labels) of a sample."""

    def __init__(self, sock_path):
        status, ctype, body = get(sock_path)
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        self.families = {f.name: f for f in text_string_to_metric_families(body)}

    def value(self, name, default=0.0, **labels):
        base = name
        for suffix in ("_total", "_count", "_sum", "_bucket"):
            if name.endswith(suffix) and name[: -len(suffix)] in self.families:
                base = name[: -len(suffix)]
        for s in self.families[base].samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return default


@pytest.fixture
def mdaemon(make_daemon, tmp_path):
    d = make_daemon()
    d.metrics_sock = os.path.join(d.state, "metrics.sock")
    with open(d.config) as f:
        cfg = json.load(f)
    cfg["metrics"] = {"address": "unix://" + d.metrics_sock}
    with open(d.config, "w") as f:
        json.dump(cfg, f)
    return d.start()


def test_every_family_is_there_and_parses(mdaemon):
    s = Scrape(mdaemon.metrics_sock)
    for name, kind in FAMILIES.items():
        assert name in s.families, name
        assert s.families[name].type == kind, name
    assert s.value("remora_process_resident_memory_bytes") > 1 << 20
    assert s.value("remora_process_open_fds") > 3
    assert s.value("remora_process_threads") > 1
    assert 0 < s.value("remora_startup_duration_seconds") < 15
    assert s.value("remora_startup_repairs", part="pods") == 0  # a fresh daemon: nothing
    # the socket is for the node's operators only
    assert oct(os.stat(mdaemon.metrics_sock).st_mode & 0o777) == "0o660"
    # only /metrics, only GET
    assert get(mdaemon.metrics_sock, "/other")[0] == 404
    assert get(mdaemon.metrics_sock, method="POST")[0] == 405


def test_counters_move_with_a_lifecycle(mdaemon, image_ref, tmp_path):  # noqa: F811
    cri = mdaemon.client()
    before = Scrape(mdaemon.metrics_sock)
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    from ctr_helpers import POD
    from google.protobuf import json_format
    cfg = json_format.ParseDict(dict(POD, log_directory=str(tmp_path / "logs")),
                                cri.api.PodSandboxConfig())
    pod_id = cri.call("RunPodSandbox", config=cfg).pod_sandbox_id
    cid = create(cri, (pod_id, cfg), container_config(cri, image_ref, "m", ["sleep", "60"]))
    cri.call("StartContainer", container_id=cid)
    with pytest.raises(grpc.RpcError) as e:
        cri.call("ContainerStatus", container_id="0" * 64)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    during = Scrape(mdaemon.metrics_sock)
    calls = "remora_cri_calls_total"
    assert during.value(calls, method="RunPodSandbox", code="OK") == \
        before.value(calls, method="RunPodSandbox", code="OK") + 1
    assert during.value(calls, method="ContainerStatus", code="NOT_FOUND") == \
        before.value(calls, method="ContainerStatus", code="NOT_FOUND") + 1
    assert during.value("remora_cri_call_duration_seconds_count", method="StartContainer") == 1
    # every call handled waited for a thread, if only a little
    assert during.value("remora_cri_call_wait_seconds_count") >= 6
    assert during.value("remora_pods", state="ready") == 1
    assert during.value("remora_containers", state="running") == 1
    assert during.value("remora_images") == 1
    assert during.value("remora_image_pulls_total", result="OK") == 1
    assert during.value("remora_image_pull_duration_seconds_count") == 1
    # the busybox layer and the config: at least the layer's bytes
    assert during.value("remora_image_pull_bytes_total") > 100_000
    assert during.value("remora_image_layers_unpacked_total") == 1
    assert during.value("remora_pod_network_setup_duration_seconds_count") == \
        before.value("remora_pod_network_setup_duration_seconds_count") + 1
    # Stream* calls count under their own name
    list(cri.channel.unary_stream(
        cri.path("StreamPodSandboxes"), request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=cri.api.StreamPodSandboxesResponse.FromString)(
            cri.message("StreamPodSandboxesRequest"), timeout=10))
    wait_until(lambda: Scrape(mdaemon.metrics_sock).value(
        calls, method="StreamPodSandboxes", code="OK") == 1, "StreamPodSandboxes not counted")
    # a scrape is not a CRI call: nothing is in flight between calls
    assert during.value("remora_cri_calls_in_flight") == 0
    ipam = "remora_ipam_addresses"
    assert during.value(ipam, family="ipv4", state="in_use") == \
        before.value(ipam, family="ipv4", state="in_use") + 1
    assert during.value(ipam, family="ipv4", state="free") == \
        before.value(ipam, family="ipv4", state="free") - 1
    # The container's monitor is a real process (the count walks /proc every 5 s, not the
    # records).
    wait_until(lambda: Scrape(mdaemon.metrics_sock).value("remora_shim_processes") >= 1,
               "the container's remora-shim is not counted", timeout=12)

    cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid, timeout=0))
    cri.call("RemoveContainer", container_id=cid)
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    after = Scrape(mdaemon.metrics_sock)
    assert after.value("remora_pods", state="ready") == 0
    assert after.value("remora_pods", state="notready") == 0
    assert after.value("remora_containers", state="running") == 0
    assert after.value(ipam, family="ipv4", state="in_use") == \
        before.value(ipam, family="ipv4", state="in_use")
    # StopPodSandbox tears the network down; RemovePodSandbox makes sure again (a no-op)
    assert after.value("remora_pod_network_teardown_duration_seconds_count") >= \
        during.value("remora_pod_network_teardown_duration_seconds_count") + 1
    for m in ("StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"):
        assert after.value(calls, method=m, code="OK") == 1, m
    # A histogram's buckets are cumulative and end at its count.
    h = [x for x in after.families["remora_cri_call_duration_seconds"].samples
         if x.labels.get("method") == "RunPodSandbox" and x.name.endswith("_bucket")]
    assert [x.value for x in h] == sorted(x.value for x in h) and h[-1].labels["le"] == "+Inf"
    assert h[-1].value == after.value("remora_cri_call_duration_seconds_count",
                                      method="RunPodSandbox")
    cri.close()


def test_off_by_default(daemon):
    assert not os.path.exists(os.path.join(daemon.state, "metrics.sock"))
    assert "metrics served" not in daemon.read_log()


@pytest.mark.parametrize("address,why", [
    ("nowhere", "metrics.address"),
    ("999.1.1.1:80", "metrics.address"),
    ("127.0.0.1:0x", "metrics.address"),
    ("unix://relative.sock", "metrics.address"),
])
def test_bad_address_is_refused_at_start(make_daemon, address, why):
    d = make_daemon(config=json.dumps({"metrics": {"address": address}}))
    with pytest.raises(AssertionError) as e:
        d.start()
    assert why in str(e.value)


def test_unknown_key_is_refused(make_daemon):
    d = make_daemon(config=json.dumps({"metrics": {"adress": "127.0.0.1:1"}}))
    with pytest.raises(AssertionError) as e:
        d.start()
    assert "metrics.adress" in str(e.value)


def test_cni_plugin_failures_by_plugin(make_daemon, tmp_path):
    """A CNI network whose plugin fails: RunPodSandbox fails, and the failure is counted
    under the plugin's type."""
    confdir, bindir = tmp_path / "net.d", tmp_path / "bin"
    confdir.mkdir()
    bindir.mkdir()
    plugin = bindir / "rmfails"
    plugin.write_text("#!/bin/sh\ncat >/dev/null\n"
                      "echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no\"}'\nexit 1\n")
    plugin.chmod(0o755)
    (confdir / "10-fail.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "rmfail", "plugins": [{"type": "rmfails"}]}))
    sock = "/tmp/remora-mt-%d.sock" % os.getpid()
    d = make_daemon(config=json.dumps({
        "network": {"mode": "cni", "cni_conf_dir": str(confdir), "cni_bin_dir": str(bindir)},
        "metrics": {"address": "unix://" + sock}})).start()
    cri = d.client()
    from ctr_helpers import POD
    from google.protobuf import json_format
    cfg = json_format.ParseDict(POD, cri.api.PodSandboxConfig())
    with pytest.raises(grpc.RpcError):
        cri.call("RunPodSandbox", config=cfg)
    s = Scrape(sock)
    assert s.value("remora_cni_plugin_failures_total", plugin="rmfails") >= 1
    assert s.value("remora_cri_calls_total", method="RunPodSandbox", code="OK") == 0
    assert s.value("remora_ipam_addresses", family="ipv4", state="free") == 0  # CNI's own
    cri.close()
    d.stop()
    assert not os.path.exists(sock)  # removed at stop


def test_exec_and_streaming_sessions(mdaemon, image_ref, tmp_path):  # noqa: F811
    """An ExecSync in flight and an Exec session open show; both are gone once done."""
    import threading
    from ctr_helpers import POD
    from google.protobuf import json_format
    from test_streaming import CLOSE, STDIN, collect, connect, send
    cri = mdaemon.client()
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    cfg = json_format.ParseDict(dict(POD, log_directory=str(tmp_path / "logs")),
                                cri.api.PodSandboxConfig())
    pod_id = cri.call("RunPodSandbox", config=cfg).pod_sandbox_id
    cid = create(cri, (pod_id, cfg), container_config(cri, image_ref, "e", ["sleep", "60"]))
    cri.call("StartContainer", container_id=cid)
    t = threading.Thread(target=lambda: cri.call("ExecSync", container_id=cid,
                                                 cmd=["sleep", "3"], timeout=20))
    t.start()
    url = cri.call("Exec", container_id=cid, cmd=["/bin/cat"], stdin=True, stdout=True).url
    ws = connect(url, proto="v5.channel.k8s.io")
    send(ws, STDIN, b"x\n")
    wait_until(lambda: Scrape(mdaemon.metrics_sock).value("remora_exec_sessions",
                                                          kind="sync") == 1,
               "the ExecSync in flight is not counted")
    s = Scrape(mdaemon.metrics_sock)
    assert s.value("remora_exec_sessions", kind="stream") == 1
    assert s.value("remora_streaming_sessions", kind="exec") == 1
    assert s.value("remora_streaming_sessions", kind="attach") == 0
    send(ws, CLOSE, bytes([STDIN]))
    collect(ws)
    t.join()
    wait_until(lambda: Scrape(mdaemon.metrics_sock).value("remora_streaming_sessions",
                                                          kind="exec") == 0,
               "the finished Exec session is still counted")
    assert Scrape(mdaemon.metrics_sock).value("remora_exec_sessions", kind="sync") == 0
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    cri.close()


def test_startup_repairs_count_what_a_crash_left(make_daemon, tmp_path, monkeypatch):
    """remorad killed in the middle of RunPodSandbox: the next start undoes the run and
    counts it."""
    from ctr_helpers import POD
    from google.protobuf import json_format
    d = make_daemon()
    sock = os.path.join(d.state, "metrics.sock")
    with open(d.config) as f:
        cfg = json.load(f)
    cfg["metrics"] = {"address": "unix://" + sock}
    with open(d.config, "w") as f:
        json.dump(cfg, f)
    monkeypatch.setenv("REMORA_CRASH_AT", "runpodsandbox.pins")
    d.start()
    monkeypatch.delenv("REMORA_CRASH_AT")
    cri = d.client()
    with pytest.raises(grpc.RpcError):
        cri.call("RunPodSandbox", config=json_format.ParseDict(
            dict(POD, log_directory=str(tmp_path / "logs")), cri.api.PodSandboxConfig()))
    cri.close()
    d.proc.wait(timeout=10)
    d2 = make_daemon(base=d.base).start()
    s = Scrape(sock)
    assert s.value("remora_startup_repairs", part="pods") >= 1
    assert s.value("remora_pods", state="ready") == 0 and s.value("remora_pods",
                                                                  state="notready") == 0
    d2.stop()
