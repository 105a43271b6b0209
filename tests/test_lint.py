"""The project's own lint rule: no torch.load that may unpickle code, anywhere in src/ or the workflow."""

import os
import subprocess
import sys

from conftest import REPO

from fmnist import lint


def test_the_project_has_no_unsafe_load():
    assert lint.findings([REPO / "src", REPO / "workflow", REPO / "Snakefile"]) == []


def test_every_unsafe_form_is_found(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.py").write_text(
        "import torch\nx = torch.load('a', map_location='cpu', weights_only=True)\n"
    )
    (src / "bad.py").write_text(
        "import torch\n"
        "a = torch.load('a', weights_only=False)\n"
        "flag = False\n"
        "b = torch.load('b', weights_only=flag)\n"  # not the constant True
        "c = torch.load('c')\n"  # relies on the installed PyTorch's default
        "def f(path):\n"
        "    import torch as t\n"
        "    return t.serialization.load(path, weights_only=0)\n"
    )
    rules = tmp_path / "workflow" / "rules"
    rules.mkdir(parents=True)
    (rules / "x.smk").write_text("run:\n    torch.load(input[0], weights_only = False)\n")
    found = lint.findings([src, tmp_path / "workflow"])
    lines = sorted(f.split(": ", 1)[0] for f in found)
    assert lines == sorted(
        [f"{src / 'bad.py'}:{n}" for n in (2, 4, 5, 8)] + [f"{rules / 'x.smk'}:2"]
    ), found
    # `make lint` runs it as a command: non-zero, each finding named on stderr
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist.lint", str(src)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1 and "bad.py:2: weights_only=False" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "fmnist.lint", str(src / "ok.py")], env=env)
    assert ok.returncode == 0
