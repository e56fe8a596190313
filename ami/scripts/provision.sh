#!/bin/bash
# Runs once on the Packer build instance, as root (logbook.pkr.hcl's last provisioner), with the
# uploads in $STAGING: logbook (the release binary), files/ (systemd units), scripts/.
# Installs the broker, its user, directories, units and tools; leaves logbook.service disabled
# (the Terraform user data enables it) and cleans up.
set -euo pipefail
: "${STAGING:?}" "${LOGBOOK_VERSION:?}"

export DEBIAN_FRONTEND=noninteractive
apt_get=(apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# cloud-init may still be configuring the build instance (and holding the apt lock).
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init status --wait >/dev/null 2>&1 || true
fi

echo "== packages"
"${apt_get[@]}" update
"${apt_get[@]}" upgrade
# awscli: fetch-tls.sh (Secrets Manager); python3: its JSON handling; curl: the user data's IMDS
# calls; xfsprogs: the data volume's filesystem (e2fsprogs is always there for ext4).
"${apt_get[@]}" install --no-install-recommends awscli python3 curl ca-certificates xfsprogs

echo "== logbook user"
if ! getent group logbook >/dev/null; then
  groupadd --system logbook
fi
if ! getent passwd logbook >/dev/null; then
  useradd --system --gid logbook --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "logbook broker" logbook
fi

echo "== binary"
install -m 0755 -o root -g root -- "${STAGING}/logbook" /usr/local/bin/logbook
# Fails the bake if the binary cannot run here (another architecture, a newer glibc than
# Debian 12's).
/usr/local/bin/logbook --version

echo "== directories, scripts and units"
install -d -m 0755 -o root -g root /etc/logbook /usr/local/libexec/logbook
# The data volume's mount point; the first-boot script mounts the volume over it.
install -d -m 0750 -o logbook -g logbook /var/lib/logbook
install -m 0755 -o root -g root -- "${STAGING}/scripts/data-volume.sh" "${STAGING}/scripts/fetch-tls.sh" \
  /usr/local/libexec/logbook/
install -m 0644 -o root -g root -- "${STAGING}/files/logbook.service" \
  "${STAGING}/files/logbook-data-volume.service" /etc/systemd/system/
printf 'logbook %s (AMI built %s)\n' "${LOGBOOK_VERSION}" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  >/etc/logbook/ami-release

# Index files are memory-mapped per segment: many partitions times segments can pass the
# default limit of 65530 mappings.
printf '%s\n' '# logbook: memory-mapped segment indexes' 'vm.max_map_count = 262144' \
  >/etc/sysctl.d/90-logbook.conf

systemctl daemon-reload
# Only complaints about our units count (verify also loads the system's units they pull in).
verify_out=$(systemd-analyze verify /etc/systemd/system/logbook.service \
  /etc/systemd/system/logbook-data-volume.service 2>&1 | grep -i logbook || true)
if [[ -n ${verify_out} ]]; then
  echo "${verify_out}" >&2
  echo "systemd-analyze verify reported problems with the logbook units" >&2
  exit 1
fi
systemctl enable logbook-data-volume.service
# Started by the user data (`systemctl enable --now logbook`) once logbook.toml exists.
systemctl disable logbook.service
if [[ $(systemctl is-enabled logbook.service || true) != disabled ]]; then
  echo "logbook.service must be disabled in the AMI" >&2
  exit 1
fi

echo "== cleanup"
"${apt_get[@]}" autoremove --purge
apt-get clean
rm -rf /var/lib/apt/lists/* "${STAGING}"
# Per-instance identity must not be baked in: an empty machine-id is regenerated at boot
# (without "first boot" semantics), and the random seed is refreshed.
truncate -s 0 /etc/machine-id
if [[ -f /var/lib/dbus/machine-id && ! -L /var/lib/dbus/machine-id ]]; then
  ln -sf /etc/machine-id /var/lib/dbus/machine-id
fi
rm -f /var/lib/systemd/random-seed
# The build's temporary SSH key (cloud-init installs the instance's own key at first boot).
if [[ -n ${SUDO_USER:-} ]]; then
  home=$(getent passwd "${SUDO_USER}" | cut -d: -f6)
  rm -f -- "${home}/.ssh/authorized_keys"
fi
echo "logbook ${LOGBOOK_VERSION} installed"
