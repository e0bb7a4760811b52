#!/usr/bin/env bash
# Fault-injection suite (run by .ci/run): three servers in containers run jobs on @every 1s
# reporting to a sink on the host, while the harness SIGKILLs and restarts the leader,
# restarts a follower, cuts a follower and then the leader off the network, and keeps
# creating, updating, toggling and deleting jobs. Fails on any occurrence run twice (at the
# sink or in the API, judged again over the whole run at the end), any occurrence with
# neither a run nor a failed record with a known reason and its verdict, more failures than
# the fault explains, or any acknowledged write not holding. Prints a summary table. The
# rules are crates/dkron-bench/src/verdict.rs, unit-tested with each defect planted.
#   scripts/fault-suite.sh [jobs] [kills]      (defaults: 200 jobs, 3 kills)
# Set SKIP_IMAGE_BUILD=1 when the dkron-rs:dev image is already built from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SKIP_IMAGE_BUILD:-}" = 1 ] || scripts/build-image.sh dkron-rs:dev
cargo build --locked -q -p dkron-bench
timeout 600 ./target/debug/dkron-bench faults "${1:-200}" "${2:-3}"
