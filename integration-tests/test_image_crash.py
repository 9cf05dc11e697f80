"""kill -9 at every durable step of a pull (REMORA_CRASH_AT), then a restart: the store
holds nothing that no image record names (no temporary file, partial blob or layer), the
start-up log says what was removed, and the same pull works afterwards."""
import json
import os

import grpc
import pytest

import hostile_registry as H
import registry as R

POINTS = ["pull.blob_partial", "pull.blob_written", "pull.layer_partial",
          "pull.layer_unpacked", "pull.record_before", "pull.record_after"]


def pull(cri, ref):
    return cri.call("PullImage", timeout=60, image=cri.message("ImageSpec", image=ref)).image_ref


def expected_store(cri):
    """What the image records name: config blobs and layer directories."""
    blobs, layers = set(), {"empty"}
    for im in cri.call("ListImages").images:
        blobs.add(im.id[7:])
        info = cri.call("ImageStatus", image=cri.message("ImageSpec", image=im.id),
                        verbose=True).info["info"]
        layers.update(c[7:] for c in json.loads(info)["chainIDs"])
    return blobs, layers


def assert_consistent(daemon, cri):
    images = os.path.join(daemon.root, "images")
    blobs, layers = expected_store(cri)
    assert set(os.listdir(os.path.join(images, "blobs"))) == blobs
    assert set(os.listdir(os.path.join(images, "layers"))) == layers
    assert os.listdir(os.path.join(images, "tmp")) == []


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_pull_step(make_daemon, monkeypatch, point):
    reg = H.HostileRegistry()
    try:
        # A layer another image already has (it must survive the sweep), and two new ones.
        base = R.busybox_layer()
        keep, _ = reg.image("app/base", "v1", [base])
        ref, _ = reg.image("app/crash", "v1", [base, R.tar_layer([("a", "file", b"a" * 70000)]),
                                              R.tar_layer([("b", "file", b"b" * 70000)])])
        d = make_daemon().start()
        c = d.client()
        pull(c, keep)
        c.close()
        d.stop()

        monkeypatch.setenv("REMORA_CRASH_AT", point)
        d = make_daemon(base=d.base).start()
        monkeypatch.delenv("REMORA_CRASH_AT")
        c = d.client()
        with pytest.raises(grpc.RpcError) as e:
            pull(c, ref)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
        assert d.proc.wait(10) == -9
        assert "crash point %s reached" % point in d.read_log()
        c.close()
        d.stop()

        d = make_daemon(base=d.base).start()
        c = d.client()
        assert_consistent(d, c)
        if point not in ("pull.record_after",):
            assert "image store: removed" in d.read_log().split("crash point")[-1]
        assert pull(c, ref)
        assert_consistent(d, c)
        assert len(c.call("ListImages").images) == 2
        for im in c.call("ListImages").images:
            c.call("RemoveImage", image=c.message("ImageSpec", image=im.id))
        assert_consistent(d, c)
        assert os.listdir(os.path.join(d.root, "images", "blobs")) == []
        c.close()
    finally:
        reg.stop()


def test_startup_sweep_keeps_what_any_record_names(make_daemon):
    """The sweep reads every image record, whatever else it says: a record with flags this
    version does not know keeps its layer and config blob; a layer, blob and temporary
    file no record names are removed and logged. (A record flagged "removed" that no
    container uses is dropped at start with its layers: see test_client_rules.py.)"""
    d = make_daemon().start()
    d.stop()
    images = os.path.join(d.root, "images")
    kept_id, kept_chain = "1" * 64, "2" * 64
    with open(os.path.join(images, kept_id + ".json"), "w") as f:
        json.dump({"id": "sha256:" + kept_id, "chain": ["sha256:" + kept_chain], "size": 1,
                   "config": {}, "repo_tags": [], "repo_digests": [],
                   "hidden": True, "from_a_later_version": True}, f)
    os.makedirs(os.path.join(images, "layers", kept_chain, "etc"))
    open(os.path.join(images, "blobs", kept_id), "w").close()
    os.makedirs(os.path.join(images, "layers", "3" * 64, "bin"))
    open(os.path.join(images, "blobs", "4" * 64), "w").close()
    os.makedirs(os.path.join(images, "tmp", "layer-x", "a"))
    open(os.path.join(images, "tmp", "blob-y"), "w").close()

    d = make_daemon(base=d.base).start()
    assert sorted(os.listdir(os.path.join(images, "layers"))) == sorted(["empty", kept_chain])
    assert os.listdir(os.path.join(images, "blobs")) == [kept_id]
    assert os.listdir(os.path.join(images, "tmp")) == []
    log = d.read_log()
    assert "removed layer " + "3" * 64 in log and "removed blob " + "4" * 64 in log
    assert "removed temporary layer-x" in log
