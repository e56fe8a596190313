resource "aws_s3_bucket" "snapshots" {
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

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
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
