#!/usr/bin/env python3
"""Two real Dkron Python clients from PyPI, unchanged, against a running dkron-rs node.

    pip install pydkron==0.2.4 click && pip install --no-deps dkron==0.0.5
    DKRON_URL=http://127.0.0.1:8080 python3 scripts/clients_test.py
    python3 scripts/clients_test.py target/debug/dkron   # starts a node of its own (CI)

Given a dkron binary, the script starts a single node from it on free loopback ports and stops
it at the end; otherwise the node must already be running. DKRON_URL defaults to
http://127.0.0.1:8080 and must be plain http with no path, because pydkron builds its URLs as
"http://<host:port>/v1...". The script creates, runs, toggles and deletes jobs whose names start
with "clients-", and deletes what it created even when a check fails.

What is tested, always through each client's own public API (never raw HTTP):
* pydkron 0.2.4 (DkronClient, DkronJob): status(), jobs(), create_job(), get_job(),
  DkronJob.save() of a job as read back (every field the server returned is posted again),
  run()/run_job(), executions()/get_executions() (it asks for "/v1/jobs/<job>/executions/" with a
  trailing slash, which the server redirects), toggle(), delete()/delete_job(), its
  DkronJobNotFound mapping of 404s, its refusal of anything but 201 on save, and its fallback
  past an unreachable host.
* dkron 0.0.5 (dkron-python: dkron.Dkron and the click CLI "dkron-cli", driven in-process
  through click's CliRunner): Dkron(hosts) health probing, get_status(), get_leader(),
  get_members(), get_jobs(), get_job(), apply_job(), run_job(), delete_job(), get_executions(),
  and the CLI commands get status|leader|members|jobs|job|executions, apply job, run, export,
  delete job.

Outcomes asserted: fields read back equal what was sent; after a run, within 20 s, an execution
with success true and output containing "hello" is listed, and the job's counters move; a
disabled job cannot be run; a deleted job is gone (404 through each client's own error type);
an invalid job (time zone "Asis/Taipei") is refused with a 4xx and leaves nothing behind.
Every client call has a bound (15 s) and every wait polls for at most 20 s. One "ok" line is
printed per check; the first failure prints "FAIL: ..." and exits 1 (2 if the clients cannot be
imported at all).

Known limits of the clients themselves, which no server can fix:
* Neither client is Python-2-only and both import on Python 3.11, but dkron 0.0.5 pins
  requests==2.13.0, and that requests (its vendored urllib3 1.20) imports `collections.Mapping`,
  removed in Python 3.10. So `pip install dkron==0.0.5` leaves a requests that cannot be imported,
  which breaks pydkron too when both share an environment. Rather than fail, this script then
  puts the removed aliases back on `collections` (pointing at `collections.abc`) before importing
  requests, says so in its output, and tests the clients' code unchanged. The cleaner install is
  `pip install pydkron==0.2.4 click && pip install --no-deps dkron==0.0.5`.
* dkron 0.0.5's get_executions() and `dkron-cli get executions` ask for
  GET /v1/executions/<job>, the Dkron 0.x/1.x path. Dkron v4 serves /v1/jobs/<job>/executions and
  answers 404 there;
  dkron-rs keeps that path as an alias of /v1/jobs/<job>/executions (docs/api.md).
"""

import contextlib
import importlib.metadata
import json
import os
import signal
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from testnode import free_port, start_node

BASE = os.environ.get("DKRON_URL", "http://127.0.0.1:8080").rstrip("/")
CALL_BOUND = 15.0  # seconds any single client call may take
RUN_BOUND = 20.0  # seconds a run may take to show up as a finished execution
SUFFIX = f"{os.getpid()}-{int(time.time()) % 100000}"
CREATED = []  # names of jobs this script created, deleted again at the end


class Failure(Exception):
    pass


def ok(message):
    print(f"ok   {message}", flush=True)


def note(message):
    print(f"note {message}", flush=True)


def check(condition, message, detail=""):
    if not condition:
        raise Failure(f"{message}" + (f" -- {detail}" if detail else ""))
    ok(message)


@contextlib.contextmanager
def bounded(what, seconds=CALL_BOUND):
    """Raise Failure if the body takes longer than `seconds` (dkron 0.0.5 sets no timeout on
    most of its requests, so a server that never answers would otherwise hang the test)."""

    def on_alarm(_signum, _frame):
        raise Failure(f"{what}: no answer within {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def call(what, fn, *args):
    """Call a client function with a bound; any exception is a failure of `what`."""
    with bounded(what):
        try:
            return fn(*args)
        except Failure:
            raise
        except Exception as e:  # the client's own error, a JSON decode error, ...
            raise Failure(f"{what}: {type(e).__name__}: {e}") from e


def expect_error(what, error_types, fn, *args):
    """Call a client function that must raise one of `error_types`; return the error."""
    with bounded(what):
        try:
            value = fn(*args)
        except error_types as e:
            return e
        except Failure:
            raise
        except Exception as e:
            raise Failure(f"{what}: expected {error_names(error_types)}, got "
                          f"{type(e).__name__}: {e}") from e
    raise Failure(f"{what}: expected {error_names(error_types)}, but the call returned {value!r}")


def error_names(error_types):
    if not isinstance(error_types, tuple):
        error_types = (error_types,)
    return " or ".join(t.__name__ for t in error_types)


def poll(what, probe, bound=RUN_BOUND, interval=0.5):
    """Call `probe` until it returns a true value, for at most `bound` seconds."""
    deadline = time.monotonic() + bound
    last = None
    while True:
        found, last = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise Failure(f"{what}: not seen within {bound:.0f} s; last answer: {last!r}")
        time.sleep(interval)


def differing(got, want):
    """The fields of `want` whose value in `got` differs: {field: (got, want)}."""
    return {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}


def job_spec(name, tags, client):
    """A shell job in the seed jobs' shape (executor_config values are all strings)."""
    return {
        "name": name,
        "schedule": "@every 1h",
        "timezone": "Europe/Berlin",
        "owner": "Platform Team",
        "owner_email": "platform@example.com",
        "disabled": False,
        "tags": tags,
        "metadata": {"user": "12345", "client": client},
        "concurrency": "allow",
        "executor": "shell",
        "executor_config": {"command": "echo hello", "shell": "true", "timeout": "30s"},
        "retries": 0,
    }


def target_tags(status):
    """Tags that select the node we talk to, so a run has somewhere to go."""
    tags = status.get("tags") or {}
    for key in ("server", "dc", "role"):
        if tags.get(key):
            return {key: f"{tags[key]}:1"}
    raise Failure(f"GET /v1 reported no server/dc/role tag to target a job at: {tags!r}")


def hello_execution(executions, name):
    """The first execution of `name` that succeeded and printed hello, else None."""
    if not isinstance(executions, list):
        return None
    for e in executions:
        if (isinstance(e, dict) and e.get("job_name") == name and e.get("success") is True
                and "hello" in (e.get("output") or "")):
            return e
    return None


# --- imports ---------------------------------------------------------------------------------

ABC_ALIASES = ("Mapping", "MutableMapping", "Sequence", "MutableSequence", "Set", "MutableSet",
               "Callable", "Iterable", "Iterator", "Container", "Hashable", "Sized")


def import_requests():
    """Import requests; if it is too old for this Python (dkron 0.0.5 pins requests 2.13.0,
    whose vendored urllib3 imports collections.Mapping), restore the aliases Python 3.10
    removed and import it again. No client code is changed by this."""
    try:
        import requests  # noqa: F401
        return
    except ImportError as e:
        first = e
        while first.__context__ is not None:  # the root cause, not requests' fallback import
            first = first.__context__
    for module in list(sys.modules):
        if module.split(".")[0] in ("requests", "urllib3", "chardet", "idna", "certifi"):
            del sys.modules[module]
    import collections
    import collections.abc
    for alias in ABC_ALIASES:
        if not hasattr(collections, alias):
            setattr(collections, alias, getattr(collections.abc, alias))
    import requests  # noqa: F401,F811
    note(f"requests {requests.__version__} cannot be imported on Python "
         f"{sys.version_info.major}.{sys.version_info.minor} ({first}); that is dkron 0.0.5's "
         "pin requests==2.13.0, not something a server can fix. collections.Mapping & co. were "
         "restored as aliases of collections.abc so the clients could be tested unchanged; "
         "`pip install -U requests` avoids this")


def import_clients():
    try:
        import_requests()
        from pydkron.client import DkronClient, DkronClientException, DkronJobNotFound
        from pydkron.job import DkronJob
        import dkron
        import dkron.cli
        from click.testing import CliRunner
    except Exception as e:
        print(f"FAIL: cannot import the clients: {type(e).__name__}: {e}\n"
              "install them with: pip install pydkron==0.2.4 dkron==0.0.5", flush=True)
        sys.exit(2)
    versions = {p: importlib.metadata.version(p) for p in ("pydkron", "dkron", "requests", "click")}
    note("python " + sys.version.split()[0] + ", "
         + ", ".join(f"{p} {v}" for p, v in versions.items()))
    return {
        "DkronClient": DkronClient, "DkronClientException": DkronClientException,
        "DkronJobNotFound": DkronJobNotFound, "DkronJob": DkronJob,
        "Dkron": dkron.Dkron, "DkronException": dkron.DkronException,
        "cli": dkron.cli.cli, "CliRunner": CliRunner,
    }


# --- pydkron 0.2.4 ---------------------------------------------------------------------------

def pydkron_host():
    url = urllib.parse.urlsplit(BASE)
    if url.scheme != "http" or url.path not in ("", "/") or not url.netloc:
        raise Failure(f"DKRON_URL={BASE!r}: pydkron only speaks to http://<host:port>/v1, "
                      "so DKRON_URL must be plain http with no path")
    return url.netloc


def test_pydkron(c):
    DkronClient, NotFound = c["DkronClient"], c["DkronJobNotFound"]
    ClientError, DkronJob = c["DkronClientException"], c["DkronJob"]
    host = pydkron_host()
    client = DkronClient(hosts=[host])
    name = f"clients-pydkron-{SUFFIX}"

    status = call("pydkron status() (GET /v1/): is dkron-rs running at DKRON_URL?", client.status)
    check(isinstance(status, dict) and isinstance(status.get("agent"), dict)
          and status["agent"].get("name"),
          "pydkron status() returns the node status with agent.name", repr(status))
    tags = target_tags(status)

    dead = f"127.0.0.1:{free_port()}"
    fallback = call("pydkron status() with an unreachable host listed first",
                    DkronClient(hosts=[dead, host]).status)
    check(fallback.get("agent", {}).get("name") == status["agent"]["name"],
          "pydkron skips an unreachable host and answers from the live one", repr(fallback))

    jobs = call("pydkron jobs()", client.jobs)
    check(isinstance(jobs, list) and all(isinstance(j, DkronJob) and j.name for j in jobs),
          f"pydkron jobs() lists {len(jobs)} jobs as DkronJob objects", repr(jobs)[:300])
    check(name not in [j.name for j in jobs], f"pydkron jobs() does not list {name} yet")

    bad = dict(job_spec(f"clients-pydkron-bad-{SUFFIX}", tags, "pydkron"), timezone="Asis/Taipei")
    error = expect_error("pydkron create_job() of a job with timezone Asis/Taipei", ClientError,
                         client.create_job, bad)
    check("status=4" in str(error), "pydkron create_job() of an invalid job is refused with a 4xx",
          str(error))
    expect_error("pydkron get_job() of the refused job", NotFound, client.get_job, bad["name"])
    ok("pydkron get_job() of the refused job raises DkronJobNotFound (nothing left behind)")

    spec = job_spec(name, tags, "pydkron")
    CREATED.append(name)
    created = call("pydkron create_job() (POST /v1/jobs, must answer 201)", client.create_job, spec)
    check(isinstance(created, DkronJob) and created.name == name,
          "pydkron create_job() is answered 201 and returns the DkronJob", repr(created))

    job = call("pydkron get_job()", client.get_job, name)
    check(isinstance(job, DkronJob), "pydkron get_job() returns a DkronJob", repr(job))
    check(not differing(job, spec), "pydkron get_job() reads back every field as created",
          repr(differing(job, spec)))
    check((job.name, job.schedule, job.owner, job.tags, job.disabled, job.concurrency)
          == (name, "@every 1h", "Platform Team", tags, False, "allow"),
          "pydkron DkronJob attribute access reads name/schedule/owner/tags/disabled/concurrency")
    check(name in [j.name for j in call("pydkron jobs()", client.jobs)],
          f"pydkron jobs() lists {name}")

    # Update by saving back the job exactly as read: every field the server returned (id, next,
    # status, counters, nulls, ...) is posted again, so the server must accept its own output.
    job.schedule = "@every 2h"
    job.owner = "Ops Team"
    job["metadata"] = {"user": "12345", "client": "pydkron", "updated": "yes"}
    call("pydkron DkronJob.save() of the job as read back (must answer 201)", job.save)
    ok("pydkron DkronJob.save() of the read-back job is answered 201")
    updated = call("pydkron get_job() after save()", client.get_job, name)
    want = dict(spec, schedule="@every 2h", owner="Ops Team", metadata=job["metadata"])
    check(not differing(updated, want), "pydkron get_job() reads back the update",
          repr(differing(updated, want)))

    answer = call("pydkron DkronJob.run() (POST /v1/jobs/<job>)", updated.run)
    check(isinstance(answer, dict) and answer.get("name") == name,
          "pydkron run() is accepted and answers with the job", repr(answer))
    execution = poll("pydkron executions(): a successful execution printing hello",
                     lambda: (lambda ex: (hello_execution(ex, name), ex))(
                         call("pydkron executions() (GET /v1/jobs/<job>/executions/)",
                              updated.executions)))
    ok(f"pydkron executions() lists a successful run printing hello "
       f"(node {execution.get('node_name')!r}) within {RUN_BOUND:.0f} s")
    counted = poll("pydkron get_job(): success_count >= 1 and status success",
                   lambda: (lambda j: (j if j.get("success_count", 0) >= 1
                                       and j.get("status") == "success"
                                       and j.get("last_success") else None, dict(j)))(
                       call("pydkron get_job()", client.get_job, name)))
    check(counted.get("error_count", 0) == 0,
          "pydkron get_job() shows success_count >= 1, status success, last_success set",
          repr(dict(counted)))

    toggled = call("pydkron toggle() (POST /v1/jobs/<job>/toggle)", client.toggle, name)
    check(isinstance(toggled, DkronJob) and toggled.name == name and toggled.disabled is True,
          "pydkron toggle() disables the job and returns it", repr(toggled))
    check(call("pydkron get_job()", client.get_job, name).disabled is True,
          "pydkron get_job() reads back disabled: true")
    expect_error("pydkron run_job() of a disabled job", NotFound, client.run_job, name)
    ok("pydkron run_job() of a disabled job raises DkronJobNotFound (404, as Dkron does)")
    toggled = call("pydkron toggle() again", client.toggle, name)
    check(toggled.disabled is False and not call("pydkron get_job()", client.get_job, name).disabled,
          "pydkron toggle() again enables the job", repr(toggled))

    missing = f"clients-missing-{SUFFIX}"
    for what, fn in (("get_job", client.get_job), ("run_job", client.run_job),
                     ("get_executions", client.get_executions), ("toggle", client.toggle),
                     ("delete_job", client.delete_job)):
        expect_error(f"pydkron {what}() of an unknown job", NotFound, fn, missing)
        ok(f"pydkron {what}() of an unknown job raises DkronJobNotFound")

    deleted = call("pydkron DkronJob.delete() (DELETE /v1/jobs/<job>)", counted.delete)
    check(isinstance(deleted, dict) and deleted.get("name") == name,
          "pydkron delete() answers with the deleted job", repr(deleted))
    expect_error("pydkron get_job() of the deleted job", NotFound, client.get_job, name)
    ok("pydkron get_job() of the deleted job raises DkronJobNotFound")
    check(name not in [j.name for j in call("pydkron jobs()", client.jobs)],
          "pydkron jobs() no longer lists the deleted job")
    expect_error("pydkron get_executions() of the deleted job", NotFound,
                 client.get_executions, name)
    ok("pydkron get_executions() of the deleted job raises DkronJobNotFound")
    CREATED.remove(name)
    return tags


# --- dkron 0.0.5 (dkron-python) ----------------------------------------------------------------

def test_dkron(c, tags):
    Dkron, DkronException = c["Dkron"], c["DkronException"]
    name = f"clients-dkron-{SUFFIX}"
    cli_name = f"clients-dkron-cli-{SUFFIX}"

    api = call("dkron Dkron([DKRON_URL]) (probes GET /v1)", Dkron, [BASE])
    check(api.base_url == BASE, "dkron Dkron() finds the node healthy", repr(api.base_url))
    dead = f"http://127.0.0.1:{free_port()}"
    check(call("dkron Dkron([dead, DKRON_URL])", Dkron, [dead, BASE]).base_url == BASE,
          "dkron Dkron() skips an unreachable host and picks the live one")
    error = expect_error("dkron Dkron([dead])", DkronException, Dkron, [dead])
    check("No healthy host" in str(error), "dkron Dkron() with no live host raises DkronException",
          str(error))

    status = call("dkron get_status()", api.get_status)
    node = status.get("agent", {}).get("name")
    check(node and isinstance(status.get("tags"), dict),
          "dkron get_status() returns agent.name and tags", repr(status))
    members = call("dkron get_members()", api.get_members)
    mine = [m for m in members if isinstance(m, dict) and m.get("Name") == node] \
        if isinstance(members, list) else []
    check(mine and mine[0].get("Status") == 1 and mine[0].get("Addr"),
          f"dkron get_members() lists this node ({node}) alive (Status 1) with its Addr",
          repr(members)[:400])
    leader = call("dkron get_leader()", api.get_leader)
    check(isinstance(leader, dict) and leader.get("Name") in [m.get("Name") for m in members],
          f"dkron get_leader() names a member ({leader.get('Name') if isinstance(leader, dict) else leader!r})",
          repr(leader))

    jobs = call("dkron get_jobs()", api.get_jobs)
    check(isinstance(jobs, list) and name not in [j.get("name") for j in jobs],
          f"dkron get_jobs() lists {len(jobs)} jobs, not yet {name}", repr(jobs)[:300])

    bad = dict(job_spec(f"clients-dkron-bad-{SUFFIX}", tags, "dkron"), timezone="Asis/Taipei")
    error = expect_error("dkron apply_job() of a job with timezone Asis/Taipei", DkronException,
                         api.apply_job, bad)
    check("code 4" in str(error), "dkron apply_job() of an invalid job is refused with a 4xx",
          str(error))
    error = expect_error("dkron get_job() of the refused job", DkronException, api.get_job,
                         bad["name"])
    check("code 404" in str(error), "dkron get_job() of the refused job is a 404 (nothing left)",
          str(error))

    spec = job_spec(name, tags, "dkron")
    CREATED.append(name)
    answer = call("dkron apply_job() (POST /v1/jobs, JSON body)", api.apply_job, spec)
    check(isinstance(answer, dict) and answer.get("name") == name,
          "dkron apply_job() creates the job and answers with it", repr(answer))
    job = call("dkron get_job()", api.get_job, name)
    check(not differing(job, spec), "dkron get_job() reads back every field as created",
          repr(differing(job, spec)))
    check(name in [j.get("name") for j in call("dkron get_jobs()", api.get_jobs)],
          f"dkron get_jobs() lists {name}")

    change = dict(spec, schedule="@every 2h", retries=1,
                  executor_config=dict(spec["executor_config"], timeout="45s"))
    call("dkron apply_job() of a changed job", api.apply_job, change)
    job = call("dkron get_job() after the update", api.get_job, name)
    check(not differing(job, change), "dkron get_job() reads back the update",
          repr(differing(job, change)))

    answer = call("dkron run_job() (POST /v1/jobs/<job>, no body)", api.run_job, name)
    check(isinstance(answer, dict) and answer.get("name") == name,
          "dkron run_job() is accepted and answers with the job", repr(answer))
    # dkron 0.0.5 reads executions only through the old /v1/executions/<job> path (checked at
    # the end), so the run is observed through the job's own counters.
    poll("dkron get_job(): success_count >= 1, status success, last_success set",
         lambda: (lambda j: (j.get("success_count", 0) >= 1 and j.get("status") == "success"
                             and bool(j.get("last_success")), j))(
             call("dkron get_job()", api.get_job, name)))
    ok(f"dkron get_job() shows the run succeeded within {RUN_BOUND:.0f} s")

    for what, fn in (("get_job", api.get_job), ("run_job", api.run_job),
                     ("delete_job", api.delete_job)):
        error = expect_error(f"dkron {what}() of an unknown job", DkronException, fn,
                             f"clients-missing-{SUFFIX}")
        check("code 404" in str(error), f"dkron {what}() of an unknown job raises a 404", str(error))

    # The CLI, in-process (so it uses the same imports), exactly as `dkron-cli ...` would run.
    runner = c["CliRunner"]()

    def cli(*args):
        what = "dkron-cli " + " ".join(args)
        with bounded(what):
            result = runner.invoke(c["cli"], list(args), env={"DKRON_HOSTS": BASE})
        out = getattr(result, "stdout", None) or result.output
        if result.exception and not isinstance(result.exception, SystemExit):
            raise Failure(f"{what}: {type(result.exception).__name__}: {result.exception}")
        return result.exit_code, out.strip()

    def cli_json(*args):
        code, out = cli(*args)
        if code != 0:
            raise Failure(f"dkron-cli {' '.join(args)}: exit {code}: {out}")
        try:
            return json.loads(out)
        except ValueError as e:
            raise Failure(f"dkron-cli {' '.join(args)}: not JSON ({e}): {out[:300]}") from e

    check(cli_json("get", "status").get("agent", {}).get("name") == node,
          "dkron-cli get status prints this node's status")
    check(cli_json("get", "leader").get("Name") == leader.get("Name"),
          "dkron-cli get leader prints the leader")
    check(node in [m.get("Name") for m in cli_json("get", "members")],
          "dkron-cli get members lists this node")
    check(name in [j.get("name") for j in cli_json("get", "jobs")],
          f"dkron-cli get jobs lists {name}")
    check(not differing(cli_json("get", "job", name), change),
          "dkron-cli get job prints the job as stored")
    code, out = cli("get", "job", f"clients-missing-{SUFFIX}")
    check(code == 1 and "404" in out, "dkron-cli get job of an unknown job exits 1 naming the 404",
          f"exit {code}: {out}")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "job.json")
        cli_spec = job_spec(cli_name, tags, "dkron-cli")
        with open(path, "w") as f:
            json.dump(cli_spec, f)
        CREATED.append(cli_name)
        code, out = cli("apply", "job", path)
        check(code == 0 and "Processed" in out, "dkron-cli apply job creates a job from a file",
              f"exit {code}: {out}")
        check(not differing(call("dkron get_job()", api.get_job, cli_name), cli_spec),
              "dkron get_job() reads back the CLI-applied job as written")
        code, out = cli("run", cli_name)
        check(code == 0, "dkron-cli run is accepted", f"exit {code}: {out}")
        poll("dkron get_job(): the CLI-run job succeeded",
             lambda: (lambda j: (j.get("success_count", 0) >= 1
                                 and j.get("status") == "success", j))(
                 call("dkron get_job()", api.get_job, cli_name)))
        ok(f"the job run by dkron-cli succeeded within {RUN_BOUND:.0f} s")

        backup = os.path.join(tmp, "export")
        os.mkdir(backup)
        code, out = cli("export", backup)
        check(code == 0, "dkron-cli export exits 0", f"exit {code}: {out}")
        listed = call("dkron get_jobs()", api.get_jobs)
        files = sorted(os.listdir(backup))
        check(sorted(f"{j['name']}.json" for j in listed) == files,
              f"dkron-cli export wrote one file per job ({len(files)})", repr(files))
        with open(os.path.join(backup, f"{name}.json")) as f:
            exported = json.load(f)
        check(not differing(exported, change), "dkron-cli export wrote the job's fields as stored",
              repr(differing(exported, change)))

    deleted = call("dkron delete_job() (DELETE /v1/jobs/<job>)", api.delete_job, cli_name)
    check(isinstance(deleted, dict) and deleted.get("name") == cli_name,
          "dkron delete_job() answers with the deleted job", repr(deleted))
    error = expect_error("dkron get_job() of the deleted job", DkronException, api.get_job, cli_name)
    check("code 404" in str(error), "dkron get_job() of the deleted job is a 404", str(error))
    check(cli_name not in [j.get("name") for j in call("dkron get_jobs()", api.get_jobs)],
          "dkron get_jobs() no longer lists the deleted job")
    error = expect_error("dkron delete_job() of the deleted job", DkronException,
                         api.delete_job, cli_name)
    check("code 404" in str(error), "dkron delete_job() again is a 404", str(error))
    CREATED.remove(cli_name)

    # Last: the Dkron 0.x/1.x executions path, which Dkron v4 itself no longer serves.
    legacy = ("dkron 0.0.5 asks GET /v1/executions/<job>, the Dkron 0.x/1.x path (Dkron v4 "
              "serves /v1/jobs/<job>/executions and answers 404 here too); passing needs the "
              "server to keep the old path as an alias")
    try:
        executions = call("dkron get_executions()", api.get_executions, name)
    except Failure as e:
        raise Failure(f"{e}\n      {legacy}") from e
    check(hello_execution(executions, name) is not None,
          "dkron get_executions() lists the successful run printing hello", repr(executions)[:300])
    code, out = cli("get", "executions", name)
    check(code == 0 and hello_execution(json.loads(out or "null"), name) is not None,
          "dkron-cli get executions lists the successful run", f"exit {code}: {out[:300]}")

    code, out = cli("delete", "job", name)
    check(code == 0, "dkron-cli delete job exits 0", f"exit {code}: {out}")
    error = expect_error("dkron get_job() of the job deleted by the CLI", DkronException,
                         api.get_job, name)
    check("code 404" in str(error), "dkron get_job() of the job deleted by dkron-cli is a 404",
          str(error))
    CREATED.remove(name)


def clean_up(c):
    """Delete, through pydkron, whatever a failed run left behind (best effort, bounded)."""
    if not CREATED:
        return
    try:
        client = c["DkronClient"](hosts=[pydkron_host()])
    except Failure:
        return
    for name in list(CREATED):
        try:
            with bounded(f"cleanup of {name}", 10):
                client.delete_job(name)
            note(f"deleted {name}, left behind by the failure")
        except Exception as e:
            note(f"could not delete {name}: {e}")


def start_and_wait(binary):
    """Starts a single node from `binary`; answers it and its URL once it leads."""
    node, base, _, log_path = start_node(binary, "clients-node", "--log-level=warn",
                                         prefix="dkron-clients-")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise SystemExit(f"dkron exited with {node.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(base + "/v1/leader", timeout=2) as r:
                if r.status == 200:
                    return node, base
        except OSError:
            pass
        time.sleep(0.2)
    node.kill()
    raise SystemExit(f"dkron did not elect itself leader at {base} within 30 s")


def main():
    global BASE
    node = None
    if len(sys.argv) > 1:
        node, BASE = start_and_wait(sys.argv[1])
    try:
        return run_all()
    finally:
        if node is not None:
            node.terminate()
            node.wait(timeout=10)


def run_all():
    clients = import_clients()
    try:
        tags = test_pydkron(clients)
        test_dkron(clients, tags)
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        clean_up(clients)
        return 1
    print("all client checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
