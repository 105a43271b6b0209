"""The command line's edges: status of another directory reads that directory's study, a closed pipe
ends a command quietly, one run's config for `fmnist train` straight from a study."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, make_workflow, snakemake, tiny_config

ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def fmnist(*args: str, cwd=REPO, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmnist", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300, **kw)


def test_status_of_a_directory_reads_that_directorys_config(tmp_path):
    study = tmp_path / "study"
    (study / "config").mkdir(parents=True)
    (study / "config" / "config.yaml").write_text(yaml.safe_dump(tiny_config(studies={"tiny": {"seeds": [0, 1, 2]}})))
    r = fmnist("status", "--directory", str(study), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert [x["run"] for x in s["runs"]] == [f"standard_cnn.none.default.s{i}" for i in range(3)]
    assert s["counts"]["waiting"] == 3
    text = fmnist("status", "--directory", str(study)).stdout
    assert text.startswith(os.path.relpath(study / "config" / "config.yaml", REPO) + ": 3 runs")


def test_a_reader_that_closes_early_ends_the_command_without_a_traceback():
    """`fmnist runs | head -1`: the reader closes its end after one line; fmnist's next writes meet a
    closed pipe. The command ends quietly with 141 (128 + SIGPIPE), as a shell reports it."""
    proc = subprocess.Popen([sys.executable, "-m", "fmnist", "runs", "--configfile", "config/full.yaml", "--json"],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    first = proc.stdout.read(16)
    proc.stdout.close()  # the reader goes away with most of the JSON unread
    _, err = proc.communicate(timeout=300)
    assert first.startswith(b"{")
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert proc.returncode == 141, err.decode()


def test_nested_config_values_from_the_command_line_take_their_types():
    """`--config 'defaults={epochs: 1, ...}'` as Snakemake parses it: YAML's base loader, every nested
    scalar a string. The config keeps the integer, float and boolean the user wrote."""
    from snakemake.cli import parse_config

    from fmnist import config, experiments

    given = parse_config(["defaults={epochs: 1, optimizer: {lr: 1e-3}, early_stopping: {enabled: false}}",
                          "data={train_limit: 600}", "studies={tiny: {models: [standard_cnn], seeds: [3, 4]}}"])
    assert given["defaults"]["epochs"] == "1"  # what Snakemake hands over
    cfg = config.load(REPO / "config" / "config.yaml", given)
    assert cfg["defaults"]["epochs"] == 1 and cfg["data"]["train_limit"] == 600
    assert cfg["defaults"]["optimizer"]["lr"] == 1e-3 and cfg["defaults"]["early_stopping"]["enabled"] is False
    runs, studies = experiments.expand(cfg)
    assert studies["tiny"] == ["standard_cnn.none.default.s3", "standard_cnn.none.default.s4"]
    assert runs["standard_cnn.none.default.s3"]["train"]["epochs"] == 1
    # a string that is no such value still fails, naming the key
    with pytest.raises(config.ConfigError, match=r"defaults.epochs: 'one' is not of type 'integer'"):
        config.load(REPO / "config" / "config.yaml", parse_config(["defaults={epochs: one}"]))


@pytest.mark.slow
def test_a_moved_checkout_plans_the_report_with_relative_template_inputs(tmp_path):
    """The report rule's templates are inputs by relative path, so the same tree elsewhere has the
    same inputs (Snakemake reruns a job whose input list changed). Through a real dry run, which also
    takes a nested --config from the command line."""
    root = make_workflow(tmp_path / "moved", tiny_config())
    proc = snakemake(root, "-n", "-p", "reports/summary.html", "--config", "defaults={epochs: 1}")
    text = proc.stdout + proc.stderr
    (block,) = [b for b in text.split("\nrule ")[1:] if b.startswith("report:")]
    inputs = block.split("input: ", 1)[1].split("\n", 1)[0].split(", ")
    templates = [p for p in inputs if p.endswith(".j2")]
    assert templates and all(not os.path.isabs(p) and (root / p).is_file() for p in templates), templates
    assert "is not of type" not in text


def test_train_one_run_of_a_study_by_its_id_on_the_studys_splits(tmp_path, prepared_small, raw_dir):
    """`fmnist train --run RUN_ID --configfile C`: the run as the workflow hands it to its job, trained
    on the study's splits; a prepared file of other splits (another train_limit) is refused."""
    from fmnist import config, gpus

    cfg = tiny_config(defaults={"epochs": 1, "train_fraction": 0.25})  # train_limit 2000, test_limit 1000
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    rid = "standard_cnn.none.default.s0"
    r = fmnist("train", "--run", rid, "--configfile", str(tmp_path / "study.yaml"), "--data", str(prepared_small),
               "--out", str(tmp_path / "out"), "--device", "cpu", "--threads", "1")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["config"] == gpus.expand_for_jobs(config.validate(cfg))[0][rid]
    assert metrics["data"]["train_limit"] == 2000 and metrics["n_test"] == 1000

    other = tiny_config(data={"train_limit": 3000})
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    r = fmnist("train", "--run", rid, "--configfile", str(tmp_path / "other.yaml"), "--data", str(prepared_small),
               "--out", str(tmp_path / "other"), "--device", "cpu")
    assert r.returncode == 2 and "train_limit 2000 (wanted 3000)" in r.stderr and "--data OTHER.npz" in r.stderr
    assert not (tmp_path / "other").exists()
    # a finished run's metrics.json as --config: checked against the splits it records
    from fmnist import fetch

    fetch.prepare(raw_dir, tmp_path / "other.npz", val_fraction=0.1, split_seed=0, train_limit=1000, test_limit=1000)
    r = fmnist("train", "--config", str(tmp_path / "out" / "metrics.json"), "--data", str(tmp_path / "other.npz"),
               "--out", str(tmp_path / "again"), "--device", "cpu")
    assert r.returncode == 2 and "train_limit 1000 (wanted 2000)" in r.stderr, r.stderr
    r = fmnist("train", "--run", "standard_cnn.none.default.s9", "--configfile", str(tmp_path / "study.yaml"),
               "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "no run 'standard_cnn.none.default.s9'" in r.stderr
