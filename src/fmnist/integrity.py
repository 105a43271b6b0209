"""Files the workflow reads back: each is checked whole, or stops with one message naming it, what is wrong and the fix.

A run's outputs (metrics.json, history.csv, confusion.csv, model.pt) are read by later jobs; a damaged
one is never silently used. They cross-check each other (run id, epoch count, best validation loss,
confusion counts) and metrics.json records the SHA-256 of the other three, so a truncated, rewritten
or swapped file is caught too, without unpickling model.pt. The fix names the exact files to remove (for a run whose
outputs are links into the run cache, the cache entry as well: fetching it again would bring the damage
back) and the Snakemake command that recomputes them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
from collections.abc import Iterable
from pathlib import Path

from fmnist.errors import DamagedFileError, snakemake_command
from fmnist.files import sha256_file
from fmnist.runfiles import (
    CONFUSION_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RUN_OUTPUTS,
)

METRICS_FIELDS = ("run_id", "status", "test_accuracy", "epochs_run", "confusion_matrix", "config")


def rerun_fix(paths: Iterable[Path | str]) -> str:
    """Remove these run outputs (and the cache entries they link to), then rebuild exactly them.

    The targets are the removed files themselves: Snakemake reruns a job for a missing output only
    when that output is requested.
    """
    remove: list[str] = []
    targets: list[str] = []
    for p in map(Path, paths):
        if p.is_symlink():
            remove.append(os.path.realpath(p))
        remove.append(str(p))
        targets.append(str(p))
    quoted = " ".join(map(shlex.quote, remove))
    return f"rm -f {quoted} && {snakemake_command()} -- {' '.join(map(shlex.quote, targets))}"


def _read_bytes(path: Path, size: int = -1) -> bytes:
    """The file's bytes (its first `size` with size >= 0); missing, unreadable or empty raise ValueError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(size)
    except FileNotFoundError:
        if path.is_symlink():
            raise ValueError(
                f"it links to {os.readlink(path)}, which is gone (a removed cache entry)"
            ) from None
        raise ValueError("it is missing") from None
    except OSError as exc:
        raise ValueError(f"it cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ValueError("it is empty (0 bytes)")
    return data


def _metrics(path: Path, run_id: str | None) -> dict:
    data = _read_bytes(path)
    try:
        m = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON, truncated or damaged ({exc})") from None
    if not isinstance(m, dict):
        raise ValueError(f"holds a JSON {type(m).__name__}, not a run's metrics object")
    missing = [k for k in METRICS_FIELDS if k not in m]
    if missing:
        raise ValueError(f"lacks the field(s) {', '.join(missing)}: not a complete metrics.json")
    if run_id is not None and m["run_id"] != run_id:
        raise ValueError(
            f"holds the metrics of run {m['run_id']!r}, not of {run_id!r} (another run's file)"
        )
    return m


def _csv_rows(path: Path) -> list[list[str]]:
    data = _read_bytes(path)
    try:
        return list(csv.reader(data.decode().splitlines()))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"not a readable CSV file ({exc})") from None


def _history(path: Path, metrics: dict) -> None:
    rows = _csv_rows(path) or [[]]
    if rows[0] != HISTORY_COLUMNS:
        raise ValueError(f"header is {rows[0][:8]}, expected {HISTORY_COLUMNS}")
    for n, row in enumerate(rows[1:], start=2):
        try:
            [float(v) for v in row]
            ok = len(row) == len(HISTORY_COLUMNS)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"line {n} is not a row of {len(HISTORY_COLUMNS)} numbers (truncated or damaged)"
            )
    if len(rows) - 1 != metrics["epochs_run"]:
        raise ValueError(
            f"has {len(rows) - 1} epoch rows but metrics.json says {metrics['epochs_run']} epochs ran "
            "(truncated, or another run's file)"
        )
    val_loss = [float(r[3]) for r in rows[1:]]
    best = metrics.get("best_val_loss")
    if val_loss and best is not None and not math.isclose(min(val_loss), best, rel_tol=1e-9):
        raise ValueError(
            f"its best validation loss {min(val_loss):.6g} is not the {best:.6g} of metrics.json (another run's file)"
        )


def _confusion(path: Path, metrics: dict) -> None:
    rows = _csv_rows(path) or [[]]
    classes = metrics["confusion_matrix"]["classes"]
    if rows[0][1:] != classes:
        raise ValueError(f"its columns are not the {len(classes)} classes of metrics.json")
    try:
        counts = [[int(v) for v in row[1:]] for row in rows[1:]]
    except ValueError:
        raise ValueError("holds a count that is not an integer (damaged)") from None
    if counts != metrics["confusion_matrix"]["counts"]:
        raise ValueError(
            "its counts differ from those in metrics.json (truncated, or another run's file)"
        )


def _model(path: Path) -> None:
    import pickle
    import zipfile

    import torch

    _read_bytes(path, size=1)  # missing, unreadable, empty
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        OSError,
        ValueError,
    ) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"not a loadable PyTorch state dict ({first[:200]})") from None
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise ValueError("does not hold a model state dict (name -> tensor)")


def _recorded_hash(path: Path, metrics: dict) -> None:
    """The file is byte for byte what the run wrote (metrics.json records its SHA-256; older runs do not)."""
    expected = (metrics.get("files") or {}).get(path.name)
    if expected is None:
        return
    if sha256_file(path) != expected:
        raise ValueError(
            "its SHA-256 is not the one metrics.json recorded when the run wrote it (damaged, or another run's file)"
        )


def check_metrics(paths: Iterable[Path | str]) -> list[dict]:
    """The metrics of these runs (results/runs/<run>/metrics.json); every damaged one is named in one error."""
    out, bad = [], []
    for p in map(Path, paths):
        try:
            out.append(_metrics(p, p.parent.name))
        except ValueError as exc:
            bad.append((p, str(exc)))
    if bad:
        raise DamagedFileError(bad, rerun_fix(p for p, _ in bad))
    return out


def check_run(run_dir: Path | str, model: bool = True) -> dict:
    """Check one run's outputs against each other; return its metrics, or raise naming every damaged file."""
    run_dir = Path(run_dir)
    bad: list[tuple[Path, str]] = []
    metrics_path = run_dir / METRICS_FILE
    try:
        metrics = _metrics(metrics_path, run_dir.name)
    except ValueError as exc:
        metrics = None
        bad.append((metrics_path, str(exc)))
    checks = [(HISTORY_FILE, _history), (CONFUSION_FILE, _confusion)]
    if model:  # a recorded hash makes unpickling it unnecessary; without one, it must load
        checks.append(
            (
                MODEL_FILE,
                _recorded_hash if metrics and "files" in metrics else lambda p, m: _model(p),
            )
        )
    for name, check in checks if metrics else []:
        try:
            _read_bytes(run_dir / name, size=1)
            check(run_dir / name, metrics)
            if check is not _recorded_hash:
                _recorded_hash(run_dir / name, metrics)
        except ValueError as exc:
            bad.append((run_dir / name, str(exc)))
    if bad:
        raise DamagedFileError(bad, rerun_fix(p for p, _ in bad))
    return metrics


def unlink_lost_outputs(run_dirs: Iterable[Path | str], log=print) -> list[Path]:
    """Remove the output links of runs whose cache entries are gone; return the runs treated.

    A link to a removed cache entry makes Snakemake stop ("Unable to obtain modification time").
    Removing the run's output links (only links: nothing is lost, the entries they point to are
    gone or still in the cache) makes its outputs missing, so Snakemake restores or retrains them.
    """
    treated = []
    for run_dir in map(Path, run_dirs):
        links = [run_dir / n for n in RUN_OUTPUTS if (run_dir / n).is_symlink()]
        lost = [p for p in links if not p.exists()]
        if not lost:
            continue
        for p in links:
            p.unlink()
        treated.append(run_dir)
        names = ", ".join(p.name for p in lost)
        log(
            f"[fmnist] {run_dir}: {names} linked to removed cache entries; "
            "its outputs will be restored from the cache or trained again"
        )
    return treated
