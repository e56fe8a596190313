#!/usr/bin/env bash
# Builds the two local base images the Dockerfile needs on a machine whose Docker engine has no
# registry (nothing can be pulled): a Debian bookworm runtime base and a builder base carrying
# this machine's Rust toolchain. Both come from `debootstrap --variant=minbase` and
# `docker import`. Elsewhere the Dockerfile's defaults (rust:1.95-bookworm,
# debian:bookworm-slim) are used and this script is not needed.
#
# Usage: scripts/docker-bases.sh            # builds what is missing, prints the two image names
#        FORCE=1 scripts/docker-bases.sh    # rebuilds both
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), RUNTIME_BASE, BUILDER_BASE.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${repo_root}/target/docker"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
runtime_image="${RUNTIME_BASE:-logbook-base:bookworm}"
builder_image="${BUILDER_BASE:-logbook-builder:bookworm}"
force="${FORCE:-0}"

log() { echo "docker-bases: $*" >&2; }

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

need_root() {
  if [[ "$(id -u)" != 0 ]]; then
    log "debootstrap needs root; run as root or build $1 another way"
    exit 1
  fi
}

ensure_debootstrap() {
  if ! command -v debootstrap >/dev/null 2>&1; then
    need_root debootstrap
    log "installing debootstrap"
    apt-get install -y --no-install-recommends debootstrap >&2
  fi
}

# Removes what a container never needs: docs, man pages, locales, apt lists and caches.
trim_rootfs() {
  local root=$1
  rm -rf "${root}"/usr/share/{doc,man,info,locale,lintian} "${root}"/var/lib/apt/lists/* \
    "${root}"/var/cache/apt/*.bin "${root}"/var/cache/apt/archives/*.deb "${root}"/var/log/*
}

# debootstrap into a fresh directory; $2 is a comma-separated package list (may be empty).
bootstrap() {
  local root=$1 include=$2
  rm -rf "${root}"
  mkdir -p "${root}"
  local args=(--variant=minbase)
  [[ -n "${include}" ]] && args+=("--include=${include}")
  log "debootstrap bookworm into ${root} (${include:-minbase only})"
  debootstrap "${args[@]}" bookworm "${root}" "${mirror}" >"${root}.log" 2>&1 || {
    tail -n 30 "${root}.log" >&2
    return 1
  }
  trim_rootfs "${root}"
}

import_rootfs() {
  local root=$1 image=$2
  shift 2
  tar -C "${root}" --numeric-owner -c . | docker import "$@" - "${image}" >/dev/null
  log "imported ${image} ($(docker image inspect -f '{{.Size}}' "${image}" | numfmt --to=iec))"
}

mkdir -p "${work}"

if [[ "${force}" == 1 ]] || ! has_image "${runtime_image}"; then
  need_root "${runtime_image}"
  ensure_debootstrap
  root="${work}/rootfs-runtime"
  bootstrap "${root}" "ca-certificates"
  import_rootfs "${root}" "${runtime_image}" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]'
  rm -rf "${root}"
fi

if [[ "${force}" == 1 ]] || ! has_image "${builder_image}"; then
  need_root "${builder_image}"
  ensure_debootstrap
  sysroot="$(rustc --print sysroot)"
  root="${work}/rootfs-builder"
  bootstrap "${root}" "ca-certificates,gcc,libc6-dev,make,pkg-config"
  # The same layout as the public rust images: toolchain under /usr/local/rustup, cargo's home
  # in /usr/local/cargo, binaries on PATH. Only bin/ and lib/ are needed to build.
  toolchain="${root}/usr/local/rustup/toolchains/local"
  mkdir -p "${toolchain}" "${root}/usr/local/cargo/bin"
  cp -a "${sysroot}/bin" "${sysroot}/lib" "${toolchain}/"
  for tool in "${toolchain}"/bin/*; do
    ln -s "/usr/local/rustup/toolchains/local/bin/$(basename "${tool}")" "${root}/usr/local/cargo/bin/"
  done
  import_rootfs "${root}" "${builder_image}" \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'CMD ["/bin/bash"]'
  rm -rf "${root}"
fi

echo "${runtime_image} ${builder_image}"
