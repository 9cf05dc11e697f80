"""GetContainerEvents: a server-streaming call that holds no worker, ends cleanly when
the client leaves or the daemon stops, and refuses a request that does not decode."""
import os
import signal
import threading
import time

import grpc
import pytest

EVENTS = "/runtime.v1.RuntimeService/GetContainerEvents"


def open_stream(cri, timeout=None):
    fn = cri.channel.unary_stream(EVENTS, request_serializer=lambda r: r.SerializeToString(),
                                  response_deserializer=cri.api.ContainerEventResponse.FromString)
    return fn(cri.message("GetEventsRequest"), timeout=timeout)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_stream_stays_open_without_events(cri):
    it = open_stream(cri, timeout=1.0)
    with pytest.raises(grpc.RpcError) as e:
        next(it)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_open_streams_hold_no_worker(make_daemon):
    """More streams than workers, and unary calls still go through."""
    d = make_daemon(extra_args=["--workers", "2"]).start()
    c = d.client()
    streams = [open_stream(c) for _ in range(6)]
    time.sleep(0.3)
    for _ in range(10):
        assert c.call("Version").runtime_name == "remora"
    for s in streams:
        s.cancel()
    c.close()


def test_cancelled_streams_leak_nothing(daemon):
    pid = daemon.proc.pid
    c = daemon.client()

    def churn(n):
        streams = [open_stream(c) for _ in range(n)]
        time.sleep(0.2)
        for s in streams:
            s.cancel()
        time.sleep(0.3)

    churn(5)  # gRPC's own lazily made fds and threads first
    fds = fd_count(pid)
    for _ in range(5):
        churn(10)
    assert fd_count(pid) <= fds
    c.close()


def test_sigterm_ends_open_streams_promptly(make_daemon):
    d = make_daemon().start()
    c = d.client()
    it = open_stream(c)
    got = {}

    def reader():
        try:
            for _ in it:
                pass
            got["code"] = grpc.StatusCode.OK
        except grpc.RpcError as e:
            got["code"] = e.code()

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.3)
    start = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - start < 5, "an open stream must not hold up shutdown"
    t.join(5)
    assert got.get("code") in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), got
    assert not os.path.exists(d.socket)
    c.close()


def test_garbage_request_is_invalid_argument(cri):
    fn = cri.channel.unary_stream(EVENTS, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as e:
        list(fn(b"\xff\xff\xff", timeout=5))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "GetEventsRequest" in e.value.details()


def test_two_clients_see_the_same_ordered_container_events(daemon, cri, tmp_path):
    """Every change of a container reaches every client in order, with the pod's status and
    the container's; a client that never reads holds nobody up."""
    from ctr_helpers import container_config, create, pod_running, pulled_image

    ref = pulled_image(cri)
    pod_id, cfg = pod_running(cri, tmp_path, uid="events")
    idle = open_stream(cri)  # opened, never read
    streams = [open_stream(cri, timeout=30), open_stream(cri, timeout=30)]
    time.sleep(0.2)
    cid = create(cri, (pod_id, cfg), container_config(cri, ref, "ev", ["/bin/sh", "-c",
                                                                        "exit 2"]))
    cri.call("StartContainer", container_id=cid)
    deadline = time.monotonic() + 15
    while cri.call("ContainerStatus", container_id=cid).status.state != \
            cri.api.CONTAINER_EXITED and time.monotonic() < deadline:
        time.sleep(0.05)
    cri.call("RemoveContainer", container_id=cid)
    want = [cri.api.CONTAINER_CREATED_EVENT, cri.api.CONTAINER_STARTED_EVENT,
            cri.api.CONTAINER_STOPPED_EVENT, cri.api.CONTAINER_DELETED_EVENT]
    seen = []
    for s in streams:
        got = []
        for ev in s:
            if ev.container_id == cid:
                got.append(ev)
            if len(got) == 4:
                break
        s.cancel()
        assert [e.container_event_type for e in got] == want, got
        assert all(e.pod_sandbox_status.id == pod_id for e in got), got
        assert [e.created_at for e in got] == sorted(e.created_at for e in got), got
        stopped = got[2].containers_statuses
        assert [c.id for c in stopped] == [cid] and stopped[0].exit_code == 2, got[2]
        assert list(got[3].containers_statuses) == [], got[3]
        seen.append([(e.container_event_type, e.created_at) for e in got])
    assert seen[0] == seen[1], "both clients got the very same events"
    idle.cancel()
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
