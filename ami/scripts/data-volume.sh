#!/bin/bash
# logbook first-boot (and every-boot) data volume setup, run by logbook-data-volume.service:
#   1. find the EBS data volume: the device named in /etc/logbook/data_device, else the one EBS
#      volume that is not the root disk (Nitro: /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol*,
#      as /dev/nvme1n1 and so on, not the /dev/sdX or /dev/xvdX name it was attached as; Xen:
#      /dev/xvdb or /dev/sdb), waiting a bounded time for it to appear;
#   2. make a filesystem ONLY if the device carries no signature at all (blkid -p): an existing
#      filesystem is never reformatted (the node identity and the logs live on it), and a device
#      with a partition table or an unknown signature is refused;
#   3. an /etc/fstab entry by UUID (noatime, nofail), mount it at /var/lib/logbook, and hand the
#      mount point to logbook:logbook.
# Idempotent: a second run finds the filesystem (and usually the mount) and changes nothing.
#
# The LOGBOOK_* variables below exist for ami/check.sh, which runs this script against loop
# devices with a scratch fstab and mount point; the unit sets none of them.
set -euo pipefail

mount_point=${LOGBOOK_DATA_MOUNT_POINT:-/var/lib/logbook}
device_file=${LOGBOOK_DATA_DEVICE_FILE:-/etc/logbook/data_device}
fstab=${LOGBOOK_FSTAB:-/etc/fstab}
fs_type=${LOGBOOK_DATA_FS_TYPE:-xfs}
fs_label=${LOGBOOK_DATA_FS_LABEL:-logbook-data}
owner=${LOGBOOK_DATA_OWNER:-logbook:logbook}
wait_seconds=${LOGBOOK_DATA_WAIT_SECONDS:-300}
by_id_dir=${LOGBOOK_DISK_BY_ID_DIR:-/dev/disk/by-id}
xen_devices=${LOGBOOK_XEN_DATA_DEVICES:-/dev/xvdb /dev/sdb}

log() { echo "data-volume: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

settle() {
  if command -v udevadm >/dev/null 2>&1; then
    udevadm settle --timeout=10 >/dev/null 2>&1 || true
  fi
}

# The whole disk the root filesystem is on (/dev/nvme0n1 for /dev/nvme0n1p1).
root_disk() {
  if [[ -n ${LOGBOOK_ROOT_DISK:-} ]]; then
    readlink -f -- "${LOGBOOK_ROOT_DISK}"
    return
  fi
  local source parent
  source=$(findmnt -n -o SOURCE --target / 2>/dev/null || true)
  [[ ${source} == /dev/* ]] || return 0
  parent=$(lsblk -n -d -o PKNAME -- "${source}" 2>/dev/null | head -n 1 || true)
  if [[ -n ${parent} ]]; then
    echo "/dev/${parent}"
  else
    readlink -f -- "${source}"
  fi
}

# True if the device or one of its partitions is mounted (or used as swap) anywhere other than
# the data mount point.
in_use_elsewhere() {
  local target
  while IFS= read -r target; do
    [[ -z ${target} || ${target} == "${mount_point}" ]] && continue
    return 0
  done < <(lsblk -n -r -o MOUNTPOINT -- "$1" 2>/dev/null || true)
  return 1
}

# The data volume candidates present now, one resolved device per line.
candidates() {
  local root link dev
  local -A seen=()
  root=$(root_disk)
  local links=()
  shopt -s nullglob
  links=("${by_id_dir}"/nvme-Amazon_Elastic_Block_Store_vol*)
  shopt -u nullglob
  if ((${#links[@]} == 0)); then
    # Xen instances: the block device mapping name itself.
    read -r -a links <<<"${xen_devices}"
  fi
  for link in "${links[@]}"; do
    [[ ${link} == *-part* ]] && continue
    [[ -b ${link} ]] || continue
    dev=$(readlink -f -- "${link}")
    [[ -n ${seen[${dev}]:-} ]] && continue
    seen[${dev}]=1
    [[ ${dev} == "${root}" ]] && continue
    case $(lsblk -n -d -o TYPE -- "${dev}" 2>/dev/null || true) in
      disk | loop) ;; # loop: ami/check.sh's test devices
      *) continue ;;
    esac
    in_use_elsewhere "${dev}" && continue
    echo "${dev}"
  done
}

# Prints the data device, waiting up to $wait_seconds for it.
find_device() {
  local deadline=$((SECONDS + wait_seconds)) named="" found=()
  if [[ -s ${device_file} ]]; then
    named=$(tr -d '[:space:]' <"${device_file}")
    log "using the device named in ${device_file}: ${named}"
  fi
  while true; do
    settle
    if [[ -n ${named} ]]; then
      if [[ -b ${named} ]]; then
        local dev
        dev=$(readlink -f -- "${named}")
        if [[ ${dev} == "$(root_disk)" ]] || in_use_elsewhere "${dev}"; then
          die "${named} (${dev}) is the root disk or mounted elsewhere: not using it as the data volume"
        fi
        echo "${dev}"
        return 0
      fi
    else
      mapfile -t found < <(candidates)
      if ((${#found[@]} == 1)); then
        echo "${found[0]}"
        return 0
      elif ((${#found[@]} > 1)); then
        # Several blank EBS volumes: prefer one we formatted before, else refuse to guess.
        local dev labelled=()
        for dev in "${found[@]}"; do
          if [[ $(blkid -p -o value -s LABEL -- "${dev}" 2>/dev/null || true) == "${fs_label}" ]]; then
            labelled+=("${dev}")
          fi
        done
        if ((${#labelled[@]} == 1)); then
          echo "${labelled[0]}"
          return 0
        fi
        die "several EBS volumes besides the root disk (${found[*]}); name the data volume in ${device_file}"
      fi
    fi
    if ((SECONDS >= deadline)); then
      die "no data volume appeared within ${wait_seconds}s${named:+ (${named})}"
    fi
    sleep 2
  done
}

# The filesystem type on the device, "" for a device with no signature at all. Exits on a
# partition table, an unknown or an ambiguous signature: those are never formatted.
probe() {
  local dev=$1 out rc=0
  out=$(blkid -p -o export -- "${dev}" 2>/dev/null) || rc=$?
  case ${rc} in
    0) ;;
    2) return 0 ;; # nothing found: blank
    *) die "blkid cannot identify ${dev} (exit ${rc}): refusing to format it" ;;
  esac
  local type="" pttype="" usage="" line
  while IFS= read -r line; do
    case ${line} in
      TYPE=*) type=${line#TYPE=} ;;
      PTTYPE=*) pttype=${line#PTTYPE=} ;;
      USAGE=*) usage=${line#USAGE=} ;;
    esac
  done <<<"${out}"
  if [[ -n ${pttype} ]]; then
    die "${dev} has a ${pttype} partition table: refusing to format or mount it; name a device in ${device_file}"
  fi
  if [[ -z ${type} || ${usage} != filesystem ]]; then
    die "${dev} has a signature that is not a filesystem (${type:-unknown}, ${usage:-?}): refusing to format it"
  fi
  echo "${type}"
}

make_filesystem() {
  local dev=$1
  log "${dev} is blank: making ${fs_type} (label ${fs_label})"
  case ${fs_type} in
    # No discard: a new EBS volume has nothing to trim, and discarding a large one takes minutes.
    xfs) mkfs.xfs -q -K -L "${fs_label}" -- "${dev}" ;;
    ext4) mkfs.ext4 -q -E nodiscard -m 0 -L "${fs_label}" -- "${dev}" ;;
    *) die "unsupported LOGBOOK_DATA_FS_TYPE ${fs_type} (xfs or ext4)" ;;
  esac
  settle
}

# Replaces the fstab entries for the mount point with one for this UUID (atomically; no write
# when the entry is already there).
write_fstab() {
  local uuid=$1 type=$2 pass=2
  [[ ${type} == xfs ]] && pass=0 # fsck.xfs does nothing; xfs repairs itself on mount
  local entry="UUID=${uuid} ${mount_point} ${type} defaults,noatime,nofail 0 ${pass}"
  local comment="# logbook data volume (ami/scripts/data-volume.sh)"
  local others=() line matching=0 same=0 fields
  if [[ -e ${fstab} ]]; then
    while IFS= read -r line || [[ -n ${line} ]]; do
      [[ ${line} == "${comment}" ]] && continue
      read -r -a fields <<<"${line}"
      if [[ ${fields[0]:-} != \#* && ${fields[1]:-} == "${mount_point}" ]]; then
        matching=$((matching + 1))
        [[ ${line} == "${entry}" ]] && same=1
        continue
      fi
      others+=("${line}")
    done <"${fstab}"
  fi
  if ((matching == 1 && same == 1)); then
    return 0
  fi
  ((matching > 0)) && log "replacing ${matching} fstab entr(y/ies) for ${mount_point}"
  local tmp
  tmp=$(mktemp "${fstab}.logbook.XXXXXX")
  {
    if ((${#others[@]} > 0)); then
      printf '%s\n' "${others[@]}"
    fi
    echo "${comment}"
    echo "${entry}"
  } >"${tmp}"
  chmod 0644 "${tmp}"
  mv -f -- "${tmp}" "${fstab}"
  log "fstab: ${entry}"
}

main() {
  local dev type uuid
  dev=$(find_device)
  log "data volume: ${dev}"
  type=$(probe "${dev}")
  if [[ -z ${type} ]]; then
    make_filesystem "${dev}"
    type=$(probe "${dev}")
    [[ -n ${type} ]] || die "no filesystem on ${dev} after mkfs"
  else
    log "${dev} already has ${type}: keeping it"
  fi
  uuid=$(blkid -p -o value -s UUID -- "${dev}" 2>/dev/null || true)
  [[ -n ${uuid} ]] || die "no filesystem UUID on ${dev}"

  write_fstab "${uuid}" "${type}"

  mkdir -p -- "${mount_point}"
  if findmnt -n --mountpoint "${mount_point}" >/dev/null 2>&1; then
    local mounted
    mounted=$(findmnt -n -o SOURCE --mountpoint "${mount_point}" | head -n 1)
    [[ $(readlink -f -- "${mounted}") == "${dev}" ]] ||
      die "${mount_point} is already a mount of ${mounted}, not of the data volume ${dev}"
    log "${mount_point} already mounted"
  else
    # By the fstab entry just written, so the entry is what gets tested. systemd may mount it
    # from fstab at the same moment on a reboot: a failure is fine if the mount is there now.
    if ! mount --fstab "${fstab}" -- "${mount_point}"; then
      findmnt -n --mountpoint "${mount_point}" >/dev/null 2>&1 || die "cannot mount ${dev} at ${mount_point}"
    fi
    log "mounted ${dev} (UUID ${uuid}) at ${mount_point}"
  fi

  # The top directory only; the whole tree only if it belongs to someone else (a volume written
  # by an image whose logbook user had another uid).
  local want_user=${owner%%:*}
  if [[ $(stat -c %U -- "${mount_point}") != "${want_user}" ]]; then
    log "handing ${mount_point} to ${owner}"
    chown -R -- "${owner}" "${mount_point}"
  fi
  chown -- "${owner}" "${mount_point}"
  chmod 0750 -- "${mount_point}"
}

main "$@"
