resource "aws_s3_bucket" "snapshots" {
  #checkov:skip=CKV_AWS_18:Server access logging is optional (snapshot_access_log_bucket, off by default): it needs an existing SSE-S3 log bucket in the region that this module does not own, and only the node role uses this bucket.
  #checkov:skip=CKV_AWS_144:A cross-region copy is a disaster-recovery choice outside this single-region module (second-region provider, destination bucket, replication role). Raft keeps 3 replicas across AZs and S3 stores objects across AZs; add replication on the bucket or pass an existing replicated one (create_snapshot_bucket = false).
  #checkov:skip=CKV_AWS_145:SSE-KMS with a customer key is optional (snapshot_kms_key_arn, which also grants the node role kms:Decrypt/GenerateDataKey); the default SSE-S3 (AES256) avoids per-request KMS cost and a key to manage.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events: the brokers are the only writers and readers and find objects through their manifests, so event notifications would have no target.
  count = var.create_snapshot_bucket ? 1 : 0

  bucket = local.snapshot_bucket_name
  tags   = merge(local.tags, { Name = local.snapshot_bucket_name })
}

resource "aws_s3_bucket_ownership_controls" "snapshots" {
  count = var.create_snapshot_bucket ? 1 : 0

  bucket = aws_s3_bucket.snapshots[0].bucket

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "snapshots" {
  count = var.create_snapshot_bucket ? 1 : 0

  bucket                  = aws_s3_bucket.snapshots[0].bucket
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "snapshots" {
  count = var.create_snapshot_bucket ? 1 : 0

  bucket = aws_s3_bucket.snapshots[0].bucket

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "snapshots" {
  count = var.create_snapshot_bucket ? 1 : 0

  bucket = aws_s3_bucket.snapshots[0].bucket

  # SSE-S3 by default; SSE-KMS with the given key (and an S3 Bucket Key) when one is set.
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.snapshot_kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.snapshot_kms_key_arn
    }
    bucket_key_enabled = var.snapshot_kms_key_arn != null
  }
}

# Optional server access logs into an existing log bucket.
resource "aws_s3_bucket_logging" "snapshots" {
  count = var.create_snapshot_bucket && var.snapshot_access_log_bucket != null ? 1 : 0

  bucket        = aws_s3_bucket.snapshots[0].bucket
  target_bucket = var.snapshot_access_log_bucket
  target_prefix = var.snapshot_access_log_prefix == null ? "${local.snapshot_bucket_name}/" : var.snapshot_access_log_prefix
}

resource "aws_s3_bucket_lifecycle_configuration" "snapshots" {
  count = var.create_snapshot_bucket ? 1 : 0

  bucket = aws_s3_bucket.snapshots[0].bucket

  rule {
    id     = "expire-noncurrent-and-abort-multipart"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.snapshot_noncurrent_expiry_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.snapshots]
}

resource "aws_s3_bucket_policy" "snapshots" {
  count = var.create_snapshot_bucket ? 1 : 0

  bucket = aws_s3_bucket.snapshots[0].bucket
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [local.snapshot_bucket_arn, "${local.snapshot_bucket_arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })

  # The public access block must exist first or a policy update can race it.
  depends_on = [aws_s3_bucket_public_access_block.snapshots]
}
