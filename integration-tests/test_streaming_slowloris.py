"""The streaming server under a slowloris: many connections that never finish their HTTP
request must not keep real exec sessions out.

The attack: open about 1,000 TCP connections to the streaming server (anyone who can reach
its port can; no token is needed to connect) and send nothing, or a request line and a few
header bytes now and then. The old server held every one of them for 30 s of idleness, and
a real `crictl exec` arriving meanwhile hung for over 20 s. Now a connection has
`streaming.header_timeout_ms` from its accept to complete its upgrade, and at most
`streaming.max_pending_connections` connections may be waiting to upgrade: past that the
oldest waiting one is dropped to make room. Sessions already upgraded are never touched.
"""
import errno
import json
import resource
import select
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from ctr_helpers import container_config, create, image_ref, pod  # noqa: F401
from test_streaming import CLOSE, ERROR, STDIN, STDOUT, collect, connect, send



def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        want = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need


def open_slow(address, n):
    """n connections: every other one sends a request line and a first header, no more."""
    host, port = address
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((host, port))
        assert rc in (0, errno.EINPROGRESS), rc
        socks.append(s)
    for i, s in enumerate(socks):
        if i % 2:
            wait_for(s, select.POLLOUT, 5)
            try:
                s.send(b"GET /exec/AAAAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass
    return socks


def wait_for(s, events, timeout):
    p = select.poll()
    p.register(s, events)
    return p.poll(timeout * 1000)


def trickle(socks, stop):
    """Keep the talking half alive: one more header byte each, every half second."""
    while not stop.wait(0.5):
        for s in socks[1::2]:
            try:
                s.send(b"X")
            except OSError:
                pass


def closed_by_server(s):
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


def all_closed(socks, timeout):
    deadline = time.monotonic() + timeout
    left = {s.fileno(): s for s in socks}
    while left and time.monotonic() < deadline:
        p = select.poll()
        for fd in left:
            p.register(fd, select.POLLIN)
        for fd, _ in p.poll(200):
            if fd in left and closed_by_server(left[fd]):
                del left[fd]
    return len(left)


def exec_url(cri, cid, cmd, **kw):
    return cri.call("Exec", container_id=cid, cmd=cmd, stdout=True, **kw).url


def read_until(ws, needle):
    got = b""
    while needle not in got:
        op, data = ws.recv_data()
        if op == 8:
            break
        if data and data[0] == STDOUT:
            got += data[1:]
    return got


# 1,000 as in the report; 1,100 also passes libmicrohttpd's own connection limit (1,020),
# past which the old server took no connection at all.
@pytest.mark.parametrize("slow", [1000, 1100])
def test_exec_is_served_through_a_thousand_slow_connections(cri, pod, image_ref, slow):
    raise_nofile(slow + 200)
    cid = create(cri, pod, container_config(cri, image_ref, "target", ["/bin/sleep", "1000"]))
    cri.call("StartContainer", container_id=cid)
    # A session established before the attack, used after it.
    old = connect(exec_url(cri, cid, ["/bin/cat"], stdin=True), proto="v5.channel.k8s.io")
    send(old, STDIN, b"before\n")
    assert b"before" in read_until(old, b"before")

    url = exec_url(cri, cid, ["/bin/true"])
    parts = urlsplit(url)
    address = (parts.hostname, parts.port)
    socks = open_slow(address, slow)
    stop = threading.Event()
    t = threading.Thread(target=trickle, args=(socks, stop), daemon=True)
    t.start()
    try:
        time.sleep(0.5)  # let the server take them in
        # A real exec, concurrently with the held connections: Exec, then the WebSocket.
        t0 = time.monotonic()
        s = collect(connect(exec_url(cri, cid, ["/bin/echo", "through"])))
        took = time.monotonic() - t0
        assert s[STDOUT] == b"through\n" and json.loads(s[ERROR])["status"] == "Success"
        print("exec behind %d slow connections: %.3f s" % (slow, took))
        assert took < 2, "exec took %.1f s behind %d slow connections" % (took, slow)
        # The slow ones are dropped by the header timeout (5 s by default), trickling or not.
        left = all_closed(socks, 5 + 4)
        assert left == 0, "%d slow connections still open after the header timeout" % left
        # The session from before the attack is still served.
        send(old, STDIN, b"after\n")
        assert b"after" in read_until(old, b"after")
        send(old, CLOSE, bytes([STDIN]))
        collect(old)
    finally:
        stop.set()
        t.join()
        for sk in socks:
            sk.close()


def test_pending_connections_are_capped(make_daemon):
    d = make_daemon(config=json.dumps({"streaming": {"header_timeout_ms": 1500,
                                                     "max_pending_connections": 16}}))
    d.start()
    port = int(d.read_log().split("streaming server listening on 127.0.0.1:")[1].split()[0])
    socks = open_slow(("127.0.0.1", port), 40)
    time.sleep(0.5)
    # Only the newest 16 may wait: the others are gone well before the timeout.
    dropped = 40 - all_closed(socks, 0.3)
    assert dropped >= 40 - 16 - 1, dropped
    # A well-formed request is still answered (an unknown token: 404).
    import http.client
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    h.request("GET", "/exec/AAAAAAAAAAAAAAAAAAAAAAAA")
    assert h.getresponse().status == 404
    h.close()
    # And the rest after header_timeout_ms.
    t0 = time.monotonic()
    assert all_closed(socks, 3) == 0
    assert time.monotonic() - t0 < 2.5
    for s in socks:
        s.close()


@pytest.mark.parametrize("key,value", [("header_timeout_ms", 0), ("header_timeout_ms", "5"),
                                       ("max_pending_connections", 0),
                                       ("max_pending_connections", 1 << 20)])
def test_bad_streaming_limits_are_refused(make_daemon, key, value):
    d = make_daemon(config=json.dumps({"streaming": {key: value}}))
    d.start(wait=False)
    assert d.proc.wait(timeout=10) != 0
    assert "streaming." + key in d.read_log()
