"""The call path under load: slow calls (ExecSync, PullImage, StopContainer waiting out
its grace period) never hold the threads that answer the calls kubelet polls, and calls
whose client gave up are let go. Each quick call must answer within QUICK_BOUND seconds
while the slow ones are in flight: a functional bound (the old front end took 5-14 s),
not a performance target; bench/README has the latencies."""
import json
import os
import threading
import time

import grpc
import pytest

import registry as R
from ctr_helpers import container_config, create, image_ref, pod  # noqa: F401

QUICK_BOUND = 1.0
N_EXEC = int(os.environ.get("REMORA_IT_LOAD_EXECS", "64"))
N_STOP = 8
N_PULL = 4


def future(cri, method, deadline, request=None, **fields):
    _, m = cri.services[method]
    if request is None:
        request = cri.message(m.input_type.name, **fields)
    fn = cri.channel.unary_unary(
        cri.path(method), request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=getattr(cri.api, m.output_type.name).FromString)
    return fn.future(request, timeout=deadline)


def timed(cri, method, **fields):
    t0 = time.monotonic()
    cri.call(method, timeout=30, **fields)
    return time.monotonic() - t0


def probe_quick_calls(cri, pod_id, cid, rounds):
    """Every polling call kubelet makes, `rounds` times; returns {method: [seconds]}."""
    calls = [("Version", {}), ("Status", {}), ("ListPodSandbox", {}), ("ListContainers", {}),
             ("PodSandboxStatus", {"pod_sandbox_id": pod_id}),
             ("ContainerStatus", {"container_id": cid}), ("ListImages", {})]
    took = {m: [] for m, _ in calls}
    for _ in range(rounds):
        for m, kw in calls:
            took[m].append(timed(cri, m, **kw))
        time.sleep(0.05)
    return took


def assert_fast(took):
    slow = {m: max(t) for m, t in took.items() if max(t) > QUICK_BOUND}
    assert not slow, "quick calls over %.1f s under load: %s" % (QUICK_BOUND, slow)


def slow_registry():
    """An in-process registry whose blobs are held back until release is set."""
    reg = R.FakeRegistry()
    release = threading.Event()
    handler = reg.server.RequestHandlerClass
    plain = handler.do_GET

    def held(self):
        if "/blobs/" in self.path:
            release.wait(60)
        return plain(self)

    handler.do_GET = held
    refs = [reg.add("slow/img%d" % i, "v1", R.Image([R.busybox_layer(("sh", "true"))],
                                                    config={"Cmd": ["/bin/sh"]}))
            for i in range(N_PULL)]
    return reg, release, refs


def start_container(cri, pod, image, name, command):
    cid = create(cri, pod, container_config(cri, image, name, command))
    cri.call("StartContainer", container_id=cid)
    return cid


def load_info(cri):
    st = cri.call("Status", verbose=True)
    return json.loads(st.info["calls"])


def test_quick_calls_answer_while_slow_calls_hold_threads(daemon, cri, pod, image_ref):  # noqa
    pod_id, _ = pod
    cid = start_container(cri, pod, image_ref, "busy", ["/bin/sleep", "1000"])
    # Containers that ignore SIGTERM: their stops wait out the whole grace period.
    stubborn = [start_container(cri, pod, image_ref, "stubborn%d" % i,
                                ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"])
                for i in range(N_STOP)]
    reg, release, refs = slow_registry()
    load = cri.__class__(cri.api, "unix:" + daemon.socket)  # the slow calls' own connection
    try:
        execs = [future(load, "ExecSync", 120, container_id=cid, cmd=["/bin/sleep", "12"])
                 for _ in range(N_EXEC)]
        stops = [future(load, "StopContainer", 120, container_id=s, timeout=12)
                 for s in stubborn]
        pulls = [future(load, "PullImage", 120, image=cri.message("ImageSpec", image=r))
                 for r in refs]
        time.sleep(3)  # let every runc exec start
        took = probe_quick_calls(cri, pod_id, cid, rounds=10)
        assert all(not f.done() for f in execs + stops + pulls), \
            "the slow calls finished before the quick ones were measured"
        assert_fast(took)
        assert load_info(cri)["in_flight"] >= N_EXEC + N_STOP + N_PULL
        release.set()
        for f in pulls:
            f.result()
        for f in execs:
            assert f.result().exit_code == 0
        for f in stops:
            f.result()
        for s in stubborn:
            assert cri.call("ContainerStatus", container_id=s).status.state == \
                cri.api.CONTAINER_EXITED
    finally:
        release.set()
        load.close()
        reg.stop()
    for s in stubborn + [cid]:
        cri.call("StopContainer", cri.message("StopContainerRequest", container_id=s, timeout=0))
        cri.call("RemoveContainer", container_id=s)


def test_abandoned_calls_do_not_hold_threads(daemon, cri, pod, image_ref):  # noqa: F811
    pod_id, _ = pod
    cid = start_container(cri, pod, image_ref, "busy", ["/bin/sleep", "1000"])
    stubborn = start_container(cri, pod, image_ref, "stubborn",
                               ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"])
    load = cri.__class__(cri.api, "unix:" + daemon.socket)
    try:
        # 16 slow ExecSyncs whose clients give up after 1 s (their deadline) ...
        execs = [future(load, "ExecSync", 1, container_id=cid, cmd=["/bin/sleep", "20"])
                 for _ in range(16)]
        # ... and a stop whose client gives up before the grace period (4 s) is over.
        stop = future(load, "StopContainer", 1, container_id=stubborn, timeout=4)
        for f in execs + [stop]:
            with pytest.raises(grpc.RpcError) as e:
                f.result()
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        took = probe_quick_calls(cri, pod_id, cid, rounds=5)
        assert_fast(took)
        # The daemon saw each client go, and each ExecSync acted on its cancelled token:
        # the execs' processes are killed and the calls leave the pool, holding nothing.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            info = load_info(cri)
            ps = cri.call("ExecSync", container_id=cid, cmd=["/bin/ps", "-o", "args"],
                          timeout=10).stdout.decode()
            if info["in_flight"] <= 1 and "sleep 20" not in ps:
                break
            time.sleep(0.2)
        assert "sleep 20" not in ps, ps
        assert info["in_flight"] <= 1, info  # the ExecSync asking
        # The abandoned stop still keeps its promise.
        deadline = time.monotonic() + 15
        while cri.call("ContainerStatus", container_id=stubborn).status.state != \
                cri.api.CONTAINER_EXITED:
            assert time.monotonic() < deadline, "an abandoned StopContainer did not stop"
            time.sleep(0.2)
    finally:
        load.close()
    for s in (cid, stubborn):
        cri.call("StopContainer", cri.message("StopContainerRequest", container_id=s, timeout=0))
        cri.call("RemoveContainer", container_id=s)
