"""fd hygiene (issue 15 item 5): every descriptor remorad opens is close-on-exec, and the
processes it starts (remora-shim, runc, the container's init and exec'd processes) hold
only the descriptors meant for them.

Attack: remorad's nftables netlink socket had no O_CLOEXEC, so every remora-shim and every
runc it started inherited a NETLINK_NETFILTER socket opened by root in the host's network
namespace. runc runs hooks and its own children with it; anything that can make runc or
the shim run code (a runtime hook, a compromised runtime binary, a bug in the shim's
stdio handling) could rewrite the host's firewall through it, and the shims (which outlive
the daemon) keep it open for the container's whole life."""
import json
import os
import re

from google.protobuf import json_format

from ctr_helpers import POD, container_config, create, image_ref, status  # noqa: F401

WRAPPER = """#!/usr/bin/python3 -I
# Records the descriptors runc is about to inherit (those without close-on-exec: every
# descriptor Python opens itself has it), then runs the real runc in this process.
import fcntl, os, sys
fds = []
for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
    try:
        if not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
            fds.append("%%d %%s" %% (fd, os.readlink("/proc/self/fd/%%d" %% fd)))
    except OSError:
        pass
with open("%(dir)s/runc.%%d" %% os.getpid(), "w") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n" + "\\n".join(fds) + "\\n")
os.execv("%(runc)s", ["%(runc)s"] + sys.argv[1:])
"""


def socket_kinds():
    """inode -> kind ("unix", "netlink:<protocol>", "tcp", ...) for this network namespace."""
    kinds = {}
    with open("/proc/net/netlink") as f:
        next(f)
        for line in f:
            p = line.split()
            kinds[p[-1]] = "netlink:%s" % p[1]
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            kinds[line.split()[6]] = "unix"
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with open("/proc/net/" + proto) as f:
            next(f)
            for line in f:
                kinds[line.split()[9]] = proto
    return kinds


def describe(target, kinds):
    m = re.match(r"socket:\[(\d+)\]", target)
    if m:
        return "socket " + kinds.get(m.group(1), "other")
    return target


def fds_of(pid):
    """{fd: (target, flags)} of a process."""
    out = {}
    base = "/proc/%d/fd" % pid
    for name in os.listdir(base):
        try:
            target = os.readlink(os.path.join(base, name))
            with open("/proc/%d/fdinfo/%s" % (pid, name)) as f:
                flags = int(re.search(r"flags:\s*(\d+)", f.read()).group(1), 8)
        except FileNotFoundError:
            continue  # closed meanwhile
        out[int(name)] = (target, flags)
    return out


def shim_pids(cid):
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                argv = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if argv and argv[0].endswith(b"remora-shim") and cid.encode() in argv:
            pids.append(int(p))
    return pids


def test_no_stray_descriptors_in_daemon_shim_runc_init_and_exec(make_daemon, image_ref,
                                                                tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    wrapper = tmp_path / "runc-wrapper"
    wrapper.write_text(WRAPPER % {"dir": rec, "runc": "/usr/sbin/runc"})
    wrapper.chmod(0o755)
    d = make_daemon(config=json.dumps({"runtime_path": str(wrapper)})).start()
    cri = d.client()
    pod = None
    try:
        cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
        doc = dict(POD, log_directory=str(tmp_path / "logs"))
        cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
        pod = (cri.call("RunPodSandbox", config=cfg).pod_sandbox_id, cfg)
        check_descriptors(d, cri, pod, image_ref, rec)
    finally:
        if pod:
            cri.call("StopPodSandbox", pod_sandbox_id=pod[0])
            cri.call("RemovePodSandbox", pod_sandbox_id=pod[0])
        cri.close()


def check_descriptors(d, cri, pod, ref, rec):
    """What each process holds, with the container running."""
    cid = create(cri, pod, container_config(cri, ref, "fds", ["/bin/sleep", "1000"]))
    cri.call("StartContainer", container_id=cid)
    kinds = socket_kinds()

    # remorad itself: every descriptor past stdio is close-on-exec.
    leaky = {fd: describe(t, kinds) for fd, (t, flags) in fds_of(d.proc.pid).items()
             if fd > 2 and not flags & os.O_CLOEXEC}
    assert leaky == {}, "remorad descriptors without O_CLOEXEC: %s" % leaky

    # remora-shim: stdio on /dev/null (its log on 2), then only what it opened itself
    # for this container: unix sockets (attach, the sync pipe's end), pipes to the
    # container's stdio, its signalfd/epoll, the container's log file.
    pids = shim_pids(cid)
    assert len(pids) == 1, pids
    shim = {fd: describe(t, kinds) for fd, (t, _) in fds_of(pids[0]).items()}
    log_path = status(cri, cid).log_path
    for fd, what in shim.items():
        ok = (what in ("/dev/null", "socket unix") or what.startswith("pipe:") or
              what.startswith("anon_inode:") or what == log_path or
              what.startswith(os.path.join(d.state, "")) and cid in what or
              fd == 2 and what.startswith(d.base))
        assert ok, "remora-shim holds fd %d: %s (all: %s)" % (fd, what, shim)
    assert not any(w.startswith("socket netlink") for w in shim.values()), shim

    # runc, every invocation (create by the shim, start/state/exec by the daemon):
    # stdio and nothing else.
    runs = {}
    for name in os.listdir(rec):
        with open(rec / name) as f:
            lines = f.read().splitlines()
        runs[lines[0]] = dict(l.split(" ", 1) for l in lines[1:] if l)
    assert any(" create " in " %s " % a for a in runs), runs
    assert any(" start " in " %s " % a for a in runs), runs
    for args, fds in runs.items():
        extra = {fd: t for fd, t in fds.items() if fd not in ("0", "1", "2")}
        assert extra == {}, "runc %s got %s" % (args, extra)

    # The container's init and an exec'd process: stdio only.
    init = int(json.loads(cri.call("ContainerStatus", container_id=cid,
                                   verbose=True).info["info"])["pid"])
    assert sorted(fds_of(init)) == [0, 1, 2], fds_of(init)
    r = cri.call("ExecSync", container_id=cid,
                 cmd=["/bin/sh", "-c", "ls /proc/$$/fd; exit 0"], timeout=20)
    assert r.exit_code == 0, r
    assert sorted(int(x) for x in r.stdout.split()) == [0, 1, 2], r.stdout

    cri.call("RemoveContainer", container_id=cid)
