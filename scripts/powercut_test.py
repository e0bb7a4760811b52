#!/usr/bin/env python3
"""Power-cut durability: a 2xx on a job write means it is on disk, not in a page cache.

    python3 scripts/powercut_test.py target/debug/dkron

`kill -9` alone proves little: the kernel keeps what the killed process wrote, so a store that
never fsyncs passes. Here the node's data directory is on scripts/lazyfs.py, which keeps every
write that was not fsynced in memory and throws it away at the cut. Writers create, update,
toggle and delete jobs; mid-stream the node is killed, the file system's cache is cut, the
mount comes back empty-cached, and the node restarts on what reached the disk. Every write the
API acknowledged must be there (a write in flight at the cut may land either way), the stores
must open, and the node must lead again. Three cuts: two lose every unsynced page, one keeps a
random half of them (a disk that wrote part of its cache).

Why it catches a missing fsync: before the node starts, the file system is checked to lose an
unsynced write and keep a synced one. Planted on 2026-12-02: every redb store opened through a
backend whose `sync_data` does nothing (writes reach the kernel, fsync is skipped): this test
failed at the first cut (52 acknowledged jobs gone), while the same run with the cut turned into
a flush (what `kill -9` alone amounts to) passed.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from testnode import free_port

LAZYFS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lazyfs.py")
BOUND = 60  # seconds: the longest any single wait here may take
WRITERS = 4
CUTS = [None, 7, None]  # None: every unsynced page is lost; a number seeds a torn cut
MIN_ACKED = {"create": 10, "update": 4, "run": 4, "toggle": 4, "delete": 2}


def wait_for(what, check, bound=BOUND):
    deadline = time.monotonic() + bound
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {what} not within {bound} s")
        time.sleep(0.05)


class Mount:
    """scripts/lazyfs.py serving `backing` at `point`; `cut()` is the power cut."""

    def __init__(self, backing, point, report):
        self.backing, self.point, self.report = backing, point, report
        self.proc = None

    def up(self, torn_seed=None):
        extra = [] if torn_seed is None else ["--keep-torn", str(torn_seed)]
        self.proc = subprocess.Popen(
            [sys.executable, LAZYFS, self.backing, self.point, "--report", self.report, *extra])
        wait_for("the lazyfs mount", lambda: os.path.ismount(self.point), bound=15)

    def cut(self):
        """Throws away what was not fsynced; answers the file system's account of the loss."""
        with open(os.path.join(self.point, ".lazyfs-cut"), "w"):
            pass
        with open(self.report) as f:
            return json.loads(f.readlines()[-1])

    def down(self):
        subprocess.run(["fusermount3", "-u", self.point], check=True)
        self.proc.wait(timeout=15)


def check_the_file_system_forgets(root):
    """The negative control: without it a write-through mount would let every store pass."""
    backing, point = os.path.join(root, "probe-disk"), os.path.join(root, "probe")
    os.makedirs(backing)
    os.makedirs(point)
    mount = Mount(backing, point, os.path.join(root, "probe-cuts.jsonl"))
    mount.up()
    synced, unsynced = os.path.join(point, "synced"), os.path.join(point, "unsynced")
    with open(synced, "wb") as f:
        f.write(b"kept" * 2000)
        f.flush()
        os.fsync(f.fileno())
        f.write(b"lost")
    with open(unsynced, "wb") as f:
        f.write(b"lost" * 3000)
    with open(unsynced, "rb") as f:
        assert f.read(4) == b"lost", "reads must see unsynced writes before the cut"
    loss = mount.cut()
    mount.down()
    mount.up()
    with open(synced, "rb") as f:
        assert f.read() == b"kept" * 2000, "an fsynced write must survive the cut"
    with open(unsynced, "rb") as f:
        assert f.read() == b"", "an unsynced write must not survive the cut"
    assert loss["pages_lost"] >= 3, loss
    mount.down()
    print(f"ok: the file system keeps fsynced data and loses the rest ({loss['pages_lost']} pages)")


class Node:
    def __init__(self, binary, data_dir, home):
        self.binary, self.data_dir, self.home = os.path.abspath(binary), data_dir, home
        self.http, self.rpc = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http}"
        self.proc, self.starts = None, 0

    def start(self):
        self.starts += 1
        self.log_path = os.path.join(self.home, f"dkron-{self.starts}.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [self.binary, "agent", "--server", "--bootstrap-expect=1",
                 f"--data-dir={self.data_dir}", f"--http-addr=127.0.0.1:{self.http}",
                 "--bind-addr=127.0.0.1:0", f"--rpc-port={self.rpc}", "--node-name=cut",
                 "--log-level=info"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.home)
        wait_for("a leader after the start", self.leads)

    def leads(self):
        if self.proc.poll() is not None:
            raise SystemExit(f"FAIL: the node exited with {self.proc.returncode}; see "
                             f"{self.log_path}:\n{self.tail()}")
        try:
            return request(self.base, "GET", "/v1/leader")[0] == 200
        except OSError:
            return False

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)

    def tail(self):
        with open(self.log_path) as f:
            return "".join(f.readlines()[-30:])


def request(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def job_body(name, command):
    return {"name": name, "schedule": "@every 1h", "executor": "shell",
            "executor_config": {"command": command}}


class Writer(threading.Thread):
    """Writes one job after another: create, update, run, toggle, and every third one deleted.
    A write answered 2xx is acknowledged; the first one without an answer ends the thread. A
    run answered 200 was claimed, so its execution record must outlive the cut."""

    def __init__(self, base, prefix, stop):
        super().__init__(daemon=True)
        self.base, self.prefix, self.stop = base, prefix, stop
        self.jobs = {}  # name -> (acknowledged state, state if the unanswered write landed)
        self.ran = set()  # jobs with an acknowledged run
        self.acked = {kind: 0 for kind in MIN_ACKED}
        self.refused = []

    def run(self):
        n = 0
        while not self.stop.is_set():
            name = f"{self.prefix}-{n}"
            state = None
            steps = [("create", "POST", "/v1/jobs", job_body(name, "echo v1"),
                      {"command": "echo v1", "disabled": False}),
                     ("update", "POST", "/v1/jobs", job_body(name, "echo v2"),
                      {"command": "echo v2", "disabled": False}),
                     ("run", "POST", f"/v1/jobs/{name}/run", None,
                      {"command": "echo v2", "disabled": False}),
                     ("toggle", "POST", f"/v1/jobs/{name}/toggle", None,
                      {"command": "echo v2", "disabled": True})]
            if n % 3 == 2:
                steps.append(("delete", "DELETE", f"/v1/jobs/{name}", None, None))
            for kind, method, path, body, after in steps:
                self.jobs[name] = (state, after)  # until answered, either may be on disk
                try:
                    status, text = request(self.base, method, path, body)
                except OSError:
                    return  # the cut: this write is in flight, both outcomes are allowed
                if 200 <= status < 300:
                    state = after
                    self.acked[kind] += 1
                    if kind == "run":
                        self.ran.add(name)
                else:
                    self.refused.append((kind, name, status, text[:200]))
                self.jobs[name] = (state, state)
                if self.stop.is_set():
                    return
            n += 1


def state_of(base, name):
    status, text = request(base, "GET", f"/v1/jobs/{name}")
    if status == 404:
        return None
    if status != 200:
        raise SystemExit(f"FAIL: GET /v1/jobs/{name} answered {status}: {text[:200]!r}")
    job = json.loads(text)
    return {"command": job["executor_config"]["command"], "disabled": job["disabled"]}


def executions(base, name):
    status, text = request(base, "GET", f"/v1/jobs/{name}/executions")
    if status != 200:
        raise SystemExit(f"FAIL: executions of {name} answered {status}: {text[:200]!r}")
    return json.loads(text)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/dkron"
    root = tempfile.mkdtemp(prefix="dkron-powercut-")
    check_the_file_system_forgets(root)

    backing, point = os.path.join(root, "disk"), os.path.join(root, "mnt")
    os.makedirs(backing)
    os.makedirs(point)
    mount = Mount(backing, point, os.path.join(root, "cuts.jsonl"))
    node = Node(binary, os.path.join(point, "data"), root)
    expected = {}  # every job ever written -> the states it may be found in
    ran = set()  # every job with an acknowledged run
    rng = random.Random(12)
    mount.up(CUTS[0])
    node.start()
    try:
        for cycle, torn in enumerate(CUTS):
            stop = threading.Event()
            writers = [Writer(node.base, f"c{cycle}w{i}", stop) for i in range(WRITERS)]
            for w in writers:
                w.start()
            wait_for("enough acknowledged writes of each kind", lambda: all(
                sum(w.acked[k] for w in writers) >= m for k, m in MIN_ACKED.items()))
            time.sleep(rng.uniform(0.2, 1.0))  # the cut falls at no particular write
            node.kill()
            loss = mount.cut()
            stop.set()
            for w in writers:
                w.join(timeout=15)
            acked = {k: sum(w.acked[k] for w in writers) for k in MIN_ACKED}
            refused = [r for w in writers for r in w.refused]
            if refused:
                raise SystemExit(f"FAIL: writes refused before the cut: {refused[:5]}")
            for w in writers:
                expected.update(w.jobs)
                ran |= w.ran
            mount.down()
            if loss["pages_lost"] == 0:
                raise SystemExit(f"FAIL: the cut lost nothing, so it tested nothing: {loss}")
            mount.up(CUTS[cycle + 1] if cycle + 1 < len(CUTS) else None)
            node.start()
            lost = []
            for name, allowed in sorted(expected.items()):
                found = state_of(node.base, name)
                if found not in allowed:
                    lost.append((name, found, allowed))
                elif found is not None and name in ran and not executions(node.base, name):
                    lost.append((name, "no execution record", "the acknowledged run's"))
            if lost:
                raise SystemExit(
                    f"FAIL: after cut {cycle + 1}, {len(lost)} acknowledged writes are not on "
                    f"disk, e.g. {lost[:5]}\nnode log:\n{node.tail()}")
            mode = "kept a random half" if torn is not None else "lost all"
            print(f"ok: cut {cycle + 1} ({mode} of {loss['pages_unsynced']} unsynced pages, "
                  f"{loss['pages_lost']} lost) after {acked}: all {len(expected)} jobs as "
                  f"acknowledged, the node leads again")
    finally:
        if node.proc and node.proc.poll() is None:
            node.kill()
        if mount.proc and mount.proc.poll() is None:
            mount.down()
    shutil.rmtree(root, ignore_errors=True)
    print("power-cut test passed")


if __name__ == "__main__":
    main()
