"""What the Python tests share: a free loopback port, and a single dkron node started from a
binary on free ports with its data and log in a new temporary directory."""

import os
import socket
import subprocess
import tempfile


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
