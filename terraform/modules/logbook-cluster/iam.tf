resource "aws_iam_role" "nodes" {
  name_prefix = "${var.name}-node-"
  description = "logbook broker nodes of cluster ${var.name}"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })

  tags = local.tags
}

resource "aws_iam_instance_profile" "nodes" {
  name_prefix = "${var.name}-node-"
  role        = aws_iam_role.nodes.name
  tags        = local.tags
}

locals {
  node_policy_statements = concat(
    [
      {
        Sid      = "ListSnapshotPrefix"
        Effect   = "Allow"
        Action   = "s3:ListBucket"
        Resource = local.snapshot_bucket_arn
        Condition = {
          StringLike = { "s3:prefix" = [var.snapshot_prefix, "${var.snapshot_prefix}/*"] }
        }
      },
      {
        # s3:PutObject also covers CreateMultipartUpload, UploadPart and CompleteMultipartUpload
        # (files over 8 MiB go up in parts); aborting a failed upload needs its own action.
        Sid      = "ReadWriteSnapshotObjects"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
        Resource = "${local.snapshot_bucket_arn}/${var.snapshot_prefix}/*"
      },
      {
        # join_aws_tag peer discovery. ec2:DescribeInstances supports no resource-level
        # permissions or tag conditions, so the resource must be "*"; it is read-only.
        Sid      = "DiscoverPeersByTag"
        Effect   = "Allow"
        Action   = "ec2:DescribeInstances"
        Resource = "*"
      },
    ],
    var.snapshot_kms_key_arn == null ? [] : [
      {
        # SSE-KMS objects: S3 asks KMS for data keys (PutObject, multipart) and to decrypt
        # them (GetObject, CompleteMultipartUpload) with the caller's permissions.
        Sid      = "UseSnapshotKeyThroughS3"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = var.snapshot_kms_key_arn
        Condition = {
          StringEquals = { "kms:ViaService" = "s3.${local.s3_region}.${data.aws_partition.current.dns_suffix}" }
        }
      },
    ],
    var.tls_secret_arn == null ? [] : [
      {
        Sid      = "ReadTlsSecret"
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = var.tls_secret_arn
      },
    ],
  )
}

resource "aws_iam_role_policy" "nodes" {
  name = "logbook-node"
  role = aws_iam_role.nodes.id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = local.node_policy_statements
  })

  lifecycle {
    precondition {
      condition     = var.create_snapshot_bucket || var.snapshot_bucket_name != null
      error_message = "snapshot_bucket_name is required when create_snapshot_bucket is false."
    }

    # Checked here, on a resource that always exists: the logging resource has count 0 then.
    precondition {
      condition     = var.create_snapshot_bucket || var.snapshot_access_log_bucket == null
      error_message = "snapshot_access_log_bucket only applies to a created bucket (create_snapshot_bucket = true); configure logging on an existing bucket where it is managed."
    }
  }
}
