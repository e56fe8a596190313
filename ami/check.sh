#!/usr/bin/env bash
# Offline checks of the logbook AMI (ami/). Nothing here talks to AWS.
#   packer-fmt       `packer fmt -check` on every *.pkr.hcl (Debian's packer 1.6.6 is installed
#                    with apt-get when packer is missing and we are root)
#   packer-validate  `packer validate` with test values. Packer 1.6.6 predates plugins: it
#                    validates a copy without plugins.pkr.hcl and without the two settings it
#                    does not know (imds_support, metadata_options), which are checked by text;
#                    a modern packer validates ami/ itself after `packer init`.
#   shell scripts    every *.sh under ami/ through the pinned shellcheck (scripts/iac-tools.sh)
#   units            systemd-analyze verify of the two units in a scratch root, the directives
#                    the brief asks for, and the contract with src/ and the Terraform user data
#   data-volume      data-volume.sh against loop devices: formats a blank volume once, never
#                    again, refuses a partition table, waits a bounded time (needs root)
#   fetch-tls        fetch-tls.sh with a fake aws CLI (needs root: it chowns)
# A check that cannot run here prints a line starting "SKIP: ". Exits non-zero on any failure.
set -euo pipefail

ami_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${ami_dir}/.." && pwd)"
cd "${repo_root}"
export CHECKPOINT_DISABLE=1 PYTHONDONTWRITEBYTECODE=1

work=$(mktemp -d)
trap 'rm -rf -- "${work}"' EXIT

is_root() { [[ $(id -u) == 0 ]]; }
skip() {
  echo "SKIP: $*"
  exit 77
}

# --- packer -------------------------------------------------------------------------------
packer_note=""
if ! command -v packer >/dev/null 2>&1 && is_root && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Debian's packer (apt-get install -y packer)"
  if ! apt-get install -y -q packer >"${work}/apt.log" 2>&1; then
    # An image without package lists: fetch them once and try again.
    apt-get update -q >>"${work}/apt.log" 2>&1 && apt-get install -y -q packer >>"${work}/apt.log" 2>&1 || true
  fi
  command -v packer >/dev/null 2>&1 || packer_note="apt-get install packer failed ($(tail -n 1 "${work}/apt.log"))"
fi
packer_version=""
if command -v packer >/dev/null 2>&1; then
  packer_version=$(packer version | head -n 1 | sed -E 's/^Packer v?([0-9]+\.[0-9]+(\.[0-9]+)?).*/\1/')
elif [[ -z ${packer_note} ]]; then
  packer_note="no packer binary (and not root with apt-get to install Debian's)"
fi

# True for packer < 1.7 (no plugins, no required_plugins, an older amazon builder).
legacy_packer() {
  local major minor
  IFS=. read -r major minor _ <<<"${packer_version}"
  ((major < 1 || (major == 1 && minor < 7)))
}

check_packer_fmt() {
  [[ -n ${packer_version} ]] || skip "packer fmt: ${packer_note}"
  echo "packer ${packer_version}"
  packer fmt -check -diff ami/
}

check_packer_validate() {
  [[ -n ${packer_version} ]] || skip "packer validate: ${packer_note}"
  local dir=${work}/validate stub=${work}/logbook-stub
  printf '#!/bin/sh\necho "logbook (stub for packer validate)"\n' >"${stub}"
  chmod +x "${stub}"
  local vars=(-var "version=v0.0.0-check" -var "region=eu-west-1" -var "binary_path=${stub}")

  if legacy_packer; then
    echo "packer ${packer_version}: validating a copy without plugins.pkr.hcl, imds_support and metadata_options"
    mkdir -p "${dir}"
    cp -R ami/files ami/scripts "${dir}/"
    local f
    for f in ami/*.pkr.hcl; do
      [[ $(basename "${f}") == plugins.pkr.hcl ]] && continue
      cp "${f}" "${dir}/"
    done
    # Remove exactly the modern-only settings, and insist that they are there with the right
    # values (so the copy differs from ami/ by nothing else).
    python3 - "${dir}/logbook.pkr.hcl" <<'PY'
import re
import sys

path = sys.argv[1]
text = open(path, encoding="utf-8").read()
imds = re.findall(r'^\s*imds_support\s*=\s*"([^"]*)"\s*\n', text, re.M)
block = re.findall(r"^(\s*)metadata_options\s*\{\n(.*?)^\1\}\s*\n", text, re.M | re.S)
errors = []
if imds != ["v2.0"]:
    errors.append(f'want one imds_support = "v2.0", found {imds}')
if len(block) != 1:
    errors.append(f"want one metadata_options block, found {len(block)}")
else:
    body = block[0][1]
    for key, want in (("http_endpoint", '"enabled"'), ("http_tokens", '"required"'),
                      ("http_put_response_hop_limit", "1")):
        if not re.search(rf"^\s*{key}\s*=\s*{re.escape(want)}\s*$", body, re.M):
            errors.append(f"metadata_options needs {key} = {want}")
if errors:
    sys.exit("logbook.pkr.hcl: " + "; ".join(errors))
text = re.sub(r'^\s*imds_support\s*=\s*"v2.0"\s*\n', "", text, flags=re.M)
text = re.sub(r"^(\s*)metadata_options\s*\{\n.*?^\1\}\s*\n", "", text, flags=re.M | re.S)
open(path, "w", encoding="utf-8").write(text)
PY
    grep -q 'required_plugins' ami/plugins.pkr.hcl
    grep -q 'source  *= "github.com/hashicorp/amazon"' ami/plugins.pkr.hcl
  else
    echo "packer ${packer_version}: packer init + validate ami/"
    if ! packer init ami/ >"${work}/init.log" 2>&1; then
      cat "${work}/init.log"
      skip "packer validate: packer ${packer_version} needs the amazon plugin and 'packer init ami/' could not install it"
    fi
    dir=ami
  fi

  packer validate "${vars[@]}" "${dir}"

  # The validations and the binary check must bite (values the pipelines could get wrong).
  local bad
  for bad in "version=" "version=v1.0.0+build" "binary_path=${work}/missing/logbook"; do
    if packer validate "${vars[@]}" -var "${bad}" "${dir}" >"${work}/bad.log" 2>&1; then
      echo "packer validate accepted -var ${bad}"
      return 1
    fi
  done
  echo "rejected as expected: an empty version, a version with '+', a missing binary"
}

# --- shellcheck ---------------------------------------------------------------------------
check_shellcheck() {
  local venv scripts
  venv=$(bash scripts/iac-tools.sh)
  mapfile -t scripts < <(find ami -name '*.sh' -type f | sort)
  echo "${scripts[*]}"
  "${venv}/bin/shellcheck" "${scripts[@]}"
}

# --- units --------------------------------------------------------------------------------
check_units() {
  # The directives asked for, and the contract with the broker's source and the user data.
  python3 - ami/files/logbook.service ami/files/logbook-data-volume.service \
    src/config.rs terraform/modules/logbook-cluster/templates/user-data.sh.tftpl <<'PY'
import re
import sys

unit_path, volume_path, config_rs, user_data = sys.argv[1:5]
errors = []

def directives(path):
    found = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found

unit = directives(unit_path)
want = {
    "Type": "exec",
    "User": "logbook",
    "Group": "logbook",
    "ExecStart": "/usr/local/bin/logbook serve --config /etc/logbook/logbook.toml",
    "ExecStartPre": "+/usr/local/libexec/logbook/fetch-tls.sh",
    "EnvironmentFile": "-/etc/logbook/logbook.env",
    "Restart": "always",
    "LimitNOFILE": "1048576",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "ReadWritePaths": "/var/lib/logbook",
    "CapabilityBoundingSet": "",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "Requires": "logbook-data-volume.service",
    "AssertPathIsMountPoint": "/var/lib/logbook",
    "WantedBy": "multi-user.target",
}
for key, value in want.items():
    if unit.get(key) != [value]:
        errors.append(f"logbook.service: want {key}={value}, found {unit.get(key)}")
after = " ".join(unit.get("After", [])).split()
for dep in ("logbook-data-volume.service", "network-online.target"):
    if dep not in after:
        errors.append(f"logbook.service: After= lacks {dep}")
for key in ("RestartSec", "TimeoutStopSec"):
    if key not in unit:
        errors.append(f"logbook.service: no {key}")
stop = unit.get("TimeoutStopSec", ["0"])[0]
if not re.fullmatch(r"\d+s?", stop) or int(stop.rstrip("s")) < 30:
    errors.append(f"logbook.service: TimeoutStopSec={stop} is shorter than a graceful stop")

volume = directives(volume_path)
for key, value in {"Type": "oneshot", "RemainAfterExit": "yes", "Before": "logbook.service",
                   "ExecStart": "/usr/local/libexec/logbook/data-volume.sh",
                   "WantedBy": "multi-user.target"}.items():
    if volume.get(key) != [value]:
        errors.append(f"logbook-data-volume.service: want {key}={value}, found {volume.get(key)}")

# The broker: --config (and LOGBOOK_CONFIG) names the file; LOGBOOK_<KEY> sets a key.
src = open(config_rs, encoding="utf-8").read()
if not re.search(r'#\[arg\(long, env = "LOGBOOK_CONFIG"[^\]]*\]\s*(#\[[^\]]*\]\s*)*pub config: Option<PathBuf>', src):
    errors.append("src/config.rs: no `--config` flag (ExecStart uses it)")
if 'Env::prefixed("LOGBOOK_")' not in src:
    errors.append("src/config.rs: LOGBOOK_ environment variables are not read (logbook.env relies on them)")
for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
    if not re.search(rf"pub {key}: PathBuf", src):
        errors.append(f"src/config.rs: no {key} key (fetch-tls.sh writes LOGBOOK_{key.upper()})")
fetch = open("ami/scripts/fetch-tls.sh", encoding="utf-8").read()
for var in ("LOGBOOK_TLS_CA_FILE", "LOGBOOK_TLS_CERT_FILE", "LOGBOOK_TLS_KEY_FILE"):
    if f'echo "{var}=' not in fetch:
        errors.append(f"fetch-tls.sh does not write {var}")

# The Terraform user data: what it expects from the AMI.
ud = open(user_data, encoding="utf-8").read()
for needle, why in (('data_dir = "/var/lib/logbook"', "data_dir is the data volume's mount point"),
                    ("/etc/logbook/logbook.toml", "the file ExecStart reads"),
                    ("/etc/logbook/tls_secret_arn", "the file fetch-tls.sh reads"),
                    ("systemctl enable --now logbook", "the unit is started by the user data"),
                    ("curl ", "curl is installed in the AMI for it")):
    if needle not in ud:
        errors.append(f"user-data.sh.tftpl no longer has {needle!r} ({why}): re-check the contract")

for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
  echo "directives and contract: ok"

  command -v systemd-analyze >/dev/null 2>&1 || skip "systemd-analyze verify: no systemd-analyze"
  [[ -d /usr/lib/systemd/system ]] || skip "systemd-analyze verify: no /usr/lib/systemd/system to build a root from"
  # A scratch root: the system's units (for the targets referenced), ours, and stand-ins for
  # the executables they name (verify checks that those exist).
  local root=${work}/root
  mkdir -p "${root}/usr/lib/systemd" "${root}/etc/systemd/system" "${root}/usr/local/bin" \
    "${root}/usr/local/libexec/logbook"
  cp -R /usr/lib/systemd/system "${root}/usr/lib/systemd/"
  printf '#!/bin/sh\n' >"${root}/usr/local/bin/logbook"
  chmod 0755 "${root}/usr/local/bin/logbook"
  install -m 0755 ami/scripts/data-volume.sh ami/scripts/fetch-tls.sh "${root}/usr/local/libexec/logbook/"

  # First make sure verify reports problems here at all (it exits 0 on unknown keys).
  printf '[Service]\nType=oneshot\nExecStart=/usr/local/bin/logbook\nNoSuchKey=1\n' \
    >"${root}/etc/systemd/system/logbook-selftest.service"
  local out
  out=$(systemd-analyze verify --root="${root}" /etc/systemd/system/logbook-selftest.service 2>&1 || true)
  rm -f "${root}/etc/systemd/system/logbook-selftest.service"
  [[ ${out} == *NoSuchKey* ]] || skip "systemd-analyze verify does not work in this environment (self-test: ${out:-no output})"

  install -m 0644 ami/files/logbook.service ami/files/logbook-data-volume.service "${root}/etc/systemd/system/"
  local rc=0
  out=$(systemd-analyze verify --root="${root}" /etc/systemd/system/logbook.service \
    /etc/systemd/system/logbook-data-volume.service 2>&1) || rc=$?
  if ((rc != 0)) || [[ -n ${out} ]]; then
    echo "${out}"
    echo "systemd-analyze verify: exit ${rc}, output above"
    return 1
  fi
  echo "systemd-analyze verify: both units clean ($(systemd-analyze --version | head -n 1))"
}

# --- data-volume.sh against loop devices --------------------------------------------------
check_data_volume() {
  is_root || skip "data-volume test: needs root (loop devices, mkfs, mount)"
  local tool
  for tool in losetup blkid mount umount findmnt lsblk; do
    command -v "${tool}" >/dev/null 2>&1 || skip "data-volume test: no ${tool}"
  done
  local fs=xfs
  command -v mkfs.xfs >/dev/null 2>&1 || fs=ext4
  command -v "mkfs.${fs}" >/dev/null 2>&1 || skip "data-volume test: neither mkfs.xfs nor mkfs.ext4"

  local dir=${work}/dv
  # Not local: the EXIT trap below runs after this function has returned.
  loops=()
  mnt=${work}/dv/mnt
  mkdir -p "${dir}/by-id" "${mnt}"
  # Detach what this test attached, whatever happens (only those devices).
  # shellcheck disable=SC2329 # invoked by the EXIT trap
  cleanup_loops() {
    if findmnt -n --mountpoint "${mnt}" >/dev/null 2>&1; then umount "${mnt}" || true; fi
    local l
    for l in "${loops[@]+"${loops[@]}"}"; do losetup -d "${l}" || true; done
  }
  trap cleanup_loops EXIT
  local i dev
  for i in 0 1; do
    truncate -s 512M "${dir}/disk${i}.img" # sparse; xfs needs 300 MB at least
    dev=$(losetup -f --show "${dir}/disk${i}.img" 2>"${dir}/losetup.err") ||
      skip "data-volume test: no loop devices here ($(cat "${dir}/losetup.err"))"
    loops+=("${dev}")
  done
  local root_dev=${loops[0]} data_dev=${loops[1]}
  echo "loop devices: ${root_dev} (stands for the root disk), ${data_dev} (the data volume); ${fs}"
  # What udev makes on a Nitro instance: a link per volume (and per namespace), partitions too.
  ln -s "${root_dev}" "${dir}/by-id/nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaa0"
  ln -s "${root_dev}" "${dir}/by-id/nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaa0-part1"
  ln -s "${data_dev}" "${dir}/by-id/nvme-Amazon_Elastic_Block_Store_vol0bbbbbbbbbbbbbbb0"
  ln -s "${data_dev}" "${dir}/by-id/nvme-Amazon_Elastic_Block_Store_vol0bbbbbbbbbbbbbbb0_1"
  printf '# scratch fstab\nproc /proc proc defaults 0 0\n' >"${dir}/fstab"

  local owner=nobody:nogroup
  getent group nogroup >/dev/null || owner=nobody:nobody
  run_dv() {
    env LOGBOOK_DATA_MOUNT_POINT="${mnt}" LOGBOOK_FSTAB="${dir}/fstab" \
      LOGBOOK_DATA_DEVICE_FILE="${dir}/data_device" LOGBOOK_DISK_BY_ID_DIR="${dir}/by-id" \
      LOGBOOK_DATA_FS_TYPE="${fs}" LOGBOOK_DATA_OWNER="${owner}" LOGBOOK_DATA_WAIT_SECONDS=5 \
      LOGBOOK_XEN_DATA_DEVICES="" "$@" bash ami/scripts/data-volume.sh
  }
  fail() {
    echo "data-volume test: $*"
    exit 1
  }
  uuid_of() { blkid -p -o value -s UUID "$1" || true; }

  # 1. Blank volume: formatted, fstab entry by UUID, mounted noatime, owned by the user.
  run_dv LOGBOOK_ROOT_DISK="${root_dev}" || fail "first run failed"
  local uuid
  uuid=$(uuid_of "${data_dev}")
  [[ -n ${uuid} ]] || fail "no filesystem on ${data_dev} after the first run"
  [[ $(blkid -p -o value -s TYPE "${data_dev}") == "${fs}" ]] || fail "not ${fs}"
  [[ $(blkid -p -o value -s LABEL "${data_dev}") == logbook-data ]] || fail "no logbook-data label"
  local rc=0
  blkid -p "${root_dev}" >/dev/null 2>&1 || rc=$?
  ((rc == 2)) || fail "the root disk stand-in ${root_dev} was touched (blkid exit ${rc})"
  local pass=2
  [[ ${fs} == xfs ]] && pass=0
  local entry="UUID=${uuid} ${mnt} ${fs} defaults,noatime,nofail 0 ${pass}"
  [[ $(grep -c -F -x -- "${entry}" "${dir}/fstab") == 1 ]] || fail "fstab lacks '${entry}': $(cat "${dir}/fstab")"
  grep -q '^proc /proc' "${dir}/fstab" || fail "other fstab entries were lost"
  [[ $(readlink -f "$(findmnt -n -o SOURCE --mountpoint "${mnt}")") == "${data_dev}" ]] || fail "not mounted"
  [[ ,$(findmnt -n -o OPTIONS --mountpoint "${mnt}"), == *,noatime,* ]] || fail "mounted without noatime"
  [[ $(stat -c %U:%G "${mnt}") == "${owner}" ]] || fail "mount point owned by $(stat -c %U:%G "${mnt}")"
  echo '{"node_id": "identity lives here"}' >"${mnt}/node.json"
  cp "${dir}/fstab" "${dir}/fstab.after-first"
  echo "1. blank volume formatted (${fs}, UUID ${uuid}), fstab entry, mounted noatime, owned by ${owner}"

  # 2. Again while mounted: nothing changes.
  run_dv LOGBOOK_ROOT_DISK="${root_dev}" || fail "second run (mounted) failed"
  [[ $(uuid_of "${data_dev}") == "${uuid}" ]] || fail "UUID changed on the second run: reformatted"
  cmp -s "${dir}/fstab" "${dir}/fstab.after-first" || fail "fstab changed on the second run"
  echo "2. second run while mounted: same UUID, fstab unchanged"

  # 3. After a reboot (unmounted): mounted again, not reformatted, data still there.
  umount "${mnt}"
  run_dv LOGBOOK_ROOT_DISK="${root_dev}" || fail "third run (unmounted) failed"
  [[ $(uuid_of "${data_dev}") == "${uuid}" ]] || fail "UUID changed on the third run: reformatted"
  [[ -f ${mnt}/node.json ]] || fail "node.json is gone"
  cmp -s "${dir}/fstab" "${dir}/fstab.after-first" || fail "fstab changed on the third run"
  echo "3. run after unmount: mounted again, same UUID, node.json kept"

  # 4. No root-disk hint, two EBS candidates: the one labelled logbook-data wins; the blank
  #    one is left alone.
  umount "${mnt}"
  run_dv || fail "run with two candidates failed"
  [[ $(readlink -f "$(findmnt -n -o SOURCE --mountpoint "${mnt}")") == "${data_dev}" ]] ||
    fail "the labelled volume was not chosen"
  rc=0
  blkid -p "${root_dev}" >/dev/null 2>&1 || rc=$?
  ((rc == 2)) || fail "the unlabelled candidate ${root_dev} was touched"
  echo "4. two candidates: the labelled volume is chosen, the blank one untouched"

  # 5. A device with a partition table is refused, not formatted.
  umount "${mnt}"
  python3 - "${root_dev}" <<'PY'
import struct
import sys

with open(sys.argv[1], "r+b") as disk:  # an MBR with one Linux partition
    disk.seek(446)
    disk.write(bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + struct.pack("<II", 2048, 8192))
    disk.seek(510)
    disk.write(b"\x55\xaa")
PY
  echo "${root_dev}" >"${dir}/data_device"
  if run_dv 2>"${dir}/refused.err"; then fail "a device with a partition table was accepted"; fi
  grep -q 'partition table' "${dir}/refused.err" || fail "unexpected error: $(cat "${dir}/refused.err")"
  [[ $(blkid -p -o value -s PTTYPE "${root_dev}") == dos && -z $(uuid_of "${root_dev}") ]] ||
    fail "the partitioned device was changed"
  echo "5. a device with a partition table is refused and left as it was"

  # 6. A named device that never appears: a bounded wait, then an error.
  echo /dev/logbook-no-such-device >"${dir}/data_device"
  local start=${SECONDS}
  if run_dv LOGBOOK_DATA_WAIT_SECONDS=2 2>/dev/null; then fail "a missing device was accepted"; fi
  ((SECONDS - start < 30)) || fail "the wait for a missing device was not bounded"
  echo "6. a device that never appears: gave up after the bounded wait"
}

# --- fetch-tls.sh with a fake aws CLI -----------------------------------------------------
check_fetch_tls() {
  is_root || skip "fetch-tls test: needs root (it chowns the key and writes root-owned files)"
  command -v python3 >/dev/null 2>&1 || skip "fetch-tls test: no python3"
  local dir=${work}/tls conf=${work}/tls/etc
  mkdir -p "${dir}/bin" "${conf}"
  local arn="arn:aws:secretsmanager:eu-central-1:123456789012:secret:logbook/tls-AbCdEf"
  # The fake CLI checks its arguments and answers from $FAKE_SECRET (a SecretString value).
  cat >"${dir}/bin/aws" <<'SH'
#!/bin/bash
set -euo pipefail
[[ ${FAKE_FAIL:-} == 1 ]] && { echo "An error occurred (AccessDeniedException)" >&2; exit 254; }
want=(secretsmanager get-secret-value --region eu-central-1 --secret-id "${FAKE_ARN}" --output json)
[[ "$*" == "${want[*]}" ]] || { echo "fake aws: unexpected arguments: $*" >&2; exit 2; }
python3 -c 'import json, os; print(json.dumps({"ARN": os.environ["FAKE_ARN"], "SecretString": open(os.environ["FAKE_SECRET"]).read()}))'
SH
  chmod +x "${dir}/bin/aws"
  python3 - "${dir}/good.json" "${dir}/bad.json" <<'PY'
import json
import sys

pem = lambda kind, body: f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"
good = {"ca": pem("CERTIFICATE", "Q0E="), "cert": pem("CERTIFICATE", "Tk9ERQ=="),
        "key": pem("PRIVATE KEY", "S0VZ")}
json.dump(good, open(sys.argv[1], "w"))
json.dump({"ca": good["ca"], "cert": good["cert"]}, open(sys.argv[2], "w"))
PY
  local owner=nobody:nogroup
  getent group nogroup >/dev/null || owner=nobody:nobody
  run_tls() {
    env LOGBOOK_CONF_DIR="${conf}" LOGBOOK_AWS_CLI="${dir}/bin/aws" LOGBOOK_TLS_KEY_OWNER="${owner}" \
      LOGBOOK_TLS_ATTEMPTS=2 FAKE_ARN="${arn}" FAKE_SECRET="${dir}/good.json" "$@" \
      bash ami/scripts/fetch-tls.sh
  }
  fail() {
    echo "fetch-tls test: $*"
    exit 1
  }

  # 1. No tls_secret_arn: nothing happens.
  run_tls || fail "failed without tls_secret_arn"
  [[ ! -e ${conf}/tls && ! -e ${conf}/logbook.env ]] || fail "wrote files without tls_secret_arn"
  echo "1. no tls_secret_arn: no-op"

  # 2. The secret is written with the right modes; logbook.env keeps the operator's lines.
  printf '%s\n' "${arn}" >"${conf}/tls_secret_arn"
  printf 'LOGBOOK_LOG_FORMAT=json\nLOGBOOK_TLS_CA_FILE=/old/ca.pem\n' >"${conf}/logbook.env"
  run_tls 2>"${dir}/run.err" || fail "failed: $(cat "${dir}/run.err")"
  python3 - "${conf}" "${dir}/good.json" "${owner}" <<'PY'
import json
import os
import stat
import sys
import pwd
import grp

conf, good_path, owner = sys.argv[1:4]
good = json.load(open(good_path))
errors = []
files = {"ca.pem": ("ca", 0o644, "root:root"), "node.pem": ("cert", 0o644, "root:root"),
         "node.key": ("key", 0o600, owner)}
for name, (field, mode, who) in files.items():
    path = os.path.join(conf, "tls", name)
    st = os.stat(path)
    got_owner = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
    if open(path).read() != good[field]:
        errors.append(f"{name}: wrong content")
    if stat.S_IMODE(st.st_mode) != mode:
        errors.append(f"{name}: mode {oct(stat.S_IMODE(st.st_mode))}, want {oct(mode)}")
    if got_owner != who:
        errors.append(f"{name}: owner {got_owner}, want {who}")
env = open(os.path.join(conf, "logbook.env")).read().splitlines()
want = ["LOGBOOK_LOG_FORMAT=json",
        f"LOGBOOK_TLS_CA_FILE={conf}/tls/ca.pem",
        f"LOGBOOK_TLS_CERT_FILE={conf}/tls/node.pem",
        f"LOGBOOK_TLS_KEY_FILE={conf}/tls/node.key"]
if env != want:
    errors.append(f"logbook.env is {env}, want {want}")
leftovers = [n for n in os.listdir(os.path.join(conf, "tls")) if n.startswith(".")]
if leftovers:
    errors.append(f"temporary files left: {leftovers}")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
  echo "2. secret written: ca.pem/node.pem 0644 root, node.key 0600 ${owner}; logbook.env updated, other lines kept"

  # 3. Again (a rotation): same result, no duplicate lines.
  run_tls 2>/dev/null || fail "second run failed"
  [[ $(grep -c '^LOGBOOK_TLS_' "${conf}/logbook.env") == 3 ]] || fail "duplicate TLS lines in logbook.env"
  echo "3. second run: logbook.env still has one line per TLS key"

  # 4. A secret without "key", a failing CLI, a bad ARN: errors, and the files stay.
  local before
  before=$(sha256sum "${conf}/tls/node.key" "${conf}/logbook.env")
  if run_tls FAKE_SECRET="${dir}/bad.json" 2>"${dir}/bad.err"; then fail "a secret without key was accepted"; fi
  grep -q "'key' must be a PEM string" "${dir}/bad.err" || fail "unexpected error: $(cat "${dir}/bad.err")"
  if run_tls FAKE_FAIL=1 2>"${dir}/fail.err"; then fail "a failing aws CLI was ignored"; fi
  grep -q 'try 1/2' "${dir}/fail.err" || fail "no retry: $(cat "${dir}/fail.err")"
  printf 'not-an-arn\n' >"${conf}/tls_secret_arn"
  if run_tls 2>/dev/null; then fail "a malformed ARN was accepted"; fi
  [[ $(sha256sum "${conf}/tls/node.key" "${conf}/logbook.env") == "${before}" ]] || fail "files changed by a failed run"
  echo "4. missing key / failing CLI (retried) / bad ARN: errors, files unchanged"
}

# --- run them all -------------------------------------------------------------------------
ran=()
skipped=()
failed=()
run_check() {
  local name=$1 rc=0
  echo "== ${name}"
  set +e
  (
    set -e
    "check_${name//-/_}"
  )
  rc=$?
  set -e
  case ${rc} in
    0) ran+=("${name}") ;;
    77) skipped+=("${name}") ;;
    *)
      echo "FAIL: ${name} (exit ${rc})"
      failed+=("${name}")
      ;;
  esac
}

for check in packer-fmt packer-validate shellcheck units data-volume fetch-tls; do
  run_check "${check}"
done

echo "== summary"
echo "ran: ${ran[*]:-none}"
echo "skipped: ${skipped[*]:-none}"
if ((${#failed[@]} > 0)); then
  echo "FAIL: ami checks failed: ${failed[*]}"
  exit 1
fi
echo "OK: ami checks passed (${#ran[@]} ran, ${#skipped[@]} skipped${skipped[*]:+: ${skipped[*]}})"
