//! The dkron integration tests: one binary, in-process nodes on port 0 (and the real binary
//! where a process boundary matters: kill -9, the CLI). Helpers live in `support`.

mod acl;
mod cli;
mod cluster;
mod concurrency;
mod durability;
mod executions_api;
mod jobs_api;
mod layout;
mod ledger;
mod lifecycle;
mod node_api;
mod operations;
mod security;
mod seed_jobs;
mod support;
mod validation;
