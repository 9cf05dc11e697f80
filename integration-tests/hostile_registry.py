"""A registry on loopback run by an attacker: it serves whatever manifests, indexes,
configs and blobs a test hands it, byte for byte, under any path, and can lie about
sizes, trickle a body, redirect, and record what each request carried (Authorization
headers included), so tests can check what remorad sent and what it refused."""
import base64
import http.server
import json
import threading
import time

import registry as R


def desc(media_type, data=None, digest=None, size=None):
    """A descriptor; digest and size come from data unless given. Pass the string "-"
    for a field to leave it out."""
    d = {"mediaType": media_type,
         "digest": digest if digest is not None else R.digest(data),
         "size": size if size is not None else len(data)}
    return {k: v for k, v in d.items() if v != "-"}


def config_blob(diff_ids, cmd=("/bin/sh",)):
    cfg = {"architecture": "amd64", "os": "linux",
           "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"]},
           "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}}
    return json.dumps(cfg, sort_keys=True).encode()


def manifest(config_desc, layer_descs, media_type=R.OCI_MANIFEST):
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "config": config_desc,
                       "layers": layer_descs}).encode()


class HostileRegistry:
    def __init__(self, basic=None, bind="127.0.0.1", challenge=None):
        self.basic = basic    # (user, password): every /v2/ request must carry them
        self.challenge = challenge  # a WWW-Authenticate value: every /v2/ request gets a 401
        self.manifests = {}   # (repo, ref) -> (body, media type)
        self.blobs = {}       # whatever follows /blobs/ -> bytes
        self.trickle = {}     # blob key -> (first chunk size, seconds between 1 KiB chunks)
        self.redirects = {}   # blob key -> URL
        self.requests = []    # (path, {header: value})
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", ctype="application/octet-stream", length=None,
                      extra=()):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                return body

            def do_GET(self):
                reg.requests.append((self.path, dict(self.headers.items())))
                try:
                    self._get()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _get(self):
                path = self.path
                if reg.challenge and path.startswith("/v2/"):
                    self._send(401, b"", extra=[("WWW-Authenticate", reg.challenge)])
                    return
                if reg.basic:
                    want = "Basic " + base64.b64encode(("%s:%s" % reg.basic).encode()).decode()
                    if self.headers.get("Authorization") != want:
                        self._send(401, b"", extra=[("WWW-Authenticate", 'Basic realm="x"')])
                        return
                if path == "/v2/":
                    self.wfile.write(self._send(200, b"{}", "application/json"))
                    return
                if "/manifests/" in path:
                    repo, ref = path[len("/v2/"):].split("/manifests/", 1)
                    m = reg.manifests.get((repo, ref))
                    if m is None:
                        self.wfile.write(self._send(404, b"{}", "application/json"))
                        return
                    self.wfile.write(self._send(200, m[0], m[1]))
                    return
                if "/blobs/" in path:
                    key = path.split("/blobs/", 1)[1]
                    if key in reg.redirects:
                        self._send(307, b"", extra=[("Location", reg.redirects[key])])
                        return
                    b = reg.blobs.get(key)
                    if b is None:
                        self.wfile.write(self._send(404))
                        return
                    if key in reg.trickle:
                        first, pause = reg.trickle[key]
                        self._send(200, length=len(b))
                        self.wfile.write(b[:first])
                        self.wfile.flush()
                        for i in range(first, len(b), 1024):
                            time.sleep(pause)
                            self.wfile.write(b[i:i + 1024])
                            self.wfile.flush()
                        return
                    self.wfile.write(self._send(200, b))
                    return
                self.wfile.write(self._send(404))

        self.server = http.server.ThreadingHTTPServer((bind, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = "%s:%d" % (bind, self.port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def blob(self, data, key=None):
        key = key or R.digest(data)
        self.blobs[key] = data
        return key

    def serve(self, repo, tag, body, media_type=R.OCI_MANIFEST):
        """Serve a manifest (or index) body as repo:tag and by its digest."""
        self.manifests[(repo, tag)] = (body, media_type)
        self.manifests[(repo, R.digest(body))] = (body, media_type)
        return "%s/%s:%s" % (self.host, repo, tag)

    def image(self, repo, tag, layers, compression="gzip", tweak=None):
        """A well-formed image of raw tar layers; tweak(manifest dict) may spoil it."""
        descs, diff_ids = [], []
        for raw in layers:
            blob = R.compress(raw, compression)
            self.blob(blob)
            diff_ids.append(R.digest(raw))
            descs.append(desc(R.LAYER_TYPES[("oci", compression)], blob))
        cfg = config_blob(diff_ids)
        self.blob(cfg)
        doc = json.loads(manifest(desc(R.OCI_CONFIG, cfg), descs))
        if tweak:
            tweak(doc)
        return self.serve(repo, tag, json.dumps(doc).encode()), R.digest(cfg)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
