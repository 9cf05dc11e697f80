"""The crash-point matrix: for every durable step of a call, remorad kills itself there
(REMORA_CRASH_AT), comes back, and must (1) show a state the recovery contract allows
(README, "Recovery contract"), (2) let everything be removed through the CRI, and (3)
leave nothing behind: mounts, pins, veths, IPAM records, nft elements, runc state, exit
files, records, directories, cgroups in every hierarchy, shims, processes, blobs.

CASES is a table: a call that gains crash points (ExecSync, PullImage) adds rows with
its own scene, call and check."""
import collections
import os
import random
import uuid

import pytest

import crash_helpers as H
from ctr_helpers import pulled_image

Case = collections.namedtuple("Case", "point scene call check answers")


class World:
    def __init__(self, d, image, tmp):
        self.d = d
        self.image = image
        self.tmp = tmp
        self.cri = None
        self.parents = []

    def connect(self):
        if self.cri:
            self.cri.close()
        self.cri = self.d.client()
        return self.cri

    def parent(self):
        p = "/rmh17crash-" + uuid.uuid4().hex[:10]
        self.parents.append(p)
        return p


@pytest.fixture(scope="module")
def world(remorad_bin, api, tmp_path_factory):
    d = H.CrashDaemon(remorad_bin, api, config="{}")
    d.start()
    w = World(d, None, str(tmp_path_factory.mktemp("crash")))
    w.image = pulled_image(w.connect())
    w.baseline = H.leftovers(d)
    d.stop()
    yield w
    if w.cri:
        w.cri.close()
    H.teardown(d)


# ---- scenes: what exists before the call ----

def scene_pod(w, share_pid=False):
    cfg = H.pod_config(w.cri, os.path.join(w.tmp, "logs"), share_pid=share_pid,
                       cgroup_parent=w.parent(), host_port=random.randint(30000, 32000))
    return {"cfg": cfg}


def scene_infra_pod(w):
    return scene_pod(w, share_pid=True)


def with_pod(w, share_pid=False):
    st = scene_pod(w, share_pid)
    st["pod"] = w.cri.call("RunPodSandbox", config=st["cfg"], timeout=60).pod_sandbox_id
    return st


def scene_created(w):
    st = with_pod(w)
    st["ctr"] = H.run_container(w.cri, st["pod"], st["cfg"], w.image, start=False)
    return st


def scene_running(w, share_pid=False):
    st = with_pod(w, share_pid)
    st["ctr"] = H.run_container(w.cri, st["pod"], st["cfg"], w.image)
    return st


def scene_exited(w):
    st = scene_running(w)
    w.cri.call("StopContainer", container_id=st["ctr"], timeout=30)
    return st


def scene_infra_running(w):
    return scene_running(w, share_pid=True)


# ---- calls ----

def call_run_pod(w, st):
    w.cri.call("RunPodSandbox", config=st["cfg"], timeout=60)


def call_start(w, st):
    w.cri.call("StartContainer", container_id=st["ctr"], timeout=60)


def call_stop(w, st):
    w.cri.call("StopContainer", container_id=st["ctr"], timeout=60)


def call_stop_grace(w, st):
    # sleep as PID 1 ignores SIGTERM: the stop signals, waits a second, then kills
    w.cri.call("StopContainer", request=w.cri.message(
        "StopContainerRequest", container_id=st["ctr"], timeout=1), timeout=60)


def call_remove(w, st):
    w.cri.call("RemoveContainer", container_id=st["ctr"], timeout=60)


def call_stop_pod(w, st):
    w.cri.call("StopPodSandbox", pod_sandbox_id=st["pod"], timeout=60)


def call_remove_pod(w, st):
    w.cri.call("RemovePodSandbox", pod_sandbox_id=st["pod"], timeout=60)


# ---- checks: the contract after the restart ----

def pods(w):
    return {p.id: p for p in w.cri.call("ListPodSandbox").items}


def ctrs(w):
    return {c.id: c for c in w.cri.call("ListContainers").containers}


def procs_of(cid):
    n = 0
    for p in H._pids():
        if cid in H._read("/proc/%d/cgroup" % p):
            n += 1
    return n


def procs_desc(cid):
    return [(p, H._read("/proc/%d/status" % p).split("\n")[:7]) for p in H._pids()
            if cid in H._read("/proc/%d/cgroup" % p)]


def assert_pod_usable(w, pod_id, cfg):
    """A READY pod has all its parts: a container starts in it and runs."""
    cid = H.run_container(w.cri, pod_id, cfg, w.image, name="probe")
    st = w.cri.call("ContainerStatus", container_id=cid).status
    assert st.state == w.cri.api.CONTAINER_RUNNING, st


def check_pod_gone(w, st):
    assert not pods(w), "a RunPodSandbox that never answered left a pod: %s" % pods(w)


def check_pod_ready(w, st):
    ps = list(pods(w).values())
    assert len(ps) == 1 and ps[0].state == w.cri.api.SANDBOX_READY, ps
    assert_pod_usable(w, ps[0].id, st["cfg"])


def check_start_undone(w, st):
    c = w.cri.call("ContainerStatus", container_id=st["ctr"]).status
    assert c.state == w.cri.api.CONTAINER_EXITED, c
    assert c.reason == "StartError", c
    assert procs_of(st["ctr"]) == 0, "an undone start left processes: %s" % procs_desc(st["ctr"])


def check_started(w, st):
    c = w.cri.call("ContainerStatus", container_id=st["ctr"]).status
    assert c.state == w.cri.api.CONTAINER_RUNNING, c
    assert procs_of(st["ctr"]) > 0


def check_stop(w, st):
    c = w.cri.call("ContainerStatus", container_id=st["ctr"]).status
    if c.state == w.cri.api.CONTAINER_RUNNING:
        assert procs_of(st["ctr"]) > 0
    else:
        assert c.state == w.cri.api.CONTAINER_EXITED, c
        assert c.exit_code == 137, c
        assert procs_of(st["ctr"]) == 0
    call_stop(w, st)
    assert w.cri.call("ContainerStatus", container_id=st["ctr"]).status.state == \
        w.cri.api.CONTAINER_EXITED


def check_remove(w, st):
    c = ctrs(w).get(st["ctr"])
    if c is not None:
        assert c.state == w.cri.api.CONTAINER_EXITED, c
        call_remove(w, st)
    assert st["ctr"] not in ctrs(w)


def check_stop_pod(w, st):
    p = pods(w)[st["pod"]]
    if p.state == w.cri.api.SANDBOX_READY:
        assert_pod_usable(w, st["pod"], st["cfg"])
    for c in ctrs(w).values():
        if c.state != w.cri.api.CONTAINER_RUNNING:
            assert procs_of(c.id) == 0
    call_stop_pod(w, st)
    assert pods(w)[st["pod"]].state == w.cri.api.SANDBOX_NOTREADY


def check_remove_pod(w, st):
    p = pods(w).get(st["pod"])
    if p is not None:
        # cut off before the pod's own teardown began, it is still whole
        if p.state == w.cri.api.SANDBOX_READY:
            assert_pod_usable(w, st["pod"], st["cfg"])
        call_remove_pod(w, st)
    assert st["pod"] not in pods(w)
    assert not ctrs(w)


RUN_POD_STEPS = ["intent", "cgroup", "pins", "shm", "network", "files"]
CASES = (
    [Case("runpodsandbox." + s, scene_pod, call_run_pod, check_pod_gone, False)
     for s in RUN_POD_STEPS] +
    [Case("runpodsandbox.saved", scene_pod, call_run_pod, check_pod_ready, False)] +
    [Case("runpodsandbox." + s, scene_infra_pod, call_run_pod, check_pod_gone, False)
     for s in ("intent", "network", "infracreated", "infra")] +
    [Case("runpodsandbox.saved", scene_infra_pod, call_run_pod, check_pod_ready, False)] +
    [Case("startcontainer." + s, scene_created, call_start, check_start_undone, False)
     for s in ("intent", "created", "started")] +
    [Case("startcontainer.saved", scene_created, call_start, check_started, False)] +
    [Case("stopcontainer." + s, scene_running, call_stop_grace, check_stop, False)
     for s in ("signalled", "killed")] +
    # the exit is being recorded: the root filesystem is unmounted, EXITED not yet saved
    [Case("exit.unmounted", scene_running, call_stop_grace, check_stop, False)] +
    [Case("removecontainer.stopped", scene_exited, call_remove, check_remove, False)] +
    [Case("removecontainer." + s, scene_running, call_remove, check_remove, False)
     for s in ("stopped", "unmounted", "dirs", "record")] +
    # a running container: its runc delete is still owed when RemoveContainer answers
    [Case("removecontainer.deferred", scene_running, call_remove, check_remove, True)] +
    [Case("stoppodsandbox." + s, scene_infra_running, call_stop_pod, check_stop_pod, False)
     for s in ("containers", "intent", "infra", "network", "pins")] +
    [Case("removepodsandbox." + s, scene_infra_running, call_remove_pod, check_remove_pod,
          False)
     for s in ("containers", "stopped", "infra", "dirs", "cgroup", "record")]
)


def case_id(c):
    return c.point + "+" + c.scene.__name__[len("scene_"):]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_crash_point(world, case):
    w, d = world, world.d
    d.start()
    w.connect()
    st = case.scene(w)
    d.stop()
    d.start(crash_at=case.point)
    w.connect()
    if case.answers:
        try:
            case.call(w, st)
        except Exception:
            pass
    else:
        try:
            H.unavailable(lambda: case.call(w, st))
        except AssertionError:
            d.kill9()  # it never reached its crash point: no daemon left behind
            raise
    d.wait_killed()
    ids = H.ids_on_disk(d) | {v for k, v in st.items() if k in ("pod", "ctr")}
    d.start()
    w.connect()
    done = False
    try:
        case.check(w, st)
        H.remove_everything(w.cri)
        done = True
        H.wait_baseline(d, w.baseline, ids, w.parents)
    finally:
        if not done:  # leave a clean node to the next case
            try:
                H.remove_everything(w.cri)
            except Exception:
                pass
        d.stop()


def test_every_counter_sees_a_running_pod(world):
    """The matrix compares counts with a baseline, so a counter that never counts
    anything (a wrong veth prefix, a moved directory) would pass every case: each must
    rise while a pod with a host port runs a container, and fall back after removal."""
    w, d = world, world.d
    d.start()
    w.connect()
    try:
        st = scene_running(w)
        ids = {st["pod"], st["ctr"]}
        now = H.leftovers(d, ids, w.parents)
        idle = ("exit_files", "blobs")  # an exit, a pull: not part of a running pod
        flat = sorted(k for k in H.COUNTERS if k not in idle and now[k] <= w.baseline[k])
        assert not flat, "counters that missed a running pod: %s (baseline %s, now %s)" % (
            flat, w.baseline, now)
        H.remove_everything(w.cri)
        H.wait_baseline(d, w.baseline, ids, w.parents)
    finally:
        d.stop()
