"""A regular (non-editable) install works: a wheel built from the checkout, installed into a fresh venv,
finds its schema and templates as package data and validates a config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.slow


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    # No PYTHONPATH: the checkout's src/ must not leak into the fresh venv.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv holding the fmnist wheel and, for its dependencies, this environment's packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy, so the build leaves no build/ or egg-info in the checkout.
    src = tmp / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip"]
    built = run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", src)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "dist").glob("fmnist-*.whl")

    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv).check_returncode()
    python = venv / "bin" / "python"
    done = run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel)
    assert done.returncode == 0, done.stdout + done.stderr
    # The dependencies (jsonschema, pyyaml ...) come from this environment through a plain path line:
    # a path added by a .pth file is not scanned for .pth files, so an editable fmnist here stays out.
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_host_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return venv


def test_installed_package_holds_schema_and_templates(venv):
    code = (
        "import fmnist, fmnist.config as c; print(fmnist.__file__); "
        "print(c.SCHEMA_PATH.is_file(), (c.TEMPLATE_DIR / 'summary.html.j2').is_file())"
    )
    out = run(venv / "bin" / "python", "-c", code, cwd=venv)
    assert out.returncode == 0, out.stderr
    where, found = out.stdout.splitlines()
    assert Path(where).resolve().is_relative_to(venv.resolve()), f"fmnist imported from {where}"
    assert found == "True True"


def test_installed_cli_validates_a_config(venv, tmp_path):
    fmnist = venv / "bin" / "fmnist"
    ok = run(fmnist, "runs", "--configfile", REPO / "config" / "config.yaml", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "standard_cnn" in ok.stdout

    bad = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    bad.setdefault("defaults", {})["optimizer"] = {"name": "adamm"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    err = run(fmnist, "runs", "--configfile", tmp_path / "bad.yaml", cwd=tmp_path)
    assert err.returncode != 0
    assert "defaults.optimizer.name: 'adamm' is not allowed" in err.stdout + err.stderr
