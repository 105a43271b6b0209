"""Shared fixtures: the real Fashion-MNIST files (Debian's dataset-fashion-mnist), small prepared slices,
and self-contained copies of the workflow in temporary directories for real Snakemake runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DATASET_DIR = Path(os.environ.get("FMNIST_DATASET_DIR", "/usr/share/datasets/fashion-mnist"))
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def require_dataset() -> Path:
    """The real dataset directory; a missing one fails the test (CI must not silently skip)."""
    if not (DATASET_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"Fashion-MNIST not found in {DATASET_DIR}: run `apt-get install dataset-fashion-mnist` "
            "or set FMNIST_DATASET_DIR to a directory holding the four IDX .gz files"
        )
    return DATASET_DIR


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    return require_dataset()


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory, dataset_dir) -> Path:
    """The four verified IDX files, fetched once per session by the real fetch code."""
    from fmnist import fetch

    out = tmp_path_factory.mktemp("raw")
    for name in fetch.FILES:
        fetch.fetch(name, [str(dataset_dir)], out / name, log=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def prepared_small(tmp_path_factory, raw_dir) -> Path:
    """A prepared file with a stratified slice: 2,000 train (200 of them val) and 1,000 test images."""
    from fmnist import fetch

    out = tmp_path_factory.mktemp("prepared") / "fashion_mnist.npz"
    fetch.prepare(raw_dir, out, val_fraction=0.1, split_seed=0, train_limit=2000, test_limit=1000)
    return out


def tiny_config(**overrides) -> dict:
    """A config for fast real workflow runs on a small slice of the real data."""
    from fmnist.config import deep_merge

    cfg = {
        "data": {"dir": "data", "sources": [str(DATASET_DIR)], "train_limit": 2000, "test_limit": 1000},
        "threads": 1,
        "device": "cpu",
        "defaults": {"epochs": 2, "batch_size": 64, "early_stopping": {"patience": 5}},
        "studies": {"tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0]}},
    }
    return deep_merge(cfg, overrides)


WORKFLOW_PARTS = ("workflow", "config", "profiles", "src")


def make_workflow(root: Path, config: dict | None = None) -> Path:
    """Copy the workflow (root Snakefile, workflow/ with its envs, config, profiles, the fmnist library) into `root`.

    The copy is self-contained: its workflow imports its own src/ (common.smk puts it first on
    sys.path), so a test may edit the library or the templates there without touching the checkout.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    for d in WORKFLOW_PARTS:
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if config is not None:
        write_config(root, config)
    return root


def write_config(root: Path, config: dict, name: str = "test.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(root: Path, *args: str, check: bool = True, configfile: str = "test.yaml",
              timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI in `root` with the test config; output captured as text. The run
    cache's per-file lines are kept (FMNIST_CACHE_MESSAGES): tests read them as evidence."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "FMNIST_CACHE_MESSAGES": "1"}
    # --configfile takes several values, so it goes first: a target after it would be read as a config file.
    cmd = [SNAKEMAKE, "--configfile", configfile, "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


NOTHING_TO_DO = "Nothing to be done"


def planned_jobs(root: Path, *targets: str) -> dict[str, int]:
    """Rule -> job count that `snakemake -n` would run now (empty when there is nothing to do).

    Empty only when Snakemake says so ("Nothing to be done"), or prints its job table with a total of 0
    (as with --until); any other output is an error, so a change in Snakemake's output format cannot
    make "nothing planned" pass unnoticed.
    """
    proc = snakemake(root, "-n", *targets)
    return planned_counts(proc.stdout + proc.stderr)


def planned_counts(text: str) -> dict[str, int]:
    """The job table of a `snakemake -n` output (see planned_jobs)."""
    counts: dict[str, int] = {}
    total = None
    in_table = seen_table = False
    for line in text.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = seen_table = True
            continue
        if in_table:
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] == "total":
                    total = int(parts[1])
                else:
                    counts[parts[0]] = int(parts[1])
            elif parts and not set(line.strip()) <= {"-", " "}:
                in_table = False
    nothing = NOTHING_TO_DO in text
    if nothing and not seen_table:
        return {}
    if nothing or not seen_table or total != sum(counts.values()):
        raise AssertionError(
            f"snakemake -n printed neither {NOTHING_TO_DO!r} nor a job table whose rows add up to its "
            f"total (has its output format changed?):\n{text[-3000:]}"
        )
    return counts


# The longest files first (measured with `pytest --durations`): under pytest-xdist (`make test` keeps
# this order with --no-loadscope-reorder and hands out whole files) the long files start at once on
# their own workers, the other files fill the workers as they free up, and the short files come last,
# so no worker is left with a long file to finish alone. The two SLURM files lead: their tests mostly
# wait for SLURM's time limits, kills and requeues (and for the executor's status checks, which back
# off while no job finishes), so they wait beside the CPU-bound files instead of after them; then the
# smoke run of config/full.yaml, the longest CPU-bound file.
LONGEST_FIRST = (
    "test_slurm.py",
    "test_slurm_recovery.py",
    "test_smoke.py",
    "test_faults.py",
    "test_resume.py",
    "test_module.py",
    "test_workflow.py",
    "test_report_workflow.py",
    "test_recipes.py",
    "test_features.py",
    "test_packs.py",
    "test_bench.py",
    "test_run_cache.py",
)


def pytest_collection_modifyitems(config, items):
    """Files in LONGEST_FIRST order, the rest after them in their own order (the sort is stable)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="module")
def slurm_cluster():
    """A private single-node SLURM (tests/slurm_cluster.py), one per test module: the SLURM files on
    two pytest-xdist workers each wait on their own cluster."""
    from slurm_cluster import running_cluster

    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def private_gpu_locks(tmp_path_factory, monkeypatch):
    """Each test's GPU locks in its own folder: the default one (/tmp/fmnist-gpu-locks) is shared by
    every workflow on the machine, so tests side by side would wait on each other's slots."""
    monkeypatch.setenv("FMNIST_GPU_LOCK_DIR", str(tmp_path_factory.mktemp("gpu-locks")))


def resolve_run(study: dict, **cfg) -> dict:
    """The first run of a one-study config, resolved and expanded as the workflow would."""
    from fmnist import config, experiments

    full = config.validate({**cfg, "studies": {"t": study}})
    runs, _ = experiments.expand(full)
    return next(iter(runs.values()))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private throughput cache (FMNIST_CACHE_DIR) for the test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(d))
    return d


@pytest.fixture()
def record_copy(tmp_path) -> Path:
    """A copy of the committed CPU record (docs/record/cpu), to edit."""
    dest = tmp_path / "cpu"
    shutil.copytree(REPO / "docs" / "record" / "cpu", dest)
    return dest
