use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn doc(rules: &[(&str, &[Capability])], executors: Option<&[&str]>) -> PolicyDocument {
    PolicyDocument {
        path: rules
            .iter()
            .map(|(g, c)| {
                (
                    g.to_string(),
                    PathRule {
                        capabilities: c.to_vec(),
                    },
                )
            })
            .collect(),
        executors: executors.map(|e| e.iter().map(|s| s.to_string()).collect()),
    }
}

fn token(hash: &str, kind: TokenType, policies: &[&str]) -> Token {
    Token {
        accessor: format!("acc-{hash}"),
        secret_hash: hash.into(),
        name: format!("name-{hash}"),
        kind,
        policies: policies.iter().map(|s| s.to_string()).collect(),
        create_time: ts("2026-01-01T00:00:00Z"),
        expiration_time: None,
    }
}

const NOW: &str = "2026-06-01T00:00:00Z";

fn state_with(policies: &[(&str, PolicyDocument)], tokens: Vec<Token>) -> AclState {
    let mut acl = AclState::default();
    for (name, rules) in policies {
        acl.apply(AclCommand::SetPolicy {
            name: name.to_string(),
            rules: rules.clone(),
        })
        .unwrap();
    }
    for token in tokens {
        acl.apply(AclCommand::CreateToken { token }).unwrap();
    }
    acl
}

fn principal(rules: PolicyDocument) -> Principal {
    let acl = state_with(&[("p", rules)], vec![token("h", TokenType::Client, &["p"])]);
    acl.authenticate("h", ts(NOW)).unwrap()
}

#[test]
fn one_star_stays_in_its_segment_and_two_cross() {
    assert!(glob_matches("/v1/jobs/*", "/v1/jobs/a"));
    assert!(glob_matches("/v1/jobs/*", "/v1/jobs/"));
    assert!(!glob_matches("/v1/jobs/*", "/v1/jobs/a/run"));
    assert!(glob_matches("/v1/jobs/team-a-*", "/v1/jobs/team-a-x"));
    assert!(!glob_matches("/v1/jobs/team-a-*", "/v1/jobs/team-b-x"));
    assert!(glob_matches("/v1/jobs/*/run", "/v1/jobs/a/run"));
    assert!(glob_matches(
        "/v1/jobs/*/executions*",
        "/v1/jobs/a/executions"
    ));
    assert!(!glob_matches(
        "/v1/jobs/*/executions*",
        "/v1/jobs/a/executions/1"
    ));
    assert!(glob_matches("/v1/**", "/v1/jobs/a/executions/1"));
    assert!(!glob_matches("/v1/**", "/v1"));
    assert!(glob_matches("/v1", "/v1"));
    assert!(!glob_matches("/v1", "/v1/jobs"));
    assert!(glob_matches("/v1/**/run", "/v1/jobs/a/run"));
    assert!(!glob_matches("/v1/**/run", "/v1/jobs/a/toggle"));
}

#[test]
fn dkron_pros_documented_policies_load() {
    // Dkron Pro's default policy, as its documentation prints it.
    let default = r#"{"path": {
        "/v1/members": {"capabilities": ["read"]},
        "/v1/jobs": {"capabilities": ["list","read","create","update","delete"]},
        "/v1/jobs/*": {"capabilities": ["create","read","update","delete"]},
        "/v1/jobs/*/run": {"capabilities": ["create"]},
        "/v1/jobs/*/toggle": {"capabilities": ["create"]},
        "/v1/jobs/*/executions*": {"capabilities": ["read"]},
        "/v1/jobs/*/executions/*": {"capabilities": ["read"]},
        "/v1/leader": {"capabilities": ["read"]},
        "/v1/isleader": {"capabilities": ["read"]},
        "/v1/leave": {"capabilities": ["create"]},
        "/v1/restore": {"capabilities": ["create"]},
        "/v1/busy": {"capabilities": ["read"]}
    }}"#;
    let rules: PolicyDocument = serde_json::from_str(default).unwrap();
    assert!(rules.check().is_empty());
    let p = principal(rules);
    for (method, path) in [
        ("GET", "/v1/members"),
        ("GET", "/v1/jobs/a"),
        ("POST", "/v1/jobs/a/run"),
        ("POST", "/v1/jobs/a"),
        ("POST", "/v1/jobs/a/toggle"),
        ("GET", "/v1/jobs/a/executions"),
        ("GET", "/v1/jobs/a/executions/e1"),
        ("DELETE", "/v1/jobs/a"),
        ("POST", "/v1/restore"),
    ] {
        assert_eq!(
            p.check(&route_access(method, path)),
            Ok(()),
            "{method} {path}"
        );
    }
    assert!(p.may_write_job("a", false, "shell").is_ok());
    assert!(p.check(&route_access("POST", "/v1/pause")).is_err());
    assert_eq!(
        p.check(&route_access("GET", "/v1/acl/policies")),
        Err(Forbidden::ManagementOnly)
    );
}

#[test]
fn an_unknown_capability_is_refused_naming_it() {
    let bad = r#"{"path": {"/v1/jobs": {"capabilities": ["read", "sudo"]}}}"#;
    let err = serde_json::from_str::<PolicyDocument>(bad).unwrap_err();
    assert!(err.to_string().contains("sudo"), "{err}");
    let bad = r#"{"paths": {}}"#;
    assert!(serde_json::from_str::<PolicyDocument>(bad).is_err());
    let relative = doc(&[("v1/jobs", &[Capability::Read])], None);
    assert_eq!(relative.check()[0].field, "path.v1/jobs");
}

#[test]
fn job_writes_are_judged_on_the_jobs_own_path() {
    use Capability::*;
    let team_a = doc(
        &[("/v1/jobs/team-a-*", &[Create, Read, Update, Delete, List])],
        None,
    );
    let p = principal(team_a);
    assert!(p.may_write_job("team-a-x", false, "shell").is_ok());
    assert_eq!(
        p.may_write_job("team-b-x", false, "shell"),
        Err(Forbidden::Lacks {
            capability: Create,
            path: "/v1/jobs/team-b-x".into()
        })
    );
    // Replacing needs update, creating needs create.
    let creator = principal(doc(&[("/v1/jobs/*", &[Create])], None));
    assert!(creator.may_write_job("x", false, "shell").is_ok());
    assert!(matches!(
        creator.may_write_job("x", true, "shell"),
        Err(Forbidden::Lacks {
            capability: Update,
            ..
        })
    ));
    // The job's sub-resources follow the job: the team reads its executions.
    assert_eq!(
        p.check(&route_access("GET", "/v1/jobs/team-a-x/executions")),
        Ok(())
    );
    assert!(
        p.check(&route_access("GET", "/v1/jobs/team-b-x/executions"))
            .is_err()
    );
    // ... also through Dkron 0.x's path for them.
    assert_eq!(
        p.check(&route_access("GET", "/v1/executions/team-a-x")),
        Ok(())
    );
    assert!(
        p.check(&route_access("GET", "/v1/executions/team-b-x"))
            .is_err()
    );
}

#[test]
fn run_is_a_right_of_its_own() {
    use Capability::*;
    let runner = principal(doc(&[("/v1/jobs/*", &[Read, Run])], None));
    for path in ["/v1/jobs/a", "/v1/jobs/a/run", "/v1/jobs/a/"] {
        assert_eq!(runner.check(&route_access("POST", path)), Ok(()), "{path}");
    }
    assert!(runner.may_write_job("a", true, "shell").is_err());
    // ... and stops them.
    assert_eq!(
        runner.check(&route_access("POST", "/v1/jobs/a/executions/e1/stop")),
        Ok(())
    );
    assert!(runner.check(&route_access("DELETE", "/v1/jobs/a")).is_err());
    assert!(
        runner
            .check(&route_access("POST", "/v1/jobs/a/toggle"))
            .is_err()
    );
    let reader = principal(doc(&[("/v1/jobs/*", &[Read])], None));
    assert_eq!(
        reader.check(&route_access("POST", "/v1/jobs/a/run")),
        Err(Forbidden::Lacks {
            capability: Run,
            path: "/v1/jobs/a".into()
        })
    );
}

#[test]
fn executor_lists_bind_the_policies_that_grant_the_write() {
    use Capability::*;
    let http_only = doc(&[("/v1/jobs/*", &[Create, Update])], Some(&["http"]));
    let reads = doc(&[("/v1/**", &[Read])], None);
    let acl = state_with(
        &[("http-only", http_only), ("reads", reads)],
        vec![token("h", TokenType::Client, &["http-only", "reads"])],
    );
    let p = acl.authenticate("h", ts(NOW)).unwrap();
    assert!(p.may_write_job("a", false, "http").is_ok());
    // The unrestricted read policy does not unlock shell: it grants no write.
    assert_eq!(
        p.may_write_job("a", false, "shell"),
        Err(Forbidden::Executor {
            executor: "shell".into(),
            allowed: vec!["http".into()]
        })
    );
}

#[test]
fn tokens_authenticate_until_they_expire_and_management_may_do_all() {
    let mut expiring = token("e", TokenType::Client, &[]);
    expiring.expiration_time = Some(ts("2026-06-01T00:00:00Z"));
    let acl = state_with(&[], vec![expiring, token("m", TokenType::Management, &[])]);
    assert!(acl.authenticate("e", ts("2026-05-31T23:59:59Z")).is_ok());
    assert_eq!(
        acl.authenticate("e", ts(NOW)),
        Err(Unauthenticated::Expired)
    );
    assert_eq!(
        acl.authenticate("x", ts(NOW)),
        Err(Unauthenticated::Unknown)
    );
    let m = acl.authenticate("m", ts(NOW)).unwrap();
    assert!(m.management);
    assert_eq!(
        m.check(&route_access("DELETE", "/v1/acl/policies/p")),
        Ok(())
    );
    assert!(m.may_write_job("anything", true, "shell").is_ok());
}

#[test]
fn bootstrap_happens_once_unless_reset_with_the_current_index() {
    let mut acl = AclState::default();
    let boot = |hash: &str, reset| AclCommand::Bootstrap {
        token: token(hash, TokenType::Management, &[]),
        reset,
    };
    assert_eq!(acl.apply(boot("a", None)), Ok(Response::Acl));
    assert_eq!(
        acl.apply(boot("b", None)),
        Err(ApplyError::AclBootstrapDone { reset_index: 1 })
    );
    assert_eq!(
        acl.apply(boot("b", Some(0))),
        Err(ApplyError::AclBootstrapDone { reset_index: 1 })
    );
    assert_eq!(acl.apply(boot("b", Some(1))), Ok(Response::Acl));
    assert_eq!(acl.reset_index(), 2);
    assert!(acl.authenticate("a", ts(NOW)).is_ok());
    assert!(acl.authenticate("b", ts(NOW)).is_ok());
}

#[test]
fn tokens_name_existing_policies_and_deletes_name_existing_things() {
    let mut acl = AclState::default();
    assert_eq!(
        acl.apply(AclCommand::CreateToken {
            token: token("h", TokenType::Client, &["nope"])
        }),
        Err(ApplyError::UnknownPolicies {
            names: vec!["nope".into()]
        })
    );
    assert!(matches!(
        acl.apply(AclCommand::DeletePolicy {
            name: "nope".into()
        }),
        Err(ApplyError::PolicyNotFound { .. })
    ));
    assert!(matches!(
        acl.apply(AclCommand::DeleteToken {
            accessor: "nope".into()
        }),
        Err(ApplyError::TokenNotFound { .. })
    ));
    acl.apply(AclCommand::CreateToken {
        token: token("h", TokenType::Client, &[]),
    })
    .unwrap();
    assert_eq!(
        acl.apply(AclCommand::CreateToken {
            token: token("h", TokenType::Client, &[])
        }),
        Err(ApplyError::TokenExists)
    );
    acl.apply(AclCommand::DeleteToken {
        accessor: "acc-h".into(),
    })
    .unwrap();
    assert_eq!(
        acl.authenticate("h", ts(NOW)),
        Err(Unauthenticated::Unknown)
    );
}

#[test]
fn routes_need_what_dkron_pro_and_the_issue_say() {
    use Capability::*;
    assert_eq!(route_access("GET", "/health"), Access::Open);
    assert_eq!(route_access("GET", "/ui/app.js"), Access::Open);
    assert_eq!(route_access("POST", "/v1/acl/bootstrap"), Access::Open);
    assert_eq!(route_access("GET", "/v1/acl/token/self"), Access::Token);
    assert_eq!(route_access("GET", "/v1/acl/tokens"), Access::Management);
    assert_eq!(route_access("POST", "/v1/jobs"), Access::Token);
    assert_eq!(route_access("GET", "/v1/jobs"), Access::Token);
    assert_eq!(route_access("PUT", "/v1/jobs/a"), Access::Token);
    assert_eq!(
        route_access("POST", "/v1/pause"),
        Access::AnyOf(vec![(Create, "/v1/pause".into())])
    );
    assert_eq!(
        route_access("GET", "/metrics"),
        Access::AnyOf(vec![(Read, "/metrics".into()), (List, "/metrics".into())])
    );
    assert_eq!(
        route_access("DELETE", "/v1/jobs/a"),
        Access::AnyOf(vec![(Delete, "/v1/jobs/a".into())])
    );
    // A trailing slash names the same route.
    assert_eq!(route_access("GET", "/v1/"), route_access("GET", "/v1"));
}

#[test]
fn acl_commands_change_the_replicated_state_and_say_so() {
    use crate::command::Command;
    use crate::state::{Effect, State};
    let mut state = State::default();
    let (response, effects) = state.apply(Command::Acl {
        acl: AclCommand::SetPolicy {
            name: "p".into(),
            rules: doc(&[], None),
        },
    });
    assert_eq!(response, Response::Acl);
    assert_eq!(effects, vec![Effect::PutAcl]);
    assert!(state.acl().policy("p").is_some());
    let (response, effects) = state.apply(Command::Acl {
        acl: AclCommand::DeletePolicy { name: "q".into() },
    });
    assert!(matches!(response, Response::Rejected { .. }));
    assert!(effects.is_empty());
    // The ACL state travels with the rest (snapshots serialize the whole state).
    let copy: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(copy.acl(), state.acl());
}
