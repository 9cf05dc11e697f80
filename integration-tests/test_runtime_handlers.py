"""Runtime handlers (RuntimeClass, issue 19): the config's `runtimes` section names OCI
runtimes, RunPodSandbox.runtime_handler picks one for the pod's containers and infra, and
Status lists them with their features. The second handler here is a wrapper script around
runc that appends each call's argv to a file, so the test sees which binary ran what."""
import json
import os
import shutil
import signal
import subprocess
import time

import grpc
import pytest
from google.protobuf import json_format

from ctr_helpers import POD, container_config, image_ref, status, wait_until  # noqa: F401
from test_streaming import STDOUT, collect, connect

RUNC = shutil.which("runc") or "/usr/sbin/runc"


@pytest.fixture
def wrapper(tmp_path):
    """A runc wrapper that logs "<argv...>" per call to calls.log, then runs runc."""
    calls = tmp_path / "calls.log"
    script = tmp_path / "runc-wrap"
    script.write_text("#!/bin/sh\nprintf '%%s\\n' \"$*\" >> %s\nexec %s \"$@\"\n" % (calls, RUNC))
    script.chmod(0o755)
    calls.write_text("")
    return script, calls


def handler_config(wrapper):
    return json.dumps({"runtimes": {"handlers": {"wrap": {"path": str(wrapper[0])}}}})


def calls_of(wrapper):
    """Each logged call as its argv words (not the `features` probe remorad makes of
    every handler at start)."""
    return [line.split() for line in wrapper[1].read_text().splitlines()
            if line.split()[:1] != ["features"]]


def runc_has_rro():
    """What the handler feature should say for runc, found here independently: the
    kernel has mount_setattr (5.12) and `runc features` lists the "rro" option."""
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    out = subprocess.run([RUNC, "features"], capture_output=True, text=True)
    listed = out.returncode == 0 and "rro" in json.loads(out.stdout).get("mountOptions", [])
    return (major, minor) >= (5, 12) and listed


def verbs(wrapper, cid):
    """The runc commands the wrapper ran for container cid, in order."""
    out = []
    for argv in calls_of(wrapper):
        if cid in argv:
            words = [w for w in argv if not w.startswith("-")]
            # skip the values of the global flags (--root R, --log L, --log-format json)
            out.append(next(w for w in words if w in ("create", "start", "kill", "delete",
                                                      "exec", "update", "state")))
    return out


def processes_mentioning(text):
    """PIDs of processes whose command line contains text (a daemon's state dir)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if text.encode() in f.read() and int(pid) != os.getpid():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def run_pod(cri, tmp_path, uid, handler="", share_pid=False):
    doc = dict(POD, log_directory=str(tmp_path / ("logs-" + uid)))
    doc["metadata"] = dict(POD["metadata"], name="pod-" + uid, uid=uid)
    if share_pid:
        doc["linux"] = {"security_context": {"namespace_options": {"pid": "POD"}}}
    cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
    return cri.call("RunPodSandbox", config=cfg, runtime_handler=handler).pod_sandbox_id, cfg


def start_ctr(cri, ref, pod, name):
    pod_id, pod_cfg = pod
    cri.call("PullImage", image=cri.message("ImageSpec", image=ref), timeout=60)
    cfg = container_config(cri, ref, name, ["/bin/sleep", "1000"])
    cid = cri.call("CreateContainer", pod_sandbox_id=pod_id, config=cfg,
                   sandbox_config=pod_cfg).container_id
    cri.call("StartContainer", container_id=cid)
    return cid


def stop(cri, cid):
    cri.call("StopContainer", cri.message("StopContainerRequest", container_id=cid, timeout=0))


def remove_pod(cri, pod_id):
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)


def test_status_lists_handlers_with_features(make_daemon, wrapper):
    """Status.runtime_handlers: the default under "" (as the CRI names it), then every
    configured handler by name; runc 1.1 has no recursive read-only mounts."""
    d = make_daemon(config=handler_config(wrapper)).start()
    cri = d.client()
    r = cri.call("Status")
    names = [h.name for h in r.runtime_handlers]
    assert names == ["", "runc", "wrap"], names
    for h in r.runtime_handlers:
        assert h.HasField("features")
        # the wrapper passes `features` through to runc: the same answer
        assert h.features.recursive_read_only_mounts is runc_has_rro()
        # a property of the host (idmapped mounts where pods' files live), the same for all
        assert h.features.user_namespaces is r.runtime_handlers[0].features.user_namespaces
    info = json.loads(cri.call("Status", verbose=True).info["runtime"])
    by_name = {h["handler"]: h for h in info["handlers"]}
    assert by_name["wrap"]["path"] == str(wrapper[0])
    assert by_name["wrap"]["root"] == os.path.join(d.state, "runtimes", "wrap")
    assert by_name["runc"]["root"] == os.path.join(d.state, "runc")
    cri.close()


def test_pod_with_handler_runs_its_containers_through_it(make_daemon, wrapper, image_ref,
                                                         tmp_path):
    """A pod whose RuntimeClass names the wrapper: create, start, exec, kill and delete of
    its container go through the wrapper with the wrapper's own --root; a default pod's
    container never touches it."""
    d = make_daemon(config=handler_config(wrapper)).start()
    cri = d.client()
    wrap_root = os.path.join(d.state, "runtimes", "wrap")

    plain = run_pod(cri, tmp_path, "plain")
    c_plain = start_ctr(cri, image_ref, plain, "plain")
    assert os.path.isdir(os.path.join(d.state, "runc", c_plain))
    cri.call("ExecSync", container_id=c_plain, cmd=["/bin/true"], timeout=20)
    stop(cri, c_plain)
    cri.call("RemoveContainer", container_id=c_plain)
    remove_pod(cri, plain[0])
    assert calls_of(wrapper) == [], "the default pod used the wrapper"

    wrapped = run_pod(cri, tmp_path, "wrapped", handler="wrap")
    cid = start_ctr(cri, image_ref, wrapped, "wrapped")
    assert os.path.isdir(os.path.join(wrap_root, cid))
    assert not os.path.exists(os.path.join(d.state, "runc", cid))
    out = cri.call("ExecSync", container_id=cid, cmd=["/bin/echo", "hi"], timeout=20)
    assert out.stdout == b"hi\n"
    # Exec on the streaming server (kubectl exec) runs runc exec itself: the wrapper too.
    url = cri.call("Exec", container_id=cid, cmd=["/bin/echo", "streamed"], stdout=True).url
    assert collect(connect(url))[STDOUT] == b"streamed\n"
    assert any("--preserve-fds" in argv and cid in argv for argv in calls_of(wrapper)), \
        calls_of(wrapper)
    st = cri.call("ContainerStatus", container_id=cid, verbose=True)
    assert json.loads(st.info["info"])["runtimeHandler"] == "wrap"
    pst = cri.call("PodSandboxStatus", pod_sandbox_id=wrapped[0]).status
    assert pst.runtime_handler == "wrap"
    stop(cri, cid)
    cri.call("RemoveContainer", container_id=cid)
    wait_until(lambda: "delete" in verbs(wrapper, cid), "runc delete through the wrapper")
    seen = verbs(wrapper, cid)
    for verb in ("create", "start", "exec", "kill", "delete"):
        assert verb in seen, (verb, seen)
    for argv in calls_of(wrapper):
        if cid in argv:
            assert argv[argv.index("--root") + 1] == wrap_root, argv
    wait_until(lambda: not os.path.exists(os.path.join(wrap_root, cid)), "state removed")
    remove_pod(cri, wrapped[0])
    cri.close()


def test_unknown_handler_is_refused_naming_the_configured_ones(make_daemon, wrapper,
                                                                tmp_path):
    d = make_daemon(config=handler_config(wrapper)).start()
    cri = d.client()
    with pytest.raises(grpc.RpcError) as e:
        run_pod(cri, tmp_path, "nope", handler="kata")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    msg = e.value.details()
    assert "kata" in msg and "runc" in msg and "wrap" in msg, msg
    assert len(cri.call("ListPodSandbox").items) == 0
    # The default handler by its name is fine.
    pod_id, _ = run_pod(cri, tmp_path, "by-name", handler="runc")
    remove_pod(cri, pod_id)
    cri.close()


def test_restart_keeps_using_the_pods_handler(make_daemon, wrapper, image_ref, tmp_path):
    """After remorad restarts, stopping and removing a wrapper pod's container and its
    infra process (a pod sharing one PID namespace) still go through the wrapper."""
    d = make_daemon(config=handler_config(wrapper)).start()
    cri = d.client()
    pod = run_pod(cri, tmp_path, "restart", handler="wrap", share_pid=True)
    infra = "infra-" + pod[0]
    cid = start_ctr(cri, image_ref, pod, "survivor")
    created = [argv for argv in calls_of(wrapper) if "create" in argv]
    assert any(infra in argv for argv in created), created
    cri.close()
    d.stop(signal.SIGTERM)

    wrapper[1].write_text("")
    d2 = make_daemon(base=d.base)
    d2.start()
    cri = d2.client()
    assert status(cri, cid).state == cri.api.CONTAINER_RUNNING
    stop(cri, cid)
    cri.call("RemoveContainer", container_id=cid)
    remove_pod(cri, pod[0])
    wait_until(lambda: "delete" in verbs(wrapper, cid), "runc delete through the wrapper")
    assert "kill" in verbs(wrapper, cid), calls_of(wrapper)
    assert "kill" in verbs(wrapper, infra) and "delete" in verbs(wrapper, infra), \
        calls_of(wrapper)
    wrap_root = os.path.join(d2.state, "runtimes", "wrap")
    wait_until(lambda: os.listdir(wrap_root) == [], "the wrapper's root is empty")
    left = [p for p in processes_mentioning(d2.state) if p != d2.proc.pid]
    assert left == [], "a shim or runc of the pod is left"
    assert "no longer configured" not in d2.read_log()
    cri.close()


@pytest.mark.parametrize("runtimes, words", [
    ({"handlers": {"wrap": {"path": "/bin/true", "systemd_cgroup": True}}},
     ["runtimes.handlers.wrap.systemd_cgroup", "cgroupfs"]),
    ({"handlers": {"Bad_Name": {"path": "/bin/true"}}}, ["Bad_Name", "DNS label"]),
    ({"handlers": {"wrap": {}}}, ["runtimes.handlers.wrap.path", "required"]),
    ({"handlers": {"wrap": {"path": "/bin/true", "colour": 1}}}, ["colour"]),
    ({"handlers": {"wrap": {"path": "/bin/true", "root": "rel"}}}, ["absolute"]),
    ({"default": "wrap", "handlers": {"wrap": {"path": "/bin/true"},
                                      "runc": {"path": "runc", "root": "/tmp/x"},
                                      "dup": {"path": "runc", "root": "/tmp/x"}}},
     ["share the root"]),
])
def test_bad_runtimes_section_stops_the_start(make_daemon, runtimes, words):
    d = make_daemon(config=json.dumps({"runtimes": runtimes}))
    d.start(wait=False)
    deadline = time.monotonic() + 15
    while d.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.proc.returncode not in (None, 0)
    log = d.read_log()
    for w in words:
        assert w in log, (w, log)


def test_default_handler_can_be_renamed(make_daemon, wrapper, image_ref, tmp_path):
    """`default` names the handler pods without a RuntimeClass get: here the wrapper."""
    cfg = {"runtimes": {"default": "wrap", "handlers": {"wrap": {"path": str(wrapper[0])},
                                                        "plain": {"path": RUNC}}}}
    d = make_daemon(config=json.dumps(cfg)).start()
    cri = d.client()
    names = [h.name for h in cri.call("Status").runtime_handlers]
    assert names == ["", "wrap", "plain"], names
    pod = run_pod(cri, tmp_path, "renamed")
    cid = start_ctr(cri, image_ref, pod, "c")
    assert "create" in verbs(wrapper, cid)
    assert os.path.isdir(os.path.join(d.state, "runc", cid))  # the default's root
    stop(cri, cid)
    cri.call("RemoveContainer", container_id=cid)
    remove_pod(cri, pod[0])
    cri.close()


def test_check_reports_every_handler(remorad_bin, wrapper, tmp_path):
    """`remorad --check` has a runtime line per handler; a missing binary is a FAIL naming
    the handler and the key to set."""
    cfg = tmp_path / "check.json"
    cfg.write_text(json.dumps({"runtimes": {"handlers": {
        "wrap": {"path": str(wrapper[0])}, "gone": {"path": "/nonexistent/runc-gone"}}}}))
    p = subprocess.run([remorad_bin, "--check", "--config", str(cfg),
                        "--root", str(tmp_path / "root"), "--state", str(tmp_path / "state")],
                       capture_output=True, text=True, timeout=60)
    lines = [line for line in p.stdout.splitlines() if line.split()[1:2] == ["runtime"]]
    assert len(lines) == 3, p.stdout
    assert lines[0].startswith("OK") and "handler runc" in lines[0], lines
    assert lines[1].startswith("OK") and "handler wrap" in lines[1], lines
    assert lines[2].startswith("FAIL") and "runtimes.handlers.gone.path" in lines[2], lines
    assert p.returncode == 1


def test_a_handler_dropped_from_the_config_is_reported(make_daemon, wrapper, image_ref,
                                                      tmp_path):
    """Restarting without a handler that pods still use: the start log names the pod and
    the handler, and a new container in such a pod is refused naming it; put back, the
    handler cleans up as usual."""
    d = make_daemon(config=handler_config(wrapper)).start()
    cri = d.client()
    pod = run_pod(cri, tmp_path, "dropped", handler="wrap")
    cid = start_ctr(cri, image_ref, pod, "c")
    cri.close()
    d.stop()

    d2 = make_daemon(base=d.base, config=json.dumps({}))
    d2.start()
    log = d2.read_log()
    assert "no longer configured" in log and pod[0] in log and "wrap" in log, log
    cri = d2.client()
    cfg = container_config(cri, image_ref, "new", ["/bin/true"])
    with pytest.raises(grpc.RpcError) as e:
        c2 = cri.call("CreateContainer", pod_sandbox_id=pod[0], config=cfg,
                      sandbox_config=pod[1]).container_id
        cri.call("StartContainer", container_id=c2)
    assert "wrap" in e.value.details()
    cri.close()
    d2.stop()

    d3 = make_daemon(base=d.base, config=handler_config(wrapper))
    d3.start()
    cri = d3.client()
    assert status(cri, cid).state == cri.api.CONTAINER_RUNNING
    for c in cri.call("ListContainers").containers:
        stop(cri, c.id)
        cri.call("RemoveContainer", container_id=c.id)
    remove_pod(cri, pod[0])
    wrap_root = os.path.join(d3.state, "runtimes", "wrap")
    wait_until(lambda: os.listdir(wrap_root) == [], "the wrapper's root is empty")
    cri.close()


def test_recursive_read_only_follows_the_handlers_features(make_daemon, tmp_path, image_ref):
    """A handler whose binary does not list "rro" in `features` (runc before 1.1, a
    stand-in script here) reports recursive_read_only_mounts false, and such a mount in
    its pods is refused at CreateContainer naming the handler, instead of failing at start
    with the runtime's parse error. runc 1.1+ on a 5.12+ kernel lists it: there a
    submount under the bind mount is read-only too, which a plain readonly mount does not
    give."""
    fake = tmp_path / "runc-old"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = features ]; then\n"
                    "  echo '{\"mountOptions\": [\"bind\", \"ro\"]}'; exit 0\nfi\n"
                    "exec %s \"$@\"\n" % RUNC)
    fake.chmod(0o755)
    d = make_daemon(config=json.dumps({"runtimes": {"handlers": {"old": {"path": str(fake)}}}}))
    d.start()
    cri = d.client()
    feats = {h.name: h.features.recursive_read_only_mounts
             for h in cri.call("Status").runtime_handlers}
    assert feats == {"": runc_has_rro(), "runc": runc_has_rro(), "old": False}, feats
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "h19c-rro", str(src / "sub")],
                   check=True)
    try:
        mount = {"container_path": "/data", "host_path": str(src), "readonly": True,
                 "recursive_read_only": True}
        cfg = container_config(cri, image_ref, "rro", ["/bin/sleep", "1000"], mounts=[mount])

        old = run_pod(cri, tmp_path, "rro-old", handler="old")
        with pytest.raises(grpc.RpcError) as e:
            cri.call("CreateContainer", pod_sandbox_id=old[0], config=cfg, sandbox_config=old[1])
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "recursive_read_only" in e.value.details() and "old" in e.value.details()
        assert len(cri.call("ListContainers").containers) == 0
        # Without readonly it is a bad request whatever the handler.
        c = container_config(cri, image_ref, "bad", ["/bin/true"],
                             mounts=[dict(mount, readonly=False)])
        with pytest.raises(grpc.RpcError) as e:
            cri.call("CreateContainer", pod_sandbox_id=old[0], config=c, sandbox_config=old[1])
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert "needs readonly" in e.value.details()
        remove_pod(cri, old[0])

        if runc_has_rro():
            pod = run_pod(cri, tmp_path, "rro-runc")
            probe = "touch /data/sub/x 2>/dev/null && echo writable || echo read-only"
            results = {}
            for name, m in (("rro", mount), ("ro", dict(mount, recursive_read_only=False))):
                c = container_config(cri, image_ref, name, ["/bin/sleep", "1000"], mounts=[m])
                cid = cri.call("CreateContainer", pod_sandbox_id=pod[0], config=c,
                               sandbox_config=pod[1]).container_id
                cri.call("StartContainer", container_id=cid)
                r = cri.call("ExecSync", container_id=cid, cmd=["/bin/sh", "-c", probe],
                             timeout=20)
                results[name] = r.stdout.decode().strip()
                stop(cri, cid)
                cri.call("RemoveContainer", container_id=cid)
            assert results == {"rro": "read-only", "ro": "writable"}, results
            remove_pod(cri, pod[0])
    finally:
        subprocess.run(["umount", str(src / "sub")], check=True)
    cri.close()
