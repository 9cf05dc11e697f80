"""What CRI clients written for containerd and CRI-O rely on: duplicate RunPodSandbox and
CreateContainer requests (the first result again only for a retry whose first answer was
lost), host-network pods without a hostname of their own, and RemoveImage of an image a
container still uses (the name goes, the layers stay until the last container goes)."""
import os
import shutil
import stat
import time

import grpc
import pytest
from google.protobuf import json_format

import registry as R
from ctr_helpers import POD, container_config, status, wait_until

IMG_NAME = "test/rules"


def expect_error(fn, code, *needles):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert e.value.code() == code, e.value.details()
    for n in needles:
        assert n in e.value.details(), e.value.details()
    return e.value.details()


def pod_cfg(cri, tmp_path, uid, **linux):
    doc = dict(POD, log_directory=str(tmp_path / ("logs-" + uid)))
    doc["metadata"] = dict(POD["metadata"], name="rules-" + uid, uid=uid)
    if linux:
        doc["linux"] = linux
    return json_format.ParseDict(doc, cri.api.PodSandboxConfig())


def run_pod(cri, cfg, timeout=30):
    return cri.call("RunPodSandbox", config=cfg, timeout=timeout).pod_sandbox_id


def remove_pod(cri, pod_id):
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id, timeout=60)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id, timeout=60)


@pytest.fixture(scope="module")
def images():
    """A small busybox image and one with an extra 4 MiB layer of random bytes."""
    reg = R.DockerRegistry()
    small = reg.push(IMG_NAME, "small", R.Image([R.busybox_layer()]))
    big_layer = R.tar_layer([("data", "dir", None), ("data/big", "file", os.urandom(4 << 20))])
    big = reg.push(IMG_NAME, "big", R.Image([R.busybox_layer(), big_layer]))
    yield {"small": small, "big": big}
    reg.stop()


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f if line.split()[4].startswith(path + "/"))


def runc_states(daemon):
    d = os.path.join(daemon.state, "runc")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def pull(cri, ref):
    return cri.call("PullImage", image=cri.message("ImageSpec", image=ref), timeout=60).image_ref


# ---- duplicate requests ----

SLOW_RUNC = """#!/bin/sh
# runc, slowed down while %(flag)s exists: "runc start" of a pod's infra process is
# the last step of RunPodSandbox for a pod sharing one PID namespace. With %(flag)s.fail
# it fails that start once, after the same delay.
for a in "$@"; do
    if [ "$a" = start ] && [ -e %(flag)s ]; then
        sleep %(delay)s
        if [ -e %(flag)s.fail ]; then rm -f %(flag)s.fail; echo made to fail >&2; exit 1; fi
        break
    fi
done
exec %(runc)s "$@"
"""


def slow_daemon(make_daemon, delay=3):
    d = make_daemon()
    flag = os.path.join(d.base, "slow")
    wrapper = os.path.join(d.base, "slow-runc")
    with open(wrapper, "w") as f:
        f.write(SLOW_RUNC % {"flag": flag, "delay": delay, "runc": shutil.which("runc")})
    os.chmod(wrapper, stat.S_IRWXU)
    d2 = make_daemon(base=d.base, config='{"runtime_path": "%s"}' % wrapper)
    return d2.start(), flag


def test_run_pod_sandbox_retried_after_the_client_gave_up(make_daemon, tmp_path):
    d, flag = slow_daemon(make_daemon)
    cri = d.client()
    before = mounts_under(d.base)
    shared_pid = {"security_context": {"namespace_options": {"pid": "POD"}}}
    cfg = pod_cfg(cri, tmp_path, "slow-1", **shared_pid)
    open(flag, "w").close()
    t0 = time.monotonic()
    expect_error(lambda: run_pod(cri, cfg, timeout=1), grpc.StatusCode.DEADLINE_EXCEEDED)
    # The retry comes while the first call is still at work: it waits for it and, the
    # first answer having been lost, gets that pod.
    pod_id = run_pod(cri, cfg)
    assert time.monotonic() - t0 >= 3, "the retry waited for the first call's pod"
    os.unlink(flag)
    pods = cri.call("ListPodSandbox").items
    assert [p.id for p in pods] == [pod_id], "one pod, made once"
    assert pods[0].state == cri.api.SANDBOX_READY
    # This answer was delivered: the same request again is a client's mistake.
    expect_error(lambda: run_pod(cri, cfg), grpc.StatusCode.ALREADY_EXISTS, pod_id)

    # A retry after the first call finished, its answer lost, also gets the pod.
    cfg2 = pod_cfg(cri, tmp_path, "slow-2", **shared_pid)
    open(flag, "w").close()
    expect_error(lambda: run_pod(cri, cfg2, timeout=1), grpc.StatusCode.DEADLINE_EXCEEDED)
    wait_until(lambda: len(cri.call("ListPodSandbox").items) == 2, "the first call finished",
               timeout=20)
    os.unlink(flag)
    second = [p.id for p in cri.call("ListPodSandbox").items if p.id != pod_id][0]
    assert run_pod(cri, cfg2) == second
    expect_error(lambda: run_pod(cri, cfg2), grpc.StatusCode.ALREADY_EXISTS, second)
    for p in (pod_id, second):
        remove_pod(cri, p)
    assert mounts_under(d.base) == before, "no pins, shm or rootfs left"
    wait_until(lambda: runc_states(d) == [], "no infra left in runc")
    cri.close()
    assert d.stop() == 0, "clean exit (sanitizers report leaks at exit)"


def test_retry_while_the_first_call_fails_makes_a_new_pod(make_daemon, tmp_path):
    d, flag = slow_daemon(make_daemon)
    cri = d.client()
    before = mounts_under(d.base)
    cfg = pod_cfg(cri, tmp_path, "fails", security_context={"namespace_options": {"pid": "POD"}})
    open(flag, "w").close()
    open(flag + ".fail", "w").close()
    t0 = time.monotonic()
    expect_error(lambda: run_pod(cri, cfg, timeout=1), grpc.StatusCode.DEADLINE_EXCEEDED)
    pod_id = run_pod(cri, cfg)  # waits for the first call, which fails; then makes its own
    assert time.monotonic() - t0 >= 6, "the first call's start and then the retry's own"
    assert not os.path.exists(flag + ".fail"), "the first call's infra start did fail"
    os.unlink(flag)
    pods = cri.call("ListPodSandbox").items
    assert [p.id for p in pods] == [pod_id] and pods[0].state == cri.api.SANDBOX_READY
    expect_error(lambda: run_pod(cri, cfg), grpc.StatusCode.ALREADY_EXISTS, pod_id)
    remove_pod(cri, pod_id)
    assert mounts_under(d.base) == before
    wait_until(lambda: runc_states(d) == [], "no infra left in runc")
    cri.close()
    assert d.stop() == 0, "clean exit (sanitizers report leaks at exit)"


def test_run_pod_sandbox_twice_is_already_exists(make_daemon, tmp_path):
    d = make_daemon().start()
    cri = d.client()
    cfg = pod_cfg(cri, tmp_path, "twice")
    pod_id = run_pod(cri, cfg)
    expect_error(lambda: run_pod(cri, cfg), grpc.StatusCode.ALREADY_EXISTS, pod_id,
                 "rules-twice")
    assert [p.id for p in cri.call("ListPodSandbox").items] == [pod_id]
    # After a restart too (what remorad knows of answers is not kept across one).
    assert d.stop() == 0
    d2 = make_daemon(base=d.base).start()
    c2 = d2.client()
    expect_error(lambda: run_pod(c2, cfg), grpc.StatusCode.ALREADY_EXISTS, pod_id)
    remove_pod(c2, pod_id)
    # Once removed, the same request makes a new pod.
    again = run_pod(c2, cfg)
    assert again != pod_id
    remove_pod(c2, again)
    c2.close()
    cri.close()
    assert d2.stop() == 0, "clean exit (sanitizers report leaks at exit)"


def slow_image(n_volumes):
    """An image whose CreateContainer takes a while: every VOLUME is made as a directory
    inside the new root filesystem when the container is created."""
    vols = {"/vol/%05d" % i: {} for i in range(n_volumes)}
    return R.Image([R.busybox_layer()], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"],
                                                 "Volumes": vols})


def test_create_container_retried_after_the_client_gave_up(make_daemon, tmp_path):
    reg = R.DockerRegistry()
    try:
        ref = reg.push(IMG_NAME, "volumes", slow_image(10000))
        d = make_daemon().start()
        cri = d.client()
        pull(cri, ref)
        before = mounts_under(d.base)
        pcfg = pod_cfg(cri, tmp_path, "ctr-retry")
        pod_id = run_pod(cri, pcfg)
        cfg = container_config(cri, ref, "slow", ["/bin/sleep", "1000"])

        def create(timeout):
            return cri.call("CreateContainer", pod_sandbox_id=pod_id, config=cfg,
                            sandbox_config=pcfg, timeout=timeout).container_id

        t0 = time.monotonic()
        fast = create(60)
        took = time.monotonic() - t0
        assert took > 0.2, "CreateContainer of this image is slow enough (%.2fs)" % took
        cri.call("RemoveContainer", container_id=fast, timeout=60)

        expect_error(lambda: create(took / 3), grpc.StatusCode.DEADLINE_EXCEEDED)
        cid = create(60)  # while the first call still works: it waits, then gets that one
        ctrs = cri.call("ListContainers").containers
        assert [c.id for c in ctrs] == [cid], "one container, made once"
        expect_error(lambda: create(60), grpc.StatusCode.ALREADY_EXISTS, cid, "slow")
        cri.call("StartContainer", container_id=cid)
        assert status(cri, cid).state == cri.api.CONTAINER_RUNNING
        remove_pod(cri, pod_id)
        assert len(cri.call("ListContainers").containers) == 0
        assert mounts_under(d.base) == before, "no root filesystem or pin left"
        assert os.listdir(os.path.join(d.root, "containers")) == [".trash"]
        wait_until(lambda: runc_states(d) == [], "no container left in runc")
        cri.close()
        assert d.stop() == 0, "clean exit (sanitizers report leaks at exit)"
    finally:
        reg.stop()


def test_create_container_twice_is_already_exists(daemon, cri, images, tmp_path):
    pull(cri, images["small"])
    pcfg = pod_cfg(cri, tmp_path, "ctr-twice")
    pod_id = run_pod(cri, pcfg)
    cfg = container_config(cri, images["small"], "twice", ["/bin/sleep", "1000"])
    cid = cri.call("CreateContainer", pod_sandbox_id=pod_id, config=cfg,
                   sandbox_config=pcfg).container_id
    expect_error(lambda: cri.call("CreateContainer", pod_sandbox_id=pod_id, config=cfg,
                                  sandbox_config=pcfg),
                 grpc.StatusCode.ALREADY_EXISTS, cid, "twice")
    assert [c.id for c in cri.call("ListContainers").containers] == [cid]
    remove_pod(cri, pod_id)


# ---- host network ----

def test_host_network_pod_with_a_hostname_is_refused(daemon, cri, tmp_path):
    host_net = {"security_context": {"namespace_options": {"network": "NODE",
                                                           "pid": "CONTAINER"}}}
    cfg = pod_cfg(cri, tmp_path, "hostnet", **host_net)
    assert cfg.hostname
    expect_error(lambda: run_pod(cri, cfg), grpc.StatusCode.INVALID_ARGUMENT,
                 "hostname", '"%s"' % cfg.hostname, "host network")
    assert len(cri.call("ListPodSandbox").items) == 0
    assert os.listdir(os.path.join(daemon.root, "sandboxes")) == []
    cfg.hostname = ""  # as kubelet sends it: the pod has the node's
    pod_id = run_pod(cri, cfg)
    remove_pod(cri, pod_id)


# ---- removing an image in use ----

def image_fs_bytes(cri):
    return cri.call("ImageFsInfo").image_filesystems[0].used_bytes.value


def layer_dirs(daemon, cri, ref):
    import json
    info = json.loads(cri.call("ImageStatus", image=cri.message("ImageSpec", image=ref),
                               verbose=True).info["info"])
    return [os.path.join(daemon.root, "images", "layers", c.split(":")[1])
            for c in info["chainIDs"]]


def listed(cri, image_id):
    return image_id in [i.id for i in cri.call("ListImages").images]


def image_status(cri, ref):
    r = cri.call("ImageStatus", image=cri.message("ImageSpec", image=ref))
    return r.image.id if r.HasField("image") else None


def stop_now(cri, cid):
    cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid, timeout=0),
             timeout=30)


def start_sleeper(cri, pod_id, pcfg, ref, name):
    cfg = container_config(cri, ref, name, ["/bin/sleep", "1000"])
    cid = cri.call("CreateContainer", pod_sandbox_id=pod_id, config=cfg,
                   sandbox_config=pcfg).container_id
    cri.call("StartContainer", container_id=cid)
    return cid


def test_remove_image_in_use(make_daemon, images, tmp_path):
    d = make_daemon().start()
    cri = d.client()
    base_mounts = mounts_under(d.base)
    pull(cri, images["small"])  # shares the busybox layer with the big one
    image_id = pull(cri, images["big"])
    layers = layer_dirs(d, cri, images["big"])
    assert len(layers) == 2 and all(os.path.isdir(p) for p in layers)
    pcfg = pod_cfg(cri, tmp_path, "rmi")
    pod_id = run_pod(cri, pcfg)
    cid = start_sleeper(cri, pod_id, pcfg, images["big"], "user")
    before = image_fs_bytes(cri)

    cri.call("RemoveImage", image=cri.message("ImageSpec", image=images["big"]))
    # The name and the record are gone, as in containerd ...
    assert not listed(cri, image_id)
    assert image_status(cri, images["big"]) is None
    assert image_status(cri, image_id) is None
    cfg = container_config(cri, images["big"], "late", ["/bin/true"])
    expect_error(lambda: cri.call("CreateContainer", pod_sandbox_id=pod_id, config=cfg,
                                  sandbox_config=pcfg),
                 grpc.StatusCode.NOT_FOUND, images["big"])
    # ... removing it again (by ID too) finds nothing to do ...
    cri.call("RemoveImage", image=cri.message("ImageSpec", image=image_id))
    # ... the running container is unaffected, and its layers stay, counted.
    assert status(cri, cid).state == cri.api.CONTAINER_RUNNING
    r = cri.call("ExecSync", container_id=cid, cmd=["/bin/wc", "-c", "/data/big"], timeout=10)
    assert r.exit_code == 0 and r.stdout.split()[0] == str(4 << 20).encode()
    assert all(os.path.isdir(p) for p in layers)
    assert image_fs_bytes(cri) >= before - 64 * 1024

    # A restart keeps all of that.
    assert d.stop() == 0
    d = make_daemon(base=d.base).start()
    cri = d.client()
    assert not listed(cri, image_id) and image_status(cri, image_id) is None
    assert status(cri, cid).state == cri.api.CONTAINER_RUNNING
    r = cri.call("ExecSync", container_id=cid, cmd=["/bin/cat", "/etc/passwd"], timeout=10)
    assert r.exit_code == 0 and r.stdout.startswith(b"root:")
    assert all(os.path.isdir(p) for p in layers)
    assert image_fs_bytes(cri) >= before - 64 * 1024

    # The last user goes: so do the layers no other image has, and ImageFsInfo drops.
    stop_now(cri, cid)
    cri.call("RemoveContainer", container_id=cid)
    assert not os.path.exists(layers[1])
    assert os.path.isdir(layers[0]), "the busybox layer, which the small image has too"
    assert image_fs_bytes(cri) <= before - (4 << 20)
    assert listed(cri, pull(cri, images["small"]))
    remove_pod(cri, pod_id)
    assert mounts_under(d.base) == base_mounts
    cri.close()
    assert d.stop() == 0, "clean exit (sanitizers report leaks at exit)"


def test_pull_again_after_remove_image_in_use(make_daemon, images, tmp_path):
    d = make_daemon().start()
    cri = d.client()
    image_id = pull(cri, images["big"])
    layers = layer_dirs(d, cri, images["big"])
    pcfg = pod_cfg(cri, tmp_path, "repull")
    pod_id = run_pod(cri, pcfg)
    cid = start_sleeper(cri, pod_id, pcfg, images["big"], "user")
    cri.call("RemoveImage", image=cri.message("ImageSpec", image=images["big"]))
    assert not listed(cri, image_id)

    assert pull(cri, images["big"]) == image_id
    assert listed(cri, image_id) and image_status(cri, images["big"]) == image_id
    # A second container from it, then both go: the image stays, it was pulled again.
    cid2 = start_sleeper(cri, pod_id, pcfg, images["big"], "user2")
    for c in (cid, cid2):
        stop_now(cri, c)
        cri.call("RemoveContainer", container_id=c)
    assert listed(cri, image_id) and all(os.path.isdir(p) for p in layers)
    cri.call("RemoveImage", image=cri.message("ImageSpec", image=image_id))
    assert not listed(cri, image_id) and not any(os.path.exists(p) for p in layers)
    remove_pod(cri, pod_id)
    cri.close()
    assert d.stop() == 0, "clean exit (sanitizers report leaks at exit)"


def test_removed_image_whose_last_container_went_in_a_crash(make_daemon, images, tmp_path,
                                                            monkeypatch):
    """kill -9 between RemoveContainer's record going and the image's layers going: the
    next start drops them."""
    d = make_daemon().start()
    cri = d.client()
    image_id = pull(cri, images["big"])
    layers = layer_dirs(d, cri, images["big"])
    pcfg = pod_cfg(cri, tmp_path, "crash")
    pod_id = run_pod(cri, pcfg)
    cid = start_sleeper(cri, pod_id, pcfg, images["big"], "user")
    cri.call("RemoveImage", image=cri.message("ImageSpec", image=image_id))
    stop_now(cri, cid)
    cri.close()
    assert d.stop() == 0
    monkeypatch.setenv("REMORA_CRASH_AT", "removecontainer.image_prune")
    d = make_daemon(base=d.base).start()
    monkeypatch.delenv("REMORA_CRASH_AT")
    cri = d.client()
    expect_error(lambda: cri.call("RemoveContainer", container_id=cid),
                 grpc.StatusCode.UNAVAILABLE)
    d.proc.wait(timeout=10)
    cri.close()
    assert all(os.path.isdir(p) for p in layers), "the crash came before the layers went"
    d = make_daemon(base=d.base).start()
    cri = d.client()
    assert len(cri.call("ListContainers").containers) == 0
    assert not any(os.path.exists(p) for p in layers)
    assert os.listdir(os.path.join(d.root, "images", "layers")) == ["empty"]
    assert len(cri.call("ListImages").images) == 0
    remove_pod(cri, pod_id)
    cri.close()
    assert d.stop() == 0, "clean exit (sanitizers report leaks at exit)"
