"""remorad in CNI mode with Debian's containernetworking-plugins: NetworkReady follows the
config dir, RunPodSandbox runs ADD, StopPodSandbox runs DEL (also after a restart), and
nothing is left: no address in host-local's data dir, no cache, no veth, no chain."""
import json
import os
import shlex
import subprocess
import tempfile

import pytest

BIN_DIR = "/usr/lib/cni"
BRIDGE = "rmcniit0"
SUBNET = "10.234.0.0/24"
NETNAME = "rmcniit"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.access(os.path.join(BIN_DIR, "bridge"), os.X_OK),
                       reason="containernetworking-plugins is not installed"),
]


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check)


def nat_chains():
    out = sh("iptables-save", "-t", "nat").stdout
    return sorted(l[1:].split()[0] for l in out.splitlines() if l.startswith(":"))


def drop_new_chains(before):
    new = [c for c in nat_chains() if c not in before and c.startswith("CNI-")]
    if not new:
        return
    for line in sh("iptables-save", "-t", "nat").stdout.splitlines():
        if line.startswith("-A ") and any(f"-j {c}" in line for c in new):
            sh("iptables", "-t", "nat", "-D", *shlex.split(line[3:]), check=False)
    for op in ("-F", "-X"):
        for c in new:
            sh("iptables", "-t", "nat", op, c, check=False)


def conditions(resp):
    return {c.type: c for c in resp.status.conditions}


@pytest.fixture
def cni_base():
    base = tempfile.mkdtemp(prefix="remora-it-", dir="/tmp")
    chains = nat_chains()
    yield base
    sh("ip", "link", "del", BRIDGE, check=False)
    drop_new_chains(chains)


def test_cni_mode_pod_lifecycle(make_daemon, cni_base):
    confdir = os.path.join(cni_base, "net.d")
    ipam = os.path.join(cni_base, "ipam")
    config = {"network": {"mode": "cni", "cni_conf_dir": confdir, "cni_bin_dir": BIN_DIR}}
    d = make_daemon(base=cni_base, config=json.dumps(config)).start()
    c = d.client()
    net = conditions(c.call("Status"))["NetworkReady"]
    assert net.status is False and net.reason == "NetworkPluginNotReady"
    assert confdir in net.message
    # the add-on drops its config in: ready without a restart
    os.makedirs(confdir)
    with open(os.path.join(confdir, "10-it.conflist"), "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": NETNAME, "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ipam}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}, f)
    assert conditions(c.call("Status"))["NetworkReady"].status is True

    from google.protobuf import json_format
    cfg = json_format.ParseDict({
        "metadata": {"name": "cni-pod", "namespace": "it", "uid": "u-cni", "attempt": 0},
        "port_mappings": [{"protocol": "TCP", "container_port": 80, "host_port": 18480}],
        "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}}},
        c.api.PodSandboxConfig())
    pod = c.call("RunPodSandbox", config=cfg).pod_sandbox_id
    ip = c.call("PodSandboxStatus", pod_sandbox_id=pod).status.network.ip
    assert ip.startswith("10.234.0."), ip
    netns = os.path.join(d.state, "netns", pod)
    addrs = sh("nsenter", f"--net={netns}", "ip", "-o", "addr", "show", "eth0").stdout
    assert ip + "/24" in addrs
    assert os.listdir(os.path.join(ipam, NETNAME)).count(ip) == 1
    cache = os.path.join(d.state, "network", "cni", pod + ".json")
    assert json.load(open(cache))["config"]["name"] == NETNAME
    c.close()

    # a restart in between: DEL still finds the cached result
    d.stop()
    d.start()
    c = d.client()
    c.call("StopPodSandbox", pod_sandbox_id=pod)
    assert not os.path.exists(cache)
    assert [n for n in os.listdir(os.path.join(ipam, NETNAME)) if n.startswith("10.")] == []
    assert os.listdir(f"/sys/class/net/{BRIDGE}/brif") == []
    assert not any(ch.startswith("CNI-DN-") for ch in nat_chains())
    c.call("StopPodSandbox", pod_sandbox_id=pod)
    c.call("RemovePodSandbox", pod_sandbox_id=pod)
    c.close()
