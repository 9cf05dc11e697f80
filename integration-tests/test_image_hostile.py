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
