variable "name" {
  description = "Cluster name. Used as a prefix for resource names and as the value of the `logbook-cluster` tag that peers discover each other by."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "ami_id" {
  description = "AMI with the logbook binary, the `logbook` systemd unit and the first-boot script that formats and mounts the data volume at /var/lib/logbook."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8}([0-9a-f]{9})?$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "instance_type" {
  description = "EC2 instance type for broker nodes."
  type        = string
  default     = "m6i.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like m6i.large."
  }
}

variable "node_count" {
  description = "Number of broker nodes (odd, 3 to 9). Also the broker's bootstrap_expect and the ASG's desired/min/max size."
  type        = number
  default     = 3

  validation {
    condition     = var.node_count >= 3 && var.node_count <= 9 && var.node_count % 2 == 1
    error_message = "node_count must be odd and between 3 and 9 (Raft quorum)."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the nodes and the NLB. At least two, in different availability zones (checked at plan time)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2 && length(distinct(var.subnet_ids)) == length(var.subnet_ids) && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]{8}([0-9a-f]{9})?$", s))])
    error_message = "subnet_ids must hold at least two distinct subnet IDs (subnet-...)."
  }
}

variable "vpc_id" {
  description = "VPC the subnets belong to."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8}([0-9a-f]{9})?$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "data_volume_size_gb" {
  description = "Size of the encrypted EBS data volume (mounted at /var/lib/logbook), in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.data_volume_size_gb >= 10 && var.data_volume_size_gb <= 16384 && floor(var.data_volume_size_gb) == var.data_volume_size_gb
    error_message = "data_volume_size_gb must be a whole number between 10 and 16384."
  }
}

variable "data_volume_type" {
  description = "EBS volume type of the data volume."
  type        = string
  default     = "gp3"

  validation {
    condition     = contains(["gp3", "io2"], var.data_volume_type)
    error_message = "data_volume_type must be gp3 or io2."
  }
}

variable "data_volume_device_name" {
  description = "Device name of the data volume; must match what the AMI's first-boot script formats and mounts."
  type        = string
  default     = "/dev/xvdb"

  validation {
    condition     = can(regex("^/dev/(xvd|sd)[b-z]$", var.data_volume_device_name))
    error_message = "data_volume_device_name must look like /dev/xvdb or /dev/sdb."
  }
}

variable "client_cidrs" {
  description = "CIDR blocks allowed to reach the gRPC client port (7400) through the NLB (client IPs are preserved, so nodes see them)."
  type        = list(string)

  validation {
    condition     = length(var.client_cidrs) > 0 && alltrue([for c in var.client_cidrs : can(cidrnetmask(c))])
    error_message = "client_cidrs must be a non-empty list of IPv4 CIDR blocks."
  }
}

variable "admin_cidrs" {
  description = "CIDR blocks allowed to reach the admin HTTP port (7480: /healthz, /readyz, metrics). May be empty."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs must be IPv4 CIDR blocks and must not include 0.0.0.0/0."
  }
}

variable "nlb_internal" {
  description = "Whether the client NLB is internal (true) or internet-facing (false; the subnets must then be public)."
  type        = bool
  default     = true

  validation {
    condition     = var.nlb_internal != null
    error_message = "nlb_internal must be true or false."
  }
}

variable "nlb_deletion_protection" {
  description = "Deletion protection on the client NLB. Its DNS name is the clients' bootstrap address and a new NLB gets a new one, so it is on by default: turn it off (and apply) before destroying the cluster or changing anything that replaces the NLB (such as name)."
  type        = bool
  default     = true

  validation {
    condition     = var.nlb_deletion_protection != null
    error_message = "nlb_deletion_protection must be true or false."
  }
}

variable "create_snapshot_bucket" {
  description = "Create the S3 snapshot bucket (true) or use the existing bucket named by snapshot_bucket_name (false)."
  type        = bool
  default     = true

  validation {
    condition     = var.create_snapshot_bucket != null
    error_message = "create_snapshot_bucket must be true or false."
  }
}

variable "snapshot_bucket_name" {
  description = "Snapshot bucket name. Required when create_snapshot_bucket is false; when creating, defaults to <name>-snapshots-<account id>."
  type        = string
  default     = null

  validation {
    condition     = var.snapshot_bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.snapshot_bucket_name))
    error_message = "snapshot_bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)."
  }
}

variable "snapshot_prefix" {
  description = "Key prefix for snapshots inside the bucket (no leading or trailing slash). The nodes may only touch keys under it."
  type        = string
  default     = "logbook"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.snapshot_prefix))
    error_message = "snapshot_prefix must be a non-empty key prefix without leading/trailing slashes, e.g. logbook or prod/logbook."
  }
}

variable "snapshot_bucket_region" {
  description = "Region of the snapshot bucket, written as s3_region. Defaults to the provider's region (right for a created bucket); set it for an existing bucket elsewhere."
  type        = string
  default     = null

  validation {
    condition     = var.snapshot_bucket_region == null || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.snapshot_bucket_region))
    error_message = "snapshot_bucket_region must look like eu-west-1."
  }
}

variable "snapshot_noncurrent_expiry_days" {
  description = "Days after which noncurrent (overwritten or deleted) snapshot object versions expire in a created bucket. Current objects are managed by the broker (snapshot_retain)."
  type        = number
  default     = 30

  validation {
    condition     = var.snapshot_noncurrent_expiry_days >= 1 && floor(var.snapshot_noncurrent_expiry_days) == var.snapshot_noncurrent_expiry_days
    error_message = "snapshot_noncurrent_expiry_days must be a whole number of at least 1."
  }
}

variable "snapshot_kms_key_arn" {
  description = "Optional KMS key ARN (key/..., not an alias) the snapshot objects are encrypted with. With a created bucket, its default encryption becomes SSE-KMS with this key and an S3 Bucket Key (fewer KMS requests); with an existing bucket, set it to the key that bucket uses. Either way the node role may use the key for kms:Decrypt and kms:GenerateDataKey, only through S3 (kms:ViaService). The key must be in the bucket's region and its key policy must let IAM policies of this account grant its use (the default key policy does). null (default): SSE-S3 (AES256), no KMS request cost or key to manage."
  type        = string
  default     = null

  validation {
    condition     = var.snapshot_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.snapshot_kms_key_arn))
    error_message = "snapshot_kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), not an alias."
  }
}

variable "snapshot_access_log_bucket" {
  description = "Optional existing bucket that receives S3 server access logs of the created snapshot bucket (only with create_snapshot_bucket). It must be in the same region, let logging.s3.amazonaws.com write to it (bucket policy) and use SSE-S3, not SSE-KMS. null (default): no access logs (they cost storage and one log object per batch of requests; CloudTrail S3 data events are the alternative)."
  type        = string
  default     = null

  validation {
    condition     = var.snapshot_access_log_bucket == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.snapshot_access_log_bucket))
    error_message = "snapshot_access_log_bucket must be a valid S3 bucket name."
  }
}

variable "snapshot_access_log_prefix" {
  description = "Key prefix of the access logs in snapshot_access_log_bucket. null (default): <snapshot bucket name>/."
  type        = string
  default     = null

  validation {
    condition     = var.snapshot_access_log_prefix == null || can(regex("^[A-Za-z0-9!_.*'()/-]{1,512}$", var.snapshot_access_log_prefix))
    error_message = "snapshot_access_log_prefix must be 1-512 characters of letters, digits and !_.*'()/-."
  }
}

variable "tls_secret_arn" {
  description = "Optional Secrets Manager secret ARN holding the TLS material. When set, the nodes may read exactly this secret and its ARN is written to /etc/logbook/tls_secret_arn for the AMI to fetch."
  type        = string
  default     = null

  validation {
    condition     = var.tls_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.tls_secret_arn))
    error_message = "tls_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "tls_peer_server_name" {
  description = "With TLS: the DNS name every node certificate carries and nodes check in each other's certificates (peers are dialled by private IP, which no certificate can list in advance). Written to logbook.toml as tls_peer_server_name."
  type        = string
  default     = "logbook-node"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", var.tls_peer_server_name))
    error_message = "tls_peer_server_name must be a DNS name (lowercase letters, digits, dots and hyphens)."
  }
}

variable "grpc_port" {
  description = "Broker gRPC port (clients and Raft between nodes)."
  type        = number
  default     = 7400

  validation {
    condition     = var.grpc_port >= 1024 && var.grpc_port <= 65535
    error_message = "grpc_port must be between 1024 and 65535."
  }
}

variable "admin_port" {
  description = "Broker admin HTTP port (/healthz, /readyz)."
  type        = number
  default     = 7480

  validation {
    condition     = var.admin_port >= 1024 && var.admin_port <= 65535
    error_message = "admin_port must be between 1024 and 65535."
  }
}

variable "gossip_port" {
  description = "Broker gossip port (TCP and UDP, between nodes only)."
  type        = number
  default     = 7946

  validation {
    condition     = var.gossip_port >= 1024 && var.gossip_port <= 65535
    error_message = "gossip_port must be between 1024 and 65535."
  }
}

variable "health_check_grace_period" {
  description = "Seconds the ASG waits after launch before acting on the NLB health check."
  type        = number
  default     = 300

  validation {
    condition     = var.health_check_grace_period >= 60 && var.health_check_grace_period <= 3600
    error_message = "health_check_grace_period must be between 60 and 3600 seconds."
  }
}

variable "instance_warmup" {
  description = "Seconds an instance refresh waits after a new node is healthy before replacing the next one (time to catch up on Raft logs)."
  type        = number
  default     = 300

  validation {
    condition     = var.instance_warmup >= 0 && var.instance_warmup <= 3600
    error_message = "instance_warmup must be between 0 and 3600 seconds."
  }
}

variable "tags" {
  description = "Tags added to every resource (and propagated to instances). Must not set logbook-cluster, which the module owns."
  type        = map(string)
  default     = {}

  validation {
    condition     = !contains(keys(var.tags), "logbook-cluster")
    error_message = "tags must not contain the logbook-cluster key; it is set from name."
  }
}
