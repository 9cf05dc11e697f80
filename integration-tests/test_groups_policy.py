"""supplemental_groups_policy (issue 19): Merge, the default, adds the groups the image's
/etc/group lists the user in; Strict gives only the primary gid and the requested groups.
ContainerStatus.user reports what the container's init actually runs with, as kubelet
1.31+ copies it into the pod's status."""
import json

import grpc
import pytest

import registry as R

from ctr_helpers import container_config, pod_running

IMAGE_GROUPS = (b"root:x:0:\napp:x:1000:\nstaff:x:50:app\nvideo:x:60:root,app\n"
                b"audio:x:61:other\nnogroup:x:65534:\n")


@pytest.fixture(scope="module")
def image_ref():
    """busybox whose /etc/group lists app (1000) in staff (50) and video (60)."""
    reg = R.DockerRegistry()
    groups = R.tar_layer([("etc", "dir", None), ("etc/group", "file", IMAGE_GROUPS)])
    ref = reg.push("test/busybox-policy", "latest", R.Image([R.busybox_layer(), groups]))
    yield ref
    reg.stop()


def proc_status(pid):
    """Uid, Gid (real ids) and Groups of a host process."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(v) for v in value.split()]
    return out


def run(cri, image_ref, pod, name, **sc):
    cfg = container_config(cri, image_ref, name, ["/bin/sleep", "1000"],
                           linux={"security_context": sc})
    cid = cri.call("CreateContainer", pod_sandbox_id=pod[0], config=cfg,
                   sandbox_config=pod[1]).container_id
    cri.call("StartContainer", container_id=cid)
    return cid


def check(cri, cid, want_groups):
    """/proc/1/status and `id -G` inside, /proc/<pid>/status on the host and
    ContainerStatus.user all say the same: uid 1000, gid 1000, want_groups."""
    r = cri.call("ExecSync", container_id=cid,
                 cmd=["/bin/sh", "-c", "grep ^Groups: /proc/1/status; id -G"], timeout=20)
    lines = r.stdout.decode().splitlines()
    assert sorted(int(g) for g in lines[0].split()[1:]) == want_groups, lines
    assert sorted(int(g) for g in lines[1].split()) == want_groups, lines

    resp = cri.call("ContainerStatus", container_id=cid, verbose=True)
    pid = json.loads(resp.info["info"])["pid"]
    host = proc_status(pid)
    user = resp.status.user.linux
    assert (user.uid, user.gid) == (1000, 1000)
    assert host["Uid"][0] == user.uid and host["Gid"][0] == user.gid
    assert sorted(user.supplemental_groups) == sorted(host["Groups"]) == want_groups, \
        (list(user.supplemental_groups), host)


def test_merge_adds_the_images_groups_and_strict_does_not(cri, image_ref, tmp_path):
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod = pod_running(cri, tmp_path, "groups-policy")
    try:
        merged = run(cri, image_ref, pod, "merge", run_as_user={"value": 1000},
                     supplemental_groups=[70])
        check(cri, merged, [50, 60, 70, 1000])

        strict = run(cri, image_ref, pod, "strict", run_as_user={"value": 1000},
                     supplemental_groups=[70], supplemental_groups_policy="Strict")
        check(cri, strict, [70, 1000])

        # By name too: the image's passwd resolves app, Strict still drops its groups.
        named = run(cri, image_ref, pod, "named", run_as_username="app",
                    supplemental_groups_policy="Strict")
        check(cri, named, [1000])
        for cid in (merged, strict, named):
            cri.call("RemoveContainer", container_id=cid)
    finally:
        cri.call("StopPodSandbox", pod_sandbox_id=pod[0])
        cri.call("RemovePodSandbox", pod_sandbox_id=pod[0])


def test_user_survives_a_restart(make_daemon, image_ref, tmp_path):
    """ContainerStatus.user comes from the container's record, so it is the same after
    remorad restarts."""
    d = make_daemon().start()
    cri = d.client()
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod = pod_running(cri, tmp_path, "groups-restart")
    cid = run(cri, image_ref, pod, "strict", run_as_user={"value": 1000},
              supplemental_groups=[70], supplemental_groups_policy="Strict")
    cri.close()
    d.stop()
    d2 = make_daemon(base=d.base).start()
    cri = d2.client()
    check(cri, cid, [70, 1000])
    cri.call("RemoveContainer", container_id=cid)
    cri.call("StopPodSandbox", pod_sandbox_id=pod[0])
    cri.call("RemovePodSandbox", pod_sandbox_id=pod[0])
    cri.close()


def test_unknown_policy_is_refused(cri, image_ref, tmp_path):
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod = pod_running(cri, tmp_path, "groups-bad")
    try:
        cfg = container_config(cri, image_ref, "bad", ["/bin/true"])
        cfg.linux.security_context.supplemental_groups_policy = 7
        with pytest.raises(grpc.RpcError) as e:
            cri.call("CreateContainer", pod_sandbox_id=pod[0], config=cfg,
                     sandbox_config=pod[1])
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "supplemental_groups_policy" in e.value.details()
    finally:
        cri.call("StopPodSandbox", pod_sandbox_id=pod[0])
        cri.call("RemovePodSandbox", pod_sandbox_id=pod[0])


def test_status_reports_the_feature(cri):
    assert cri.call("Status").features.supplemental_groups_policy is True
