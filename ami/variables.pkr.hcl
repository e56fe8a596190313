# Inputs of the logbook broker AMI. Set them with PKR_VAR_<name> or -var name=value.
# Validations use only functions that Debian's packer 1.6.6 also has (no regex), so the
# offline check (ami/check.sh) exercises them too.

variable "version" {
  type        = string
  description = "Release being baked, usually the git tag (v1.2.3). Goes into the AMI name and the Version tag. Required."

  validation {
    condition     = length(var.version) > 0 && length(var.version) <= 64 && length(split(" ", var.version)) == 1 && length(split("+", var.version)) == 1
    error_message = "The version must be 1-64 characters without spaces or '+' (it is part of the AMI name)."
  }
}

variable "binary_path" {
  type        = string
  default     = ""
  description = "The release build of the logbook binary (linux x86_64, built for a glibc no newer than Debian 12's 2.36). Empty means <this directory>/../target/release/logbook; the release pipelines always pass it explicitly."
}

variable "region" {
  type        = string
  default     = env("AWS_REGION")
  description = "AWS region to build the AMI in (the region the cluster is deployed to). Defaults to $AWS_REGION."

  validation {
    condition     = length(var.region) > 0
    error_message = "The region is empty: set AWS_REGION or PKR_VAR_region."
  }
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "Instance type of the temporary build instance (x86_64; a Nitro type, like the brokers')."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build instance; empty means the region's default VPC. It must reach Debian's package mirrors and be reachable by Packer over SSH."
}

variable "ssh_username" {
  type        = string
  default     = "admin"
  description = "Login user of the Debian base AMI."
}

variable "source_ami_owner" {
  type        = string
  default     = "136693071363"
  description = "Owner of the base AMI: the Debian project's official AWS account."
}

variable "source_ami_name" {
  type        = string
  default     = "debian-12-amd64-*"
  description = "Name filter of the base AMI (the newest match is used): Debian 12 (bookworm), x86_64."
}

variable "ami_name_prefix" {
  type        = string
  default     = "logbook"
  description = "The AMI is named <prefix>-<version>-<UTC timestamp>."
}

variable "encrypt_boot" {
  type        = bool
  default     = true
  description = "Encrypt the AMI's root snapshot."
}

variable "kms_key_id" {
  type        = string
  default     = ""
  description = "KMS key for the root snapshot; empty means the account's default EBS key (aws/ebs). Use a customer-managed key to share the AMI with other accounts."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags for the AMI, its snapshot and the build instance."
}
