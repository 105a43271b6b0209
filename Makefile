# Entry points: `make study` (set up, then run the default study) and `make test` (set up, then test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
PYTEST_ARGS ?=

.PHONY: setup system-deps study test test-fast lint clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev,cluster]'
	touch $@

# Debian's offline copy of Fashion-MNIST (the download rule falls back to the canonical mirrors).
system-deps:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; fi

study: setup system-deps
	$(BIN)/snakemake --cores $(CORES) --resources gpu=1
	@echo "Open reports/summary.html"

test: setup system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results reports/summary.html logs benchmarks
