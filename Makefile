# livefeat: `make run` serves the demo; `make test` runs every check. Both set themselves up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DATA_DIR ?= data/livefeat
HTTP_PORT ?= 8080
GRPC_PORT ?= 50051
PIP_FLAGS ?= --quiet --disable-pip-version-check
# Deploy checks (docs/operations.md): every overlay, validated for the oldest and newest Kubernetes we target.
OVERLAYS := $(notdir $(wildcard deploy/overlays/*))
K8S_VERSIONS ?= 1.30.0 1.37.0
RULES := deploy/prometheus/livefeat-rules.yaml
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= livefeat:$(shell git describe --tags --always --dirty 2>/dev/null || echo $(VERSION))

.PHONY: install proto run demo serve test lint faults bench bench-quick loadtest clean deploy-check deploy-rules image pipeline

# The install generates service/_gen/ from protos/ and compiles service/_native.c
# (hatch_build.py): a change to either reinstalls.
$(VENV)/.installed: pyproject.toml hatch_build.py $(wildcard protos/*/*/*.proto) service/_native.c service/_shortest.h service/_table.h scripts/system-deps.sh
	scripts/system-deps.sh python
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create the venv and install livefeat with its dev tools

proto: install ## regenerate service/_gen/ and recompile service/_native.c in place (as every install does)
	$(PY) hatch_build.py

demo: install ## generate and load the standard workload into $(DATA_DIR) (once)
	$(BIN)/livefeat demo --data-dir $(DATA_DIR)

run: demo ## serve the demo on the embedded default (L1 + RocksDB, no Redis)
	@echo "livefeat: HTTP on http://localhost:$(HTTP_PORT)  (try: curl -s localhost:$(HTTP_PORT)/v1/bundle -d '{\"bundle\":\"live_ranker\",\"user_id\":7,\"room_ids\":[1,2,3]}')"
	@echo "livefeat: gRPC on localhost:$(GRPC_PORT)  (try: $(BIN)/livefeat get --server localhost:$(GRPC_PORT) 7 1 2 3)"
	$(BIN)/livefeat serve --data-dir $(DATA_DIR) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT)

lint: install ## ruff (lint and format check) and mypy
	$(BIN)/ruff check service tests loadtest hatch_build.py
	$(BIN)/ruff format --check service tests loadtest hatch_build.py
	$(BIN)/mypy service

test: lint deploy-check ## every check and the whole test suite (starts its own redis-servers, a headless chromium, Spark; the fault suite's short form)
	scripts/system-deps.sh redis chromium java loadgen
	$(BIN)/pytest --durations=25

# The offline flow on Spark (docs/pipeline.md): raw events -> Spark features -> load -> serve.
# PIPELINE_SIZE=standard for the standard workload's entity counts. With REDIS_URL set, the
# features are written into that Redis from Spark's executors and served from it.
PIPELINE_DIR ?= data/pipeline
PIPELINE_SIZE ?= small
REDIS_URL ?=
pipeline: install ## events -> Spark feature jobs (local[*]) -> load -> serve, in $(PIPELINE_DIR)
	scripts/system-deps.sh java
	rm -rf $(PIPELINE_DIR)
	$(PY) -m service.pipeline run $(PIPELINE_DIR) --size $(PIPELINE_SIZE) $(if $(REDIS_URL),--redis-url $(REDIS_URL))
	$(if $(REDIS_URL),,for view in user_profile room_stats user_room_affinity; do \
	  $(BIN)/livefeat load $$view $(PIPELINE_DIR)/features/$$view.parquet --data-dir $(PIPELINE_DIR)/serve || exit 1; done)
	$(BIN)/livefeat serve --data-dir $(PIPELINE_DIR)/serve --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) \
	  $(if $(REDIS_URL),--redis-url $(REDIS_URL))

faults: install ## the fault suite, long forms (docs/reliability.md): build/faults/results.json, ~8 min
	scripts/system-deps.sh redis
	LIVEFEAT_FAULTS=full $(BIN)/pytest -m faults tests/faults --durations=0

bench-quick: demo ## benchmark smoke test, under a minute: loadtest/results/bench-quick.{json,png}
	scripts/system-deps.sh redis
	$(PY) -m loadtest.bench --quick --data-dir $(DATA_DIR)

bench: demo ## the full protocol of docs/benchmark-workload.md, about 30 min: loadtest/results/bench.{json,png}
	scripts/system-deps.sh redis
	$(PY) -m loadtest.bench --data-dir $(DATA_DIR)

loadtest: demo ## locust, headless, ~75 s: HTTP + gRPC readers, a writer, step load to the p99 knee; fails on any failure
	$(PY) -m loadtest.run_locust --data-dir $(DATA_DIR) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) \
	  --out loadtest/results/locust

clean: ## remove the venv and the demo data
	rm -rf $(VENV) $(DATA_DIR)

deploy-check: install ## Dockerfile lint; render and validate every deploy/ overlay; check and unit-test the alert rules
	scripts/system-deps.sh prometheus kubectl
	$(BIN)/hadolint --failure-threshold style Dockerfile
	@mkdir -p build/deploy
	@# Strict schemas for the core kinds; ServiceMonitor and PrometheusRule (no schema: a WARN)
	@# are checked by tests/deploy/test_manifests.py.
	set -euo pipefail; for overlay in $(OVERLAYS); do \
	  kubectl kustomize deploy/overlays/$$overlay > build/deploy/$$overlay.yaml; \
	  for version in $(K8S_VERSIONS); do \
	    $(BIN)/kubernetes-validate --strict --quiet -k $$version build/deploy/$$overlay.yaml; \
	  done; \
	done
	promtool check rules $(RULES)
	promtool test rules deploy/prometheus/tests/*.yaml

deploy-rules: ## write deploy/base/prometheusrule.yaml from $(RULES) (the one to edit)
	{ echo "# Generated from $(RULES) by 'make deploy-rules': edit that file, not this one."; \
	  printf '%s\n' 'apiVersion: monitoring.coreos.com/v1' 'kind: PrometheusRule' 'metadata:' \
	    '  name: livefeat' '  labels:' '    app.kubernetes.io/name: livefeat' \
	    '    app.kubernetes.io/component: server' 'spec:'; \
	  sed -e '/^#/d' -e 's/^./  &/' $(RULES); } > deploy/base/prometheusrule.yaml

image: ## build the container image (needs a Docker engine; none here): make image IMAGE=registry/livefeat:TAG
	docker build -t $(IMAGE) --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD) --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) .
