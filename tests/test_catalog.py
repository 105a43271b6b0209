"""What the Snakemake workflow catalog checks (its generator script, scripts/generate-catalog.py):
workflow/Snakefile, .smk rule modules, config/README.md, the settings file, snakefmt and --lint clean."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, make_workflow, snakemake, tiny_config

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
# ...nor the status screen, which the workflow has no use for.
NOT_PARSED = (*HEAVY, "fmnist.status")


def test_workflow_modules_import_without_numpy_pandas_or_torch():
    """Fast guard: what the rules import pulls in none of the job-only libraries (nor the status screen)."""
    smk = "".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    modules = sorted(set(re.findall(r"^from fmnist import (\w+)", smk, flags=re.M)))
    assert "workflow" in modules, "the rules do not import fmnist.workflow: the pattern above is stale"
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__('fmnist.' + m)\n"
        f"print(sorted(h for h in {NOT_PARSED!r} if h in sys.modules))"
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


@pytest.mark.slow
def test_snakemake_alone_starts_a_real_run(snakemake_only, tmp_path, prepared_small):
    """A `--sdm conda` user's main snakemake: the parse-time checks of a real run (the prepared
    file's, the cache links') and the start-up check of the raw files, then a job that needs only
    the standard library (download)."""
    root = make_workflow(tmp_path / "wf", tiny_config())
    prepared = root / "data" / "prepared" / "fashion_mnist.npz"
    prepared.parent.mkdir(parents=True)
    shutil.copy(prepared_small, prepared)
    target = "data/raw/train-labels-idx1-ubyte"
    proc = run_alone(snakemake_only, root, "snakemake", "--configfile", "test.yaml", "--cores", "1", target)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (root / target).is_file()
    assert prepared.with_name(".fashion_mnist.npz.verified").is_file(), "the prepared file was not checked"


# ---- What the catalog's users expect: .test, a report landing text, CI -------------------------


@pytest.mark.slow
def test_the_ci_study_in_dot_test_runs_every_rule_and_reports(tmp_path):
    """What .github/workflows/main.yml runs: the .test study end to end, then Snakemake's report."""
    root = make_workflow(tmp_path / "wf")
    shutil.copytree(REPO / ".test", root / ".test")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    base = [SNAKEMAKE, "--directory", ".test", "--snakefile", "workflow/Snakefile", "--cores", "2"]
    run = subprocess.run(base, cwd=root, capture_output=True, text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert (root / ".test" / "reports" / "summary.html").is_file()
    report = subprocess.run([*base, "--report", "report.zip"], cwd=root, capture_output=True,
                            text=True, env=env, timeout=600)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    with zipfile.ZipFile(root / ".test" / "report.zip") as z:
        pages = [n for n in z.namelist() if n.endswith("report.html")]
        assert pages, z.namelist()[:20]
        # The landing text (workflow/report/workflow.rst) is the report's start page.
        html = z.read(pages[0]).decode()
    assert "Fashion-MNIST model studies of five course reports" in html


def test_the_workflow_has_a_report_landing_text():
    snakefile = (REPO / "workflow" / "Snakefile").read_text()
    m = re.search(r'^report:\s*"([^"]+)"', snakefile, flags=re.M)
    assert m and (REPO / "workflow" / m.group(1)).is_file(), "workflow/Snakefile needs a global report:"


# ---- Releases: fmnist.__version__ is the one place the version is written ----------------------


def release_notes():
    spec = importlib.util.spec_from_file_location("release_notes", REPO / ".github" / "release_notes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_version_is_written_once_and_the_changelog_releases_it():
    import fmnist

    notes = release_notes()
    assert notes.package_version() == fmnist.__version__
    assert notes.check(f"v{fmnist.__version__}").strip(), "the release's CHANGELOG section is empty"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fmnist.__version__"}
    # Every release tag of this checkout has its CHANGELOG section.
    tags = subprocess.run(["git", "tag", "-l", "v*"], cwd=REPO, capture_output=True, text=True).stdout.split()
    released = {v for v, _date in notes.releases((REPO / "CHANGELOG.md").read_text())}
    assert {t.removeprefix("v") for t in tags} <= released


def test_release_check_refuses_a_version_the_changelog_does_not_release(tmp_path):
    notes = release_notes()
    (tmp_path / "src" / "fmnist").mkdir(parents=True)
    shutil.copy(REPO / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    (tmp_path / "src" / "fmnist" / "__init__.py").write_text('__version__ = "9.9.9"\n')
    with pytest.raises(SystemExit, match=r"add a `## \[9\.9\.9\] - YYYY-MM-DD` section"):
        notes.check(None, repo=tmp_path)
    import fmnist

    (tmp_path / "src" / "fmnist" / "__init__.py").write_text(f'__version__ = "{fmnist.__version__}"\n')
    assert notes.check(None, repo=tmp_path)
    with pytest.raises(SystemExit, match="does not name"):
        notes.check("v0.0.1", repo=tmp_path)


def test_ci_mirrors_ci_run_and_runs_what_the_catalog_expects():
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "main.yml").read_text())
    steps = [s for job in ci["jobs"].values() for s in job["steps"]]
    runs = " ; ".join(s.get("run", "") for s in steps)
    for command in re.findall(r"^make \w+", (REPO / ".ci" / "run").read_text(), flags=re.M):
        assert command in runs, f".ci/run's `{command}` is not in the GitHub workflow"
    action = [s["with"] for s in steps if s.get("uses", "").startswith("snakemake/snakemake-github-action@")]
    args = [w["args"] for w in action]
    assert any(a.startswith("--lint") for a in args), "no --lint with the Snakemake GitHub action"
    assert any(w["directory"] == ".test" and "--cores" in w["args"] and "--report" not in w["args"] for w in action)
    assert any(w["directory"] == ".test" and "--report" in w["args"] for w in action)
    assert all(w["snakefile"] == "workflow/Snakefile" for w in action)
    assert (REPO / ".test" / "config" / "config.yaml").is_file()
