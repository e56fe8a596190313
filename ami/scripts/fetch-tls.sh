#!/bin/bash
# TLS material for the logbook broker from AWS Secrets Manager. Run as root by logbook.service
# (ExecStartPre=+) before every start; running it by hand rotates the certificates (the broker
# reloads changed TLS files within a second).
#
# Does nothing unless /etc/logbook/tls_secret_arn exists (the Terraform user data writes it when
# the cluster has a tls_secret_arn). The secret's SecretString is JSON with PEM strings:
#   {"ca": "-----BEGIN CERTIFICATE-----...", "cert": "-----BEGIN CERTIFICATE-----...",
#    "key": "-----BEGIN PRIVATE KEY-----..."}
# written (each file replaced atomically) to
#   /etc/logbook/tls/ca.pem    0644 root     CA(s) that sign client and peer certificates
#   /etc/logbook/tls/node.pem  0644 root     this node's certificate chain
#   /etc/logbook/tls/node.key  0600 logbook  its private key
# and /etc/logbook/logbook.env gets LOGBOOK_TLS_CA_FILE, LOGBOOK_TLS_CERT_FILE and
# LOGBOOK_TLS_KEY_FILE (other lines in it are kept).
#
# The LOGBOOK_* variables below exist for ami/check.sh (a fake aws CLI, a scratch directory).
set -euo pipefail

conf_dir=${LOGBOOK_CONF_DIR:-/etc/logbook}
key_owner=${LOGBOOK_TLS_KEY_OWNER:-logbook:logbook}
aws_cli=${LOGBOOK_AWS_CLI:-aws}
attempts=${LOGBOOK_TLS_ATTEMPTS:-6}

arn_file=${conf_dir}/tls_secret_arn
tls_dir=${conf_dir}/tls
env_file=${conf_dir}/logbook.env

log() { echo "fetch-tls: $*" >&2; }

if [[ ! -e ${arn_file} ]]; then
  exit 0
fi
arn=$(tr -d '[:space:]' <"${arn_file}")
arn_pattern='^arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):[0-9]{12}:secret:.+$'
if [[ ! ${arn} =~ ${arn_pattern} ]]; then
  log "ERROR: ${arn_file} does not hold a Secrets Manager secret ARN: '${arn}'"
  exit 1
fi
# The secret's own region (the instance may be elsewhere, and the CLI has no default region).
region=${BASH_REMATCH[1]}

install -d -m 0755 -o root -g root -- "${tls_dir}"
work=$(mktemp -d "${tls_dir}/.fetch.XXXXXX")
trap 'rm -rf -- "${work}"' EXIT

# Credentials come from the instance profile; retry while IMDS, IAM or the network settle.
delay=2
for ((try = 1; ; try++)); do
  if "${aws_cli}" secretsmanager get-secret-value --region "${region}" --secret-id "${arn}" \
    --output json >"${work}/response.json" 2>"${work}/aws.err"; then
    break
  fi
  if ((try >= attempts)); then
    log "ERROR: cannot read ${arn}: $(tail -n 3 "${work}/aws.err")"
    exit 1
  fi
  log "reading ${arn} failed (try ${try}/${attempts}), retrying in ${delay}s"
  sleep "${delay}"
  delay=$((delay * 2))
done

# Parse, check and write the three files next to their final names, then rename each into
# place (the key first: a reader never sees a certificate without its key for long, and the
# broker keeps its previous TLS files until a complete set loads).
python3 - "${work}/response.json" "${tls_dir}" "${key_owner}" <<'PY'
import grp
import json
import os
import pwd
import sys

response_path, tls_dir, key_owner = sys.argv[1:4]
try:
    with open(response_path, encoding="utf-8") as f:
        secret = json.loads(json.load(f)["SecretString"])
except (KeyError, TypeError, ValueError) as e:
    sys.exit(f"fetch-tls: ERROR: the secret has no JSON SecretString: {e!r}")
if not isinstance(secret, dict):
    sys.exit("fetch-tls: ERROR: the SecretString is not a JSON object")

wanted = {
    "ca": ("ca.pem", "CERTIFICATE"),
    "cert": ("node.pem", "CERTIFICATE"),
    "key": ("node.key", "PRIVATE KEY"),
}
problems = []
for field, (_, marker) in wanted.items():
    value = secret.get(field)
    if not isinstance(value, str) or "-----BEGIN " not in value or marker not in value:
        problems.append(f"'{field}' must be a PEM string containing {marker}")
if problems:
    sys.exit("fetch-tls: ERROR: " + "; ".join(problems))

user, _, group = key_owner.partition(":")
uid = pwd.getpwnam(user).pw_uid
gid = grp.getgrnam(group or user).gr_gid

staged = []
for field in ("key", "ca", "cert"):
    name = wanted[field][0]
    text = secret[field].strip() + "\n"
    tmp = os.path.join(tls_dir, f".{name}.new")
    mode = 0o600 if field == "key" else 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        if field == "key":
            os.fchown(f.fileno(), uid, gid)
        else:
            os.fchown(f.fileno(), 0, 0)
        os.fchmod(f.fileno(), mode)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    staged.append((tmp, os.path.join(tls_dir, name)))
for tmp, final in staged:
    os.replace(tmp, final)
dir_fd = os.open(tls_dir, os.O_DIRECTORY)
try:
    os.fsync(dir_fd)
finally:
    os.close(dir_fd)
PY

# logbook.env: our three lines replace any earlier ones; everything else stays.
{
  if [[ -e ${env_file} ]]; then
    grep -v -E '^(LOGBOOK_TLS_CA_FILE|LOGBOOK_TLS_CERT_FILE|LOGBOOK_TLS_KEY_FILE)=' -- "${env_file}" || true
  fi
  echo "LOGBOOK_TLS_CA_FILE=${tls_dir}/ca.pem"
  echo "LOGBOOK_TLS_CERT_FILE=${tls_dir}/node.pem"
  echo "LOGBOOK_TLS_KEY_FILE=${tls_dir}/node.key"
} >"${work}/logbook.env"
chmod 0644 -- "${work}/logbook.env"
mv -f -- "${work}/logbook.env" "${env_file}"
log "TLS material from ${arn} is in ${tls_dir}"
