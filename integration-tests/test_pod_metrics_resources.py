"""ListMetricDescriptors / ListPodSandboxMetrics checked against what kubelet's CRI metrics
collector expects (names, label keys matching label values, no kubelet-owned keys) and
against the cgroup and network namespace they are read from; UpdatePodSandboxResources
seen in the pod's cgroup files, in PodSandboxStatus, and after a restart."""
import json
import os
import subprocess
import time

import grpc
import pytest
from google.protobuf import json_format

from ctr_helpers import POD, container_config, create, image_ref, pod  # noqa: F401

V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")

# The families kubelet's /metrics/cadvisor exposes from the CRI that Remora can read
# (pkg/kubelet/server/server.go includedMetrics: cpu, memory, disk, network, process, oom).
REQUIRED = {
    "container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
    "container_memory_rss", "container_memory_usage_bytes",
    "container_network_receive_bytes_total", "container_network_transmit_bytes_total",
    "container_fs_usage_bytes", "container_oom_events_total", "container_processes",
    "container_memory_failures_total", "container_spec_memory_limit_bytes",
    "container_start_time_seconds", "container_network_receive_packets_total",
    "container_network_transmit_packets_total", "container_network_receive_errors_total",
    "container_network_transmit_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_transmit_packets_dropped_total",
}
# kubelet appends these itself (pkg/kubelet/metrics/collectors/cri_metrics.go).
KUBELET_KEYS = {"namespace", "pod", "container"}


def read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def cgroup_file(cid, v1_controller, v1_file, v2_file):
    if V2:
        return "/sys/fs/cgroup/remora/%s/%s" % (cid, v2_file)
    return "/sys/fs/cgroup/%s/remora/%s/%s" % (v1_controller, cid, v1_file)


def metrics_by_name(metrics, keys):
    out = {}
    for m in metrics:
        out.setdefault(m.name, []).append((dict(zip(keys[m.name], m.label_values)), m))
    return out


def netdev(netns_path):
    """/proc/net/dev inside the pod's network namespace, as {iface: [columns]}."""
    text = subprocess.run(["nsenter", "--net=" + netns_path, "cat", "/proc/net/dev"],
                          check=True, capture_output=True, text=True).stdout
    out = {}
    for line in text.splitlines()[2:]:
        name, rest = line.split(":", 1)
        out[name.strip()] = [int(x) for x in rest.split()]
    return out


def test_metric_descriptors_and_values(daemon, cri, pod, image_ref):
    pod_id, pod_cfg = pod
    descs = cri.call("ListMetricDescriptors").descriptors
    keys = {d.name: list(d.label_keys) for d in descs}
    assert len(keys) == len(descs), "names are unique"
    assert REQUIRED <= set(keys), REQUIRED - set(keys)
    for d in descs:
        assert d.help and d.name.startswith("container_")
        assert d.label_keys[:3] == ["id", "name", "image"], d
        assert not KUBELET_KEYS & set(d.label_keys), d
        assert len(set(d.label_keys)) == len(d.label_keys), d

    a = create(cri, pod, container_config(cri, image_ref, "a", [
        "/bin/sh", "-c", "dd if=/dev/zero of=/layer bs=1M count=2; sleep 1000 & sleep 1000"]))
    b = create(cri, pod, container_config(cri, image_ref, "b", ["/bin/sleep", "1000"]))
    for cid in (a, b):
        cri.call("StartContainer", container_id=cid)
    time.sleep(1.0)
    info = cri.call("PodSandboxStatus", pod_sandbox_id=pod_id, verbose=True).info["info"]
    netns = json.loads(info)["netnsPath"]
    before = netdev(netns)
    pms = cri.call("ListPodSandboxMetrics").pod_metrics
    after = netdev(netns)
    assert [p.pod_sandbox_id for p in pms] == [pod_id]
    pm = pms[0]
    every = list(pm.metrics) + [m for c in pm.container_metrics for m in c.metrics]
    for m in every:
        assert m.name in keys, m.name
        assert len(m.label_values) == len(keys[m.name]), m
        assert m.timestamp == 0, "read live"
        assert m.HasField("value")

    # The pod's own figures: the sum of its containers (no cgroup parent here), and its
    # network counters from its namespace's eth0.
    pod_m = metrics_by_name(pm.metrics, keys)
    for labels, m in pod_m["container_processes"]:
        assert labels == {"id": pod_id, "name": "POD", "image": ""}
        assert m.value.value >= 3  # sh, two sleeps, and b's sleep
    rx = {lab["interface"]: m.value.value
          for lab, m in pod_m["container_network_receive_bytes_total"]}
    assert "eth0" in rx and "lo" not in rx
    assert before["eth0"][0] <= rx["eth0"] <= after["eth0"][0]
    tx = {lab["interface"]: m for lab, m in pod_m["container_network_transmit_bytes_total"]}
    assert tx["eth0"].metric_type == cri.api.COUNTER
    assert before["eth0"][8] <= tx["eth0"].value.value <= after["eth0"][8]

    # Each container's figures: against its cgroup and writable layer.
    assert sorted(c.container_id for c in pm.container_metrics) == sorted([a, b])
    ca = [c for c in pm.container_metrics if c.container_id == a][0]
    cm = metrics_by_name(ca.metrics, keys)
    labels, procs = cm["container_processes"][0]
    assert labels == {"id": a, "name": "k8s_a_%s_default_%s_0" % (
        pod_cfg.metadata.name, pod_cfg.metadata.uid), "image": image_ref}
    pids = cgroup_file(a, "pids", "pids.current", "pids.current")
    if os.path.exists(pids):
        assert procs.value.value == read_int(pids) >= 2
    usage = cgroup_file(a, "memory", "memory.usage_in_bytes", "memory.current")
    mem = cm["container_memory_usage_bytes"][0][1]
    assert mem.metric_type == cri.api.GAUGE
    assert abs(mem.value.value - read_int(usage)) < 4 << 20
    cpu_labels, cpu = cm["container_cpu_usage_seconds_total"][0]
    assert cpu_labels["cpu"] == "total" and cpu.metric_type == cri.api.COUNTER
    assert cm["container_fs_usage_bytes"][0][1].value.value >= 2 << 20
    assert cm["container_oom_events_total"][0][1].value.value == 0
    faults = {lab["failure_type"]: m.value.value
              for lab, m in cm["container_memory_failures_total"]}
    assert faults["pgfault"] > 0 and set(faults) == {"pgfault", "pgmajfault"}
    start = cm["container_start_time_seconds"][0][1].value.value
    assert abs(start - time.time()) < 60

    # The same figures ListContainerStats gives for the container.
    st = cri.call("ContainerStats", container_id=a).stats
    ws = cm["container_memory_working_set_bytes"][0][1].value.value
    assert abs(ws - st.memory.working_set_bytes.value) < 4 << 20
    assert cpu.value.value == st.cpu.usage_core_nano_seconds.value // 10**9 or \
        cpu.value.value + 1 == st.cpu.usage_core_nano_seconds.value // 10**9
    assert cm["container_fs_usage_bytes"][0][1].value.value == st.writable_layer.used_bytes.value

    # The writable layer is walked at most every 10 s: a second call reuses the walk and
    # says when it ran; everything else is read again, live.
    again = [c for c in cri.call("ListPodSandboxMetrics").pod_metrics[0].container_metrics
             if c.container_id == a][0]
    fs = [m for m in again.metrics if m.name == "container_fs_usage_bytes"][0]
    assert fs.value.value == cm["container_fs_usage_bytes"][0][1].value.value
    assert 0 < time.time() * 1e9 - fs.timestamp < 10e9
    assert all(m.timestamp == 0 for m in again.metrics if m.name != "container_fs_usage_bytes")

    # Stopped containers drop out; the pod stays while it is ready.
    for cid in (a, b):
        cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid,
                                              timeout=0))
    pm = cri.call("ListPodSandboxMetrics").pod_metrics[0]
    assert list(pm.container_metrics) == []
    for cid in (a, b):
        cri.call("RemoveContainer", container_id=cid)


def test_metrics_cost_no_more_than_container_stats(daemon, cri, pod, image_ref):
    """A rough bound on a small node; the 110-pod measurement is in the report."""
    for i in range(4):
        cid = create(cri, pod, container_config(cri, image_ref, "m%d" % i, ["/bin/sleep", "1000"]))
        cri.call("StartContainer", container_id=cid)

    def best(method, n=15):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            cri.call(method)
            times.append(time.perf_counter() - t)
        return min(times)
    stats, metrics = best("ListContainerStats"), best("ListPodSandboxMetrics")
    assert metrics < 3 * stats + 0.005, (metrics, stats)
    for c in cri.call("ListContainers").containers:
        cri.call("StopContainer", cri.message("StopContainerRequest", container_id=c.id,
                                              timeout=0))
        cri.call("RemoveContainer", container_id=c.id)


def pod_cfg(api, tmp_path, uid, parent=None, resources=None, overhead=None):
    doc = dict(POD, log_directory=str(tmp_path / "logs"))
    doc["metadata"] = dict(POD["metadata"], uid=uid, name="res-" + uid)
    linux = dict(doc["linux"])
    if parent:
        linux["cgroup_parent"] = parent
    if resources:
        linux["resources"] = resources
    if overhead:
        linux["overhead"] = overhead
    doc["linux"] = linux
    return json_format.ParseDict(doc, api.PodSandboxConfig())


def resources_msg(api, d):
    return json_format.ParseDict(d, api.LinuxContainerResources())


def pod_resources(cri, pod_id):
    info = cri.call("PodSandboxStatus", pod_sandbox_id=pod_id, verbose=True).info["info"]
    return json.loads(info).get("podResources")


def test_update_pod_sandbox_resources(make_daemon, tmp_path):
    d = make_daemon().start()
    cri = d.client()
    parent = "/rmh20-pod-%d" % os.getpid()
    mem_dir = "/sys/fs/cgroup" + parent if V2 else "/sys/fs/cgroup/memory" + parent
    cpu_dir = "/sys/fs/cgroup" + parent if V2 else "/sys/fs/cgroup/cpu" + parent
    mem_file = mem_dir + ("/memory.max" if V2 else "/memory.limit_in_bytes")
    cfg = pod_cfg(cri.api, tmp_path, "sized", parent,
                  resources={"memory_limit_in_bytes": 64 << 20, "cpu_shares": 256},
                  overhead={"memory_limit_in_bytes": 8 << 20, "cpu_shares": 64})
    pod_id = cri.call("RunPodSandbox", config=cfg).pod_sandbox_id
    try:
        assert read_int(mem_file) == 72 << 20
        new_res = {"memory_limit_in_bytes": 96 << 20, "cpu_shares": 512, "cpu_quota": 150000,
                   "cpu_period": 100000}
        new_over = {"memory_limit_in_bytes": 16 << 20, "cpu_shares": 128}
        cri.call("UpdatePodSandboxResources", pod_sandbox_id=pod_id[:12],
                 resources=resources_msg(cri.api, new_res),
                 overhead=resources_msg(cri.api, new_over))
        assert read_int(mem_file) == 112 << 20
        if V2:
            with open(cpu_dir + "/cpu.max") as f:
                assert f.read().split() == ["150000", "100000"]
        else:
            assert read_int(cpu_dir + "/cpu.shares") == 640
            assert read_int(cpu_dir + "/cpu.cfs_quota_us") == 150000
            assert read_int(cpu_dir + "/cpu.cfs_period_us") == 100000
        want = {"resources": new_res, "overhead": new_over}
        assert pod_resources(cri, pod_id) == want

        # Refused like a container update: nothing written, nothing recorded.
        for bad, field in (({"cpu_shares": 1}, "cpu_shares"), ({"cpuset_cpus": "3-1"}, "cpuset"),
                           ({"cpu_period": 5}, "cpu_period"),
                           ({"oom_score_adj": 5000}, "oom_score_adj")):
            for part in ("resources", "overhead"):
                with pytest.raises(grpc.RpcError) as e:
                    cri.call("UpdatePodSandboxResources", pod_sandbox_id=pod_id,
                             **{part: resources_msg(cri.api, bad)})
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
                assert field in e.value.details() and part in e.value.details()
        assert read_int(mem_file) == 112 << 20
        assert pod_resources(cri, pod_id) == want
        with pytest.raises(grpc.RpcError) as e:
            cri.call("UpdatePodSandboxResources", pod_sandbox_id=pod_id)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            cri.call("UpdatePodSandboxResources", pod_sandbox_id="f" * 64,
                     resources=resources_msg(cri.api, new_res))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND

        # A restart keeps what was recorded.
        assert d.stop() == 0
        cri.close()
        d = make_daemon(base=d.base).start()
        cri = d.client()
        assert pod_resources(cri, pod_id) == want
        assert read_int(mem_file) == 112 << 20

        # A pod without a cgroup of Remora's, and a stopped pod: FAILED_PRECONDITION.
        plain = cri.call("RunPodSandbox",
                         config=pod_cfg(cri.api, tmp_path, "plain")).pod_sandbox_id
        with pytest.raises(grpc.RpcError) as e:
            cri.call("UpdatePodSandboxResources", pod_sandbox_id=plain,
                     resources=resources_msg(cri.api, new_res))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "cgroup" in e.value.details() and plain in e.value.details()
        cri.call("RemovePodSandbox", pod_sandbox_id=plain)
        cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
        with pytest.raises(grpc.RpcError) as e:
            cri.call("UpdatePodSandboxResources", pod_sandbox_id=pod_id,
                     resources=resources_msg(cri.api, new_res))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not ready" in e.value.details()
    finally:
        cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
        cri.close()
    assert not os.path.exists(mem_dir) and not os.path.exists(cpu_dir), "made by us, removed"


def test_update_of_a_pod_whose_cgroup_vanished(daemon, cri, tmp_path):
    parent = "/rmh20-gone-%d" % os.getpid()
    cfg = pod_cfg(cri.api, tmp_path, "gone", parent,
                  resources={"memory_limit_in_bytes": 64 << 20})
    pod_id = cri.call("RunPodSandbox", config=cfg).pod_sandbox_id
    dirs = (["/sys/fs/cgroup" + parent] if V2 else
            ["/sys/fs/cgroup/memory" + parent, "/sys/fs/cgroup/cpu" + parent])
    try:
        for x in dirs:
            os.rmdir(x)
        with pytest.raises(grpc.RpcError) as e:
            cri.call("UpdatePodSandboxResources", pod_sandbox_id=pod_id,
                     resources=resources_msg(cri.api, {"memory_limit_in_bytes": 32 << 20}))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "gone" in e.value.details()
        assert not any(os.path.exists(x) for x in dirs), "an update never makes the cgroup"
    finally:
        cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
