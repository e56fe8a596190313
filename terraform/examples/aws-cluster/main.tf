terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project = "logbook"
    }
  }
}

module "logbook" {
  source = "../../modules/logbook-cluster"

  name          = var.name
  ami_id        = var.ami_id
  instance_type = var.instance_type
  node_count    = var.node_count
  vpc_id        = var.vpc_id
  subnet_ids    = var.subnet_ids
  client_cidrs  = var.client_cidrs
  admin_cidrs   = var.admin_cidrs

  tags = {
    environment = var.environment
  }
}
