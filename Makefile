# Entry points: `make study` (set up, then run the default study) and `make test` (set up, then test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
PYTEST_ARGS ?=
# pytest-xdist workers; each takes whole test files (module fixtures are built once). Most tests wait
# on one single-threaded process (a Snakemake run, a training job), and the SLURM file's worker mostly
# waits on SLURM (the executor's status checks), so 3 workers keep 2 cores busy (docs/development.md).
# TEST_WORKERS=0 runs the tests in one process.
TEST_WORKERS ?= 3
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: setup setup-cpu lock system-deps test-deps study test test-fast lint clean-results wheelhouse offline-install

# ---- Python packages: every version and file hash comes from the lock ----------------------------
# requirements.lock: pyproject's dependencies, all its extras and the build backend, with everything
# they need, for every platform (`uv pip compile --universal`), each with the sha256 of its files.
# `make setup` installs it with uv (taken from PATH, or installed into the venv from the lock's own
# hash-pinned line), or with pip when INSTALLER=pip or uv will not install; then fmnist itself,
# editable, with the locked setuptools. docs/development.md has the timings.
LOCK := requirements.lock
INSTALLER ?= auto
EXTRAS_ALL := dev,cluster,export

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	@set -e; uv=""; \
	if [ "$(INSTALLER)" != pip ]; then \
		if command -v uv >/dev/null 2>&1; then uv=uv; \
		elif [ -x $(BIN)/uv ]; then uv=$(BIN)/uv; \
		else awk '/^uv==/ {p=1; print; next} /^[^ #]/ {p=0} p' $(LOCK) > $(VENV)/uv-requirement.txt; \
			if $(BIN)/pip install -q --require-hashes --no-deps -r $(VENV)/uv-requirement.txt; then uv=$(BIN)/uv; \
			else echo "uv did not install: installing with pip"; fi; fi; fi; \
	if [ -n "$$uv" ]; then \
		echo "$$uv pip install --python $(BIN)/python --require-hashes -r $(LOCK)"; \
		$$uv pip install --python $(BIN)/python --require-hashes -r $(LOCK); \
		$$uv pip install --python $(BIN)/python --no-deps --no-build-isolation -e '.[$(EXTRAS_ALL)]'; \
	else \
		echo "$(BIN)/pip install --require-hashes -r $(LOCK)"; \
		$(BIN)/pip install --require-hashes -r $(LOCK); \
		$(BIN)/pip install --no-deps --no-build-isolation -e '.[$(EXTRAS_ALL)]'; \
	fi
	touch $@

# A laptop without an NVIDIA GPU: torch and torchvision from PyTorch's CPU-only index (no CUDA
# libraries; about a fifth of the venv), everything else from the lock, hash-checked. README, Installing.
CPU_INDEX ?= https://download.pytorch.org/whl/cpu
setup-cpu:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --no-deps --index-url $(CPU_INDEX) \
		$$(grep -E '^torch(vision)?==' $(LOCK) | sed -E 's/ .*//; s/$$/+cpu/')
	$(BIN)/python tools/lockfile.py select --extras "$(EXTRAS_ALL)" \
		--drop "torch torchvision triton nvidia-* cuda-*" > $(VENV)/requirements-cpu.txt
	$(BIN)/pip install --require-hashes --no-deps -r $(VENV)/requirements-cpu.txt
	$(BIN)/pip install --no-deps --no-build-isolation -e '.[$(EXTRAS_ALL)]'
	$(BIN)/pip check
	touch $(VENV)/.installed

# Rewrite the lock after editing pyproject's dependencies (the current pins are kept where they
# still fit; `make lock LOCK_ARGS=--upgrade` takes the newest), and the jobs' conda environment
# from it. Needs uv: on PATH or in the venv (`make setup`).
UV ?= $(shell command -v uv 2>/dev/null || echo $(BIN)/uv)
LOCK_ARGS ?=
lock:
	$(UV) pip compile pyproject.toml tools/build-requirements.in --extra dev --extra cluster \
		--extra export --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --quiet -o $(LOCK) $(LOCK_ARGS)
	@echo "wrote $(LOCK) ($$(grep -c "^[a-z0-9]" $(LOCK)) packages)"
	$(TOOL_PYTHON) tools/lockfile.py env

# ---- Offline compute nodes (docs/cluster.md, "Compute nodes without internet") -------------------
# `make wheelhouse` (on a connected machine) puts the wheels a node needs into $(WHEELHOUSE)/: the
# lock's packages for pyproject's dependencies and $(EXTRAS), for CPython $(PY) on $(PLATFORM), less
# $(EXCLUDE) (what the node has already, and everything only those need) and pulp (the workflow runs
# with profiles/greedy instead of the ILP scheduler). The defaults fit a GPU node whose Python has
# torch and the scientific stack. `make offline-install` (on the node, no network) installs them
# into $(VENV), which sees the node's own packages unless SYSTEM_SITE_PACKAGES=0.
WHEELHOUSE ?= wheelhouse
PY ?= 3.12
PLATFORM ?= manylinux_2_28_x86_64
EXTRAS ?= cluster
EXCLUDE ?= torch torchvision numpy pandas scipy matplotlib jinja2 pyyaml pulp
SYSTEM_SITE_PACKAGES ?= 1
TOOL_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

wheelhouse:
	$(TOOL_PYTHON) tools/lockfile.py wheelhouse --out $(WHEELHOUSE) --python $(PY) \
		--platform "$(PLATFORM)" --extras "$(EXTRAS)" --exclude "$(EXCLUDE)"
	@du -sh $(WHEELHOUSE)

offline-install:
	@test -f $(WHEELHOUSE)/requirements.txt || { echo "no $(WHEELHOUSE)/requirements.txt: run \
		\`make wheelhouse\` on a connected machine and copy $(WHEELHOUSE)/ here"; exit 1; }
	@set -e; t0=$$(date +%s); \
	$(PYTHON) -m venv $(if $(filter 1,$(SYSTEM_SITE_PACKAGES)),--system-site-packages) $(VENV); \
	$(BIN)/python -m pip install -q --no-index --find-links $(WHEELHOUSE) --require-hashes --no-deps \
		-r $(WHEELHOUSE)/requirements.txt; \
	$(BIN)/python -m pip install -q --no-index --no-deps --no-build-isolation -e .; \
	$(BIN)/python -c "import snakemake, yaml, jsonschema, fmnist.config; print('snakemake', snakemake.__version__)"; \
	echo "installed $(WHEELHOUSE)/ into $(VENV) in $$(( $$(date +%s) - t0 )) s, without network; run" \
		"the workflow with SNAKEMAKE_PROFILE=profiles/greedy (no pulp: docs/cluster.md)"

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

# Two passes: the workers, then the tests marked `alone` (a plan checked against the time of real
# runs: beside other workers its measurement and its runs see different loads) with nothing beside
# them. --durations: the slowest tests' times, printed where CI's log ends.
test: setup test-deps
	$(BIN)/pytest $(XDIST) -m "not alone" --durations=30 $(PYTEST_ARGS)
	$(BIN)/pytest -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: PYTEST_ARGS selected none of them

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
