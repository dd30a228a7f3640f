# livefeat: `make run` serves the demo; `make test` runs every check. Both set themselves up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DATA_DIR ?= data/livefeat
HTTP_PORT ?= 8080
GRPC_PORT ?= 50051
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: install run demo serve test lint bench bench-quick clean

$(VENV)/.installed: pyproject.toml scripts/system-deps.sh
	scripts/system-deps.sh python
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create the venv and install livefeat with its dev tools

demo: install ## generate and load the standard workload into $(DATA_DIR) (once)
	$(BIN)/livefeat demo --data-dir $(DATA_DIR)

run: demo ## serve the demo on the embedded default (L1 + RocksDB, no Redis)
	@echo "livefeat: HTTP on http://localhost:$(HTTP_PORT)  (try: curl -s localhost:$(HTTP_PORT)/v1/bundle -d '{\"bundle\":\"live_ranker\",\"user_id\":7,\"room_ids\":[1,2,3]}')"
	$(BIN)/livefeat serve --data-dir $(DATA_DIR) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT)

lint: install ## ruff (lint and format check) and mypy
	$(BIN)/ruff check service tests loadtest
	$(BIN)/ruff format --check service tests loadtest
	$(BIN)/mypy service

test: lint ## every check and the whole test suite (starts its own redis-servers)
	scripts/system-deps.sh redis
	$(BIN)/pytest

bench-quick: demo ## benchmark runner, short (under a minute)
	$(PY) -m loadtest.bench --quick --data-dir $(DATA_DIR)

bench: demo ## benchmark runner, the full protocol of BENCHMARK.md
	$(PY) -m loadtest.bench --data-dir $(DATA_DIR)

clean: ## remove the venv and the demo data
	rm -rf $(VENV) $(DATA_DIR)
