"""The run cache: a result, once computed, survives other configs and reverted edits, and comes back without training.

Run ids name runs, not their content: the same id under another config (or after an edit) is another
result. Snakemake's between-workflow cache (`cache: True` on the train rule, `--cache` in
profiles/default, entries in cache/) keys each result by its params, code and inputs, so both
results are kept and switching back links the earlier one in again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import make_workflow, snakemake, tiny_config, write_config

from fmnist.config import deep_merge

pytestmark = pytest.mark.slow

RUN = "standard_cnn.none.default.s0"
TARGET = f"results/runs/{RUN}/metrics.json"
DEFAULT = tiny_config(defaults={"epochs": 1, "train_fraction": 0.25})


@pytest.fixture(scope="module")
def once(tmp_path_factory) -> Path:
    """A workflow that has trained RUN once (data fetched and prepared, the result in its cache/): each
    test starts from a copy of it instead of training the same first run again."""
    root = make_workflow(tmp_path_factory.mktemp("trained") / "wf", DEFAULT)
    assert trained(snakemake(root, "--", TARGET))
    return root


@pytest.fixture
def root(once, tmp_path) -> Path:
    """A copy of `once` (links copied as links, with their times): a project that has just trained RUN."""
    copy = shutil.copytree(once, tmp_path / "wf", symlinks=True)
    assert_relative_links(copy)
    return copy


def result(root: Path) -> tuple[str, bytes]:
    """Where the run's metrics.json lives (its cache entry) and its bytes."""
    path = root / TARGET
    return str(path.resolve()), path.read_bytes()


def trained(proc) -> bool:
    """Whether a Snakemake run trained (stored a new result in the cache) rather than restored one."""
    text = proc.stdout + proc.stderr
    return f"Moving output file {TARGET} to cache" in text


def test_another_config_and_back_trains_nothing_the_second_time(root):
    write_config(root, deep_merge(DEFAULT, {"defaults": {"epochs": 2}}), "other.yaml")
    first = result(root)

    # Another config with the same run id: its own result, the first one kept in the cache.
    assert trained(snakemake(root, "--", TARGET, configfile="other.yaml"))
    other = result(root)
    assert json.loads(other[1])["epochs_run"] == 2 and other[0] != first[0]
    assert Path(first[0]).read_bytes() == first[1]

    # Back to the default study: planned and done as a restore from the cache, no training.
    plan = snakemake(root, "-n", "--", TARGET)
    assert (
        f"Output file {TARGET} will be obtained from global between-workflow cache"
        in plan.stdout + plan.stderr
    )
    back = snakemake(root, "--", TARGET)
    assert (
        not trained(back)
        and f"Symlinking output file {TARGET} from cache" in back.stdout + back.stderr
    )
    assert result(root) == first
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(
        snakemake(root, "-n", "--", TARGET)
    )


def test_an_edit_reverted_is_restored_from_the_cache(root):
    first = result(root)
    write_config(root, deep_merge(DEFAULT, {"defaults": {"optimizer": {"lr": 0.01}}}))
    assert trained(snakemake(root, "--", TARGET))
    assert json.loads(result(root)[1])["config"]["train"]["optimizer"]["lr"] == 0.01
    write_config(root, DEFAULT)  # the edit reverted
    assert not trained(snakemake(root, "--", TARGET))
    assert result(root) == first


def text(proc) -> str:
    return proc.stdout + proc.stderr


FROM_CACHE = f"Output file {TARGET} will be obtained from global between-workflow cache"


@pytest.mark.parametrize(
    "force",
    [["--forcerun", "train"], ["--forceall"], ["--forcerun", TARGET], ["--force"]],
    ids=["forcerun-train", "forceall", "forcerun-file", "force-target"],
)
def test_forcing_a_run_retrains_it_and_replaces_its_entry(root, force):
    first = result(root)
    plan = snakemake(root, "-n", *force, "--", TARGET)
    assert FROM_CACHE not in text(plan) and "train" in plan.stdout
    again = snakemake(root, *force, "--", TARGET)
    assert trained(again)
    second = result(root)
    # The same provenance, so the same entry, now holding the new result (its timings differ).
    assert second[0] == first[0] and second[1] != first[1]
    # Not forced: restored from the (replaced) entry, not trained.
    (root / TARGET).unlink()
    assert not trained(snakemake(root, "--", TARGET)) and result(root) == second


def test_forcing_another_rule_retrains_nothing(root):
    for name in ("metrics.json", "history.csv", "confusion.csv", "model.pt"):
        (root / f"results/runs/{RUN}/{name}").unlink()
    plan = snakemake(root, "-n", "--forcerun", "plot_run", "--", TARGET)
    assert FROM_CACHE in text(plan)


@pytest.mark.parametrize("how", ["--profile", "--workflow-profile"])
def test_the_slurm_profile_uses_the_cache_either_way_it_is_given(root, how):
    # `--profile profiles/slurm` also loads profiles/default; `--workflow-profile` replaces it.
    # Both must restore from the cache (a dry run: it needs no cluster).
    (root / TARGET).unlink()
    plan = snakemake(root, "-n", how, "profiles/slurm", "--", TARGET)
    assert FROM_CACHE in text(plan), text(plan)[-3000:]


def assert_relative_links(root: Path) -> None:
    for name in ("metrics.json", "history.csv", "confusion.csv", "model.pt"):
        link = root / f"results/runs/{RUN}/{name}"
        assert link.is_symlink() and not Path(os.readlink(link)).is_absolute(), os.readlink(link)
        assert (root / "cache") in link.resolve().parents


def test_results_survive_moving_and_copying_the_project(root, tmp_path):
    # A project that has just trained (relinked at the end of the run that trained: the `root`
    # fixture checks its links), moved, then copied.
    first = (root / TARGET).read_bytes()

    moved = root.rename(tmp_path / "moved")
    assert (moved / TARGET).read_bytes() == first
    copy = shutil.copytree(moved, tmp_path / "copy", symlinks=True)
    shutil.rmtree(moved)
    assert (copy / TARGET).read_bytes() == first
    assert "Nothing to be done" in text(snakemake(copy, "-n", "--", TARGET))


def test_absolute_links_of_a_moved_project_are_healed_not_restored(root, tmp_path):
    # Links written as Snakemake writes them (absolute), then the project moved: the next run
    # points them at the moved cache, relatively, and has nothing to redo.
    for link in (root / f"results/runs/{RUN}").iterdir():
        if link.is_symlink():
            stamp = os.lstat(link)
            entry = link.resolve()
            link.unlink()
            link.symlink_to(entry)  # absolute
            os.utime(link, ns=(stamp.st_atime_ns, stamp.st_mtime_ns), follow_symlinks=False)
    moved = root.rename(tmp_path / "moved")
    assert not (moved / TARGET).exists()  # the absolute links are broken by the move
    run = snakemake(moved, "--", TARGET)
    assert "Nothing to be done" in text(run) and not trained(run), text(run)[-3000:]
    assert_relative_links(moved)
