#!/usr/bin/env bash
# A local 3-node logbook cluster in containers (`make cluster-up` / `make cluster-down`).
#   scripts/cluster.sh up      starts NODES containers on a private network (gossip join by
#                              container DNS names), each with its own data volume
#   scripts/cluster.sh down    removes the containers, the network and the volumes
#   scripts/cluster.sh cli ... runs the logbook CLI in a throwaway container on the network
# Env: IMAGE_TAG (default logbook:dev; `make image` builds it), CLUSTER_NAME (default logbook),
#      NODES (default 3), ADMIN_PORT_BASE (default 7480: node i's admin HTTP port, /metrics,
#      /healthz and /readyz, is published on 127.0.0.1:ADMIN_PORT_BASE+i; empty to publish
#      nothing). gRPC is not published: nodes advertise their container names, which only
#      resolve on the network, so clients run there (`cli`).
set -euo pipefail

image="${IMAGE_TAG:-logbook:dev}"
name="${CLUSTER_NAME:-logbook}"
nodes="${NODES:-3}"
admin_port_base="${ADMIN_PORT_BASE-7480}"
network="${name}-net"

node() { echo "${name}-$1"; }

seeds() {
  local i list=()
  for ((i = 1; i <= nodes; i++)); do list+=("$(node "$i"):7946"); done
  local IFS=,
  echo "${list[*]}"
}

up() {
  docker image inspect "${image}" >/dev/null 2>&1 || {
    echo "cluster: image ${image} not found; run make image first" >&2
    exit 1
  }
  docker network inspect "${network}" >/dev/null 2>&1 || docker network create "${network}" >/dev/null
  local i publish
  for ((i = 1; i <= nodes; i++)); do
    local n
    n="$(node "$i")"
    if docker container inspect "${n}" >/dev/null 2>&1; then
      docker start "${n}" >/dev/null
      continue
    fi
    publish=()
    if [[ -n "${admin_port_base}" ]]; then
      publish=(--publish "127.0.0.1:$((admin_port_base + i)):7480")
    fi
    docker run --detach --name "${n}" --hostname "${n}" --network "${network}" \
      "${publish[@]}" \
      --volume "${n}-data:/var/lib/logbook" \
      --env "LOGBOOK_ADVERTISE_ADDR=${n}:7400" \
      --env "LOGBOOK_GOSSIP_ADVERTISE_ADDR=${n}:7946" \
      --env "LOGBOOK_LOG_FORMAT=human" \
      "${image}" serve --join "$(seeds)" --bootstrap-expect "${nodes}" >/dev/null
    echo "cluster: started ${n}" >&2
  done
  echo "cluster: ${nodes} nodes on network ${network}; try:" >&2
  echo "  scripts/cluster.sh cli topic create orders --partitions 3" >&2
  echo "  echo hello | scripts/cluster.sh cli produce --topic orders" >&2
  echo "  scripts/cluster.sh cli consume --topic orders --from-beginning" >&2
}

down() {
  local i
  for ((i = 1; i <= nodes; i++)); do
    docker rm --force --volumes "$(node "$i")" >/dev/null 2>&1 || true
    docker volume rm "$(node "$i")-data" >/dev/null 2>&1 || true
  done
  docker network rm "${network}" >/dev/null 2>&1 || true
  echo "cluster: ${name} removed" >&2
}

cli() {
  docker run --rm --interactive --network "${network}" \
    --env "LOGBOOK_BOOTSTRAP=$(seeds | sed 's/:7946/:7400/g')" "${image}" "$@"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  cli) shift; cli "$@" ;;
  *)
    echo "usage: $0 up|down|cli ARGS..." >&2
    exit 2
    ;;
esac
