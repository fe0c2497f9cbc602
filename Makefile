# aiport — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PROTOS := $(wildcard proto/aiport/v1/*.proto)
GEN := gen
DESCRIPTOR := $(GEN)/aiport.pb
STAMP := $(VENV)/.installed

.PHONY: all venv gen run test test-replicas test-faults lint typecheck unit integration browser clean deps browser-deps

all: gen

# Virtualenv with the project (editable) and its dev tools; redone when pyproject changes.
$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)

# The list of protos, rewritten only when it changes: a deleted (or renamed)
# proto then rebuilds gen/ as an edited one does, and its stale modules go.
PROTO_LIST := $(GEN)/.protos
$(shell mkdir -p $(GEN) && (echo '$(PROTOS)' | cmp -s - $(PROTO_LIST) || echo '$(PROTOS)' > $(PROTO_LIST)))

# Python stubs, type hints and the descriptor set Envoy's transcoder loads.
$(DESCRIPTOR): $(PROTOS) $(PROTO_LIST) $(STAMP)
	@rm -rf $(GEN)/aiport
	@mkdir -p $(GEN)
	$(VPY) -m grpc_tools.protoc -Iproto \
	  -I$$($(VPY) -c 'import google.api.annotations_pb2 as a, os; print(os.path.dirname(os.path.dirname(os.path.dirname(a.__file__))))') \
	  --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) \
	  --include_imports --include_source_info --descriptor_set_out=$(DESCRIPTOR) \
	  $(PROTOS)
	@touch $(GEN)/aiport/__init__.py $(GEN)/aiport/v1/__init__.py
	@echo "$(abspath $(GEN))" > $$($(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/aiport-gen.pth

gen: $(DESCRIPTOR)

# PostgreSQL and RabbitMQ: use what runs, install on Debian/Ubuntu as root, else print the steps.
deps:
	@bash deploy/local/ensure-deps.sh

# Chromium for tests/browser: use it if it runs, install Debian's as root, else print the steps.
browser-deps:
	@bash deploy/local/ensure-browser.sh

run: gen deps
	$(VPY) -m deploy.local.run

lint: gen
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: gen
	$(VENV)/bin/mypy services sandbox deploy tests bench

unit: gen
	$(VENV)/bin/pytest -q tests/unit

integration: gen deps
	$(VENV)/bin/pytest -q tests/integration

# Headless Chromium through the edge: the public pages and a customer's journey.
browser: gen deps browser-deps
	$(VENV)/bin/pytest -q tests/browser

test: gen deps browser-deps lint typecheck
	$(VENV)/bin/pytest -q tests
	$(MAKE) --no-print-directory test-replicas

# The integration suite again with two processes of every service behind Envoy
# (not tests/browser: pages look the same with any replica count; sessions and CSRF
# across replicas are checked by tests/integration, here too).
test-replicas: gen deps
	AIPORT_TEST_REPLICAS=2 $(VENV)/bin/pytest -q tests/integration

# The benchmark (bench/README.md): mock upstream, Envoy floor and the whole stack, on
# free ports with a fresh database; writes bench/results/latest.{json,md}. Not part of test.
.PHONY: bench
bench: gen deps
	@bash bench/ensure-tools.sh
	$(VPY) -m bench
	$(VPY) -m bench.limiter_cost

# Restarts of the machine's PostgreSQL and RabbitMQ under load. make test runs
# every other fault scenario; these two disturb anything else on the machine.
test-faults: gen deps
	$(VENV)/bin/pytest -q -s tests/faults/shared_restarts.py

clean:
	rm -rf $(GEN) .pytest_cache .mypy_cache .ruff_cache
