mock_provider "aws" {
  source = "./tests/mocks"
}

override_data {
  target = data.aws_subnet.selected["subnet-0aaaaaaaaaaaaaaa1"]
  values = {
    availability_zone = "eu-west-1a"
    cidr_block        = "10.0.1.0/24"
  }
}

override_data {
  target = data.aws_subnet.selected["subnet-0bbbbbbbbbbbbbbb2"]
  values = {
    availability_zone = "eu-west-1b"
    cidr_block        = "10.0.2.0/24"
  }
}

variables {
  name         = "logbook-test"
  ami_id       = "ami-0123456789abcdef0"
  node_count   = 3
  vpc_id       = "vpc-0123456789abcdef0"
  subnet_ids   = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]
  client_cidrs = ["10.0.0.0/16"]
}

run "rejects_even_node_count" {
  command = plan

  variables {
    node_count = 4
  }

  expect_failures = [var.node_count]
}

run "rejects_too_many_nodes" {
  command = plan

  variables {
    node_count = 11
  }

  expect_failures = [var.node_count]
}

run "rejects_single_subnet" {
  command = plan

  variables {
    subnet_ids = ["subnet-0aaaaaaaaaaaaaaa1"]
  }

  expect_failures = [var.subnet_ids]
}

run "rejects_open_admin" {
  command = plan

  variables {
    admin_cidrs = ["0.0.0.0/0"]
  }

  expect_failures = [var.admin_cidrs]
}

run "rejects_subnets_in_one_az" {
  command = plan

  override_data {
    target = data.aws_subnet.selected["subnet-0bbbbbbbbbbbbbbb2"]
    values = {
      availability_zone = "eu-west-1a"
      cidr_block        = "10.0.2.0/24"
    }
  }

  expect_failures = [aws_autoscaling_group.this]
}

run "accepts_valid_inputs" {
  command = plan

  assert {
    condition     = aws_autoscaling_group.this.desired_capacity == 3
    error_message = "A valid configuration must plan."
  }
}

run "existing_bucket_needs_a_name" {
  command = plan

  variables {
    create_snapshot_bucket = false
  }

  expect_failures = [aws_iam_role_policy.nodes]
}

run "rejects_kms_alias" {
  command = plan

  variables {
    snapshot_kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:alias/logbook"
  }

  expect_failures = [var.snapshot_kms_key_arn]
}

run "access_logs_need_a_created_bucket" {
  command = plan

  variables {
    create_snapshot_bucket     = false
    snapshot_bucket_name       = "shared-snapshots"
    snapshot_access_log_bucket = "central-s3-access-logs"
  }

  expect_failures = [aws_iam_role_policy.nodes]
}
