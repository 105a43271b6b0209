"""What the Snakemake workflow catalog checks (its generator script, scripts/generate-catalog.py):
workflow/Snakefile, .smk rule modules, config/README.md, the settings file, snakefmt and --lint clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, make_workflow, snakemake

SNAKEFMT = str(Path(sys.executable).with_name("snakefmt"))


def test_layout_the_catalog_looks_for():
    # The generator switches to workflow/ when it exists and then needs workflow/Snakefile there.
    assert (REPO / "workflow" / "Snakefile").is_file()
    assert list((REPO / "workflow" / "rules").glob("*.smk"))
    readme = (REPO / "README.md").read_text().lower()
    assert "snakemake" in readme and "workflow" in readme  # the catalog's search terms
    assert "module fmnist" in (REPO / "config" / "README.md").read_text()
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert usage["report"] is True and usage["software-stack-deployment"]["conda"] is True
    assert {"desc", "flags"} <= set(usage["mandatory-flags"])
    for name in ("LICENSE", "CHANGELOG.md"):
        assert (REPO / name).is_file()


def test_snakemake_files_are_snakefmt_clean():
    files = [
        REPO / "Snakefile",
        REPO / "workflow" / "Snakefile",
        *sorted((REPO / "workflow" / "rules").glob("*.smk")),
    ]
    proc = subprocess.run(
        [SNAKEFMT, "--check", *map(str, files)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, (
        f"snakefmt --check failed; run `snakefmt .` to fix:\n{proc.stdout}{proc.stderr}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/full.yaml"])
def test_lint_is_clean(tmp_path, configfile):
    root = make_workflow(tmp_path / "wf")  # a copy: --lint leaves .snakemake/ behind
    proc = snakemake(root, "--lint", configfile=configfile, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Congratulations" in proc.stdout + proc.stderr
