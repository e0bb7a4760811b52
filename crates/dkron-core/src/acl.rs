//! Access control: policies in Dkron Pro's format, tokens, and every decision on who may do
//! what. Pure like the rest of the core: the shell hashes secrets, reads headers and the
//! clock, and asks here.
//!
//! A policy maps path globs to capabilities (`{"path": {"/v1/jobs/team-a-*": {"capabilities":
//! ["read"]}}}`): `*` matches within one path segment, `**` across segments. A request is
//! allowed when one policy of the caller's token grants one of the capabilities its route
//! needs ([`route_access`]); management tokens may do everything. Beyond Dkron Pro: job writes
//! are judged on the job's own path (`/v1/jobs/<name>`, whatever route carried them), a `run`
//! capability starts runs without the right to edit, and a policy may restrict the executors
//! of the jobs written through it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::command::{ApplyError, Response};

/// What a policy grants on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Create,
    Read,
    Update,
    Delete,
    List,
    /// Start runs of a job (both run routes), without the right to change it.
    Run,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Create => "create",
            Capability::Read => "read",
            Capability::Update => "update",
            Capability::Delete => "delete",
            Capability::List => "list",
            Capability::Run => "run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PathRule {
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

/// A policy document, Dkron Pro's shape plus an optional executor allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    pub path: BTreeMap<String, PathRule>,
    /// Jobs written through a policy with this list may use only these executors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executors: Option<Vec<String>>,
}

/// Longest path glob, and most wildcards in one, a policy may hold: matching backtracks.
const MAX_GLOB_LEN: usize = 512;
const MAX_GLOB_STARS: usize = 8;

impl PolicyDocument {
    /// Problems of the document, each naming its field.
    pub fn check(&self) -> Vec<crate::validate::FieldError> {
        use crate::validate::FieldError;
        let mut errors = Vec::new();
        for glob in self.path.keys() {
            let field = format!("path.{glob}");
            if !glob.starts_with('/') {
                errors.push(FieldError::new(
                    field,
                    "a path glob starts with / (e.g. /v1/jobs/*)",
                ));
            } else if glob.len() > MAX_GLOB_LEN || glob.matches('*').count() > MAX_GLOB_STARS * 2 {
                errors.push(FieldError::new(
                    field,
                    format!("at most {MAX_GLOB_LEN} characters and {MAX_GLOB_STARS} wildcards"),
                ));
            }
        }
        if let Some(executors) = &self.executors {
            for (i, e) in executors.iter().enumerate() {
                if e.is_empty() {
                    errors.push(FieldError::new(
                        format!("executors[{i}]"),
                        "empty executor name",
                    ));
                }
            }
        }
        errors
    }

    fn grants(&self, capability: Capability, path: &str) -> bool {
        self.path
            .iter()
            .any(|(glob, rule)| rule.capabilities.contains(&capability) && glob_matches(glob, path))
    }

    fn allows_executor(&self, executor: &str) -> bool {
        self.executors
            .as_ref()
            .is_none_or(|list| list.iter().any(|e| e == executor))
    }
}

/// `*` matches any run of characters but `/`; `**` any run at all.
pub fn glob_matches(glob: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| go(rest, &s[i..])),
            [b'*', rest @ ..] => {
                let segment = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
                (0..=segment).any(|i| go(rest, &s[i..]))
            }
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(glob.as_bytes(), path.as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    #[default]
    Client,
    /// May do everything, ACL administration included.
    Management,
}

/// A token as stored: only the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub accessor: String,
    /// Hex SHA-256 of the secret (computed by the shell).
    pub secret_hash: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TokenType,
    #[serde(default)]
    pub policies: Vec<String>,
    pub create_time: Timestamp,
    #[serde(default)]
    pub expiration_time: Option<Timestamp>,
}

/// The replicated ACL state: policies by name, tokens by secret hash, the bootstrap record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AclState {
    #[serde(default)]
    policies: BTreeMap<String, PolicyDocument>,
    #[serde(default)]
    tokens: BTreeMap<String, Token>,
    #[serde(default)]
    bootstrapped: bool,
    /// Bootstraps done so far; a reset must name it (like Consul's reset index).
    #[serde(default)]
    reset_index: u64,
}

/// The ACL commands (carried by [`crate::command::Command::Acl`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AclCommand {
    /// The first management token. Refused once done, unless `reset` names the current
    /// reset index (read by the shell from a file an operator wrote on the server).
    Bootstrap {
        token: Token,
        #[serde(default)]
        reset: Option<u64>,
    },
    SetPolicy {
        name: String,
        rules: PolicyDocument,
    },
    DeletePolicy {
        name: String,
    },
    CreateToken {
        token: Token,
    },
    DeleteToken {
        accessor: String,
    },
}

/// Why a presented token does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    Unknown,
    Expired,
}

impl AclState {
    pub fn bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    pub fn reset_index(&self) -> u64 {
        self.reset_index
    }

    pub fn policy(&self, name: &str) -> Option<&PolicyDocument> {
        self.policies.get(name)
    }

    pub fn policies(&self) -> impl Iterator<Item = (&String, &PolicyDocument)> {
        self.policies.iter()
    }

    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.tokens.values()
    }

    pub fn token_by_accessor(&self, accessor: &str) -> Option<&Token> {
        self.tokens.values().find(|t| t.accessor == accessor)
    }

    /// The caller a secret (by its hash) stands for at `now`.
    pub fn authenticate(
        &self,
        secret_hash: &str,
        now: Timestamp,
    ) -> Result<Principal, Unauthenticated> {
        let token = self
            .tokens
            .get(secret_hash)
            .ok_or(Unauthenticated::Unknown)?;
        if token.expiration_time.is_some_and(|t| t <= now) {
            return Err(Unauthenticated::Expired);
        }
        Ok(Principal {
            accessor: token.accessor.clone(),
            name: token.name.clone(),
            management: token.kind == TokenType::Management,
            rules: token
                .policies
                .iter()
                .filter_map(|p| self.policies.get(p).cloned())
                .collect(),
        })
    }

    pub fn apply(&mut self, command: AclCommand) -> Result<Response, ApplyError> {
        match command {
            AclCommand::Bootstrap { token, reset } => {
                if self.bootstrapped && reset != Some(self.reset_index) {
                    return Err(ApplyError::AclBootstrapDone {
                        reset_index: self.reset_index,
                    });
                }
                self.bootstrapped = true;
                self.reset_index += 1;
                self.insert_token(token)
            }
            AclCommand::SetPolicy { name, rules } => {
                self.policies.insert(name, rules);
                Ok(Response::Acl)
            }
            AclCommand::DeletePolicy { name } => match self.policies.remove(&name) {
                Some(_) => Ok(Response::Acl),
                None => Err(ApplyError::PolicyNotFound { name }),
            },
            AclCommand::CreateToken { token } => {
                let unknown: Vec<String> = token
                    .policies
                    .iter()
                    .filter(|p| !self.policies.contains_key(*p))
                    .cloned()
                    .collect();
                if !unknown.is_empty() {
                    return Err(ApplyError::UnknownPolicies { names: unknown });
                }
                self.insert_token(token)
            }
            AclCommand::DeleteToken { accessor } => {
                let before = self.tokens.len();
                self.tokens.retain(|_, t| t.accessor != accessor);
                if self.tokens.len() == before {
                    Err(ApplyError::TokenNotFound { accessor })
                } else {
                    Ok(Response::Acl)
                }
            }
        }
    }

    fn insert_token(&mut self, token: Token) -> Result<Response, ApplyError> {
        if self.tokens.contains_key(&token.secret_hash)
            || self.token_by_accessor(&token.accessor).is_some()
        {
            return Err(ApplyError::TokenExists);
        }
        self.tokens.insert(token.secret_hash.clone(), token);
        Ok(Response::Acl)
    }
}

/// An authenticated caller, with the policies of its token resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub accessor: String,
    pub name: String,
    pub management: bool,
    rules: Vec<PolicyDocument>,
}

/// A refusal to an authenticated caller: what it would have needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forbidden {
    Lacks {
        capability: Capability,
        path: String,
    },
    ManagementOnly,
    Executor {
        executor: String,
        allowed: Vec<String>,
    },
}

impl Principal {
    /// Whether one of the token's policies grants `capability` on `path`.
    pub fn may(&self, capability: Capability, path: &str) -> bool {
        self.management || self.rules.iter().any(|d| d.grants(capability, path))
    }

    /// Whether the caller may do what `access` asks for.
    pub fn check(&self, access: &Access) -> Result<(), Forbidden> {
        match access {
            Access::Open | Access::Token => Ok(()),
            Access::Management if self.management => Ok(()),
            Access::Management => Err(Forbidden::ManagementOnly),
            Access::AnyOf(grants) => {
                if grants.iter().any(|(c, p)| self.may(*c, p)) {
                    Ok(())
                } else {
                    let (capability, path) = grants[0].clone();
                    Err(Forbidden::Lacks { capability, path })
                }
            }
        }
    }

    /// Whether the caller may create (`exists` false) or replace job `name` running
    /// `executor`: a policy must grant the write on `/v1/jobs/<name>`, and one of the policies
    /// that grant it must allow the executor.
    pub fn may_write_job(&self, name: &str, exists: bool, executor: &str) -> Result<(), Forbidden> {
        if self.management {
            return Ok(());
        }
        let capability = if exists {
            Capability::Update
        } else {
            Capability::Create
        };
        let path = job_path(name);
        let granting: Vec<&PolicyDocument> = self
            .rules
            .iter()
            .filter(|d| d.grants(capability, &path))
            .collect();
        if granting.is_empty() {
            return Err(Forbidden::Lacks { capability, path });
        }
        if granting.iter().any(|d| d.allows_executor(executor)) {
            return Ok(());
        }
        let mut allowed: Vec<String> = granting
            .iter()
            .filter_map(|d| d.executors.clone())
            .flatten()
            .collect();
        allowed.sort();
        allowed.dedup();
        Err(Forbidden::Executor {
            executor: executor.to_string(),
            allowed,
        })
    }
}

pub fn job_path(name: &str) -> String {
    format!("/v1/jobs/{name}")
}

/// What a route needs of the caller when ACLs are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, the dashboard's files, the bootstrap (refused once done).
    Open,
    /// Any valid token. Job writes are then judged per job by [`Principal::may_write_job`].
    Token,
    /// A management token (ACL administration).
    Management,
    /// One of these grants.
    AnyOf(Vec<(Capability, String)>),
}

/// Sub-resources of a job (`/v1/jobs/<name>/...`) that a grant on the job itself covers.
fn job_of(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/jobs/")?;
    match rest.split_once('/') {
        Some((job, sub)) if !job.is_empty() => Some((job, sub)),
        None if !rest.is_empty() => Some((rest, "")),
        _ => None,
    }
}

/// The access `method` on `path` (no query, no trailing slash) needs.
pub fn route_access(method: &str, path: &str) -> Access {
    use Capability::*;
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let own = |c: Capability| (c, path.to_string());
    if method == "OPTIONS"
        || path == "/"
        || path == "/health"
        || path == "/ui"
        || path.starts_with("/ui/")
        || (path == "/v1/acl/bootstrap" && method == "POST")
    {
        return Access::Open;
    }
    if path == "/v1/acl/token/self" {
        return Access::Token;
    }
    if path == "/v1/acl" || path.starts_with("/v1/acl/") {
        return Access::Management;
    }
    let reading = matches!(method, "GET" | "HEAD");
    // Job writes are judged per job; the job list and the busy list show what the token may
    // read, so they need no grant of their own.
    if path == "/v1/jobs" || (path == "/v1/busy" && reading) {
        return Access::Token;
    }
    // Dkron 0.x's path for a job's executions: a read of the job.
    if let Some(job) = path
        .strip_prefix("/v1/executions/")
        .filter(|j| reading && !j.is_empty() && !j.contains('/'))
    {
        return Access::AnyOf(vec![own(Read), own(List), (Read, job_path(job))]);
    }
    if let Some((job, sub)) = job_of(path) {
        let on_job = |c: Capability| (c, job_path(job));
        return Access::AnyOf(match (method, sub) {
            (_, _) if reading && sub.is_empty() => vec![on_job(Read)],
            (_, _) if reading => vec![own(Read), own(List), on_job(Read)],
            ("POST", "" | "run") => vec![
                on_job(Run),
                (Run, format!("{}/run", job_path(job))),
                (Create, format!("{}/run", job_path(job))),
                on_job(Create),
            ],
            ("POST", "toggle") => vec![on_job(Update), own(Create)],
            // Stopping a run is the run right's other half.
            ("POST", s) if s.starts_with("executions/") && s.ends_with("/stop") => {
                vec![on_job(Run), on_job(Update), own(Create)]
            }
            ("PUT" | "PATCH", "") => return Access::Token,
            ("DELETE", "") => vec![on_job(Delete)],
            ("DELETE", _) => vec![own(Delete), on_job(Delete)],
            (_, _) => vec![own(capability_of(method))],
        });
    }
    if reading {
        return Access::AnyOf(vec![own(Read), own(List)]);
    }
    Access::AnyOf(vec![own(capability_of(method))])
}

fn capability_of(method: &str) -> Capability {
    match method {
        "GET" | "HEAD" => Capability::Read,
        "PUT" | "PATCH" => Capability::Update,
        "DELETE" => Capability::Delete,
        _ => Capability::Create,
    }
}

#[cfg(test)]
mod tests;
