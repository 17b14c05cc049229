# sealtrail — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
CARGO ?= cargo
DATA_DIR ?= ./sealtrail-data

.PHONY: help build run test test-rust test-python test-distributed python-deps lint proto-lint fmt fuzz bench bench-scale bench-distributed bench-cassandra-requests bench-immudb up down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

build: ## release build of the sealtrail binary (target/release/sealtrail)
	$(CARGO) build --release -p sealtrail

run: build ## build and run embedded mode on $(DATA_DIR), REST on 127.0.0.1:8080
	./target/release/sealtrail serve --data-dir $(DATA_DIR)

test: test-rust test-python test-distributed ## every test suite: Rust, Python, then the distributed suite on Kafka + Cassandra

test-rust: ## Rust tests (unit, property, store conformance, chainer, end-to-end over HTTP)
	$(CARGO) test --workspace

test-python: python-deps ## Python e2e: the official fact0 SDK, an independent JCS hash check, an independent check of checkpoints and proofs, gRPC interop (grpcio)
	$(CARGO) test --workspace --no-run -q
	SEALTRAIL_BIN=$(CURDIR)/target/debug/sealtrail $(PYTHON) -m pytest tests/python -q

test-distributed: python-deps ## Kafka + Cassandra suites (starts them with deploy/local/up.sh if needed, stops what it started)
	PYTHON=$(PYTHON) CARGO=$(CARGO) tests/distributed.sh

python-deps: ## install the Python test dependencies (pinned)
	@$(PYTHON) -c 'import fact0, rfc8785, pytest, requests, cryptography, grpc, grpc_tools, schemathesis, selenium' 2>/dev/null || $(PYTHON) -m pip install -q -r tests/python/requirements.txt

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --features sealtrail/integration,sealtrail-scylla/integration -- -D warnings

proto-lint: ## buf lint of proto/ (STANDARD + COMMENTS rules; buf comes from npm, pinned)
	cd proto && npx --yes @bufbuild/buf@1.75.0 lint

fmt: ## format the code
	$(CARGO) fmt --all

FUZZ_SECONDS ?= 300
fuzz: ## fuzz the strict JSON parser, ingest validation and the offline verifier's input (cargo-fuzz, installed if missing) for FUZZ_SECONDS each (300; CI: 30); prints the inputs run
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

bench: build ## benchmark a release build: REST with wrk (needs wrk and bc), then gRPC streaming ingest
	bench/bench.sh

bench-scale: build ## fill an embedded server with 10M events at full speed: RSS, journal and rate per slice, then restart time after SIGKILL (needs wrk, bc)
	bench/scale.sh

bench-immudb: build ## sealtrail against immudb side by side on this machine: batches of 100 and single events, both fsyncing (needs Go, wrk, bc)
	bench/immudb.sh

bench-distributed: build ## benchmark distributed mode: Kafka + Cassandra + 1 gateway + 1 chainer on this machine (needs wrk, bc, a JDK)
	bench/distributed.sh

bench-cassandra-requests: ## what each request shape of the distributed write path costs the local Cassandra node (CPU, context switches); needs deploy/local/up.sh
	deploy/local/cassandra.sh status >/dev/null || deploy/local/up.sh cassandra
	deploy/local/cassandra.sh python bench/cassandra_requests.py

up: ## fetch (pinned, from Maven Central) and start Kafka + Cassandra on 127.0.0.1 for distributed mode
	deploy/local/up.sh

down: ## stop the local Kafka + Cassandra (WIPE=1 also deletes their data)
	deploy/local/down.sh $(if $(WIPE),--wipe,)

clean: ## remove build output
	$(CARGO) clean
