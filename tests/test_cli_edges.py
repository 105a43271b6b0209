"""The command line's edges: status of another directory reads that directory's study, a closed pipe
ends a command quietly, one run's config for `fmnist train` straight from a study."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from conftest import REPO, tiny_config

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
