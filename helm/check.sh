#!/usr/bin/env bash
# Checks the logbook Helm chart offline: installs the pinned tools (scripts/iac-tools.sh), runs the
# chart tests (render, schema, kubernetes-validate --strict, checkov) and lints values.yaml.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in helm/tests

venv="$(bash scripts/iac-tools.sh)"

echo "== shellcheck"
"${venv}/bin/shellcheck" scripts/iac-tools.sh helm/check.sh

echo "== yamllint"
"${venv}/bin/yamllint" --strict -c helm/.yamllint helm/logbook/values.yaml helm/logbook/Chart.yaml

echo "== pytest"
"${venv}/bin/python" -m pytest -q -p no:cacheprovider helm/tests
