#!/usr/bin/env bash
# Container test of the compose deployment (run by .ci/run): builds the image, starts
# `docker-compose up --scale dkron-server=4` plus an agent, then checks that
#  1. the cluster forms (every node is a member, one leader) and fires a job;
#  2. after `docker kill` of the leader another server leads and firing resumes;
#  3. a server cut off the network and reconnected leaves one leader and firing going.
# Every wait is bounded; the whole test stays well under 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
project="dkrontest$$"
compose=(docker-compose -p "$project" -f docker-compose.yml)
started=$(date +%s)

log() { echo "[$(( $(date +%s) - started ))s] $*"; }
cleanup() {
  status=$?
  if [ $status -ne 0 ]; then
    log "FAILED; last logs:"
    "${compose[@]}" logs --tail=40 2>&1 | tail -200 || true
  fi
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  exit $status
}
trap cleanup EXIT

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every second until it succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "timed out after ${limit}s waiting for: $what"; return 1
    fi
    sleep 1
  done
  log "ok: $what"
}

[ "${SKIP_IMAGE_BUILD:-}" = 1 ] || scripts/build-image.sh dkron-rs:dev

# Encrypted gossip and mutual TLS on every RPC connection, with a fresh key; ACLs on, with a
# fresh management token seeded at the first start. Every call below carries the token.
DKRON_ENCRYPT=$(docker run --rm dkron-rs:dev keygen)
DKRON_ACL_ENABLED=true
DKRON_ACL_BOOTSTRAP_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
export DKRON_ENCRYPT DKRON_ACL_ENABLED DKRON_ACL_BOOTSTRAP_TOKEN
curl() { command curl -H "Authorization: Bearer $DKRON_ACL_BOOTSTRAP_TOKEN" "$@"; }
log "starting: 1 bootstrap server, 4 joining servers, 1 agent (gossip key set: mutual TLS; ACLs on)"
"${compose[@]}" up -d --scale dkron-server=4 --scale dkron-agent=1

# host:port of each server's API, by container id
servers() { docker ps -q --filter "label=com.docker.compose.project=$project" \
  --filter "label=com.docker.compose.service=dkron" ; docker ps -q \
  --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=dkron-server"; }
api_of() { docker port "$1" 8080/tcp | head -1 | sed 's/0.0.0.0/127.0.0.1/'; }
hostname_of() { docker inspect -f '{{.Config.Hostname}}' "$1"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

first=$(api_of "$(servers | head -1)")
members_alive() { [ "$(curl -sf "http://$1/v1/members" | json 'sum(1 for m in d if m["statusText"]=="alive")')" -ge "$2" ]; }
wait_for 120 "6 alive members (5 servers + agent) seen by dkron1" members_alive "$first" 6

# The dashboard answers on the mapped port of a server, and / leads to it.
dashboard() { curl -sf "http://$1/ui/" | grep -q '/ui/app.js' && curl -sfL -H 'Accept: text/html' "http://$1/" | grep -q '/ui/app.js'; }
wait_for 30 "the dashboard at /ui on the mapped port" dashboard "$first"
# Without the token the API refuses; the dashboard's page is public and says ACLs are on.
anonymous_refused() { [ "$(command curl -s -o /dev/null -w '%{http_code}' "http://$1/v1/jobs")" = 401 ]; }
wait_for 30 "a request without a token is refused (401)" anonymous_refused "$first"
acl_page() { command curl -sf "http://$1/ui/" | grep -q 'DKRON_ACL_ENABLED = true'; }
wait_for 10 "the dashboard says ACLs are on" acl_page "$first"
peers5() { [ "$(curl -sf "http://$1/v1/raft/peers" | json 'sum(1 for p in d if p["voter"])')" -ge 5 ]; }

leader_name() { curl -sf "http://$1/v1/leader" | json 'd["Name"]'; }
one_leader() {
  local names
  names=$(for c in $(servers); do leader_name "$(api_of "$c")" 2>/dev/null || echo none; done | sort -u)
  [ "$(echo "$names" | wc -l)" -eq 1 ] && [ "$names" != none ]
}
voters5() { [ "$(curl -sf "http://$1/v1/members" | json 'sum(1 for m in d if m["Tags"].get("server")=="true")')" -ge 5 ]; }
wait_for 60 "every server names the same leader" one_leader
wait_for 60 "five voting Raft peers" peers5 "$first"

# The dashboard in a real browser against a follower of this cluster (its writes and runs are
# forwarded to the leader), when chromium-driver and selenium are installed (.ci/run does).
if command -v chromedriver >/dev/null && python3 -c 'import selenium' 2>/dev/null; then
  follower=""
  for c in $(servers); do
    a=$(api_of "$c")
    [ "$(curl -sf "http://$a/v1/" | json 'd["agent"]["name"]')" != "$(leader_name "$a")" ] && { follower=$a; break; }
  done
  [ -n "$follower" ] || { log "no follower found for the browser test"; exit 1; }
  DKRON_TOKEN=$DKRON_ACL_BOOTSTRAP_TOKEN python3 scripts/ui_test.py "http://$follower"
  log "ok: the dashboard works against a follower of the cluster"
else
  log "skipped: the browser test against the cluster (no chromedriver or selenium)"
fi

curl -sf -XPOST "http://$first/v1/jobs" -d '{"name":"tick","schedule":"@every 1s","executor":"shell","executor_config":{"command":"echo tick"},"tags":{"server":"true:1"}}' >/dev/null
runs_after() { # api, iso time: a successful run started after it
  curl -sf "http://$1/v1/jobs/tick/executions" | json "sum(1 for e in d if e['success'] and e['started_at'] > '$2')" | grep -qv '^0$'
}
now_iso() { date -u +%Y-%m-%dT%H:%M:%S; }
t0=$(now_iso)
wait_for 30 "the job fires" runs_after "$first" "$t0"

# --- kill the leader
leader=$(leader_name "$first")
victim=""
for c in $(servers); do [ "$(hostname_of "$c")" = "$leader" ] && victim=$c; done
[ -n "$victim" ] || { log "leader $leader not found among containers"; exit 1; }
log "killing the leader $leader ($victim)"
docker kill "$victim" >/dev/null
survivor=""
for c in $(servers); do [ "$c" != "$victim" ] && survivor=$(api_of "$c") && break; done
new_leader() { local l; l=$(leader_name "$survivor") && [ "$l" != "$leader" ]; }
wait_for 60 "a new leader after the kill" new_leader
t1=$(now_iso)
wait_for 60 "firing resumes under the new leader" runs_after "$survivor" "$t1"

# --- partition one follower away and back
leader=$(leader_name "$survivor")
cut=""
for c in $(servers); do
  [ "$c" = "$victim" ] && continue
  [ "$(hostname_of "$c")" != "$leader" ] && cut=$c && break
done
# Observe through a server that is neither dead nor cut off (a disconnected container's
# published port is unreachable too).
observer=""
for c in $(servers); do
  [ "$c" = "$victim" ] || [ "$c" = "$cut" ] || { observer=$(api_of "$c"); break; }
done
network="${project}_default"
log "disconnecting $(hostname_of "$cut") from $network"
docker network disconnect "$network" "$cut"
t2=$(now_iso)
wait_for 60 "firing continues while a follower is cut off" runs_after "$observer" "$t2"
docker network connect "$network" "$cut"
log "reconnected $(hostname_of "$cut")"
live_one_leader() {
  local names
  names=$(for c in $(servers); do [ "$c" = "$victim" ] && continue; leader_name "$(api_of "$c")" 2>/dev/null || echo none; done | sort -u)
  [ "$(echo "$names" | wc -l)" -eq 1 ] && [ "$names" != none ]
}
wait_for 90 "one leader named by every live server after the reconnect" live_one_leader
t3=$(now_iso)
wait_for 60 "firing continues after the reconnect" runs_after "$observer" "$t3"
log "container test passed in $(( $(date +%s) - started ))s"
