"""PullImage against a registry run by an attacker (hostile_registry.py). Every case
must fail with a clear error naming the field or limit, leave canary files outside the
store untouched, leave the image store exactly as it was, and leave remorad answering."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading

import grpc
import pytest

import hostile_registry as H
import registry as R


@pytest.fixture
def hostile():
    h = H.HostileRegistry()
    yield h
    h.stop()


@pytest.fixture
def canaries():
    """Files outside the store an attacker would like to delete, overwrite or read."""
    d = tempfile.mkdtemp(prefix="remora-canary-", dir="/tmp")
    for name in ("victim", "passwd"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(b"canary " + name.encode() + b"\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def tree(path):
    """Every name under path with its type, size and content digest."""
    out = {}
    for top, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(top, n)
            st = os.lstat(p)
            h = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, h)
    return out


def store(daemon):
    return tree(os.path.join(daemon.root, "images"))


def pull(cri, ref, timeout=60, auth=None):
    kw = {"image": cri.message("ImageSpec", image=ref)}
    if auth:
        kw["auth"] = cri.message("AuthConfig", **auth)
    return cri.call("PullImage", timeout=timeout, **kw).image_ref


def refused(daemon, cri, canaries, ref, code, *needles):
    """Pull ref: it must fail with code and every needle in the message, and change
    nothing in the store or among the canaries."""
    before, canaries_before = store(daemon), tree(canaries)
    with pytest.raises(grpc.RpcError) as e:
        pull(cri, ref)
    msg = e.value.details()
    assert tree(canaries) == canaries_before, msg
    assert store(daemon) == before, msg
    assert e.value.code() == code, msg
    for n in needles:
        assert n in msg, msg
    assert cri.call("Version").runtime_name == "remora"
    assert list(cri.call("ListImages").images) == []
    return msg


def rel_to(daemon, target, sub="blobs"):
    """The "../../.." path from the store's subdirectory to target."""
    return os.path.relpath(target, os.path.join(daemon.root, "images", sub))


def test_layer_digest_path_traversal(daemon, cri, hostile, canaries):
    victim = os.path.join(canaries, "victim")
    evil = "sha256:" + rel_to(daemon, victim)

    def tweak(m):
        m["layers"][0]["digest"] = evil

    ref, _ = hostile.image("evil/traverse", "v1", [R.tar_layer([("f", "file", b"x")])],
                           tweak=tweak)
    refused(daemon, cri, canaries, ref, grpc.StatusCode.INVALID_ARGUMENT,
            "manifest.layers[0].digest")
    assert os.path.exists(victim)


# ---- descriptors and digests ----

def drop(field):
    def tweak(m):
        del m["layers"][0][field]
    return tweak


def set_layer(field, value):
    def tweak(m):
        m["layers"][0][field] = value
    return tweak


def set_config(field, value):
    def tweak(m):
        if value is None:
            del m["config"][field]
        else:
            m["config"][field] = value
    return tweak


HEX = "ab" * 32
BAD_DESCRIPTORS = [
    ("layer-no-digest", drop("digest"), "manifest.layers[0].digest is missing"),
    ("layer-no-mediatype", drop("mediaType"), "manifest.layers[0].mediaType is missing"),
    ("layer-no-size", drop("size"), "manifest.layers[0].size is missing"),
    ("layer-size-string", set_layer("size", "12"), "manifest.layers[0].size is missing"),
    ("layer-negative-size", set_layer("size", -1), "manifest.layers[0].size"),
    ("layer-digest-upper", set_layer("digest", "sha256:" + HEX.upper()),
     "manifest.layers[0].digest"),
    ("layer-digest-short", set_layer("digest", "sha256:" + HEX[:-1]), "manifest.layers[0].digest"),
    ("layer-digest-sha512", set_layer("digest", "sha512:" + "ab" * 64),
     "manifest.layers[0].digest"),
    ("layer-digest-slash", set_layer("digest", "sha256:" + HEX[:-2] + "/x"),
     "manifest.layers[0].digest"),
    ("layer-digest-not-string", set_layer("digest", 7), "manifest.layers[0].digest is missing"),
    ("layer-unknown-type", set_layer("mediaType", "application/x-evil"),
     "manifest.layers[0].mediaType"),
    ("config-no-size", set_config("size", None), "manifest.config.size is missing"),
    ("config-no-digest", set_config("digest", None), "manifest.config.digest is missing"),
    ("config-no-mediatype", set_config("mediaType", None), "manifest.config.mediaType is missing"),
    ("config-too-big", set_config("size", 9 << 20), "image.max_config_bytes"),
]


@pytest.mark.parametrize("name,tweak,needle", BAD_DESCRIPTORS, ids=[c[0] for c in BAD_DESCRIPTORS])
def test_bad_descriptors(daemon, cri, hostile, canaries, name, tweak, needle):
    ref, _ = hostile.image("evil/" + name, "v1", [R.tar_layer([("f", "file", b"x")])],
                           tweak=tweak)
    refused(daemon, cri, canaries, ref, grpc.StatusCode.INVALID_ARGUMENT, needle)


def test_config_digest_path_traversal(daemon, cri, hostile, canaries):
    victim = os.path.join(canaries, "victim")
    ref, _ = hostile.image("evil/cfg", "v1", [R.tar_layer([("f", "file", b"x")])],
                           tweak=set_config("digest", "sha256:" + rel_to(daemon, victim)))
    refused(daemon, cri, canaries, ref, grpc.StatusCode.INVALID_ARGUMENT,
            "manifest.config.digest")


def test_diff_id_and_chain_traversal(daemon, cri, hostile, canaries):
    """A config whose diff_ids would make a layer directory outside the store."""
    raw = R.tar_layer([("f", "file", b"x")])
    blob = gzip.compress(raw, mtime=0)
    hostile.blob(blob)
    cfg = H.config_blob(["sha256:" + rel_to(daemon, os.path.join(canaries, "passwd"), "layers")])
    hostile.blob(cfg)
    body = H.manifest(H.desc(R.OCI_CONFIG, cfg), [H.desc(R.LAYER_TYPES[("oci", "gzip")], blob)])
    ref = hostile.serve("evil/diffid", "v1", body)
    refused(daemon, cri, canaries, ref, grpc.StatusCode.INVALID_ARGUMENT,
            "config.rootfs.diff_ids[0]")


def test_index_entry_digest(daemon, cri, hostile, canaries):
    good = H.desc(R.OCI_MANIFEST, b"{}")
    bad = dict(good, digest="sha256:../../../etc/passwd")
    for i, entries in enumerate([[good, bad], [dict(good, size="x")], [{"digest": good["digest"]}]]):
        for e in entries:
            e["platform"] = {"os": "linux", "architecture": "amd64"}
        body = json.dumps({"schemaVersion": 2, "mediaType": R.OCI_INDEX,
                           "manifests": entries}).encode()
        ref = hostile.serve("evil/index%d" % i, "v1", body, R.OCI_INDEX)
        refused(daemon, cri, canaries, ref, grpc.StatusCode.INVALID_ARGUMENT,
                "index.manifests[%d]" % (1 if i == 0 else 0))


@pytest.mark.parametrize("digest", ["sha256:../../../../tmp/x", "sha256:" + HEX.upper(),
                                    "sha512:" + "ab" * 64, "sha256:" + HEX + "/.."])
def test_name_at_digest_refused(daemon, cri, hostile, canaries, digest):
    refused(daemon, cri, canaries, "%s/evil/ref@%s" % (hostile.host, digest),
            grpc.StatusCode.INVALID_ARGUMENT, "digest")
    assert not any("/manifests/" in p for p, _ in hostile.requests)


def test_too_many_layers(daemon, cri, hostile, canaries):
    layers = [R.tar_layer([("f%d" % i, "file", b"x")]) for i in range(129)]
    ref, _ = hostile.image("evil/many", "v1", layers)
    refused(daemon, cri, canaries, ref, grpc.StatusCode.INVALID_ARGUMENT,
            "manifest.layers has 129 entries")


# ---- sizes ----

def test_blob_longer_than_declared_is_cut_off(daemon, cri, hostile, canaries):
    raw = R.tar_layer([("f", "file", b"x")])
    blob = gzip.compress(raw, mtime=0)
    # The registry serves 64 MiB under the descriptor of a small blob.
    ref, _ = hostile.image("evil/long", "v1", [raw])
    hostile.blobs[R.digest(blob)] = blob + b"\0" * (64 << 20)
    msg = refused(daemon, cri, canaries, ref, grpc.StatusCode.DATA_LOSS,
                  "manifest.layers[0].size", "cut off")
    assert str(len(blob)) in msg


def test_config_longer_than_declared_is_cut_off(daemon, cri, hostile, canaries):
    ref, cfg = hostile.image("evil/longcfg", "v1", [R.tar_layer([("f", "file", b"x")])])
    hostile.blobs[cfg] = hostile.blobs[cfg] + b" " * (32 << 20)
    refused(daemon, cri, canaries, ref, grpc.StatusCode.DATA_LOSS, "manifest.config.size",
            "cut off")


def test_manifest_over_the_cap(daemon, cri, hostile, canaries):
    body = b" " * (5 << 20) + H.manifest(H.desc(R.OCI_CONFIG, b"{}"), [])
    ref = hostile.serve("evil/bigmanifest", "v1", body)
    refused(daemon, cri, canaries, ref, grpc.StatusCode.INVALID_ARGUMENT, "larger than")


def bomb(size):
    """A gzip'd tar of one file of size zero bytes: a few KiB per GiB."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as gz:
        info = tarfile.TarInfo("zeros")
        info.size, info.mtime = size, 1700000000
        gz.write(info.tobuf(format=tarfile.PAX_FORMAT))
        chunk = b"\0" * (8 << 20)
        left = size
        while left:
            n = min(left, len(chunk))
            gz.write(chunk[:n])
            left -= n
        gz.write(b"\0" * (1024 + (-size) % 512))
    return out.getvalue()


@pytest.fixture(scope="module")
def gzip_bomb():
    return bomb(2 << 30)


class SmallFsDaemon:
    """A remorad whose root is a small tmpfs of its own (mounted here, unmounted after)."""

    def __init__(self, make_daemon, mount_opts, config):
        self.base = tempfile.mkdtemp(prefix="remora-it-", dir="/tmp")
        self.root = os.path.join(self.base, "root")
        os.mkdir(self.root)
        subprocess.run(["mount", "-t", "tmpfs", "-o", mount_opts, "tmpfs", self.root], check=True)
        self.daemon = make_daemon(base=self.base, config=json.dumps(config)).start()
        self.cri = self.daemon.client()

    def close(self):
        self.cri.close()
        self.daemon.stop()
        subprocess.run(["umount", "-l", self.root], check=False)


@pytest.mark.parametrize("reserve", [16 << 20, None], ids=["reserve-16MiB", "default-reserve"])
def test_gzip_bomb_stops_at_the_reserve(make_daemon, hostile, canaries, gzip_bomb, reserve):
    """2 GiB of zeros in about 2 MiB of gzip, unpacked into a 64 MiB filesystem: the pull
    stops with RESOURCE_EXHAUSTED before the free space goes below the reserve."""
    fs = SmallFsDaemon(make_daemon, "size=64m",
                       {"image": {"free_space_reserve": reserve}} if reserve else {})
    try:
        hostile.blob(gzip_bomb)
        cfgblob = H.config_blob([R.digest(b"never computed")])
        hostile.blob(cfgblob)
        body = H.manifest(H.desc(R.OCI_CONFIG, cfgblob),
                          [H.desc(R.LAYER_TYPES[("oci", "gzip")], gzip_bomb)])
        ref = hostile.serve("evil/bomb", "v1", body)
        assert len(gzip_bomb) < 3 << 20
        refused(fs.daemon, fs.cri, canaries, ref, grpc.StatusCode.RESOURCE_EXHAUSTED,
                "image.free_space_reserve")
        st = os.statvfs(fs.root)
        assert st.f_bavail * st.f_frsize > (reserve or (64 << 20) // 20)
    finally:
        fs.close()


def test_many_small_files_stop_before_the_inodes_run_out(make_daemon, hostile, canaries):
    fs = SmallFsDaemon(make_daemon, "size=64m,nr_inodes=3000", {})
    try:
        layer = R.tar_layer([("d%d" % i, "dir", None) for i in range(4000)])
        ref, _ = hostile.image("evil/inodes", "v1", [layer])
        refused(fs.daemon, fs.cri, canaries, ref, grpc.StatusCode.RESOURCE_EXHAUSTED, "inodes")
        assert os.statvfs(fs.root).f_favail > 3000 // 20
    finally:
        fs.close()


# ---- layer breakouts ----

def breakouts(canaries):
    victim = os.path.join(canaries, "victim")
    up = "../" * 12 + victim.lstrip("/")
    return [
        ("dotdot", [("f", "file", b"x"), (up, "file", b"owned")], up),
        ("absolute", [(victim, "file", b"owned")], victim),
        ("symlink-dir-then-file", [("s", "symlink", canaries), ("s/victim", "file", b"owned")],
         "s/victim"),
        ("symlink-relative-up", [("s", "symlink", "../" * 12 + canaries.lstrip("/"))], "s"),
        ("hardlink-out", [("h", "hardlink", victim)], "h"),
        ("hardlink-dotdot", [("h", "hardlink", up)], "h"),
        ("hardlink-through-symlink", [("s", "symlink", canaries), ("h", "hardlink", "s/victim")],
         "h"),
        ("whiteout-through-symlink", [("s", "symlink", canaries), ("s/victim", "whiteout", None)],
         "s/.wh.victim"),
        ("opaque-through-symlink", [("s", "symlink", canaries), ("s", "opaque", None)],
         "s/.wh..wh..opq"),
    ]


def test_layer_breakouts(daemon, cri, hostile, canaries):
    for name, entries, needle in breakouts(canaries):
        ref, _ = hostile.image("evil/" + name, "v1", [R.tar_layer(entries)], compression="none")
        refused(daemon, cri, canaries, ref, grpc.StatusCode.INVALID_ARGUMENT, needle)
    assert os.listdir(canaries) and open(os.path.join(canaries, "victim"), "rb").read() == \
        b"canary victim\n"


def test_failed_pulls_leave_nothing(daemon, cri, hostile, canaries):
    """After a good pull, nine hostile ones: the store holds exactly what it held."""
    good, _ = hostile.image("ok/app", "v1", [R.busybox_layer()])
    pull(cri, good)
    before = store(daemon)
    for i, (name, tweak, needle) in enumerate(BAD_DESCRIPTORS[:9]):
        # A good layer first, so something is fetched and unpacked before the failure.
        ref, _ = hostile.image("evil/leave%d" % i, "v1",
                               [R.tar_layer([("ok%d" % i, "file", b"x")]),
                                R.tar_layer([("f", "file", b"x")])],
                               tweak=lambda m: (m["layers"][1].pop("digest"), None))
        with pytest.raises(grpc.RpcError):
            pull(cri, ref)
    bad_layer = R.tar_layer([("h", "hardlink", "/etc/shadow")])
    ref, _ = hostile.image("evil/leave-late", "v1",
                           [R.tar_layer([("ok", "file", b"y")]), bad_layer], compression="none")
    with pytest.raises(grpc.RpcError):
        pull(cri, ref)
    assert store(daemon) == before
    assert len(list(cri.call("ListImages").images)) == 1


# ---- plain HTTP and credentials ----

def own_address():
    """An address of this host that is not loopback (traffic to it stays on the host)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True).stdout.split()
    return out[out.index("inet") + 1].split("/")[0] if "inet" in out else None


def auth_headers(reg):
    return [h.get("Authorization") for _, h in reg.requests if h.get("Authorization")]


def test_credentials_not_forwarded_on_redirect(daemon, cri, canaries):
    a = H.HostileRegistry(basic=("bob", "pw"))
    b = H.HostileRegistry()
    try:
        raw = R.tar_layer([("f", "file", b"x")])
        ref, _ = a.image("private/app", "v1", [raw])
        blob = R.digest(gzip.compress(raw, mtime=0))
        # b is the same machine under another name: another host to curl and to remorad.
        b.blob(a.blobs[blob])
        a.redirects[blob] = "http://localhost:%d/v2/private/app/blobs/%s" % (b.port, blob)
        assert pull(cri, ref, auth={"username": "bob", "password": "pw"})
        assert auth_headers(a) and not auth_headers(b)
        assert any("/blobs/" in p for p, _ in b.requests)
        assert "pw" not in daemon.read_log() and "Ym9iOnB3" not in daemon.read_log()
    finally:
        a.stop()
        b.stop()


def test_no_credentials_in_clear_to_a_host_not_insecure(make_daemon, canaries):
    addr = own_address()
    if addr is None:
        pytest.skip("this host has no non-loopback address")
    m = H.HostileRegistry(basic=("bob", "pw"), bind=addr)
    try:
        ref_path = "private/app"
        raw = R.tar_layer([("f", "file", b"x")])
        _, _ = m.image(ref_path, "v1", [raw])
        ref = "127.0.0.1:1/%s:v1" % ref_path
        auth = {"username": "bob", "password": "pw"}
        cfg = {"image": {"mirrors": {"127.0.0.1:1": ["http://" + m.host]}}}
        d = make_daemon(config=json.dumps(cfg)).start()
        c = d.client()
        with pytest.raises(grpc.RpcError):
            pull(c, ref, auth=auth)
        assert m.requests and not auth_headers(m)
        c.close()
        d.stop()
        # Listed as insecure, the same mirror gets them.
        cfg["image"]["insecure_registries"] = [m.host]
        d = make_daemon(config=json.dumps(cfg)).start()
        c = d.client()
        assert pull(c, ref, auth=auth)
        assert auth_headers(m)
        c.close()
    finally:
        m.stop()


def test_no_redirect_to_plain_http_elsewhere(daemon, cri, canaries):
    addr = own_address()
    if addr is None:
        pytest.skip("this host has no non-loopback address")
    a = H.HostileRegistry()
    b = H.HostileRegistry(bind=addr)
    try:
        raw = R.tar_layer([("f", "file", b"x")])
        ref, _ = a.image("app", "v1", [raw])
        blob = R.digest(gzip.compress(raw, mtime=0))
        a.redirects[blob] = "http://%s/v2/app/blobs/%s" % (b.host, blob)
        refused(daemon, cri, canaries, ref, grpc.StatusCode.UNAVAILABLE,
                "redirected to plain HTTP at %s" % b.host)
        assert b.requests == []
    finally:
        a.stop()
        b.stop()


def test_no_credentials_in_clear_to_a_token_realm(daemon, cri, canaries):
    """A loopback registry names a plain-HTTP token server elsewhere as its Bearer realm:
    remorad asks it for a token without the user's credentials."""
    addr = own_address()
    if addr is None:
        pytest.skip("this host has no non-loopback address")
    realm = H.HostileRegistry(bind=addr)
    reg = H.HostileRegistry(challenge='Bearer realm="http://%s/token",service="x"' % realm.host)
    try:
        ref = "%s/private/app:v1" % reg.host
        with pytest.raises(grpc.RpcError):
            pull(cri, ref, auth={"username": "bob", "password": "pw"})
        assert [p for p, _ in realm.requests if p.startswith("/token")]
        assert not auth_headers(realm)
    finally:
        realm.stop()
        reg.stop()


def test_concurrent_good_and_bad_pulls_sharing_a_layer(daemon, hostile, canaries):
    """Pulls that fail must not take away a layer a concurrent good pull shares."""
    base = R.busybox_layer()
    good, _ = hostile.image("ok/shared", "v1", [base, R.tar_layer([("g", "file", b"g")])])
    bad, _ = hostile.image("evil/shared", "v1", [base, R.tar_layer([("h", "hardlink", "/x")])])
    results = []

    def run(ref):
        c = daemon.client()
        try:
            results.append((ref, pull(c, ref)))
        except grpc.RpcError as e:
            results.append((ref, e.code()))
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(r,)) for r in [good, bad] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(str(code) for ref, code in results if ref == bad) == \
        ["StatusCode.INVALID_ARGUMENT"] * 3
    assert all(isinstance(code, str) for ref, code in results if ref == good)
    c = daemon.client()
    (im,) = c.call("ListImages").images
    info = json.loads(c.call("ImageStatus", image=c.message("ImageSpec", image=im.id),
                             verbose=True).info["info"])
    c.close()
    images = os.path.join(daemon.root, "images")
    assert sorted(os.listdir(os.path.join(images, "layers"))) == \
        sorted(["empty"] + [x[7:] for x in info["chainIDs"]])
    assert os.listdir(os.path.join(images, "blobs")) == [im.id[7:]]
    assert os.listdir(os.path.join(images, "tmp")) == []
    assert os.path.isfile(os.path.join(images, "layers", info["chainIDs"][0][7:], "bin",
                                       "busybox"))
