"""The foundation: the daemon's lifecycle, its socket, config, and the RPCs every
client calls first (Version, Status), plus the gRPC error contract."""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import grpc
import pytest

RUNTIME_METHODS_WITH_HANDLERS = {"Version", "Status", "UpdateRuntimeConfig", "RuntimeConfig",
                                 "GetContainerEvents", "RunPodSandbox", "StopPodSandbox",
                                 "RemovePodSandbox", "PodSandboxStatus", "ListPodSandbox",
                                 "PullImage", "ListImages", "ImageStatus", "RemoveImage",
                                 "ImageFsInfo", "CreateContainer", "StartContainer",
                                 "StopContainer", "RemoveContainer", "ListContainers",
                                 "ContainerStatus", "ExecSync", "ContainerStats",
                                 "ListContainerStats", "PodSandboxStats", "ListPodSandboxStats",
                                 "UpdateContainerResources", "ReopenContainerLog", "Exec",
                                 "PortForward", "Attach", "StreamPodSandboxes",
                                 "StreamContainers", "StreamContainerStats",
                                 "StreamPodSandboxStats", "StreamImages",
                                 "ListMetricDescriptors", "ListPodSandboxMetrics",
                                 "StreamPodSandboxMetrics", "UpdatePodSandboxResources"}


def remorad_version(remorad_bin):
    out = subprocess.run([remorad_bin, "--version"], capture_output=True, text=True, check=True)
    m = re.match(r"remorad (\S+) \(commit \S+\), CRI API v1$", out.stdout.strip())
    assert m, out.stdout
    return m.group(1)


def test_version(cri, remorad_bin):
    r = cri.call("Version", version="v1")
    assert r.runtime_name == "remora"
    assert r.runtime_api_version == "v1"
    assert r.runtime_version == remorad_version(remorad_bin)
    assert r.version == "0.1.0"


def conditions(resp):
    return {c.type: c for c in resp.status.conditions}


def test_status_conditions(cri):
    r = cri.call("Status")
    conds = conditions(r)
    assert set(conds) == {"RuntimeReady", "NetworkReady"}
    assert conds["RuntimeReady"].status is True, conds["RuntimeReady"]
    # The default config sets up the built-in bridge (the suite runs as root).
    assert conds["NetworkReady"].status is True, conds["NetworkReady"]
    assert len(r.info) == 0, "info is only filled for verbose requests"


def test_status_verbose_info_is_json(cri, daemon):
    r = cri.call("Status", verbose=True)
    info = {k: json.loads(v) for k, v in r.info.items()}
    assert info["config"]["root"] == daemon.root
    assert info["config"]["state"] == daemon.state
    assert info["config"]["listen"] == "unix://" + daemon.socket
    assert info["runtime"]["path"].endswith("/runc")
    assert info["build"]["pid"] == daemon.proc.pid


def test_runtime_config_reports_cgroupfs(cri):
    r = cri.call("RuntimeConfig")
    assert r.linux.cgroup_driver == cri.api.CgroupDriver.Value("CGROUPFS")


def pod_cidr_in_status(cri):
    info = cri.call("Status", verbose=True).info
    return json.loads(info["runtime_config"])["pod_cidr"]


def test_update_runtime_config_pod_cidr(cri):
    assert pod_cidr_in_status(cri) == ""
    for cidr in ["10.244.1.0/24", "10.244.1.0/24,fd00:10:244:1::/64"]:
        cri.call("UpdateRuntimeConfig",
                 runtime_config=cri.message("RuntimeConfig", network_config=cri.message(
                     "NetworkConfig", pod_cidr=cidr)))
        assert pod_cidr_in_status(cri) == cidr
    for bad in ["10.244.1.0", "10.244.1.0/33", "banana/8", "10.0.0.0/24,", "fd00::/129"]:
        with pytest.raises(grpc.RpcError) as e:
            cri.call("UpdateRuntimeConfig",
                     runtime_config=cri.message("RuntimeConfig", network_config=cri.message(
                         "NetworkConfig", pod_cidr=bad)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "pod_cidr" in e.value.details() and bad in e.value.details()
    # A bad update leaves the last good one in place.
    assert pod_cidr_in_status(cri) == "10.244.1.0/24,fd00:10:244:1::/64"


def test_status_runtime_missing_is_not_ready(make_daemon):
    d = make_daemon(extra_args=["--runtime-path", "/nonexistent/runc"]).start()
    c = d.client()
    conds = conditions(c.call("Status"))
    c.close()
    assert conds["RuntimeReady"].status is False
    assert conds["RuntimeReady"].reason == "OCIRuntimeUnavailable"
    assert "/nonexistent/runc" in conds["RuntimeReady"].message


@pytest.mark.parametrize("mode,reason", [("none", "NetworkDisabled"),
                                         ("cni", "NetworkPluginNotReady")])
def test_status_network_not_ready_names_the_reason(make_daemon, mode, reason):
    # a CNI config dir that cannot exist, whatever the host has in /etc/cni/net.d
    d = make_daemon(config='{"network": {"mode": "%s", "cni_conf_dir": "/nonexistent/net.d"}}'
                    % mode).start()
    c = d.client()
    conds = conditions(c.call("Status"))
    c.close()
    assert conds["NetworkReady"].status is False
    assert conds["NetworkReady"].reason == reason
    assert conds["NetworkReady"].message


def all_methods(cri):
    return [(m, cri.services[m][1]) for m in cri.services]


def test_every_other_method_is_unimplemented_and_named(cri):
    seen = 0
    for name, m in all_methods(cri):
        if name in RUNTIME_METHODS_WITH_HANDLERS:
            continue
        req = cri.message(m.input_type.name)
        if m.server_streaming:
            fn = cri.channel.unary_stream(cri.path(name),
                                          request_serializer=lambda r: r.SerializeToString(),
                                          response_deserializer=None)
            with pytest.raises(grpc.RpcError) as e:
                list(fn(req, timeout=5))
        else:
            with pytest.raises(grpc.RpcError) as e:
                cri.call(name, req, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, name
        assert cri.path(name) in e.value.details(), e.value.details()
        seen += 1
    # Both services, every RPC of CRI v1 (cri-api v0.36: 35 + 6).
    assert len(cri.services) == 41
    assert seen == len(cri.services) - len(RUNTIME_METHODS_WITH_HANDLERS)


def test_unknown_method(cri):
    with pytest.raises(grpc.RpcError) as e:
        cri.raw("/runtime.v1.RuntimeService/NoSuchMethod", b"")
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/runtime.v1.RuntimeService/NoSuchMethod" in e.value.details()


@pytest.mark.parametrize("payload", [
    b"\x0a\xff\xff\xff\xff\x0f",   # field 1, length far past the end
    b"\x0a\x05ab",                  # field 1, truncated string
    b"\x0f",                        # wire type 7 does not exist
    b"\xff" * 11,                   # varint longer than 10 bytes
])
def test_garbage_payload_is_invalid_argument(cri, payload):
    with pytest.raises(grpc.RpcError) as e:
        cri.raw("/runtime.v1.RuntimeService/Version", payload)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "VersionRequest" in e.value.details()
    # The daemon is unharmed.
    assert cri.call("Version").runtime_name == "remora"


def test_message_size_limit_is_16_mib(cri):
    big = cri.call("Version", version="x" * (15 * 1024 * 1024))
    assert big.runtime_name == "remora"
    with pytest.raises(grpc.RpcError) as e:
        cri.call("Version", version="x" * (17 * 1024 * 1024))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert cri.call("Version").runtime_name == "remora"


def test_concurrent_calls(cri):
    errors, done = [], []

    def worker():
        try:
            for _ in range(25):
                assert cri.call("Version").runtime_name == "remora"
                assert len(cri.call("Status").status.conditions) == 2
            done.append(1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(done) == 16


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def thread_count(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))


def test_no_fd_or_thread_leak_across_calls(daemon, cri):
    pid = daemon.proc.pid

    def mixed_calls(n):
        for _ in range(n):
            cri.call("Version")
            with pytest.raises(grpc.RpcError):
                cri.call("CheckpointContainer")  # not implemented
            with pytest.raises(grpc.RpcError):
                cri.raw("/runtime.v1.RuntimeService/Version", b"\x0f")

    mixed_calls(20)  # let gRPC start its lazily created threads and timers first
    fds, threads = fd_count(pid), thread_count(pid)
    mixed_calls(300)
    assert fd_count(pid) == fds
    # gRPC's executor may add a thread or two under load; a leak per call would add
    # hundreds.
    assert thread_count(pid) <= threads + 3

    # Connections that come and go leave nothing behind either.
    for _ in range(50):
        c = daemon.client()
        c.call("Version")
        c.close()
    time.sleep(0.5)
    assert fd_count(pid) == fds


def test_socket_and_directory_modes(daemon):
    st = os.lstat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert stat.S_IMODE(os.stat(daemon.state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(daemon.root).st_mode) == 0o700


def test_listen_flag_places_socket(make_daemon):
    d = make_daemon()
    sock = os.path.join(d.base, "sockdir", "cri.sock")
    d.extra_args = ["--listen", "unix://" + sock]
    d.socket = sock
    d.start()
    assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
    assert not os.path.exists(os.path.join(d.state, "remora.sock"))


def test_sigterm_stops_cleanly_and_restarts(make_daemon):
    d = make_daemon().start()
    c = d.client()
    assert c.call("Version").runtime_name == "remora"
    c.close()
    assert d.stop(signal.SIGTERM) == 0
    assert not os.path.exists(d.socket), "socket left behind after SIGTERM"
    assert "remorad stopped" in d.read_log()

    # Same root and state: starts again and serves.
    again = make_daemon(base=d.base).start()
    c = again.client()
    assert c.call("Version").runtime_name == "remora"
    c.close()
    assert again.stop(signal.SIGINT) == 0
    assert not os.path.exists(again.socket)


def test_sigterm_finishes_call_in_flight(make_daemon):
    """A large request is still being received when SIGTERM arrives; it completes."""
    d = make_daemon().start()
    c = d.client()
    results = []

    def slow_call():
        try:
            results.append(c.call("Version", version="y" * (15 * 1024 * 1024), timeout=30))
        except grpc.RpcError as e:
            results.append(e)

    t = threading.Thread(target=slow_call)
    t.start()
    time.sleep(0.05)
    assert d.stop(signal.SIGTERM) == 0
    t.join()
    c.close()
    # Either it finished before the signal or it was allowed to finish; a call the
    # daemon had accepted must never be cut off.
    assert len(results) == 1
    if isinstance(results[0], grpc.RpcError):
        # Only acceptable failure: the call never reached remorad. Either the connection
        # was refused, or its request was still arriving: gRPC core hands a registered
        # method's call to the server only with its whole payload, and at shutdown it
        # cancels the calls it had not handed over yet.
        assert results[0].code() in (grpc.StatusCode.UNAVAILABLE,
                                     grpc.StatusCode.CANCELLED), results[0]
    else:
        assert results[0].runtime_name == "remora"


def test_second_daemon_on_same_state_is_refused(make_daemon, daemon):
    second = make_daemon(base=daemon.base)
    second.start(wait=False)
    assert second.proc.wait(timeout=10) != 0
    log = second.read_log()
    assert "another remorad (pid %d)" % daemon.proc.pid in log
    assert daemon.state in log
    # The first one is unaffected, socket included.
    c = daemon.client()
    assert c.call("Version").runtime_name == "remora"
    c.close()


def test_second_daemon_on_same_root_is_refused(make_daemon, daemon):
    """Two daemons writing one meta store would corrupt it, even with separate states."""
    second = make_daemon()
    second.extra_args = ["--root", daemon.root]
    second.start(wait=False)
    assert second.proc.wait(timeout=10) != 0
    log = second.read_log()
    assert "another remorad (pid %d) is already using root directory %s" % (
        daemon.proc.pid, daemon.root) in log
    assert not os.path.exists(second.socket)


def test_live_socket_of_another_daemon_is_not_taken(make_daemon, daemon):
    other = make_daemon()
    other.extra_args = ["--listen", "unix://" + daemon.socket]
    other.start(wait=False)
    assert other.proc.wait(timeout=10) != 0
    assert "another server is listening on %s" % daemon.socket in other.read_log()
    c = daemon.client()
    assert c.call("Version").runtime_name == "remora"
    c.close()


def test_stale_socket_from_crash_is_replaced(make_daemon):
    d = make_daemon().start()
    d.stop(signal.SIGKILL)
    assert os.path.exists(d.socket), "a killed daemon leaves its socket behind"
    again = make_daemon(base=d.base).start()
    assert "removed stale socket %s" % again.socket in again.read_log()
    c = again.client()
    assert c.call("Version").runtime_name == "remora"
    c.close()


def test_non_socket_at_listen_path_is_refused(make_daemon):
    d = make_daemon()
    os.makedirs(d.state)
    with open(d.socket, "w") as f:
        f.write("precious")
    d.start(wait=False)
    assert d.proc.wait(timeout=10) != 0
    assert "is not a socket" in d.read_log()
    with open(d.socket) as f:
        assert f.read() == "precious"


# --- configuration -----------------------------------------------------------------

def run(remorad_bin, *args):
    return subprocess.run([remorad_bin, *args], capture_output=True, text=True, timeout=10)


def test_help_and_version(remorad_bin):
    r = run(remorad_bin, "--help")
    assert r.returncode == 0
    for flag in ("--config", "--listen", "--root", "--state", "--log-level", "--workers",
                 "--runtime-path"):
        assert flag in r.stdout
    r = run(remorad_bin, "--version")
    assert r.returncode == 0 and r.stdout.startswith("remorad ")


def test_defaults(remorad_bin, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    r = run(remorad_bin, "--config", str(cfg), "--print-config")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "listen": "unix:///run/remora/remora.sock", "root": "/var/lib/remora",
        "state": "/run/remora", "log_level": "info", "workers": 1, "poll_spin_us": 50,
        "runtime_path": "runc"}


def test_flags_override_config_file(remorad_bin, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"root": "/srv/r", "state": "/srv/s", "log_level": "debug",
                               "workers": 3}))
    r = run(remorad_bin, "--config", str(cfg), "--log-level", "warn", "--print-config")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["root"] == "/srv/r" and got["workers"] == 3
    assert got["log_level"] == "warn"
    assert got["listen"] == "unix:///srv/s/remora.sock"


@pytest.mark.parametrize("doc,needle", [
    ('{"rooot": "/x"}', '"rooot"'),
    ('{"workers": "four"}', '"workers" must be an integer'),
    ('{"workers": 0}', '"workers" must be between'),
    ('{"root": 5}', '"root" must be a string'),
    ('{"root": "relative"}', '"root" must be an absolute path'),
    ('{"log_level": "loud"}', '"log_level"'),
    ('{"listen": "tcp://0.0.0.0:1"}', '"listen"'),
    ('[1, 2]', "must be a JSON object"),
    ('{"image": 5}', '"image" must be an object'),
    ('{"network": []}', '"network" must be an object'),
    ('{"root": ', "not valid JSON"),
])
def test_bad_config_is_rejected_naming_the_key(remorad_bin, tmp_path, doc, needle):
    cfg = tmp_path / "c.json"
    cfg.write_text(doc)
    r = run(remorad_bin, "--config", str(cfg), "--print-config")
    assert r.returncode == 2
    assert needle in r.stderr, r.stderr
    assert str(cfg) in r.stderr


@pytest.mark.parametrize("section", ["image", "sandbox", "network", "streaming"])
def test_unknown_key_in_a_module_section_stops_start(make_daemon, section):
    """Module sections are checked by their module when the daemon starts."""
    d = make_daemon(config='{"%s": {"no_such_key": true}}' % section)
    d.start(wait=False)
    assert d.proc.wait(timeout=10) != 0
    assert 'unknown config key "%s.no_such_key"' % section in d.read_log()
    assert not os.path.exists(d.socket)


def test_missing_explicit_config_is_an_error(remorad_bin, tmp_path):
    r = run(remorad_bin, "--config", str(tmp_path / "absent.json"), "--print-config")
    assert r.returncode == 2
    assert "absent.json" in r.stderr


def test_bad_flag_value(remorad_bin, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    r = run(remorad_bin, "--config", str(cfg), "--workers", "lots")
    assert r.returncode == 2 and "--workers" in r.stderr
    r = run(remorad_bin, "--config", str(cfg), "--no-such-flag")
    assert r.returncode == 2


def test_store_survives_restart(make_daemon):
    """The meta store's directory is created under --root and kept across restarts."""
    d = make_daemon().start()
    assert os.path.isdir(os.path.join(d.root, "images"))
    assert os.path.isdir(os.path.join(d.root, "sandboxes"))
    assert d.stop() == 0
    assert os.path.isfile(os.path.join(d.state, "remorad.lock"))


def test_deploy_config_is_valid_and_matches_defaults(remorad_bin):
    """deploy/config.json spells out every key at its built-in default."""
    path = os.path.join(os.path.dirname(__file__), "..", "deploy", "config.json")
    r = run(remorad_bin, "--config", path, "--print-config")
    assert r.returncode == 0, r.stderr
    with open(path) as f:
        assert json.loads(r.stdout) == json.load(f)
