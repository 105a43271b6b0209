"""The command line a newcomer meets first: `python -m fmnist models` lists the presets at once (no
torch import, no measuring); measuring is behind --measure."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def fmnist(*args: str) -> subprocess.CompletedProcess:
    prog = ("import sys; from fmnist.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", prog, *args], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_models_lists_every_preset_without_importing_torch():
    from fmnist import models

    r = fmnist("models")
    assert r.returncode == 0, r.stderr
    assert "NO_TORCH" in r.stderr
    listed = [line.split()[0] for line in r.stdout.splitlines()[1:-1]]
    assert listed == models.known_models()
    assert "standard_cnn" in r.stdout and "--measure" in r.stdout.splitlines()[-1]


def test_models_json_lists_presets_with_their_arguments():
    r = fmnist("models", "--json", "--models", "standard_cnn,vit_simple")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["model"] for x in rows] == ["standard_cnn", "vit_simple"]
    assert rows[0]["source"] == "B" and "params" not in rows[0]


def test_models_measure_counts_parameters():
    r = fmnist("models", "--measure", "--json", "--models", "standard_cnn", "--seconds", "0", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["params"] == 421_642 and row["train_images_per_second"] is None


def test_models_names_an_unknown_preset():
    r = fmnist("models", "--models", "standrd_cnn")
    assert r.returncode == 2
    assert "standrd_cnn" in r.stderr and "standard_cnn" in r.stderr
