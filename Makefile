# logbook: the commands a developer and CI use. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help setup build run test fmt lint image cluster-up cluster-down container-test certs bench-log bench-broker bench-broker-tls bench-cluster bench-snapshot iac-check helm-check terraform-check pipelines-check ami-check scripts-check ci clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## Check and install what the build and the tests need
	@scripts/setup.sh

build: setup ## Build the release binary (target/release/logbook)
	$(CARGO) build --release --locked

run: setup ## Build and start a broker with embedded defaults (data in ./data, 127.0.0.1:7400)
	$(CARGO) run --release -- serve

test: setup ## Run the whole test suite (the README's test command)
	$(CARGO) test --all-targets
	$(CARGO) test --doc

fmt: ## Check formatting
	$(CARGO) fmt --check

lint: ## Clippy with warnings as errors
	$(CARGO) clippy --all-targets -- -D warnings

bench-log: ## Storage-engine benchmark against the raw disk (prints a table and a bench-log: line)
	$(CARGO) run --release -- bench log

bench-broker: ## Broker benchmark: produce streams, latency, consume, memory (prints a bench-broker: line)
	$(CARGO) run --release -- bench broker

bench-broker-tls: ## The broker benchmark with mutual TLS between client and broker
	$(CARGO) run --release -- bench broker --tls

bench-cluster: ## Cluster benchmark: RF=3 vs single node, failover, idle cost of 1,000 partitions (prints a bench-cluster: line)
	$(CARGO) run --release -- bench cluster

bench-snapshot: ## Snapshot benchmark: restore vs the S3 server's raw GET, leader egress of a replacement (prints a bench-snapshot: line)
	$(CARGO) run --release -- bench snapshot

helm-check: ## Helm chart: render, schema, kubernetes-validate --strict, checkov (pinned tools in target/iac-venv)
	bash helm/check.sh

terraform-check: ## Terraform: fmt, validate, terraform test with a mocked AWS provider (SKIP without a local provider), checkov
	bash terraform/check.sh

pipelines-check: ## GitHub Actions (actionlint, yamllint, SHA pinning) and a Jenkinsfile sanity check
	bash scripts/pipelines-check.sh

scripts-check: ## shellcheck on every script, hadolint on the Dockerfile
	bash scripts/lint-scripts.sh

ami-check: ## Packer AMI: fmt, validate (Debian packer 1.6.6), shellcheck, unit files
	bash ami/check.sh

iac-check: helm-check terraform-check pipelines-check ami-check scripts-check ## Every infrastructure and deployment check (run by .ci/run)

image: ## Build the broker image (IMAGE_TAG=logbook:dev; IMAGE_BASES=auto|public|local)
	scripts/image.sh

cluster-up: ## A local 3-node cluster in containers (needs make image; scripts/cluster.sh cli ... talks to it)
	scripts/cluster.sh up

cluster-down: ## Remove the local container cluster, its network and volumes
	scripts/cluster.sh down

container-test: ## Build the image, run 3 containers: CLI produce/consume, SIGKILL failover, network cut
	scripts/container-test.sh

certs: ## A development CA, a node certificate (n1, localhost) and client certificates alice and ops in ./certs (kept if present)
	$(CARGO) build --release --quiet
	test -e certs/ca.pem || target/release/logbook certs init --dir certs
	test -e certs/n1.pem || target/release/logbook certs issue --dir certs --server --name n1 --ip 127.0.0.1 --dns localhost
	test -e certs/alice.pem || target/release/logbook certs issue --dir certs --client alice
	test -e certs/ops.pem || target/release/logbook certs issue --dir certs --client ops

ci: ## What CI runs
	.ci/run

clean: ## Remove build output
	$(CARGO) clean
