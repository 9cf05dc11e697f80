"""The Stream* calls of CRI v1 against their List* counterparts: the same items for the
same filters, and a listing past the 16 MiB message limit (150 pods of 121 KiB) that the
List call cannot send but the stream delivers whole. Also the method count the daemon
logs and the reason CheckpointContainer gives."""
import os
import re
import threading
import time

import grpc
import pytest
from google.protobuf import json_format

from ctr_helpers import container_config, create, image_ref, pod  # noqa: F401

STREAM_OF = {
    "ListPodSandbox": ("StreamPodSandboxes", "items", "pod_sandboxes"),
    "ListContainers": ("StreamContainers", "containers", "containers"),
    "ListContainerStats": ("StreamContainerStats", "stats", "container_stats"),
    "ListPodSandboxStats": ("StreamPodSandboxStats", "stats", "pod_sandbox_stats"),
    "ListPodSandboxMetrics": ("StreamPodSandboxMetrics", "pod_metrics", "pod_sandbox_metrics"),
    "ListImages": ("StreamImages", "images", "images"),
}


def stream(cri, method, timeout=60, **fields):
    """Every message of a server stream, in order."""
    _, m = cri.services[method]
    req = cri.message(m.input_type.name, **fields)
    fn = cri.channel.unary_stream(
        cri.path(method), request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=getattr(cri.api, m.output_type.name).FromString)
    return list(fn(req, timeout=timeout))


def both(cri, list_method, **fields):
    """(the List call's items, the Stream call's items concatenated, the stream messages)"""
    stream_method, list_field, stream_field = STREAM_OF[list_method]
    listed = list(getattr(cri.call(list_method, **fields), list_field))
    msgs = stream(cri, stream_method, **fields)
    streamed = [x for msg in msgs for x in getattr(msg, stream_field)]
    return listed, streamed, msgs


def test_daemon_counts_its_methods(daemon):
    assert "40 of 41 CRI methods implemented" in daemon.read_log()


def test_checkpoint_says_why_it_is_unimplemented(cri):
    with pytest.raises(grpc.RpcError) as e:
        cri.call("CheckpointContainer", container_id="x", location="/tmp/x.tar")
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "vdso: Unexpected rt vDSO area bounds" in e.value.details()
    assert "CRIU" in e.value.details()


def test_each_stream_gives_what_its_list_gives(cri, pod, image_ref):
    pod_id = pod[0]
    ids = []
    for name, labels in (("a", {"tier": "front"}), ("b", {"tier": "back"})):
        cid = create(cri, pod, container_config(cri, image_ref, name, ["/bin/sleep", "1000"],
                                                labels=labels))
        cri.call("StartContainer", container_id=cid)
        ids.append(cid)
    stopped = create(cri, pod, container_config(cri, image_ref, "c", ["/bin/true"]))

    # Lists served from memory: identical messages, with and without filters.
    for method, fields in (
            ("ListPodSandbox", {}),
            ("ListPodSandbox", {"filter": cri.message("PodSandboxFilter", id=pod_id[:8])}),
            ("ListPodSandbox", {"filter": cri.message("PodSandboxFilter",
                                                      label_selector={"no": "such"})}),
            ("ListContainers", {}),
            ("ListContainers", {"filter": cri.message("ContainerFilter",
                                                      label_selector={"tier": "back"})}),
            ("ListContainers", {"filter": cri.message(
                "ContainerFilter", state=cri.message("ContainerStateValue",
                                                     state=cri.api.CONTAINER_CREATED))}),
            ("ListImages", {}),
            ("ListImages", {"filter": cri.message("ImageFilter", image=cri.message(
                "ImageSpec", image=image_ref))})):
        listed, streamed, _ = both(cri, method, **fields)
        assert streamed == listed, (method, fields)
    assert [c.id for c in both(cri, "ListContainers", filter=cri.message(
        "ContainerFilter", label_selector={"tier": "back"}))[1]] == [ids[1]]
    assert len(both(cri, "ListImages")[1]) == 1

    # Stats and metrics are read afresh by each call: the same objects, the same labels.
    listed, streamed, _ = both(cri, "ListContainerStats")
    assert sorted(s.attributes.id for s in streamed) == sorted(ids + [stopped])
    assert [s.attributes for s in streamed] == [s.attributes for s in listed]
    listed, streamed, _ = both(cri, "ListContainerStats", filter=cri.message(
        "ContainerStatsFilter", id=ids[0][:10]))
    assert [s.attributes.id for s in streamed] == [s.attributes.id for s in listed] == [ids[0]]
    listed, streamed, _ = both(cri, "ListPodSandboxStats")
    assert [s.attributes for s in streamed] == [s.attributes for s in listed]
    assert [s.attributes.id for s in streamed] == [pod_id]
    assert sorted(c.attributes.id for c in streamed[0].linux.containers) == \
        sorted(ids + [stopped])
    listed, streamed, _ = both(cri, "ListPodSandboxMetrics")

    def shape(pms):
        return [(p.pod_sandbox_id, [(m.name, list(m.label_values)) for m in p.metrics],
                 [(c.container_id, [(m.name, list(m.label_values)) for m in c.metrics])
                  for c in p.container_metrics]) for p in pms]
    assert shape(streamed) == shape(listed)
    assert [p.pod_sandbox_id for p in streamed] == [pod_id]

    # An empty result is an empty stream, and a bad request a clear error.
    assert stream(cri, "StreamContainers", filter=cri.message("ContainerFilter", id="f" * 64)) \
        == []
    fn = cri.channel.unary_stream(cri.path("StreamPodSandboxes"))
    with pytest.raises(grpc.RpcError) as e:
        list(fn(b"\x0a\x05ab", timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for cid in ids:
        cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid,
                                              timeout=0))
        cri.call("RemoveContainer", container_id=cid)
    cri.call("RemoveContainer", container_id=stopped)


def big_pod_config(api, i):
    # 46 labels of 2,700 bytes: about 121 KiB per pod, under the 128 KiB a pod may have in
    # labels and annotations; 150 pods make about 18 MiB in one ListPodSandbox response.
    labels = {"k%02d" % k: ("%03d" % i) * 900 for k in range(46)}
    labels["app"] = "big"
    doc = {"metadata": {"name": "big-%d" % i, "namespace": "default", "uid": "big-%d" % i,
                        "attempt": 0},
           "labels": labels,
           "linux": {"security_context": {"namespace_options": {"network": "NODE",
                                                                "pid": "CONTAINER"}}}}
    return json_format.ParseDict(doc, api.PodSandboxConfig())


def test_a_listing_past_16_mib_arrives_through_the_stream(daemon, cri):
    n = 150
    made = []
    # A client that accepts big messages, so that only the server's limit is in play.
    big = daemon.client()
    big.channel.close()
    big.channel = grpc.insecure_channel("unix://" + daemon.socket,
                                        options=[("grpc.max_receive_message_length", 256 << 20)])
    try:
        for i in range(n):
            made.append(cri.call("RunPodSandbox", config=big_pod_config(cri.api, i),
                                 timeout=30).pod_sandbox_id)

        for method in ("ListPodSandbox", "ListPodSandboxStats"):
            with pytest.raises(grpc.RpcError) as e:
                big.call(method, timeout=60)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()

        stream_method, _, field = STREAM_OF["ListPodSandbox"]
        msgs = stream(big, stream_method)
        pods = [p for m in msgs for p in getattr(m, field)]
        total = sum(m.ByteSize() for m in msgs)
        assert total > 16 << 20, (total, len(pods), len(msgs), [m.ByteSize() for m in msgs])
        assert max(m.ByteSize() for m in msgs) <= 1 << 20, "each batch well under the limit"
        assert sorted(p.id for p in pods) == sorted(made)
        assert all(len(p.labels) == 47 and p.labels["k07"] == p.labels["k00"] for p in pods)
        # The same filter as ListPodSandbox, on the full set.
        one = stream(big, stream_method, filter=big.message("PodSandboxFilter", id=made[77]))
        assert [p.id for m in one for p in m.pod_sandboxes] == [made[77]]
        assert big.call("ListPodSandbox", filter=big.message(
            "PodSandboxFilter", id=made[77])).items[0] == one[0].pod_sandboxes[0]

        stats = [s for m in stream(big, "StreamPodSandboxStats") for s in m.pod_sandbox_stats]
        assert sorted(s.attributes.id for s in stats) == sorted(made)
        assert all(s.attributes.labels["app"] == "big" for s in stats)
    finally:
        for pod_id in made:
            cri.call("StopPodSandbox", pod_sandbox_id=pod_id, timeout=30)
            cri.call("RemovePodSandbox", pod_sandbox_id=pod_id, timeout=30)
        big.close()
    assert list(cri.call("ListPodSandbox").items) == []


def test_stream_calls_leave_no_thread_or_fd(daemon, cri, pod):
    """Each call runs on a thread of its own that ends with it, also when the client
    cancels at once."""
    pid = daemon.proc.pid

    def fds():
        return len(os.listdir("/proc/%d/fd" % pid))

    def threads():
        with open("/proc/%d/status" % pid) as f:
            return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))

    def calls(n):
        for i in range(n):
            for method in ("StreamPodSandboxes", "StreamContainers", "StreamImages",
                           "StreamPodSandboxStats", "StreamContainerStats",
                           "StreamPodSandboxMetrics"):
                stream(cri, method)
            fn = cri.channel.unary_stream(cri.path("StreamPodSandboxes"))
            it = fn(cri.message("StreamPodSandboxesRequest").SerializeToString(), timeout=10)
            it.cancel()
    calls(5)
    before_fds, before_threads = fds(), threads()
    calls(60)
    time.sleep(1.0)
    assert fds() == before_fds
    assert threads() <= before_threads + 3
    assert cri.call("Version").runtime_name == "remora"


def test_daemon_stops_cleanly_with_streams_in_flight(make_daemon):
    """SIGTERM while Stream* calls are producing: each ends (complete or UNAVAILABLE /
    CANCELLED for the client), the daemon exits 0, and nothing is touched after it is
    freed (the ASan build would say so in the log)."""
    d = make_daemon().start()
    cri = d.client()
    made = [cri.call("RunPodSandbox", config=big_pod_config(cri.api, i)).pod_sandbox_id
            for i in range(30)]
    cri.close()
    clients = [d.client() for _ in range(8)]
    errors, done = [], []

    def reader(c):
        try:
            for _ in range(50):
                stream(c, "StreamPodSandboxStats", timeout=30)
                done.append(1)
        except grpc.RpcError as e:
            errors.append(e.code())

    ts = [threading.Thread(target=reader, args=(c,)) for c in clients]
    try:
        for t in ts:
            t.start()
        time.sleep(1.0)
        rc = d.stop()
        for t in ts:
            t.join(30)
        log = d.read_log()
        assert rc == 0, log[-3000:]
        assert done and errors, (len(done), errors)
        assert set(errors) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, errors
        assert "AddressSanitizer" not in log and "runtime error" not in log, log[-3000:]
    finally:
        for c in clients:
            c.close()
        # The pods outlive the daemon: a new one on the same directories removes them.
        d = make_daemon(base=d.base).start()
        cri = d.client()
        for pod_id in made:
            cri.call("StopPodSandbox", pod_sandbox_id=pod_id, timeout=30)
            cri.call("RemovePodSandbox", pod_sandbox_id=pod_id, timeout=30)
        assert list(cri.call("ListPodSandbox").items) == []
        cri.close()
