"""Pod sandboxes against the real kernel: pinned namespaces, pod files, sysctls, the
state machine, validation, crash recovery, and counts of what could leak."""
import json
import os
import signal
import socket
import subprocess
import time

import grpc
import pytest
from google.protobuf import json_format

from remora_fixtures import it_network_setting

CONTAINER_PID = {"linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}}}


def pod_config(api, name="web", uid="uid-1", **extra):
    doc = {"metadata": {"name": name, "namespace": "default", "uid": uid, "attempt": 0},
           "hostname": name + "-host", "labels": {"app": name}}
    doc.update(CONTAINER_PID)
    doc.update(extra)
    return json_format.ParseDict(doc, api.PodSandboxConfig())


def run_pod(cri, cfg):
    return cri.call("RunPodSandbox", config=cfg).pod_sandbox_id


def status(cri, pod_id, verbose=False):
    return cri.call("PodSandboxStatus", pod_sandbox_id=pod_id, verbose=verbose)


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f if line.split()[4].startswith(path))


def nsenter(kind, pin, *cmd):
    return subprocess.run(["nsenter", "--%s=%s" % (kind, pin)] + list(cmd), check=True,
                          capture_output=True, text=True).stdout.strip()


def pins(daemon, pod_id):
    return {k: os.path.join(daemon.state, k, pod_id) for k in ("netns", "ipcns", "utsns")}


def expect_error(fn, code, *needles):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert e.value.code() == code, e.value.details()
    for n in needles:
        assert n in e.value.details(), e.value.details()
    return e.value.details()


def test_pod_lifecycle_with_real_namespaces(daemon, cri):
    before = mounts_under(daemon.base)
    cfg = pod_config(cri.api, dns_config={"servers": ["10.96.0.10"],
                                          "searches": ["default.svc.cluster.local"],
                                          "options": ["ndots:5"]})
    cfg.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "81"
    cfg.linux.sysctls["kernel.shm_rmid_forced"] = "1"
    pod_id = run_pod(cri, cfg)
    assert len(pod_id) == 64 and all(c in "0123456789abcdef" for c in pod_id)

    st = status(cri, pod_id, verbose=True)
    assert st.status.state == cri.api.SANDBOX_READY
    assert st.status.metadata.name == "web" and st.status.labels["app"] == "web"
    assert st.status.created_at > 0
    assert st.status.linux.namespaces.options.pid == cri.api.CONTAINER
    info = json.loads(st.info["info"])
    p = pins(daemon, pod_id)
    assert info["netnsPath"] == p["netns"]
    # what the network setup took, for the bench; teardown has not run yet
    assert 0 < info["networkSetupMicros"] < 10_000_000 and "networkTeardownMicros" not in info

    # Three pins and the pod's shm are mounts, nothing else.
    mounted = mounts_under(daemon.base)
    assert sorted(set(mounted) - set(before)) == sorted(
        list(p.values()) + [os.path.join(daemon.state, "sandboxes", pod_id, "shm")])
    # Inside: lo up and eth0 from the built-in bridge, the hostname, the sysctls; the host
    # keeps its own values.
    links = nsenter("net", p["netns"], "ip", "-o", "link", "show")
    assert links.count(": ") // 2 == 2 and "lo:" in links and "eth0@" in links
    ip = st.status.network.ip
    subnet_head = it_network_setting("subnet").split(".")[:2]
    assert ip.startswith(".".join(subnet_head) + ".") and ip in nsenter("net", p["netns"], "ip", "-o", "addr")
    assert nsenter("uts", p["utsns"], "hostname") == "web-host"
    assert nsenter("net", p["netns"], "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start") == "81"
    assert nsenter("ipc", p["ipcns"], "cat", "/proc/sys/kernel/shm_rmid_forced") == "1"
    pod_dir = os.path.join(daemon.root, "sandboxes", pod_id)
    with open(os.path.join(pod_dir, "hostname")) as f:
        assert f.read() == "web-host\n"
    with open(os.path.join(pod_dir, "resolv.conf")) as f:
        resolv = f.read()
    assert "nameserver 10.96.0.10" in resolv and "search default.svc.cluster.local" in resolv
    assert "options ndots:5" in resolv
    with open(os.path.join(pod_dir, "hosts")) as f:
        hosts = f.read()
    assert "localhost" in hosts and "%s\tweb-host" % ip in hosts

    veth = it_network_setting("veth_prefix") + pod_id[:12]
    assert os.path.exists("/sys/class/net/" + veth)
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    st = status(cri, pod_id, verbose=True)
    assert st.status.state == cri.api.SANDBOX_NOTREADY
    assert 0 < json.loads(st.info["info"])["networkTeardownMicros"] < 10_000_000
    assert mounts_under(daemon.base) == before
    # the stopped pod's veth is deleted off the call's path, soon after
    deadline = time.monotonic() + 5
    while os.path.exists("/sys/class/net/" + veth) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists("/sys/class/net/" + veth)
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)  # idempotent
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    expect_error(lambda: status(cri, pod_id), grpc.StatusCode.NOT_FOUND, pod_id)
    assert not os.path.exists(pod_dir)
    assert os.listdir(os.path.join(daemon.state, "netns")) == []
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)  # gone is fine


def test_sysctl_written_inside_does_not_touch_host(daemon, cri):
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        host = f.read().strip()
    value = "79" if host != "79" else "78"
    cfg = pod_config(cri.api)
    cfg.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = value
    pod_id = run_pod(cri, cfg)
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        assert f.read().strip() == host
    assert nsenter("net", pins(daemon, pod_id)["netns"], "cat",
                   "/proc/sys/net/ipv4/ip_unprivileged_port_start") == value
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)


def test_remove_of_ready_pod_stops_it(daemon, cri):
    before = mounts_under(daemon.base)
    pod_id = run_pod(cri, pod_config(cri.api))
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    assert mounts_under(daemon.base) == before
    assert len(cri.call("ListPodSandbox").items) == 0


def test_host_network_pod(daemon, cri):
    cfg = pod_config(cri.api, hostname="", linux={"security_context": {"namespace_options": {
        "network": "NODE", "pid": "CONTAINER", "ipc": "NODE"}}})
    before = mounts_under(daemon.base)
    pod_id = run_pod(cri, cfg)
    assert mounts_under(daemon.base) == before, "host namespaces and host /dev/shm: no mounts"
    st = status(cri, pod_id, verbose=True)
    assert st.status.linux.namespaces.options.network == cri.api.NODE
    info = json.loads(st.info["info"])
    assert info["netnsPath"] == "" and "networkSetupMicros" not in info
    with open(os.path.join(daemon.root, "sandboxes", pod_id, "hosts")) as f, \
            open("/etc/hosts") as host:
        assert f.read() == host.read()
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)


def test_names_as_other_cri_clients_send_them(cri):
    # critest and crictl users send upper-case letters and '_', which kubelet never does
    cfg = pod_config(cri.api, name="create-PodSandbox-for-container-Ab_1", uid="Ab_1",
                     hostname="ab-host")
    cfg.metadata.namespace = "Test_NS"
    pod_id = run_pod(cri, cfg)
    st = status(cri, pod_id).status
    assert st.metadata.name == "create-PodSandbox-for-container-Ab_1"
    assert st.metadata.namespace == "Test_NS"
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)


def test_container_port_without_host_port_publishes_nothing(cri):
    # kubelet sends a mapping for every declared containerPort, most with hostPort 0
    cfg = pod_config(cri.api, name="ports", uid="ports",
                     port_mappings=[{"container_port": 80}, {"container_port": 53, "protocol": 1}])
    table = it_network_setting("nft_table")
    before = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                            text=True).stdout
    pod_id = run_pod(cri, cfg)
    assert status(cri, pod_id).status.state == cri.api.SANDBOX_READY
    after = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                           text=True).stdout
    assert after == before, "no DNAT element for a mapping without a host port"
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)


def test_pod_without_hostname_gets_the_nodes(daemon, cri):
    # as containerd and CRI-O do; the pod name (critest's are 68 characters) may not fit
    cfg = pod_config(cri.api, name="n" * 80, uid="nohost")
    cfg.hostname = ""
    pod_id = run_pod(cri, cfg)
    p = pins(daemon, pod_id)
    assert nsenter("uts", p["utsns"], "hostname") == socket.gethostname()
    with open(os.path.join(daemon.root, "sandboxes", pod_id, "hostname")) as f:
        assert f.read() == socket.gethostname() + "\n"
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)


@pytest.mark.parametrize("field,value,needle", [
    ("metadata.name", "bad name", "config.metadata.name"),
    ("metadata.name", "K8S_POD_NAME=x;y", "config.metadata.name"),
    ("metadata.name", "", "config.metadata.name"),
    ("metadata.namespace", "a/b", "config.metadata.namespace"),
    ("metadata.uid", "", "config.metadata.uid"),
    ("hostname", "bad host", "config.hostname"),
    ("log_directory", "relative/logs", "config.log_directory"),
    ("dns", "not-an-ip", "config.dns_config.servers[0]"),
    ("port", 70000, "config.port_mappings[0].container_port"),
    ("host_ip", "300.1.1.1", "config.port_mappings[0].host_ip"),
    ("cgroup_parent", "/kubepods/../../etc", "config.linux.cgroup_parent"),
    ("sysctl", ("kernel.panic", "1"), 'sysctl "kernel.panic" is not namespaced'),
    ("sysctl", ("net.ipv4.ip_forward", "1=2"), '"net.ipv4.ip_forward"'),
    ("sysctl", ("net.ipv4.ip_forward", "1\n2"), '"net.ipv4.ip_forward"'),
    ("sysctl", ("net/../../etc", "1"), "net/../../etc"),
    ("sysctl", ("net.ipv4..ip_forward", "1"), "net.ipv4..ip_forward"),
    ("sysctl", ("net.ipv4.no_such_sysctl", "1"), "net.ipv4.no_such_sysctl"),
])
def test_bad_input_names_the_field_and_leaves_nothing(daemon, cri, field, value, needle):
    cfg = pod_config(cri.api)
    if field.startswith("metadata."):
        setattr(cfg.metadata, field.split(".")[1], value)
    elif field == "hostname":
        cfg.hostname = value
    elif field == "log_directory":
        cfg.log_directory = value
    elif field == "dns":
        cfg.dns_config.servers.append(value)
    elif field == "port":
        cfg.port_mappings.add(container_port=value)
    elif field == "host_ip":
        cfg.port_mappings.add(container_port=80, host_ip=value)
    elif field == "cgroup_parent":
        cfg.linux.cgroup_parent = value
    else:
        cfg.linux.sysctls[value[0]] = value[1]
    before = mounts_under(daemon.base)
    expect_error(lambda: run_pod(cri, cfg), grpc.StatusCode.INVALID_ARGUMENT, needle)
    assert mounts_under(daemon.base) == before
    assert os.listdir(os.path.join(daemon.root, "sandboxes")) == []
    assert os.listdir(os.path.join(daemon.state, "netns")) == []
    assert len(cri.call("ListPodSandbox").items) == 0


def test_sysctls_refused_with_host_namespaces(cri):
    cfg = pod_config(cri.api, hostname="", linux={"security_context": {"namespace_options": {
        "network": "NODE", "pid": "CONTAINER", "ipc": "NODE"}}})
    cfg.linux.sysctls["net.ipv4.ip_forward"] = "1"
    expect_error(lambda: run_pod(cri, cfg), grpc.StatusCode.INVALID_ARGUMENT,
                 '"net.ipv4.ip_forward"', "host network")
    del cfg.linux.sysctls["net.ipv4.ip_forward"]
    cfg.linux.sysctls["kernel.shmmax"] = "1000000"
    expect_error(lambda: run_pod(cri, cfg), grpc.StatusCode.INVALID_ARGUMENT,
                 '"kernel.shmmax"', "host IPC")


def test_duplicates_and_prefixes(make_daemon):
    d = make_daemon().start()
    cri = d.client()
    cfg = pod_config(cri.api)
    first = run_pod(cri, cfg)
    # The first answer was delivered (retries of lost answers: test_client_rules.py).
    expect_error(lambda: run_pod(cri, cfg), grpc.StatusCode.ALREADY_EXISTS, first)
    changed = pod_config(cri.api)
    changed.labels["extra"] = "1"
    expect_error(lambda: run_pod(cri, changed), grpc.StatusCode.ALREADY_EXISTS, first)
    changed.metadata.attempt = 1
    second = run_pod(cri, changed)
    assert second != first

    # Prefixes: a unique one works, a shared one is refused as ambiguous.
    assert status(cri, first[:12]).status.id == first
    ids = [first, second] + [run_pod(cri, pod_config(cri.api, name="p%d" % i, uid="u%d" % i))
                             for i in range(16)]
    shared = next(a[0] for a in ids for b in ids if a != b and a[0] == b[0])
    expect_error(lambda: status(cri, shared), grpc.StatusCode.INVALID_ARGUMENT, "ambiguous")

    # Filters.
    f = cri.message("PodSandboxFilter", label_selector={"app": "p3"})
    assert [i.metadata.name for i in cri.call("ListPodSandbox", filter=f).items] == ["p3"]
    before = {i.id: i.state for i in cri.call("ListPodSandbox").items}
    cri.call("StopPodSandbox", pod_sandbox_id=first)
    # Each pod's list item is kept packed: a state change must show in the next list.
    after = {i.id: i.state for i in cri.call("ListPodSandbox").items}
    assert (before[first], after[first]) == (cri.api.SANDBOX_READY, cri.api.SANDBOX_NOTREADY)
    assert all(after[i] == cri.api.SANDBOX_READY for i in ids if i != first)
    f = cri.message("PodSandboxFilter", state=cri.message("PodSandboxStateValue",
                                                          state=cri.api.SANDBOX_NOTREADY))
    assert [i.id for i in cri.call("ListPodSandbox", filter=f).items] == [first]
    f = cri.message("PodSandboxFilter", id=second[:10])
    assert [i.id for i in cri.call("ListPodSandbox", filter=f).items] == [second]

    # And after a restart.
    assert d.stop() == 0
    d2 = make_daemon(base=d.base).start()
    c2 = d2.client()
    expect_error(lambda: run_pod(c2, changed), grpc.StatusCode.ALREADY_EXISTS, second)
    for i in ids:
        c2.call("RemovePodSandbox", pod_sandbox_id=i)
    assert len(c2.call("ListPodSandbox").items) == 0
    c2.close()
    cri.close()


def test_shared_pid_pod_runs_the_infra_process(daemon, cri):
    """pid POD: remora-pause is the pod's PID 1, in the pod's namespaces, not our child."""
    before = mounts_under(daemon.base)
    cfg = pod_config(cri.api, linux={"security_context": {"namespace_options": {"pid": "POD"}}})
    pod_id = run_pod(cri, cfg)
    info = json.loads(status(cri, pod_id, verbose=True).info["info"])
    pid = info["pid"]
    assert pid > 0
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        assert f.read().split(b"\0")[0] == b"/pause"
    with open("/proc/%d/status" % pid) as f:
        st = f.read()
    assert "\nNSpid:\t%d\t1\n" % pid in st, "PID 1 of its own PID namespace"
    ppid = int(next(l for l in st.splitlines() if l.startswith("PPid:")).split()[1])
    assert ppid != daemon.proc.pid, "the daemon is never a container's parent"
    p = pins(daemon, pod_id)
    assert os.stat("/proc/%d/ns/net" % pid).st_ino == os.stat(p["netns"]).st_ino
    assert os.stat("/proc/%d/ns/uts" % pid).st_ino == os.stat(p["utsns"]).st_ino
    cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
    for _ in range(100):
        if not os.path.exists("/proc/%d" % pid):
            break
        time.sleep(0.05)
    assert not os.path.exists("/proc/%d" % pid) or "zombie" in open("/proc/%d/status" % pid).read()
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    assert mounts_under(daemon.base) == before
    assert os.listdir(os.path.join(daemon.state, "runc")) == []


def test_fifty_pods_leak_nothing(daemon, cri):
    pid = daemon.proc.pid
    before_mounts = mounts_under(daemon.base)
    run_pod(cri, pod_config(cri.api, name="warm", uid="warm"))
    cri.call("RemovePodSandbox", pod_sandbox_id=cri.call("ListPodSandbox").items[0].id)
    fds = len(os.listdir("/proc/%d/fd" % pid))
    for i in range(50):
        pod_id = run_pod(cri, pod_config(cri.api, name="loop", uid="loop-%d" % i))
        cri.call("StopPodSandbox", pod_sandbox_id=pod_id)
        cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    assert mounts_under(daemon.base) == before_mounts
    assert len(os.listdir("/proc/%d/fd" % pid)) == fds
    for kind in ("netns", "ipcns", "utsns", "sandboxes"):
        assert os.listdir(os.path.join(daemon.state, kind)) == []
    assert os.listdir(os.path.join(daemon.root, "sandboxes")) == []
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    assert children.strip() == "", "no helper process outlives RunPodSandbox"


def test_concurrent_pods_do_not_hold_each_other(daemon, cri):
    """Eight threads running pods at once. The namespace helper is a fork without exec; a
    helper that kept another's pipes open once deadlocked two RunPodSandbox calls."""
    import concurrent.futures
    before_mounts = mounts_under(daemon.base)

    def lifecycle(n):
        c = daemon.client()
        try:
            for i in range(4):
                pod_id = c.call("RunPodSandbox", timeout=20, config=pod_config(
                    c.api, name="par", uid="par-%d-%d" % (n, i))).pod_sandbox_id
                c.call("StopPodSandbox", pod_sandbox_id=pod_id, timeout=20)
                c.call("RemovePodSandbox", pod_sandbox_id=pod_id, timeout=20)
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(lifecycle, n) for n in range(8)]:
            f.result()
    assert list(cri.call("ListPodSandbox").items) == []
    assert mounts_under(daemon.base) == before_mounts
    children = subprocess.run(["pgrep", "-P", str(daemon.proc.pid)], capture_output=True,
                              text=True).stdout
    assert children.strip() == ""


def test_kill_9_and_restart_keeps_and_repairs(make_daemon):
    d = make_daemon().start()
    cri = d.client()
    keep = run_pod(cri, pod_config(cri.api, name="keep", uid="k"))
    d.stop(signal.SIGKILL)
    cri.close()
    # A crash mid-run: a pin and a directory no record knows.
    orphan = "e" * 64
    pin = os.path.join(d.state, "netns", orphan)
    open(pin, "w").close()
    subprocess.run(["mount", "--bind", "/proc/self/ns/net", pin], check=True)
    os.makedirs(os.path.join(d.root, "sandboxes", orphan))

    d2 = make_daemon(base=d.base).start()
    c2 = d2.client()
    assert status(c2, keep).status.state == c2.api.SANDBOX_READY
    assert not os.path.exists(pin)
    assert not os.path.exists(os.path.join(d.root, "sandboxes", orphan))
    assert orphan not in " ".join(mounts_under(d.base))
    log = d2.read_log()
    assert "which no ready pod owns" in log and "interrupted by a crash" in log
    c2.call("RemovePodSandbox", pod_sandbox_id=keep)
    assert mounts_under(d.base) == []
    c2.close()


def test_lost_pins_make_a_pod_notready(make_daemon):
    """After a reboot /run is empty: ready pods come back NOTREADY, not half-alive."""
    d = make_daemon().start()
    cri = d.client()
    pod_id = run_pod(cri, pod_config(cri.api))
    assert d.stop() == 0
    cri.close()
    for kind in ("netns", "ipcns", "utsns"):
        p = os.path.join(d.state, kind, pod_id)
        subprocess.run(["umount", p], check=True)
    subprocess.run(["umount", os.path.join(d.state, "sandboxes", pod_id, "shm")], check=True)
    d2 = make_daemon(base=d.base).start()
    c2 = d2.client()
    assert status(c2, pod_id).status.state == c2.api.SANDBOX_NOTREADY
    assert "lost its netns pin" in d2.read_log()
    c2.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    assert mounts_under(d.base) == []
    c2.close()


def test_pod_cgroup_gets_resources_plus_overhead(daemon, cri):
    parent = "/remora-it-%d" % os.getpid()
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    mem_dir = "/sys/fs/cgroup" + parent if v2 else "/sys/fs/cgroup/memory" + parent
    cpu_dir = "/sys/fs/cgroup" + parent if v2 else "/sys/fs/cgroup/cpu" + parent
    cfg = pod_config(cri.api, name="sized", uid="sized")
    cfg.linux.cgroup_parent = parent
    cfg.linux.resources.memory_limit_in_bytes = 48 << 20
    cfg.linux.resources.cpu_shares = 512
    cfg.linux.overhead.memory_limit_in_bytes = 16 << 20
    cfg.linux.overhead.cpu_shares = 128
    pod_id = run_pod(cri, cfg)
    if v2:
        with open(mem_dir + "/memory.max") as f:
            assert int(f.read()) == 64 << 20
    else:
        with open(mem_dir + "/memory.limit_in_bytes") as f:
            assert int(f.read()) == 64 << 20
        with open(cpu_dir + "/cpu.shares") as f:
            assert int(f.read()) == 640
    cri.call("RemovePodSandbox", pod_sandbox_id=pod_id)
    assert not os.path.exists(mem_dir) and not os.path.exists(cpu_dir), "made by us, removed"

    cfg.linux.cgroup_parent = "relative/path"
    expect_error(lambda: run_pod(cri, cfg), grpc.StatusCode.INVALID_ARGUMENT, "cgroup_parent")
    assert list(cri.call("ListPodSandbox").items) == []
