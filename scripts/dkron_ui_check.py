#!/usr/bin/env python3
"""Does Dkron's own web UI (its built `ui-dist`, unchanged) work against a dkron-rs node?

Starts a dkron-rs node on free loopback ports, creates jobs through its API, serves the given
`ui-dist` directory from a local HTTP server on another port (templating index.html the way
Dkron's Go server does, with DKRON_API_URL pointing cross-origin at the node's /v1), then
drives headless Chromium through the UI: dashboard, jobs list (+ search), a job's summary and
executions (with output), its Run and Toggle buttons, the Busy page, and an edit + save whose
PUT is checked through the API. Any failed API request (status >= 400, CORS or network
failure) seen by the browser, or a console error, fails the run. Exits non-zero on the first
failed check. Screenshots go to /tmp/dkron-ui-shots/.

Dkron's UI is not part of this repository (it is LGPL); point at a checkout's build:

    git -C <dkron.git> archive HEAD dkron/ui-dist | tar -x -C /tmp/x
    python3 scripts/dkron_ui_check.py /tmp/x/dkron/ui-dist [target/debug/dkron]
        [--allow-ui-origin]   # start the node with --http-allowed-origins=<the UI's origin>

Needs python selenium 4 and /usr/bin/chromedriver.
"""

import argparse
import http.server
import json
import mimetypes
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from testnode import free_port, start_node

from selenium import webdriver
from selenium.common.exceptions import (StaleElementReferenceException, TimeoutException,
                                        WebDriverException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = "/tmp/dkron-ui-shots"
WAIT = 30  # every wait is bounded by this many seconds
NODE = "ui-check"


class CheckFailed(Exception):
    pass


def api(base, method, path, body=None):
    """(status, headers, parsed JSON or text) of a request to the node, without an Origin."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    try:
        return status, headers, json.loads(raw or b"null")
    except ValueError:
        return status, headers, raw.decode(errors="replace")


def api_ok(base, method, path, body=None):
    status, _, data = api(base, method, path, body)
    if status >= 300:
        raise CheckFailed(f"setup: {method} {path} answered {status}: {data}")
    return data


def poll(what, fn, limit=WAIT, every=0.3):
    """fn() until it returns something truthy, at most `limit` seconds."""
    deadline = time.time() + limit
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(every)
    raise CheckFailed(f"{what}: not true within {limit} s (last: {last!r})")


# --- the UI server: Dkron's dkron/ui.go, in Python -------------------------------------------

def ui_server(ui_dist, api_base, port):
    with open(os.path.join(ui_dist, "index.html"), encoding="utf-8") as f:
        template = f.read()
    for key in ("DKRON_API_URL", "DKRON_LEADER", "DKRON_TOTAL_JOBS", "DKRON_SUCCESSFUL_JOBS",
                "DKRON_FAILED_JOBS", "DKRON_UNTRIGGERED_JOBS", "DKRON_ACL_ENABLED"):
        if "{{.%s}}" % key not in template:
            raise CheckFailed(f"{ui_dist}/index.html has no {{{{.{key}}}}}: not Dkron's ui-dist?")

    def render_index():
        # As ui.go: counts from the store's jobs, leader name or "no leader"; html/template
        # writes strings in a <script> as JS string literals, numbers and booleans bare.
        try:
            _, _, jobs = api(api_base, "GET", "/jobs")
            jobs = jobs if isinstance(jobs, list) else []
        except OSError:
            jobs = []
        try:
            status, _, leader = api(api_base, "GET", "/leader")
            leader = leader["Name"] if status == 200 else "no leader"
        except (OSError, KeyError, TypeError):
            leader = "no leader"
        values = {
            "DKRON_API_URL": json.dumps(api_base),
            "DKRON_LEADER": json.dumps(leader),
            "DKRON_TOTAL_JOBS": str(len(jobs)),
            "DKRON_SUCCESSFUL_JOBS": str(sum(j.get("status") == "success" for j in jobs)),
            "DKRON_FAILED_JOBS": str(sum(j.get("status") == "failed" for j in jobs)),
            "DKRON_UNTRIGGERED_JOBS": str(sum(j.get("status", "") == "" for j in jobs)),
            "DKRON_ACL_ENABLED": "false",
        }
        out = template
        for k, v in values.items():
            out = out.replace("{{.%s}}" % k, v)
        return out.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, code, body, ctype, extra=()):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/":  # Dkron redirects a browser to the dashboard
                return self.send(303, b"", "text/plain", [("Location", "/ui/")])
            if not path.startswith("/ui/"):
                return self.send(404, b"404 page not found", "text/plain")
            rel = urllib.parse.unquote(path[len("/ui/"):])
            full = os.path.realpath(os.path.join(ui_dist, rel))
            inside = full.startswith(os.path.realpath(ui_dist) + os.sep)
            if rel not in ("", "index.html") and inside and os.path.isfile(full):
                with open(full, "rb") as f:
                    body = f.read()
                ctype = mimetypes.guess_type(full)[0] or "application/octet-stream"
                return self.send(200, body, ctype)
            self.send(200, render_index(), "text/html; charset=utf-8")

        do_HEAD = do_GET

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# --- the browser ------------------------------------------------------------------------------

class Browser:
    def __init__(self, api_base, ui_origin):
        self.api_base = api_base
        self.ui_origin = ui_origin
        opts = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,900"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.d.set_page_load_timeout(WAIT)
        self.d.set_script_timeout(WAIT)
        self.requests = {}   # requestId -> (method, url)
        self.api_log = []    # (method, url, status or error text)
        self.failures = []

    # Network and console, from Chrome's logs.
    def drain(self):
        for entry in self.d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            m, p = msg.get("method"), msg.get("params", {})
            if m == "Network.requestWillBeSent":
                self.requests[p["requestId"]] = (p["request"]["method"], p["request"]["url"])
            elif m == "Network.responseReceived":
                method, url = self.requests.get(p["requestId"], ("?", p["response"]["url"]))
                if url.startswith(self.api_base):
                    st = p["response"]["status"]
                    self.api_log.append((method, url, st))
                    if st >= 400:
                        try:
                            body = self.d.execute_cdp_cmd(
                                "Network.getResponseBody", {"requestId": p["requestId"]})["body"]
                        except WebDriverException:
                            body = "(body not available)"
                        self.failures.append(f"API request {method} {url} -> HTTP {st}: {body[:400]}")
            elif m == "Network.loadingFailed":
                method, url = self.requests.get(p["requestId"], ("?", "?"))
                if url.startswith(self.api_base) and not p.get("canceled"):
                    why = p.get("errorText", "")
                    if p.get("corsErrorStatus"):
                        why += f" CORS {p['corsErrorStatus']}"
                    if p.get("blockedReason"):
                        why += f" blocked {p['blockedReason']}"
                    self.api_log.append((method, url, why))
                    self.failures.append(f"API request {method} {url} failed: {why}")
        for entry in self.d.get_log("browser"):
            text = entry.get("message", "")
            if entry.get("level") != "SEVERE":
                continue
            # Off-machine loads (Google Fonts, react-admin's telemetry ping) fail offline; they
            # are not the API's doing.
            first = text.split(" ", 1)[0]
            host = urllib.parse.urlsplit(first).hostname if "://" in first else None
            if host and host not in ("127.0.0.1", "localhost"):
                continue
            self.failures.append(f"console error: {text}")

    def check_clean(self, step):
        self.drain()
        if self.failures:
            raise CheckFailed(f"{step}: " + "; ".join(self.failures))

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        path = os.path.join(SHOTS, f"{name}.png")
        self.d.save_screenshot(path)
        return path

    def go(self, route):
        self.d.get(f"{self.ui_origin}/ui/#{route}")

    def text(self):
        return self.d.find_element(By.TAG_NAME, "body").text

    def until(self, what, fn, limit=WAIT):
        """Wait for fn(driver); failed API requests end the wait at once."""
        def cond(d):
            self.drain()
            if self.failures:
                return True
            return fn(d)
        try:
            WebDriverWait(self.d, limit, poll_frequency=0.25,
                          ignored_exceptions=(StaleElementReferenceException,)).until(cond)
        except TimeoutException:
            body = ""
            try:
                body = self.text()[:1500]
            except WebDriverException:
                pass
            raise CheckFailed(f"{what}: not seen within {limit} s; page text:\n{body}")
        if self.failures:
            raise CheckFailed(f"{what}: " + "; ".join(self.failures))

    def wait_text(self, what, *needles, limit=WAIT):
        self.until(what, lambda d: all(n in self.text() for n in needles), limit)

    def rows(self):
        return self.d.find_elements(By.CSS_SELECTOR, "tbody tr.RaDatagrid-row")

    def button(self, label):
        found = [b for b in self.d.find_elements(By.XPATH, f"//button[@aria-label='{label}']")
                 if b.is_displayed()]
        if not found:
            raise CheckFailed(f"no visible '{label}' button")
        return found[0]

    def notification(self, what, needle):
        self.until(what, lambda d: any(
            needle in e.text for e in d.find_elements(By.CSS_SELECTOR, ".MuiSnackbarContent-message")))


# --- the checks -------------------------------------------------------------------------------

def run_checks(api_base, b, results):
    def passed(name, shot=None):
        results.append((name, "ok", shot))
        print(f"ok   {name}" + (f"  [{shot}]" if shot else ""), flush=True)

    # Dashboard: leader, counts (3 jobs: hello+child succeeded, sleeper untriggered), nodes.
    b.d.get(b.ui_origin + "/")
    b.wait_text("dashboard", "Welcome", "Leader", NODE, "Nodes")
    b.until("dashboard: node list", lambda d: any(NODE in r.text and "alive" in r.text
                                                  for r in b.rows()))
    t = b.text()
    for title, n in (("Total Jobs", 3), ("Successful Jobs", 2), ("Failed Jobs", 0),
                     ("Untriggered Jobs", 1)):
        if f"{title}\n{n}" not in t:
            raise CheckFailed(f"dashboard: expected '{title}' {n}; page text:\n{t[:800]}")
    b.check_clean("dashboard")
    passed("dashboard (leader, job counts, nodes list)", b.shot("01-dashboard"))

    # Jobs list: all three, with the total in the pagination.
    b.go("/jobs")
    b.until("jobs list rows", lambda d: len(b.rows()) == 3)
    names = sorted(r.find_element(By.CSS_SELECTOR, "td.column-id").text for r in b.rows())
    if names != ["child", "hello", "sleeper"]:
        raise CheckFailed(f"jobs list: ids {names}")
    b.until("jobs list total", lambda d: any(
        e.text.replace("\u2013", "-").endswith("of 3")
        for e in d.find_elements(By.CSS_SELECTOR, ".MuiTablePagination-displayedRows")))
    hello_row = next(r for r in b.rows() if r.find_element(By.CSS_SELECTOR, "td.column-id").text == "hello")
    if "@every 1h" not in hello_row.text:
        raise CheckFailed(f"jobs list: hello row {hello_row.text!r}")
    b.check_clean("jobs list")
    passed("jobs list (3 rows, '1-3 of 3')", b.shot("02-jobs-list"))

    # Search box (q=): only hello matches "hel".
    b.go("/jobs?filter=" + urllib.parse.quote(json.dumps({"q": "hel"})))
    b.until("jobs search", lambda d: [r.find_element(By.CSS_SELECTOR, "td.column-id").text
                                      for r in b.rows()] == ["hello"])
    b.check_clean("jobs search")
    passed("jobs list search q=hel", b.shot("03-jobs-search"))

    # A job's summary.
    b.go("/jobs/hello/show")
    b.wait_text("job show summary", "@every 1h", "echo hello", "shell", "success")
    b.check_clean("job show")
    passed("job show summary", b.shot("04-job-show"))

    # Its executions, with the run's output in the expanded row.
    b.go("/jobs/hello/show/executions")
    b.until("executions tab rows", lambda d: len(b.rows()) >= 1 and NODE in b.rows()[0].text)
    b.rows()[0].find_element(By.CSS_SELECTOR, "td.column-job_name").click()
    b.until("execution output", lambda d: any(
        "hello" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".execution-output")))
    b.check_clean("executions tab")
    passed("executions tab (row + expanded output 'hello')", b.shot("05-job-executions"))

    # Run button (POST /v1/jobs/hello): a second execution appears.
    before = len(api_ok(api_base, "GET", "/jobs/hello/executions"))
    b.button("Run").click()
    b.notification("Run button", "Success running job")
    poll("Run button: a new execution through the API",
         lambda: len(api_ok(api_base, "GET", "/jobs/hello/executions")) > before)
    b.check_clean("Run button")
    passed("Run button (POST /v1/jobs/hello)", b.shot("06-run"))

    # Toggle button, twice: disabled, then enabled again.
    for want in (True, False):
        b.button("Toggle").click()
        b.notification("Toggle button", "Job toggled")
        poll(f"Toggle button: disabled={want} through the API",
             lambda: api_ok(api_base, "GET", "/jobs/hello")["disabled"] is want)
        b.check_clean("Toggle button")
        # let the snackbar go before the next click
        b.until("toggle notification closes", lambda d: not d.find_elements(
            By.CSS_SELECTOR, ".MuiSnackbarContent-message"))
    passed("Toggle button x2 (POST /v1/jobs/hello/toggle)", b.shot("07-toggle"))

    # Busy: a running job shows there.
    api_ok(api_base, "POST", "/jobs/sleeper/run")
    poll("sleeper running per /v1/busy",
         lambda: any(e.get("job_name") == "sleeper" for e in api_ok(api_base, "GET", "/busy")))
    b.go("/busy")
    b.until("busy page row", lambda d: any("sleeper" in r.text and NODE in r.text
                                           for r in b.rows()))
    b.check_clean("busy page")
    passed("Busy page (running 'sleeper')", b.shot("08-busy"))

    # Edit + save: react-admin's undoable save sends the PUT when the notification closes.
    b.go("/jobs/hello")
    b.until("edit form", lambda d: d.find_elements(By.CSS_SELECTOR, "input[name=displayname]")
            and d.find_element(By.CSS_SELECTOR, "input[name=schedule]").get_attribute("value")
            == "@every 1h")
    for name, value in (("displayname", "Hello from the UI"), ("schedule", "@every 2h")):
        el = b.d.find_element(By.CSS_SELECTOR, f"input[name={name}]")
        el.send_keys(Keys.CONTROL, "a")
        el.send_keys(Keys.DELETE)
        el.send_keys(value)
    b.shot("09-edit-form")
    b.button("Save").click()
    b.notification("edit save", "Element updated")
    poll("edit save: the change through the API",
         lambda: (lambda j: j["displayname"] == "Hello from the UI"
                  and j["schedule"] == "@every 2h")(api_ok(api_base, "GET", "/jobs/hello")))
    b.until("PUT seen", lambda d: any(m == "PUT" and u.endswith("/jobs/hello")
                                      for m, u, _ in b.api_log))
    b.check_clean("edit save")
    job = api_ok(api_base, "GET", "/jobs/hello")
    if job["executor_config"] != {"command": "echo hello"} or job.get("dependent_jobs") != ["child"] \
            or api_ok(api_base, "GET", "/jobs/child")["parent_job"] != "hello":
        raise CheckFailed(f"edit save: the PUT changed more than the two fields: {job}")
    b.go("/jobs")
    b.wait_text("list after edit", "Hello from the UI", "@every 2h")
    b.check_clean("list after edit")
    passed("edit + save (PUT /v1/jobs/hello, checked via API)", b.shot("10-after-edit"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ui_dist", help="an extracted Dkron dkron/ui-dist directory")
    ap.add_argument("dkron", nargs="?", default=os.path.join(ROOT, "target", "debug", "dkron"))
    ap.add_argument("--allow-ui-origin", action="store_true",
                    help="start the node with --http-allowed-origins=<the UI server's origin>")
    args = ap.parse_args()
    ui_dist = os.path.abspath(args.ui_dist)

    ui_port = free_port()
    ui_origin = f"http://127.0.0.1:{ui_port}"
    extra = [f"--http-allowed-origins={ui_origin}"] if args.allow_ui_origin else []
    node, base, _, log_path = start_node(args.dkron, NODE, *extra, prefix="dkron-ui-check-")
    api_base = f"{base}/v1"
    srv = browser = None
    results = []
    code = 0
    try:
        poll("node: GET /v1/leader 200", lambda: api(api_base, "GET", "/leader")[0] == 200)
        api_ok(api_base, "POST", "/jobs", {"name": "hello", "schedule": "@every 1h",
                                           "executor": "shell",
                                           "executor_config": {"command": "echo hello"}})
        api_ok(api_base, "POST", "/jobs", {"name": "child", "schedule": "", "parent_job": "hello",
                                           "executor": "shell",
                                           "executor_config": {"command": "echo child"}})
        api_ok(api_base, "POST", "/jobs", {"name": "sleeper", "schedule": "@every 24h",
                                           "executor": "shell",
                                           "executor_config": {"command": "sleep 25"}})
        api_ok(api_base, "POST", "/jobs/hello/run")
        poll("setup: hello and child succeeded", lambda: all(
            api_ok(api_base, "GET", f"/jobs/{j}")["status"] == "success" for j in ("hello", "child")))
        srv = ui_server(ui_dist, api_base, ui_port)
        browser = Browser(api_base, ui_origin)
        print(f"node {api_base}, UI {ui_origin}/ui/ ({ui_dist})", flush=True)
        run_checks(api_base, browser, results)
        print(f"PASS: {len(results)} checks; screenshots in {SHOTS}")
    except CheckFailed as e:
        code = 1
        print(f"FAIL: {e}", file=sys.stderr)
        if browser:
            try:
                print(f"  screenshot: {browser.shot('FAILED')}", file=sys.stderr)
                with open(os.path.join(SHOTS, "FAILED.html"), "w") as f:
                    f.write(browser.d.page_source)
                browser.drain()
            except WebDriverException:
                pass
            print("  last API requests seen by the browser:", file=sys.stderr)
            for m, u, s in browser.api_log[-12:]:
                print(f"    {m} {u} -> {s}", file=sys.stderr)
        print(f"  node log: {log_path}", file=sys.stderr)
    finally:
        if browser:
            try:
                browser.d.quit()
            except WebDriverException:
                pass
        if srv:
            srv.shutdown()
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    sys.exit(code)


if __name__ == "__main__":
    main()
