# Entry points: `make study` (set up, then run the default study) and `make test` (set up, then test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
PYTEST_ARGS ?=
# pytest-xdist workers; each takes whole test files (module fixtures are built once). Most tests wait
# on one single-threaded process (a Snakemake run, a training job), so 2 workers keep 2 cores busy.
# TEST_WORKERS=0 runs the tests in one process.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: setup system-deps test-deps study test test-fast lint clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev,cluster,export]'
	touch $@

# Debian packages: the offline copy of Fashion-MNIST (the download rule falls back to the canonical
# mirrors without it); the tests also need Chromium (report test) and SLURM + munge (cluster test).
STUDY_DEBS := dataset-fashion-mnist
TEST_DEBS := dataset-fashion-mnist chromium slurm-wlm munge
define install_debs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
		else echo "Please install the Debian packages:$$missing (as root: apt-get install$$missing)"; fi; fi
endef

system-deps:
	$(call install_debs,$(STUDY_DEBS))

test-deps:
	$(call install_debs,$(TEST_DEBS))

study: setup system-deps
	$(BIN)/snakemake --cores $(CORES) --resources gpu=1
	@echo "Open reports/summary.html"

test: setup test-deps
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# Python (ruff), Snakemake files (snakefmt, the version pinned in pyproject) and the workflow
# (snakemake --lint, for the default, the full and the CI study; --lint fails on any finding), the
# project's own rules (fmnist.lint: no torch.load that may unpickle code, in src/ or the workflow);
# the catalog's copy of the config schema must be the package's (docs/layout.md).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/python -m fmnist.lint src workflow Snakefile
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/full.yaml
	$(BIN)/snakemake --lint --directory .test --snakefile workflow/Snakefile
	@cmp -s src/fmnist/schema.yaml workflow/schemas/config.schema.yaml || { echo \
		"workflow/schemas/config.schema.yaml differs from src/fmnist/schema.yaml: cp src/fmnist/schema.yaml workflow/schemas/config.schema.yaml"; exit 1; }

clean-results:
	rm -rf results reports/summary.html logs benchmarks
