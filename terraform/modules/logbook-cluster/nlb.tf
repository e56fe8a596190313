resource "aws_lb" "clients" {
  name               = "${var.name}-nlb"
  load_balancer_type = "network"
  internal           = var.nlb_internal
  subnets            = var.subnet_ids

  enable_cross_zone_load_balancing = true

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
