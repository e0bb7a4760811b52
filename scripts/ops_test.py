#!/usr/bin/env python3
"""Operations against real third-party receivers: the dkron binary sends email to aiosmtpd
(a real SMTP server) and posts webhooks to a local HTTP server, and prometheus_client's own
parser reads /metrics.

    python3 scripts/ops_test.py target/debug/dkron

Needs `pip install aiosmtpd prometheus_client` (.ci/run installs them). Every wait is
bounded; on failure the agent's log is printed.
"""

import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.request

from testnode import free_port, start_node, wait_for

from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

BOUND = 30.0



class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


def webhook_server():
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, dict(self.headers), body.decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def api(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
        return r.status, r.headers, text


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/dkron")
    mailbox = Mailbox()
    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    hooks, received = webhook_server()
    hook_url = f"http://127.0.0.1:{hooks.server_address[1]}/hook"

    agent, base, _, log_path = start_node(
        binary, "ops",
        "--enable-prometheus",
            "--mail-host=127.0.0.1", f"--mail-port={smtp_port}", "--mail-from=dkron@example.com",
            f"--webhook-endpoint={hook_url}",
            '--webhook-payload={"job":"{{.JobName}}","success":{{.Success}}}',
            "--webhook-headers=Content-Type: application/json",
            "--notify-on=on_failure",
        prefix="dkron-ops-",
    )
    try:
        def leader():
            try:
                return api(base, "GET", "/v1/isleader")[0] == 200
            except Exception:
                return False

        wait_for("the agent to lead", leader)
        for name, command in [("ok", "true"), ("broken", "echo disk full; exit 2")]:
            api(base, "POST", "/v1/jobs", {
                "name": name, "schedule": "@manually", "executor": "shell",
                "owner_email": "ops@example.com",
                "executor_config": {"command": command, "shell": "true"},
            })
            api(base, "POST", f"/v1/jobs/{name}", None)

        message = wait_for("an email for the failed job", lambda: mailbox.messages)[0]
        assert message.rcpt_tos == ["ops@example.com"], message.rcpt_tos
        assert message.mail_from == "dkron@example.com", message.mail_from
        content = message.content.decode()
        assert "Subject: [Dkron]Failed broken execution report" in content, content
        assert "disk full" in content, content

        hook = wait_for("the failure webhook", lambda: received)[0]
        assert json.loads(hook[2]) == {"job": "broken", "success": False}, hook
        # on_failure: the successful job notified nobody, by email or webhook.
        assert len(mailbox.messages) == 1 and len(received) == 1, (mailbox.messages, received)

        def parsed_metrics():
            status, _, text = api(base, "GET", "/metrics")
            assert status == 200
            families = {f.name: f for f in text_string_to_metric_families(text)}
            notified = families.get("dkron_notifications")
            kinds = {s.labels.get("kind") for s in notified.samples} if notified else set()
            # Counted once the receiver answered: wait for both.
            return families if {"email", "webhook"} <= kinds else None

        families = wait_for("both notifications counted in /metrics", parsed_metrics)
        # The parser strips _total from counter family names.
        for name in ["dkron_job_executions_succeeded", "dkron_job_executions_failed",
                     "dkron_job_execution_duration_seconds", "dkron_jobs",
                     "dkron_raft_is_leader", "dkron_raft_commit_seconds",
                     "dkron_members", "dkron_notifications"]:
            assert name in families, f"{name} missing from /metrics: {sorted(families)}"
        failed = {s.labels["job_name"]: s.value
                  for s in families["dkron_job_executions_failed"].samples
                  if s.name.endswith("_total")}
        assert failed == {"broken": 1.0}, failed
        assert families["dkron_job_execution_duration_seconds"].type == "histogram"
        sent = [s for s in families["dkron_notifications"].samples
                if s.labels.get("outcome") == "sent" and s.name.endswith("_total")]
        assert {s.labels["kind"] for s in sent} == {"email", "webhook"}, sent
        print("ops test passed: email via aiosmtpd, webhook, /metrics parsed by prometheus_client")
    except Exception:
        print(open(log_path).read()[-5000:], file=sys.stderr)
        raise
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
        smtp.stop()
        hooks.shutdown()


if __name__ == "__main__":
    main()
