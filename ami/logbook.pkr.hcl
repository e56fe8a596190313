# The logbook broker AMI: Debian 12 (official AMI) + the release binary, a `logbook` system user,
# the hardened `logbook` systemd unit (installed, not enabled: the Terraform user data enables it
# after writing /etc/logbook/logbook.toml) and the first-boot unit that formats and mounts the EBS
# data volume at /var/lib/logbook. See ami/README.md.
#
# Build: packer init ami/ && PKR_VAR_version=v1.2.3 PKR_VAR_binary_path=$PWD/target/release/logbook packer build ami/

locals {
  # UTC build time: the same version can be baked again under a new name.
  timestamp   = formatdate("YYYYMMDDhhmmss", timestamp())
  binary_path = var.binary_path != "" ? var.binary_path : "${path.root}/../target/release/logbook"
  # Where the provisioners stage their uploads on the build instance.
  staging = "/tmp/logbook-ami"
  tags = merge(var.tags, {
    Name        = "${var.ami_name_prefix}-${var.version}"
    Application = "logbook"
    Version     = var.version
    BuiltBy     = "packer"
  })
}

source "amazon-ebs" "logbook" {
  region        = var.region
  instance_type = var.instance_type
  subnet_id     = var.subnet_id
  ssh_username  = var.ssh_username
  ssh_timeout   = "10m"

  source_ami_filter {
    filters = {
      name                = var.source_ami_name
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = [var.source_ami_owner]
    most_recent = true
  }

  ami_name        = "${var.ami_name_prefix}-${var.version}-${local.timestamp}"
  ami_description = "logbook broker ${var.version} on Debian 12 (x86_64)"
  encrypt_boot    = var.encrypt_boot
  kms_key_id      = var.kms_key_id

  # Instances launched from the AMI default to IMDSv2 only (the launch template also requires it).
  imds_support = "v2.0"

  # The build instance itself answers IMDSv2 only.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags = merge(local.tags, {
    BaseAMI     = "{{ .SourceAMI }}"
    BaseAMIName = "{{ .SourceAMIName }}"
  })
  snapshot_tags   = local.tags
  run_tags        = merge(local.tags, { Name = "packer-${var.ami_name_prefix}-${var.version}" })
  run_volume_tags = local.tags
}

build {
  name    = "logbook"
  sources = ["source.amazon-ebs.logbook"]

  # Directory uploads need their destination to exist.
  provisioner "shell" {
    inline = ["mkdir -p ${local.staging}/files ${local.staging}/scripts"]
  }

  provisioner "file" {
    source      = local.binary_path
    destination = "${local.staging}/logbook"
  }

  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "${local.staging}/files"
  }

  provisioner "file" {
    source      = "${path.root}/scripts/"
    destination = "${local.staging}/scripts"
  }

  provisioner "shell" {
    script           = "${path.root}/scripts/provision.sh"
    environment_vars = ["LOGBOOK_VERSION=${var.version}", "STAGING=${local.staging}"]
    execute_command  = "chmod +x '{{ .Path }}'; sudo env {{ .Vars }} bash '{{ .Path }}'"
  }
}
