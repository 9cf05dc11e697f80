"""Pods in their own user namespace (NamespaceOption.userns_options mode POD): the
pinned user namespace owns the pod's other namespaces, containers join it, and files are
presented through idmapped mounts so nothing on the host is chowned."""
import fcntl
import json
import os
import re
import socket
import subprocess
import time

import grpc
import pytest
from google.protobuf import json_format

from ctr_helpers import container_config, create, image_ref, status, wait_until  # noqa: F401
from test_streaming import STDIN, STDOUT, Spdy, collect, connect, send

HOST_ID = 1 << 20  # a multiple of 65536 away from the host's own IDs, as kubelet picks
LEN = 65536
NS_GET_USERNS = 0xb701  # ioctl: the user namespace owning a namespace


def userns_pod(name, tmp_path, **ns):
    opts = {"pid": "CONTAINER",
            "userns_options": {"mode": "POD",
                               "uids": [{"host_id": HOST_ID, "container_id": 0, "length": LEN}],
                               "gids": [{"host_id": HOST_ID, "container_id": 0, "length": LEN}]}}
    opts.update(ns)
    return {"metadata": {"name": name, "namespace": "default", "uid": name + "-uid",
                         "attempt": 0},
            "hostname": name, "log_directory": str(tmp_path / "logs"),
            "linux": {"security_context": {"namespace_options": opts},
                      "sysctls": {"net.ipv4.ip_unprivileged_port_start": "99"}}}


def run_pod(cri, doc):
    cfg = json_format.ParseDict(doc, cri.api.PodSandboxConfig())
    return cri.call("RunPodSandbox", config=cfg).pod_sandbox_id, cfg


def stop(cri, cid):
    # StopContainer's own timeout (1 s), not the call's deadline (Cri.call's timeout)
    req = cri.message("StopContainerRequest", container_id=cid, timeout=1)
    cri.call("StopContainer", req, timeout=30)


def remove_pod(cri, pod_id):
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if path in line]


def host_ids(pid):
    with open("/proc/%d/status" % pid) as f:
        text = f.read()
    uid = re.search(r"^Uid:\s+(\d+)", text, re.M).group(1)
    gid = re.search(r"^Gid:\s+(\d+)", text, re.M).group(1)
    return int(uid), int(gid)


@pytest.fixture
def reachable(daemon):
    # runc resolves the rootfs from inside the pod's user namespace: the directories
    # above remorad's state directory must be searchable (mkdtemp makes its base 0700).
    os.chmod(daemon.base, 0o711)
    return daemon


def exec_out(cri, cid, cmd):
    r = cri.call("ExecSync", container_id=cid, cmd=cmd, timeout=20)
    assert r.exit_code == 0, (cmd, r.stdout, r.stderr)
    return r.stdout.decode()


def test_userns_pod_end_to_end(reachable, cri, image_ref, tmp_path):  # noqa: F811
    daemon = reachable
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    vol = tmp_path / "vol"
    vol.mkdir()
    os.chmod(tmp_path, 0o711)
    (vol / "from-host").write_text("host\n")
    os.chown(vol / "from-host", 0, 0)
    before_mounts = len(mounts_under(daemon.base))
    pod_id, pod_cfg = run_pod(cri, userns_pod("uns", tmp_path))

    # The pod's user namespace is pinned and owns its network namespace.
    pin = os.path.join(daemon.state, "userns", pod_id)
    assert os.path.exists(pin)
    st = cri.call("PodSandboxStatus", pod_sandbox_id=pod_id).status
    u = st.linux.namespaces.options.userns_options
    assert u.mode == cri.api.POD and u.uids[0].host_id == HOST_ID

    cfg = container_config(cri, image_ref, "c", ["/bin/sh", "-c",
                                                 "id -u > /tmp/id; touch /made-inside; "
                                                 "echo w >> /vol/from-host; touch /vol/new; "
                                                 "sleep 1000"],
                           mounts=[{"container_path": "/vol", "host_path": str(vol)}],
                           linux={"security_context": {
                               "capabilities": {"add_capabilities": ["NET_ADMIN"]}}})
    cid = create(cri, (pod_id, pod_cfg), cfg)
    cri.call("StartContainer", container_id=cid)
    wait_until(lambda: os.path.exists(vol / "new"), "the container wrote its bind mount")
    # runc resolves the bundle from inside the namespace: it belongs to the namespace's
    # root, closed to other host users; config.json (the environment) is root's only.
    bundle = os.path.join(daemon.state, "containers", cid)
    b = os.stat(bundle)
    assert (b.st_mode & 0o777, b.st_uid, b.st_gid) == (0o700, HOST_ID, HOST_ID)
    assert os.stat(os.path.join(bundle, "config.json")).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(bundle)).st_mode & 0o777 == 0o711
    # Inside: root. On the host: the mapped IDs.
    assert exec_out(cri, cid, ["/bin/id", "-u"]).strip() == "0"
    assert exec_out(cri, cid, ["/bin/cat", "/proc/self/uid_map"]).split() == [
        "0", str(HOST_ID), str(LEN)]
    info = cri.call("ContainerStatus", container_id=cid, verbose=True).info["info"]
    init = json.loads(info)["pid"]
    assert init > 0
    assert host_ids(init) == (HOST_ID, HOST_ID)
    ctr_pids = [init]

    # Image files are owned by root inside (idmapped layers) and untouched on the host.
    assert exec_out(cri, cid, ["/bin/stat", "-c", "%u:%g", "/etc/passwd"]).strip() == "0:0"
    assert exec_out(cri, cid, ["/bin/stat", "-c", "%u:%g", "/made-inside"]).strip() == "0:0"
    upper = os.path.join(daemon.root, "containers", cid, "upper")
    made = os.stat(os.path.join(upper, "made-inside"))
    assert (made.st_uid, made.st_gid) == (HOST_ID, HOST_ID)
    layers = os.path.join(daemon.root, "images", "layers")
    owners = set()
    for d in os.listdir(layers):
        p = os.path.join(layers, d, "etc", "passwd")
        if os.path.exists(p):
            owners.add((os.stat(p).st_uid, os.stat(p).st_gid))
    assert owners == {(0, 0)}

    # The bind mount, through an idmapped mount: a host root file is root's inside, and
    # what container root writes there is owned by host root (the idmap maps it back).
    assert exec_out(cri, cid, ["/bin/stat", "-c", "%u:%g", "/vol/from-host"]).strip() == "0:0"
    assert (vol / "from-host").read_text() == "host\nw\n"
    assert os.stat(vol / "from-host").st_uid == 0
    new = os.stat(vol / "new")
    assert (new.st_uid, new.st_gid) == (0, 0)

    # The pod's files and /dev/shm are root's inside and writable by it.
    assert exec_out(cri, cid, ["/bin/stat", "-c", "%u", "/etc/hosts"]).strip() == "0"
    exec_out(cri, cid, ["/bin/sh", "-c", "echo x > /dev/shm/x && cat /dev/shm/x"])
    # The pod's sysctl was written inside its network namespace, which the pod's user
    # namespace owns.
    assert exec_out(cri, cid, ["/bin/cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
                    ).strip() == "99"
    # NET_ADMIN of container root reaches the pod's network namespace only because the
    # pod's user namespace owns it.
    exec_out(cri, cid, ["/bin/ip", "link", "set", "lo", "mtu", "1300"])
    assert "mtu 1300" in exec_out(cri, cid, ["/bin/ip", "link", "show", "lo"])
    netns = os.open(os.path.join(daemon.state, "netns", pod_id), os.O_RDONLY)
    try:
        owner = fcntl.ioctl(netns, NS_GET_USERNS)
        try:
            assert os.fstat(owner).st_ino == os.stat(pin).st_ino
        finally:
            os.close(owner)
    finally:
        os.close(netns)
    # Stats work.
    s = cri.call("ContainerStats", container_id=cid).stats
    assert s.cpu.timestamp > 0

    # Removal leaves no mount, pin or process.
    stop(cri, cid)
    cri.call("RemoveContainer", container_id=cid)
    remove_pod(cri, pod_id)
    assert not os.path.exists(pin)
    wait_until(lambda: len(mounts_under(daemon.base)) == before_mounts,
               "mounts left: %s" % mounts_under(daemon.base))
    for p in ctr_pids:
        wait_until(lambda: not os.path.exists("/proc/%d" % p), "process %d left" % p)


def test_userns_pod_survives_restart(reachable, cri, image_ref, tmp_path):  # noqa: F811
    daemon = reachable
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod_id, pod_cfg = run_pod(cri, userns_pod("unsr", tmp_path))
    cid = create(cri, (pod_id, pod_cfg),
                 container_config(cri, image_ref, "c", ["/bin/sleep", "1000"]))
    cri.call("StartContainer", container_id=cid)
    daemon.stop()
    daemon.start()
    c2 = daemon.client()
    try:
        st = c2.call("PodSandboxStatus", pod_sandbox_id=pod_id).status
        assert st.state == c2.api.SANDBOX_READY
        assert status(c2, cid).state == c2.api.CONTAINER_RUNNING
        assert exec_out(c2, cid, ["/bin/id", "-u"]).strip() == "0"
        # A new container joins the same namespace after the restart.
        cid2 = create(c2, (pod_id, pod_cfg),
                      container_config(c2, image_ref, "d", ["/bin/sleep", "1000"]))
        c2.call("StartContainer", container_id=cid2)
        assert exec_out(c2, cid2, ["/bin/cat", "/proc/self/uid_map"]).split()[1] == str(HOST_ID)
        stop(c2, cid)
        stop(c2, cid2)
        c2.call("RemoveContainer", container_id=cid)
        c2.call("RemoveContainer", container_id=cid2)
        remove_pod(c2, pod_id)
        assert not mounts_under(daemon.base + "/")
    finally:
        c2.close()


@pytest.mark.parametrize("change, field", [
    ({"uids": []}, "userns_options.uids"),
    ({"uids": [{"host_id": HOST_ID, "container_id": 0, "length": LEN},
               {"host_id": 2 * HOST_ID, "container_id": LEN, "length": LEN}]},
     "userns_options.uids"),
    ({"gids": [{"host_id": HOST_ID, "container_id": 0, "length": 1000}]},
     "userns_options.gids[0].length"),
    ({"uids": [{"host_id": 0, "container_id": 0, "length": LEN}]},
     "userns_options.uids[0].host_id"),
    ({"uids": [{"host_id": HOST_ID, "container_id": 5, "length": LEN}]},
     "userns_options.uids[0].container_id"),
    ({"mode": "CONTAINER"}, "userns_options.mode"),
])
def test_bad_mappings_are_invalid_argument(daemon, cri, tmp_path, change, field):
    doc = userns_pod("bad", tmp_path)
    doc["linux"]["security_context"]["namespace_options"]["userns_options"].update(change)
    with pytest.raises(grpc.RpcError) as e:
        run_pod(cri, doc)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in e.value.details()
    assert len(cri.call("ListPodSandbox").items) == 0
    assert os.listdir(os.path.join(daemon.state, "userns")) == []


def test_host_network_with_userns_is_refused(daemon, cri, tmp_path):
    with pytest.raises(grpc.RpcError) as e:
        run_pod(cri, userns_pod("hn", tmp_path, network="NODE"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "namespace_options.network" in e.value.details()


def test_node_mode_pod_unchanged(daemon, cri, image_ref, tmp_path):  # noqa: F811
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    doc = userns_pod("node", tmp_path)
    doc["linux"]["security_context"]["namespace_options"]["userns_options"] = {"mode": "NODE"}
    pod_id, pod_cfg = run_pod(cri, doc)
    assert not os.path.exists(os.path.join(daemon.state, "userns", pod_id))
    cid = create(cri, (pod_id, pod_cfg),
                 container_config(cri, image_ref, "c", ["/bin/sleep", "1000"]))
    cri.call("StartContainer", container_id=cid)
    assert exec_out(cri, cid, ["/bin/cat", "/proc/self/uid_map"]).split() == [
        "0", "0", "4294967295"]
    stop(cri, cid)
    cri.call("RemoveContainer", container_id=cid)
    remove_pod(cri, pod_id)


def test_status_reports_user_namespaces(daemon, cri):
    r = cri.call("Status")
    feats = [h.features.user_namespaces for h in r.runtime_handlers if h.name == ""]
    assert feats == [True]


def test_unreachable_state_dir_is_failed_precondition(daemon, cri, image_ref, tmp_path):  # noqa: F811
    # The temp base stays 0700: the pod's root could not reach the rootfs; refused by name.
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod_id, pod_cfg = run_pod(cri, userns_pod("unr", tmp_path))
    with pytest.raises(grpc.RpcError) as e:
        create(cri, (pod_id, pod_cfg), container_config(cri, image_ref, "c", ["/bin/true"]))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert daemon.base in e.value.details()
    remove_pod(cri, pod_id)
    # With a shared PID namespace, the pod's infra process is refused the same way.
    with pytest.raises(grpc.RpcError) as e:
        run_pod(cri, userns_pod("unr2", tmp_path, pid="POD"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert daemon.base in e.value.details()
    assert len(cri.call("ListPodSandbox").items) == 0
    assert not mounts_under(daemon.base + "/")


def tcp_get(host, port, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                data = b""
                while True:
                    chunk = s.recv(100)
                    if not chunk:
                        return data
                    data += chunk
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_userns_pod_network_hostport_port_forward_stats(reachable, cri, image_ref,  # noqa: F811
                                                        tmp_path):
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    doc = userns_pod("unet", tmp_path)
    doc["port_mappings"] = [{"protocol": "TCP", "container_port": 8080, "host_port": 18593}]
    pod_id, pod_cfg = run_pod(cri, doc)
    cid = create(cri, (pod_id, pod_cfg), container_config(
        cri, image_ref, "srv", ["/bin/sh", "-c",
                                "while true; do echo pong-from-userns | nc -l -p 8080; done"]))
    cri.call("StartContainer", container_id=cid)
    ip = cri.call("PodSandboxStatus", pod_sandbox_id=pod_id).status.network.ip
    assert ip
    assert exec_out(cri, cid, ["/bin/cat", "/proc/self/uid_map"]).split()[1] == str(HOST_ID)
    assert tcp_get(ip, 8080) == b"pong-from-userns\n"
    assert tcp_get("127.0.0.1", 18593) == b"pong-from-userns\n"

    url = cri.call("PortForward", pod_sandbox_id=pod_id).url
    c = Spdy(url, ["portforward.k8s.io"])
    assert c.status == 101
    e = c.syn(streamtype="error", port="8080", requestid="0")
    d = c.syn(streamtype="data", port="8080", requestid="0")
    assert c.until(lambda: d in c.replied and e in c.replied)
    assert c.until(lambda: c.data.get(d, b"").endswith(b"pong-from-userns\n"))
    c.close()

    s = cri.call("PodSandboxStats", pod_sandbox_id=pod_id).stats
    assert s.attributes.id == pod_id
    assert [x.attributes.id for x in s.linux.containers] == [cid]
    stop(cri, cid)
    cri.call("RemoveContainer", container_id=cid)
    remove_pod(cri, pod_id)


def test_userns_pod_sharing_one_pid_namespace(reachable, cri, image_ref, tmp_path):  # noqa: F811
    # pid POD (crictl's default, kubelet's shareProcessNamespace): the infra process runs
    # in the pod's user namespace too, and containers see it.
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod_id, pod_cfg = run_pod(cri, userns_pod("unpid", tmp_path, pid="POD"))
    cfg = container_config(cri, image_ref, "c", ["/bin/sleep", "1000"],
                           linux={"security_context": {"namespace_options": {"pid": "POD"}}})
    cid = create(cri, (pod_id, pod_cfg), cfg)
    cri.call("StartContainer", container_id=cid)
    ps = exec_out(cri, cid, ["/bin/ps", "-o", "pid,user,args"])
    assert "/pause" in ps
    assert exec_out(cri, cid, ["/bin/cat", "/proc/1/uid_map"]).split()[1] == str(HOST_ID)
    stop(cri, cid)
    cri.call("RemoveContainer", container_id=cid)
    remove_pod(cri, pod_id)
    assert not mounts_under(reachable.base + "/")


def test_image_in_use_by_a_userns_container(reachable, cri, image_ref, tmp_path):  # noqa: F811
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod_id, pod_cfg = run_pod(cri, userns_pod("unimg", tmp_path))
    cid = create(cri, (pod_id, pod_cfg),
                 container_config(cri, image_ref, "c", ["/bin/sleep", "1000"]))
    # The container's layers are held through idmapped mounts named after them.
    held = mounts_under(os.path.join(reachable.root, "containers", cid, "idmap"))
    assert held
    # RemoveImage of an image in use: the name goes, the layers stay for the container.
    cri.call("RemoveImage", image=cri.message("ImageSpec", image=image_ref))
    assert cri.call("ImageStatus", image=cri.message("ImageSpec", image=image_ref)).image.id == ""
    assert mounts_under(os.path.join(reachable.root, "containers", cid, "idmap")) == held
    layers = os.path.join(reachable.root, "images", "layers")
    before = sorted(os.listdir(layers))
    cri.call("RemoveContainer", container_id=cid)
    remove_pod(cri, pod_id)
    # its last user gone, its layers go (the empty base directory stays)
    wait_until(lambda: sorted(os.listdir(layers)) != before, "the image's layers stayed")


@pytest.mark.parametrize("point", ["runpodsandbox.pins", "create.idmapped"])
def test_kill_9_mid_userns_setup_leaves_nothing(make_daemon, image_ref, tmp_path,  # noqa: F811
                                                monkeypatch, point):
    d = make_daemon()
    os.chmod(d.base, 0o711)
    monkeypatch.setenv("REMORA_CRASH_AT", point)
    d.start()
    monkeypatch.delenv("REMORA_CRASH_AT")
    cri = d.client()
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod_id = None
    with pytest.raises(grpc.RpcError):
        pod_id, pod_cfg = run_pod(cri, userns_pod("crash", tmp_path))
        create(cri, (pod_id, pod_cfg),
               container_config(cri, image_ref, "c", ["/bin/sleep", "1000"]))
    d.proc.wait(timeout=10)
    cri.close()
    assert mounts_under(d.base + "/"), "the crash point is after the mounts are made"
    d2 = make_daemon(base=d.base).start()
    cri = d2.client()
    try:
        if pod_id:
            # The pod was ready before the crash; its containers' leftovers are gone.
            assert [m for m in mounts_under(d.base + "/") if "/containers/" in m] == []
            remove_pod(cri, pod_id)
        wait_until(lambda: not mounts_under(d.base + "/"),
                   "left after the restart: %s" % mounts_under(d.base + "/"))
        assert os.listdir(os.path.join(d.state, "userns")) == []
    finally:
        cri.close()


def test_userns_attach_and_streaming_exec(reachable, cri, image_ref, tmp_path):  # noqa: F811
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod_id, pod_cfg = run_pod(cri, userns_pod("unatt", tmp_path))
    cid = create(cri, (pod_id, pod_cfg), container_config(
        cri, image_ref, "shell", ["/bin/sh"], tty=True, stdin=True))
    cri.call("StartContainer", container_id=cid)
    a = connect(cri.call("Attach", container_id=cid, stdin=True, tty=True, stdout=True).url)
    send(a, STDIN, b"echo uid-$(id -u)-$((40+2))\r")
    got = b""
    a.settimeout(10)
    while b"uid-0-42" not in got:
        op, data = a.recv_data()
        assert op != 8, got
        if data and data[0] == STDOUT:
            got += data[1:]
    a.close()
    e = connect(cri.call("Exec", container_id=cid, cmd=["/bin/cat", "/proc/self/uid_map"],
                         stdout=True).url)
    out = collect(e)
    assert out[STDOUT].split()[1] == str(HOST_ID).encode()
    stop(cri, cid)
    cri.call("RemoveContainer", container_id=cid)
    remove_pod(cri, pod_id)


def test_bind_source_without_idmapped_mounts_is_failed_precondition(
        reachable, cri, image_ref, tmp_path):  # noqa: F811
    # sysfs cannot be idmapped: the container is refused by name, never run without it.
    cri.call("PullImage", image=cri.message("ImageSpec", image=image_ref), timeout=60)
    pod_id, pod_cfg = run_pod(cri, userns_pod("unsys", tmp_path))
    before = len(mounts_under(reachable.base + "/"))
    with pytest.raises(grpc.RpcError) as e:
        create(cri, (pod_id, pod_cfg), container_config(
            cri, image_ref, "c", ["/bin/true"],
            mounts=[{"container_path": "/k", "host_path": "/sys/kernel/mm"}]))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "/sys/kernel/mm" in e.value.details()
    assert "idmapped" in e.value.details()
    assert len(cri.call("ListContainers").containers) == 0
    assert len(mounts_under(reachable.base + "/")) == before
    remove_pod(cri, pod_id)


def test_host_without_idmapped_mounts_refuses_userns_pods(make_daemon, tmp_path):
    # ramfs has no idmapped mounts: with the root directory there, Status says so and a
    # userns pod is FAILED_PRECONDITION naming the reason; a plain pod still runs.
    d = make_daemon()
    root = os.path.join(d.base, "root")
    os.makedirs(root)
    subprocess.run(["mount", "-t", "ramfs", "ramfs", root], check=True)
    try:
        d.start()
        cri = d.client()
        r = cri.call("Status")
        assert r.runtime_handlers
        assert not any(h.features.user_namespaces for h in r.runtime_handlers)
        with pytest.raises(grpc.RpcError) as e:
            run_pod(cri, userns_pod("noidmap", tmp_path))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "idmapped" in e.value.details() and root in e.value.details()
        assert len(cri.call("ListPodSandbox").items) == 0
        doc = userns_pod("plain", tmp_path)
        del doc["linux"]["security_context"]["namespace_options"]["userns_options"]
        pod_id, _ = run_pod(cri, doc)
        remove_pod(cri, pod_id)
        cri.close()
        d.stop()
    finally:
        subprocess.run(["umount", "-l", root], check=False)
