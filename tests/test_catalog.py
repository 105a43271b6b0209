"""What the Snakemake workflow catalog checks (its generator script, scripts/generate-catalog.py):
workflow/Snakefile, .smk rule modules, config/README.md, the settings file, snakefmt and --lint clean."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
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


def test_config_schema_ships_where_the_catalog_looks_and_is_the_package_schema():
    # src/fmnist/schema.yaml is the source of truth (package data: `python -m fmnist` validates
    # with it outside a checkout); the catalog reads workflow/schemas/config.schema.yaml.
    shipped = REPO / "workflow" / "schemas" / "config.schema.yaml"
    from fmnist.config import SCHEMA_PATH

    assert shipped.read_bytes() == SCHEMA_PATH.read_bytes(), (
        f"{shipped.relative_to(REPO)} differs from src/fmnist/schema.yaml (the source of truth); "
        "fix: cp src/fmnist/schema.yaml workflow/schemas/config.schema.yaml"
    )


# ---- Parsing with Snakemake alone (the catalog's linter, a `--sdm conda` user) -------------------

# What parsing the workflow may import besides the standard library and Snakemake's own packages.
HEAVY = ("numpy", "pandas", "torch", "torchvision", "scipy", "matplotlib")


def test_workflow_modules_import_without_numpy_pandas_or_torch():
    """Fast guard: what common.smk imports pulls in none of the job-only libraries."""
    smk = (REPO / "workflow" / "rules" / "common.smk").read_text()
    modules = sorted(set(re.findall(r"^from fmnist import (\w+)", smk, flags=re.M)))
    assert modules, "common.smk imports no fmnist module: the pattern above is stale"
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__('fmnist.' + m)\n"
        f"print(sorted(h for h in {HEAVY!r} if h in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", (
        f"parsing the workflow imports {proc.stdout.strip()} (via fmnist.{', fmnist.'.join(modules)}); "
        "import them inside the functions the jobs call instead"
    )


def pinned_snakefmt() -> str:
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    [pin] = [d for d in dev if d.startswith("snakefmt==")]
    return pin


@pytest.fixture(scope="session")
def snakemake_only(tmp_path_factory) -> Path:
    """A venv holding only Snakemake (this venv's version) and the pinned snakefmt: its bin/ directory.

    Built once per session with pip (its wheel cache makes later sessions quick).
    """
    venv = tmp_path_factory.mktemp("snakemake-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = [f"snakemake=={metadata.version('snakemake')}", pinned_snakefmt()]
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pins],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, f"pip install {' '.join(pins)} failed:\n{proc.stderr[-3000:]}"
    return venv / "bin"


def run_alone(bin_dir: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a tool of the Snakemake-only venv in `root`, with no trace of this venv or src/ on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=root, capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/full.yaml"])
def test_snakemake_alone_lints_and_dry_runs(snakemake_only, tmp_path, configfile):
    root = make_workflow(tmp_path / "wf")
    for heavy in HEAVY:  # the venv really lacks them (a test that cannot fail proves nothing)
        probe = run_alone(snakemake_only, root, "python", "-c", f"import {heavy}")
        assert probe.returncode != 0, f"the Snakemake-only venv has {heavy}"
    lint = run_alone(snakemake_only, root, "snakemake", "--lint", "--configfile", configfile)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, (
        lint.stdout[-3000:] + lint.stderr[-3000:]
    )
    dry = run_alone(snakemake_only, root, "snakemake", "-n", "--configfile", configfile)
    assert dry.returncode == 0 and "train" in dry.stdout, dry.stdout[-3000:] + dry.stderr[-3000:]
    fmt = run_alone(snakemake_only, root, "snakefmt", "--config", str(REPO / "pyproject.toml"), "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
