#!/usr/bin/env bash
# Offline checks for the logbook Terraform: fmt, then validate (module and example) and
# terraform test (module, mocked AWS provider). Needs a local AWS provider plugin directory
# (no registry access): $TF_PLUGIN_DIR, else /opt/tf-plugins, else one found on disk.
# Leaves nothing behind in the repository.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module_dir="${here}/modules/logbook-cluster"
example_dir="${here}/examples/aws-cluster"

echo "== terraform fmt -check -recursive"
terraform -chdir="${here}" fmt -check -recursive

has_aws() {
  [[ -n "$1" && -d "$1/registry.terraform.io/hashicorp/aws" ]]
}

plugin_dir=""
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
  exit 0
fi
echo "== using provider plugins from ${plugin_dir}"

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

# init with a private data dir; the lock file init writes (platform-specific hashes from the
# local plugin dir) is removed again unless it was already there.
init_dir() {
  local dir=$1 data_dir=$2
  if [[ ! -e "${dir}/.terraform.lock.hcl" ]]; then
    created_locks+=("${dir}/.terraform.lock.hcl")
  fi
  TF_DATA_DIR="${data_dir}" terraform -chdir="${dir}" init -input=false -no-color \
    -backend=false -plugin-dir="${plugin_dir}" >"${work}/init.log" 2>&1 || {
    cat "${work}/init.log" >&2
    return 1
  }
}

for dir in "${module_dir}" "${example_dir}"; do
  name=${dir#"${here}/"}
  data_dir="${work}/$(basename "${dir}")"
  echo "== ${name}: terraform init + validate"
  init_dir "${dir}" "${data_dir}"
  TF_DATA_DIR="${data_dir}" terraform -chdir="${dir}" validate -no-color
done

echo "== modules/logbook-cluster: terraform test"
TF_DATA_DIR="${work}/logbook-cluster" terraform -chdir="${module_dir}" test -no-color

echo "OK: fmt, validate (module, example), test"
