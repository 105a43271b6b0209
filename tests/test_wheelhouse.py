"""The offline install of a compute node, rehearsed on this machine: `make wheelhouse` for this
machine's Python and platform, `make offline-install` into a fresh venv with no index and no network,
then Snakemake without pulp plans the default study (profiles/greedy)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, make_workflow

sys.path.insert(0, str(REPO / "tools"))
import lockfile  # noqa: E402

# What the node "has" here: nothing Snakemake needs to parse the workflow (torch and the scientific
# stack are only imported by the jobs), and pulp, which profiles/greedy replaces.
EXCLUDE = "torch torchvision numpy pandas scipy matplotlib pulp"
NO_NETWORK = {
    # pip without its config files (this machine's point at local mirrors), with no index, and any
    # connection it still tries goes to a closed port
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_NO_INDEX": "1",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
}


def this_platform() -> str:
    libc, version = platform.libc_ver()
    if libc != "glibc" or platform.machine() != "x86_64":
        pytest.skip(f"the rehearsal is written for glibc x86_64, not {libc} {platform.machine()}")
    major, minor = version.split(".")[:2]
    return f"manylinux_{major}_{minor}_{platform.machine()}"


def make(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, (
        f"make {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def offline_venv(tmp_path_factory) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    tmp = tmp_path_factory.mktemp("offline")
    wheelhouse, venv = tmp / "wheelhouse", tmp / "venv"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    t0 = time.monotonic()
    try:
        built = make("wheelhouse", f"WHEELHOUSE={wheelhouse}", f"PY={py}", f"PLATFORM={this_platform()}",
                     "EXTRAS=", f"EXCLUDE={EXCLUDE}", f"PYTHON={sys.executable}")  # fmt: skip
    except AssertionError as exc:
        if "Could not fetch URL" in str(exc) or "NewConnectionError" in str(exc):
            pytest.skip("PyPI is out of reach: the wheelhouse cannot be downloaded")
        raise
    print(built.stdout.splitlines()[-2:], f"({time.monotonic() - t0:.0f} s)")
    names = {p.name.split("-")[0].lower() for p in wheelhouse.glob("*.whl")}
    assert "snakemake" in names and not {"pulp", "torch", "numpy"} & names, sorted(names)

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))
    }
    env.update(NO_NETWORK)
    python = shutil.which(f"python{py}") or sys.executable  # a base interpreter, not a venv's
    t0 = time.monotonic()
    out = make("offline-install", f"WHEELHOUSE={wheelhouse}", f"VENV={venv}", "SYSTEM_SITE_PACKAGES=0",
               f"PYTHON={_base_python(python)}", env=env)  # fmt: skip
    print(out.stdout.splitlines()[-1], f"(measured here {time.monotonic() - t0:.1f} s)")
    return venv


def _base_python(python: str) -> str:
    """The interpreter a venv was made from (a venv inside a venv would see the outer one's packages)."""
    base = subprocess.run([python, "-c", "import sys; print(sys._base_executable)"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    return base or python


def venv_env(venv: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SNAKEMAKE_PROFILE")
    }
    env.update(NO_NETWORK, PATH=f"{venv / 'bin'}:{env['PATH']}")
    return env


@pytest.mark.slow
def test_offline_venv_has_the_locked_packages_and_not_pulp(offline_venv):
    python = str(offline_venv / "bin" / "python")
    code = (
        "import importlib.metadata as m, importlib.util as u, json, sys;"
        "print(json.dumps({'pulp': u.find_spec('pulp') is not None, 'torch': u.find_spec('torch') is not None,"
        "'snakemake': m.version('snakemake'), 'jsonschema': m.version('jsonschema'),"
        "'fmnist': __import__('fmnist').__file__, 'prefix': sys.prefix}))"
    )
    import json

    out = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                                    env=venv_env(offline_venv)).stdout)  # fmt: skip
    locked = lockfile.read_lock()
    assert not out["pulp"] and not out["torch"], out  # left out, and no system site-packages
    assert (
        out["snakemake"] == locked["snakemake"].version
        and out["jsonschema"] == locked["jsonschema"].version
    )
    assert Path(out["fmnist"]).resolve().is_relative_to(REPO / "src"), out  # the editable checkout


@pytest.mark.slow
def test_snakemake_without_pulp_plans_the_default_study(offline_venv, tmp_path):
    root = make_workflow(tmp_path / "wf")
    snakemake = str(offline_venv / "bin" / "snakemake")
    env = venv_env(offline_venv)
    proc = subprocess.run([snakemake, "-n", "--cores", "2", "--profile", str(REPO / "profiles" / "greedy")],
                          cwd=root, capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "train" in proc.stdout and "report" in proc.stdout, proc.stdout[-2000:]

    # Scheduling real jobs is where the ILP scheduler would import pulp: three jobs for one core.
    # With the greedy profile they run, and Snakemake says nothing of pulp; without it, the locked
    # Snakemake falls back to greedy itself, with a warning (a later one may not).
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "Snakefile").write_text(
        'rule all:\n    input: expand("out/{i}.txt", i=range(3))\n\n'
        'rule one:\n    output: "out/{i}.txt"\n    shell: "echo {wildcards.i} > {output}"\n'
    )
    base = [snakemake, "--cores", "1"]
    greedy = subprocess.run([*base, "--profile", str(REPO / "profiles" / "greedy")], cwd=tmp_path / "jobs",
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert greedy.returncode == 0, greedy.stderr[-3000:]
    assert len(list((tmp_path / "jobs" / "out").glob("*.txt"))) == 3
    assert "ILP solver" not in greedy.stdout + greedy.stderr, greedy.stderr[-2000:]
    shutil.rmtree(tmp_path / "jobs" / "out")
    ilp = subprocess.run(
        base, cwd=tmp_path / "jobs", capture_output=True, text=True, env=env, timeout=300
    )
    assert "Falling back to greedy scheduler because no ILP solver" in ilp.stdout + ilp.stderr, (
        "without pulp and without profiles/greedy, Snakemake no longer warns and falls back: "
        f"check what it does and update docs/cluster.md\n{ilp.stdout[-2000:]}{ilp.stderr[-2000:]}"
    )


@pytest.mark.slow
def test_wheelhouse_is_the_locks_files(offline_venv):
    """Every downloaded wheel is a file the lock names by hash; a wheel built from a locked sdist is
    pure Python and built reproducibly (the same bytes when built again)."""
    wheelhouse = offline_venv.parent / "wheelhouse"
    locked = lockfile.read_lock()
    built = []
    for line in (wheelhouse / "requirements.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        name, digest = line.split("==")[0], line.split("--hash=sha256:")[1].split()[0]
        files = [f for f in wheelhouse.glob("*.whl") if lockfile.sha256(f) == digest]
        assert len(files) == 1, f"{name}: no wheel in the wheelhouse has the hash its requirements.txt gives"
        if digest not in locked[name].hashes:
            assert "built here" in line and files[0].name.endswith("-none-any.whl"), line
            built.append(files[0])
    for wheel in built:  # build it again from the lock's sdist: the same bytes
        again = offline_venv.parent / "again"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(again),
             f"{lockfile.canonicalize_name(wheel.name.split('-')[0])}=={wheel.name.split('-')[1]}",
             "--no-binary", ":all:"],
            check=True, env={**os.environ, "SOURCE_DATE_EPOCH": lockfile.SOURCE_DATE_EPOCH},
        )  # fmt: skip
        assert lockfile.sha256(again / wheel.name) == lockfile.sha256(wheel), f"{wheel.name} is not reproducible"
