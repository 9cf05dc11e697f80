"""Image volumes (Mount.image, Mount.image_sub_path) and the container's stop signal
(ContainerConfig.stop_signal), end to end: images pulled through the ImageService as
kubelet pulls them, mounted read-only into a container, and nothing mounted left after the
container is gone, also across a remorad restart."""
import glob
import json
import os
import signal
import time

import grpc
import pytest

import registry as R
from ctr_helpers import POD, container_config, create, status, wait_exited, wait_until
from google.protobuf import json_format


@pytest.fixture(scope="module")
def images():
    reg = R.DockerRegistry()
    base = reg.push("test/busybox", "latest", R.Image([R.busybox_layer()]))
    # Two layers: the top one adds a file and replaces one of the bottom's.
    data = R.Image([
        R.tar_layer([("data", "dir", None), ("data/hello.txt", "file", b"hello from image\n"),
                     ("data/old.txt", "file", b"bottom\n"),
                     ("data/sub", "dir", None), ("data/sub/inner.txt", "file", b"inner\n"),
                     ("etc", "dir", None), ("etc/marker", "file", b"image-etc\n"),
                     ("escape", "symlink", "/../../../../../../etc"),
                     ("abs", "symlink", "/data")]),
        R.tar_layer([("data", "dir", None), ("data/old.txt", "file", b"top\n"),
                     ("data/top.txt", "file", b"top layer\n")])],
        config={"Env": ["PATH=/bin"]})
    one = R.Image([R.tar_layer([("only.txt", "file", b"single layer\n")])],
                  config={"Env": ["PATH=/bin"]})
    stopsig = R.Image([R.busybox_layer()], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"],
                                                   "StopSignal": "SIGUSR2"})
    refs = {"base": base, "data": reg.push("test/data", "v1", data),
            "one": reg.push("test/one", "v1", one),
            "stopsig": reg.push("test/stopsig", "v1", stopsig)}
    yield refs
    reg.stop()


def pull(cri, ref):
    """As kubelet does for an image volume: PullImage, then the returned image_ref (the
    image ID) goes into Mount.image.image."""
    return cri.call("PullImage", image=cri.message("ImageSpec", image=ref), timeout=60).image_ref


@pytest.fixture
def pod(daemon, cri, images, tmp_path):
    pull(cri, images["base"])
    doc = dict(POD, log_directory=str(tmp_path / "logs"))
    cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
    pod_id = cri.call("RunPodSandbox", config=cfg).pod_sandbox_id
    yield pod_id, cfg
    c = daemon.client()
    try:
        c.call("StopPodSandbox", pod_sandbox_id=pod_id)
        c.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    finally:
        c.close()


def mounts_under(daemon):
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if daemon.base in line)


def vol(path, image_id, sub=""):
    return {"container_path": path, "image": {"image": image_id}, "image_sub_path": sub}


def sleeper(cri, images, name, mounts, **extra):
    return container_config(cri, images["base"], name, ["/bin/sleep", "1000"],
                            mounts=mounts, **extra)


def sh(cri, cid, script):
    r = cri.call("ExecSync", container_id=cid, cmd=["/bin/sh", "-c", script], timeout=10)
    return r.exit_code, (r.stdout + r.stderr).decode()


def record_of(daemon, cid):
    found = glob.glob(os.path.join(daemon.root, "**", cid + ".json"), recursive=True)
    assert len(found) == 1, found
    with open(found[0]) as f:
        return json.load(f)


def test_image_volume_whole_and_sub_path_read_only(daemon, cri, pod, images):
    data_id = pull(cri, images["data"])
    one_id = pull(cri, images["one"])
    before = mounts_under(daemon)
    cfg = sleeper(cri, images, "vols",
                  [vol("/vol", data_id), vol("/sub", data_id, "data/sub"),
                   vol("/one", one_id), vol("/file", data_id, "data/hello.txt")])
    cid = create(cri, pod, cfg)
    cri.call("StartContainer", container_id=cid)

    assert sh(cri, cid, "cat /vol/data/hello.txt /vol/data/top.txt /vol/data/old.txt") == (
        0, "hello from image\ntop layer\ntop\n")
    assert sh(cri, cid, "ls /sub; cat /sub/inner.txt") == (0, "inner.txt\ninner\n")
    assert sh(cri, cid, "cat /one/only.txt") == (0, "single layer\n")
    assert sh(cri, cid, "cat /file") == (0, "hello from image\n")
    for target in ("/vol/new", "/vol/data/hello.txt", "/sub/x", "/one/x"):
        code, out = sh(cri, cid, "echo x > %s" % target)
        assert code != 0 and "Read-only file system" in out, (target, out)
    code, out = sh(cri, cid, "rm /vol/data/hello.txt")
    assert code != 0 and "Read-only file system" in out

    st = status(cri, cid)
    by_path = {m.container_path: m for m in st.mounts}
    assert by_path["/sub"].image.image == data_id and by_path["/sub"].image_sub_path == "data/sub"
    assert by_path["/vol"].readonly and by_path["/vol"].host_path == ""
    # The container's record names the images it mounts, each once, for RemoveImage.
    assert sorted(record_of(daemon, cid)["image_volumes"]) == sorted([data_id, one_id])

    # Two image overlays, read-only, under the container's bundle.
    with open("/proc/self/mountinfo") as f:
        ovl = [line for line in f if "/imgvol/" in line and daemon.base in line]
    assert len(ovl) == 4 and all(" ro," in line or " ro " in line for line in ovl), ovl

    cri.call("RemoveContainer", container_id=cid)
    assert mounts_under(daemon) == before
    assert os.listdir(os.path.join(daemon.state, "containers")) == [".trash"]


@pytest.mark.parametrize("sub,why", [
    ("/data", "must be relative"),
    ("../etc", "must not contain \"..\""),
    ("data/../../etc", "must not contain \"..\""),
    ("data/..", "must not contain \"..\""),
    ("missing/dir", "does not exist"),
    ("data/hello.txt/x", "does not exist"),
])
def test_bad_sub_path_is_refused(daemon, cri, pod, images, sub, why):
    data_id = pull(cri, images["data"])
    before = mounts_under(daemon)
    cfg = sleeper(cri, images, "bad", [vol("/vol", data_id, sub)])
    with pytest.raises(grpc.RpcError) as e:
        create(cri, pod, cfg)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "mounts[0].image_sub_path" in e.value.details() and why in e.value.details()
    assert mounts_under(daemon) == before
    assert os.listdir(os.path.join(daemon.state, "containers")) == [".trash"]
    assert list(cri.call("ListContainers").containers) == []


def test_symlinks_in_sub_path_stay_inside_the_image(daemon, cri, pod, images):
    data_id = pull(cri, images["data"])
    cfg = sleeper(cri, images, "links", [vol("/esc", data_id, "escape"),
                                         vol("/abs", data_id, "abs/sub")])
    cid = create(cri, pod, cfg)
    cri.call("StartContainer", container_id=cid)
    # "escape" points at /../../etc: resolved in the image it is the image's /etc.
    assert sh(cri, cid, "ls /esc") == (0, "marker\n")
    # An absolute link inside the image means the image's root, not the host's.
    assert sh(cri, cid, "cat /abs/inner.txt") == (0, "inner\n")
    cri.call("RemoveContainer", container_id=cid)


def test_other_bad_image_mounts(daemon, cri, pod, images, tmp_path):
    data_id = pull(cri, images["data"])
    before = mounts_under(daemon)
    cases = [
        (dict(vol("/v", "127.0.0.1:1/not/pulled:v1")), grpc.StatusCode.NOT_FOUND,
         "mounts[0].image.image"),
        (dict(vol("/v", data_id), host_path=str(tmp_path)), grpc.StatusCode.INVALID_ARGUMENT,
         "mutually exclusive"),
        ({"container_path": "/v", "host_path": str(tmp_path), "image_sub_path": "data"},
         grpc.StatusCode.INVALID_ARGUMENT, "mounts[0].image_sub_path"),
    ]
    for m, code, text in cases:
        with pytest.raises(grpc.RpcError) as e:
            create(cri, pod, sleeper(cri, images, "bad", [m]))
        assert e.value.code() == code and text in e.value.details(), e.value.details()
    assert mounts_under(daemon) == before
    assert os.listdir(os.path.join(daemon.state, "containers")) == [".trash"]


def test_restart_keeps_image_volume_and_removal_cleans_up(daemon, cri, pod, images):
    data_id = pull(cri, images["data"])
    before = mounts_under(daemon)
    cid = create(cri, pod, sleeper(cri, images, "restart", [vol("/vol", data_id, "data")]))
    cri.call("StartContainer", container_id=cid)
    daemon.stop(signal.SIGKILL)
    daemon.start()
    c = daemon.client()
    try:
        assert status(c, cid).state == c.api.CONTAINER_RUNNING
        assert sh(c, cid, "cat /vol/hello.txt") == (0, "hello from image\n")
        st = status(c, cid)
        assert [m.image_sub_path for m in st.mounts if m.container_path == "/vol"] == ["data"]
        c.call("RemoveContainer", container_id=cid)
    finally:
        c.close()
    assert mounts_under(daemon) == before


def test_crash_during_create_leaves_no_image_volume_mount(make_daemon, images, tmp_path):
    """remorad killed after the image volume is mounted but before the container's record
    is written: the next start finds a bundle with no record and unmounts it."""
    d = make_daemon()
    d.extra_args = []
    d.start()
    c = d.client()
    try:
        pull(c, images["base"])
        data_id = pull(c, images["data"])
        doc = dict(POD, log_directory=str(tmp_path / "logs"))
        pcfg = json_format.ParseDict(doc, c.api.PodSandboxConfig())
        pod_id = c.call("RunPodSandbox", config=pcfg).pod_sandbox_id
    finally:
        c.close()
    before = mounts_under(d)
    d.stop()
    os.environ["REMORA_CRASH_AT"] = "container.create.before_record"
    try:
        d.start()
    finally:
        del os.environ["REMORA_CRASH_AT"]
    c = d.client()
    with pytest.raises(grpc.RpcError):
        create(c, (pod_id, pcfg), sleeper(c, images, "crash", [vol("/vol", data_id)]))
    c.close()
    d.proc.wait(timeout=15)
    assert mounts_under(d) > before  # the crash left the overlay behind
    d.start()
    c = d.client()
    try:
        assert mounts_under(d) == before
        assert os.listdir(os.path.join(d.state, "containers")) == [".trash"]
        c.call("StopPodSandbox", pod_sandbox_id=pod_id)
        c.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    finally:
        c.close()


def test_removing_an_image_in_use_as_a_volume(daemon, cri, pod, images):
    one_id = pull(cri, images["one"])
    layers = os.path.join(daemon.root, "images", "layers")
    before = sorted(os.listdir(layers))
    cid = create(cri, pod, sleeper(cri, images, "inuse", [vol("/one", one_id)]))
    cri.call("StartContainer", container_id=cid)
    try:
        cri.call("RemoveImage", image=cri.message("ImageSpec", image=one_id))
    except grpc.RpcError as e:
        # Refused while in use, or (once RemoveImage keeps an in-use image's layers)
        # accepted: either way the volume keeps working.
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
    # The image's layers stay on disk while the volume uses them.
    assert sorted(os.listdir(layers)) == before
    assert sh(cri, cid, "cat /one/only.txt") == (0, "single layer\n")
    cri.call("RemoveContainer", container_id=cid)
    cri.call("RemoveImage", image=cri.message("ImageSpec", image=one_id))
    wait_until(lambda: len(os.listdir(layers)) == len(before) - 1,
               "the image's layer stays after its last user went")
    assert one_id not in [i.id for i in cri.call("ListImages").images]


# ---- stop_signal ----

TRAP = "trap 'exit 42' USR1; echo ready; while true; do sleep 0.1; done"


def test_stop_signal_from_config_is_used_and_reported(cri, pod, images):
    cfg = container_config(cri, images["base"], "usr1", ["/bin/sh", "-c", TRAP],
                           stop_signal="SIGUSR1")
    cid = create(cri, pod, cfg)
    assert status(cri, cid).stop_signal == cri.api.SIGUSR1
    cri.call("StartContainer", container_id=cid)
    time.sleep(0.3)
    t0 = time.monotonic()
    cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid, timeout=20),
             timeout=30)
    st = wait_exited(cri, cid)
    assert st.exit_code == 42 and time.monotonic() - t0 < 10
    assert st.stop_signal == cri.api.SIGUSR1
    cri.call("RemoveContainer", container_id=cid)


def test_stop_signal_defaults_and_image_stopsignal(cri, pod, images):
    pull(cri, images["stopsig"])
    plain = create(cri, pod, container_config(cri, images["base"], "plain", ["/bin/true"]))
    assert status(cri, plain).stop_signal == cri.api.SIGTERM
    from_image = create(cri, pod, container_config(cri, images["stopsig"], "img", ["/bin/true"]))
    assert status(cri, from_image).stop_signal == cri.api.SIGUSR2
    overridden = create(cri, pod, container_config(cri, images["stopsig"], "over", ["/bin/true"],
                                                   stop_signal="SIGQUIT"))
    assert status(cri, overridden).stop_signal == cri.api.SIGQUIT
    rt = create(cri, pod, container_config(cri, images["base"], "rt", ["/bin/true"],
                                           stop_signal="SIGRTMINPLUS2"))
    assert status(cri, rt).stop_signal == cri.api.SIGRTMINPLUS2
    for cid in (plain, from_image, overridden, rt):
        cri.call("RemoveContainer", container_id=cid)


def test_invalid_stop_signal_is_refused(daemon, cri, pod, images):
    cfg = container_config(cri, images["base"], "badsig", ["/bin/true"])
    cfg.stop_signal = 999
    with pytest.raises(grpc.RpcError) as e:
        create(cri, pod, cfg)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.stop_signal" in e.value.details()
    assert list(cri.call("ListContainers").containers) == []
