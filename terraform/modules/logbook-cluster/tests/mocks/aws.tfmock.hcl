# Shared mock values for `mock_provider "aws" { source = "./tests/mocks" }`. Computed
# attributes get realistic IDs and ARNs: the provider validates some of them (for example a
# launch template ID must look like lt-...), and random strings fail that.

mock_data "aws_partition" {
  defaults = {
    partition  = "aws"
    dns_suffix = "amazonaws.com"
  }
}

mock_data "aws_region" {
  defaults = {
    name = "eu-west-1"
  }
}

mock_data "aws_caller_identity" {
  defaults = {
    account_id = "123456789012"
    arn        = "arn:aws:iam::123456789012:user/terraform"
    user_id    = "AIDAEXAMPLEUSERID0001"
  }
}

mock_data "aws_subnet" {
  defaults = {
    availability_zone = "eu-west-1a"
    cidr_block        = "10.0.1.0/24"
    vpc_id            = "vpc-0123456789abcdef0"
  }
}

mock_resource "aws_launch_template" {
  defaults = {
    id             = "lt-0123456789abcdef0"
    arn            = "arn:aws:ec2:eu-west-1:123456789012:launch-template/lt-0123456789abcdef0"
    latest_version = 1
  }
}

mock_resource "aws_autoscaling_group" {
  defaults = {
    id  = "logbook-test-nodes"
    arn = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:00000000-0000-0000-0000-000000000000:autoScalingGroupName/logbook-test-nodes"
  }
}

mock_resource "aws_lb" {
  defaults = {
    id       = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/logbook-test-nlb/0123456789abcdef"
    arn      = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/logbook-test-nlb/0123456789abcdef"
    dns_name = "logbook-test-nlb-0123456789abcdef.elb.eu-west-1.amazonaws.com"
    zone_id  = "Z2IFOLAFXWLO4F"
  }
}

mock_resource "aws_lb_target_group" {
  defaults = {
    id  = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/logbook-test-grpc/0123456789abcdef"
    arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/logbook-test-grpc/0123456789abcdef"
  }
}

mock_resource "aws_lb_listener" {
  defaults = {
    id  = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/net/logbook-test-nlb/0123456789abcdef/0123456789abcdef"
    arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/net/logbook-test-nlb/0123456789abcdef/0123456789abcdef"
  }
}

mock_resource "aws_security_group" {
  defaults = {
    id  = "sg-0123456789abcdef0"
    arn = "arn:aws:ec2:eu-west-1:123456789012:security-group/sg-0123456789abcdef0"
  }
}

mock_resource "aws_vpc_security_group_ingress_rule" {
  defaults = {
    id                     = "sgr-0123456789abcdef0"
    arn                    = "arn:aws:ec2:eu-west-1:123456789012:security-group-rule/sgr-0123456789abcdef0"
    security_group_rule_id = "sgr-0123456789abcdef0"
  }
}

mock_resource "aws_vpc_security_group_egress_rule" {
  defaults = {
    id                     = "sgr-0fedcba9876543210"
    arn                    = "arn:aws:ec2:eu-west-1:123456789012:security-group-rule/sgr-0fedcba9876543210"
    security_group_rule_id = "sgr-0fedcba9876543210"
  }
}

mock_resource "aws_iam_role" {
  defaults = {
    arn       = "arn:aws:iam::123456789012:role/logbook-test-node-20260101000000000000000001"
    unique_id = "AROAEXAMPLEROLEID0001"
  }
}

mock_resource "aws_iam_instance_profile" {
  defaults = {
    arn       = "arn:aws:iam::123456789012:instance-profile/logbook-test-node-20260101000000000000000002"
    unique_id = "AIPAEXAMPLEPROFILE001"
  }
}

mock_resource "aws_s3_bucket" {
  defaults = {
    arn                         = "arn:aws:s3:::logbook-test-snapshots-123456789012"
    bucket_domain_name          = "logbook-test-snapshots-123456789012.s3.amazonaws.com"
    bucket_regional_domain_name = "logbook-test-snapshots-123456789012.s3.eu-west-1.amazonaws.com"
    hosted_zone_id              = "Z1BKCTXD74EZPE"
    region                      = "eu-west-1"
  }
}
