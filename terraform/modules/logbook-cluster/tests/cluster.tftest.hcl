mock_provider "aws" {
  source = "./tests/mocks"
}

# The mocked aws_subnet data source would put every subnet in one AZ; give each its own.
override_data {
  target = data.aws_subnet.selected["subnet-0aaaaaaaaaaaaaaa1"]
  values = {
    availability_zone = "eu-west-1a"
    cidr_block        = "10.0.1.0/24"
    vpc_id            = "vpc-0123456789abcdef0"
  }
}

override_data {
  target = data.aws_subnet.selected["subnet-0bbbbbbbbbbbbbbb2"]
  values = {
    availability_zone = "eu-west-1b"
    cidr_block        = "10.0.2.0/24"
    vpc_id            = "vpc-0123456789abcdef0"
  }
}

override_data {
  target = data.aws_subnet.selected["subnet-0ccccccccccccccc3"]
  values = {
    availability_zone = "eu-west-1c"
    cidr_block        = "10.0.3.0/24"
    vpc_id            = "vpc-0123456789abcdef0"
  }
}

variables {
  name          = "logbook-test"
  ami_id        = "ami-0123456789abcdef0"
  instance_type = "m6i.large"
  node_count    = 3
  vpc_id        = "vpc-0123456789abcdef0"
  subnet_ids    = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2", "subnet-0ccccccccccccccc3"]
  client_cidrs  = ["10.0.0.0/16"]
  admin_cidrs   = ["10.10.0.0/24"]
}

run "launch_template_hardening" {
  command = plan

  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 must be required."
  }

  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_put_response_hop_limit <= 2
    error_message = "IMDS hop limit must be 1 or 2."
  }

  assert {
    condition     = aws_launch_template.this.block_device_mappings[0].ebs[0].encrypted == "true"
    error_message = "The data volume must be encrypted."
  }

  assert {
    condition     = aws_launch_template.this.block_device_mappings[0].ebs[0].volume_type == "gp3"
    error_message = "The data volume must default to gp3."
  }

  assert {
    condition     = aws_launch_template.this.image_id == "ami-0123456789abcdef0"
    error_message = "The launch template must use the given AMI."
  }
}

run "user_data_config" {
  command = plan

  assert {
    condition = alltrue([for line in [
      "data_dir = \"/var/lib/logbook\"",
      "listen_addr = \"0.0.0.0:7400\"",
      "advertise_addr = \"$${PRIVATE_IP}:7400\"",
      "admin_addr = \"0.0.0.0:7480\"",
      "gossip_addr = \"0.0.0.0:7946\"",
      "gossip_advertise_addr = \"$${PRIVATE_IP}:7946\"",
      "bootstrap_expect = 3",
      "replication_factor = 3",
      "snapshot_store = \"s3://logbook-test-snapshots-123456789012/logbook\"",
      "s3_region = \"eu-west-1\"",
      "join_aws_tag = \"logbook-cluster=logbook-test\"",
      "systemctl enable --now logbook",
      "X-aws-ec2-metadata-token",
    ] : strcontains(base64decode(aws_launch_template.this.user_data), line)])
    error_message = "User data must write the broker config keys and start logbook."
  }

  assert {
    condition     = !strcontains(base64decode(aws_launch_template.this.user_data), "tls_peer_server_name")
    error_message = "Without TLS the user data must not set tls_peer_server_name."
  }
}

run "asg_rolling_refresh" {
  command = plan

  assert {
    condition     = aws_autoscaling_group.this.instance_refresh[0].strategy == "Rolling"
    error_message = "Instance refresh must be Rolling."
  }

  assert {
    condition     = aws_autoscaling_group.this.instance_refresh[0].preferences[0].min_healthy_percentage == 66
    error_message = "3 nodes: min healthy 66% so one node is replaced at a time."
  }

  assert {
    condition     = aws_autoscaling_group.this.min_size == 3 && aws_autoscaling_group.this.max_size == 3 && aws_autoscaling_group.this.desired_capacity == 3
    error_message = "ASG min/max/desired must equal node_count."
  }

  assert {
    condition     = aws_autoscaling_group.this.health_check_type == "ELB"
    error_message = "ASG must use the NLB health check."
  }

  assert {
    condition     = anytrue([for t in aws_autoscaling_group.this.tag : t.key == "logbook-cluster" && t.value == "logbook-test" && t.propagate_at_launch])
    error_message = "Instances must carry the logbook-cluster tag for peer discovery."
  }
}

run "asg_rolling_refresh_five_nodes" {
  command = plan

  variables {
    node_count = 5
  }

  assert {
    condition     = aws_autoscaling_group.this.instance_refresh[0].preferences[0].min_healthy_percentage == 80
    error_message = "5 nodes: min healthy 80% so one node is replaced at a time."
  }

  assert {
    condition     = strcontains(base64decode(aws_launch_template.this.user_data), "bootstrap_expect = 5")
    error_message = "bootstrap_expect must follow node_count."
  }
}

run "nlb_health_check" {
  command = plan

  assert {
    condition     = aws_lb_target_group.grpc.health_check[0].path == "/readyz" && aws_lb_target_group.grpc.health_check[0].port == "7480" && aws_lb_target_group.grpc.health_check[0].protocol == "HTTP"
    error_message = "Target group health check must be HTTP /readyz on 7480."
  }

  assert {
    condition     = aws_lb_target_group.grpc.port == 7400 && aws_lb_target_group.grpc.protocol == "TCP"
    error_message = "Target group must forward TCP 7400."
  }

  assert {
    condition     = aws_lb_listener.grpc.port == 7400 && aws_lb_listener.grpc.protocol == "TCP"
    error_message = "Listener must be TCP 7400."
  }

  assert {
    condition     = aws_lb.clients.internal == true
    error_message = "NLB must default to internal."
  }

  assert {
    condition     = aws_lb.clients.enable_deletion_protection == true
    error_message = "NLB deletion protection must default to on (its DNS name is the clients' bootstrap address)."
  }
}

run "security_groups" {
  command = plan

  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.grpc_clients : r.from_port == 7400 && r.to_port == 7400])
    error_message = "Client rule must only open 7400."
  }

  assert {
    condition     = join(",", sort([for r in aws_vpc_security_group_ingress_rule.admin_nlb_health : r.cidr_ipv4])) == "10.0.1.0/24,10.0.2.0/24,10.0.3.0/24"
    error_message = "Admin port must be open to the NLB subnets for health checks."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.peers["gossip_udp"].ip_protocol == "udp" && aws_vpc_security_group_ingress_rule.peers["gossip_tcp"].ip_protocol == "tcp" && aws_vpc_security_group_ingress_rule.peers["grpc"].from_port == 7400
    error_message = "Peers need gossip TCP+UDP and gRPC."
  }

  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.peers : r.cidr_ipv4 == null])
    error_message = "Peer rules must reference the node security group, not CIDRs."
  }
}

run "snapshot_bucket" {
  command = plan

  assert {
    condition = (
      aws_s3_bucket_public_access_block.snapshots[0].block_public_acls &&
      aws_s3_bucket_public_access_block.snapshots[0].block_public_policy &&
      aws_s3_bucket_public_access_block.snapshots[0].ignore_public_acls &&
      aws_s3_bucket_public_access_block.snapshots[0].restrict_public_buckets
    )
    error_message = "All four public access block settings must be true."
  }

  assert {
    condition     = aws_s3_bucket_versioning.snapshots[0].versioning_configuration[0].status == "Enabled"
    error_message = "Bucket versioning must be enabled."
  }

  assert {
    condition     = one([for r in aws_s3_bucket_server_side_encryption_configuration.snapshots[0].rule : r.apply_server_side_encryption_by_default[0].sse_algorithm]) == "AES256"
    error_message = "Bucket SSE must default to SSE-S3 (AES256)."
  }

  assert {
    condition     = length(aws_s3_bucket_logging.snapshots) == 0
    error_message = "Server access logging must be off unless snapshot_access_log_bucket is set."
  }

  assert {
    condition     = aws_s3_bucket_ownership_controls.snapshots[0].rule[0].object_ownership == "BucketOwnerEnforced"
    error_message = "Bucket ownership must be BucketOwnerEnforced."
  }

  assert {
    condition     = jsondecode(aws_s3_bucket_policy.snapshots[0].policy).Statement[0].Effect == "Deny" && jsondecode(aws_s3_bucket_policy.snapshots[0].policy).Statement[0].Condition.Bool["aws:SecureTransport"] == "false"
    error_message = "Bucket policy must deny non-TLS access."
  }

  assert {
    condition     = aws_s3_bucket_lifecycle_configuration.snapshots[0].rule[0].noncurrent_version_expiration[0].noncurrent_days == 30 && aws_s3_bucket_lifecycle_configuration.snapshots[0].rule[0].abort_incomplete_multipart_upload[0].days_after_initiation == 7
    error_message = "Lifecycle must expire noncurrent versions and abort incomplete uploads."
  }
}

run "iam_least_privilege" {
  command = plan

  assert {
    condition     = length(jsondecode(aws_iam_role_policy.nodes.policy).Statement) == 3
    error_message = "The node policy must have exactly the S3 list, S3 object and EC2 describe statements."
  }

  assert {
    condition = join(",", sort(one([
      for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : s if s.Sid == "ReadWriteSnapshotObjects"
    ]).Action)) == "s3:AbortMultipartUpload,s3:DeleteObject,s3:GetObject,s3:PutObject"
    error_message = "Object access must be Get/Put/Delete plus AbortMultipartUpload (multipart uploads of files over 8 MiB)."
  }

  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement :
      s.Resource == "*" ? s.Action == "ec2:DescribeInstances" : startswith(s.Resource, "arn:aws:s3:::logbook-test-snapshots-123456789012")
    ])
    error_message = "Only ec2:DescribeInstances may use *; everything else must be the snapshot bucket."
  }

  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : s if s.Action == "s3:ListBucket"
    ]).Condition.StringLike["s3:prefix"] == ["logbook", "logbook/*"]
    error_message = "ListBucket must be limited to the snapshot prefix."
  }

  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : s if s.Sid == "ReadWriteSnapshotObjects"
    ]).Resource == "arn:aws:s3:::logbook-test-snapshots-123456789012/logbook/*"
    error_message = "Object access must be limited to prefix/*."
  }

  assert {
    condition = alltrue(flatten([
      for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : [
        for a in flatten([s.Action]) : contains(["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "ec2:DescribeInstances"], a)
      ]
    ]))
    error_message = "The node policy grants an action outside the allowed set."
  }
}

run "snapshot_bucket_kms_and_access_logs" {
  command = plan

  variables {
    snapshot_kms_key_arn       = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    snapshot_access_log_bucket = "central-s3-access-logs"
  }

  assert {
    condition = one([
      for r in aws_s3_bucket_server_side_encryption_configuration.snapshots[0].rule : r
      if r.apply_server_side_encryption_by_default[0].sse_algorithm == "aws:kms" && r.apply_server_side_encryption_by_default[0].kms_master_key_id == "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    ]).bucket_key_enabled
    error_message = "With snapshot_kms_key_arn the bucket must default to SSE-KMS with that key and an S3 Bucket Key."
  }

  assert {
    condition     = aws_s3_bucket_logging.snapshots[0].target_bucket == "central-s3-access-logs" && aws_s3_bucket_logging.snapshots[0].target_prefix == "logbook-test-snapshots-123456789012/"
    error_message = "Access logs must go to the given bucket under <snapshot bucket>/."
  }

  assert {
    condition     = length(jsondecode(aws_iam_role_policy.nodes.policy).Statement) == 4
    error_message = "A KMS key adds exactly one statement."
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : s if s.Sid == "UseSnapshotKeyThroughS3"]).Resource == "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    error_message = "The KMS grant must be limited to the snapshot key."
  }

  assert {
    condition     = join(",", sort(one([for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : s if s.Sid == "UseSnapshotKeyThroughS3"]).Action)) == "kms:Decrypt,kms:GenerateDataKey"
    error_message = "The node role needs exactly kms:Decrypt and kms:GenerateDataKey on the snapshot key."
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : s if s.Sid == "UseSnapshotKeyThroughS3"]).Condition.StringEquals["kms:ViaService"] == "s3.eu-west-1.amazonaws.com"
    error_message = "The key may only be used through S3 in the bucket's region."
  }
}

run "existing_bucket" {
  command = plan

  variables {
    create_snapshot_bucket = false
    snapshot_bucket_name   = "shared-snapshots"
    snapshot_prefix        = "prod/logbook"
    snapshot_bucket_region = "us-east-2"
    snapshot_kms_key_arn   = "arn:aws:kms:us-east-2:123456789012:key/mrk-0123456789abcdef0123456789abcdef"
    tls_secret_arn         = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:logbook-tls-AbCdEf"
  }

  assert {
    condition     = strcontains(base64decode(aws_launch_template.this.user_data), "s3_region = \"us-east-2\"")
    error_message = "s3_region must follow snapshot_bucket_region."
  }

  assert {
    condition     = strcontains(base64decode(aws_launch_template.this.user_data), "tls_peer_server_name = \"logbook-node\"")
    error_message = "With TLS the user data must name the peers' certificate name."
  }

  assert {
    condition     = length(aws_s3_bucket.snapshots) == 0 && length(aws_s3_bucket_policy.snapshots) == 0
    error_message = "No bucket resources when using an existing bucket."
  }

  assert {
    condition     = output.snapshot_store == "s3://shared-snapshots/prod/logbook"
    error_message = "snapshot_store must point at the existing bucket and prefix."
  }

  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : s if s.Sid == "ReadTlsSecret"
    ]).Resource == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:logbook-tls-AbCdEf"
    error_message = "The TLS secret grant must be limited to that secret."
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : s if s.Sid == "UseSnapshotKeyThroughS3"]).Resource == "arn:aws:kms:us-east-2:123456789012:key/mrk-0123456789abcdef0123456789abcdef"
    error_message = "An existing bucket's KMS key must be granted to the node role."
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.nodes.policy).Statement : s if s.Sid == "UseSnapshotKeyThroughS3"]).Condition.StringEquals["kms:ViaService"] == "s3.us-east-2.amazonaws.com"
    error_message = "An existing bucket's key may only be used through S3 in that bucket's region."
  }

  assert {
    condition     = length(jsondecode(aws_iam_role_policy.nodes.policy).Statement) == 5
    error_message = "Existing bucket with key and TLS secret: S3 list, S3 objects, EC2, KMS and Secrets Manager."
  }
}

run "apply_with_mocks" {
  command = apply

  assert {
    condition     = output.nlb_dns_name == "logbook-test-nlb-0123456789abcdef.elb.eu-west-1.amazonaws.com"
    error_message = "NLB DNS name output."
  }

  assert {
    condition     = output.asg_name == "logbook-test-nodes"
    error_message = "ASG name output."
  }

  assert {
    condition     = startswith(output.node_role_arn, "arn:aws:iam::")
    error_message = "Role ARN output."
  }

  assert {
    condition     = output.snapshot_bucket_name == "logbook-test-snapshots-123456789012"
    error_message = "Bucket name output."
  }
}
