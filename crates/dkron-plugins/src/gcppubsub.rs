//! `gcppubsub`: publish one message to a Google Cloud Pub/Sub topic over its REST API,
//! Dkron's keys: `project`, `topic`, `data` (standard base64), `attributes` (a JSON object
//! of strings). The output is the message id the service assigned, as in Dkron.
//!
//! With `PUBSUB_EMULATOR_HOST` set (as Google's client libraries honour it) the emulator is
//! called over plain HTTP without credentials. Otherwise the call carries an OAuth token from
//! Google's application-default credentials ([`crate::gcpauth`]).

use std::collections::BTreeMap;

use base64::Engine;

use crate::{Connections, Outcome, Run, get};

/// Where Pub/Sub's REST API lives.
const ENDPOINT: &str = "https://pubsub.googleapis.com";

pub fn validate_config(config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if get(config, "project").is_empty() {
        problems.push(("project".to_owned(), "missing project".to_owned()));
    }
    if get(config, "topic").is_empty() {
        problems.push(("topic".to_owned(), "missing topic".to_owned()));
    }
    if let Err((key, e)) = message(config, &Run::default_identity()) {
        problems.push((key.to_owned(), e));
    }
    problems
}

impl Run {
    /// An identity for checking a config without a run.
    fn default_identity() -> Run {
        Run {
            job_name: String::new(),
            execution_id: String::new(),
            scheduled_time: String::new(),
            fencing_token: 0,
        }
    }
}

/// The message of Dkron's `data` and `attributes`, with the run's identity added to the
/// attributes (a job's own attribute of the same name is kept).
fn message(
    config: &BTreeMap<String, String>,
    run: &Run,
) -> Result<serde_json::Value, (&'static str, String)> {
    let (data, attributes) = (get(config, "data"), get(config, "attributes"));
    if data.is_empty() && attributes.is_empty() {
        return Err((
            "data",
            "at least one of these fields should be set 'attributes, data'".to_owned(),
        ));
    }
    let mut attrs: BTreeMap<String, String> = if attributes.is_empty() {
        BTreeMap::new()
    } else {
        serde_json::from_str(attributes).map_err(|e| {
            (
                "attributes",
                format!(
                    "invalid attributes JSON: {e} (a JSON object of strings, e.g. {{\"k\":\"v\"}})"
                ),
            )
        })?
    };
    if !data.is_empty() {
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| ("data", format!("invalid encoded data: {e}")))?;
    }
    if !run.execution_id.is_empty() {
        for (name, value) in run.headers() {
            attrs.entry(name.to_owned()).or_insert(value);
        }
    }
    let mut msg = serde_json::json!({ "attributes": attrs });
    if !data.is_empty() {
        msg["data"] = data.into();
    }
    Ok(msg)
}

pub async fn execute(
    config: &BTreeMap<String, String>,
    run: &Run,
    connections: &Connections,
) -> Outcome {
    let message = message(config, run).map_err(|(_, e)| format!("{e}\n"))?;
    let (project, topic) = (get(config, "project"), get(config, "topic"));
    let http = connections.pools().http.get_or_init(|| {
        crate::install_crypto_provider();
        reqwest::Client::builder()
            .pool_idle_timeout(crate::pool::IDLE)
            .build()
            .unwrap_or_default()
    });
    let emulator = std::env::var("PUBSUB_EMULATOR_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    let base = match &emulator {
        Some(host) => format!("http://{host}"),
        None => ENDPOINT.to_owned(),
    };
    let url = format!("{base}/v1/projects/{project}/topics/{topic}:publish");
    let mut request = http
        .post(&url)
        .json(&serde_json::json!({ "messages": [message] }));
    if emulator.is_none() {
        let token = crate::gcpauth::token(http).await.map_err(|e| {
            format!("publish message to topic \"{topic}\": no Google credentials: {e}\n")
        })?;
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("publish message to topic \"{topic}\": {e}\n"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!(
            "publish message to topic \"{topic}\": {status}: {}\n",
            body.trim()
        ));
    }
    let id = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["messageIds"][0].as_str().map(str::to_owned))
        .ok_or_else(|| {
            format!("publish message to topic \"{topic}\": the answer has no message id: {body}\n")
        })?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn dkron_texts_name_the_key() {
        assert_eq!(
            validate_config(&cfg(&[])),
            vec![
                ("project".to_owned(), "missing project".to_owned()),
                ("topic".to_owned(), "missing topic".to_owned()),
                (
                    "data".to_owned(),
                    "at least one of these fields should be set 'attributes, data'".to_owned()
                ),
            ]
        );
        let bad = cfg(&[("project", "p"), ("topic", "t"), ("attributes", "[1]")]);
        assert_eq!(validate_config(&bad)[0].0, "attributes");
        let bad = cfg(&[("project", "p"), ("topic", "t"), ("data", "%%")]);
        assert_eq!(validate_config(&bad)[0].0, "data");
    }

    #[test]
    fn the_message_carries_data_attributes_and_the_run() {
        let config = cfg(&[
            ("data", "aGVsbG8="),
            ("attributes", r#"{"hello":"world","x-dkron-job":"mine"}"#),
        ]);
        let m = message(&config, &run()).unwrap();
        assert_eq!(m["data"], "aGVsbG8=");
        assert_eq!(m["attributes"]["hello"], "world");
        assert_eq!(
            m["attributes"]["x-dkron-job"], "mine",
            "the job's own attribute is kept"
        );
        assert_eq!(m["attributes"]["x-dkron-fencing-token"], "7");
    }
}
