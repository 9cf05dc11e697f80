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

from rmnet import Driver, driver_binary, node_address as node_address_skipping, sh

BRIDGE = "rmtest0"
SUBNET = "10.213.0.0/24"
GATEWAY = "10.213.0.1"
TABLE = "remora_test"
VPREFIX = "rmt"
CONFIG = json.dumps({"bridge": BRIDGE, "subnet": SUBNET, "nft_table": TABLE,
                     "veth_prefix": VPREFIX, "mtu": 1400})
SUBNET6 = "fd77:213::/64"
GATEWAY6 = "fd77:213::1"
CONFIG6 = json.dumps({"bridge": BRIDGE, "subnet": SUBNET, "subnet6": SUBNET6, "nft_table": TABLE,
                      "veth_prefix": VPREFIX, "mtu": 1400})

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def host_veths():
    out = sh("ip", "-o", "link", "show").stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return sorted(n for n in names if n.startswith(VPREFIX) and n != BRIDGE)


def own_addresses():
    """Addresses on this test's bridge and veths: what a leak would leave. Other
    interfaces of the host (another runtime's pods coming and going) are not counted."""
    out = sh("ip", "-o", "addr").stdout
    return sorted(" ".join(line.split()[1:4]) for line in out.splitlines()
                  if line.split()[1] == BRIDGE or line.split()[1].startswith(VPREFIX))


def nft_state(family="ip"):
    """(rules, map elements) in the test table; (0, 0) when the table is absent."""
    r = sh("nft", "-j", "list", "table", family, TABLE, check=False)
    if r.returncode != 0:
        return (0, 0)
    items = json.loads(r.stdout)["nftables"]
    rules = sum(1 for i in items if "rule" in i)
    elems = sum(len(i["map"].get("elem", [])) for i in items if "map" in i)
    return (rules, elems)


def node_address():
    return node_address_skipping((BRIDGE, VPREFIX))


def node_address6():
    """A global IPv6 address of the node outside the test bridge, or None."""
    r = sh("ip", "-6", "-o", "addr", "show", "scope", "global", check=False)
    for line in r.stdout.splitlines():
        f = line.split()
        if f[1] != BRIDGE and not f[1].startswith(VPREFIX) and "tentative" not in line:
            return f[3].split("/")[0]
    return None


def addrs(ns_runner, ns, family):
    """Addresses of eth0 in ns of one family ("inet" or "inet6"), without link-local."""
    out = ns_runner(ns, "ip", "-j", "addr", "show", "eth0").stdout
    info = json.loads(out)[0]["addr_info"] if out.strip() else []
    return [(a["local"], a["prefixlen"]) for a in info
            if a["family"] == family and a.get("scope") != "link"]


class Net(Driver):
    def __init__(self, binary, base):
        super().__init__(binary, base, CONFIG)

    def setup(self, pod, ns, *ports):
        return self.run("setup", pod, ns, *ports).stdout.split()[0]

    def setup6(self, pod, ns, *ports):
        """Dual-stack setup: (IPv4, IPv6), in the order the module reports them."""
        out = self.run("setup", pod, ns, *ports, config=CONFIG6).stdout.split()
        assert len(out) == 2, out
        return out[0], out[1]

    def records(self):
        d = os.path.join(self.store, "network")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def serve(self, ns, tcp_port=0, udp_port=0, tcp6=False):
        """A listener inside ns answering TCP with b"pong" and echoing UDP; tcp6: the TCP
        one takes IPv6 and IPv4 on one socket."""
        code = f"""
import socket, select, sys
socks = []
if {tcp_port}:
    t = socket.socket(socket.AF_INET6 if {tcp6} else socket.AF_INET)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if {tcp6}:
        t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    t.bind(("::" if {tcp6} else "0.0.0.0", {tcp_port})); t.listen(16); socks.append(t)
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
        self.stop_procs()
        for n in host_veths():
            sh("ip", "link", "del", n, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        sh("nft", "delete", "table", "ip", TABLE, check=False)
        sh("nft", "delete", "table", "ip6", TABLE, check=False)
        self.unpin()


@pytest.fixture
def net(request, tmp_path):
    n = Net(driver_binary(request), str(tmp_path))
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
    nss = [net.make_netns(str(i)) for i in range(50)]
    net.run("ready")
    before = (host_veths(), net.records(), nft_state(), own_addresses())
    out = net.run("bench", "50", "c", net.nsdir).stdout.strip()
    # the driver has exited: the veths it queued for deletion are gone with it
    after = (host_veths(), net.records(), nft_state(), own_addresses())
    assert before == after
    for ns in nss:
        assert [l["ifname"] for l in json.loads(net.in_ns(ns, "ip", "-j", "link").stdout)] == ["lo"]
    nums = dict(kv.split("=") for kv in out.split())
    sys.stderr.write(f"\nnetwork latency over 50 cycles: {out}\n")
    with open(os.path.join(os.path.dirname(net.binary), "network-latency.txt"), "w") as f:
        f.write(out + "\n")
    assert set(nums) == {"setup_p50_us", "setup_p95_us", "teardown_p50_us", "teardown_p95_us"}


def test_same_pod_id_again_right_after_teardown(net):
    # Teardown only sets the veth down and leaves its deletion to a background thread; a
    # setup that wants the same name at once must still get it.
    for i in range(5):
        net.make_netns(str(i))
    net.run("ready")
    before = (host_veths(), net.records(), nft_state())
    net.run("recycle", pod_id("r"), net.nsdir, "5")
    assert (host_veths(), net.records(), nft_state()) == before


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


def kill_9_during_setup_then_reconcile(net, n, config, family):
    """Set up n pods in a driver that is killed a few pods in; reconcile must undo every
    half-made one: no record, veth, nft element, or eth0 left in any namespace."""
    for i in range(n):
        net.make_netns(str(i))
    net.run("ready", config=config)
    base = (host_veths(), nft_state(family))
    p = subprocess.Popen([net.binary, config, net.store, "setup-loop", "k", net.nsdir, str(n)],
                         stdout=subprocess.PIPE, text=True)
    for _ in range(5):
        p.stdout.readline()
    time.sleep(0.004)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert 0 < len(net.records()) < n + 1
    net.run("reconcile", config=config)
    assert net.records() == []
    assert (host_veths(), nft_state(family)) == base
    for i in range(n):
        ns = os.path.join(net.nsdir, str(i))
        assert [l["ifname"] for l in json.loads(net.in_ns(ns, "ip", "-j", "link").stdout)] \
            == ["lo"]


def test_kill_9_during_setup_then_reconcile_cleans_everything(net):
    kill_9_during_setup_then_reconcile(net, 40, CONFIG, "ip")


# ---- dual stack: network.subnet6 ----

def sysctl(path):
    with open(os.path.join("/proc/sys/net/ipv6", path)) as f:
        return f.read().strip()


def test_dual_stack_bridge(net):
    assert net.run("ready", config=CONFIG6).stdout.split()[0] == "true"
    link = json.loads(sh("ip", "-j", "addr", "show", "dev", BRIDGE).stdout)[0]
    gw = [a for a in link["addr_info"] if a["family"] == "inet6" and a["local"] == GATEWAY6]
    assert gw and gw[0]["prefixlen"] == 64 and gw[0].get("nodad"), link["addr_info"]
    assert not gw[0].get("tentative")
    assert any(a["local"] == GATEWAY for a in link["addr_info"])
    assert sysctl("conf/all/forwarding") == "1"
    assert sysctl(f"conf/{BRIDGE}/disable_ipv6") == "0"
    assert nft_state("ip6")[0] > 0
    # an IPv4-only open drops the ip6 table a dual-stack run left, keeps the ip one
    assert net.run("ready").stdout.split()[0] == "true"
    assert nft_state("ip6") == (0, 0) and nft_state("ip")[0] > 0


def test_dual_stack_pod_addresses_routes_hostports_and_teardown(net):
    a, b = net.make_netns("a"), net.make_netns("b")
    node6 = node_address6()
    ports = ["tcp::18300:8080", f"tcp:[{GATEWAY6}]:18301:8080", "tcp:127.0.0.1:18302:8080"]
    if node6:
        ports.append(f"tcp:[{node6}]:18303:8080")
    ip_a, ip6_a = net.setup6(pod_id("a"), a, *ports)
    ip_b, ip6_b = net.setup6(pod_id("b"), b)
    assert ip_a.startswith("10.213.0.") and ip6_a.startswith("fd77:213::")
    assert ip6_a != ip6_b and ip6_a != GATEWAY6
    assert addrs(net.in_ns, a, "inet") == [(ip_a, 24)]
    assert addrs(net.in_ns, a, "inet6") == [(ip6_a, 64)]
    eth0 = json.loads(net.in_ns(a, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    v6 = [x for x in eth0["addr_info"] if x["local"] == ip6_a][0]
    assert v6.get("nodad") and not v6.get("tentative")
    assert f"default via {GATEWAY6} dev eth0" in net.in_ns(a, "ip", "-6", "route").stdout
    assert f"default via {GATEWAY} dev eth0" in net.in_ns(a, "ip", "route").stdout
    # pod to gateway, pod to pod, node to pod, all over IPv6
    assert net.in_ns(a, "ping", "-6", "-c1", "-W2", GATEWAY6).returncode == 0
    assert net.in_ns(b, "ping", "-6", "-c1", "-W2", ip6_a).returncode == 0
    assert sh("ping", "-6", "-c1", "-W2", ip6_a, check=False).returncode == 0
    net.serve(a, tcp_port=8080, tcp6=True)
    assert tcp_get(ip6_a, 8080) == b"pong"
    # hostPorts: IPv6 DNAT from the node, on every address and on one; IPv4 as before
    assert tcp_get(GATEWAY6, 18300) == b"pong"
    assert tcp_get(GATEWAY6, 18301) == b"pong"
    assert tcp_get("127.0.0.1", 18300) == b"pong"
    assert tcp_get("127.0.0.1", 18302) == b"pong"
    if node6:
        assert tcp_get(node6, 18300) == b"pong"
        assert tcp_get(node6, 18303) == b"pong"
        with pytest.raises(OSError):
            tcp_get(node6, 18301)  # bound to the gateway address only
    # a mapping on one IPv4 host address makes no IPv6 element, one on every address both
    assert nft_state("ip")[1] == 2
    assert nft_state("ip6")[1] == len(ports) - 1
    rules6 = nft_state("ip6")[0]
    # checked while b is still there: every open rebuilds the table from the records
    net.run("teardown", pod_id("a"), a, config=CONFIG6)
    assert nft_state("ip6") == (rules6, 0) and nft_state("ip")[1] == 0
    assert net.records() == [pod_id("b") + ".json"]
    net.run("teardown", pod_id("b"), b, config=CONFIG6)
    assert host_veths() == [] and net.records() == []
    assert nft_state("ip6") == (rules6, 0) and nft_state("ip")[1] == 0
    for ns in (a, b):
        assert [l["ifname"] for l in json.loads(net.in_ns(ns, "ip", "-j", "link").stdout)] \
            == ["lo"]
        assert net.in_ns(ns, "ip", "-6", "route").stdout.strip() == ""
        assert "inet6" not in net.in_ns(ns, "ip", "-6", "addr", "show", "scope", "global").stdout
    with pytest.raises(OSError):
        tcp_get(GATEWAY6, 18300)


def test_ipv6_host_ip_needs_subnet6(net):
    a = net.make_netns("a")
    r = net.run("setup", pod_id("a"), a, f"tcp:[{GATEWAY6}]:18310:80", check=False)
    assert r.returncode != 0
    assert "port_mappings[0].host_ip" in r.stderr and "network.subnet6" in r.stderr, r.stderr
    assert "INVALID_ARGUMENT" in r.stderr
    r = net.run("setup", pod_id("a"), a, "tcp:[nonsense]:18310:80", check=False, config=CONFIG6)
    assert r.returncode != 0 and "port_mappings[0].host_ip" in r.stderr, r.stderr
    assert net.records() == [] and host_veths() == []


def test_dual_stack_failed_setup_rolls_back(net):
    a, b = net.make_netns("a"), net.make_netns("b")
    ip_a, ip6_a = net.setup6(pod_id("a"), a, f"tcp:[{GATEWAY6}]:18320:80")
    before = (host_veths(), nft_state("ip"), nft_state("ip6"))
    # only the IPv6 element collides: the whole batch fails and b's addresses are undone
    r = net.run("setup", pod_id("b"), b, "tcp::18321:80", f"tcp:[{GATEWAY6}]:18320:81",
                check=False, config=CONFIG6)
    assert r.returncode != 0 and "port mappings" in r.stderr, r.stderr
    assert (host_veths(), nft_state("ip"), nft_state("ip6")) == before
    assert net.records() == [pod_id("a") + ".json"]
    assert [l["ifname"] for l in json.loads(net.in_ns(b, "ip", "-j", "link").stdout)] == ["lo"]
    # nothing of the failed attempt blocks b: it sets up with a fresh IPv6 address
    ip_b, ip6_b = net.setup6(pod_id("b"), b)
    assert ip6_b != ip6_a
    assert net.in_ns(b, "ping", "-6", "-c1", "-W2", ip6_a).returncode == 0
    net.run("teardown", pod_id("a"), config=CONFIG6)
    net.run("teardown", pod_id("b"), config=CONFIG6)
    assert host_veths() == [] and net.records() == [] and nft_state("ip6")[1] == 0
    assert ip_a and ip_b


def test_dual_stack_ipam_persists_and_releases(net):
    a, b, c = net.make_netns("a"), net.make_netns("b"), net.make_netns("c")
    _, ip6_a = net.setup6(pod_id("a"), a)
    # another process (a restart of remorad) allocates around the record of a
    _, ip6_b = net.setup6(pod_id("b"), b)
    assert ip6_b != ip6_a
    rec = json.load(open(os.path.join(net.store, "network", pod_id("a") + ".json")))
    assert rec["ip6"] == ip6_a and rec["state"] == "ready"
    # a repeated setup of a ready pod reports the same two addresses
    assert net.setup6(pod_id("a"), a) == (rec["ip"], ip6_a)
    # teardown releases the address: the next process hands it out again
    net.run("teardown", pod_id("a"), config=CONFIG6)
    _, ip6_c = net.setup6(pod_id("c"), c)
    assert ip6_c == ip6_a
    net.run("teardown", pod_id("b"), config=CONFIG6)
    net.run("teardown", pod_id("c"), config=CONFIG6)
    assert net.records() == [] and host_veths() == []


def test_dual_stack_concurrent_setups_get_distinct_addresses(net):
    n = 12
    for i in range(n):
        net.make_netns(str(i))
    lines = net.run("setup-par", "t", net.nsdir, str(n), config=CONFIG6).stdout.splitlines()
    got = [l.split() for l in lines]
    assert len(got) == n and all(len(g) == 3 for g in got), lines
    assert len({g[1] for g in got}) == n and len({g[2] for g in got}) == n
    for pod, _, ip6 in got:
        ns = os.path.join(net.nsdir, pod[1:])
        assert addrs(net.in_ns, ns, "inet6") == [(ip6, 64)]
        net.run("teardown", pod, config=CONFIG6)
    assert net.records() == [] and host_veths() == []


def test_dual_stack_reconcile_after_crash(net):
    live, dead, half = (net.make_netns(n) for n in ("live", "dead", "half"))
    _, ip6_live = net.setup6(pod_id("1"), live, "tcp::18330:80")
    net.setup6(pod_id("2"), dead, "tcp::18331:80")
    net.setup6(pod_id("3"), half, f"tcp:[{GATEWAY6}]:18332:80")
    rec = os.path.join(net.store, "network", pod_id("3") + ".json")
    doc = json.load(open(rec))
    doc["state"] = "pending"
    json.dump(doc, open(rec, "w"))
    assert nft_state("ip6")[1] == 3
    net.run("reconcile", pod_id("1"), config=CONFIG6)
    assert net.records() == [pod_id("1") + ".json"]
    assert len(host_veths()) == 1
    assert nft_state("ip6")[1] == 1 and nft_state("ip")[1] == 1
    for ns in (dead, half):
        assert [l["ifname"] for l in json.loads(net.in_ns(ns, "ip", "-j", "link").stdout)] \
            == ["lo"]
    # the live pod keeps its IPv6 address, route and hostPort (restored at open)
    assert net.in_ns(live, "ping", "-6", "-c1", "-W2", GATEWAY6).returncode == 0
    net.serve(live, tcp_port=80, tcp6=True)
    assert tcp_get(GATEWAY6, 18330) == b"pong"
    with pytest.raises(OSError):
        tcp_get(GATEWAY6, 18332)
    net.run("reconcile", config=CONFIG6)
    assert host_veths() == [] and net.records() == []
    assert nft_state("ip6")[1] == 0 and nft_state("ip")[1] == 0
    assert ip6_live


def test_dual_stack_kill_9_during_setup_then_reconcile(net):
    kill_9_during_setup_then_reconcile(net, 30, CONFIG6, "ip6")
