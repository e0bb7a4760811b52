#!/usr/bin/env python3
"""Browser test of the /ui dashboard (run by .ci/run): starts a dkron node on free loopback
ports, drives headless Chromium through chromedriver (Debian's chromium-driver) with Selenium,
and checks what a user does: create a job through the form, see it in the list, run it, see its
output on its page, disable it, and get the API's validation error for a bad schedule inline.
Saves a screenshot of each page (desktop and phone width) to target/ui-screenshots/.

    python3 scripts/ui_test.py [path/to/dkron]
    python3 scripts/ui_test.py http://host:port     # against a running server (a cluster's)

With DKRON_TOKEN set (a server with ACLs on), the test first signs in through the dashboard's
login page (a wrong token is refused there) and sends the token on its own API calls.
"""

import json
import os
import sys
import time
import urllib.request

from testnode import start_node

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = os.path.join(ROOT, "target", "ui-screenshots")


TOKEN = os.environ.get("DKRON_TOKEN", "")


def fetch(url_or_request, **kw):
    """urlopen with the ACL token, when there is one."""
    req = url_or_request if isinstance(url_or_request, urllib.request.Request) \
        else urllib.request.Request(url_or_request)
    if TOKEN:
        req.add_header("Authorization", f"Bearer {TOKEN}")
    return urllib.request.urlopen(req, **kw)


def wait_http(url, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with fetch(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"dkron did not answer at {url} within {limit} s")


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "dkron")
    cluster = target.startswith("http")
    shots = os.path.join(SHOTS, "cluster") if cluster else SHOTS
    os.makedirs(shots, exist_ok=True)
    node = None
    if cluster:
        base = target.rstrip("/")
    else:
        node, base, _, _ = start_node(target, "ui-node", "--log-level=warn", prefix="dkron-ui-")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = None
    try:
        wait_http(f"{base}/v1/leader")
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        # Pages re-render as data arrives: an element read mid-render is looked up again.
        wait = WebDriverWait(driver, 15, ignored_exceptions=(StaleElementReferenceException,))

        def shot(name):
            driver.save_screenshot(os.path.join(shots, f"{name}.png"))

        def text():
            return driver.find_element(By.TAG_NAME, "main").text

        if TOKEN:
            # ACLs on: the dashboard asks for a token first; a wrong one is refused there.
            driver.get(base + "/")
            wait.until(EC.presence_of_element_located((By.ID, "token")))
            driver.find_element(By.ID, "token").send_keys("not-the-token")
            driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
            wait.until(lambda d: "unknown ACL token" in d.find_element(By.ID, "login-msg").text)
            shot("login-refused")
            field = driver.find_element(By.ID, "token")
            field.clear()
            field.send_keys(TOKEN)
            driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
            wait.until(EC.text_to_be_present_in_element((By.ID, "whom"), "signed in as"))

        # / redirects to the dashboard.
        driver.get(base + "/")
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Leader"))
        with fetch(f"{base}/v1/leader") as r:
            leader = json.load(r)["Name"]
        assert leader in text(), (leader, text())
        shot("dashboard")

        # A bad schedule: the API's validation error shows next to the field.
        driver.get(base + "/ui/#/new")
        wait.until(EC.presence_of_element_located((By.ID, "f-name")))
        # The default schedule is previewed.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#preview time"))
        # ... with the schedule in words.
        assert driver.find_element(By.ID, "describe").text == "Every 1 minute", \
            driver.find_element(By.ID, "describe").text
        driver.find_element(By.ID, "f-name").send_keys("ui-job")
        schedule = driver.find_element(By.ID, "f-schedule")
        schedule.clear()
        schedule.send_keys("every now and then")
        config = driver.find_element(By.ID, "f-executor_config")
        config.clear()
        config.send_keys("command=echo hello from the ui")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: d.find_element(By.ID, "e-schedule").text != "")
        assert "schedule" in driver.find_element(By.ID, "e-schedule").text, \
            driver.find_element(By.ID, "e-schedule").text
        shot("form-error")

        # Fixed, it is created and its page opens.
        schedule.clear()
        schedule.send_keys("@manually")
        Select(driver.find_element(By.ID, "f-concurrency")).select_by_visible_text("forbid")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(EC.url_contains("#/job/ui-job"))
        wait.until(EC.element_to_be_clickable((By.ID, "run")))

        # Its page lists no future fires for a manual job; the list has it.
        assert "will not fire on its own" in text(), text()
        assert "Only when run by hand" in driver.find_element(By.ID, "described").text, text()

        # It is in the list.
        driver.get(base + "/ui/#/jobs")
        wait.until(EC.presence_of_element_located((By.LINK_TEXT, "ui-job")))
        shot("jobs")

        # Run it from its page and see the output.
        driver.find_element(By.LINK_TEXT, "ui-job").click()
        wait.until(EC.element_to_be_clickable((By.ID, "run"))).click()

        # In a cluster the job runs on every node (no tags): wait for all of them.
        def finished(d):
            d.refresh()
            runs = d.find_element(By.TAG_NAME, "main").text.split("Executions")[-1]
            return "success" in runs and "running" not in runs
        WebDriverWait(driver, 20, poll_frequency=1,
                      ignored_exceptions=(StaleElementReferenceException,)).until(finished)
        summary = driver.find_element(By.CSS_SELECTOR, "details summary")
        summary.click()
        wait.until(lambda d: d.find_element(By.ID, "out-0").is_displayed())
        out = driver.find_element(By.ID, "out-0").get_attribute("textContent")
        assert "hello from the ui" in out, out
        # The strip of recent runs has one bar per execution, coloured by its outcome.
        with fetch(f"{base}/v1/jobs/ui-job/executions") as r:
            runs = json.load(r)
        bars = driver.find_elements(By.CSS_SELECTOR, "svg#run-strip g.run")
        assert len(bars) == len(runs), (len(bars), runs)
        assert all("success" in b.get_attribute("class") for b in bars), \
            [b.get_attribute("class") for b in bars]
        assert {b.get_attribute("data-id") for b in bars} == {e["id"] for e in runs}
        shot("job")

        # Disable it.
        driver.find_element(By.ID, "toggle").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "toggle"), "Enable"))
        with fetch(f"{base}/v1/jobs/ui-job") as r:
            assert b'"disabled":true' in r.read()

        # A long run: its page shows what it printed so far, live, then the rest.
        job = json.dumps({"name": "ui-live", "schedule": "@manually", "executor": "shell",
                          "executor_config": {"command": "echo live line; sleep 4; echo all done",
                                              "shell": "true"}}).encode()
        fetch(urllib.request.Request(f"{base}/v1/jobs", data=job, method="POST"))
        # The page is open before the run starts: the new run appears without a reload.
        driver.get(base + "/ui/#/job/ui-live")
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "No executions yet"))
        fetch(urllib.request.Request(f"{base}/v1/jobs/ui-live/run", method="POST"))

        def live_line(d):
            pres = d.find_elements(By.ID, "out-0")
            return pres and "live line" in pres[0].text and "all done" not in pres[0].text
        wait.until(live_line)
        assert "live output" in text(), text()
        shot("live-output")
        WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: "all done" in d.find_element(By.TAG_NAME, "main").text
            or "all done" in (d.find_elements(By.ID, "out-0") or [None])[0].get_attribute("textContent"))

        driver.get(base + "/ui/#/busy")
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Running"))
        shot("busy")

        # Stop a long run from the running page: it ends failed, saying it was stopped.
        job = json.dumps({"name": "ui-stop", "schedule": "@manually", "executor": "shell",
                          "tags": {"server": "true:1"},
                          "executor_config": {"command": "sleep 60"}}).encode()
        fetch(urllib.request.Request(f"{base}/v1/jobs", data=job, method="POST"))
        fetch(urllib.request.Request(f"{base}/v1/jobs/ui-stop/run", method="POST"))
        driver.get(base + "/ui/#/busy")

        def click_stop(d):
            try:
                buttons = d.find_elements(By.CSS_SELECTOR, 'button.stop[data-job="ui-stop"]')
                if buttons and buttons[0].is_enabled():
                    buttons[0].click()
                    return True
            except StaleElementReferenceException:
                pass
            return False
        wait.until(click_stop)

        def stopped(_):
            with fetch(f"{base}/v1/jobs/ui-stop/executions") as r:
                runs = json.load(r)
            return runs and all(not e["success"] and "stopped" in e.get("output", "")
                                and not e["finished_at"].startswith("0001") for e in runs)
        WebDriverWait(driver, 15).until(stopped)
        shot("stopped")
        driver.get(base + "/ui/#/cluster")
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Raft peers"))
        wait.until(lambda d: "leader" in d.find_element(By.TAG_NAME, "main").text.split("Raft peers")[-1])
        if cluster:
            # Every voter is listed, with its state.
            with fetch(f"{base}/v1/raft/peers") as r:
                peers = json.load(r)
            peer_text = text().split("Raft peers")[-1]
            for p in peers:
                assert p["id"] in peer_text or p["node"] in peer_text, (p, peer_text)
            assert peer_text.count("follower") >= len(peers) - 1, peer_text
        # Every executor this node runs, with its state, as /health reports them.
        with fetch(f"{base}/health") as r:
            executors = json.load(r)["executors"]
        rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#executors tbody tr"))
        shown = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
                 for r in rows}
        assert shown == {n: e["status"] for n, e in executors.items()}, (shown, executors)
        assert {"shell", "http", "nats", "rabbitmq", "kafka", "grpc", "gcppubsub"} <= set(shown), shown
        shot("cluster")

        # The parent/children diagram: each box links to its job.
        for body in ({"name": "ui-parent", "schedule": "@manually", "executor": "shell",
                      "executor_config": {"command": "true"}},
                     {"name": "ui-child", "parent_job": "ui-parent", "executor": "shell",
                      "executor_config": {"command": "true"}}):
            fetch(urllib.request.Request(f"{base}/v1/jobs", data=json.dumps(body).encode(),
                                         method="POST"))
        driver.get(base + "/ui/#/job/ui-parent")
        child_box = 'svg#family a.node.child[data-job="ui-child"]'
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, child_box)))
        assert driver.find_elements(By.CSS_SELECTOR, 'svg#family a.node.self[data-job="ui-parent"]')
        shot("job-children")
        driver.find_element(By.CSS_SELECTOR, child_box).click()
        wait.until(EC.url_contains("#/job/ui-child"))
        wait.until(EC.presence_of_element_located(
            (By.CSS_SELECTOR, 'svg#family a.node.parent[data-job="ui-parent"]')))

        # The dashboard's chart: one column per day, counted as /v1/stats counts them.
        driver.get(base + "/ui/#/")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "svg#stats-chart g.day")))
        with fetch(f"{base}/v1/stats?days=14") as r:
            stats = json.load(r)["stats"]
        days = driver.find_elements(By.CSS_SELECTOR, "svg#stats-chart g.day")
        assert len(days) == 14, len(days)
        drawn = [(d.get_attribute("data-date"), int(d.get_attribute("data-success")),
                  int(d.get_attribute("data-failed"))) for d in days]
        today = (stats[-1]["date"][:10], stats[-1]["success_count"], stats[-1]["failed_count"])
        assert drawn[-1] == today, (drawn[-1], today)
        assert today[1] >= 1 and today[2] >= 1, today  # ui-job succeeded, ui-stop failed
        shot("dashboard-with-a-job")

        # Phone width: the job list still works, the pictures fit the screen.
        driver.set_window_size(390, 844)
        driver.refresh()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "svg#stats-chart g.day")))
        shot("dashboard-phone")
        width = driver.execute_script("return document.documentElement.clientWidth")
        chart = driver.execute_script(
            "return document.getElementById('stats-chart').getBoundingClientRect().width")
        assert 0 < chart <= width, (chart, width)
        driver.get(base + "/ui/#/job/ui-job")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "svg#run-strip g.run")))
        shot("job-phone")
        driver.get(base + "/ui/#/jobs")
        wait.until(EC.presence_of_element_located((By.LINK_TEXT, "ui-job")))
        shot("jobs-phone")
        print(f"ui test passed against {base}; screenshots in {shots}")
    except Exception:
        if driver is not None:
            driver.save_screenshot(os.path.join(shots, "failure.png"))
            print("page at failure:\n" + driver.find_element(By.TAG_NAME, "body").text[:2000],
                  file=sys.stderr)
        raise
    finally:
        if driver is not None:
            driver.quit()
        if node is not None:
            node.terminate()
            node.wait(timeout=10)


if __name__ == "__main__":
    main()
