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
        Sid      = "ReadWriteSnapshotObjects"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
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
  }
}
