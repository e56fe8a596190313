resource "aws_lb" "clients" {
  # NLB access logs only record TLS listener traffic. This NLB has one TCP listener (TLS, when
  # on, ends at the brokers), so access logs would stay empty; VPC flow logs record connections.
  #checkov:skip=CKV_AWS_91:NLB access logs only cover TLS listeners; this NLB has only a TCP listener (TLS ends at the brokers), so the logs would be empty. Use VPC flow logs for connection records.
  name               = "${var.name}-nlb"
  load_balancer_type = "network"
  internal           = var.nlb_internal
  subnets            = var.subnet_ids

  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.nlb_deletion_protection

  tags = local.tags
}

resource "aws_lb_target_group" "grpc" {
  name                 = "${var.name}-grpc"
  port                 = var.grpc_port
  protocol             = "TCP"
  target_type          = "instance"
  vpc_id               = var.vpc_id
  deregistration_delay = 30
  preserve_client_ip   = "true"

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = tostring(var.admin_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 3
    unhealthy_threshold = 3
  }

  tags = local.tags
}

resource "aws_lb_listener" "grpc" {
  load_balancer_arn = aws_lb.clients.arn
  port              = var.grpc_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.grpc.arn
  }

  tags = local.tags
}
