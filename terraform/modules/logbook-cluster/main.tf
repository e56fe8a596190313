data "aws_partition" "current" {}

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

# One lookup per subnet: the AZs (the cluster must span at least two) and the CIDR blocks the
# NLB's health checks come from.
data "aws_subnet" "selected" {
  for_each = toset(var.subnet_ids)
  id       = each.value
}

locals {
  cluster_tag_key = "logbook-cluster"

  tags = merge(var.tags, {
    (local.cluster_tag_key) = var.name
    "managed-by"            = "terraform"
  })

  subnet_azs   = distinct([for s in data.aws_subnet.selected : s.availability_zone])
  subnet_cidrs = sort([for s in data.aws_subnet.selected : s.cidr_block])

  snapshot_bucket_name = coalesce(var.snapshot_bucket_name, "${var.name}-snapshots-${data.aws_caller_identity.current.account_id}")
  # Built from the name (not from aws_s3_bucket.arn) so it is known at plan time and also works
  # for an existing bucket.
  snapshot_bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${local.snapshot_bucket_name}"
  s3_region           = var.snapshot_bucket_region == null ? data.aws_region.current.name : var.snapshot_bucket_region
  snapshot_store      = "s3://${local.snapshot_bucket_name}/${var.snapshot_prefix}"

  # Raft needs a majority: replace one node at a time. The ASG may replace
  # n - ceil(n * pct / 100) instances at once; floor((n - 1) * 100 / n) makes that exactly 1
  # (3 -> 66, 5 -> 80, 7 -> 85, 9 -> 88).
  min_healthy_percentage = floor((var.node_count - 1) * 100 / var.node_count)
}
