"""Fault injection through real Snakemake runs: every file the workflow reads back heals or is named with its fix.

One tiny two-run workflow is trained once per module; each case works on its own copy (run cache
included), damages one file (random bytes, truncation, empty, another run's file, unreadable), runs
Snakemake and asserts the healing or the one message with its fix, and that the other run's results
(files and cache entries) are byte for byte what they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, make_workflow, snakemake, tiny_config, write_config

from fmnist.runfiles import RUN_OUTPUTS

pytestmark = pytest.mark.slow

A = "standard_cnn.none.default.s0"  # the run each case damages
B = "standard_cnn.none.default.s1"  # the run no case may touch
CONFIG = tiny_config(
    defaults={"epochs": 1, "train_fraction": 0.25},
    studies={"tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0, 1]}},
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset_dir) -> Path:
    root = make_workflow(tmp_path_factory.mktemp("trained"), CONFIG)
    snakemake(root)
    return root


def clone(src: Path, dst: Path) -> Path:
    """Copy a workflow directory; links into its run cache are re-pointed into the copy's cache.

    Links keep their own mtimes (Snakemake judges a link by its own), so the copy is as up to date.
    """
    shutil.copytree(src, dst, symlinks=True)
    for link in dst.rglob("*"):
        if link.is_symlink():
            target = Path(os.readlink(link))
            if target.is_absolute() and target.is_relative_to(src):
                st = link.lstat()
                link.unlink()
                link.symlink_to(dst / target.relative_to(src))
                os.utime(link, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    return dst


def fingerprint(root: Path, run: str) -> dict[str, str]:
    """SHA-256 of each of a run's results and the cache entries they link to."""
    out = {}
    for name in RUN_OUTPUTS:
        p = root / "results" / "runs" / run / name
        out[name] = hashlib.sha256(p.read_bytes()).hexdigest()
        out[name + " ->"] = os.readlink(p) if p.is_symlink() else ""
    return out


@pytest.fixture
def wf(trained, tmp_path):
    root = clone(trained, tmp_path / "wf")
    before = fingerprint(root, B)
    yield root
    assert fingerprint(root, B) == before, "another run's results were touched"


def run_file(root: Path, name: str, run: str = A) -> Path:
    return root / "results" / "runs" / run / name


def overwrite(path: Path, data: bytes) -> None:
    """Write through a link, as a failing disk or a careless `cp` would: the cache entry is damaged too."""
    with open(path, "wb") as fh:
        fh.write(data)


def random_bytes(path: Path) -> None:
    overwrite(path, os.urandom(max(64, path.stat().st_size)))


def truncate(path: Path) -> None:
    overwrite(path, path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    overwrite(path, b"")


def other_run(path: Path) -> None:
    overwrite(path, (path.parents[1] / B / path.name).read_bytes())


def unreadable(path: Path) -> None:
    """The cache entry behind the link removed (as root, chmod cannot make a file unreadable)."""
    os.remove(path.resolve())


FAULTS = {
    "random_bytes": random_bytes,
    "truncated": truncate,
    "empty": empty,
    "other_run": other_run,
    "unreadable": unreadable,
}
# The job that reads each run output back first: forced, since a file damaged behind Snakemake's back
# does not by itself make any job rerun.
READER = {
    "metrics.json": ("aggregate", "results/runs.csv"),
    **{
        name: ("plot_run", f"results/runs/{A}/curves.png")
        for name in ("history.csv", "confusion.csv", "model.pt")
    },
}
EXPECTED = {
    "random_bytes": "not valid JSON|not a readable CSV|header is|SHA-256",
    "truncated": "not valid JSON|not a row of|epoch rows|counts differ|SHA-256",
    "empty": "it is empty",
    "other_run": "another run's file",
}
CASES = [
    ("metrics.json", "random_bytes"),
    ("metrics.json", "truncated"),
    ("metrics.json", "empty"),
    ("metrics.json", "other_run"),
    ("history.csv", "truncated"),
    ("history.csv", "other_run"),
    ("confusion.csv", "random_bytes"),
    ("confusion.csv", "other_run"),
    ("model.pt", "truncated"),
    ("model.pt", "empty"),
    ("model.pt", "other_run"),
]


def fix_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("Fix: ")]
    assert lines, text[-3000:]
    return lines[-1].removeprefix("Fix: ")


def run_fix(root: Path, command: str) -> None:
    """Run a fix line as a user would, with this test's snakemake executable and environment."""
    command = command.replace("&& snakemake ", f"&& {shlex.quote(SNAKEMAKE)} --cores 2 ")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        command, shell=True, cwd=root, capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize(("name", "fault"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_damaged_run_output_is_named_with_its_fix(wf, name, fault):
    path = run_file(wf, name)
    FAULTS[fault](path)
    rule, target = READER[name]
    proc = snakemake(wf, "--forcerun", rule, "--", target, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"fmnist: results/runs/{A}/{name}: " in text, text[-4000:]
    assert any(p in text for p in EXPECTED[fault].split("|")), text[-4000:]
    assert "Traceback" not in text, "a traceback instead of the one message"
    fix = fix_line(text)
    # The fix removes the damaged file and its cache entry (fetching it would bring the damage back).
    assert os.path.realpath(path) in fix and f"-- results/runs/{A}/{name}" in fix
    assert "--configfile test.yaml" in fix
    if (name, fault) in {
        ("metrics.json", "truncated"),
        ("confusion.csv", "other_run"),
    }:
        run_fix(wf, fix)  # the printed command heals it: the run is trained again
        assert json.loads(run_file(wf, "metrics.json").read_text())["run_id"] == A
        assert path.resolve().parent == (wf / "cache").resolve(), "the new result was not cached"
        assert path.resolve().is_file()
        snakemake(wf, "--forcerun", rule, "--", target)


@pytest.mark.parametrize("name", ["metrics.json", "model.pt"])
def test_output_whose_cache_entry_is_gone_is_rebuilt(wf, name):
    """Unreadable: the cache entry behind the link removed (as root, chmod cannot make a file unreadable)."""
    unreadable(run_file(wf, name))
    proc = snakemake(wf, "--", f"results/runs/{A}/{name}")
    text = proc.stdout + proc.stderr
    assert f"results/runs/{A}: {name} linked to removed cache entries" in text
    assert f"Moving output file results/runs/{A}/metrics.json to cache" in text, "not trained again"
    assert run_file(wf, name).resolve().is_file()
    assert json.loads(run_file(wf, "metrics.json").read_text())["run_id"] == A


def test_damaged_resume_state_is_moved_aside(wf):
    """A run trained anew (here: its epochs changed) finds random bytes in its resume file and goes on."""
    resume = run_file(wf, "resume.pt")
    resume.write_bytes(os.urandom(4096))
    write_config(
        wf, tiny_config(**{**CONFIG, "defaults": {**CONFIG["defaults"], "epochs": 2}}), "other.yaml"
    )
    snakemake(wf, "--", f"results/runs/{A}/metrics.json", configfile="other.yaml")
    aside = list(resume.parent.glob("resume.pt.unusable-*"))
    assert len(aside) == 1 and not resume.exists()
    log = (wf / "logs" / "train" / f"{A}.log").read_text()
    assert "it cannot be loaded" in log and "training from epoch 0" in log
    assert json.loads(run_file(wf, "metrics.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize("fault", ["random_bytes", "truncated", "empty"])
def test_damaged_prepared_file_is_rebuilt_and_runs_restored(wf, fault):
    prepared = wf / "data" / "prepared" / "fashion_mnist.npz"
    good = prepared.read_bytes()
    FAULTS[fault](prepared)
    # Moved aside at start-up; rebuilt when a job needs it (here: run A, its outputs removed; a
    # forced run would train, see test_run_cache).
    for name in ("metrics.json", "history.csv", "confusion.csv", "model.pt"):
        run_file(wf, name).unlink()
    proc = snakemake(wf, "--", f"results/runs/{A}/metrics.json")
    text = proc.stdout + proc.stderr
    assert (
        f"[fmnist] {Path('data/prepared/fashion_mnist.npz')}" in text
        and "it will be prepared again" in text
    )
    assert len(list(prepared.parent.glob("fashion_mnist.npz.corrupt-*"))) == 1
    assert len(prepared.read_bytes()) == len(good)
    # The run depends on the rebuilt file but is restored from the run cache, not trained again.
    assert f"Symlinking output file results/runs/{A}/metrics.json from cache" in text
    assert "to cache" not in text, "a run was trained again"


@pytest.mark.parametrize("fault", ["random_bytes", "truncated", "empty"])
def test_damaged_raw_file_is_fetched_again(wf, fault):
    raw = wf / "data" / "raw" / "train-labels-idx1-ubyte"
    good = raw.read_bytes()
    FAULTS[fault](raw)
    # A dry run changes no file; a real run with a job to do checks the cache first.
    assert snakemake(wf, "-n") and raw.read_bytes() != good
    proc = snakemake(wf, "--forcerun", "aggregate")
    assert "failed its SHA-256 check" in proc.stdout + proc.stderr
    assert (
        raw.read_bytes() == good
        and len(list(raw.parent.glob("train-labels-idx1-ubyte.corrupt-*"))) == 1
    )


@pytest.mark.parametrize("fault", ["truncated", "empty", "random_bytes"])
def test_damaged_published_file_is_named_with_its_fix(wf, fault):
    published = wf / "config" / "published.yaml"
    if fault == "random_bytes":
        overwrite(published, b"published: [\x00\xff" + os.urandom(200))
    else:
        FAULTS[fault](published)
    proc = snakemake(wf, "-n", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config/published.yaml" in text, text[-3000:]
    assert "git checkout -- config/published.yaml" in text and "Traceback" not in text


def test_published_file_of_wrong_shape_is_named(wf):
    (wf / "config" / "published.yaml").write_text(yaml.safe_dump(["not", "a", "mapping"]))
    proc = snakemake(wf, "-n", check=False)
    assert "holds a YAML list" in proc.stdout + proc.stderr
