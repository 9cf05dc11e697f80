"""remorad's built-in bridge in dual stack (network.subnet6): a pod gets an IPv4 and an
IPv6 address, PodSandboxStatus reports them (IPv4 as network.ip, IPv6 in additional_ips),
hostPorts work over IPv6, and stop/remove leave nothing: no veth, no record, no nftables
element, no pin. Uses its own bridge, subnets, nft table and veth prefix, never remora0."""
import json
import os
import socket
import subprocess
import tempfile
import time

import pytest
from google.protobuf import json_format

BRIDGE = "rmv6it0"
SUBNET = "10.236.0.0/24"
SUBNET6 = "fd77:1::/64"
GATEWAY6 = "fd77:1::1"
TABLE = "remora_v6it"
VPREFIX = "rm6i"
CONFIG = {"network": {"bridge": BRIDGE, "subnet": SUBNET, "subnet6": SUBNET6,
                      "nft_table": TABLE, "veth_prefix": VPREFIX}}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check)


def nft_elements(family):
    r = sh("nft", "-j", "list", "table", family, TABLE, check=False)
    if r.returncode != 0:
        return None
    items = json.loads(r.stdout)["nftables"]
    return sum(len(i["map"].get("elem", [])) for i in items if "map" in i)


def host_veths():
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(VPREFIX))


def link_flags(name):
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return int(f.read(), 16)
    except FileNotFoundError:
        return 0  # already deleted


def in_ns(netns, *args):
    return sh("nsenter", f"--net={netns}", *args).stdout


def tcp_get(host, port):
    with socket.create_connection((host, port), timeout=3) as s:
        return s.recv(100)


@pytest.fixture
def v6_base():
    base = tempfile.mkdtemp(prefix="remora-it-", dir="/tmp")
    yield base
    for v in host_veths():
        sh("ip", "link", "del", v, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)
    sh("nft", "delete", "table", "ip", TABLE, check=False)
    sh("nft", "delete", "table", "ip6", TABLE, check=False)


def test_dual_stack_pod_lifecycle(make_daemon, v6_base):
    d = make_daemon(base=v6_base, config=json.dumps(CONFIG)).start()
    c = d.client()
    statuses = {x.type: x for x in c.call("Status").status.conditions}
    assert statuses["NetworkReady"].status is True
    cfg = json_format.ParseDict({
        "metadata": {"name": "v6-pod", "namespace": "it", "uid": "u-v6", "attempt": 0},
        "port_mappings": [
            {"protocol": "TCP", "container_port": 8080, "host_port": 18490},
            {"protocol": "TCP", "container_port": 8080, "host_port": 18491,
             "host_ip": GATEWAY6}],
        "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}}},
        c.api.PodSandboxConfig())
    pod = c.call("RunPodSandbox", config=cfg).pod_sandbox_id
    net = c.call("PodSandboxStatus", pod_sandbox_id=pod).status.network
    ip = net.ip
    assert ip.startswith("10.236.0."), ip
    assert len(net.additional_ips) == 1
    ip6 = net.additional_ips[0].ip
    assert ip6.startswith("fd77:1::") and ip6 != GATEWAY6, ip6

    netns = os.path.join(d.state, "netns", pod)
    addrs = in_ns(netns, "ip", "-o", "addr", "show", "eth0")
    assert ip + "/24" in addrs and ip6 + "/64" in addrs
    assert f"default via {GATEWAY6} dev eth0" in in_ns(netns, "ip", "-6", "route")
    assert sh("nsenter", f"--net={netns}", "ping", "-6", "-c1", "-W2", GATEWAY6,
              check=False).returncode == 0
    # hostPorts over IPv6 from the node, and IPv4 as before
    server = subprocess.Popen(
        ["nsenter", f"--net={netns}", "/usr/bin/python3", "-c",
         "import socket\n"
         "s = socket.socket(socket.AF_INET6)\n"
         "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
         "s.bind(('::', 8080)); s.listen(8); print('ready', flush=True)\n"
         "while True:\n"
         "    c, _ = s.accept(); c.sendall(b'pong'); c.close()\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        assert tcp_get(GATEWAY6, 18490) == b"pong"
        assert tcp_get(GATEWAY6, 18491) == b"pong"
        assert tcp_get("127.0.0.1", 18490) == b"pong"
    finally:
        server.kill()
        server.wait()
    assert nft_elements("ip6") == 2 and nft_elements("ip") == 1
    records = os.path.join(d.root, "network")
    rec = json.load(open(os.path.join(records, pod + ".json")))
    assert rec["ip"] == ip and rec["ip6"] == ip6
    c.close()

    # a restart keeps the pod's addresses and its IPv6 hostPorts
    d.stop()
    d.start()
    c = d.client()
    net = c.call("PodSandboxStatus", pod_sandbox_id=pod).status.network
    assert net.ip == ip and [x.ip for x in net.additional_ips] == [ip6]
    assert nft_elements("ip6") == 2

    c.call("StopPodSandbox", pod_sandbox_id=pod)
    # the veth is down at once and deleted just after, off the call's path
    assert all(not (link_flags(v) & 1) for v in host_veths()), "a stopped pod's veth is down"
    deadline = time.monotonic() + 5
    while host_veths() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert host_veths() == []
    assert os.listdir(records) == []
    assert nft_elements("ip6") == 0 and nft_elements("ip") == 0
    assert os.listdir(f"/sys/class/net/{BRIDGE}/brif") == []
    with pytest.raises(OSError):
        tcp_get(GATEWAY6, 18490)
    c.call("RemovePodSandbox", pod_sandbox_id=pod)
    assert os.listdir(os.path.join(d.state, "netns")) == []
    assert len(c.call("ListPodSandbox").items) == 0
    c.close()
