output "nlb_dns_name" {
  description = "DNS name of the client NLB (point clients at <this>:7400)."
  value       = aws_lb.clients.dns_name
}

output "asg_name" {
  description = "Name of the nodes' auto-scaling group."
  value       = aws_autoscaling_group.this.name
}

output "snapshot_bucket_name" {
  description = "Name of the S3 snapshot bucket (created or existing)."
  value       = var.create_snapshot_bucket ? aws_s3_bucket.snapshots[0].bucket : local.snapshot_bucket_name
}

output "snapshot_store" {
  description = "The snapshot_store URL the nodes are configured with."
  value       = local.snapshot_store
}

output "security_group_ids" {
  description = "Security group IDs, by role."
  value = {
    nodes = aws_security_group.nodes.id
  }
}

output "node_role_arn" {
  description = "ARN of the nodes' IAM role."
  value       = aws_iam_role.nodes.arn
}

output "launch_template_id" {
  description = "ID of the nodes' launch template."
  value       = aws_launch_template.this.id
}
