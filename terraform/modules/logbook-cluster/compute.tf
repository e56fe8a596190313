resource "aws_launch_template" "this" {
  name_prefix            = "${var.name}-"
  description            = "logbook broker node for cluster ${var.name}"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  update_default_version = true
  vpc_security_group_ids = [aws_security_group.nodes.id]

  iam_instance_profile {
    arn = aws_iam_instance_profile.nodes.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = var.data_volume_device_name

    ebs {
      volume_size           = var.data_volume_size_gb
      volume_type           = var.data_volume_type
      encrypted             = true
      delete_on_termination = true
      iops                  = var.data_volume_type == "io2" ? 3000 : null
    }
  }

  monitoring {
    enabled = true
  }

  user_data = base64encode(templatefile("${path.module}/templates/user-data.sh.tftpl", {
    grpc_port            = var.grpc_port
    admin_port           = var.admin_port
    gossip_port          = var.gossip_port
    bootstrap_expect     = var.node_count
    snapshot_store       = local.snapshot_store
    s3_region            = local.s3_region
    join_aws_tag         = "${local.cluster_tag_key}=${var.name}"
    tls_secret_arn       = var.tls_secret_arn == null ? "" : var.tls_secret_arn
    tls_peer_server_name = var.tls_peer_server_name
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${var.name}-node" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${var.name}-node" })
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_autoscaling_group" "this" {
  name                      = "${var.name}-nodes"
  vpc_zone_identifier       = var.subnet_ids
  desired_capacity          = var.node_count
  min_size                  = var.node_count
  max_size                  = var.node_count
  health_check_type         = "ELB"
  health_check_grace_period = var.health_check_grace_period
  target_group_arns         = [aws_lb_target_group.grpc.arn]
  default_instance_warmup   = var.instance_warmup
  wait_for_capacity_timeout = "15m"

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  # A new launch template version (new AMI, new config) starts a refresh that replaces one
  # node at a time, keeping a Raft majority up.
  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = local.min_healthy_percentage
      max_healthy_percentage = 100
      instance_warmup        = var.instance_warmup
      skip_matching          = true
      auto_rollback          = true
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${var.name}-node" })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    precondition {
      condition     = length(local.subnet_azs) >= 2
      error_message = "subnet_ids must span at least two availability zones."
    }
  }
}
