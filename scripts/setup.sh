#!/usr/bin/env bash
# Checks (and where possible installs) what building and testing logbook needs.
# Today that is the Rust toolchain with rustfmt and clippy, and `mount` for the disk-full test
# (which mounts a small tmpfs and so needs root). Later issues add their tools here.
set -euo pipefail

need_rust="1.95"
missing=()

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust ${need_rust} (https://rustup.rs)" >&2
  exit 1
fi
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need_rust" "$have" | sort -V | head -1)" != "$need_rust" ]; then
  echo "setup: rustc $have is older than $need_rust" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$component"
    else
      missing+=("$component")
    fi
  fi
done

if ! command -v mount >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y --no-install-recommends mount
  else
    missing+=("mount (util-linux)")
  fi
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup: note: not root; the disk-full test mounts a tmpfs and will fail without root" >&2
fi

# Python servers the tests start (moto's EC2 API for the discovery test).
if command -v python3 >/dev/null 2>&1; then
  "$(dirname "$0")/test-tools.sh" >/dev/null || missing+=("the test venv (scripts/test-tools.sh failed)")
else
  missing+=("python3 (for the test servers in scripts/test-tools.sh)")
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: missing: ${missing[*]}" >&2
  exit 1
fi
echo "setup: ok (rustc $have)"
