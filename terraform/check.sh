#!/usr/bin/env bash
# Offline checks for the logbook Terraform: fmt, then validate (module and example) and
# terraform test (module, mocked AWS provider), then a checkov scan (module as the example calls
# it). validate/test need a local AWS provider plugin directory (no registry access):
# $TF_PLUGIN_DIR, else /opt/tf-plugins, else one found on disk. Without terraform, or without a
# provider, those steps print a SKIP line and checkov still runs (it needs neither).
# checkov comes from the pinned venv of scripts/iac-tools.sh; every failed check fails this
# script, and skips must be inline `#checkov:skip=ID:reason` comments (listed with their reason).
# Leaves nothing behind in the repository.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "${here}/.." && pwd)
module_dir="${here}/modules/logbook-cluster"
example_dir="${here}/examples/aws-cluster"

work=$(mktemp -d)
created_locks=()
cleanup() {
  local lock
  for lock in "${created_locks[@]+"${created_locks[@]}"}"; do
    rm -f -- "${lock}"
  done
  rm -rf -- "${work}"
}
trap cleanup EXIT

has_aws() {
  [[ -n "$1" && -d "$1/registry.terraform.io/hashicorp/aws" ]]
}

# init with a private data dir; the lock file init writes (platform-specific hashes from the
# local plugin dir) is removed again unless it was already there.
init_dir() {
  local dir=$1 data_dir=$2 plugin_dir=$3
  if [[ ! -e "${dir}/.terraform.lock.hcl" ]]; then
    created_locks+=("${dir}/.terraform.lock.hcl")
  fi
  TF_DATA_DIR="${data_dir}" terraform -chdir="${dir}" init -input=false -no-color \
    -backend=false -plugin-dir="${plugin_dir}" >"${work}/init.log" 2>&1 || {
    cat "${work}/init.log" >&2
    return 1
  }
}

terraform_checks() {
  if ! command -v terraform >/dev/null 2>&1; then
    echo "SKIP: terraform fmt/validate/test: terraform binary not found"
    return 0
  fi

  echo "== terraform fmt -check -recursive"
  terraform -chdir="${here}" fmt -check -recursive

  local plugin_dir="" found
  if has_aws "${TF_PLUGIN_DIR:-}"; then
    plugin_dir="${TF_PLUGIN_DIR}"
  elif has_aws /opt/tf-plugins; then
    plugin_dir=/opt/tf-plugins
  else
    found=$(find / -maxdepth 6 -path '*/registry.terraform.io/hashicorp/aws' -type d 2>/dev/null | head -n 1 || true)
    if [[ -n "${found}" ]]; then
      plugin_dir="${found%/registry.terraform.io/hashicorp/aws}"
    fi
  fi

  if [[ -z "${plugin_dir}" ]]; then
    echo "SKIP: terraform validate/test: no local AWS provider plugin directory"
    return 0
  fi
  echo "== using provider plugins from ${plugin_dir}"

  local dir name data_dir
  for dir in "${module_dir}" "${example_dir}"; do
    name=${dir#"${here}/"}
    data_dir="${work}/$(basename "${dir}")"
    echo "== ${name}: terraform init + validate"
    init_dir "${dir}" "${data_dir}" "${plugin_dir}"
    TF_DATA_DIR="${data_dir}" terraform -chdir="${dir}" validate -no-color
  done

  echo "== modules/logbook-cluster: terraform test"
  TF_DATA_DIR="${work}/logbook-cluster" terraform -chdir="${module_dir}" test -no-color

  echo "OK: fmt, validate (module, example), test"
}

checkov_scan() {
  local venv rc=0
  venv=$(bash "${repo_root}/scripts/iac-tools.sh")
  echo "== checkov --framework terraform (checkov $("${venv}/bin/checkov" --version))"
  # Scanning the whole tree evaluates the module as examples/aws-cluster calls it. checkov exits 1
  # when a check fails; anything else non-zero is an error of its own.
  PYTHONDONTWRITEBYTECODE=1 "${venv}/bin/checkov" --directory "${here}" --framework terraform \
    --skip-download --output json >"${work}/checkov.json" 2>"${work}/checkov.err" || rc=$?
  PYTHONDONTWRITEBYTECODE=1 "${venv}/bin/python" - "${work}/checkov.json" "${rc}" "${work}/checkov.err" <<'PY'
import json
import sys

path, rc, err = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    with open(path) as f:
        report = json.load(f)
except ValueError as e:
    sys.stderr.write(open(err).read())
    sys.exit(f"FAIL: checkov (exit {rc}) wrote no JSON report: {e}")
reports = report if isinstance(report, list) else [report]
reports = [r for r in reports if r.get("check_type") == "terraform"]
if not reports:
    sys.stderr.write(open(err).read())
    sys.exit(f"FAIL: checkov (exit {rc}) found no Terraform to scan")
summary = reports[0]["summary"]
results = reports[0]["results"]
for check in results.get("skipped_checks", []):
    reason = check["check_result"].get("suppress_comment") or "(no reason given)"
    print(f"  skipped {check['check_id']} on {check['resource']}: {reason}")
for check in results.get("failed_checks", []):
    first, last = check["file_line_range"]
    print(f"  FAILED {check['check_id']} on {check['resource']} "
          f"({check['file_path'].lstrip('/')}:{first}-{last}): {check['check_name']}")
print(f"checkov: passed {summary['passed']}, failed {summary['failed']}, "
      f"skipped {summary['skipped']}, parsing errors {summary['parsing_errors']}, "
      f"resources {summary['resource_count']}")
problems = []
if summary["failed"]:
    problems.append(f"{summary['failed']} failed check(s): fix them, or skip them inline on the "
                    "resource with #checkov:skip=ID:reason")
if summary["parsing_errors"]:
    problems.append(f"{summary['parsing_errors']} parsing error(s)")
# checkov reports a skip comment without a reason as "No comment provided".
bare = [c["check_id"] for c in results.get("skipped_checks", [])
        if (c["check_result"].get("suppress_comment") or "").strip() in ("", "No comment provided")]
if bare:
    problems.append(f"skips without a reason: {', '.join(bare)}")
if summary["passed"] == 0:
    problems.append("no check passed: the scan did not see the module")
if rc not in (0, 1) or (rc == 1 and not summary["failed"]):
    sys.stderr.write(open(err).read())
    problems.append(f"checkov exited {rc}")
if problems:
    sys.exit("FAIL: checkov: " + "; ".join(problems))
print("OK: checkov")
PY
}

terraform_checks
checkov_scan
