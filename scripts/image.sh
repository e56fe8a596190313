#!/usr/bin/env bash
# Builds the broker image (`make image`). IMAGE_TAG names it (default logbook:dev).
# IMAGE_BASES picks the base images:
#   public  the Dockerfile's defaults (rust:1.95-bookworm, debian:bookworm-slim) from a registry;
#   local   bases made here by scripts/docker-bases.sh (debootstrap + docker import) and crates
#           vendored into target/docker/vendor, for Docker engines without a registry or
#           containers without network;
#   auto    (default) public if both images are present or can be pulled, else local.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
tag="${IMAGE_TAG:-logbook:dev}"
bases="${IMAGE_BASES:-auto}"
public_builder="rust:1.95-bookworm"
public_runtime="debian:bookworm-slim"
version="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"

log() { echo "image: $*" >&2; }

have_or_pull() {
  docker image inspect "$1" >/dev/null 2>&1 || timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

if [[ "${bases}" == auto ]]; then
  if have_or_pull "${public_builder}" && have_or_pull "${public_runtime}"; then
    bases=public
  else
    log "public base images cannot be pulled; building local ones"
    bases=local
  fi
fi

case "${bases}" in
  public)
    builder="${public_builder}"
    runtime="${public_runtime}"
    ;;
  local)
    read -r runtime builder < <(scripts/docker-bases.sh)
    # Vendor the crates once per Cargo.lock (containers here cannot reach crates.io).
    vendor="target/docker/vendor"
    stamp="target/docker/vendor.lock-sha256"
    want="$(sha256sum Cargo.lock | cut -d' ' -f1)"
    if [[ ! -d "${vendor}" || "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]]; then
      log "vendoring crates into ${vendor}"
      rm -rf "${vendor}"
      cargo vendor --locked --quiet "${vendor}" >/dev/null
      echo "${want}" >"${stamp}"
    fi
    ;;
  *)
    log "IMAGE_BASES must be auto, public or local (got ${bases})"
    exit 2
    ;;
esac

log "building ${tag} (builder ${builder}, runtime ${runtime}, version ${version})"
docker build \
  --build-arg "BUILDER_IMAGE=${builder}" \
  --build-arg "RUNTIME_IMAGE=${runtime}" \
  --build-arg "VERSION=${version}" \
  -t "${tag}" .
log "built ${tag} ($(docker image inspect -f '{{.Size}}' "${tag}" | numfmt --to=iec))"
