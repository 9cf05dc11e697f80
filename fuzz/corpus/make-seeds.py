#!/usr/bin/python3
"""Writes the seed corpus committed beside this script (run from anywhere)."""
import gzip
import io
import json
import os
import subprocess
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
D = "sha256:" + "0123456789abcdef" * 4


def put(kind, name, data):
    with open(os.path.join(HERE, kind, name), "wb") as f:
        f.write(data)


def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "file":
                info.size = len(value)
                t.addfile(info, io.BytesIO(value))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = value or ""
            t.addfile(info)
    return buf.getvalue()


for i, ref in enumerate(["busybox", "127.0.0.1:5000/a/b:tag", "localhost/x@" + D,
                         "docker.io/library/busybox:1.36@" + D, "[::1]:5000/x:y",
                         "registry.example.com:443/team/app__x-y.z:v1.2_3"]):
    put("ref", "seed%d" % i, ref.encode())

desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D, "size": 3}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": dict(desc, mediaType="application/vnd.oci.image.config.v1+json"),
            "layers": [desc, dict(desc, mediaType="application/vnd.oci.image.layer.v1.tar")]}
index = {"schemaVersion": 2, "manifests": [
    dict(desc, platform={"os": "linux", "architecture": "arm64"}),
    dict(desc, platform={"os": "linux", "architecture": "amd64"})]}
config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
          "rootfs": {"type": "layers", "diff_ids": [D]}}
put("manifest", "index", b"\x00" + json.dumps(index).encode())
put("manifest", "manifest", b"\x01" + json.dumps(manifest).encode())
put("manifest", "config1", b"\x05" + json.dumps(config).encode())
config["rootfs"]["diff_ids"] = [D, D]
put("manifest", "config2", b"\x08" + json.dumps(config).encode())

layer = tar([("bin", "dir", None), ("bin/busybox", "file", b"\x7fELF" + b"x" * 60),
             ("bin/sh", "symlink", "busybox"), ("bin/ln", "hardlink", "bin/busybox"),
             ("etc", "dir", None), ("etc/.wh.gone", "file", b""),
             ("etc/d/.wh..wh..opq", "file", b""), ("etc/d/new", "file", b"n"),
             ("run/fifo", "fifo", None), ("abs", "symlink", "/etc")])
put("unpack", "layer.tar", layer)
put("unpack", "layer.tar.gz", gzip.compress(layer, mtime=0))
try:
    put("unpack", "layer.tar.zst", subprocess.run(["zstd", "-q", "-c"], input=layer,
                                                  capture_output=True, check=True).stdout)
except (OSError, subprocess.CalledProcessError):
    pass
put("unpack", "dotdot.tar", tar([("../x", "file", b"x")]))
put("unpack", "symlink-then-file.tar", tar([("s", "symlink", ".."), ("s/x", "file", b"x")]))
put("unpack", "hardlink-out.tar", tar([("h", "hardlink", "../canary")]))
