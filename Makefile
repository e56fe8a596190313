# logbook: the commands a developer and CI use. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help setup test fmt lint bench-log ci clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## Check and install what the build and the tests need
	@scripts/setup.sh

test: setup ## Run the whole test suite (the README's test command)
	$(CARGO) test --all-targets
	$(CARGO) test --doc

fmt: ## Check formatting
	$(CARGO) fmt --check

lint: ## Clippy with warnings as errors
	$(CARGO) clippy --all-targets -- -D warnings

bench-log: ## Storage-engine benchmark against the raw disk (prints a table and a bench-log: line)
	$(CARGO) run --release -- bench log

ci: ## What CI runs
	.ci/run

clean: ## Remove build output
	$(CARGO) clean
