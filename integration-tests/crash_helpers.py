"""Shared by the crash tests: a remorad that can be started with a crash point armed, the
CRI calls that build a scene, and one count of everything Remora makes on the node, so a
test can say "back to the baseline" after a kill -9 and a clean-up.

The counters are a table (COUNTERS): a helper adding a kind of leftover (exec scratch
dirs, image blobs, ...) adds one function there and every crash test checks it."""
import glob
import json
import os
import signal
import subprocess
import time
import uuid

import grpc
from google.protobuf import json_format

from remora_fixtures import Daemon, it_network_setting

VETH_PREFIX = it_network_setting("veth_prefix")
NFT_TABLE = it_network_setting("nft_table")


class CrashDaemon(Daemon):
    """A Daemon that can be started with REMORA_CRASH_AT set (and only then)."""

    def start(self, wait=True, crash_at=None):
        env = dict(os.environ)
        env.pop("REMORA_CRASH_AT", None)
        if crash_at:
            env["REMORA_CRASH_AT"] = crash_at
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_killed(self, timeout=30):
        """The daemon killed itself at its crash point (SIGKILL)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError("remorad did not reach its crash point:\n" +
                                 self.read_log()[-3000:])
        self.log.close()
        assert rc == -signal.SIGKILL, "remorad exited with %s, not SIGKILL" % rc
        return rc

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.log.close()


def cgroup_mounts():
    """Every cgroup hierarchy mounted on this host (v1 controllers and the v2 tree)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split(" ")[0] in ("cgroup", "cgroup2"):
                out.append(pre.split(" ")[4])
    return out


def ids_on_disk(d):
    """IDs of every pod and container the daemon has anything of on disk: records,
    directories, runc state, exit files. Taken after a crash, before the restart, so the
    counts below also cover what a call that never answered had begun to make."""
    ids = set()
    for pattern in ("root/sandboxes/*", "root/containers/*", "state/containers/*",
                    "state/sandboxes/*", "state/infra/*", "state/runc/*", "state/exits/*",
                    "state/netns/*", "root/network/*"):
        for p in glob.glob(os.path.join(d.base, pattern)):
            name = os.path.basename(p).split(".")[0]
            if name.startswith("infra-"):
                name = name[len("infra-"):]
            if len(name) == 64:
                ids.add(name)
    return ids


def _dir_count(path, pattern="*"):
    return len(glob.glob(os.path.join(path, pattern)))


def _mounts(d, ids, parents):
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if (" " + d.base + "/") in line.split(" - ")[0])


def _pins(d, ids, parents):
    return sum(_dir_count(os.path.join(d.state, k)) for k in ("netns", "ipcns", "utsns"))


def _veths(d, ids, parents):
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines()
               if line.split(": ")[1].split("@")[0].startswith(VETH_PREFIX))


def _ipam(d, ids, parents):
    return _dir_count(os.path.join(d.root, "network"), "*.json")


def _nft_elements(d, ids, parents):
    n = 0
    for family in ("ip", "ip6"):
        r = subprocess.run(["nft", "-j", "list", "table", family, NFT_TABLE],
                           capture_output=True, text=True)
        if r.returncode != 0:
            continue
        for obj in json.loads(r.stdout).get("nftables", []):
            for kind in ("map", "set"):
                if kind in obj:
                    n += len(obj[kind].get("elem", []))
    return n


def _runc_states(d, ids, parents):
    return _dir_count(os.path.join(d.state, "runc"))


def _exit_files(d, ids, parents):
    return _dir_count(os.path.join(d.state, "exits"))


def _records(d, ids, parents):
    return (_dir_count(os.path.join(d.root, "sandboxes"), "*.json") +
            _dir_count(os.path.join(d.root, "containers"), "*.json"))


def _dirs(path):
    return sum(1 for p in glob.glob(os.path.join(path, "*")) if os.path.isdir(p))


def _bundles(d, ids, parents):
    """Per-object directories: bundles, writable layers, pod files, shm dirs, and removed
    containers' directories still in the trash (the watcher empties it)."""
    return sum(_dirs(os.path.join(d.state, k)) for k in ("containers", "sandboxes", "infra")) + \
        sum(_dirs(os.path.join(d.root, k)) for k in ("containers", "sandboxes")) + \
        sum(_dirs(os.path.join(b, "containers", ".trash")) for b in (d.state, d.root))


def _cgroups(d, ids, parents):
    """Cgroups of the daemon's containers, infra processes and pods, in every hierarchy."""
    n = 0
    for mnt in cgroup_mounts():
        for p in ["/remora"] + list(parents):
            for i in ids:
                n += os.path.isdir(mnt + p + "/" + i) + os.path.isdir(mnt + p + "/infra-" + i)
        for p in parents:
            n += os.path.isdir(mnt + p)
    return n


def _pids():
    """Live processes: a zombie holds nothing but its pid (and waits for its parent, here
    often the host's init, to reap it)."""
    for p in os.listdir("/proc"):
        if p.isdigit() and "\nState:\tZ" not in _read("/proc/%s/status" % p):
            yield int(p)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _shims(d, ids, parents):
    return sum(1 for p in _pids()
               if _read("/proc/%d/comm" % p).strip() == "remora-shim" and
               d.base in _read("/proc/%d/cmdline" % p))


def _processes(d, ids, parents):
    """Processes of the daemon's containers and infra (by cgroup) or naming its
    directories (shims, runc), the daemon itself aside."""
    own = d.proc.pid if d.proc and d.proc.poll() is None else -1
    n = 0
    for p in _pids():
        if p == own:
            continue
        cg = _read("/proc/%d/cgroup" % p)
        if any(i in cg for i in ids) or d.base in _read("/proc/%d/cmdline" % p):
            n += 1
    return n


def _blobs(d, ids, parents):
    return sum(1 for p in glob.glob(os.path.join(d.root, "images", "blobs", "**"), recursive=True)
               if os.path.isfile(p))


# name -> count(daemon, ids, cgroup parents). Other kinds of leftovers go here.
COUNTERS = {
    "mounts": _mounts,
    "pins": _pins,
    "veths": _veths,
    "ipam": _ipam,
    "nft_elements": _nft_elements,
    "runc_states": _runc_states,
    "exit_files": _exit_files,
    "records": _records,
    "bundles": _bundles,
    "cgroups": _cgroups,
    "shims": _shims,
    "processes": _processes,
    "blobs": _blobs,
}


def leftovers(d, ids=(), parents=()):
    return {name: fn(d, ids, parents) for name, fn in COUNTERS.items()}


def wait_baseline(d, baseline, ids=(), parents=(), timeout=15):
    """Counts back to baseline (runc's delete of a removed container runs in the
    background, so this waits a little)."""
    deadline = time.monotonic() + timeout
    while True:
        now = leftovers(d, ids, parents)
        diff = {k: (baseline[k], v) for k, v in now.items() if v != baseline[k]}
        if not diff:
            return now
        if time.monotonic() > deadline:
            raise AssertionError("leftovers (baseline, now): %s\nexit files %s, runc %s\n%s" %
                                 (diff, os.listdir(os.path.join(d.state, "exits")),
                                  os.listdir(os.path.join(d.state, "runc")),
                                  d.read_log()[-4000:]))
        time.sleep(0.1)


def remove_everything(cri, timeout=60):
    """Stop and remove every pod and container through the CRI, as an operator would."""
    for c in cri.call("ListContainers", timeout=timeout).containers:
        cri.call("StopContainer", container_id=c.id, timeout=timeout)
        cri.call("RemoveContainer", container_id=c.id, timeout=timeout)
    for p in cri.call("ListPodSandbox", timeout=timeout).items:
        cri.call("StopPodSandbox", pod_sandbox_id=p.id, timeout=timeout)
        cri.call("RemovePodSandbox", pod_sandbox_id=p.id, timeout=timeout)
    assert not cri.call("ListContainers").containers
    assert not cri.call("ListPodSandbox").items


def teardown(d):
    """End of a test, passed or failed: remove what the daemon still has through the CRI
    (starting it again if a crash left it down), so a failure leaks nothing onto the
    shared node, then stop it and remove its directories."""
    try:
        if d.proc is None or d.proc.poll() is not None:
            d.start()
        c = d.client()
        try:
            remove_everything(c)
        finally:
            c.close()
    except Exception as e:  # the test's own failure says more
        print("teardown of %s: %s" % (d.base, e))
    d.cleanup()


def pod_config(cri, log_dir, share_pid=False, cgroup_parent=None, host_port=None):
    uid = uuid.uuid4().hex[:12]
    doc = {"metadata": {"name": "crash-" + uid, "namespace": "crash", "uid": uid,
                        "attempt": 0},
           "hostname": "crash", "log_directory": log_dir,
           "linux": {"security_context": {"namespace_options": {
               "pid": "POD" if share_pid else "CONTAINER"}}}}
    if cgroup_parent:
        doc["linux"]["cgroup_parent"] = cgroup_parent
        doc["linux"]["resources"] = {"cpu_shares": 512, "memory_limit_in_bytes": 256 << 20}
    if host_port:
        doc["port_mappings"] = [{"protocol": "TCP", "container_port": 80,
                                 "host_port": host_port}]
    return json_format.ParseDict(doc, cri.api.PodSandboxConfig())


def container_config(cri, image, name, command):
    doc = {"metadata": {"name": name}, "image": {"image": image}, "command": command,
           "log_path": name + ".log"}
    return json_format.ParseDict(doc, cri.api.ContainerConfig())


def run_container(cri, pod_id, pod_cfg, image, name="c", command=("sleep", "1000"), start=True):
    cid = cri.call("CreateContainer", pod_sandbox_id=pod_id, sandbox_config=pod_cfg,
                   config=container_config(cri, image, name, list(command))).container_id
    if start:
        cri.call("StartContainer", container_id=cid, timeout=30)
    return cid


def unavailable(fn):
    """Run a call that the daemon's crash cuts off: it fails, it does not answer."""
    try:
        fn()
    except grpc.RpcError:
        return
    raise AssertionError("the call answered although remorad was to die during it")
