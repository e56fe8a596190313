#!/usr/bin/env bash
# Installs the Python tools the Rust test suite starts as real servers into a venv at
# target/test-venv, with pinned versions: moto's server (an EC2-protocol API, for the
# join_aws_tag discovery test). Idempotent; prints the venv path on stdout.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TEST_VENV:-${repo_root}/target/test-venv}"
python="${PYTHON:-python3}"

packages=(
  "moto[ec2,server]==5.2.5"
)

if [[ ! -x "${venv}/bin/python" ]]; then
  echo "test-tools: creating ${venv}" >&2
  mkdir -p "$(dirname "${venv}")"
  "${python}" -m venv "${venv}"
fi

if [[ ! -x "${venv}/bin/moto_server" ]] || ! "${venv}/bin/python" -c \
  'import sys; from importlib.metadata import version; sys.exit(version("moto") != "5.2.5")' 2>/dev/null; then
  echo "test-tools: installing ${packages[*]}" >&2
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
fi

echo "${venv}"
