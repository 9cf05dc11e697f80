"""An attached client flooding the stdin of a container that never reads it.

The attack: with stdin open but unread, the container's stdin pipe fills (64 KiB); the old
remora-shim, one thread for everything, then blocked in write() on it, so the container's
output stopped reaching its log and ReopenContainerLog (served by the same thread) timed
out. Now the shim writes stdin without blocking, keeps a bounded buffer per container and
stops reading from the attached clients when it is full: the client is held back, the log
never is; a client held back for 10 s without the container taking any input is cut off.
"""
import os
import threading
import time

from ctr_helpers import container_config, create, image_ref, pod, status  # noqa: F401
from test_streaming import STDIN, connect, send


def shim_pids(cid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"remora-shim") and cid.encode() in args:
            out.append(int(entry))
    return out


def lines(path):
    try:
        with open(path) as f:
            return f.read().count("\n")
    except FileNotFoundError:
        return 0


def grows(path, seconds=1.5):
    before = lines(path)
    time.sleep(seconds)
    return lines(path) - before


def sockets(pid):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            n += os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:")
        except OSError:
            pass
    return n


def test_stdin_flood_never_stops_the_log(cri, pod, image_ref):
    cid = create(cri, pod, container_config(
        cri, image_ref, "deaf", ["/bin/sh", "-c", "while :; do echo tick; sleep 0.1; done"],
        stdin=True))
    cri.call("StartContainer", container_id=cid)
    path = status(cri, cid).log_path
    shims = shim_pids(cid)
    assert len(shims) == 1, shims
    assert grows(path, 1.0) >= 5
    idle_sockets = sockets(shims[0])

    ws = connect(cri.call("Attach", container_id=cid, stdin=True, stdout=True).url)
    sent = [0]

    def flood():
        chunk = b"z" * 65536
        try:
            while sent[0] < 8 << 20:
                send(ws, STDIN, chunk)
                sent[0] += len(chunk)
        except Exception:  # the socket is closed under us at the end of the test
            pass

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while sent[0] < 1 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent[0] >= 1 << 20, "the flood got under way (more than the pipe holds)"

    # The log keeps growing while the client pushes at stdin.
    assert grows(path) >= 8, "the log stopped while stdin was flooded"
    # Rotation works: the shim answers ReopenContainerLog at once and logs to the new file.
    os.rename(path, path + ".1")
    t0 = time.monotonic()
    cri.call("ReopenContainerLog", container_id=cid, timeout=5)
    assert time.monotonic() - t0 < 2
    assert grows(path) >= 8, "nothing logged after the reopen"
    assert shim_pids(cid) == shims, "the shim is alive"
    assert status(cri, cid).state == cri.api.CONTAINER_RUNNING

    ws.close()
    t.join(timeout=10)
    # With the client gone, the container and its log go on, and the shim lets go of the
    # client it held back (after 10 s without the container taking input), which ends
    # the daemon's side of the session too.
    assert grows(path) >= 8
    deadline = time.monotonic() + 20
    while sockets(shims[0]) > idle_sockets and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sockets(shims[0]) == idle_sockets, "the shim let go of the attach client"
    cri.call("StopContainer", container_id=cid, timeout=10)
    cri.call("RemoveContainer", container_id=cid)
    assert shim_pids(cid) == []
