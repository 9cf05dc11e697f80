"""Restarts after the worst: a reboot (<state> wiped, <root> intact) and damaged records.
Each test ends by removing everything through the CRI and counting leftovers."""
import glob
import json
import os
import signal
import subprocess
import time

import pytest

import crash_helpers as H
from ctr_helpers import pulled_image


@pytest.fixture
def node(remorad_bin, api, tmp_path):
    d = H.CrashDaemon(remorad_bin, api, config="{}")
    d.start()
    cri = d.client()
    image = pulled_image(cri)
    baseline = H.leftovers(d)
    yield d, cri, image, baseline, str(tmp_path)
    cri.close()
    H.teardown(d)


def restart(d, cri):
    cri.close()
    d.start()
    return d.client()


def unmount_under(path):
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    for p in sorted((p for p in points if p.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", p], check=False)


def kill_everything_of(d, ids):
    """What a power cut does to the daemon's processes: shims first, then containers."""
    for comm_is_shim in (True, False):
        for p in H._pids():
            cg = H._read("/proc/%d/cgroup" % p)
            shim = H._read("/proc/%d/comm" % p).strip() == "remora-shim"
            if shim != comm_is_shim:
                continue
            if (shim and d.base in H._read("/proc/%d/cmdline" % p)) or \
                    (not shim and any(i in cg for i in ids)):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    time.sleep(0.3)


def test_reboot_exits_what_ran_and_everything_can_be_removed(node):
    d, cri, image, baseline, tmp = node
    parent = "/rmh17reboot-%d" % os.getpid()
    plain_cfg = H.pod_config(cri, tmp + "/logs", cgroup_parent=parent, host_port=31999)
    plain = cri.call("RunPodSandbox", config=plain_cfg, timeout=60).pod_sandbox_id
    infra_cfg = H.pod_config(cri, tmp + "/logs", share_pid=True)
    infra = cri.call("RunPodSandbox", config=infra_cfg, timeout=60).pod_sandbox_id
    running = [H.run_container(cri, plain, plain_cfg, image, name="a"),
               H.run_container(cri, infra, infra_cfg, image, name="b")]
    done = H.run_container(cri, plain, plain_cfg, image, name="done",
                           command=("sh", "-c", "exit 3"))
    deadline = time.monotonic() + 15
    while cri.call("ContainerStatus", container_id=done).status.state != \
            cri.api.CONTAINER_EXITED:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    created = H.run_container(cri, plain, plain_cfg, image, name="never", start=False)
    ids = H.ids_on_disk(d)

    # The reboot: remorad gone, every process of the node gone, <state> (a tmpfs on a
    # real node) empty; <root> stays.
    d.stop()
    kill_everything_of(d, ids)
    unmount_under(d.state)
    subprocess.run(["rm", "-rf", d.state], check=True)
    # cgroupfs starts empty after a reboot
    for mnt in H.cgroup_mounts():
        for i in ids:
            for p in (mnt + "/remora/" + i, mnt + "/remora/infra-" + i, mnt + parent + "/" + i,
                      mnt + parent + "/infra-" + i):
                if os.path.isdir(p):
                    os.rmdir(p)
    cri = restart(d, cri)

    pods = {p.id: p.state for p in cri.call("ListPodSandbox").items}
    assert pods == {plain: cri.api.SANDBOX_NOTREADY, infra: cri.api.SANDBOX_NOTREADY}
    for cid in running:
        st = cri.call("ContainerStatus", container_id=cid).status
        assert st.state == cri.api.CONTAINER_EXITED, st
        assert st.reason == "NodeRestarted", st
        assert "restarted" in st.message
    st = cri.call("ContainerStatus", container_id=done).status
    assert (st.state, st.exit_code, st.reason) == (cri.api.CONTAINER_EXITED, 3, "Error")
    assert cri.call("ContainerStatus", container_id=created).status.state == \
        cri.api.CONTAINER_CREATED

    # Every pod and container can be removed, quickly, leaving nothing.
    t0 = time.monotonic()
    for pod in (plain, infra):
        cri.call("RemovePodSandbox", pod_sandbox_id=pod, timeout=30)
    assert time.monotonic() - t0 < 10
    assert not cri.call("ListContainers").containers
    assert not cri.call("ListPodSandbox").items
    H.wait_baseline(d, baseline, ids, [parent])


def truncate(path):
    with open(path, "rb+") as f:
        size = len(f.read())
        f.truncate(size // 2)


def running_pod(cri, image, tmp):
    cfg = H.pod_config(cri, tmp + "/logs", host_port=31998)
    pod = cri.call("RunPodSandbox", config=cfg, timeout=60).pod_sandbox_id
    cid = H.run_container(cri, pod, cfg, image)
    return pod, cfg, cid


def alive(pid):
    return "\nState:\tZ" not in H._read("/proc/%d/status" % pid) and \
        os.path.exists("/proc/%d" % pid)


@pytest.mark.parametrize("damage", ["truncated", "empty-object"])
def test_damaged_pod_record_keeps_its_container_and_can_be_removed(node, damage):
    d, cri, image, baseline, tmp = node
    pod, cfg, cid = running_pod(cri, image, tmp)
    ids = H.ids_on_disk(d)
    procs = [p for p in H._pids() if cid in H._read("/proc/%d/cgroup" % p)]
    assert procs
    d.stop()
    record = os.path.join(d.root, "sandboxes", pod + ".json")
    if damage == "truncated":
        truncate(record)
    else:
        with open(record, "w") as f:
            f.write("[]")
    cri = restart(d, cri)

    # moved aside and logged by path; what takes its place is a rebuilt, readable record
    aside = glob.glob(record + ".corrupt-*")
    assert len(aside) == 1
    assert aside[0] in d.read_log()
    with open(record) as f:
        assert json.load(f)["labels"]["io.remora.recovered"] == "damaged-record"
    # what it described is listed and removable by ID; its container still runs
    listed = {p.id: p for p in cri.call("ListPodSandbox").items}
    assert pod in listed, listed
    assert listed[pod].metadata.name.startswith("recovered-")
    assert listed[pod].state == cri.api.SANDBOX_READY, d.read_log()[-3000:]
    assert cri.call("ContainerStatus", container_id=cid).status.state == \
        cri.api.CONTAINER_RUNNING
    assert all(alive(p) for p in procs), "a damaged pod record stopped its container"
    # and a new start keeps it so (the recovered record is a record again)
    d.stop()
    cri = restart(d, cri)
    assert cri.call("ListPodSandbox").items[0].id == pod

    cri.call("StopPodSandbox", pod_sandbox_id=pod, timeout=30)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod, timeout=30)
    assert not cri.call("ListContainers").containers
    assert not any(alive(p) for p in procs)
    H.wait_baseline(d, baseline, ids)
    assert os.path.exists(aside[0]), "the damaged record is kept for the operator"


@pytest.mark.parametrize("damage", ["truncated", "missing-fields"])
def test_damaged_container_record_never_stops_it(node, damage):
    d, cri, image, baseline, tmp = node
    pod, cfg, cid = running_pod(cri, image, tmp)
    ids = H.ids_on_disk(d)
    procs = [p for p in H._pids() if cid in H._read("/proc/%d/cgroup" % p)]
    d.stop()
    record = os.path.join(d.root, "containers", cid + ".json")
    if damage == "truncated":
        truncate(record)
    else:
        with open(record, "w") as f:
            f.write('{"pod_id": "%s"}' % pod)
    cri = restart(d, cri)

    aside = glob.glob(record + ".corrupt-*")
    assert len(aside) == 1 and aside[0] in d.read_log()
    with open(record) as f:
        assert json.load(f)["labels"]["io.remora.recovered"] == "damaged-record"
    st = cri.call("ContainerStatus", container_id=cid).status
    assert st.state == cri.api.CONTAINER_RUNNING, st
    assert st.labels.get("io.remora.recovered") == "damaged-record"
    assert all(alive(p) for p in procs), "a damaged container record stopped it"
    assert [c.id for c in cri.call("ListContainers", filter=cri.message(
        "ContainerFilter", pod_sandbox_id=pod)).containers] == [cid]

    # the operator stops and removes it by ID; its exit is seen
    cri.call("StopContainer", container_id=cid, timeout=30)
    st = cri.call("ContainerStatus", container_id=cid).status
    assert st.state == cri.api.CONTAINER_EXITED and st.exit_code == 137, st
    cri.call("RemoveContainer", container_id=cid, timeout=30)
    H.remove_everything(cri)
    H.wait_baseline(d, baseline, ids)


@pytest.mark.parametrize("sized", [True, False])
def test_pod_cgroup_goes_from_every_hierarchy(node, sized):
    """No crash at all: runc makes a pod's cgroup parent in every hierarchy (ten on a v1
    host), Remora only sizes it in memory and cpu; RemovePodSandbox removes it from all."""
    d, cri, image, baseline, tmp = node
    parent = "/rmh17cg-%d-%d" % (os.getpid(), sized)
    cfg = H.pod_config(cri, tmp + "/logs", share_pid=True, cgroup_parent=parent)
    if not sized:
        cfg.linux.ClearField("resources")
    pod = cri.call("RunPodSandbox", config=cfg, timeout=60).pod_sandbox_id
    H.run_container(cri, pod, cfg, image)
    made = [m for m in H.cgroup_mounts() if os.path.isdir(m + parent)]
    assert len(made) >= 2, made
    cri.call("StopPodSandbox", pod_sandbox_id=pod, timeout=30)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod, timeout=30)
    left = [m + parent for m in H.cgroup_mounts() if os.path.isdir(m + parent)]
    assert left == []
