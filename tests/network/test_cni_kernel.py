"""CNI mode against the real kernel with Debian's containernetworking-plugins (bridge,
host-local, portmap in /usr/lib/cni), through the rmnet-test driver. Uses its own bridge,
subnet and IPAM data dir; removes them, and the iptables chains portmap made (unless they
were there before), even when a test fails. Needs root."""
import json
import os
import shlex
import socket
import subprocess

import pytest

from rmnet import Driver, driver_binary, node_address as node_address_skipping, sh

BIN_DIR = "/usr/lib/cni"
BRIDGE = "rmcnitest0"
SUBNET = "10.233.0.0/24"
GATEWAY = "10.233.0.1"
NETNAME = "rmcnitest"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not all(os.access(os.path.join(BIN_DIR, p), os.X_OK)
                               for p in ("bridge", "host-local", "portmap")),
                       reason="containernetworking-plugins is not installed"),
]


def nat_chains():
    out = sh("iptables-save", "-t", "nat").stdout
    return sorted(l[1:].split()[0] for l in out.splitlines() if l.startswith(":"))


def bridge_ports():
    if not os.path.exists(f"/sys/class/net/{BRIDGE}"):
        return []
    return sorted(os.listdir(f"/sys/class/net/{BRIDGE}/brif"))


def node_address():
    return node_address_skipping((BRIDGE, "veth", "rm"))


class Cni(Driver):
    def __init__(self, binary, base):
        confdir = os.path.join(base, "net.d")
        super().__init__(binary, base, json.dumps({
            "mode": "cni", "cni_conf_dir": confdir, "cni_bin_dir": f"/nonexistent:{BIN_DIR}",
            "cni_plugin_timeout": 30}))
        self.confdir = confdir
        self.ipamdir = os.path.join(base, "ipam")
        os.makedirs(self.confdir)
        self.chains_before = nat_chains()

    def write_conflist(self):
        conf = {
            "cniVersion": "1.0.0",
            "name": NETNAME,
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.ipamdir}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        with open(os.path.join(self.confdir, "10-test.conflist"), "w") as f:
            json.dump(conf, f)

    def ipam_ips(self):
        d = os.path.join(self.ipamdir, NETNAME)
        if not os.path.isdir(d):
            return []
        return sorted(n for n in os.listdir(d) if n.startswith("10.233."))

    def cache(self):
        d = os.path.join(self.store + "-state", "network", "cni")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def cleanup(self):
        self.stop_procs()
        self.unpin()
        sh("ip", "link", "del", BRIDGE, check=False)
        # portmap's chains: the per-pod ones (if a DEL failed) and, when the test made
        # them, the top-level ones with the jumps into them
        new = [c for c in nat_chains() if c not in self.chains_before and c.startswith("CNI-")]
        if new:
            out = sh("iptables-save", "-t", "nat").stdout
            for line in out.splitlines():
                if line.startswith("-A ") and any(f"-j {c}" in line for c in new):
                    sh("iptables", "-t", "nat", "-D", *shlex.split(line[3:]), check=False)
            for c in new:
                sh("iptables", "-t", "nat", "-F", c, check=False)
            for c in new:
                sh("iptables", "-t", "nat", "-X", c, check=False)


@pytest.fixture
def cni(request, tmp_path):
    c = Cni(driver_binary(request), str(tmp_path))
    try:
        yield c
    finally:
        c.cleanup()
    assert not os.path.exists(f"/sys/class/net/{BRIDGE}"), "cleanup left the bridge"
    assert [x for x in nat_chains() if x not in c.chains_before] == [], "cleanup left chains"


def pod_id(c):
    return c * 64


def test_cni_ready_once_the_config_appears(cni):
    r = cni.run("ready")
    assert r.stdout.split()[:2] == ["false", "NetworkPluginNotReady"]
    assert cni.confdir in r.stdout
    cni.write_conflist()
    assert cni.run("ready").stdout.split()[0] == "true"


def test_cni_add_del_with_real_plugins(cni):
    cni.write_conflist()
    a = cni.make_netns("a")
    ip = cni.run("setup", pod_id("a"), a, "tcp::18380:8080").stdout.split()[0]
    assert ip.startswith("10.233.0.") and ip != GATEWAY
    # the pod: eth0 with the address, a default route via the bridge's gateway
    eth0 = json.loads(cni.in_ns(a, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    assert any(x["local"] == ip and x["prefixlen"] == 24 for x in eth0["addr_info"])
    assert f"default via {GATEWAY} dev eth0" in cni.in_ns(a, "ip", "route").stdout
    assert len(bridge_ports()) == 1
    assert cni.ipam_ips() == [ip]
    assert cni.cache() == [pod_id("a") + ".json"]
    cached = json.load(open(os.path.join(cni.store + "-state", "network", "cni",
                                         pod_id("a") + ".json")))
    assert cached["result"]["ips"][0]["address"] == ip + "/24"
    assert cni.in_ns(a, "ping", "-c1", "-W2", GATEWAY).returncode == 0
    # the hostPort, through portmap's DNAT, from the node's address
    code = ("import socket\nt=socket.socket();t.setsockopt(socket.SOL_SOCKET,"
            "socket.SO_REUSEADDR,1)\nt.bind(('0.0.0.0',8080));t.listen(4)\n"
            "print('ready',flush=True)\nwhile True:\n c,_=t.accept();c.sendall(b'pong');"
            "c.close()\n")
    p = subprocess.Popen(["nsenter", f"--net={a}", "/usr/bin/python3", "-c", code],
                         stdout=subprocess.PIPE, text=True)
    cni.procs.append(p)
    assert p.stdout.readline().strip() == "ready"
    with socket.create_connection((node_address(), 18380), timeout=3) as s:
        assert s.recv(10) == b"pong"
    assert any(c.startswith("CNI-DN-") for c in nat_chains())
    # the same setup again is answered from the cache
    assert cni.run("setup", pod_id("a"), a).stdout.split()[0] == ip
    assert len(bridge_ports()) == 1
    # DEL: the pod's interface, address and DNAT chain go; a second DEL is fine
    cni.run("teardown", pod_id("a"), a)
    assert [l["ifname"] for l in json.loads(cni.in_ns(a, "ip", "-j", "link").stdout)] == ["lo"]
    assert bridge_ports() == [] and cni.ipam_ips() == [] and cni.cache() == []
    assert not any(c.startswith("CNI-DN-") for c in nat_chains())
    cni.run("teardown", pod_id("a"), a)


def test_cni_del_after_the_netns_is_gone(cni):
    cni.write_conflist()
    b = cni.make_netns("b")
    cni.run("setup", pod_id("b"), b, "udp::18381:53")
    assert len(cni.ipam_ips()) == 1
    sh("umount", b)
    os.unlink(b)
    cni.run("teardown", pod_id("b"), b)
    assert cni.ipam_ips() == [] and cni.cache() == [] and bridge_ports() == []
    assert not any(c.startswith("CNI-DN-") for c in nat_chains())


def test_cni_failed_add_rolls_back_and_reconcile(cni):
    cni.write_conflist()
    # a pod netns path that is not a namespace: bridge's ADD fails, nothing is left
    bogus = os.path.join(cni.nsdir, "bogus")
    open(bogus, "w").close()
    r = cni.run("setup", pod_id("c"), bogus, check=False)
    assert r.returncode != 0 and 'plugin "bridge" (1 of 2) ADD failed' in r.stderr, r.stderr
    assert cni.ipam_ips() == [] and cni.cache() == [] and bridge_ports() == []
    # reconcile DELs the pods that are not live and keeps the one that is
    live, dead = cni.make_netns("live"), cni.make_netns("dead")
    ip_live = cni.run("setup", pod_id("1"), live).stdout.split()[0]
    cni.run("setup", pod_id("2"), dead)
    cni.run("reconcile", pod_id("1"))
    assert cni.cache() == [pod_id("1") + ".json"] and cni.ipam_ips() == [ip_live]
    assert [l["ifname"] for l in json.loads(cni.in_ns(dead, "ip", "-j", "link").stdout)] == ["lo"]
    assert cni.in_ns(live, "ping", "-c1", "-W2", GATEWAY).returncode == 0
    cni.run("reconcile")
    assert cni.cache() == [] and cni.ipam_ips() == [] and bridge_ports() == []
