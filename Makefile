# crid — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= /etc/crid/config.toml
CNI_CONF_DIR ?= /etc/cni/net.d
PYTEST_FLAGS ?= -q

.PHONY: deps run test lint unit e2e bench proto clean

deps:
	hack/install-deps

# Run the daemon in the foreground with its defaults (writes the default
# config to $(CONFIG) and a bridge CNI network to $(CNI_CONF_DIR) first if
# there are none).
run: deps
	@if [ ! -f "$(CONFIG)" ]; then \
		mkdir -p "$$(dirname "$(CONFIG)")"; \
		$(PY) -m cri config default > "$(CONFIG)"; \
		echo "wrote default config to $(CONFIG)"; \
	fi
	@mkdir -p "$(CNI_CONF_DIR)"
	@if [ -z "$$(ls -A "$(CNI_CONF_DIR)" 2>/dev/null | grep -E '\.(conflist|conf|json)$$')" ]; then \
		install -m 0644 manifests/cni/10-crid-bridge.conflist "$(CNI_CONF_DIR)/"; \
		echo "installed the default bridge network (10.88.0.0/16) in $(CNI_CONF_DIR)"; \
	fi
	exec $(VENV)/bin/crid serve --config "$(CONFIG)"

test: deps lint unit e2e

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit:
	$(PY) -m pytest $(PYTEST_FLAGS) tests/unit

e2e:
	$(PY) -m pytest $(PYTEST_FLAGS) tests/e2e

bench: deps
	$(PY) -m benchmarks $(BENCH_ARGS)

proto: deps
	hack/update-proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
