"""Exec and PortForward against real containers: the URL from the CRI call, then the
WebSocket or SPDY session a kubelet, kubectl or crictl would open, with runc exec and the
pod's network namespace behind it."""
import json
import os
import time

import grpc
import pytest

from ctr_helpers import container_config, create, image_ref, pod, status  # noqa: F401
from test_streaming import (ERROR, RESIZE, STDERR, STDIN, STDOUT, CLOSE, Spdy, collect,
                            connect, send)


def running(cri, pod, image_ref, name, command):
    cid = create(cri, pod, container_config(cri, image_ref, name, command))
    cri.call("StartContainer", container_id=cid)
    return cid


def exec_url(cri, cid, cmd, **kw):
    fields = dict(stdout=True)
    fields.update(kw)
    return cri.call("Exec", container_id=cid, cmd=cmd, **fields).url


def exec_status(streams):
    return json.loads(streams[ERROR])


def processes(cri, cid):
    r = cri.call("ExecSync", container_id=cid, cmd=["/bin/ps", "-o", "args"], timeout=10)
    return r.stdout.decode()


def test_exec_over_websocket(daemon, cri, pod, image_ref):
    cid = running(cri, pod, image_ref, "ws", ["/bin/sleep", "1000"])
    s = collect(connect(exec_url(cri, cid[:12], ["/bin/sh", "-c", "hostname; id -u"])))
    assert s[STDOUT] == b"ctr-pod\n0\n"
    assert exec_status(s) == {"metadata": {}, "status": "Success"}

    s = collect(connect(exec_url(cri, cid, ["/bin/sh", "-c", "echo oops >&2; exit 3"],
                                 stderr=True)))
    assert s[STDERR] == b"oops\n"
    st = exec_status(s)
    assert st["reason"] == "NonZeroExitCode"
    assert st["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]

    ws = connect(exec_url(cri, cid, ["/bin/cat"], stdin=True), proto="v5.channel.k8s.io")
    send(ws, STDIN, b"through the pipe\n")
    send(ws, CLOSE, bytes([STDIN]))
    s = collect(ws)
    assert s[STDOUT] == b"through the pipe\n" and exec_status(s)["status"] == "Success"
    wait_log(daemon, "streaming: exec session for container %s over WebSocket started" %
             cid[:12])


def test_exec_with_a_tty(cri, pod, image_ref):
    cid = running(cri, pod, image_ref, "tty", ["/bin/sleep", "1000"])
    ws = connect(exec_url(cri, cid, ["/bin/sh", "-c", "test -t 0 && echo is-a-tty; read x; "
                                                      "echo got-$x"], stdin=True, tty=True))
    send(ws, RESIZE, json.dumps({"Width": 100, "Height": 30}).encode())
    send(ws, STDIN, b"abc\r")
    s = collect(ws)
    out = s.get(STDOUT, b"")
    assert b"is-a-tty" in out and b"got-abc" in out, out
    assert STDERR not in s
    assert exec_status(s)["status"] == "Success"


def test_exec_over_spdy_as_kubectl_does(cri, pod, image_ref):
    cid = running(cri, pod, image_ref, "spdy", ["/bin/sleep", "1000"])
    c = Spdy(exec_url(cri, cid, ["/bin/sh", "-c", "echo spdy-out; exit 5"]),
             ["v4.channel.k8s.io"])
    assert c.status == 101
    err_id, out_id = c.syn(streamtype="error"), c.syn(streamtype="stdout")
    c.run()
    assert c.data[out_id] == b"spdy-out\n"
    st = json.loads(c.data[err_id])
    assert st["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]


def test_dropped_exec_client_kills_the_process(daemon, cri, pod, image_ref):
    cid = running(cri, pod, image_ref, "drop", ["/bin/sleep", "1000"])
    ws = connect(exec_url(cri, cid, ["/bin/sleep", "777"]))
    deadline = time.monotonic() + 10
    while "sleep 777" not in processes(cri, cid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "sleep 777" in processes(cri, cid)
    ws.close()
    deadline = time.monotonic() + 10
    while "sleep 777" in processes(cri, cid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "sleep 777" not in processes(cri, cid)
    time.sleep(0.3)
    assert [n for n in os.listdir(daemon.state) if n.startswith("exec-")] == []


def test_exec_refusals(cri, pod, image_ref):
    cid = create(cri, pod, container_config(cri, image_ref, "idle", ["/bin/sleep", "1000"]))
    with pytest.raises(grpc.RpcError) as e:
        exec_url(cri, cid, ["/bin/true"])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        exec_url(cri, "f" * 64, ["/bin/true"])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    cri.call("StartContainer", container_id=cid)
    with pytest.raises(grpc.RpcError) as e:
        exec_url(cri, cid, ["/bin/true"], tty=True, stderr=True)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        exec_url(cri, cid, [])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def wait_log(daemon, needle, timeout=10):
    deadline = time.monotonic() + timeout
    while needle not in daemon.read_log():
        assert time.monotonic() < deadline, "%r not in remorad's log" % needle
        time.sleep(0.05)


def test_port_forward_reaches_the_pod(daemon, cri, pod, image_ref):
    running(cri, pod, image_ref, "srv", ["/bin/sh", "-c",
                                         "while true; do echo hello-from-pod | nc -l -p 8080; "
                                         "done"])
    time.sleep(0.5)
    # No ports in the request, as kubelet and crictl send it: the streams name the port.
    url = cri.call("PortForward", pod_sandbox_id=pod[0][:10]).url
    c = Spdy(url, ["portforward.k8s.io"])
    assert c.status == 101
    e = c.syn(streamtype="error", port="8080", requestid="0")
    d = c.syn(streamtype="data", port="8080", requestid="0")
    assert c.until(lambda: d in c.replied and e in c.replied)
    assert c.until(lambda: c.data.get(d, b"").endswith(b"hello-from-pod\n"))
    # Nothing listens on 8081: the client hears why on the error stream, the operator in
    # the log, and the session goes on.
    e2 = c.syn(streamtype="error", port="8081", requestid="1")
    c.syn(streamtype="data", port="8081", requestid="1")
    assert c.until(lambda: b"refused" in c.data.get(e2, b""))
    wait_log(daemon, "streaming: port forward: connect to port 8081 in pod %s" % pod[0])
    c.close()
    # Each session is logged where it starts and where it ends.
    wait_log(daemon, "streaming: port forward session for pod %s over SPDY started" %
             pod[0][:12])
    wait_log(daemon, "streaming: port forward session for pod %s ended after" % pod[0][:12])

    with pytest.raises(grpc.RpcError) as err:
        cri.call("PortForward", pod_sandbox_id="0" * 64, port=[8080])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def attach_url(cri, cid, **kw):
    fields = dict(stdout=True)
    fields.update(kw)
    return cri.call("Attach", container_id=cid, **fields).url


def read_until(ws, needle, timeout=10):
    """Collect stdout until needle shows up (the container keeps running: no close)."""
    got = b""
    ws.settimeout(timeout)
    while needle not in got:
        op, data = ws.recv_data()
        if op == 8:  # close
            break
        if data and data[0] == STDOUT:
            got += data[1:]
    return got


def test_attach_to_a_tty_shell_and_detach(cri, pod, image_ref):
    cid = create(cri, pod, container_config(cri, image_ref, "shell", ["/bin/sh"], tty=True,
                                            stdin=True))
    cri.call("StartContainer", container_id=cid)
    a = connect(attach_url(cri, cid, stdin=True, tty=True))
    b = connect(attach_url(cri, cid))  # a second client, output only
    send(a, RESIZE, json.dumps({"Width": 90, "Height": 20}).encode())
    send(a, STDIN, b"echo attached-$((40+2))\r")
    assert b"attached-42" in read_until(a, b"attached-42")
    assert b"attached-42" in read_until(b, b"attached-42")
    a.close()
    b.close()
    time.sleep(0.3)
    assert status(cri, cid).state == cri.api.CONTAINER_RUNNING, "detaching left it running"
    c = connect(attach_url(cri, cid, stdin=True, tty=True))
    send(c, STDIN, b"exit 6\r")
    s = collect(c)
    assert exec_status(s)["status"] == "Success"
    deadline = time.monotonic() + 10
    while status(cri, cid).state != cri.api.CONTAINER_EXITED and time.monotonic() < deadline:
        time.sleep(0.05)
    st = status(cri, cid)
    assert st.exit_code == 6
    with open(st.log_path) as f:
        assert "attached-42" in f.read(), "the terminal's output is logged too"


def test_attach_stdin_once_pipes(cri, pod, image_ref):
    cid = create(cri, pod, container_config(
        cri, image_ref, "once", ["/bin/sh", "-c", "cat; echo stdin-closed"], stdin=True,
        stdin_once=True))
    cri.call("StartContainer", container_id=cid)
    ws = connect(attach_url(cri, cid, stdin=True, stderr=True), proto="v5.channel.k8s.io")
    send(ws, STDIN, b"one line\n")
    assert b"one line" in read_until(ws, b"one line")
    send(ws, CLOSE, bytes([STDIN]))
    s = collect(ws)
    assert b"stdin-closed" in s.get(STDOUT, b"")
    deadline = time.monotonic() + 10
    while status(cri, cid).state != cri.api.CONTAINER_EXITED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status(cri, cid).exit_code == 0

    with pytest.raises(grpc.RpcError) as e:
        attach_url(cri, cid)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
