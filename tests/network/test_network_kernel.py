"""The network module against the real kernel, through the rmnet-test driver: bridge,
veth pairs born in pinned namespaces, IPAM records, nftables hostPorts, reconcile.
Needs root. Uses its own bridge, subnet, nft table and veth prefix so that it never
touches a running remorad's network, and removes all of it even when a test fails."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

BRIDGE = "rmtest0"
SUBNET = "10.213.0.0/24"
GATEWAY = "10.213.0.1"
TABLE = "remora_test"
VPREFIX = "rmt"
CONFIG = json.dumps({"bridge": BRIDGE, "subnet": SUBNET, "nft_table": TABLE,
                     "veth_prefix": VPREFIX, "mtu": 1400})

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check)


def host_veths():
    out = sh("ip", "-o", "link", "show").stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return sorted(n for n in names if n.startswith(VPREFIX) and n != BRIDGE)


def nft_state():
    """(rules, map elements) in the test table; (0, 0) when the table is absent."""
    r = sh("nft", "-j", "list", "table", "ip", TABLE, check=False)
    if r.returncode != 0:
        return (0, 0)
    items = json.loads(r.stdout)["nftables"]
    rules = sum(1 for i in items if "rule" in i)
    elems = sum(len(i["map"].get("elem", [])) for i in items if "map" in i)
    return (rules, elems)


def node_address():
    r = sh("ip", "-4", "-o", "addr", "show", "scope", "global", check=False)
    for line in r.stdout.splitlines():
        f = line.split()
        if f[1] != BRIDGE and not f[1].startswith(VPREFIX):
            return f[3].split("/")[0]
    pytest.skip("the node has no global IPv4 address")


class Net:
    def __init__(self, binary, base):
        self.binary = binary
        self.base = base
        self.store = os.path.join(base, "store")
        self.nsdir = os.path.join(base, "netns")
        os.makedirs(self.nsdir)
        self.netns = []
        self.procs = []

    def run(self, *args, check=True, config=CONFIG):
        r = subprocess.run([self.binary, config, self.store, *args], capture_output=True,
                           text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"rmnet-test {' '.join(args)}: {r.stderr}")
        return r

    def make_netns(self, name):
        """A pinned namespace the way the sandbox layer makes one: a bind-mounted nsfs."""
        path = os.path.join(self.nsdir, name)
        open(path, "w").close()
        self.netns.append(path)
        sh("unshare", f"--net={path}", "true")
        return path

    def setup(self, pod, ns, *ports):
        return self.run("setup", pod, ns, *ports).stdout.split()[0]

    def records(self):
        d = os.path.join(self.store, "network")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def in_ns(self, ns, *args, **kw):
        return subprocess.run(["nsenter", f"--net={ns}", *args], capture_output=True, text=True,
                              **kw)

    def serve(self, ns, tcp_port=0, udp_port=0):
        """A listener inside ns answering TCP with b"pong" and echoing UDP."""
        code = f"""
import socket, select, sys
socks = []
if {tcp_port}:
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("0.0.0.0", {tcp_port})); t.listen(16); socks.append(t)
if {udp_port}:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", {udp_port}))
    socks.append(u)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        if s.type == socket.SOCK_STREAM:
            c, _ = s.accept(); c.sendall(b"pong"); c.close()
        else:
            data, peer = s.recvfrom(100); s.sendto(data, peer)
"""
        p = subprocess.Popen(["nsenter", f"--net={ns}", "/usr/bin/python3", "-c", code],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return p

    def cleanup(self):
        for p in self.procs:
            p.kill()
            p.wait()
        for n in host_veths():
            sh("ip", "link", "del", n, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        sh("nft", "delete", "table", "ip", TABLE, check=False)
        for path in self.netns:
            sh("umount", path, check=False)


@pytest.fixture
def net(request, tmp_path):
    binary = request.config.getoption("--rmnet")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail("pass --rmnet=/path/to/rmnet-test (ctest does this)")
    n = Net(binary, str(tmp_path))
    try:
        yield n
    finally:
        n.cleanup()
    assert host_veths() == [], "cleanup left veths"


def tcp_get(host, port):
    with socket.create_connection((host, port), timeout=3) as s:
        return s.recv(100)


def udp_echo(host, port, payload=b"ping-udp"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(payload, (host, port))
        return s.recvfrom(100)[0]


def pod_id(c):
    return c * 64


def test_ready_and_bridge(net):
    assert net.run("ready").stdout.split()[0] == "true"
    link = json.loads(sh("ip", "-j", "-d", "addr", "show", "dev", BRIDGE).stdout)[0]
    assert link["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in link["flags"]
    assert link["mtu"] == 1400
    assert any(a["local"] == GATEWAY and a["prefixlen"] == 24 for a in link["addr_info"])
    assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == "1"
    assert open(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").read().strip() == "1"
    # a second open adopts the existing bridge
    assert net.run("ready").stdout.split()[0] == "true"


@pytest.mark.parametrize("cfg,key", [
    ({"mode": "overlay"}, "network.mode"),
    ({"subnet": "10.1.2.3/16"}, "network.subnet"),
    ({"subnet": "10.1.0.0/31"}, "network.subnet"),
    ({"subnet": "nonsense"}, "network.subnet"),
    ({"mtu": 100}, "network.mtu"),
    ({"bridge": "a/b"}, "network.bridge"),
    ({"bridge": "x" * 16}, "network.bridge"),
    ({"nft_table": "bad table"}, "network.nft_table"),
    ({"colour": "blue"}, "network.colour"),
])
def test_invalid_config_names_the_key(net, cfg, key):
    r = net.run("ready", check=False, config=json.dumps(cfg))
    assert r.returncode != 0
    assert key in r.stderr and "INVALID_ARGUMENT" in r.stderr


def test_mode_none_and_cni_are_not_ready(net):
    r = net.run("ready", config=json.dumps({"mode": "none", "bridge": BRIDGE}))
    assert r.stdout.split()[:2] == ["false", "NetworkDisabled"]
    missing = os.path.join(net.base, "no-net.d")
    r = net.run("ready", config=json.dumps({"mode": "cni", "bridge": BRIDGE,
                                            "cni_conf_dir": missing}))
    assert r.stdout.split()[:2] == ["false", "NetworkPluginNotReady"]
    assert missing in r.stdout
    assert not os.path.exists(f"/sys/class/net/{BRIDGE}"), "mode none/cni made a bridge"


def test_two_pods_reach_each_other_and_the_node_reaches_them(net):
    a, b = net.make_netns("a"), net.make_netns("b")
    ip_a = net.setup(pod_id("a"), a, "tcp::18080:8080", "sctp::18082:8082")
    ip_b = net.setup(pod_id("b"), b, "udp:127.0.0.1:15353:5353")
    assert ip_a != ip_b and ip_a.startswith("10.213.0.") and ip_b.startswith("10.213.0.")
    # inside the pod: eth0 with the address, MTU of the bridge, lo up, default route
    eth0 = json.loads(net.in_ns(a, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    assert eth0["mtu"] == 1400 and "UP" in eth0["flags"]
    assert any(x["local"] == ip_a for x in eth0["addr_info"])
    lo = json.loads(net.in_ns(a, "ip", "-j", "link", "show", "lo").stdout)[0]
    assert "UP" in lo["flags"]
    assert f"default via {GATEWAY} dev eth0" in net.in_ns(a, "ip", "route").stdout
    # the host end is on the bridge
    assert len(host_veths()) == 2
    for v in host_veths():
        assert json.loads(sh("ip", "-j", "link", "show", v).stdout)[0]["master"] == BRIDGE
    # pod to pod and node to pod
    assert net.in_ns(a, "ping", "-c1", "-W2", ip_b).returncode == 0
    assert net.in_ns(b, "ping", "-c1", "-W2", ip_a).returncode == 0
    assert sh("ping", "-c1", "-W2", ip_a, check=False).returncode == 0
    net.serve(a, tcp_port=8080)
    net.serve(b, udp_port=5353)
    assert tcp_get(ip_a, 8080) == b"pong"
    # pod b reaches pod a over TCP
    r = net.in_ns(b, "/usr/bin/python3", "-c",
                  f"import socket;print(socket.create_connection(('{ip_a}',8080),3).recv(9))")
    assert "pong" in r.stdout, r.stderr
    # hostPort on 127.0.0.1 and on the node's address; UDP mapping bound to 127.0.0.1
    assert tcp_get("127.0.0.1", 18080) == b"pong"
    assert tcp_get(node_address(), 18080) == b"pong"
    assert udp_echo("127.0.0.1", 15353) == b"ping-udp"
    rules, elems = nft_state()
    assert elems == 3
    listing = sh("nft", "list", "table", "ip", TABLE).stdout
    assert "sctp . 18082" in listing
    # teardown leaves no veth, no record, no element; the second teardown is a no-op
    net.run("teardown", pod_id("a"), a)
    net.run("teardown", pod_id("b"), b)
    net.run("teardown", pod_id("b"), b)
    assert host_veths() == []
    assert net.records() == []
    assert nft_state() == (rules, 0)
    with pytest.raises(OSError):
        tcp_get("127.0.0.1", 18080)
    # the namespaces are empty again (only lo)
    links = json.loads(net.in_ns(a, "ip", "-j", "link").stdout)
    assert [l["ifname"] for l in links] == ["lo"]


def test_fifty_cycles_leak_nothing_and_latency(net):
    ns = net.make_netns("bench")
    net.run("ready")
    before = (host_veths(), net.records(), nft_state(),
              sh("ip", "-o", "addr").stdout.count("\n"))
    out = net.run("bench", "50", pod_id("c"), ns).stdout.strip()
    after = (host_veths(), net.records(), nft_state(),
             sh("ip", "-o", "addr").stdout.count("\n"))
    assert before == after
    assert [l["ifname"] for l in json.loads(net.in_ns(ns, "ip", "-j", "link").stdout)] == ["lo"]
    nums = dict(kv.split("=") for kv in out.split())
    sys.stderr.write(f"\nnetwork latency over 50 cycles: {out}\n")
    with open(os.path.join(os.path.dirname(net.binary), "network-latency.txt"), "w") as f:
        f.write(out + "\n")
    assert set(nums) == {"setup_p50_us", "setup_p95_us", "teardown_p50_us", "teardown_p95_us"}


def test_failed_setup_rolls_back_and_names_the_step(net):
    a, b = net.make_netns("a"), net.make_netns("b")
    net.setup(pod_id("a"), a, "tcp::18090:80")
    before = (host_veths(), nft_state())
    # the host port is taken: the last step fails, the veth and address are undone
    r = net.run("setup", pod_id("b"), b, "tcp::18090:81", check=False)
    assert r.returncode != 0 and "port mappings" in r.stderr, r.stderr
    assert (host_veths(), nft_state()) == before
    assert net.records() == [pod_id("a") + ".json"]
    assert [l["ifname"] for l in json.loads(net.in_ns(b, "ip", "-j", "link").stdout)] == ["lo"]
    # a namespace that does not exist
    r = net.run("setup", pod_id("b"), os.path.join(net.nsdir, "missing"), check=False)
    assert r.returncode != 0 and "open network namespace" in r.stderr, r.stderr
    assert net.records() == [pod_id("a") + ".json"]
    # bad port mappings are refused up front, naming the field
    r = net.run("setup", pod_id("b"), b, "tcp::0:80", check=False)
    assert "port_mappings[0].host_port" in r.stderr and "INVALID_ARGUMENT" in r.stderr
    r = net.run("setup", pod_id("b"), b, "tcp:fe80::1:80:80", check=False)
    assert r.returncode != 0
    # the address the failed setups took is free again: b gets the next one and works
    ip_b = net.setup(pod_id("b"), b)
    assert net.in_ns(b, "ping", "-c1", "-W2", GATEWAY).returncode == 0
    net.run("teardown", pod_id("a"))
    net.run("teardown", pod_id("b"))
    assert host_veths() == [] and net.records() == []
    assert ip_b


def test_concurrent_setups_get_distinct_addresses(net):
    # 16 threads of one process set up pods at once; then a new open sees the records
    # and allocates around them.
    n = 16
    for i in range(n):
        net.make_netns(str(i))
    out = net.run("setup-par", "t", net.nsdir, str(n)).stdout.split()
    ips = dict(zip(out[0::2], out[1::2]))
    assert len(ips) == n and len(set(ips.values())) == n
    assert len(net.records()) == n and len(host_veths()) == n
    extra = net.make_netns("extra")
    assert net.setup(pod_id("e"), extra) not in ips.values()
    for pod in ips:
        net.run("teardown", pod)
    net.run("teardown", pod_id("e"))
    assert net.records() == [] and host_veths() == []


def test_reconcile_undoes_unfinished_and_dead_pods(net):
    live, dead, half = (net.make_netns(n) for n in ("live", "dead", "half"))
    ip_live = net.setup(pod_id("1"), live, "tcp::18100:80")
    net.setup(pod_id("2"), dead, "tcp::18101:80")
    net.setup(pod_id("3"), half, "udp::18102:80")
    # pod 3 crashed before its setup finished: its record still says pending
    rec = os.path.join(net.store, "network", pod_id("3") + ".json")
    doc = json.load(open(rec))
    doc["state"] = "pending"
    json.dump(doc, open(rec, "w"))
    # a veth on the bridge that no record owns
    sh("ip", "link", "add", VPREFIX + "stray", "type", "veth", "peer", "name", "rmtstray-p")
    sh("ip", "link", "set", VPREFIX + "stray", "master", BRIDGE)
    net.run("reconcile", pod_id("1"))
    assert net.records() == [pod_id("1") + ".json"]
    assert len(host_veths()) == 1
    assert nft_state()[1] == 1
    assert net.in_ns(live, "ping", "-c1", "-W2", GATEWAY).returncode == 0
    net.serve(live, tcp_port=80)
    assert tcp_get("127.0.0.1", 18100) == b"pong"
    for ns in (dead, half):
        assert [l["ifname"] for l in json.loads(net.in_ns(ns, "ip", "-j", "link").stdout)] == ["lo"]
    net.run("reconcile")
    assert host_veths() == [] and net.records() == [] and nft_state()[1] == 0
    assert ip_live


def test_kill_9_during_setup_then_reconcile_cleans_everything(net):
    n = 40
    for i in range(n):
        net.make_netns(str(i))
    net.run("ready")
    base = (host_veths(), nft_state())
    p = subprocess.Popen([net.binary, CONFIG, net.store, "setup-loop", "k", net.nsdir, str(n)],
                         stdout=subprocess.PIPE, text=True)
    for _ in range(5):
        p.stdout.readline()
    time.sleep(0.004)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert 0 < len(net.records()) < n + 1
    net.run("reconcile")
    assert net.records() == []
    assert (host_veths(), nft_state()) == base
    for i in range(n):
        links = json.loads(net.in_ns(os.path.join(net.nsdir, str(i)), "ip", "-j", "link").stdout)
        assert [l["ifname"] for l in links] == ["lo"]
