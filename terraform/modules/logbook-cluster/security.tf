resource "aws_security_group" "nodes" {
  name_prefix = "${var.name}-nodes-"
  description = "logbook broker nodes of cluster ${var.name}"
  vpc_id      = var.vpc_id

  tags = merge(local.tags, { Name = "${var.name}-nodes" })

  lifecycle {
    create_before_destroy = true
  }
}

# Clients reach 7400 through the NLB; it preserves client IPs, so allow the client CIDRs.
resource "aws_vpc_security_group_ingress_rule" "grpc_clients" {
  for_each = toset(var.client_cidrs)

  security_group_id = aws_security_group.nodes.id
  description       = "logbook gRPC from clients"
  ip_protocol       = "tcp"
  from_port         = var.grpc_port
  to_port           = var.grpc_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "admin_operators" {
  for_each = toset(var.admin_cidrs)

  security_group_id = aws_security_group.nodes.id
  description       = "logbook admin HTTP from operators"
  ip_protocol       = "tcp"
  from_port         = var.admin_port
  to_port           = var.admin_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

# NLB health checks (/readyz) come from the NLB's addresses in its subnets.
resource "aws_vpc_security_group_ingress_rule" "admin_nlb_health" {
  for_each = toset(local.subnet_cidrs)

  security_group_id = aws_security_group.nodes.id
  description       = "logbook admin HTTP from NLB health checks"
  ip_protocol       = "tcp"
  from_port         = var.admin_port
  to_port           = var.admin_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

# Between nodes only: Raft/gRPC and gossip (TCP and UDP).
resource "aws_vpc_security_group_ingress_rule" "peers" {
  for_each = {
    grpc       = { protocol = "tcp", port = var.grpc_port, what = "gRPC/Raft" }
    gossip_tcp = { protocol = "tcp", port = var.gossip_port, what = "gossip (TCP)" }
    gossip_udp = { protocol = "udp", port = var.gossip_port, what = "gossip (UDP)" }
  }

  security_group_id            = aws_security_group.nodes.id
  description                  = "logbook ${each.value.what} between nodes"
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.nodes.id
  tags                         = local.tags
}

# Nodes call S3, EC2 (tag discovery) and their peers.
resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.nodes.id
  description       = "all outbound (S3, EC2 API, peers)"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}
