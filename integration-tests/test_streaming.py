"""The streaming server (Exec/Attach/PortForward over WebSocket) driven by real clients.

Containers are not wired in yet, so these run the server over its fake backend
(tests/unit/streaming/fakesrv.c): exec runs argv as a host process, port forward connects to
127.0.0.1. What they check is the protocol side a kubelet or kubectl sees, and that broken
clients leave no fds, threads or processes behind.
"""
import json
import os
import socket
import subprocess
import threading
import time
import base64

import pytest
import websocket

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class FakeServer:
    def __init__(self, section=None):
        path = os.environ.get("REMORA_STREAMING_FAKESRV")
        assert path, "REMORA_STREAMING_FAKESRV is not set (ctest sets it to streaming_fakesrv)"
        self.proc = subprocess.Popen([path, json.dumps(section or {})], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.address = self.proc.stdout.readline().strip()
        assert not self.address.startswith("error"), self.address

    def url(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def exec_url(self, cmd, stdin=False, stdout=True, stderr=False, tty=False):
        return self.url(kind="exec", container_id="c1", cmd=cmd, stdin=stdin, stdout=stdout,
                        stderr=stderr, tty=tty)

    def counts(self):
        pid = self.proc.pid
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = len(os.listdir(f"/proc/{pid}/task"))
        return fds, threads, len(children(pid))

    def close(self):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=20)
        assert rc == 0


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


@pytest.fixture
def srv():
    s = FakeServer()
    yield s
    s.close()


def connect(url, proto="v4.channel.k8s.io"):
    return websocket.create_connection(url.replace("http://", "ws://", 1), subprotocols=[proto],
                                       timeout=20)


def send(ws, channel, data, b64=False):
    if b64:
        ws.send(str(channel) + base64.b64encode(data).decode(), opcode=websocket.ABNF.OPCODE_TEXT)
    else:
        ws.send(bytes([channel]) + data, opcode=websocket.ABNF.OPCODE_BINARY)


def collect(ws, b64=False, until=None):
    """Read channel messages until the server closes (or until(streams) is true)."""
    streams = {}
    while True:
        op, data = ws.recv_data()
        if op == websocket.ABNF.OPCODE_CLOSE:
            break
        if b64:
            ch, payload = int(chr(data[0])), base64.b64decode(data[1:])
        else:
            ch, payload = data[0], data[1:]
        streams[ch] = streams.get(ch, b"") + payload
        if until and until(streams):
            break
    return streams


def status(streams):
    return json.loads(streams[ERROR])


def test_exec_echo(srv):
    ws = connect(srv.exec_url(["echo", "hello"]))
    assert ws.subprotocol == "v4.channel.k8s.io"
    s = collect(ws)
    assert s[STDOUT] == b"hello\n"
    assert status(s) == {"metadata": {}, "status": "Success"}


def test_exec_stderr_and_nonzero_exit(srv):
    ws = connect(srv.exec_url(["sh", "-c", "echo oops >&2; exit 3"], stderr=True))
    s = collect(ws)
    assert s[STDERR] == b"oops\n"
    st = status(s)
    assert st["status"] == "Failure"
    assert st["reason"] == "NonZeroExitCode"
    assert st["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_exec_base64_protocol(srv):
    ws = connect(srv.exec_url(["echo", "hi"]), proto="v4.base64.channel.k8s.io")
    assert ws.subprotocol == "v4.base64.channel.k8s.io"
    s = collect(ws, b64=True)
    assert s[STDOUT] == b"hi\n"
    assert status(s)["status"] == "Success"


def test_exec_stdin_eof_v5(srv):
    ws = connect(srv.exec_url(["cat"], stdin=True), proto="v5.channel.k8s.io")
    send(ws, STDIN, b"line one\n")
    send(ws, STDIN, b"line two\n")
    send(ws, CLOSE, bytes([STDIN]))  # v5: close stdin, cat sees EOF and exits 0
    s = collect(ws)
    assert s[STDOUT] == b"line one\nline two\n"
    assert status(s)["status"] == "Success"


def test_exec_stdin_large(srv):
    """More stdin than any pipe holds, echoed back while it is still being sent."""
    ws = connect(srv.exec_url(["cat"], stdin=True), proto="v5.channel.k8s.io")
    blob = bytes(range(256)) * 4096  # 1 MiB
    sender = threading.Thread(target=lambda: [send(ws, STDIN, blob[i:i + 65536])
                                              for i in range(0, len(blob), 65536)]
                              + [send(ws, CLOSE, bytes([STDIN]))])
    sender.start()
    s = collect(ws)
    sender.join()
    assert s[STDOUT] == blob
    assert status(s)["status"] == "Success"


def test_exec_tty_resize(srv):
    ws = connect(srv.exec_url(["sh", "-c", "read x; stty size"], stdin=True, tty=True))
    send(ws, RESIZE, json.dumps({"Width": 123, "Height": 45}).encode())
    send(ws, STDIN, b"go\n")
    s = collect(ws)
    assert b"45 123" in s[STDOUT]
    assert STDERR not in s
    assert status(s)["status"] == "Success"


def test_exec_tty_with_stderr_refused(srv):
    assert srv.exec_url(["true"], tty=True, stderr=True).startswith("error: ")
    assert srv.exec_url(["true"], stdout=False).startswith("error: ")


def test_attach(srv):
    url = srv.url(kind="attach", container_id="c1", stdin=True, stdout=True)
    ws = connect(url, proto="v5.channel.k8s.io")
    send(ws, STDIN, b"ping\n")
    s = collect(ws, until=lambda s: s.get(STDOUT) == b"ping\n")
    assert s[STDOUT] == b"ping\n"
    ws.close()


def test_concurrent_execs(srv):
    results = {}

    def one(i):
        ws = connect(srv_urls[i])
        results[i] = collect(ws)

    srv_urls = [srv.exec_url(["echo", f"n{i}"]) for i in range(20)]
    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(20):
        assert results[i][STDOUT] == f"n{i}\n".encode()
        assert status(results[i])["status"] == "Success"


def test_token_reuse_and_unknown(srv):
    url = srv.exec_url(["true"])
    collect(connect(url))
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        connect(url)
    assert e.value.status_code == 404
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        connect(url.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAAAA")
    assert e.value.status_code == 404
    # A token is bound to its kind: an exec token does not open an attach.
    url = srv.exec_url(["true"])
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        connect(url.replace("/exec/", "/attach/"))
    assert e.value.status_code == 404


def test_token_expires():
    s = FakeServer({"token_ttl_seconds": 1})
    try:
        url = s.exec_url(["true"])
        time.sleep(2.2)
        with pytest.raises(websocket.WebSocketBadStatusException) as e:
            connect(url)
        assert e.value.status_code == 404
    finally:
        s.close()


def settled(srv, timeout=10):
    """The server's counts once a session that just ended is gone."""
    last = srv.counts()
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        now = srv.counts()
        if now == last and now[2] == 0:
            break
        last = now
    return last


def wait_baseline(srv, base, timeout=10):
    """The counts once they are back at (or under) base: a leak keeps one above it. Under
    a loaded machine the base itself may still hold the warm-up session's last moments
    (its linger), so ending lower than base is fine."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = srv.counts()
        if all(n <= b for n, b in zip(now, base)):
            return base
        time.sleep(0.1)
    return srv.counts()


def test_dropped_clients_leak_nothing(srv):
    collect(connect(srv.exec_url(["true"])))  # warm up lazily created state
    base = settled(srv)
    assert base[2] == 0

    # A client gone mid-stream while its process runs and never ends by itself.
    ws = connect(srv.exec_url(["sleep", "1000"], stdin=True))
    time.sleep(0.3)
    assert srv.counts()[2] == 1
    ws.sock.close()  # no close frame: the TCP connection just drops

    # A client that never reads a process that never stops writing.
    ws2 = connect(srv.exec_url(["yes"]))
    time.sleep(1)
    ws2.sock.shutdown(socket.SHUT_RDWR)
    ws2.sock.close()

    # A tty session dropped, too.
    ws3 = connect(srv.exec_url(["sh"], stdin=True, tty=True))
    time.sleep(0.3)
    ws3.sock.close()

    assert wait_baseline(srv, base) == base


def test_invalid_frame_ends_only_its_stream(srv):
    good = connect(srv.exec_url(["cat"], stdin=True), proto="v5.channel.k8s.io")
    bad = connect(srv.exec_url(["cat"], stdin=True))
    bad.sock.sendall(b"\x82\x02\x00x")  # unmasked: a protocol error from a client
    op, data = bad.recv_data(control_frame=True)
    assert op == websocket.ABNF.OPCODE_CLOSE and data[:2] == b"\x03\xea"  # 1002
    send(good, STDIN, b"still here\n")
    send(good, CLOSE, bytes([STDIN]))
    s = collect(good)
    assert s[STDOUT] == b"still here\n"


def echo_server():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def serve():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            def pump(c=c):
                with c:
                    while data := c.recv(65536):
                        c.sendall(data)
            threading.Thread(target=pump, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return ls


def test_port_forward(srv):
    ls = echo_server()
    port = ls.getsockname()[1]
    try:
        base = settled(srv)
        url = srv.url(kind="portforward", pod_sandbox_id="p1", port=[port])
        ws = connect(url + f"?port={port}", proto="portforward.k8s.io")
        # Each channel opens with the port, little-endian.
        first = collect(ws, until=lambda s: len(s.get(0, b"")) >= 2 and len(s.get(1, b"")) >= 2)
        assert first[0] == port.to_bytes(2, "little") and first[1] == first[0]
        send(ws, 0, b"ping over the tunnel")
        got = collect(ws, until=lambda s: len(s.get(0, b"")) >= 20)
        assert got[0] == b"ping over the tunnel"
        ws.close()
        assert wait_baseline(srv, base) == base
    finally:
        ls.close()


def test_port_forward_refused_reports_error(srv):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = srv.url(kind="portforward", pod_sandbox_id="p1", port=[port])
    ws = connect(url, proto="portforward.k8s.io")
    got = collect(ws, until=lambda s: len(s.get(1, b"")) > 2)
    assert b"connect to port" in got[1][2:]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_daemon_serves_streaming_address(make_daemon):
    """remorad opens the server on the configured address; unknown tokens are 404."""
    import http.client
    port = free_port()
    d = make_daemon(config=json.dumps({"streaming": {"address": f"127.0.0.1:{port}",
                                                     "token_ttl_seconds": 30}}))
    d.start()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/exec/AAAAAAAAAAAAAAAAAAAAAAAA")
    assert c.getresponse().status == 404
    c.close()
    assert f"streaming server listening on 127.0.0.1:{port}" in d.read_log()


@pytest.mark.parametrize("address", ["nonsense", "localhost:80", "127.0.0.1:99999"])
def test_daemon_refuses_bad_streaming_address(make_daemon, address):
    d = make_daemon(config=json.dumps({"streaming": {"address": address}}))
    d.start(wait=False)
    assert d.proc.wait(timeout=10) != 0
    assert "streaming.address" in d.read_log()


# ---- SPDY/3.1, as client-go (kubectl, crictl, kubelet's proxy) speaks it ----

import re
import struct
import zlib
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))


def spdy_dictionary():
    # The SPDY/3 header dictionary is protocol data; read the byte table the server uses.
    text = open(os.path.join(HERE, "..", "server", "streaming", "spdy_dict.inc")).read()
    data = bytes(int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})", text))
    assert len(data) == 1423
    return data


SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY = 1, 2, 3, 6, 7
FIN = 1


class Spdy:
    def __init__(self, url, protocols, method="POST"):
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=20)
        req = [f"{method} {u.path}{'?' + u.query if u.query else ''} HTTP/1.1",
               f"Host: {u.netloc}", "Connection: Upgrade", "Upgrade: SPDY/3.1"]
        req += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
        self.sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in
                        (l.split(":", 1) for l in lines[1:] if ":" in l)}
        d = spdy_dictionary()
        self.comp = zlib.compressobj(zdict=d)
        self.decomp = zlib.decompressobj(zdict=d)
        self.next_id = 1
        self.data, self.fin, self.replied, self.reset = {}, set(), set(), set()
        self.goaway = False

    def send_control(self, ftype, payload, flags=0):
        self.sock.sendall(struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload)) + payload)

    def syn(self, **headers):
        raw = struct.pack(">I", len(headers))
        for k, v in headers.items():
            raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        block = self.comp.compress(raw) + self.comp.flush(zlib.Z_SYNC_FLUSH)
        sid = self.next_id
        self.next_id += 2
        self.send_control(SYN_STREAM, struct.pack(">IIBB", sid, 0, 0, 0) + block)
        return sid

    def send(self, sid, data, fin=False):
        self.sock.sendall(struct.pack(">II", sid, (int(fin) << 24) | len(data)) + data)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        """Read one frame and record its effect; returns False at EOF."""
        try:
            hdr = self._read(8)
            length = struct.unpack(">I", hdr[4:])[0] & 0xFFFFFF
            flags = hdr[4]
            payload = self._read(length)
        except (EOFError, ConnectionResetError):
            return False
        if hdr[0] & 0x80:
            ftype = struct.unpack(">H", hdr[2:4])[0]
            if ftype == SYN_REPLY:
                sid = struct.unpack(">I", payload[:4])[0]
                raw = self.decomp.decompress(payload[4:])
                assert struct.unpack(">I", raw[:4])[0] == 0  # no headers expected
                self.replied.add(sid)
            elif ftype == RST_STREAM:
                self.reset.add(struct.unpack(">I", payload[:4])[0])
            elif ftype == GOAWAY:
                self.goaway = True
            elif ftype == PING:
                self.pinged = payload
        else:
            sid = struct.unpack(">I", hdr[:4])[0]
            self.data[sid] = self.data.get(sid, b"") + payload
            if flags & FIN:
                self.fin.add(sid)
        return True

    def until(self, cond):
        while not cond():
            if not self.frame():
                break
        return cond()

    def run(self):
        while self.frame():
            pass

    def close(self):
        self.sock.close()


def spdy_exec(srv, cmd, proto="v4.channel.k8s.io", stdin=False, stderr=False, tty=False):
    c = Spdy(srv.exec_url(cmd, stdin=stdin, stderr=stderr, tty=tty), [proto, "v1.channel.k8s.io"])
    assert c.status == 101, c.status
    assert c.headers["x-stream-protocol-version"] == proto
    ids = {"error": c.syn(streamtype="error")}
    if stdin:
        ids["stdin"] = c.syn(streamtype="stdin")
    ids["stdout"] = c.syn(streamtype="stdout")
    if stderr:
        ids["stderr"] = c.syn(streamtype="stderr")
    if tty:
        ids["resize"] = c.syn(streamtype="resize")
    assert c.until(lambda: all(i in c.replied for i in ids.values()))
    return c, ids


def test_spdy_exec_echo(srv):
    c, ids = spdy_exec(srv, ["echo", "hello"])
    c.run()
    assert c.data[ids["stdout"]] == b"hello\n"
    assert json.loads(c.data[ids["error"]]) == {"metadata": {}, "status": "Success"}
    assert {ids["stdout"], ids["error"]} <= c.fin and c.goaway


def test_spdy_exec_exit_code(srv):
    c, ids = spdy_exec(srv, ["sh", "-c", "echo err >&2; exit 3"], stderr=True)
    c.run()
    assert c.data[ids["stderr"]] == b"err\n"
    st = json.loads(c.data[ids["error"]])
    assert st["status"] == "Failure" and st["reason"] == "NonZeroExitCode"
    assert st["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    # v2 carries a failure as plain text, success as nothing.
    c, ids = spdy_exec(srv, ["sh", "-c", "exit 7"], proto="v2.channel.k8s.io")
    c.run()
    assert c.data[ids["error"]] == b"command terminated with exit code 7"


def test_spdy_exec_stdin_eof(srv):
    c, ids = spdy_exec(srv, ["cat"], stdin=True)
    c.send(ids["stdin"], b"abc\n")
    c.send(ids["stdin"], b"def\n", fin=True)  # FIN on stdin is EOF
    c.run()
    assert c.data[ids["stdout"]] == b"abc\ndef\n"
    assert json.loads(c.data[ids["error"]])["status"] == "Success"


def test_spdy_exec_tty_resize(srv):
    c, ids = spdy_exec(srv, ["sh", "-c", "read x; stty size"], stdin=True, tty=True)
    c.send(ids["resize"], json.dumps({"Width": 91, "Height": 17}).encode() + b"\n")
    c.send(ids["stdin"], b"go\n")
    c.run()
    assert b"17 91" in c.data[ids["stdout"]]
    assert json.loads(c.data[ids["error"]])["status"] == "Success"


def test_spdy_ping_and_unknown_stream(srv):
    c, ids = spdy_exec(srv, ["sh", "-c", "read x"], stdin=True)
    bogus = c.syn(streamtype="bogus")
    c.send_control(PING, struct.pack(">I", 9))
    assert c.until(lambda: bogus in c.reset and getattr(c, "pinged", None) == struct.pack(">I", 9))
    c.send(ids["stdin"], b"\n", fin=True)
    c.run()
    assert json.loads(c.data[ids["error"]])["status"] == "Success"


def test_spdy_refusals(srv):
    url = srv.exec_url(["true"])
    c = Spdy(url, ["v9.channel.k8s.io"])
    assert c.status == 403  # nothing we speak; the token is spent all the same
    c.close()
    c = Spdy(url, ["v4.channel.k8s.io"])
    assert c.status == 404
    c.close()


def test_spdy_dropped_client_leaks_nothing(srv):
    c, ids = spdy_exec(srv, ["true"])
    c.run()
    c.close()
    base = settled(srv)
    c, ids = spdy_exec(srv, ["sleep", "1000"], stdin=True)
    c.send(ids["stdin"], b"partial")
    time.sleep(0.3)
    assert srv.counts()[2] == 1
    c.close()
    c, ids = spdy_exec(srv, ["yes"])  # never read
    time.sleep(1)
    c.close()
    c = Spdy(srv.exec_url(["true"]), ["v4.channel.k8s.io"])
    c.sock.sendall(b"\x80\x02\x00\x01\x00\x00\x00\x00")  # SPDY/2: a protocol error
    c.run()
    c.close()
    assert wait_baseline(srv, base) == base


def test_spdy_port_forward(srv):
    ls = echo_server()
    port = ls.getsockname()[1]
    try:
        base = settled(srv)
        c = Spdy(srv.url(kind="portforward", pod_sandbox_id="p1", port=[port]),
                 ["portforward.k8s.io"])
        assert c.status == 101 and c.headers["x-stream-protocol-version"] == "portforward.k8s.io"
        pairs = []
        for rid in ("0", "1"):  # two requests at once on one connection
            e = c.syn(streamtype="error", port=str(port), requestid=rid)
            d = c.syn(streamtype="data", port=str(port), requestid=rid)
            pairs.append((e, d))
        assert c.until(lambda: all(i in c.replied for p in pairs for i in p))
        for n, (e, d) in enumerate(pairs):
            c.send(d, f"hello {n}".encode())
        assert c.until(lambda: all(c.data.get(d) == f"hello {n}".encode()
                                   for n, (e, d) in enumerate(pairs)))
        # Closing the data stream ends that request: the target closes, and so does ours.
        e, d = pairs[0]
        c.send(d, b"", fin=True)
        assert c.until(lambda: d in c.fin and e in c.fin)
        assert c.data.get(e, b"") == b""
        c.close()
        assert wait_baseline(srv, base) == base
    finally:
        ls.close()


def test_spdy_port_forward_refused(srv):
    port = free_port()
    c = Spdy(srv.url(kind="portforward", pod_sandbox_id="p1", port=[port]),
             ["portforward.k8s.io"])
    e = c.syn(streamtype="error", port=str(port), requestid="0")
    d = c.syn(streamtype="data", port=str(port), requestid="0")
    assert c.until(lambda: e in c.fin)
    assert f"connect to port {port}".encode() in c.data[e]
    c.close()
