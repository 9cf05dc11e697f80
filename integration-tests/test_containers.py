"""Containers end to end: a pulled busybox image, a pod with pinned namespaces, runc under
remora-shim. Checks what the process inside sees and what is left behind."""
import base64
import json
import os
import signal
import subprocess
import time

import grpc
import pytest
from google.protobuf import json_format

import registry as R

from ctr_helpers import (POD, container_config, create, image_ref, log_lines,  # noqa: F401
                         pod, status, wait_exited, wait_until)


def test_run_to_completion_with_logs_env_user_cwd(daemon, cri, pod, image_ref):
    cfg = container_config(cri, image_ref, "hello",
                           ["/bin/sh", "-c", "echo out-$FROM_IMAGE-$MINE; echo err >&2; id -u; "
                                             "pwd; exit 3"],
                           # KeyValue.value is bytes in cri-api v1 (base64 in JSON)
                           envs=[{"key": "MINE", "value": base64.b64encode(b"yes").decode()}],
                           linux={"security_context": {"run_as_user": {"value": 1000}}})
    cid = create(cri, pod, cfg)
    assert status(cri, cid).state == cri.api.CONTAINER_CREATED
    cri.call("StartContainer", container_id=cid)
    st = wait_exited(cri, cid)
    assert st.exit_code == 3 and st.reason == "Error"
    assert st.started_at >= st.created_at and st.finished_at >= st.started_at
    lines = log_lines(st.log_path)
    streams = {(l[1], l[3]) for l in lines}
    assert ("stdout", "out-1-yes") in streams and ("stderr", "err") in streams
    assert ("stdout", "1000") in streams and ("stdout", "/srv/work") in streams
    assert all(l[2] == "F" for l in lines)
    # Its root filesystem was unmounted when the exit was recorded, before any remove.
    rootfs = os.path.join(daemon.state, "containers", cid, "rootfs")
    assert " %s " % rootfs not in open("/proc/self/mountinfo").read()
    cri.call("RemoveContainer", container_id=cid)
    with pytest.raises(grpc.RpcError) as e:
        status(cri, cid)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_long_running_exec_stop_and_leaks(daemon, cri, pod, image_ref):
    before_mounts = open("/proc/self/mountinfo").read().count(daemon.base)
    cfg = container_config(cri, image_ref, "sleeper", ["/bin/sleep", "1000"])
    cid = create(cri, pod, cfg)
    cri.call("StartContainer", container_id=cid)
    assert status(cri, cid).state == cri.api.CONTAINER_RUNNING
    r = cri.call("ExecSync", container_id=cid, cmd=["/bin/sh", "-c", "echo hi; hostname; exit 4"],
                 timeout=10)
    assert r.exit_code == 4 and r.stdout == b"hi\nctr-pod\n"
    listed = cri.call("ListContainers").containers
    assert [c.id for c in listed] == [cid]
    t0 = time.monotonic()
    # sleep as PID 1 ignores SIGTERM: the 2 s grace runs out and SIGKILL follows.
    cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid, timeout=2),
             timeout=30)
    st = status(cri, cid)
    assert st.state == cri.api.CONTAINER_EXITED and st.exit_code == 137
    assert 2 <= time.monotonic() - t0 < 10
    rootfs = os.path.join(daemon.state, "containers", cid, "rootfs")
    assert " %s " % rootfs not in open("/proc/self/mountinfo").read()
    cri.call("RemoveContainer", container_id=cid)
    assert open("/proc/self/mountinfo").read().count(daemon.base) == before_mounts
    assert os.listdir(os.path.join(daemon.root, "containers")) == [".trash"]
    # The directories went to the trash in one rename each; the watcher empties it.
    for base in (daemon.root, daemon.state):
        trash = os.path.join(base, "containers", ".trash")
        wait_until(lambda: os.listdir(trash) == [], "%s is not emptied" % trash)
    runc_root = os.path.join(daemon.state, "runc")
    wait_until(lambda: not os.path.isdir(runc_root) or os.listdir(runc_root) == [],
               "runc's state of the removed container stays")


def test_containers_share_the_pod_pid_namespace(daemon, cri, image_ref, tmp_path):
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    doc = dict(POD, log_directory=str(tmp_path / "logs"))
    doc["metadata"] = dict(POD["metadata"], uid="shared")
    doc["linux"] = {"security_context": {"namespace_options": {"pid": "POD"}}}
    cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
    pod_id = cri.call("RunPodSandbox", config=cfg).pod_sandbox_id
    c = container_config(cri, image_ref, "shared", ["/bin/sleep", "1000"])
    cid = create(cri, (pod_id, cfg), c)
    cri.call("StartContainer", container_id=cid)
    r = cri.call("ExecSync", container_id=cid, cmd=["/bin/ps", "-o", "pid,args"], timeout=10)
    lines = r.stdout.decode().splitlines()
    assert any(l.split()[:2] == ["1", "/pause"] for l in lines), lines
    assert any("sleep 1000" in l for l in lines)
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    assert status(cri, cid).state == cri.api.CONTAINER_EXITED
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    with pytest.raises(grpc.RpcError):
        status(cri, cid)
    assert os.listdir(os.path.join(daemon.state, "runc")) == []


def test_kill_9_daemon_containers_survive(make_daemon, image_ref, tmp_path):
    d = make_daemon().start()
    cri = d.client()
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    doc = dict(POD, log_directory=str(tmp_path / "logs"))
    cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
    pod = (cri.call("RunPodSandbox", config=cfg).pod_sandbox_id, cfg)
    keep = create(cri, pod, container_config(
        cri, image_ref, "keep", ["/bin/sh", "-c", "i=0; while true; do echo n$i; i=$((i+1)); "
                                                  "sleep 0.1; done"]))
    short = create(cri, pod, container_config(
        cri, image_ref, "short", ["/bin/sh", "-c", "read x; exit 7"], stdin=True))
    short2 = create(cri, pod, container_config(cri, image_ref, "short2",
                                               ["/bin/sh", "-c", "sleep 1; exit 5"]))
    for c in (keep, short, short2):
        cri.call("StartContainer", container_id=c)
    pid = int(json.loads(cri.call("ContainerStatus", container_id=keep,
                                  verbose=True).info["info"])["pid"])
    d.stop(signal.SIGKILL)
    cri.close()
    time.sleep(1.5)  # short2 exits while remorad is gone; keep goes on logging
    assert os.path.exists("/proc/%d" % pid)
    d2 = make_daemon(base=d.base).start()
    c2 = d2.client()
    st = status(c2, keep)
    assert st.state == c2.api.CONTAINER_RUNNING
    st2 = wait_exited(c2, short2)
    assert st2.exit_code == 5
    n_before = len(log_lines(st.log_path))
    time.sleep(0.5)
    assert len(log_lines(st.log_path)) > n_before, "the shim kept logging across the restart"
    c2.call("StopPodSandbox", pod_sandbox_id=pod[0])
    assert status(c2, keep).state == c2.api.CONTAINER_EXITED
    c2.call("RemovePodSandbox", pod_sandbox_id=pod[0])
    assert not os.path.exists("/proc/%d" % pid) or \
        "Z" in open("/proc/%d/stat" % pid).read().split()[2]
    assert os.listdir(os.path.join(d2.state, "runc")) == []
    c2.close()


def test_exec_timeout_kills_the_command(cri, pod, image_ref):
    cid = create(cri, pod, container_config(cri, image_ref, "ex", ["/bin/sleep", "1000"]))
    cri.call("StartContainer", container_id=cid)
    t0 = time.monotonic()
    # ExecSyncRequest.timeout (1 s), not the gRPC deadline (Cri.call's own timeout).
    req = cri.message("ExecSyncRequest", container_id=cid, cmd=["/bin/sleep", "77"], timeout=1)
    with pytest.raises(grpc.RpcError) as e:
        cri.call("ExecSync", req, timeout=20)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 10
    time.sleep(0.3)
    ps = cri.call("ExecSync", container_id=cid, cmd=["/bin/ps", "-o", "args"], timeout=10)
    assert b"sleep 77" not in ps.stdout
    cri.call("RemoveContainer", container_id=cid)


def test_long_log_lines_are_split_as_partial(cri, pod, image_ref):
    cid = create(cri, pod, container_config(
        cri, image_ref, "long", ["/bin/sh", "-c", "yes x | tr -d '\\n' | head -c 40960; "
                                                  "echo; echo short"]))
    cri.call("StartContainer", container_id=cid)
    st = wait_exited(cri, cid)
    lines = log_lines(st.log_path)
    tags = [l[2] for l in lines]
    text = "".join(l[3] if len(l) > 3 else "" for l in lines if l[1] == "stdout")
    assert "P" in tags and tags[-1] == "F"
    assert text.count("x") == 40960 and text.endswith("short")
    cri.call("RemoveContainer", container_id=cid)


def test_limits_mounts_volumes(cri, pod, image_ref, tmp_path):
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "hello").write_text("from the host\n")
    cfg = container_config(
        cri, image_ref, "lim",
        ["/bin/sh", "-c", "cat /mnt/in/hello; touch /mnt/in/new 2>&1; echo rc=$?; sleep 1000"],
        mounts=[{"container_path": "/mnt/in", "host_path": str(host_dir), "readonly": True}],
        linux={"resources": {"memory_limit_in_bytes": 64 << 20, "cpu_shares": 256}})
    cid = create(cri, pod, cfg)
    cri.call("StartContainer", container_id=cid)
    time.sleep(0.5)
    st = status(cri, cid)
    lines = [l[3] for l in log_lines(st.log_path)]
    assert "from the host" in lines and "rc=1" in lines
    assert not (host_dir / "new").exists()
    cg = "/sys/fs/cgroup/memory/remora/%s/memory.limit_in_bytes" % cid
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        cg = "/sys/fs/cgroup/remora/%s/memory.max" % cid
    with open(cg) as f:
        assert int(f.read()) == 64 << 20
    assert [m.container_path for m in st.mounts] == ["/mnt/in"] and st.mounts[0].readonly
    cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid, timeout=0))
    cri.call("RemoveContainer", container_id=cid)
    wait_until(lambda: not os.path.exists(os.path.dirname(cg)),
               "the removed container's cgroup stays")


def test_host_to_container_propagation_from_a_shared_mount(cri, pod, image_ref, tmp_path):
    # Remora never changes a host mount's propagation (test_safe_defaults has the refusal
    # of a private one): the operator makes it shared.
    host = tmp_path / "prop"
    host.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "proptest", str(host)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(host)], check=True)
        cfg = container_config(cri, image_ref, "prop", ["/bin/sleep", "1000"],
                               mounts=[{"container_path": "/mnt/prop", "host_path": str(host),
                                        "propagation": "PROPAGATION_HOST_TO_CONTAINER"}])
        cid = create(cri, pod, cfg)
        cri.call("StartContainer", container_id=cid)
        # Mounted on the host after the container started: seen inside through the slave.
        (host / "late").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "late", str(host / "late")],
                       check=True)
        (host / "late" / "file").write_text("arrived\n")
        r = cri.call("ExecSync", container_id=cid, cmd=["/bin/cat", "/mnt/prop/late/file"],
                     timeout=10)
        assert r.exit_code == 0 and r.stdout == b"arrived\n", r
        with open("/proc/self/mountinfo") as f:
            line = [l for l in f if l.split()[4] == str(host)][0]
        assert " shared:" in line.split(" - ")[0]
        cri.call("RemoveContainer", container_id=cid)
    finally:
        subprocess.run(["umount", "-R", str(host)], check=False)


def test_oom_killed_is_the_reason(cri, pod, image_ref):
    limit = 32 << 20
    cfg = container_config(cri, image_ref, "oom",
                           ["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
                           linux={"resources": {"memory_limit_in_bytes": limit,
                                                "memory_swap_limit_in_bytes": limit}})
    cid = create(cri, pod, cfg)
    cri.call("StartContainer", container_id=cid)
    st = wait_exited(cri, cid)
    assert st.exit_code == 137 and st.reason == "OOMKilled", st
    cri.call("RemoveContainer", container_id=cid)
    # A plain SIGKILL is no OOM.
    cid = create(cri, pod, container_config(cri, image_ref, "killed", ["/bin/sleep", "1000"]))
    cri.call("StartContainer", container_id=cid)
    cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid, timeout=0))
    st = status(cri, cid)
    assert st.exit_code == 137 and st.reason == "Error"
    cri.call("RemoveContainer", container_id=cid)


def test_no_new_privs_stops_a_setuid_binary(daemon, cri, tmp_path):
    # busybox drops set-user-ID privileges by itself, so the probe is a tiny static C
    # program that prints its effective uid.
    src = tmp_path / "probe.c"
    src.write_text('#include <stdio.h>\n#include <unistd.h>\n'
                   'int main(void) { printf("euid=%d\\n", (int)geteuid()); return 0; }\n')
    subprocess.run(["cc", "-static", "-O2", "-o", str(tmp_path / "probe"), str(src)], check=True)
    reg = R.DockerRegistry()
    try:
        probe = R.tar_layer([("bin", "dir", None),
                             ("bin/probe", "suid", (tmp_path / "probe").read_bytes())])
        ref = reg.push("test/suid", "1", R.Image([R.busybox_layer(), probe]))
        cri.call("PullImage", image=cri.message("ImageSpec", image=ref), timeout=60)
        doc = dict(POD, log_directory=str(tmp_path / "logs"))
        pod_cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
        pod_id = cri.call("RunPodSandbox", config=pod_cfg).pod_sandbox_id
        out = {}
        for nnp in (False, True):
            cfg = container_config(cri, ref, "nnp-%s" % nnp, ["/bin/probe"],
                                   linux={"security_context": {
                                       "run_as_user": {"value": 1000}, "no_new_privs": nnp}})
            cid = create(cri, (pod_id, pod_cfg), cfg)
            cri.call("StartContainer", container_id=cid)
            st = wait_exited(cri, cid)
            out[nnp] = " ".join(l[3] for l in log_lines(st.log_path))
        assert out == {False: "euid=0", True: "euid=1000"}, out
        cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
        cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    finally:
        reg.stop()
