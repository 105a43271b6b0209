"""The workflow as other Snakemake workflows use it: a module of a consumer workflow in another folder,
rerunning exactly what a code edit affects, and parsing without side effects. Real runs, tiny data."""

from __future__ import annotations

import json
import re

import pytest
from conftest import make_workflow, planned_jobs, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

CNN, VIT = "standard_cnn.none.default.s0", "vit_simple.none.default.s0"

# What a user writes (config/README.md): their own folder, their own config, fmnist as a module.
CONSUMER = """\
module fmnist:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from fmnist
"""


@pytest.fixture(scope="module")
def consumer(tmp_path_factory, dataset_dir):
    """A consumer workflow that ran a two-family study (a CNN and a ViT run) to the report."""
    base = tmp_path_factory.mktemp("module")
    lib = make_workflow(base / "fmnist")  # the workflow as shipped; nothing of the study in it
    study = base / "study"
    study.mkdir()
    (study / "Snakefile").write_text(CONSUMER.format(snakefile="../fmnist/workflow/Snakefile"))
    cfg = tiny_config(
        data={"train_limit": 1000, "test_limit": 500},
        defaults={"epochs": 1},
        studies={
            "tiny": {
                "models": ["standard_cnn", "vit_simple"],
                "augmentations": ["none"],
                "seeds": [0],
            }
        },
    )
    write_config(study, cfg)
    snakemake(study)
    return lib, study


def snapshot(*roots):
    """Every file under `roots` but Snakemake's own bookkeeping, with its size and mtime."""
    return {
        p: (p.stat().st_size, p.stat().st_mtime_ns)
        for root in roots
        for p in root.rglob("*")
        if p.is_file() and ".snakemake" not in p.parts and "__pycache__" not in p.parts
    }


def planned_runs(study) -> set[str]:
    """The runs whose train job `snakemake -n` plans."""
    out = snakemake(study, "-n").stdout
    return set(re.findall(r"rule train:.*?wildcards: run=(\S+)", out, flags=re.S))


def edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_consumer_runs_the_study_to_the_report(consumer):
    lib, study = consumer
    report = (study / "reports/summary.html").read_text()
    for rid in (CNN, VIT):
        assert (
            json.loads((study / f"results/runs/{rid}/metrics.json").read_text())["status"] == "ok"
        )
        assert rid in report
    # The consumer has no config/published.yaml: the workflow's own one was found and compared.
    assert "standard_cnn.none.b_default" in (study / "results/tables/published.md").read_text()
    # All output lands in the consumer's folder.
    assert not (lib / "results").exists() and not (lib / "data").exists()
    assert planned_jobs(study) == {}


def test_dry_run_and_lint_change_no_file(consumer):
    lib, study = consumer
    (study / "reports/summary.html").unlink()  # so the dry-run has a job to plan
    raw = study / "data/raw/t10k-labels-idx1-ubyte"
    good = raw.read_bytes()
    # A corrupt cache file: only a real run may repair it.
    raw.write_bytes(good[:50] + b"\x00" + good[51:])
    before = snapshot(lib, study)
    assert planned_jobs(study) == {"report": 1, "all": 1}
    snakemake(study, "--lint")
    assert snapshot(lib, study) == before
    # The consumer has no onstart of its own: its run rebuilds the report and leaves the cache be.
    snakemake(study)
    raw.write_bytes(good)
    assert planned_jobs(study) == {}


def test_comment_only_edit_reruns_nothing(consumer):
    lib, study = consumer
    vit = lib / "src/fmnist/models/vit.py"
    edit(
        vit,
        "from __future__ import annotations\n",
        "from __future__ import annotations  # edited\n\n# a note\n",
    )
    edit(lib / "src/fmnist/train.py", '"""', '"""Edited docstring. ')
    assert planned_jobs(study) == {}


def test_model_family_edit_reruns_only_that_familys_runs(consumer):
    lib, study = consumer
    edit(
        lib / "src/fmnist/models/vit.py",
        "from torch import nn\n",
        "from torch import nn\n\n_EDITED = True\n",
    )
    assert planned_runs(study) == {VIT}
    assert planned_jobs(study) == {
        "train": 1,
        "plot_run": 1,
        "aggregate": 1,
        "figures": 1,
        "report": 1,
        "all": 1,
    }
    cnn_before = (study / f"results/runs/{CNN}/metrics.json").stat().st_mtime_ns
    snakemake(study)
    assert (study / f"results/runs/{CNN}/metrics.json").stat().st_mtime_ns == cnn_before
    assert planned_jobs(study) == {}


def test_report_code_edit_reruns_only_the_report(consumer):
    lib, study = consumer
    edit(lib / "src/fmnist/report.py", "import base64\n", "import base64\n\n_EDITED = True\n")
    assert planned_jobs(study) == {"report": 1, "all": 1}
