"""What Remora applies when the client is silent, and what it refuses to change on the
host (issue 15 items 1, 2, 4; issue 18's groups). Each test names the attack or the
defect it closes."""
import os
import subprocess

import grpc
import pytest
from google.protobuf import json_format

import registry as R

from ctr_helpers import POD, container_config, create

DEFAULT_MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                  "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                  "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                  "/sys/devices/virtual/powercap"]


@pytest.fixture(scope="module")
def image_ref():
    """busybox with a wheel group (gid 10) that root belongs to, as in most distributions'
    /etc/group."""
    reg = R.DockerRegistry()
    groups = R.tar_layer([("etc", "dir", None),
                          ("etc/group", "file", b"root:x:0:\nwheel:x:10:root\napp:x:1000:\n"
                                                b"staff:x:50:app\nnogroup:x:65534:\n")])
    ref = reg.push("test/busybox-groups", "latest", R.Image([R.busybox_layer(), groups]))
    yield ref
    reg.stop()


def run_pod(cri, image_ref, tmp_path, uid, privileged=False):
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    doc = dict(POD, log_directory=str(tmp_path / "logs"))
    doc["metadata"] = dict(POD["metadata"], uid=uid)
    if privileged:
        doc["linux"] = {"security_context": {"privileged": True,
                                             "namespace_options": {"pid": "CONTAINER"}}}
    cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
    return cri.call("RunPodSandbox", config=cfg).pod_sandbox_id, cfg


def remove_pod(cri, pod):
    cri.call("StopPodSandbox", pod_sandbox_id=pod[0])
    cri.call("RemovePodSandbox", pod_sandbox_id=pod[0])


def sh(cri, cid, script):
    return cri.call("ExecSync", container_id=cid, cmd=["/bin/sh", "-c", script], timeout=20)


def propagation(path):
    return subprocess.run(["findmnt", "-n", "-o", "PROPAGATION", "--mountpoint", str(path)],
                          capture_output=True, text=True, check=True).stdout.strip()


# ---- item 1: masked and read-only paths by default ----

def test_default_container_cannot_write_core_pattern_nor_read_masked_proc(cri, image_ref,
                                                                         tmp_path):
    """Attack: a CRI client other than kubelet (crictl, critest, a script) sends no
    masked_paths/readonly_paths. Remora used to apply none, so an unprivileged container
    with the default capabilities had a writable /proc/sys: it wrote the host's
    kernel.core_pattern ("|/path/in/container" makes the kernel run that program as root
    on the host at the next crash: code execution on the node), and read /proc/kcore (the
    host kernel's memory, with CAP_SYS_RAWIO), /proc/timer_list and friends. Now the
    container gets containerd's lists. The probe writes core_pattern's own value back, so
    even on a runtime without the defaults it changes nothing on this host."""
    pod = run_pod(cri, image_ref, tmp_path, "masked")
    with open("/proc/sys/kernel/core_pattern") as f:
        host_pattern = f.read()
    try:
        # SYS_RAWIO too: the kernel's own check on /proc/kcore is that capability.
        cfg = container_config(cri, image_ref, "masked", ["/bin/sleep", "1000"],
                               linux={"security_context": {
                                   "capabilities": {"add_capabilities": ["SYS_RAWIO"]}}})
        cid = create(cri, pod, cfg)
        cri.call("StartContainer", container_id=cid)
        r = sh(cri, cid, "cat /proc/sys/kernel/core_pattern > /tmp/cp && "
                         "cat /tmp/cp > /proc/sys/kernel/core_pattern")
        assert r.exit_code != 0, "a default container wrote /proc/sys/kernel/core_pattern"
        assert b"Read-only file system" in r.stderr, r
        r = sh(cri, cid, "head -c 4 /proc/kcore | wc -c")
        assert r.stdout.strip() == b"0", "read %s bytes of /proc/kcore" % r.stdout
        r = sh(cri, cid, "echo x > /proc/sysrq-trigger")
        assert r.exit_code != 0
        # Every masked path the host has reads as empty inside: files are /dev/null, and
        # directories an empty read-only tmpfs.
        present = [p for p in DEFAULT_MASKED if os.path.exists(p)]
        assert present, "the host has none of the masked paths"
        for p in present:
            probe = "ls -A %s | wc -l" % p if os.path.isdir(p) else "wc -c < %s" % p
            r = sh(cri, cid, probe)
            assert r.exit_code == 0 and r.stdout.strip() == b"0", (p, r)
        mounts = sh(cri, cid, "cat /proc/self/mountinfo").stdout.decode()
        ro = [l.split()[4] for l in mounts.splitlines() if " ro," in " " + l.split()[5] + ","]
        for p in ("/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"):
            if os.path.exists(p):
                assert p in ro, (p, mounts)
        cri.call("RemoveContainer", container_id=cid)
    finally:
        remove_pod(cri, pod)
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == host_pattern


def test_client_lists_replace_the_defaults_and_privileged_gets_none(cri, image_ref, tmp_path):
    """kubelet sends its own lists (its ProcMount type decides them): those are applied as
    given, not merged with Remora's. A privileged container gets no masks, as today."""
    pod = run_pod(cri, image_ref, tmp_path, "lists", privileged=True)
    try:
        cfg = container_config(cri, image_ref, "own", ["/bin/sleep", "1000"],
                               linux={"security_context": {"masked_paths": ["/proc/keys"],
                                                           "readonly_paths": ["/proc/fs"]}})
        cid = create(cri, pod, cfg)
        cri.call("StartContainer", container_id=cid)
        mounts = sh(cri, cid, "cat /proc/self/mountinfo").stdout.decode()
        targets = [l.split()[4] for l in mounts.splitlines()]
        assert "/proc/keys" in targets and "/proc/fs" in targets
        assert "/proc/sys" not in targets and "/proc/timer_list" not in targets
        cri.call("RemoveContainer", container_id=cid)

        cfg = container_config(cri, image_ref, "priv", ["/bin/sleep", "1000"],
                               linux={"security_context": {"privileged": True}})
        cid = create(cri, pod, cfg)
        cri.call("StartContainer", container_id=cid)
        mounts = sh(cri, cid, "cat /proc/self/mountinfo").stdout.decode()
        targets = [l.split()[4] for l in mounts.splitlines()]
        assert not any(t in targets for t in DEFAULT_MASKED + ["/proc/sys"]), mounts
        cri.call("RemoveContainer", container_id=cid)
    finally:
        remove_pod(cri, pod)


# ---- item 2: mount propagation never changes a host mount ----

@pytest.fixture
def host_mount(tmp_path):
    made = []

    def make(name):
        path = tmp_path / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "proptest", str(path)],
                       check=True)
        made.append(path)
        return path

    yield make
    for path in reversed(made):
        subprocess.run(["umount", "-R", str(path)], check=False)


def test_propagation_on_a_private_host_mount_is_refused_and_the_mount_kept(cri, image_ref,
                                                                           tmp_path, host_mount):
    """Attack: a client asks for HOST_TO_CONTAINER (or BIDIRECTIONAL) on a host path
    whose mount is private. Remora used to make that host mount shared behind the
    operator's back: from then on mounts made under it on the host (or, bidirectional,
    by a privileged container) spread to every peer, a change to the node nobody asked
    for. containerd and CRI-O refuse with the path and its mount point; so does Remora,
    and the host mount's propagation is what it was."""
    host = host_mount("private")
    subprocess.run(["mount", "--make-private", str(host)], check=True)
    (host / "sub").mkdir()
    assert propagation(host) == "private"
    pod = run_pod(cri, image_ref, tmp_path, "prop-private", privileged=True)
    try:
        for mode, priv in (("PROPAGATION_HOST_TO_CONTAINER", False),
                           ("PROPAGATION_BIDIRECTIONAL", True)):
            cfg = container_config(cri, image_ref, "prop", ["/bin/sleep", "1000"],
                                   mounts=[{"container_path": "/mnt/p",
                                            "host_path": str(host / "sub"),
                                            "propagation": mode}],
                                   linux={"security_context": {"privileged": priv}})
            with pytest.raises(grpc.RpcError) as e:
                create(cri, pod, cfg)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
            assert str(host / "sub") in e.value.details()
            assert "host mount %s " % host in e.value.details(), e.value.details()
            assert propagation(host) == "private"
        assert len(cri.call("ListContainers").containers) == 0
    finally:
        remove_pod(cri, pod)
    assert propagation(host) == "private"


def test_a_slave_host_mount_serves_host_to_container_but_not_bidirectional(cri, image_ref,
                                                                           tmp_path, host_mount):
    """HOST_TO_CONTAINER needs the host mount to receive events (shared or slave);
    BIDIRECTIONAL also needs to send them back (shared). A slave mount passes the first
    and is refused for the second, unchanged either way."""
    master = host_mount("master")
    subprocess.run(["mount", "--make-shared", str(master)], check=True)
    slave = tmp_path / "slave"
    slave.mkdir()
    subprocess.run(["mount", "--bind", str(master), str(slave)], check=True)
    try:
        subprocess.run(["mount", "--make-slave", str(slave)], check=True)
        assert propagation(slave) == "private,slave"
        pod = run_pod(cri, image_ref, tmp_path, "prop-slave", privileged=True)
        try:
            cfg = container_config(cri, image_ref, "bidi", ["/bin/sleep", "1000"],
                                   mounts=[{"container_path": "/mnt/p", "host_path": str(slave),
                                            "propagation": "PROPAGATION_BIDIRECTIONAL"}],
                                   linux={"security_context": {"privileged": True}})
            with pytest.raises(grpc.RpcError) as e:
                create(cri, pod, cfg)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "host mount %s " % slave in e.value.details(), e.value.details()
            assert propagation(slave) == "private,slave"

            cfg = container_config(cri, image_ref, "h2c", ["/bin/sleep", "1000"],
                                   mounts=[{"container_path": "/mnt/p", "host_path": str(slave),
                                            "propagation": "PROPAGATION_HOST_TO_CONTAINER"}])
            cid = create(cri, pod, cfg)
            cri.call("StartContainer", container_id=cid)
            # Mounted on the master after the start: reaches the container through the
            # slave.
            (master / "late").mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "late",
                            str(master / "late")], check=True)
            (master / "late" / "file").write_text("arrived\n")
            r = sh(cri, cid, "cat /mnt/p/late/file")
            assert r.exit_code == 0 and r.stdout == b"arrived\n", r
            assert propagation(slave) == "private,slave"
            cri.call("RemoveContainer", container_id=cid)
        finally:
            remove_pod(cri, pod)
    finally:
        subprocess.run(["umount", "-R", str(slave)], check=False)


# ---- item 4 and issue 18: supplementary groups ----

def test_primary_gid_is_in_the_groups_of_init_and_exec(cri, image_ref, tmp_path):
    """Defect (issue 18): `id` in a container running 0:0 with additional gid 10 printed
    groups=10(wheel); containerd and CRI-O print groups=0(root),10(wheel), and programs
    that check membership with getgroups() depend on it. The primary gid is always in the
    list, then the image's groups for the user, then the request's."""
    pod = run_pod(cri, image_ref, tmp_path, "groups")
    try:
        cfg = container_config(cri, image_ref, "root", ["/bin/sleep", "1000"],
                               linux={"security_context": {"run_as_user": {"value": 0},
                                                           "run_as_group": {"value": 0},
                                                           "supplemental_groups": [10]}})
        cid = create(cri, pod, cfg)
        cri.call("StartContainer", container_id=cid)
        r = sh(cri, cid, "grep ^Groups: /proc/1/status; grep ^Groups: /proc/self/status; id")
        lines = r.stdout.decode().splitlines()
        assert lines[0].split() == ["Groups:", "0", "10"], lines  # the container's init
        assert lines[1].split() == ["Groups:", "0", "10"], lines  # an exec'd process
        assert lines[2] == "uid=0(root) gid=0(root) groups=0(root),10(wheel)", lines
        cri.call("RemoveContainer", container_id=cid)

        # app (1000) is in staff (50) by the image; 50 asked again, 7 new.
        cfg = container_config(cri, image_ref, "app", ["/bin/sleep", "1000"],
                               linux={"security_context": {"run_as_user": {"value": 1000},
                                                           "supplemental_groups": [50, 7,
                                                                                   1000]}})
        cid = create(cri, pod, cfg)
        cri.call("StartContainer", container_id=cid)
        r = sh(cri, cid, "grep ^Groups: /proc/1/status; id -G")
        lines = r.stdout.decode().splitlines()
        assert lines[0].split() == ["Groups:", "7", "50", "1000"], lines
        assert sorted(lines[1].split(), key=int) == ["7", "50", "1000"], lines
        cri.call("RemoveContainer", container_id=cid)
    finally:
        remove_pod(cri, pod)


def test_too_many_supplemental_groups_refused(cri, image_ref, tmp_path):
    """Attack: 200,000 supplemental groups cost 12 s of one worker's CPU (a pairwise
    duplicate scan) before runc refused them anyway. Past NGROUPS_MAX (65536) the call is
    refused at once, naming the field."""
    pod = run_pod(cri, image_ref, tmp_path, "many-groups")
    try:
        cfg = container_config(cri, image_ref, "many", ["/bin/true"],
                               linux={"security_context": {
                                   "supplemental_groups": list(range(100, 200100))}})
        with pytest.raises(grpc.RpcError) as e:
            create(cri, pod, cfg)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "supplemental_groups" in e.value.details()
        assert len(cri.call("ListContainers").containers) == 0
    finally:
        remove_pod(cri, pod)


def test_propagation_of_a_mount_point_with_a_space(cri, image_ref, tmp_path, host_mount):
    """/proc/self/mountinfo writes a space in a mount point as \\040: the check must still
    find the mount that holds the path (here a shared one, under a private parent)."""
    host = host_mount("with space")
    subprocess.run(["mount", "--make-shared", str(host)], check=True)
    pod = run_pod(cri, image_ref, tmp_path, "prop-space")
    try:
        cfg = container_config(cri, image_ref, "space", ["/bin/sleep", "1000"],
                               mounts=[{"container_path": "/mnt/p", "host_path": str(host),
                                        "propagation": "PROPAGATION_HOST_TO_CONTAINER"}])
        cid = create(cri, pod, cfg)
        cri.call("RemoveContainer", container_id=cid)
        subprocess.run(["mount", "--make-private", str(host)], check=True)
        with pytest.raises(grpc.RpcError) as e:
            create(cri, pod, cfg)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "host mount %s " % host in e.value.details(), e.value.details()
    finally:
        remove_pod(cri, pod)
