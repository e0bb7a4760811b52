//! Bad input of every kind is a 4xx with a JSON `error`, never a 5xx, and leaves nothing behind.

use serde_json::{Value, json};

use crate::support::{TestNode, shell_job};

/// A base job that is valid; each case breaks one thing.
fn valid(name: &str) -> Value {
    shell_job(name, "@every 1h", "true")
}

fn with(mut job: Value, key: &str, value: Value) -> Value {
    job[key] = value;
    job
}

/// One rejected job submission: the raw body, the expected status, a substring of `error`,
/// and the field the error must name (in `field` or `errors[].field`), if any.
struct Case {
    what: &'static str,
    body: String,
    status: u16,
    error_contains: &'static str,
    field: Option<&'static str>,
}

fn case(
    what: &'static str,
    body: Value,
    status: u16,
    error_contains: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        body: body.to_string(),
        status,
        error_contains,
        field,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_submissions_are_4xx_json_errors_naming_the_problem() {
    let node = TestNode::start().await;
    let cases = [
        Case {
            what: "malformed JSON",
            body: r#"{"name": "broken", "schedule": "@every 1h""#.into(),
            status: 400,
            error_contains: "Unable to parse payload",
            field: None,
        },
        case(
            "retries as a string",
            with(valid("retries-str"), "retries", json!("3")),
            400,
            "retries",
            Some("retries"),
        ),
        case(
            "negative retries",
            with(valid("retries-neg"), "retries", json!(-1)),
            400,
            "Unable to parse payload",
            Some("retries"),
        ),
        case(
            "number inside executor_config",
            with(
                valid("cfg-number"),
                "executor_config",
                json!({"command": "true", "timeout": 30}),
            ),
            400,
            "executor_config.timeout",
            Some("executor_config.timeout"),
        ),
        case(
            "bad name",
            valid("BAD JOB NAME!"),
            400,
            "Job validation failed",
            Some("name"),
        ),
        case(
            "empty name",
            valid(""),
            400,
            "name cannot be empty",
            Some("name"),
        ),
        case(
            "bad @at schedule",
            with(valid("bad-at"), "schedule", json!("@at badtime")),
            400,
            "can't parse job schedule",
            Some("schedule"),
        ),
        case(
            "five-field cron",
            with(valid("five-fields"), "schedule", json!("* * * * *")),
            400,
            "can't parse job schedule",
            Some("schedule"),
        ),
        case(
            "bad concurrency",
            with(valid("bad-concurrency"), "concurrency", json!("badvalue")),
            400,
            "invalid concurrency policy value",
            Some("concurrency"),
        ),
        case(
            "bad time zone",
            with(valid("bad-tz"), "timezone", json!("notatimezone")),
            400,
            "unknown time zone notatimezone",
            Some("timezone"),
        ),
        case(
            "bad shell timeout",
            with(
                valid("bad-timeout"),
                "executor_config",
                json!({"command": "true", "timeout": "foreverandever"}),
            ),
            400,
            "Error parsing job timeout value",
            Some("executor_config.timeout"),
        ),
        case(
            "own name as parent",
            with(valid("selfparent"), "parent_job", json!("selfparent")),
            400,
            "the job can not have itself as parent",
            Some("parent_job"),
        ),
    ];
    for c in &cases {
        let r = node.post_raw("/v1/jobs", c.body.clone()).await;
        assert_eq!(r.status, c.status, "{}: {r:#?}", c.what);
        assert!(
            r.error().contains(c.error_contains),
            "{}: error should contain {:?}: {r:#?}",
            c.what,
            c.error_contains
        );
        if let Some(field) = c.field {
            assert!(
                r.error_fields().iter().any(|f| f == field),
                "{}: error should name field {field}: {r:#?}",
                c.what
            );
        }
    }
    let r = node.get("/v1/jobs").await;
    assert_eq!(r.body, json!([]), "a rejected job was stored: {r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_parent_is_404_with_dkron_wording_and_stores_nothing() {
    let node = TestNode::start().await;
    let job = with(valid("orphan"), "parent_job", json!("parent_test_job"));
    let r = node.post("/v1/jobs", &job).await;
    assert_eq!(r.status, 404, "{r:#?}");
    assert_eq!(r.error(), "specified parent job not found");
    assert_eq!(node.get("/v1/jobs/orphan").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_a_different_body_name_is_400_and_renames_nothing() {
    let node = TestNode::start().await;
    node.create(&valid("a")).await;
    let r = node.put("/v1/jobs/a", &valid("b")).await;
    assert_eq!(r.status, 400, "{r:#?}");
    assert!(r.error_fields().iter().any(|f| f == "name"), "{r:#?}");
    assert_eq!(node.get("/v1/jobs/b").await.status, 404);
    assert_eq!(node.get("/v1/jobs/a").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_without_a_body_name_takes_the_path_name() {
    let node = TestNode::start().await;
    let mut job = valid("");
    job.as_object_mut().unwrap().remove("name");
    let r = node.put("/v1/jobs/from-path", &job).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(node.job("from-path").await["name"], "from-path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_child_cycle_is_rejected_with_400() {
    let node = TestNode::start().await;
    node.create(&valid("a")).await;
    node.create(&with(valid("b"), "parent_job", json!("a")))
        .await;
    let r = node
        .post("/v1/jobs", &with(valid("a"), "parent_job", json!("b")))
        .await;
    assert_eq!(r.status, 400, "{r:#?}");
    assert!(r.error().contains("cycle"), "{r:#?}");
    let a = node.job("a").await;
    assert_eq!(a["parent_job"], "", "the rejected update changed a: {a:#}");
    assert_eq!(a["dependent_jobs"], json!(["b"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_400_naming_the_parameter() {
    let node = TestNode::start().await;
    node.create(&valid("only")).await;
    let cases = [
        ("/v1/jobs?_sort=bogus", "_sort"),
        ("/v1/jobs?_start=abc", "_start"),
        ("/v1/jobs?_end=-1", "_end"),
        ("/v1/jobs?_order=sideways", "_order"),
        ("/v1/jobs?disabled=maybe", "disabled"),
        (
            "/v1/jobs/only/executions?output_size_limit=x",
            "output_size_limit",
        ),
        ("/v1/jobs/only/executions?_sort=bogus", "_sort"),
        ("/v1/jobs/only/executions?_order=sideways", "_order"),
    ];
    for (path, param) in cases {
        let r = node.get(path).await;
        assert_eq!(r.status, 400, "{path}: {r:#?}");
        assert!(r.error().contains(param), "{path}: {r:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_past_end_is_an_empty_page_not_a_500() {
    let node = TestNode::start().await;
    for name in ["a", "b", "c"] {
        node.create(&valid(name)).await;
    }
    let r = node.get("/v1/jobs?_start=10&_end=2").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body, json!([]));
    assert_eq!(r.total_count(), Some(3));
    let r = node.get("/v1/jobs?_start=10").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_a_404_json_error() {
    let node = TestNode::start().await;
    for path in ["/v1/nope", "/nothing/here", "/v1/jobs/a/b/c/d"] {
        let r = node.get(path).await;
        assert_eq!(r.status, 404, "{path}: {r:#?}");
        assert!(!r.error().is_empty());
    }
    let r = node.get("/v1/jobs/notajob").await;
    assert_eq!(r.status, 404, "{r:#?}");
    assert!(r.error().contains("notajob"), "{r:#?}");
}

/// Decision 3: every error has a JSON body — also when the router rejects the method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_on_a_known_route_is_a_4xx_json_error() {
    let node = TestNode::start().await;
    let r = node.delete("/v1/members").await;
    assert!((400..500).contains(&r.status), "{r:#?}");
    assert!(!r.error().is_empty(), "{r:#?}");
}

/// Go's decoder, which Dkron's clients were written against: `null` leaves a field at its zero
/// value (django-dkron sends `"parent_job": null`), and a JSON array is no job at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_fields_are_zero_values_and_an_array_is_unparsable() {
    let node = TestNode::start().await;
    let mut job = valid("nullish");
    for key in [
        "parent_job",
        "displayname",
        "owner",
        "timezone",
        "tags",
        "retries",
        "disabled",
    ] {
        job[key] = Value::Null;
    }
    job["metadata"] = json!({"team": null});
    let r = node.post("/v1/jobs", &job).await;
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.body["parent_job"], "");
    assert_eq!(r.body["retries"], 0);
    assert_eq!(r.body["metadata"]["team"], "");
    let r = node.post("/v1/jobs", &json!([valid("in-an-array")])).await;
    assert_eq!(r.status, 400, "{r:#?}");
    assert!(
        r.error().starts_with("Unable to parse payload"),
        "{}",
        r.error()
    );
    assert_eq!(node.get("/v1/jobs/in-an-array").await.status, 404);
}
