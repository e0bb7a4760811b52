#!/usr/bin/env python3
"""Dkron's external executor plugins: a plugin built here with HashiCorp's go-plugin (Go, from
Debian's packages: golang-go, golang-github-hashicorp-go-plugin-dev, golang-google-grpc-dev,
golang-goprotobuf-dev, protobuf-compiler), exactly as a `dkron-executor-*` binary is built,
run by the dkron binary from --plugin-dir.

    python3 scripts/goplugin_test.py target/debug/dkron

Checks: /health lists the plugin; a job runs on it with its config and job name; the output
it streams while running is readable live; an error from the plugin fails the run with the
error first; a plugin that crashes is started again by the next run; a world-writable plugin
binary is not loaded (a job naming it is a 400) and a plugin named like a built-in executor
does not replace it. Every wait is bounded; on failure the node's log is printed.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from testnode import api_json as api, start_node, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))




def build_plugin(out_dir):
    """Builds scripts/testplugin into out_dir/dkron-executor-testplug; answers its path."""
    work = tempfile.mkdtemp(prefix="goplugin-")
    src = os.path.join(work, "src", "dkrontestplugin")
    os.makedirs(src)
    for f in ("main.go", "executor.proto"):
        shutil.copy(os.path.join(HERE, "testplugin", f), src)
    subprocess.run(["protoc", "--go_out=plugins=grpc:.", "executor.proto"], cwd=src, check=True)
    binary = os.path.join(out_dir, "dkron-executor-testplug")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{work}:/usr/share/gocode",
           "GOCACHE": os.path.join(work, "cache"), "GOFLAGS": ""}
    subprocess.run(["go", "build", "-o", binary, "dkrontestplugin"], cwd=src, env=env, check=True,
                   timeout=300)
    os.chmod(binary, 0o755)
    return binary


def run_job(base, job):
    status, body = api(base, "POST", "/v1/jobs", {"schedule": "@manually", **job})
    assert status == 201, (status, body)
    status, body = api(base, "POST", f"/v1/jobs/{job['name']}")
    assert status == 200, (status, body)


def executions(base, name):
    return api(base, "GET", f"/v1/jobs/{name}/executions")[1] or []


def finished(base, name, count=1):
    def done():
        runs = [r for r in executions(base, name) if not r["finished_at"].startswith("0001")]
        return sorted(runs, key=lambda r: r["started_at"]) if len(runs) >= count else None
    return wait_for(f"{name} to finish {count} run(s)", done)


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/dkron")
    plugins = tempfile.mkdtemp(prefix="dkron-plugins-")
    os.chmod(plugins, 0o755)
    plugin = build_plugin(plugins)
    # Planted by someone else: anyone could have written it, so it must not load.
    planted = os.path.join(plugins, "dkron-executor-planted")
    shutil.copy(plugin, planted)
    os.chmod(planted, 0o777)
    # Named like a built-in: the built-in nats executor stays.
    shutil.copy(plugin, os.path.join(plugins, "dkron-executor-nats"))

    node, base, _, log_path = start_node(binary, "plugins", f"--plugin-dir={plugins}",
                                         prefix="dkron-goplugin-")
    ok = False
    try:
        wait_for("the node to lead", lambda: api(base, "GET", "/v1/leader")[0] == 200)

        def healthy():
            _, h = api(base, "GET", "/health")
            e = (h or {}).get("executors", {})
            return e if e.get("testplug", {}).get("status") == "healthy" else None
        executors = wait_for("the plugin to be healthy", healthy)
        assert executors["testplug"] == {"status": "healthy", "plugin": True}, executors
        assert "planted" not in executors, executors
        assert executors["nats"] == {"status": "healthy"}, executors

        run_job(base, {"name": "plug", "executor": "testplug",
                       "executor_config": {"message": "hello", "other": "x"}})
        first = finished(base, "plug")[0]
        assert first["success"], first
        assert first["output"].startswith("job=plug message=hello pid="), first
        assert first["output"].endswith(" keys=2\n"), first
        pid = first["output"].split("pid=")[1].split()[0]

        # While it runs, what it streamed through the status server is readable.
        run_job(base, {"name": "plug-slow", "executor": "testplug",
                       "executor_config": {"mode": "sleep", "seconds": "3"}})
        running = wait_for("the slow run to start", lambda: executions(base, "plug-slow"))[0]

        def live():
            _, e = api(base, "GET", f"/v1/jobs/plug-slow/executions/{running['id']}")
            return e if e and e.get("finished_at", "").startswith("0001") and "working" in e.get("output", "") else None
        live_view = wait_for("live output from the plugin", live)
        assert live_view["output"] == "starting\nworking\n", live_view
        assert finished(base, "plug-slow")[0]["success"]

        run_job(base, {"name": "plug-fail", "executor": "testplug", "executor_config": {"mode": "fail"}})
        failed = finished(base, "plug-fail")[0]
        assert not failed["success"], failed
        assert failed["output"] == "the plugin failed on purpose\npartial output\n", failed

        run_job(base, {"name": "plug-crash", "executor": "testplug", "executor_config": {"mode": "crash"}})
        crashed = finished(base, "plug-crash")[0]
        assert not crashed["success"], crashed
        status, _ = api(base, "POST", "/v1/jobs/plug")
        assert status == 200
        again = finished(base, "plug", count=2)[1]
        assert again["success"], again
        new_pid = again["output"].split("pid=")[1].split()[0]
        assert new_pid != pid, (pid, new_pid)

        status, body = api(base, "POST", "/v1/jobs", {"name": "bad", "schedule": "@manually",
                                                      "executor": "planted"})
        assert status == 400 and "executor" in json.dumps(body), (status, body)
        ok = True
        print(f"go-plugin: a go-plugin executor ran with its config; live output {live_view['output']!r}; "
              f"plugin errors fail the run; crash → restarted (pid {pid} → {new_pid}); "
              f"world-writable plugin not loaded; built-in nats not replaced")
    finally:
        node.kill()
        if not ok:
            with open(log_path) as f:
                print(f.read()[-8000:])


if __name__ == "__main__":
    main()
