"""Size limits checked at the call (issue 15 item 3): labels + annotations per pod and per
container, and the other client strings that land in a record.

Attack: a 3 MiB annotation of control characters became an 18.9 MB pod record (each
escapes to six bytes in JSON); the store reads records up to 16 MiB, so after a restart
the pod was "unreadable ... leaving it": forgotten, while its network namespace, address
and processes lived on. Two pods with 8-9 MiB of annotations each made every later
ListPodSandbox fail with RESOURCE_EXHAUSTED (past the 16 MiB message limit), which for
kubelet means a node that cannot see its pods. Now a pod or container may hold at most
1,024 labels and annotations of 131,072 bytes in all (keys and values); the arithmetic is in
sandbox/podconfig.c and the README."""
import os

import grpc
import pytest
from google.protobuf import json_format

from ctr_helpers import POD, container_config, create, image_ref  # noqa: F401

LIMIT = 128 * 1024


def pod_config(cri, tmp_path, uid, annotations=None, labels=None, host_network=True):
    doc = dict(POD, log_directory=str(tmp_path / "logs"))
    doc["metadata"] = dict(POD["metadata"], uid=uid, name="pod-" + uid)
    ns = {"pid": "CONTAINER"}
    if host_network:
        ns["network"] = "NODE"  # no netns or veth: many pods made quickly
        doc["hostname"] = ""  # a host-network pod shares the node's hostname
    doc["linux"] = {"security_context": {"namespace_options": ns}}
    cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
    for k, v in (annotations or {}).items():
        cfg.annotations[k] = v
    for k, v in (labels or {}).items():
        cfg.labels[k] = v
    return cfg


def at_limit(tag, fill="\x01"):
    """Labels and annotations of exactly LIMIT bytes of keys and values."""
    labels = {"tier": "x" * 100}
    annotations = {"note-%s" % tag: ""}
    used = sum(len(k) + len(v) for d in (labels, annotations) for k, v in d.items())
    annotations["note-%s" % tag] = fill * (LIMIT - used)
    return labels, annotations


def big_client(daemon):
    """A client that, like kubelet, takes answers up to 16 MiB (grpc's default is 4)."""
    c = daemon.client()
    c.channel.close()
    c.channel = grpc.insecure_channel("unix://" + daemon.socket,
                                      options=[("grpc.max_receive_message_length", 16 << 20)])
    return c


def remove_pods(cri, ids):
    for pid in ids:
        cri.call("StopPodSandbox", pod_sandbox_id=pid)
        cri.call("RemovePodSandbox", pod_sandbox_id=pid)


def refused_pod(cri, cfg):
    """The error of a RunPodSandbox that must fail; a pod made anyway is removed first."""
    try:
        pod_id = cri.call("RunPodSandbox", config=cfg, timeout=30).pod_sandbox_id
    except grpc.RpcError as e:
        return e
    remove_pods(cri, [pod_id])
    pytest.fail("RunPodSandbox took a pod past the limit")


def test_oversize_annotations_refused_at_the_call(daemon, cri, image_ref, tmp_path):
    # The pod: 3 MiB of control characters.
    e = refused_pod(cri, pod_config(cri, tmp_path, "huge", annotations={"a": "\x01" * (3 << 20)}))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    assert "config.annotations" in e.details()
    # One byte past the limit is refused too, the limit itself is not.
    labels, annotations = at_limit("edge")
    annotations["x"] = ""
    e = refused_pod(cri, pod_config(cri, tmp_path, "edge", annotations, labels))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "131073 bytes" in e.details(), e.details()
    assert len(cri.call("ListPodSandbox").items) == 0
    assert os.listdir(os.path.join(daemon.root, "sandboxes")) == []

    # Containers: the same bound, named the same way.
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pcfg = pod_config(cri, tmp_path, "ctr")
    pod_id = cri.call("RunPodSandbox", config=pcfg).pod_sandbox_id
    try:
        ccfg = container_config(cri, image_ref, "big", ["/bin/true"])
        ccfg.annotations["a"] = "\x01" * (3 << 20)
        with pytest.raises(grpc.RpcError) as e:
            cri.call("CreateContainer", pod_sandbox_id=pod_id, config=ccfg, sandbox_config=pcfg,
                     timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "config.annotations" in e.value.details()
        ccfg = container_config(cri, image_ref, "many-mounts", ["/bin/true"],
                                mounts=[{"container_path": "/m%d" % i, "host_path": "/tmp"}
                                        for i in range(300)])
        with pytest.raises(grpc.RpcError) as e:
            cri.call("CreateContainer", pod_sandbox_id=pod_id, config=ccfg, sandbox_config=pcfg)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "config.mounts" in e.value.details()
        assert len(cri.call("ListContainers").containers) == 0
    finally:
        remove_pods(cri, [pod_id])


def test_largest_allowed_pod_and_container_survive_a_restart(make_daemon, image_ref, tmp_path):
    d = make_daemon().start()
    cri = d.client()
    labels, annotations = at_limit("big")
    cfg = pod_config(cri, tmp_path, "largest", annotations, labels)
    pod_id = cri.call("RunPodSandbox", config=cfg, timeout=30).pod_sandbox_id
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    ccfg = container_config(cri, image_ref, "largest", ["/bin/sleep", "1000"])
    for k, v in labels.items():
        ccfg.labels[k] = v
    for k, v in annotations.items():
        ccfg.annotations[k] = v
    cid = create(cri, (pod_id, cfg), ccfg)
    cri.call("StartContainer", container_id=cid)
    cri.close()
    d.stop()

    d2 = make_daemon(base=d.base).start()
    c2 = d2.client()
    try:
        st = c2.call("PodSandboxStatus", pod_sandbox_id=pod_id).status
        assert dict(st.annotations) == annotations and dict(st.labels) == labels
        cst = c2.call("ContainerStatus", container_id=cid).status
        assert cst.state == c2.api.CONTAINER_RUNNING
        assert dict(cst.annotations) == annotations
        assert "unreadable" not in d2.read_log()
        c2.call("StopContainer", c2.message("StopContainerRequest", container_id=cid, timeout=0))
        c2.call("RemoveContainer", container_id=cid)
        remove_pods(c2, [pod_id])
    finally:
        c2.close()


def test_pods_at_the_limit_still_list(daemon, tmp_path):
    """Two pods at the limit, all control characters (the worst record), and then 110 at
    the limit (the most kubelet runs on a node): ListPodSandbox stays under 16 MiB."""
    cri = big_client(daemon)
    ids = []
    try:
        for i in range(2):
            labels, annotations = at_limit("c%d" % i)
            ids.append(cri.call("RunPodSandbox", timeout=30, config=pod_config(
                cri, tmp_path, "ctl%d" % i, annotations, labels)).pod_sandbox_id)
        items = cri.call("ListPodSandbox", timeout=30).items
        assert sorted(p.id for p in items) == sorted(ids)
        for i in range(2, 110):
            labels, annotations = at_limit("p%d" % i, fill="a")
            ids.append(cri.call("RunPodSandbox", timeout=30, config=pod_config(
                cri, tmp_path, "max%d" % i, annotations, labels)).pod_sandbox_id)
        resp = cri.call("ListPodSandbox", timeout=60)
        assert len(resp.items) == 110
        assert resp.ByteSize() < 16 << 20
    finally:
        remove_pods(cri, ids)
        cri.close()


@pytest.mark.parametrize("field,extra", [
    ("config.log_directory", {"log_directory": "/" + "d" * 5000}),
    ("config.linux.cgroup_parent", {"linux": {"cgroup_parent": "/" + "c" * 5000}}),
    ("config.dns_config", {"dns_config": {"searches": ["s%d.example" % i for i in range(65)]}}),
    ("config.port_mappings", {"port_mappings": [{"container_port": 1 + i % 60000}
                                                for i in range(1025)]}),
    ("config.linux.sysctls", {"linux": {"sysctls": {"net.ipv4.x%d" % i: "1"
                                                    for i in range(257)}}}),
])
def test_other_pod_fields_bounded(cri, tmp_path, field, extra):
    """Every other client string or list that lands in the pod's record has a bound, so no
    field can make the record unreadable on its own."""
    doc = dict(POD, log_directory=str(tmp_path / "logs"))
    doc["metadata"] = dict(POD["metadata"], uid="bounded")
    doc.update(extra)
    e = refused_pod(cri, json_format.ParseDict(doc, cri.api.PodSandboxConfig()))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    assert field in e.details(), e.details()


def test_container_strings_and_resource_updates_bounded(cri, image_ref, tmp_path):
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pcfg = pod_config(cri, tmp_path, "ctr-bounds")
    pod_id = cri.call("RunPodSandbox", config=pcfg).pod_sandbox_id
    try:
        ccfg = container_config(cri, image_ref, "long-log", ["/bin/true"])
        ccfg.log_path = "l" * 5000
        with pytest.raises(grpc.RpcError) as e:
            cri.call("CreateContainer", pod_sandbox_id=pod_id, config=ccfg, sandbox_config=pcfg)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "config.log_path" in e.value.details()
        cid = create(cri, (pod_id, pcfg), container_config(cri, image_ref, "upd",
                                                           ["/bin/sleep", "1000"]))
        res = cri.message("LinuxContainerResources")
        for i in range(300):
            res.unified["memory.x%d" % i] = "1"
        with pytest.raises(grpc.RpcError) as e:
            cri.call("UpdateContainerResources", container_id=cid, linux=res)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "linux.unified" in e.value.details(), e.value.details()
        cri.call("RemoveContainer", container_id=cid)
    finally:
        remove_pods(cri, [pod_id])
