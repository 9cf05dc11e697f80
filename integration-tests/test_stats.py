"""Stats, resource updates and log reopening on running containers: figures compared with
what the cgroup itself says, an update seen in the cgroup and in ContainerStatus, and a
rotation under a container that never stops printing."""
import os
import subprocess
import time

import grpc
import pytest
from google.protobuf import json_format

from ctr_helpers import (POD, container_config, create, image_ref, pod,  # noqa: F401
                         status, wait_exited)

V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def cgroup_file(cid, v1_controller, v1_file, v2_file):
    if V2:
        return "/sys/fs/cgroup/remora/%s/%s" % (cid, v2_file)
    return "/sys/fs/cgroup/%s/remora/%s/%s" % (v1_controller, cid, v1_file)


def read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def cgroup_working_set(cid):
    """usage minus inactive file, as the kubelet defines the working set"""
    if V2:
        usage = read_int(cgroup_file(cid, None, None, "memory.current"))
        key = "inactive_file"
        stat = cgroup_file(cid, None, None, "memory.stat")
    else:
        usage = read_int(cgroup_file(cid, "memory", "memory.usage_in_bytes", None))
        key = "total_inactive_file"
        stat = cgroup_file(cid, "memory", "memory.stat", None)
    with open(stat) as f:
        inactive = dict(line.split() for line in f)[key]
    return usage - int(inactive)


def cgroup_cpu_ns(cid):
    if V2:
        with open(cgroup_file(cid, None, None, "cpu.stat")) as f:
            return int(dict(line.split() for line in f)["usage_usec"]) * 1000
    return read_int(cgroup_file(cid, "cpuacct", "cpuacct.usage", None))


def kill(cri, cid):
    # StopContainerRequest.timeout, not the call's deadline (Cri.call's own timeout)
    cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid, timeout=0))


def start(cri, pod, image_ref, name, command, **extra):
    cid = create(cri, pod, container_config(cri, image_ref, name, command, **extra))
    cri.call("StartContainer", container_id=cid)
    return cid


def test_container_stats_match_the_cgroup(cri, pod, image_ref):
    # 40 MiB in the pod's /dev/shm (tmpfs: charged to the container, part of its working
    # set), a 3 MiB file in the writable layer, and one core kept busy.
    cid = start(cri, pod, image_ref, "burn",
                ["/bin/sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40; "
                                  "dd if=/dev/zero of=/layer-file bs=1M count=3; "
                                  "while :; do :; done"],
                labels={"app": "burn"})
    time.sleep(1.5)
    first = cri.call("ContainerStats", container_id=cid[:12]).stats
    assert first.attributes.id == cid and first.attributes.metadata.name == "burn"
    assert first.attributes.labels["app"] == "burn"
    time.sleep(1.0)
    cpu_before = cgroup_cpu_ns(cid)
    s = cri.call("ContainerStats", container_id=cid).stats
    cpu_after = cgroup_cpu_ns(cid)
    ws = cgroup_working_set(cid)

    assert cpu_before <= s.cpu.usage_core_nano_seconds.value <= cpu_after
    # one busy loop: about a core, whatever else the machine is doing
    assert 0.3e9 < s.cpu.usage_nano_cores.value < 2.2e9, s.cpu
    assert s.memory.working_set_bytes.value >= 40 << 20
    assert abs(s.memory.working_set_bytes.value - ws) < 4 << 20, (s.memory, ws)
    assert s.memory.usage_bytes.value >= s.memory.working_set_bytes.value
    assert not s.memory.HasField("available_bytes")  # no limit set
    assert s.memory.page_faults.value > 0
    assert s.writable_layer.used_bytes.value >= 3 << 20
    assert s.writable_layer.inodes_used.value >= 2
    assert s.cpu.timestamp > first.cpu.timestamp

    listed = cri.call("ListContainerStats").stats
    assert [x.attributes.id for x in listed] == [cid]
    by_label = cri.call("ListContainerStats", filter=cri.message(
        "ContainerStatsFilter", label_selector={"app": "other"})).stats
    assert list(by_label) == []
    by_pod = cri.call("ListContainerStats", filter=cri.message(
        "ContainerStatsFilter", pod_sandbox_id=pod[0][:10])).stats
    assert [x.attributes.id for x in by_pod] == [cid]
    kill(cri, cid)
    assert list(cri.call("ListContainerStats").stats) == []
    cri.call("RemoveContainer", container_id=cid)
    with pytest.raises(grpc.RpcError) as e:
        cri.call("ContainerStats", container_id=cid)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_memory_limit_gives_available_bytes(cri, pod, image_ref):
    cid = start(cri, pod, image_ref, "lim", ["/bin/sleep", "1000"],
                linux={"resources": {"memory_limit_in_bytes": 100 << 20}})
    s = cri.call("ContainerStats", container_id=cid).stats
    assert s.memory.available_bytes.value == (100 << 20) - s.memory.working_set_bytes.value
    cri.call("RemoveContainer", container_id=cid)


def test_update_resources_reaches_the_cgroup_and_the_status(cri, pod, image_ref):
    cid = start(cri, pod, image_ref, "upd", ["/bin/sleep", "1000"],
                linux={"resources": {"memory_limit_in_bytes": 256 << 20, "cpu_shares": 512}})
    limit = cgroup_file(cid, "memory", "memory.limit_in_bytes", "memory.max")
    assert read_int(limit) == 256 << 20
    assert status(cri, cid).resources.linux.memory_limit_in_bytes == 256 << 20
    new = {"memory_limit_in_bytes": 128 << 20, "cpu_shares": 256, "cpu_quota": 50000,
           "cpu_period": 100000}
    cri.call("UpdateContainerResources", container_id=cid,
             linux=json_format.ParseDict(new, cri.api.LinuxContainerResources()))
    assert read_int(limit) == 128 << 20
    if not V2:
        assert read_int(cgroup_file(cid, "cpu", "cpu.shares", None)) == 256
        assert read_int(cgroup_file(cid, "cpu", "cpu.cfs_quota_us", None)) == 50000
    res = status(cri, cid).resources.linux
    assert (res.memory_limit_in_bytes, res.cpu_shares, res.cpu_quota) == (128 << 20, 256, 50000)

    for bad, field in (({"cpu_shares": 1}, "cpu_shares"), ({"cpuset_cpus": "2-1"}, "cpuset"),
                       ({"cpu_period": 5}, "cpu_period")):
        with pytest.raises(grpc.RpcError) as e:
            cri.call("UpdateContainerResources", container_id=cid,
                     linux=json_format.ParseDict(bad, cri.api.LinuxContainerResources()))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert field in e.value.details(), e.value.details()
    assert read_int(limit) == 128 << 20, "a refused update changed nothing"
    assert status(cri, cid).resources.linux.memory_limit_in_bytes == 128 << 20

    kill(cri, cid)
    with pytest.raises(grpc.RpcError) as e:
        cri.call("UpdateContainerResources", container_id=cid,
                 linux=json_format.ParseDict(new, cri.api.LinuxContainerResources()))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        cri.call("UpdateContainerResources", container_id="0" * 64,
                 linux=json_format.ParseDict(new, cri.api.LinuxContainerResources()))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    cri.call("RemoveContainer", container_id=cid)


def read_numbers(paths):
    out = []
    for p in paths:
        with open(p) as f:
            for line in f:
                ts, stream, tag, text = line.rstrip("\n").split(" ", 3)
                assert stream == "stdout" and tag == "F", line
                out.append(int(text))
    return out


def test_reopen_during_rotation_loses_and_repeats_nothing(cri, pod, image_ref):
    cid = start(cri, pod, image_ref, "counter",
                ["/bin/sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); done"])
    path = status(cri, cid).log_path
    rotated = []
    for n in range(4):
        time.sleep(0.3)
        old = "%s.%d" % (path, n)
        os.rename(path, old)
        rotated.append(old)
        cri.call("ReopenContainerLog", container_id=cid)
        assert os.path.exists(path), "the monitor made a new file at the path"
    time.sleep(0.3)
    kill(cri, cid)
    numbers = read_numbers(rotated + [path])
    assert len(numbers) > 1000
    assert numbers == list(range(len(numbers))), "a line was lost or repeated"
    for p in rotated:
        assert os.path.getsize(p) > 0

    with pytest.raises(grpc.RpcError) as e:
        cri.call("ReopenContainerLog", container_id=cid)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not running" in e.value.details()
    cri.call("RemoveContainer", container_id=cid)
    with pytest.raises(grpc.RpcError) as e:
        cri.call("ReopenContainerLog", container_id=cid)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_pod_stats_with_containers_processes_and_network(daemon, cri, pod, image_ref):
    pod_id = pod[0]
    a = start(cri, pod, image_ref, "a", ["/bin/sh", "-c", "sleep 1000 & sleep 1000"])
    b = start(cri, pod, image_ref, "b", ["/bin/sleep", "1000"])
    # Traffic out of the pod's eth0 (the built-in bridge): pings to its gateway.
    netns = os.path.join(daemon.state, "netns", pod_id)
    route = subprocess.run(["nsenter", "--net=" + netns, "ip", "route", "show", "default"],
                           check=True, capture_output=True, text=True).stdout.split()
    gateway = route[route.index("via") + 1]
    subprocess.run(["nsenter", "--net=" + netns, "busybox", "ping", "-c", "3", "-W", "1",
                    gateway], check=True, capture_output=True)
    s = cri.call("PodSandboxStats", pod_sandbox_id=pod_id[:8]).stats
    assert s.attributes.id == pod_id and s.attributes.metadata.name == POD["metadata"]["name"]
    ids = sorted(c.attributes.id for c in s.linux.containers)
    assert ids == sorted([a, b])
    # two sleeps in a (sh execs the last command), one in b
    assert s.linux.process.process_count.value == 3
    assert s.linux.memory.working_set_bytes.value > 0
    per_container = sum(c.cpu.usage_core_nano_seconds.value for c in s.linux.containers)
    assert s.linux.cpu.usage_core_nano_seconds.value >= per_container
    net = s.linux.network
    assert net.default_interface.name == "eth0"
    assert net.default_interface.tx_bytes.value >= 3 * 98  # three echo requests
    assert net.default_interface.rx_bytes.value >= 3 * 98  # and their replies
    assert [i.name for i in net.interfaces] == ["eth0"]
    listed = cri.call("ListPodSandboxStats").stats
    assert [x.attributes.id for x in listed] == [pod_id]
    none = cri.call("ListPodSandboxStats", filter=cri.message(
        "PodSandboxStatsFilter", label_selector={"no": "such"})).stats
    assert list(none) == []
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    assert list(cri.call("ListPodSandboxStats").stats) == []
    with pytest.raises(grpc.RpcError) as e:
        cri.call("PodSandboxStats", pod_sandbox_id="f" * 64)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_stats_of_an_idle_daemon(cri):
    assert list(cri.call("ListContainerStats").stats) == []
    assert list(cri.call("ListPodSandboxStats").stats) == []
