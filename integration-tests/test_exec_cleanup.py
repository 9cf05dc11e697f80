"""ExecSync and Exec leave nothing behind, and StopContainer survives a container that
exits on its own.

The attacks: an exec probe that times out (`sleep 4321`, or a shell whose children hold
its output: `sh -c "sleep 999 & sleep 998; wait"`) used to leave its processes running,
or as zombies the container's init never reaps, after remorad SIGKILLed the first process
and runc at once; one that prints 20 MiB made the whole call fail with RESOURCE_EXHAUSTED
(the client learned nothing, not even the exit code); each timed-out exec left a
/tmp/remora-exec-* directory, and so did a remorad killed mid-exec; and StopContainer of a
container that exited just then answered UNKNOWN "runc kill: container not running"."""
import os
import time

import grpc
import pytest

from ctr_helpers import container_config, create, image_ref, pod, status  # noqa: F401

# A pgrep that also shows zombies: every process of the container's PID namespace as
# "pid (comm) state ppid ...", read from /proc/<pid>/stat by the container's own shell,
# after the shell's own pid (it, its parent and its cat are the listing, not leftovers).
PROCS = ["/bin/sh", "-c", "echo $$; for f in /proc/[0-9]*/stat; do cat $f 2>/dev/null; echo; "
                          "done"]

EXEC_OUTPUT_CAP = 4 << 20


def processes(cri, cid):
    r = cri.call("ExecSync", container_id=cid, cmd=PROCS, timeout=10)
    lines = r.stdout.decode().splitlines()
    shell = int(lines[0])
    out = []
    for line in lines[1:]:
        if not line.strip():
            continue
        pid, rest = line.split(" (", 1)
        comm, fields = rest.rsplit(") ", 1)
        f = fields.split()
        out.append((int(pid), comm, f[0], int(f[1])))
    listing = {shell} | {p[3] for p in out if p[0] == shell}
    return [p for p in out if p[0] not in listing and p[3] != shell]


def running(cri, pod, image_ref, name):
    cid = create(cri, pod, container_config(cri, image_ref, name, ["/bin/sleep", "1000"]))
    cri.call("StartContainer", container_id=cid)
    return cid


def leftovers(cri, cid):
    """Anything but the container's init (sleep 1000) and the listing itself."""
    return [p for p in processes(cri, cid) if p[0] != 1]


def exec_dirs(daemon):
    found = [n for n in os.listdir(daemon.state) if n.startswith("exec")]
    for sub in ("exec",):
        p = os.path.join(daemon.state, sub)
        if os.path.isdir(p):
            found += [sub + "/" + n for n in os.listdir(p)]
    return sorted(n for n in found if n != "exec")


@pytest.mark.parametrize("cmd", [["sleep", "4321"],
                                 ["sh", "-c", "sleep 999 & sleep 998; wait"]],
                         ids=["sleep", "shell-with-children"])
def test_exec_sync_timeout_kills_and_reaps_every_process(daemon, cri, pod, image_ref, cmd):
    cid = running(cri, pod, image_ref, "probe")
    assert leftovers(cri, cid) == []
    dirs = exec_dirs(daemon)
    t0 = time.monotonic()
    req = cri.message("ExecSyncRequest", container_id=cid, cmd=cmd, timeout=1)
    with pytest.raises(grpc.RpcError) as e:
        cri.call("ExecSync", req, timeout=20)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 8
    # At once, as critest checks: nothing of the exec, not even a zombie.
    assert leftovers(cri, cid) == []
    assert exec_dirs(daemon) == dirs
    cri.call("RemoveContainer", container_id=cid)


def test_exec_sync_finishes_normally_through_the_reaper(daemon, cri, pod, image_ref):
    cid = running(cri, pod, image_ref, "plain")
    dirs = exec_dirs(daemon)
    r = cri.call("ExecSync", container_id=cid, cmd=["/bin/sh", "-c", "echo out; echo err >&2; "
                                                    "exit 6"], timeout=10)
    assert (r.exit_code, r.stdout, r.stderr) == (6, b"out\n", b"err\n")
    r = cri.call("ExecSync", container_id=cid, cmd=["sh", "-c", "kill -9 $$"], timeout=10)
    assert r.exit_code == 137
    r = cri.call("ExecSync", container_id=cid, cmd=["/bin/no-such-binary"], timeout=10)
    assert r.exit_code == 127 and b"not found" in r.stderr, r
    assert leftovers(cri, cid) == []
    assert exec_dirs(daemon) == dirs
    cri.call("RemoveContainer", container_id=cid)


def test_exec_sync_large_output_is_capped_with_the_exit_code(daemon, cri, pod, image_ref):
    from remora_fixtures import Cri
    cid = running(cri, pod, image_ref, "big")
    # As kubelet's client: messages up to 16 MiB (grpc's default is 4 MiB).
    kubelet = Cri(cri.api, "unix://" + daemon.socket)
    kubelet.channel.close()
    kubelet.channel = grpc.insecure_channel("unix://" + daemon.socket, options=[
        ("grpc.max_receive_message_length", 16 << 20)])
    r = kubelet.call("ExecSync", container_id=cid,
                 cmd=["sh", "-c", "head -c 20971520 /dev/zero; head -c 20971520 /dev/zero >&2; "
                                  "exit 3"], timeout=30)
    assert r.exit_code == 3
    assert len(r.stdout) == EXEC_OUTPUT_CAP and r.stdout.count(b"\0") == EXEC_OUTPUT_CAP
    assert len(r.stderr) == EXEC_OUTPUT_CAP
    kubelet.close()
    assert leftovers(cri, cid) == []
    cri.call("RemoveContainer", container_id=cid)


def test_kill_9_mid_exec_leaves_no_scratch_dir_and_no_process(make_daemon, image_ref, tmp_path,
                                                             monkeypatch):
    from ctr_helpers import pod_running
    d = make_daemon()
    monkeypatch.setenv("REMORA_CRASH_AT", "execsync.started")
    d.start()
    monkeypatch.delenv("REMORA_CRASH_AT")
    cri = d.client()
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod = pod_running(cri, tmp_path, "crash-exec")
    d2 = None
    try:
        cid = running(cri, pod, image_ref, "victim")
        req = cri.message("ExecSyncRequest", container_id=cid, cmd=["sleep", "4321"],
                          timeout=30)
        with pytest.raises(grpc.RpcError):
            cri.call("ExecSync", req, timeout=20)
        d.proc.wait(timeout=10)
        cri.close()
        assert exec_dirs(d) != [], "the crash point is after the scratch directory is made"
        # Where versions before <state>/exec put theirs.
        os.mkdir(os.path.join(d.state, "exec-OLDVER"))
        d2 = make_daemon(base=d.base).start()
        cri = d2.client()
        assert exec_dirs(d2) == []
        # The exec lost its daemon: its processes are gone too.
        deadline = time.monotonic() + 5
        while leftovers(cri, cid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert leftovers(cri, cid) == []
    finally:
        if d.proc.poll() is None or d2 is not None:
            cri.call("StopPodSandbox", pod_sandbox_id=pod[0])
            cri.call("RemovePodSandbox", pod_sandbox_id=pod[0])
        cri.close()


def test_stop_races_the_containers_own_exit(daemon, cri, pod, image_ref):
    """Containers that exit within milliseconds, stopped at once: every stop is OK and the
    exit code is the container's own. PID 1 ignores the SIGTERM, so it is 3; except when
    the SIGTERM lands in the instant between `runc start` returning and runc's init
    exec'ing the command: runc init (Go) then exits 2 for it, and 2 is what happened."""
    failures = []
    for i in range(40):
        cid = create(cri, pod, container_config(cri, image_ref, "quick%d" % i,
                                                ["/bin/sh", "-c", "exit 3"]))
        cri.call("StartContainer", container_id=cid)
        try:
            cri.call("StopContainer",
                     cri.message("StopContainerRequest", container_id=cid, timeout=10),
                     timeout=30)
        except grpc.RpcError as e:
            failures.append((cid, e.code(), e.details()))
            continue
        st = status(cri, cid)
        assert st.state == cri.api.CONTAINER_EXITED and st.exit_code in (3, 2), st
        cri.call("RemoveContainer", container_id=cid)
    assert failures == []


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
def test_dropped_exec_stream_kills_and_reaps_every_process(daemon, cri, pod, image_ref, tty):
    from test_streaming import connect
    cid = running(cri, pod, image_ref, "stream")
    dirs = exec_dirs(daemon)
    url = cri.call("Exec", container_id=cid, cmd=["sh", "-c", "sleep 999 & sleep 998; wait"],
                   stdout=True, stderr=not tty, tty=tty).url
    ws = connect(url)
    deadline = time.monotonic() + 10
    while len([p for p in leftovers(cri, cid) if p[1] == "sleep"]) < 2:
        assert time.monotonic() < deadline, leftovers(cri, cid)
        time.sleep(0.1)
    ws.close()
    deadline = time.monotonic() + 10
    while leftovers(cri, cid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(cri, cid) == []
    deadline = time.monotonic() + 5
    while exec_dirs(daemon) != dirs and time.monotonic() < deadline:
        time.sleep(0.1)
    assert exec_dirs(daemon) == dirs
    cri.call("RemoveContainer", container_id=cid)


def test_exec_as_a_non_root_user_runs_under_the_reaper(daemon, cri, pod, image_ref):
    """The reaper is reached through /proc/self/fd/3 of the exec'd process; that works for
    a container user other than root too."""
    cid = create(cri, pod, container_config(
        cri, image_ref, "user", ["/bin/sleep", "1000"],
        linux={"security_context": {"run_as_user": {"value": 1000}}}))
    cri.call("StartContainer", container_id=cid)
    r = cri.call("ExecSync", container_id=cid, cmd=["id", "-u"], timeout=10)
    assert (r.exit_code, r.stdout) == (0, b"1000\n"), r
    req = cri.message("ExecSyncRequest", container_id=cid,
                      cmd=["sh", "-c", "sleep 999 & sleep 998; wait"], timeout=1)
    with pytest.raises(grpc.RpcError) as e:
        cri.call("ExecSync", req, timeout=20)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert leftovers(cri, cid) == []
    cri.call("RemoveContainer", container_id=cid)


def _pids_of(cmdline):
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    if f.read() == cmdline:
                        found.append(int(d))
            except OSError:
                pass
    return found


def _reaper(remorad_bin, script, **kw):
    """remora-shim's exec reaper run on the host as runc would run it: fd 4 the read end
    of a control pipe; returns the process and the pipe's write end."""
    import subprocess
    shim = os.path.join(os.path.dirname(remorad_bin), "remora-shim")
    r, w = os.pipe()
    p = subprocess.Popen([shim, "--exec-reaper", "--", "/bin/sh", "-c", script],
                         preexec_fn=lambda: os.dup2(r, 4), pass_fds=(4,), **kw)
    os.close(r)
    return p, w


@pytest.mark.parametrize("how", ["pipe", "sigterm"])
def test_exec_reaper_kills_every_descendant_when_its_pipe_closes(remorad_bin, how):
    """Children in another session or orphaned early are found too, and reaped."""
    p, w = _reaper(remorad_bin, "setsid sleep 997 & sleep 998 & (sleep 996 &); wait")
    names = [b"sleep\x00997\x00", b"sleep\x00998\x00", b"sleep\x00996\x00"]
    deadline = time.monotonic() + 10
    while not all(_pids_of(n) for n in names):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pids = [q for n in names for q in _pids_of(n)]
    if how == "pipe":
        os.close(w)
    else:
        p.terminate()
    assert p.wait(timeout=10) == 137
    if how != "pipe":
        os.close(w)
    assert [q for q in pids if os.path.exists("/proc/%d" % q)] == []


def test_exec_reaper_waits_for_output_holders_only(remorad_bin):
    import subprocess
    t0 = time.monotonic()
    p, w = _reaper(remorad_bin, "sleep 1 & echo hi", stdout=subprocess.PIPE)
    out, _ = p.communicate(timeout=10)
    assert (p.returncode, out) == (0, b"hi\n")
    assert time.monotonic() - t0 >= 0.9, "returned while a child still wrote to its stdout"
    # A child whose output goes elsewhere is left running, as any runtime does.
    p2, w2 = _reaper(remorad_bin, "sleep 995 >/dev/null 2>&1 & exit 5", stdout=subprocess.PIPE)
    p2.communicate(timeout=10)
    assert p2.returncode == 5
    left = _pids_of(b"sleep\x00995\x00")
    assert len(left) == 1
    os.kill(left[0], 9)
    os.close(w)
    os.close(w2)
