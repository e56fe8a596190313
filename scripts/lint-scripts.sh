#!/usr/bin/env bash
# Lints the project's shell scripts (shellcheck) and the Dockerfile (hadolint), with the pinned
# tools from scripts/iac-tools.sh. Part of `make iac-check`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
venv="$(bash scripts/iac-tools.sh)"

mapfile -t scripts < <(
  { ls scripts/*.sh helm/check.sh terraform/check.sh; echo .ci/run; } 2>/dev/null | sort -u
)
echo "== shellcheck ${#scripts[@]} scripts"
"${venv}/bin/shellcheck" --external-sources "${scripts[@]}"

echo "== hadolint Dockerfile"
"${venv}/bin/hadolint" --failure-threshold warning Dockerfile

echo "OK: shellcheck, hadolint"
