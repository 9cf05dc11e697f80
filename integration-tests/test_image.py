"""ImageService against real registries on loopback: Debian's docker-registry, and an
in-process one for auth and misbehaviour. Every failed pull must leave no image, no
layer and no temp file behind."""
import json
import os
import stat
import subprocess

import grpc
import pytest

import registry as R


@pytest.fixture(scope="module")
def dreg():
    r = R.DockerRegistry()
    yield r
    r.stop()


@pytest.fixture
def fake():
    made = []

    def make(auth=None):
        f = R.FakeRegistry(auth)
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


def spec(cri, ref):
    return cri.message("ImageSpec", image=ref)


def pull(cri, ref, auth=None, timeout=60):
    kw = {"image": spec(cri, ref)}
    if auth:
        kw["auth"] = cri.message("AuthConfig", **auth)
    return cri.call("PullImage", timeout=timeout, **kw).image_ref


def images(cri):
    return list(cri.call("ListImages").images)


def layers_dir(daemon):
    return os.path.join(daemon.root, "images", "layers")


def store_is_clean(daemon):
    layers = sorted(os.listdir(layers_dir(daemon)))
    tmp = os.listdir(os.path.join(daemon.root, "images", "tmp"))
    recs = os.path.join(daemon.root, "images") and os.listdir(os.path.join(daemon.root, "images"))
    return layers == ["empty"] and tmp == [] and "records" not in recs


def expect_pull_error(cri, daemon, ref, code, *needles, auth=None):
    with pytest.raises(grpc.RpcError) as e:
        pull(cri, ref, auth=auth)
    assert e.value.code() == code, e.value.details()
    for n in needles:
        assert n in e.value.details(), e.value.details()
    assert images(cri) == []
    assert store_is_clean(daemon), os.listdir(layers_dir(daemon))
    return e.value.details()


def test_pull_list_status_remove(daemon, cri, dreg):
    img = R.Image([R.busybox_layer()], config={"Cmd": ["/bin/sh"], "User": "app",
                                                "Env": ["PATH=/bin"]})
    ref = dreg.push("test/busybox", "v1", img)
    assert pull(cri, ref) == img.id
    (im,) = images(cri)
    assert im.id == img.id
    assert list(im.repo_tags) == [ref]
    assert list(im.repo_digests) == ["%s/test/busybox@%s" % (dreg.host, img.digest)]
    assert im.username == "app" and im.size > 1000000
    layer = os.path.join(layers_dir(daemon), img_chain(cri, ref)[0][7:])
    st = os.lstat(os.path.join(layer, "bin", "busybox"))
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o111
    assert os.readlink(os.path.join(layer, "bin", "sh")) == "busybox"

    # Status by tag, by ID, by short ID and by digest; an unknown image is no error.
    for name in (ref, img.id, img.id[7:19], "%s/test/busybox@%s" % (dreg.host, img.digest)):
        assert cri.call("ImageStatus", image=spec(cri, name)).image.id == img.id, name
    assert not cri.call("ImageStatus", image=spec(cri, "nothing/here:1")).HasField("image")
    fs = cri.call("ImageFsInfo").image_filesystems[0]
    assert fs.used_bytes.value > 1000000 and fs.inodes_used.value > 10

    cri.call("RemoveImage", image=spec(cri, ref))
    assert images(cri) == []
    assert store_is_clean(daemon)
    cri.call("RemoveImage", image=spec(cri, ref))  # gone is fine


def img_chain(cri, ref):
    info = cri.call("ImageStatus", image=spec(cri, ref), verbose=True).info["info"]
    return json.loads(info)["chainIDs"]


def test_whiteouts_and_opaque_dirs_become_overlay_form(daemon, cri, dreg, tmp_path):
    base = R.tar_layer([("a", "dir", None), ("a/gone", "file", b"x"), ("a/kept", "file", b"k"),
                        ("d", "dir", None), ("d/old", "file", b"o")])
    top = R.tar_layer([("a/gone", "whiteout", None), ("d", "opaque", None),
                       ("d/new", "file", b"n"), ("a/mine", "file", b"m"),
                       ("a/link", "hardlink", "a/mine")])
    img = R.Image([base, top])
    ref = dreg.push("test/whiteouts", "v1", img)
    pull(cri, ref)
    chain = img_chain(cri, ref)
    top_dir = os.path.join(layers_dir(daemon), chain[1][7:])
    wh = os.lstat(os.path.join(top_dir, "a", "gone"))
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(os.path.join(top_dir, "d"), "trusted.overlay.opaque") == b"y"
    assert not os.path.exists(os.path.join(top_dir, "d", ".wh..wh..opq"))
    # What a container would see through overlayfs.
    lower = ":".join(os.path.join(layers_dir(daemon), c[7:]) for c in reversed(chain))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=" + lower, str(mnt)],
                   check=True)
    try:
        assert sorted(os.listdir(mnt / "a")) == ["kept", "link", "mine"]
        assert os.stat(mnt / "a" / "link").st_ino == os.stat(mnt / "a" / "mine").st_ino
        assert sorted(os.listdir(mnt / "d")) == ["new"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("compression,flavor", [("gzip", "oci"), ("zstd", "oci"),
                                                ("none", "oci"), ("gzip", "docker")])
def test_compressions_and_media_types(daemon, cri, dreg, compression, flavor):
    img = R.Image([R.busybox_layer(), R.tar_layer([("etc/motd", "file", b"hi\n")])],
                  compression=compression, flavor=flavor)
    ref = dreg.push("test/%s-%s" % (flavor, compression), "v1", img)
    assert pull(cri, ref) == img.id
    top = os.path.join(layers_dir(daemon), img_chain(cri, ref)[1][7:], "etc", "motd")
    with open(top) as f:
        assert f.read() == "hi\n"


def test_manifest_list_picks_this_platform(daemon, cri, dreg):
    mine = R.Image([R.busybox_layer()], arch="amd64")
    other = R.Image([R.tar_layer([("arm", "file", b"arm")])], arch="arm64")
    for im in (mine, other):
        dreg.push("test/multi", None, im)
    body, mt = R.index_of([(other, "arm64"), (mine, "amd64")])
    dreg.put_manifest("test/multi", "latest", body, mt)
    assert pull(cri, "%s/test/multi:latest" % dreg.host) == mine.id
    (im,) = images(cri)
    assert list(im.repo_digests) == ["%s/test/multi@%s" % (dreg.host, R.digest(body))]


def test_tags_digests_and_sharing(daemon, cri, dreg):
    img = R.Image([R.busybox_layer()])
    refs = [dreg.push("test/tags", t, img) for t in ("a", "b", "c")]
    for r in refs:
        assert pull(cri, r) == img.id
    (im,) = images(cri)
    assert sorted(im.repo_tags) == sorted(refs)
    by_digest = "%s/test/tags@%s" % (dreg.host, img.digest)
    assert pull(cri, by_digest) == img.id
    # Three different images sharing the base layer: one copy of it on disk.
    others = [R.Image([R.busybox_layer(), R.tar_layer([("n", "file", str(i).encode())])])
              for i in range(3)]
    for i, o in enumerate(others):
        pull(cri, dreg.push("test/other%d" % i, "v1", o))
    assert len(images(cri)) == 4
    assert len(os.listdir(layers_dir(daemon))) == 1 + 1 + 3  # empty, base, three tops
    # Moving a tag: pushing a new image under "a" and pulling it takes "a" from the old.
    new = R.Image([R.tar_layer([("x", "file", b"x")])])
    pull(cri, dreg.push("test/tags", "a", new))
    old = [i for i in images(cri) if i.id == img.id][0]
    assert refs[0] not in old.repo_tags
    for i in images(cri):
        cri.call("RemoveImage", image=spec(cri, i.id))
    assert store_is_clean(daemon)


def test_mirror_is_tried_first(make_daemon, dreg):
    img = R.Image([R.busybox_layer()])
    dreg.push("library/mirrored", "v1", img)
    cfg = {"image": {"mirrors": {"docker.io": ["http://127.0.0.1:1",
                                               "http://%s" % dreg.host]}}}
    d = make_daemon(config=json.dumps(cfg)).start()
    c = d.client()
    assert pull(c, "mirrored:v1") == img.id
    (im,) = images(c)
    assert list(im.repo_tags) == ["docker.io/library/mirrored:v1"]
    assert "trying the next endpoint" in d.read_log()
    c.close()


def test_bearer_token_auth(daemon, cri, fake):
    f = fake(("bearer", "alice", "s3cret"))
    img = R.Image([R.busybox_layer()])
    ref = f.add("private/app", "v1", img)
    expect_pull_error(cri, daemon, ref, grpc.StatusCode.UNAUTHENTICATED)
    assert pull(cri, ref, auth={"username": "alice", "password": "s3cret"}) == img.id
    assert any(p.startswith("/token?service=fake&scope=") for p in f.requests)


def test_basic_auth_and_auth_field(daemon, cri, fake):
    f = fake(("basic", "bob", "pw"))
    img = R.Image([R.busybox_layer()])
    ref = f.add("private/basic", "v1", img)
    expect_pull_error(cri, daemon, ref, grpc.StatusCode.UNAUTHENTICATED)
    import base64
    assert pull(cri, ref, auth={"auth": base64.b64encode(b"bob:pw").decode()}) == img.id


def test_digest_mismatch_leaves_nothing(daemon, cri, fake):
    f = fake()
    img = R.Image([R.busybox_layer()])
    ref = f.add("bad/digest", "v1", img)
    layer = img.layer_descs[0]["digest"]
    f.blobs[layer] = f.blobs[layer][:-10] + b"0123456789"
    expect_pull_error(cri, daemon, ref, grpc.StatusCode.DATA_LOSS, layer)


def test_escaping_entries_are_refused(daemon, cri, fake):
    f = fake()
    cases = [
        ([("../evil", "file", b"x")], "../evil"),
        ([("etc", "dir", None), ("etc/up", "symlink", "../../../../etc/shadow")], "etc/up"),
        ([("/abs", "file", b"x")], "/abs"),
        ([("link", "symlink", "/etc"), ("link/passwd", "file", b"x")], "link/passwd"),
        ([("h", "hardlink", "../../etc/passwd")], "h"),
    ]
    for i, (entries, needle) in enumerate(cases):
        img = R.Image([R.tar_layer(entries)], compression="none")
        ref = f.add("bad/escape%d" % i, "v1", img)
        expect_pull_error(cri, daemon, ref, grpc.StatusCode.INVALID_ARGUMENT, needle)
    assert not os.path.exists("/evil")


def test_bad_manifests(daemon, cri, fake):
    f = fake()
    img = R.Image([R.busybox_layer()])
    big = R.Image([R.busybox_layer()])
    f.add("bad/big", "v1", big)
    f.manifests[("bad/big", "v1")] = (b" " * (5 << 20) + big.manifest, R.OCI_MANIFEST)
    expect_pull_error(cri, daemon, "%s/bad/big:v1" % f.host, grpc.StatusCode.INVALID_ARGUMENT,
                      "larger than")
    f.add("bad/type", "v1", img, media_type="application/vnd.example.unknown+json")
    expect_pull_error(cri, daemon, "%s/bad/type:v1" % f.host, grpc.StatusCode.INVALID_ARGUMENT,
                      "application/vnd.example.unknown+json")
    expect_pull_error(cri, daemon, "%s/bad/missing:v1" % f.host, grpc.StatusCode.NOT_FOUND,
                      "404")
    expect_pull_error(cri, daemon, "127.0.0.1:1/nobody/home:v1", grpc.StatusCode.UNAVAILABLE,
                      "127.0.0.1:1")


@pytest.mark.parametrize("ref", ["UPPER/case", "a b", "x:", "x@sha256:1234", "host:99999x/a",
                                 "a//b", ""])
def test_bad_references(cri, ref):
    with pytest.raises(grpc.RpcError) as e:
        pull(cri, ref)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("\"%s\"" % ref in e.value.details()) or ref == ""


def test_images_survive_restart(make_daemon, dreg):
    d = make_daemon().start()
    c = d.client()
    img = R.Image([R.busybox_layer()])
    ref = dreg.push("test/restart", "v1", img)
    pull(c, ref)
    assert d.stop() == 0
    c.close()
    d2 = make_daemon(base=d.base).start()
    c2 = d2.client()
    (im,) = images(c2)
    assert im.id == img.id and list(im.repo_tags) == [ref]
    c2.close()
