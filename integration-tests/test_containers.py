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

POD = {"metadata": {"name": "ctr-pod", "namespace": "default", "uid": "ctr-uid", "attempt": 0},
       "hostname": "ctr-pod",
       "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}}}


@pytest.fixture(scope="module")
def image_ref():
    reg = R.DockerRegistry()
    img = R.Image([R.busybox_layer()], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin",
                                                                            "FROM_IMAGE=1"],
                                                 "WorkingDir": "/srv/work"})
    ref = reg.push("test/busybox", "latest", img)
    yield ref
    reg.stop()


@pytest.fixture
def pod(daemon, cri, image_ref, tmp_path):
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    doc = dict(POD, log_directory=str(tmp_path / "logs"))
    cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
    pod_id = cri.call("RunPodSandbox", config=cfg).pod_sandbox_id
    yield pod_id, cfg
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)


def container_config(cri, image_ref, name, command, **extra):
    doc = {"metadata": {"name": name}, "image": {"image": image_ref},
           "command": command, "log_path": "%s.log" % name}
    doc.update(extra)
    return json_format.ParseDict(doc, cri.api.ContainerConfig())


def create(cri, pod, cfg):
    pod_id, pod_cfg = pod
    return cri.call("CreateContainer", pod_sandbox_id=pod_id, config=cfg,
                    sandbox_config=pod_cfg).container_id


def status(cri, cid):
    return cri.call("ContainerStatus", container_id=cid).status


def wait_exited(cri, cid, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(cri, cid)
        if st.state == cri.api.CONTAINER_EXITED:
            return st
        time.sleep(0.05)
    raise AssertionError("container %s did not exit" % cid)


def log_lines(path):
    with open(path) as f:
        return [line.rstrip("\n").split(" ", 3) for line in f]


def test_run_to_completion_with_logs_env_user_cwd(cri, pod, image_ref):
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
    cri.call("StopContainer", container_id=cid, timeout=2)
    st = status(cri, cid)
    assert st.state == cri.api.CONTAINER_EXITED
    assert time.monotonic() - t0 < 10
    cri.call("RemoveContainer", container_id=cid)
    assert open("/proc/self/mountinfo").read().count(daemon.base) == before_mounts
    assert os.listdir(os.path.join(daemon.root, "containers")) == []
    runc_root = os.path.join(daemon.state, "runc")
    assert not os.path.isdir(runc_root) or os.listdir(runc_root) == []


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
