"""What the Python tests share: a free loopback port, a bounded wait, a JSON call to the API,
and a single dkron node started from a binary on free ports with its data and log in a new
temporary directory."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def wait_for(what, check, bound=30.0):
    """Polls `check` until it answers something true, for at most `bound` seconds."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {bound}s waiting for {what}")


def api_json(base, method, path, body=None):
    """(status, decoded JSON body) of one API call; (0, None) if nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")
    except OSError:
        return 0, None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(binary, name, *extra, prefix="dkron-"):
    """Starts `dkron agent --server --bootstrap-expect=1` named `name` with `extra` flags;
    answers (the process, its API's base URL, its temporary directory, its log's path)."""
    binary = os.path.abspath(binary)  # the node runs in its own directory
    home = tempfile.mkdtemp(prefix=prefix)
    http = free_port()
    log_path = os.path.join(home, "dkron.log")
    log = open(log_path, "w")
    node = subprocess.Popen(
        [binary, "agent", "--server", "--bootstrap-expect=1", f"--data-dir={home}/data",
         f"--http-addr=127.0.0.1:{http}", "--bind-addr=127.0.0.1:0",
         f"--rpc-port={free_port()}", f"--node-name={name}", *extra],
        stdout=log, stderr=subprocess.STDOUT, cwd=home)
    log.close()  # the node has its own descriptor
    return node, f"http://127.0.0.1:{http}", home, log_path
