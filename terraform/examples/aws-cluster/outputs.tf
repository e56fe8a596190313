output "bootstrap_address" {
  description = "Client bootstrap address (NLB DNS name and gRPC port)."
  value       = "${module.logbook.nlb_dns_name}:7400"
}

output "asg_name" {
  description = "Auto-scaling group of the nodes (start instance refreshes here)."
  value       = module.logbook.asg_name
}

output "snapshot_bucket_name" {
  description = "S3 bucket holding the snapshots."
  value       = module.logbook.snapshot_bucket_name
}

output "security_group_ids" {
  description = "Security group IDs of the cluster."
  value       = module.logbook.security_group_ids
}

output "node_role_arn" {
  description = "IAM role ARN of the nodes."
  value       = module.logbook.node_role_arn
}
