#!/usr/bin/env bash
# The container cluster test (`make container-test`, run by .ci/run): builds the broker image
# (`make image`: on this machine from local debootstrap bases), starts 3 containers on a
# private Docker network that find each other by container DNS names, and checks:
#   - each container runs as uid 10001 and turns healthy (the image's HEALTHCHECK);
#   - produce and consume through the CLI (in a container on the network);
#   - SIGKILL of the partition leader's container: a new leader takes over, produce goes on,
#     nothing acknowledged is lost, and the killed node catches up after a restart;
#   - `docker network disconnect` of the leader: the minority stops acknowledging (a produce
#     through it fails), the majority elects a leader and acknowledges, and after reconnecting
#     the old leader has every acknowledged record and none of the unacknowledged one.
# SKIP_IMAGE_BUILD=1 uses an existing IMAGE_TAG image. Leaves no containers behind.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
export IMAGE_TAG="${IMAGE_TAG:-logbook:dev}"
export CLUSTER_NAME="${CLUSTER_NAME:-lbtest}"
export NODES=3
export ADMIN_PORT_BASE=""
network="${CLUSTER_NAME}-net"
topic=orders
start=$(date +%s)

say() { echo "container-test [$(($(date +%s) - start))s]: $*" >&2; }
fail() {
  say "FAIL: $*"
  exit 1
}
node() { echo "${CLUSTER_NAME}-$1"; }
cli() { scripts/cluster.sh cli "$@"; }
# Runs the CLI inside container $1 against that node's own listener (127.0.0.1: it works
# while the container is cut off the network, when its own name no longer leads anywhere).
cli_in() {
  local n=$1
  shift
  docker exec --interactive --env "LOGBOOK_SERVER=127.0.0.1:7400" "${n}" logbook "$@"
}

# The value of metric series $2 on node $1's admin port (read inside the container with bash's
# /dev/tcp: the image has no HTTP client, and the node may be cut off the network).
metric_in() {
  docker exec "$1" bash -c 'exec 3<>/dev/tcp/127.0.0.1/7480 && printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3' |
    awk -v series="$2" '$1 == series {print $2}'
}

# retry SECONDS DESCRIPTION COMMAND...: runs COMMAND until it succeeds (once a second).
retry() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$(($(date +%s) + seconds))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) >= deadline)); then
      "$@" || true
      fail "${what}: not within ${seconds}s"
    fi
    sleep 1
  done
  say "ok: ${what}"
}

cleanup() {
  local status=$?
  if ((status != 0)); then
    for i in 1 2 3; do
      echo "----- logs of $(node "$i") (last 40 lines)" >&2
      docker logs --tail 40 "$(node "$i")" 2>&1 | sed 's/^/  /' >&2 || true
    done
  fi
  scripts/cluster.sh down >/dev/null 2>&1 || true
  exit "${status}"
}
trap cleanup EXIT

if [[ "${SKIP_IMAGE_BUILD:-0}" != 1 ]]; then
  say "building ${IMAGE_TAG}"
  scripts/image.sh
fi
docker image inspect "${IMAGE_TAG}" >/dev/null || fail "no image ${IMAGE_TAG}"

scripts/cluster.sh down >/dev/null 2>&1 || true
scripts/cluster.sh up

healthy() { [[ "$(docker inspect -f '{{.State.Health.Status}}' "$1")" == healthy ]]; }
for i in 1 2 3; do
  retry 120 "$(node "$i") is healthy (HEALTHCHECK: logbook health)" healthy "$(node "$i")"
  uid=$(docker exec "$(node "$i")" id -u)
  [[ "${uid}" == 10001 ]] || fail "$(node "$i") runs as uid ${uid}, not 10001"
done
say "ok: every node runs as uid 10001"

retry 120 "the cluster formed and created topic ${topic}" cli topic create "${topic}" --partitions 1

# values START..END produced through the CLI, one record each.
produce_range() { seq "$1" "$2" | sed 's/^/record-/' | cli produce --topic "${topic}"; }
# The sorted values a consume from the beginning returns (through node $1 if given).
consume_all() {
  if [[ -n "${1:-}" ]]; then
    cli_in "$1" consume --topic "${topic}" --from-beginning </dev/null | sort
  else
    cli consume --topic "${topic}" --from-beginning </dev/null | sort
  fi
}
expected() { seq 1 "$1" | sed 's/^/record-/' | sort; }
has_exactly() { diff <(expected "$1") <(consume_all "${2:-}") >/dev/null; }

produce_range 1 10 || fail "produce 1..10"
has_exactly 10 || fail "consume after produce: $(consume_all | wc -l) records, expected 10"
say "ok: produced and consumed 10 records through the CLI"

# The container whose node id leads partition 0.
leader_container() {
  local id i
  id=$(cli topic describe "${topic}" 2>/dev/null | awk -F'\t' 'NR > 1 && $1 == 0 {print $5}')
  [[ -n "${id}" && "${id}" != 0 ]] || return 1
  for i in 1 2 3; do
    if docker exec "$(node "$i")" cat /var/lib/logbook/node.json 2>/dev/null |
      grep -Eq "\"node_id\"[[:space:]]*:[[:space:]]*${id}[,}[:space:]]"; then
      node "$i"
      return 0
    fi
  done
  return 1
}

leader=$(leader_container) || fail "no leader found for ${topic}/0"
say "leader of ${topic}/0 is ${leader}; SIGKILL"
docker kill --signal KILL "${leader}" >/dev/null
retry 90 "produce 11..20 after the leader was killed" produce_range 11 20
retry 30 "all 20 acknowledged records readable from the survivors" has_exactly 20
new_leader=$(leader_container) || fail "no leader after the kill"
[[ "${new_leader}" != "${leader}" ]] || fail "the killed node is still the leader"
say "ok: failover to ${new_leader}"

docker start "${leader}" >/dev/null
retry 120 "${leader} is healthy again after restart" healthy "${leader}"
retry 60 "${leader} serves all 20 records" has_exactly 20 "${leader}"

cut=$(leader_container) || fail "no leader before the network cut"
say "disconnecting the leader ${cut} from ${network}"
docker network disconnect "${network}" "${cut}"
# Its own name still maps to the address it just lost; point the name at its own listener, so
# the CLI in there (which follows advertised names) reaches the cut-off broker.
docker exec --user 0 "${cut}" bash -c \
  "{ echo '127.0.0.1 ${cut}'; grep -v '[[:space:]]${cut}\$' /etc/hosts; } >/tmp/hosts && cat /tmp/hosts >/etc/hosts"
group_metric() { metric_in "${cut}" "logbook_raft_$1{group=\"${topic}/0\"}"; }
last_before=$(group_metric last_log_index)
commit_before=$(group_metric commit_index)
# The request reaches the old leader and is appended to its log, but without a majority it is
# never committed: the broker answers UNAVAILABLE "not committed within 10s".
if out=$(echo "unacked-minority" | cli_in "${cut}" produce --topic "${topic}" 2>&1); then
  fail "${cut} acknowledged a produce while cut off from the majority: ${out}"
fi
[[ "${out}" == *"not committed within"* ]] ||
  fail "the produce through ${cut} did not fail for want of an acknowledgement: ${out}"
last_after=$(group_metric last_log_index)
commit_after=$(group_metric commit_index)
((last_after > last_before)) ||
  fail "the cut-off leader did not append the produce (last log index ${last_before} -> ${last_after})"
((commit_after == commit_before)) ||
  fail "the cut-off leader committed without a majority (commit index ${commit_before} -> ${commit_after})"
say "ok: the cut-off leader ${cut} appended the produce (last log index ${last_before} -> ${last_after}) but did not commit (${commit_after}) or acknowledge it: ${out#error: }"
retry 90 "the majority acknowledges 21..30" produce_range 21 30
retry 30 "all 30 acknowledged records readable from the majority" has_exactly 30

docker network connect "${network}" "${cut}"
# Its own Raft log catches up: same last and commit index as the majority's leader.
caught_up() {
  local leader_now
  leader_now=$(leader_container) || return 1
  [[ "${leader_now}" != "${cut}" ]] || return 1
  local series
  for series in last_log_index commit_index; do
    [[ "$(metric_in "${cut}" "logbook_raft_${series}{group=\"${topic}/0\"}")" == \
      "$(metric_in "${leader_now}" "logbook_raft_${series}{group=\"${topic}/0\"}")" ]] || return 1
  done
}
retry 90 "${cut}'s log of ${topic}/0 matches the new leader's (last log and commit index)" caught_up
retry 90 "${cut} rejoined: it serves exactly the 30 acknowledged records" has_exactly 30 "${cut}"
if consume_all | grep -q unacked-minority; then
  fail "the unacknowledged record of the cut-off node is readable"
fi
say "ok: no unacknowledged record survived"

say "PASS"
