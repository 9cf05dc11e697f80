"""Test images and registries, all local: images are built here from Debian's
busybox-static, pushed over the Registry HTTP API v2 to Debian's docker-registry on a
loopback port, or served by a small in-process registry that can require Bearer or Basic
auth and misbehave on purpose."""
import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request

BUSYBOX = "/bin/busybox"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = {
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- building images ----

def tar_layer(entries):
    """entries: list of (name, kind, value): kind file (bytes), suid (bytes: a set-user-ID
    root executable), dir, symlink (target), hardlink (target), whiteout (the hidden name:
    makes .wh.<name>), opaque."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, value in entries:
            if kind == "whiteout":
                d, base = os.path.split(name)
                name, kind, value = os.path.join(d, ".wh." + base), "file", b""
            elif kind == "opaque":
                name, kind, value = os.path.join(name, ".wh..wh..opq"), "file", b""
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind in ("file", "suid"):
                info.size = len(value)
                info.mode = 0o755 if name.startswith("bin/") else 0o644
                if kind == "suid":
                    info.mode = 0o4755
                t.addfile(info, io.BytesIO(value))
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, value, 0o777
                t.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, value
                t.addfile(info)
    return buf.getvalue()


def busybox_layer(applets=("sh", "ls", "cat", "echo", "sleep", "id", "env", "pwd", "true",
                           "false", "wc", "grep", "touch", "mkdir", "hostname", "ps", "kill",
                           "head", "seq", "nc", "ping", "ip", "wget", "printf", "date",
                           "dd", "cp", "rm", "test", "stat", "tr", "yes")):
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    entries = [("bin", "dir", None), ("bin/busybox", "file", bb),
               ("etc", "dir", None),
               ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n"
                                      b"app:x:1000:1000::/home/app:/bin/sh\n"
                                      b"nobody:x:65534:65534::/nonexistent:/bin/false\n"),
               ("etc/group", "file", b"root:x:0:\napp:x:1000:\nstaff:x:50:app\n"
                                     b"nogroup:x:65534:\n"),
               ("tmp", "dir", None), ("root", "dir", None), ("home/app", "dir", None)]
    entries += [("bin/" + a, "symlink", "busybox") for a in applets]
    return tar_layer(entries)


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout
    return data


class Image:
    """An image ready to push: blobs by digest and a manifest (maybe behind an index)."""

    def __init__(self, layers, compression="gzip", flavor="oci", config=None, arch="amd64"):
        self.blobs = {}
        self.layer_descs = []
        diff_ids = []
        for i, raw in enumerate(layers):
            how = compression[i] if isinstance(compression, (list, tuple)) else compression
            blob = compress(raw, how)
            self.blobs[digest(blob)] = blob
            diff_ids.append(digest(raw))
            self.layer_descs.append({"mediaType": LAYER_TYPES[(flavor, how)],
                                     "digest": digest(blob), "size": len(blob)})
        cfg = {"architecture": arch, "os": "linux",
               "config": config if config is not None else {"Cmd": ["/bin/sh"],
                                                           "Env": ["PATH=/bin"]},
               "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        self.config = json.dumps(cfg, sort_keys=True).encode()
        self.blobs[digest(self.config)] = self.config
        self.id = digest(self.config)
        manifest = {"schemaVersion": 2,
                    "mediaType": OCI_MANIFEST if flavor == "oci" else DOCKER_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG if flavor == "oci" else DOCKER_CONFIG,
                               "digest": self.id, "size": len(self.config)},
                    "layers": self.layer_descs}
        self.manifest = json.dumps(manifest).encode()
        self.media_type = manifest["mediaType"]
        self.digest = digest(self.manifest)


def index_of(images, flavor="oci"):
    """A manifest list over several platform images: [(Image, arch)]."""
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX if flavor == "oci" else DOCKER_LIST,
           "manifests": [{"mediaType": img.media_type, "digest": img.digest,
                          "size": len(img.manifest),
                          "platform": {"os": "linux", "architecture": arch}}
                         for img, arch in images]}
    body = json.dumps(doc).encode()
    return body, doc["mediaType"]


# ---- Debian's docker-registry ----

class DockerRegistry:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="remora-registry-")
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                    "    rootdirectory: %s/data\n  delete:\n    enabled: true\n"
                    "http:\n  addr: 127.0.0.1:%d\n" % (self.dir, self.port))
        self.log = open(os.path.join(self.dir, "registry.log"), "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen("http://%s/v2/" % self.host, timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not start")

    def _put_blob(self, repo, data):
        d = digest(data)
        url = "http://%s/v2/%s/blobs/uploads/" % (self.host, repo)
        r = urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""))
        loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = "http://%s%s" % (self.host, loc)
        sep = "&" if "?" in loc else "?"
        req = urllib.request.Request(loc + sep + "digest=" + d, data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(req).read()

    def put_manifest(self, repo, ref, body, media_type):
        req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (self.host, repo, ref),
                                     data=body, method="PUT",
                                     headers={"Content-Type": media_type})
        urllib.request.urlopen(req).read()

    def push(self, repo, tag, image):
        for data in image.blobs.values():
            self._put_blob(repo, data)
        self.put_manifest(repo, tag or image.digest, image.manifest, image.media_type)
        return "%s/%s:%s" % (self.host, repo, tag) if tag else \
            "%s/%s@%s" % (self.host, repo, image.digest)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- a small registry that can require auth and misbehave ----

class FakeRegistry:
    """Serves manifests and blobs from dicts. auth: None, ("basic", user, pw) or
    ("bearer", user, pw) (with its own token endpoint at /token)."""

    def __init__(self, auth=None):
        self.manifests = {}  # (repo, ref) -> (body, media type)
        self.blobs = {}      # digest -> bytes (served as is, even if wrong)
        self.auth = auth
        self.token = "tok-" + base64.b16encode(os.urandom(8)).decode()
        self.requests = []
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _deny(self):
                self.send_response(401)
                if reg.auth[0] == "basic":
                    self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                else:
                    self.send_header("WWW-Authenticate",
                                     'Bearer realm="http://%s/token",service="fake",'
                                     'scope="repository:x:pull"' % reg.host)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _authorized(self):
                if reg.auth is None:
                    return True
                got = self.headers.get("Authorization", "")
                kind, user, pw = reg.auth
                basic = "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()
                if kind == "basic":
                    return got == basic
                return got == "Bearer " + reg.token

            def _send(self, code, body=b"", ctype="application/octet-stream"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                reg.requests.append(self.path)
                if self.path.startswith("/token"):
                    kind, user, pw = reg.auth
                    basic = "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()
                    if self.headers.get("Authorization", "") != basic:
                        return self._send(401)
                    return self._send(200, json.dumps({"token": reg.token}).encode(),
                                      "application/json")
                if not self._authorized():
                    return self._deny()
                parts = self.path.split("/")
                if self.path == "/v2/":
                    return self._send(200, b"{}", "application/json")
                if len(parts) >= 5 and parts[-2] == "manifests":
                    repo = "/".join(parts[2:-2])
                    m = reg.manifests.get((repo, parts[-1]))
                    if m is None:
                        return self._send(404, b"{}", "application/json")
                    return self._send(200, m[0], m[1])
                if len(parts) >= 5 and parts[-2] == "blobs":
                    b = reg.blobs.get(parts[-1])
                    if b is None:
                        return self._send(404)
                    return self._send(200, b)
                return self._send(404)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo, tag, image, media_type=None):
        self.blobs.update(image.blobs)
        self.manifests[(repo, image.digest)] = (image.manifest, media_type or image.media_type)
        if tag:
            self.manifests[(repo, tag)] = (image.manifest, media_type or image.media_type)
        return "%s/%s:%s" % (self.host, repo, tag)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
