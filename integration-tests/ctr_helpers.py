"""Shared by the container, stats and streaming tests: a busybox image in a private
docker-registry, a pod to put containers in, and small CRI helpers."""
import atexit
import time

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


def wait_until(cond, what, timeout=10):
    """RemoveContainer leaves runc's delete (its state, the container's cgroup) to a
    background thread: what it removes is gone shortly after the call, not at its end."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)


def log_lines(path):
    with open(path) as f:
        return [line.rstrip("\n").split(" ", 3) for line in f]


def pulled_image(cri):
    """The busybox test image in a registry of its own, pulled (for tests outside a module
    using the image_ref fixture); the registry stays up until the test process exits."""
    global _registry
    if _registry is None:
        _registry = R.DockerRegistry()
        atexit.register(_registry.stop)
        _registry.ref = _registry.push("test/busybox", "latest", R.Image([R.busybox_layer()]))
    cri.call("PullImage", image=cri.message("ImageSpec", image=_registry.ref), timeout=60)
    return _registry.ref


_registry = None


def pod_running(cri, tmp_path, uid):
    doc = dict(POD, log_directory=str(tmp_path / "logs"))
    doc["metadata"] = dict(POD["metadata"], uid=uid)
    cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
    return cri.call("RunPodSandbox", config=cfg).pod_sandbox_id, cfg
