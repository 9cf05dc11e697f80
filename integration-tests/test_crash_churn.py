"""Randomized churn with SIGKILL at random moments: clients run, create, start, stop and
remove pods and containers at once while remorad is killed and restarted. After every
restart nothing acknowledged is lost (pods listed, running containers still running,
exits and removals kept), no container is CREATED with a live process, a READY pod has
its parts; at the end everything is removed and nothing is left.

Bounded for CI: REMORA_CHURN_KILLS (default 20) kills or REMORA_CHURN_SECONDS (default
60) seconds, whichever comes first."""
import os
import random
import signal
import threading
import time

import grpc

import crash_helpers as H
from ctr_helpers import pulled_image

KILLS = int(os.environ.get("REMORA_CHURN_KILLS", "20"))
SECONDS = float(os.environ.get("REMORA_CHURN_SECONDS", "60"))
CLIENTS = 3


class Model:
    """What the clients were told. Objects some call is working on are busy; an object a
    call failed on (the daemon died under it) is uncertain until the next listing."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pods = {}   # id -> {"cfg", "state": ready|stopped, "busy", "uncertain"}
        self.ctrs = {}   # id -> {"pod", "state": created|running|exited, "busy", ...}
        self.removed = set()
        self.unexpected = []

    def pick(self, table, pred):
        with self.lock:
            ids = [i for i, o in table.items() if not o["busy"] and pred(o)]
            if not ids:
                return None
            i = random.choice(ids)
            table[i]["busy"] = True
            return i


def client_loop(cri, image, tmp, model, stop):
    rng = random.Random()
    while not stop.is_set():
        action = rng.choice(["run", "create", "start", "start", "stop", "remove", "stoppod",
                             "removepod"])
        obj, table = None, None
        try:
            if action == "run":
                cfg = H.pod_config(cri, tmp, share_pid=rng.random() < 0.3)
                pid = cri.call("RunPodSandbox", config=cfg, timeout=20).pod_sandbox_id
                with model.lock:
                    model.pods[pid] = {"cfg": cfg, "state": "ready", "busy": False,
                                       "uncertain": False}
            elif action == "create":
                obj, table = model.pick(model.pods, lambda o: o["state"] == "ready"), model.pods
                if obj is None:
                    continue
                p = model.pods[obj]
                cid = H.run_container(cri, obj, p["cfg"], image, name="c%d" % rng.randrange(10**9),
                                      start=False)
                with model.lock:
                    model.ctrs[cid] = {"pod": obj, "state": "created", "busy": False,
                                       "uncertain": False}
            elif action in ("start", "stop", "remove"):
                want = {"start": "created", "stop": "running", "remove": "exited"}[action]
                obj, table = model.pick(model.ctrs, lambda o: o["state"] == want), model.ctrs
                if obj is None:
                    continue
                if action == "start":
                    cri.call("StartContainer", container_id=obj, timeout=20)
                    model.ctrs[obj]["state"] = "running"
                elif action == "stop":
                    cri.call("StopContainer", container_id=obj, timeout=20)
                    model.ctrs[obj]["state"] = "exited"
                else:
                    cri.call("RemoveContainer", container_id=obj, timeout=20)
                    with model.lock:
                        del model.ctrs[obj]
                        model.removed.add(obj)
                    obj = None
            else:
                want = "ready" if action == "stoppod" else "stopped"
                obj, table = model.pick(model.pods, lambda o: o["state"] == want), model.pods
                if obj is None:
                    continue
                with model.lock:  # the pod's containers are the call's too
                    mine = [c for c, o in model.ctrs.items() if o["pod"] == obj]
                    if any(model.ctrs[c]["busy"] for c in mine):
                        model.pods[obj]["busy"] = False
                        continue
                    for c in mine:
                        model.ctrs[c]["busy"] = True
                try:
                    if action == "stoppod":
                        cri.call("StopPodSandbox", pod_sandbox_id=obj, timeout=20)
                        with model.lock:
                            model.pods[obj]["state"] = "stopped"
                            for c in mine:
                                model.ctrs[c]["state"] = "exited"
                    else:
                        cri.call("RemovePodSandbox", pod_sandbox_id=obj, timeout=20)
                        with model.lock:
                            del model.pods[obj]
                            for c in mine:
                                del model.ctrs[c]
                            model.removed.update(mine + [obj])
                        obj, mine = None, []
                except grpc.RpcError:
                    with model.lock:  # the call may have reached any of them
                        for c in mine:
                            if c in model.ctrs:
                                model.ctrs[c]["uncertain"] = True
                    raise
                finally:
                    with model.lock:
                        for c in mine:
                            if c in model.ctrs:
                                model.ctrs[c]["busy"] = False
        except grpc.RpcError as e:
            if obj is not None:
                table[obj]["uncertain"] = True
            if not stop.is_set() and e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                                      grpc.StatusCode.CANCELLED):
                model.unexpected.append("%s %s: %s" % (action, obj, e.details()))
            if stop.is_set() or e.code() == grpc.StatusCode.UNAVAILABLE:
                return
        finally:
            if obj is not None and table is not None and obj in table:
                table[obj]["busy"] = False


def procs_of(cid):
    return sum(1 for p in H._pids() if cid in H._read("/proc/%d/cgroup" % p))


def verify(cri, d, model):
    """The contract after a restart, then the model takes what the daemon lists."""
    pods = {p.id: p for p in cri.call("ListPodSandbox").items}
    ctrs = {c.id: c for c in cri.call("ListContainers").containers}
    api = cri.api
    for pid, o in model.pods.items():
        if o["uncertain"]:
            continue
        assert pid in pods, "acknowledged pod %s lost" % pid
        if o["state"] == "ready":
            assert pods[pid].state == api.SANDBOX_READY, "pod %s no longer READY" % pid
    for cid, o in model.ctrs.items():
        if o["uncertain"]:
            continue
        assert cid in ctrs, "acknowledged container %s (%s) lost:\n%s" % (
            cid, o, "\n".join(l for l in d.read_log().splitlines() if cid[:12] in l or o["pod"][:12] in l))
        want = {"created": api.CONTAINER_CREATED, "running": api.CONTAINER_RUNNING,
                "exited": api.CONTAINER_EXITED}[o["state"]]
        assert ctrs[cid].state == want, (cid, o["state"], ctrs[cid])
    for i in model.removed:
        assert i not in pods and i not in ctrs, "removed %s is back" % i
    for cid, c in ctrs.items():
        if c.state == api.CONTAINER_CREATED:
            assert procs_of(cid) == 0, "CREATED container %s has a live process" % cid
        if c.state == api.CONTAINER_RUNNING:
            assert procs_of(cid) > 0, "RUNNING container %s has no process" % cid
    for pid, p in pods.items():
        if p.state == api.SANDBOX_READY:
            pin = os.path.join(d.state, "netns", pid)
            assert os.path.exists(pin), "READY pod %s has no network namespace" % pid
    state = {api.CONTAINER_CREATED: "created", api.CONTAINER_RUNNING: "running",
             api.CONTAINER_EXITED: "exited"}
    cfgs = {i: o["cfg"] for i, o in model.pods.items()}
    model.pods = {i: {"cfg": cfgs[i], "state": "ready" if p.state == api.SANDBOX_READY
                      else "stopped", "busy": False, "uncertain": False}
                  for i, p in pods.items() if i in cfgs}
    model.ctrs = {i: {"pod": c.pod_sandbox_id, "state": state[c.state], "busy": False,
                      "uncertain": False}
                  for i, c in ctrs.items() if c.pod_sandbox_id in model.pods}


def test_churn_with_random_kills(remorad_bin, api, tmp_path):
    d = H.CrashDaemon(remorad_bin, api, config="{}")
    d.start()
    cri = d.client()
    image = pulled_image(cri)
    baseline = H.leftovers(d)
    model = Model()
    ids = set()
    kills = 0
    t0 = time.monotonic()
    try:
        while kills < KILLS and time.monotonic() - t0 < SECONDS:
            stop = threading.Event()
            clients = [d.client() for _ in range(CLIENTS)]
            threads = [threading.Thread(target=client_loop,
                                        args=(c, image, str(tmp_path), model, stop))
                       for c in clients]
            for t in threads:
                t.start()
            time.sleep(random.uniform(0.1, 1.5))
            stop.set()
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            d.log.close()
            kills += 1
            for t in threads:
                t.join(60)
                assert not t.is_alive(), "a client hung after the kill"
            for c in clients:
                c.close()
            ids |= H.ids_on_disk(d) | set(model.pods) | set(model.ctrs)
            cri.close()
            d.start()
            cri = d.client()
            verify(cri, d, model)
        assert not model.unexpected, model.unexpected[:10]
        print("churn: %d kills in %.0fs, %d pods and containers seen, %d removed through "
              "the CRI" % (kills, time.monotonic() - t0, len(ids), len(model.removed)))
        ids |= H.ids_on_disk(d)
        H.remove_everything(cri)
        H.wait_baseline(d, baseline, ids, timeout=30)
    finally:
        cri.close()
        H.teardown(d)
