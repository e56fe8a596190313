variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Cluster name (also the logbook-cluster tag value peers discover each other by)."
  type        = string
  default     = "logbook"
}

variable "environment" {
  description = "Environment tag value."
  type        = string
  default     = "staging"
}

variable "ami_id" {
  description = "logbook AMI ID (built by the image pipeline)."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type for broker nodes."
  type        = string
  default     = "m6i.large"
}

variable "node_count" {
  description = "Number of broker nodes (odd, 3 to 9)."
  type        = number
  default     = 3
}

variable "vpc_id" {
  description = "VPC to deploy into."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets in at least two availability zones."
  type        = list(string)
}

variable "client_cidrs" {
  description = "CIDR blocks of clients allowed on port 7400."
  type        = list(string)
}

variable "admin_cidrs" {
  description = "CIDR blocks of operators allowed on the admin port 7480."
  type        = list(string)
  default     = []
}
