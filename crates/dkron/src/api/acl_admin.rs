//! `/v1/acl/...`: the bootstrap, policies and tokens (Dkron Pro's routes and shapes). Who may
//! call each is decided by the gate (`acl.rs`): the bootstrap is open (refused once done),
//! `token/self` takes any valid token, the rest a management token.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use dkron_core::acl::{AclCommand, PolicyDocument, Token, TokenType};
use dkron_core::command::{Command, Response as Applied};
use dkron_core::godur::parse_go_duration;
use serde::Deserialize;
use serde_json::{Value, json};

use super::acl::{Caller, secret_hash};
use super::query::{Query, ok};
use super::{ApiError, Context, Cx};

/// The reset file an operator writes on a server to bootstrap again.
pub const RESET_FILE: &str = "acl-bootstrap-reset";

async fn write_acl(cx: &Context, acl: AclCommand) -> Result<(), ApiError> {
    match cx.proposer.write(Command::Acl { acl }).await? {
        Applied::Acl => Ok(()),
        Applied::Rejected { error } => Err(error.into()),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

/// A random id in UUID v4 form (Dkron Pro's accessors and secrets look so).
pub fn random_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A token as the API shows it: never its secret's hash.
fn view(t: &Token) -> Value {
    json!({
        "accessor": t.accessor,
        "name": t.name,
        "type": t.kind,
        "policies": t.policies,
        "create_time": t.create_time,
        "expiration_time": t.expiration_time,
    })
}

/// The answer to a token's creation: its view and, this once, its secret.
fn with_secret(t: &Token, secret: &str) -> Value {
    let mut v = view(t);
    v["secret"] = json!(secret);
    v
}

fn disabled() -> ApiError {
    ApiError::bad_request(
        "ACLs are disabled on this server: start it with --acl-enabled (or acl: {enabled: true}) first",
    )
}

/// The first management token, made from `secret` (random unless pre-seeded).
pub fn bootstrap_token(secret: &str, now: jiff::Timestamp) -> Token {
    Token {
        accessor: random_id(),
        secret_hash: secret_hash(secret),
        name: "bootstrap".into(),
        kind: TokenType::Management,
        policies: Vec::new(),
        create_time: now,
        expiration_time: None,
    }
}

/// `POST /v1/acl/bootstrap`: once per cluster (again only with the reset index written to
/// `<data-dir>/acl-bootstrap-reset` on this server, which needs access to its disk).
pub async fn bootstrap(State(cx): Cx, query: Query) -> Result<Response, ApiError> {
    if !cx.acl.enabled {
        return Err(disabled());
    }
    let reset_path = cx.acl.data_dir.join(RESET_FILE);
    let reset = std::fs::read_to_string(&reset_path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let secret = random_id();
    let token = bootstrap_token(&secret, cx.clock.now());
    write_acl(
        &cx,
        AclCommand::Bootstrap {
            token: token.clone(),
            reset,
        },
    )
    .await?;
    if reset.is_some() {
        let _ = std::fs::remove_file(&reset_path);
    }
    tracing::info!(accessor = %token.accessor, "ACL bootstrap: the management token was created");
    Ok(ok(&with_secret(&token, &secret), &query))
}

/// A policy as Dkron's OpenAPI shows it: `Name`, and `Rules` as a JSON string.
fn policy_view(name: &str, rules: &PolicyDocument) -> Value {
    json!({ "Name": name, "Rules": serde_json::to_string(rules).unwrap_or_default() })
}

pub async fn policies(State(cx): Cx, query: Query) -> Result<Response, ApiError> {
    let list: Vec<Value> = cx
        .state
        .read(|s| s.acl().policies().map(|(n, r)| policy_view(n, r)).collect());
    Ok(ok(&list, &query))
}

pub async fn policy(
    State(cx): Cx,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let found = cx.state.read(|s| s.acl().policy(&name).cloned());
    match found {
        Some(rules) => Ok(ok(&policy_view(&name, &rules), &query)),
        None => Err(ApiError::not_found(format!("ACL policy {name} not found"))),
    }
}

fn parse_error(prefix: &str, e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let field = if prefix.is_empty() {
        path
    } else if path == "." {
        prefix.to_string()
    } else {
        format!("{prefix}.{path}")
    };
    ApiError::undecodable("invalid policy", field, e.inner())
}

fn decode_document(body: &[u8], prefix: &str) -> Result<PolicyDocument, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| parse_error(prefix, e))
}

/// A policy body: Dkron Pro's document itself, or `{"Name", "Rules"}` with the document as a
/// string (or an object).
pub(crate) fn decode_policy(body: &[u8]) -> Result<PolicyDocument, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid policy: not JSON: {e}")))?;
    let rules = match value.get("Rules").or_else(|| value.get("rules")) {
        Some(Value::String(text)) => decode_document(text.as_bytes(), "Rules")?,
        Some(object) => decode_document(object.to_string().as_bytes(), "Rules")?,
        None => decode_document(body, "")?,
    };
    let errors = rules.check();
    if let Some(first) = errors.first() {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": format!("invalid policy: {}: {}", first.field, first.message), "field": first.field, "errors": errors }),
        });
    }
    Ok(rules)
}

fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_param(
            "name",
            format!("{what} name {name:?} must be 1 to 128 letters, digits, '-', '_' or '.'"),
        ))
    }
}

pub async fn put_policy(
    State(cx): Cx,
    Path(name): Path<String>,
    query: Query,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_name("policy", &name)?;
    let rules = decode_policy(&body)?;
    write_acl(
        &cx,
        AclCommand::SetPolicy {
            name: name.clone(),
            rules: rules.clone(),
        },
    )
    .await?;
    Ok(ok(&policy_view(&name, &rules), &query))
}

pub async fn delete_policy(
    State(cx): Cx,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    write_acl(&cx, AclCommand::DeletePolicy { name: name.clone() }).await?;
    Ok(ok(&json!({ "Name": name }), &query))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    #[serde(default, rename = "type")]
    kind: TokenType,
    #[serde(default)]
    policies: Vec<String>,
    /// Go duration (`24h`); none: the token does not expire.
    #[serde(default)]
    ttl: String,
}

pub async fn create_token(State(cx): Cx, query: Query, body: Bytes) -> Result<Response, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let new: NewToken = serde_path_to_error::deserialize(de)
        .map_err(|e| ApiError::undecodable("invalid token", e.path().to_string(), e.inner()))?;
    check_name("token", &new.name)?;
    let now = cx.clock.now();
    let expiration_time = match new.ttl.as_str() {
        "" => None,
        ttl => {
            let d = parse_go_duration(ttl)
                .ok()
                .filter(|d| !d.is_zero())
                .and_then(|d| jiff::SignedDuration::try_from(d).ok())
                .and_then(|d| now.checked_add(d).ok())
                .ok_or_else(|| {
                    ApiError::bad_param(
                        "ttl",
                        format!("{ttl:?} is not a positive Go duration such as 24h"),
                    )
                })?;
            Some(d)
        }
    };
    let secret = random_id();
    let token = Token {
        accessor: random_id(),
        secret_hash: secret_hash(&secret),
        name: new.name,
        kind: new.kind,
        policies: new.policies,
        create_time: now,
        expiration_time,
    };
    write_acl(
        &cx,
        AclCommand::CreateToken {
            token: token.clone(),
        },
    )
    .await?;
    Ok(ok(&with_secret(&token, &secret), &query))
}

pub async fn tokens(State(cx): Cx, query: Query) -> Result<Response, ApiError> {
    let list: Vec<Value> = cx.state.read(|s| s.acl().tokens().map(view).collect());
    Ok(ok(&list, &query))
}

fn token_not_found(accessor: &str) -> ApiError {
    ApiError::not_found(format!("ACL token {accessor} not found"))
}

pub async fn token(
    State(cx): Cx,
    Path(accessor): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let found = cx
        .state
        .read(|s| s.acl().token_by_accessor(&accessor).map(view));
    Ok(ok(
        &found.ok_or_else(|| token_not_found(&accessor))?,
        &query,
    ))
}

pub async fn delete_token(
    State(cx): Cx,
    Path(accessor): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    write_acl(
        &cx,
        AclCommand::DeleteToken {
            accessor: accessor.clone(),
        },
    )
    .await?;
    Ok(ok(&json!({ "accessor": accessor }), &query))
}

/// `GET /v1/acl/token/self`: the caller's own token.
pub async fn token_self(State(cx): Cx, caller: Caller, query: Query) -> Result<Response, ApiError> {
    let Caller::Token(p) = caller else {
        return Err(disabled());
    };
    let found = cx
        .state
        .read(|s| s.acl().token_by_accessor(&p.accessor).map(view));
    Ok(ok(
        &found.ok_or_else(|| token_not_found(&p.accessor))?,
        &query,
    ))
}

/// Makes `secret` the management token once a leader exists (`acl.bootstrap_token`): every
/// server configured so tries; the first commit wins and the others are refused, which is
/// the end of it too. Gives up only when the node stops.
pub async fn seed_bootstrap(
    proposer: crate::raft::Proposer,
    state: crate::raft::StateReader,
    clock: crate::clock::SharedClock,
    secret: String,
    shutdown: crate::shutdown::Shutdown,
) {
    let hash = secret_hash(&secret);
    loop {
        if state.read(|s| s.acl().bootstrapped()) {
            if !state.read(|s| s.acl().tokens().any(|t| t.secret_hash == hash)) {
                tracing::warn!(
                    "acl.bootstrap_token is set but the cluster was bootstrapped with another token: this one is not valid"
                );
            }
            return;
        }
        let token = bootstrap_token(&secret, clock.now());
        let write = proposer.write(Command::Acl {
            acl: AclCommand::Bootstrap { token, reset: None },
        });
        match write.await {
            Ok(Applied::Acl) => {
                tracing::info!("ACL bootstrap: acl.bootstrap_token is the management token");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "ACL bootstrap from acl.bootstrap_token waits for a leader")
            }
        }
        tokio::select! {
            _ = shutdown.requested() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}
