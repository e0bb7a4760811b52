//! `dkron acl ...`: Dkron Pro's ACL commands (`bootstrap`, `policy apply|delete|info|list`,
//! `token create|info|list|delete`, with its `-n`, `-r`, `-t`, `-p` flags), over the HTTP API
//! (`--address`, `--token`) instead of Pro's gRPC port.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Endpoint, call, get, path_part, print_json, text};

#[derive(Subcommand)]
pub enum AclCommand {
    /// Create the first management token (once per cluster)
    Bootstrap,
    /// Manage ACL policies
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage ACL tokens
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Create or update a policy from a JSON rules file (`-` for stdin)
    Apply {
        /// The policy's name
        #[arg(short, long)]
        name: String,
        /// The policy document: {"path": {"/v1/jobs/*": {"capabilities": ["read"]}}}
        #[arg(short, long)]
        rules_file: String,
    },
    /// Delete a policy
    Delete {
        #[arg(short, long)]
        name: String,
    },
    /// Show a policy
    Info {
        #[arg(short, long)]
        name: String,
    },
    /// List policies
    List,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once
    Create {
        /// The token's name (recorded as the owner of the jobs it writes)
        #[arg(short, long)]
        name: String,
        /// client (bound by its policies) or management (may do everything)
        #[arg(short = 't', long = "type", default_value = "client")]
        kind: String,
        /// A policy of the token (repeatable)
        #[arg(short, long = "policy")]
        policies: Vec<String>,
        /// Lifetime, a Go duration such as 24h (default: no expiry)
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Show a token by its accessor
    Info {
        /// The token's accessor id
        accessor: String,
    },
    /// List tokens
    List,
    /// Delete a token by its accessor
    Delete {
        /// The token's accessor id
        accessor: String,
    },
}

fn print_token(t: &Value) {
    println!("Accessor ID: {}", text(t, "accessor"));
    if let Some(secret) = t["secret"].as_str() {
        println!("Secret: {secret}");
    }
    println!("Name: {}", text(t, "name"));
    println!("Type: {}", text(t, "type"));
    println!("CreateTime: {}", text(t, "create_time"));
    if let Some(expires) = t["expiration_time"].as_str() {
        println!("ExpirationTime: {expires}");
    }
    let policies: Vec<&str> = t["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("Policies: {}", policies.join(", "));
}

fn read_rules(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read --rules-file {file}: {e}"))?
    };
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--rules-file {file} is not JSON: {e}"))
}

pub fn run(server: &Endpoint, json: bool, command: AclCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let show = |v: &Value, human: &dyn Fn(&Value)| {
        if json {
            print_json(v)
        } else {
            human(v);
            Ok(())
        }
    };
    let policy_line = |p: &Value| println!("{}\t{}", text(p, "Name"), text(p, "Rules"));
    match command {
        AclCommand::Bootstrap => {
            let token = call(server, Method::POST, "/v1/acl/bootstrap", None)?;
            show(&token, &print_token)
        }
        AclCommand::Policy { command } => match command {
            PolicyCommand::Apply { name, rules_file } => {
                let rules = read_rules(&rules_file)?;
                let path = format!("/v1/acl/policies/{}", path_part(&name));
                let policy = call(server, Method::POST, &path, Some(rules))?;
                show(&policy, &policy_line)
            }
            PolicyCommand::Delete { name } => {
                let path = format!("/v1/acl/policies/{}", path_part(&name));
                call(server, Method::DELETE, &path, None)?;
                println!("Policy {name} deleted");
                Ok(())
            }
            PolicyCommand::Info { name } => {
                let policy = get(server, &format!("/v1/acl/policies/{}", path_part(&name)))?;
                show(&policy, &policy_line)
            }
            PolicyCommand::List => {
                let list = get(server, "/v1/acl/policies")?;
                show(&list, &|l| {
                    l.as_array().into_iter().flatten().for_each(policy_line)
                })
            }
        },
        AclCommand::Token { command } => match command {
            TokenCommand::Create {
                name,
                kind,
                policies,
                ttl,
            } => {
                let body = json!({ "name": name, "type": kind, "policies": policies, "ttl": ttl.unwrap_or_default() });
                let token = call(server, Method::POST, "/v1/acl/tokens", Some(body))?;
                show(&token, &print_token)
            }
            TokenCommand::Info { accessor } => {
                let token = get(server, &format!("/v1/acl/tokens/{}", path_part(&accessor)))?;
                show(&token, &print_token)
            }
            TokenCommand::List => {
                let list = get(server, "/v1/acl/tokens")?;
                show(&list, &|l| {
                    for t in l.as_array().into_iter().flatten() {
                        print_token(t);
                        println!();
                    }
                })
            }
            TokenCommand::Delete { accessor } => {
                let path = format!("/v1/acl/tokens/{}", path_part(&accessor));
                call(server, Method::DELETE, &path, None)?;
                println!("Token {accessor} deleted");
                Ok(())
            }
        },
    }
}
