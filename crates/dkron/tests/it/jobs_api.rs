//! `/v1/jobs`: create/update semantics, listing (filters, sort, paging), delete, toggle, run.

use serde_json::{Value, json};

use crate::support::{SOON, TestNode, ZERO_TIME, shell_job, wait_until};

fn job(name: &str) -> Value {
    shell_job(name, "@every 1h", "true")
}

fn child(name: &str, parent: &str) -> Value {
    json!({
        "name": name,
        "parent_job": parent,
        "executor": "shell",
        "executor_config": {"command": "true"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_update_overwrites_user_fields() {
    let node = TestNode::start().await;
    let mut j = job("test_job");
    j["disabled"] = json!(true);
    j["owner"] = json!("someone");
    node.create(&j).await;
    j["disabled"] = json!(false);
    j["executor_config"]["command"] = json!("test");
    let r = node.post("/v1/jobs", &j).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.body["disabled"], false);
    assert_eq!(r.body["executor_config"]["command"], "test");
    let stored = node.job("test_job").await;
    assert_eq!(stored["disabled"], false);
    assert_eq!(stored["executor_config"]["command"], "test");
    assert_eq!(node.get("/v1/jobs").await.total_count(), Some(1));
}

/// Dkron's TestAPIJobCreateUpdateParentJob_KeepDependents, plus counters and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_keeps_counters_status_and_dependent_jobs() {
    let node = TestNode::start().await;
    node.create(&job("parentjobkeep")).await;
    node.create(&child("childjobkeep", "parentjobkeep")).await;
    node.run("parentjobkeep").await;
    node.wait_finished("parentjobkeep", 1, SOON).await;
    wait_until(SOON, "parent counters", async || {
        let p = node.job("parentjobkeep").await;
        (p["success_count"] == 1).then_some(())
    })
    .await;

    // Re-post the parent as a client would: no dependents, zero counters, no status.
    let mut update = job("parentjobkeep");
    update["dependent_jobs"] = Value::Null;
    update["success_count"] = json!(0);
    update["displayname"] = json!("renamed for display");
    assert_eq!(node.post("/v1/jobs", &update).await.status, 201);

    let p = node.job("parentjobkeep").await;
    assert_eq!(p["dependent_jobs"], json!(["childjobkeep"]), "{p:#}");
    assert_eq!(p["success_count"], 1, "{p:#}");
    assert_eq!(p["status"], "success", "{p:#}");
    assert!(p["last_success"].is_string(), "{p:#}");
    assert_eq!(p["displayname"], "renamed for display");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_start_end_and_counts_all_matches() {
    let node = TestNode::start().await;
    for name in ["j5", "j3", "j1", "j4", "j2"] {
        node.create(&job(name)).await;
    }
    let cases = [
        ("", vec!["j1", "j2", "j3", "j4", "j5"]),
        ("?_start=1&_end=3", vec!["j2", "j3"]),
        ("?_start=3", vec!["j4", "j5"]),
        ("?_end=2", vec!["j1", "j2"]),
        ("?_start=2&_end=100", vec!["j3", "j4", "j5"]),
        (
            "?_sort=name&_order=DESC",
            vec!["j5", "j4", "j3", "j2", "j1"],
        ),
        ("?_sort=id&_order=desc&_start=0&_end=2", vec!["j5", "j4"]),
    ];
    for (query, expected) in cases {
        let r = node.get(&format!("/v1/jobs{query}")).await;
        assert_eq!(r.status, 200, "{query}: {r:#?}");
        assert_eq!(r.names(), expected, "{query}");
        assert_eq!(r.total_count(), Some(5), "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_text_disabled_and_metadata() {
    let node = TestNode::start().await;
    node.create(&job("alpha-backup")).await;
    let mut beta = job("beta-backup");
    beta["disabled"] = json!(true);
    beta["metadata"] = json!({"team": "core", "env": "prod"});
    node.create(&beta).await;
    let mut gamma = job("gamma");
    gamma["displayname"] = json!("Nightly backup");
    gamma["metadata"] = json!({"team": "core"});
    gamma["tags"] = json!({"server": "true:1"});
    node.create(&gamma).await;

    let cases = [
        ("?q=backup", vec!["alpha-backup", "beta-backup", "gamma"]),
        ("?q=alpha", vec!["alpha-backup"]),
        ("?q=BACKUP", vec![]),
        ("?disabled=true", vec!["beta-backup"]),
        ("?disabled=false", vec!["alpha-backup", "gamma"]),
        ("?metadata%5Bteam%5D=core", vec!["beta-backup", "gamma"]),
        (
            "?metadata%5Bteam%5D=core&metadata%5Benv%5D=prod",
            vec!["beta-backup"],
        ),
        ("?metadata%5Bteam%5D=core&q=gam", vec!["gamma"]),
        // Tags match on the value, without the `:count` suffix.
        ("?tags%5Bserver%5D=true", vec!["gamma"]),
        ("?tags%5Bserver%5D=false", vec![]),
    ];
    for (query, expected) in cases {
        let r = node.get(&format!("/v1/jobs{query}")).await;
        assert_eq!(r.status, 200, "{query}: {r:#?}");
        assert_eq!(r.names(), expected, "{query}");
        assert_eq!(r.total_count(), Some(expected.len()), "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_status_untriggered_success_and_failed() {
    let node = TestNode::start().await;
    node.create(&job("never-run")).await;
    node.create(&job("ran-ok")).await;
    node.create(&shell_job("ran-bad", "@every 1h", "exit 3"))
        .await;
    node.run("ran-ok").await;
    node.run("ran-bad").await;
    wait_until(SOON, "both runs to set a status", async || {
        let ok = node.job("ran-ok").await;
        let bad = node.job("ran-bad").await;
        (ok["status"] != "" && bad["status"] != "").then_some(())
    })
    .await;
    for (status, expected) in [
        ("untriggered", "never-run"),
        ("success", "ran-ok"),
        ("failed", "ran-bad"),
    ] {
        let r = node.get(&format!("/v1/jobs?status={status}")).await;
        assert_eq!(r.names(), [expected], "status={status}: {r:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_indents_the_same_json() {
    let node = TestNode::start().await;
    node.create(&job("pretty")).await;
    for path in ["/v1/jobs", "/v1/jobs/pretty", "/v1/members", "/v1"] {
        let compact = node.get(path).await;
        let pretty = node.get(&format!("{path}?pretty")).await;
        assert!(!compact.text.contains('\n'), "{path}: {compact:#?}");
        assert!(pretty.text.contains("\n  "), "{path}: {pretty:#?}");
        if path != "/v1/members" {
            // Members carry a per-call id; everything else must be equal.
            assert_eq!(compact.body, pretty.body, "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_returns_the_job_and_it_is_gone() {
    let node = TestNode::start().await;
    node.create(&job("doomed")).await;
    let r = node.delete("/v1/jobs/doomed").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body["name"], "doomed");
    assert_eq!(node.get("/v1/jobs/doomed").await.status, 404);
    let r = node.delete("/v1/jobs/doomed").await;
    assert_eq!(r.status, 404, "{r:#?}");
    assert!(r.error().contains("doomed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_parent_with_children_is_409_until_the_children_go() {
    let node = TestNode::start().await;
    node.create(&job("parent")).await;
    node.create(&child("kid", "parent")).await;
    let r = node.delete("/v1/jobs/parent").await;
    assert_eq!(r.status, 409, "{r:#?}");
    assert!(r.error().contains("dependent"), "{r:#?}");
    assert_eq!(r.body["dependent_jobs"], json!(["kid"]));
    assert_eq!(node.get("/v1/jobs/parent").await.status, 200);

    assert_eq!(node.delete("/v1/jobs/kid").await.status, 200);
    let p = node.job("parent").await;
    assert!(
        p["dependent_jobs"].is_null() || p["dependent_jobs"] == json!([]),
        "{p:#}"
    );
    assert_eq!(node.delete("/v1/jobs/parent").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_child_updates_both_parents() {
    let node = TestNode::start().await;
    node.create(&job("parent1")).await;
    node.create(&job("parent2")).await;
    node.create(&child("child1", "parent1")).await;
    assert_eq!(
        node.job("parent1").await["dependent_jobs"],
        json!(["child1"])
    );
    node.create(&child("child1", "parent2")).await;
    let p1 = node.job("parent1").await;
    assert!(
        p1["dependent_jobs"].is_null() || p1["dependent_jobs"] == json!([]),
        "{p1:#}"
    );
    assert_eq!(
        node.job("parent2").await["dependent_jobs"],
        json!(["child1"])
    );
    // Detached, the child needs its own schedule.
    node.create(&job("child1")).await;
    assert_eq!(
        node.job("parent2").await["dependent_jobs"]
            .as_array()
            .map_or(0, Vec::len),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toggle_flips_disabled_and_back() {
    let node = TestNode::start().await;
    node.create(&job("flip")).await;
    let r = node.post_empty("/v1/jobs/flip/toggle").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body["disabled"], true);
    assert_eq!(node.job("flip").await["disabled"], true);
    assert_eq!(
        node.job("flip").await["next"],
        ZERO_TIME,
        "a disabled job has no next"
    );
    let r = node.post_empty("/v1/jobs/flip/toggle").await;
    assert_eq!(r.body["disabled"], false);
    assert_eq!(node.job("flip").await["disabled"], false);
    assert_ne!(node.job("flip").await["next"], ZERO_TIME);
    assert_eq!(node.post_empty("/v1/jobs/nope/toggle").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_a_disabled_job_is_refused() {
    let node = TestNode::start().await;
    let mut j = job("off");
    j["disabled"] = json!(true);
    node.create(&j).await;
    let r = node.post_empty("/v1/jobs/off/run").await;
    assert_eq!(r.status, 404, "Dkron's status: {r:#?}");
    assert!(r.error().contains("disabled"), "{r:#?}");
    let r = node.post_empty("/v1/jobs/missing/run").await;
    assert_eq!(r.status, 404, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_creates_and_fully_replaces_like_post() {
    let node = TestNode::start().await;
    let mut j = job("patched");
    j["owner"] = json!("first owner");
    let r = node.patch("/v1/jobs", &j).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.header("location"), Some("/v1/jobs/patched"));
    // Not a merge patch: an omitted field becomes empty.
    let r = node.patch("/v1/jobs", &job("patched")).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(node.job("patched").await["owner"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runoncreate_runs_the_new_job() {
    let node = TestNode::start().await;
    let r = node
        .post(
            "/v1/jobs?runoncreate",
            &shell_job("eager", "@every 1h", "echo hi"),
        )
        .await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.header("location"), Some("/v1/jobs/eager"));
    let runs = node.wait_finished("eager", 1, SOON).await;
    assert_eq!(runs[0]["success"], true, "{:#}", runs[0]);
    assert_eq!(runs[0]["output"], "hi\n");
}

/// Dkron's TestAPIJobCreateUpdateValidationValidName.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_lowercase_name_is_valid() {
    let node = TestNode::start().await;
    let name = "abcdefghijklmnopqrstuvwxyz0123456789-_ßñëäïüøüáéíóýćàèìòùâêîôûæšłç";
    let r = node.post("/v1/jobs", &job(name)).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.body["name"], name);
    let encoded: String = url_encode(name);
    let r = node.get(&format!("/v1/jobs/{encoded}")).await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body["id"], name);
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_job_without_schedule_has_no_next() {
    let node = TestNode::start().await;
    node.create(&job("p")).await;
    let r = node.post("/v1/jobs", &child("c", "p")).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.body["next"], ZERO_TIME);
    assert_eq!(r.body["parent_job"], "p");
}

fn next_of(job: &Value) -> jiff::Timestamp {
    job["next"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("next is not a timestamp: {job:#}"))
}

/// Decision 12: `next` is the next real fire in the job's zone; no zone means UTC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_is_the_real_next_fire_in_the_job_time_zone() {
    let node = TestNode::start().await;
    let mut tokyo = shell_job("tokyo-nine", "0 0 9 * * *", "true");
    tokyo["timezone"] = json!("Asia/Tokyo");
    let created = node.create(&tokyo).await;
    node.create(&shell_job("utc-nine", "0 0 9 * * *", "true"))
        .await;

    let now = dkron::clock::wall();
    let day = jiff::SignedDuration::from_hours(24);
    for (name, created_next) in [("tokyo-nine", Some(next_of(&created))), ("utc-nine", None)] {
        let next = next_of(&node.job(name).await);
        if let Some(c) = created_next {
            assert_eq!(c, next, "{name}: the create answer shows the same next");
        }
        assert!(next > now && next <= now + day, "{name}: {next}");
        let utc = next.to_zoned(jiff::tz::TimeZone::UTC);
        // 09:00 in Tokyo (UTC+9, no DST) is 00:00 UTC.
        let expected_hour = if name == "tokyo-nine" { 0 } else { 9 };
        assert_eq!(
            (utc.hour(), utc.minute(), utc.second()),
            (expected_hour, 0, 0),
            "{name}: {next}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_of_past_at_and_manual_schedules_is_the_zero_time() {
    let node = TestNode::start().await;
    for (name, schedule) in [
        ("past-at", "@at 2020-01-01T00:00:00Z"),
        ("by-hand", "@manually"),
    ] {
        let r = node
            .post("/v1/jobs", &shell_job(name, schedule, "true"))
            .await;
        assert_eq!(r.status, 201, "{r:#?}");
        assert_eq!(r.body["next"], ZERO_TIME, "{name}");
    }
    let future = dkron::clock::wall() + jiff::SignedDuration::from_hours(5);
    let future = future.round(jiff::Unit::Second).unwrap();
    let at = node
        .create(&shell_job("future-at", &format!("@at {future}"), "true"))
        .await;
    assert_eq!(next_of(&at), future);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_aliases_and_locations() {
    let node = TestNode::start().await;
    node.create(&job("aliased")).await;
    let r = node.put("/v1/jobs/aliased", &job("aliased")).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.header("location"), Some("/v1/jobs/aliased"));
    // POST /v1/jobs/:job is "run now" too, answered at once with 200 and the job (as Dkron).
    let r = node.post_empty("/v1/jobs/aliased").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body["name"], "aliased");
    node.wait_finished("aliased", 1, SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_fires_and_schedule_preview() {
    let node = crate::support::TestNode::start().await;
    let mut job = crate::support::shell_job("nightly", "0 30 3 * * *", "true");
    job["timezone"] = "Europe/Berlin".into();
    node.create(&job).await;
    let r = node.get("/v1/jobs/nightly/next?count=3").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let times: Vec<jiff::Timestamp> = r
        .array()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 3);
    for pair in times.windows(2) {
        assert_eq!(pair[1].duration_since(pair[0]).as_hours(), 24, "{times:?}");
    }
    let berlin = times[0].in_tz("Europe/Berlin").unwrap();
    assert_eq!((berlin.hour(), berlin.minute()), (3, 30));
    assert_eq!(node.get("/v1/jobs/nope/next").await.status, 404);
    assert_eq!(node.get("/v1/jobs/nightly/next?count=0").await.status, 400);

    let r = node
        .get("/v1/schedule?schedule=%40every%2010m&count=2")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["next"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["description"], "Every 10 minutes");
    let r = node
        .get("/v1/schedule?schedule=0%2030%208%20*%20*%20MON-FRI&timezone=Europe/Berlin&count=1")
        .await;
    let words = r.body["description"].as_str().unwrap();
    assert!(
        words.contains("08:30") && words.contains("Monday") && words.ends_with("(Europe/Berlin)"),
        "{words}"
    );
    let r = node
        .get("/v1/schedule?schedule=nope&timezone=Asis/Taipei")
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_fields(), ["schedule", "timezone"]);
}

/// What Dkron's clients depend on (Dkron 4.1's end-to-end tests, pydkron): the run endpoints
/// answer 200, a disabled job is not run (404), toggle names the request in `Location`, and a
/// trailing slash is redirected to the route without it (pydkron asks for
/// `/v1/jobs/<job>/executions/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkron_clients_get_dkrons_statuses_and_redirects() {
    let node = TestNode::start().await;
    node.create(&shell_job("parity", "@manually", "true")).await;
    for path in ["/v1/jobs/parity/run", "/v1/jobs/parity"] {
        let r = node.post_empty(path).await;
        assert_eq!(r.status, 200, "{path}: {r:#?}");
    }
    let r = node.post_empty("/v1/jobs/parity/toggle").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.header("location"), Some("/v1/jobs/parity/toggle"));
    assert_eq!(r.body["disabled"], true);
    let r = node.post_empty("/v1/jobs/parity/run").await;
    assert_eq!(r.status, 404, "a disabled job is not run: {r:#?}");
    assert!(r.error().contains("disabled"), "{}", r.error());

    // Followed, the trailing slash answers what the route does; not followed, it redirects.
    let r = node.get("/v1/jobs/parity/executions/").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.array().len(), 2);
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = raw
        .get(node.url("/v1/jobs/parity/executions/?_start=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        "/v1/jobs/parity/executions?_start=0"
    );
    let r = raw
        .post(node.url("/v1/jobs/"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307, "a POST keeps its method and body");
    assert_eq!(r.headers()["location"], "/v1/jobs");
    let r = node
        .post("/v1/jobs/", &shell_job("slashed", "@manually", "true"))
        .await;
    assert_eq!(r.status, 201, "{r:#?}");
}

/// Dkron's own web UI (react-admin with ra-data-json-server, read from Dkron's `ui/src`), call
/// by call as it makes them: query strings with `_sort=id`, a bearer token even with ACLs
/// off, edit bodies with cleared fields as `null`, read-only fields and `datetime-local`
/// times, and the headers and fields it reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkron_ui_calls_work_as_its_data_provider_makes_them() {
    let node = TestNode::start().await;
    let ui = |req: reqwest::RequestBuilder| {
        req.header("Accept", "application/json")
            .bearer_auth("whatever-the-browser-kept")
    };
    let send = async |req| crate::support::send(ui(req)).await;
    let url = |p: &str| node.url(p);

    // Create: POST /v1/jobs, 201 and the record with its `id`.
    let body = json!({"name": "ui-made", "schedule": "@every 1h", "executor": "shell",
        "executor_config": {"command": "echo from the ui"}, "concurrency": "allow",
        "tags": {}, "metadata": {}});
    let r = send(node.client.post(url("/v1/jobs")).json(&body)).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.body["id"], "ui-made");

    // List: a page, sorted by id, with X-Total-Count (react-admin throws without it).
    for query in [
        "_end=10&_order=ASC&_sort=id&_start=0",
        "_end=10&_order=ASC&_sort=id&_start=0&status=untriggered",
        "_end=10&_order=ASC&_sort=id&_start=0&disabled=false&q=ui",
    ] {
        let r = send(node.client.get(url(&format!("/v1/jobs?{query}")))).await;
        assert_eq!(r.status, 200, "{query}: {r:#?}");
        assert_eq!(r.total_count(), Some(1), "{query}: {r:#?}");
        assert_eq!(r.array()[0]["id"], "ui-made");
    }

    // Edit: PUT of the form values: read-only fields sent back, cleared inputs as null, an
    // edited date as the browser's `datetime-local` text.
    let mut form = send(node.client.get(url("/v1/jobs/ui-made"))).await.body;
    form["displayname"] = Value::Null;
    form["owner_email"] = Value::Null;
    form["retries"] = Value::Null;
    form["timezone"] = Value::Null;
    form["starts_at"] = json!("2026-01-01T10:00");
    form.as_object_mut().unwrap().remove("id");
    let r = send(node.client.put(url("/v1/jobs/ui-made")).json(&form)).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.body["id"], "ui-made");
    assert_eq!(r.body["starts_at"], "2026-01-01T10:00:00Z", "{r:#?}");
    assert_eq!(r.body["retries"], 0);

    // Run (no body) and toggle: any 2xx.
    let r = send(node.client.post(url("/v1/jobs/ui-made"))).await;
    assert_eq!(r.status, 200, "{r:#?}");
    node.wait_finished("ui-made", 1, SOON).await;

    // Executions tab: its query, X-Total-Count, output_truncated, the Go zero time for
    // running ones; "load full output" needs exactly 200.
    let r = send(node.client.get(url(
        "/v1/jobs/ui-made/executions?_end=25&_order=DESC&_sort=id&_start=0&jobs=ui-made&output_size_limit=200",
    )))
    .await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.total_count(), Some(1));
    let e = &r.array()[0];
    for field in [
        "id",
        "group",
        "job_name",
        "started_at",
        "finished_at",
        "node_name",
    ] {
        assert!(!e[field].is_null(), "{field}: {e:#}");
    }
    assert_eq!(e["output_truncated"], false);
    assert_eq!(e["success"], true);
    let id = e["id"].as_str().unwrap();
    let full = send(
        node.client
            .get(url(&format!("/v1/jobs/ui-made/executions/{id}"))),
    )
    .await;
    assert_eq!(full.status, 200);
    assert_eq!(full.body["output"], "from the ui\n");

    let r = send(node.client.post(url("/v1/jobs/ui-made/toggle"))).await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body["disabled"], true);

    // Busy and the dashboard's nodes: arrays with X-Total-Count; members' Tags an object.
    let r = send(
        node.client
            .get(url("/v1/busy?_end=10&_order=ASC&_sort=id&_start=0")),
    )
    .await;
    assert_eq!((r.status, r.total_count()), (200, Some(0)), "{r:#?}");
    let r = send(
        node.client
            .get(url("/v1/members?_end=10&_order=ASC&_sort=id&_start=0")),
    )
    .await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.total_count(), Some(1));
    let m = &r.array()[0];
    for field in ["Name", "Addr", "Port", "statusText", "id"] {
        assert!(!m[field].is_null(), "{field}: {m:#}");
    }
    assert!(m["Tags"].is_object(), "{m:#}");

    // Delete answers the record (react-admin reads its id).
    let r = send(node.client.delete(url("/v1/jobs/ui-made"))).await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body["id"], "ui-made");
}
