"""Finished runs into the tools people compare runs in: TensorBoard event files and an MLflow store.

Both are optional (`pip install -e '.[export]'`: tensorboard, mlflow-skinny); nothing here runs
during a study, so the core install and the training jobs do not grow. What we chose:

- A run is exported from its `metrics.json` and `history.csv`, the files the workflow keeps; a run is
  *finished* as `fmnist status` has it (its metrics.json holds this config's resolved run).
- TensorBoard: one folder per run under DIR (`DIR/<run id>/`), scalars per epoch (`train/loss`,
  `train/accuracy`, `val/loss`, `val/accuracy`, `lr`, `epoch_seconds`; step = epoch) and the test
  figures at the last epoch (`test/accuracy`, `test/loss`, `test/f1_macro`); the resolved config as
  text. Exporting again rewrites a run's event files only when its result changed (a marker file
  `fmnist-export.json` holds the config hash and history's hash); other files there are left alone.
- MLflow: every run is an MLflow run named by its run id in one experiment (`fmnist` unless named),
  params are the resolved config flattened to dotted keys, metrics per epoch as above plus the final
  figures, tags `study` (comma-separated when several studies share it), `experiment`, `seed`,
  `model`, `augmentation`, `setting`, `status`, and `metrics.json` / `history.csv` as artifacts. A run
  already in the store with the same config hash and history is skipped, so exporting is repeatable.
- MLflow: `--mlflow DIR` writes an SQLite store, DIR/mlflow.db, with the runs' artifacts in
  DIR/artifacts (MLflow 3 keeps its plain-folder "file store" in maintenance mode and refuses it
  without an environment variable; SQLite is its recommended local store). The command prints how
  to open it: `mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`. The `export` extra installs
  `mlflow` (its web UI, Flask, SQLAlchemy and Alembic for the SQLite store), not only mlflow-skinny,
  whose wheel has neither the UI nor the store's migrations' dependencies. Any other tracking URI
  (a server, another database) works through `--mlflow-uri`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fmnist.runfiles import HISTORY_FILE, METRICS_FILE

EPOCH_SCALARS = {  # history.csv column -> scalar name
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "lr": "lr",
    "seconds": "epoch_seconds",
}
FINAL_SCALARS = {"test_accuracy": "test/accuracy", "test_loss": "test/loss", "f1_macro": "test/f1_macro",
                 "best_val_accuracy": "val/best_accuracy", "train_seconds": "train_seconds"}
MARKER = "fmnist-export.json"


class ExportError(Exception):
    """An export that cannot be done, with what to do about it."""


@dataclass
class FinishedRun:
    run_id: str
    directory: Path
    metrics: dict
    history: pd.DataFrame
    studies: list[str]

    @property
    def fingerprint(self) -> str:
        """What the exported figures depend on: the resolved config and the per-epoch values."""
        digest = hashlib.sha256((self.directory / HISTORY_FILE).read_bytes()).hexdigest()[:16]
        return f"{self.metrics.get('config_hash', '')}:{digest}"


def finished_runs(cfg: dict, results_dir: Path | str = "results") -> list[FinishedRun]:
    """The config's runs whose results are in `results_dir/runs/` (others are left out)."""
    from fmnist import gpus, status

    runs, studies = gpus.expand_for_jobs(cfg)  # as the workflow hands them to its jobs (amp resolved)
    out = []
    for rid, run in runs.items():
        directory = Path(results_dir) / "runs" / rid
        metrics = status._finished(run, directory / METRICS_FILE)
        if metrics is None:
            continue
        out.append(FinishedRun(rid, directory, metrics, pd.read_csv(directory / HISTORY_FILE),
                               [s for s, ids in studies.items() if rid in ids]))
    return out


def flatten(obj, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys and string values (lists as JSON)."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    value = json.dumps(obj) if isinstance(obj, list | tuple) else str(obj)
    return {prefix[:-1]: value}


def _tags(r: FinishedRun) -> dict[str, str]:
    from fmnist.experiments import experiment_id

    cfg = r.metrics["config"]
    return {"study": ",".join(r.studies), "experiment": experiment_id(cfg), "seed": str(r.metrics["seed"]),
            "model": r.metrics["model"], "augmentation": r.metrics["augmentation"], "setting": r.metrics["setting"],
            "status": r.metrics["status"], "device": r.metrics.get("device_name", ""),
            "fmnist.run_id": r.run_id, "fmnist.fingerprint": r.fingerprint}


def _final(r: FinishedRun) -> dict[str, float]:
    return {name: float(r.metrics[key]) for key, name in FINAL_SCALARS.items() if r.metrics.get(key) is not None}


# --- TensorBoard -----------------------------------------------------------------------------------

def to_tensorboard(runs: list[FinishedRun], dest: Path | str, log: Callable[[str], None] = print) -> dict[str, int]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's writer needs the tensorboard package
        raise ExportError(f"TensorBoard export needs the tensorboard package ({exc}); "
                          "install it with: pip install -e '.[export]'") from None
    dest = Path(dest)
    written = skipped = 0
    for r in runs:
        folder = dest / r.run_id
        marker = folder / MARKER
        if marker.exists() and json.loads(marker.read_text()).get("fingerprint") == r.fingerprint:
            skipped += 1
            continue
        for old in folder.glob("events.out.tfevents.*"):  # our own earlier export of another result
            old.unlink()
        with SummaryWriter(log_dir=str(folder)) as w:
            for row in r.history.itertuples(index=False):
                for column, name in EPOCH_SCALARS.items():
                    value = getattr(row, column, None)
                    if value is not None and pd.notna(value):
                        w.add_scalar(name, float(value), global_step=int(row.epoch))
            last = int(r.metrics["epochs_run"])
            for name, value in _final(r).items():
                w.add_scalar(name, value, global_step=last)
            tags = _tags(r)
            w.add_text("run", "  \n".join(f"**{k}**: {v}" for k, v in tags.items()), global_step=0)
            w.add_text("config", "```\n" + json.dumps(r.metrics["config"], indent=2) + "\n```", global_step=0)
        marker.write_text(json.dumps({"run_id": r.run_id, "fingerprint": r.fingerprint}) + "\n")
        written += 1
    log(f"tensorboard: {written} run(s) written, {skipped} unchanged, in {dest} (tensorboard --logdir {dest})")
    return {"written": written, "unchanged": skipped}


# --- MLflow ----------------------------------------------------------------------------------------

STORE_DB = "mlflow.db"
ARTIFACTS = "artifacts"


def mlflow_uri_for(directory: Path | str) -> str:
    """A local folder as an MLflow SQLite store: DIR/mlflow.db (created with DIR; artifacts go to
    DIR/artifacts, see `to_mlflow`). A folder that holds an older plain-folder store is refused."""
    directory = Path(directory).resolve()
    if any(directory.glob("*/meta.yaml")):
        raise ExportError(f"{directory} holds an MLflow file store (a plain folder of runs), which MLflow 3 "
                          f"refuses by default; export to a new folder (an SQLite store, {STORE_DB}, is "
                          "written there), or name the old store with --mlflow-uri and set MLFLOW_ALLOW_FILE_STORE=true")
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / STORE_DB}"


def _artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment of a local SQLite store keeps its artifacts: beside the database (MLflow's
    default, ./mlruns of the working directory, would scatter them)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / ARTIFACTS).as_uri()
    return None


def open_hint(tracking_uri: str) -> str:
    """How to look at what was exported."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    return (f"open it with: mlflow ui --backend-store-uri {tracking_uri}  (then http://127.0.0.1:5000; "
            "`mlflow ui` comes with pip install -e '.[export]')")


def to_mlflow(runs: list[FinishedRun], tracking_uri: str, experiment: str = "fmnist",
              log: Callable[[str], None] = print) -> dict[str, int]:
    try:
        from mlflow.entities import Metric, Param, RunStatus, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ExportError(f"MLflow export needs mlflow ({exc}); install it with: pip install -e '.[export]'") from None
    import time

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except ImportError as exc:  # an SQLite store needs SQLAlchemy and Alembic, which mlflow-skinny lacks
        raise ExportError(f"the MLflow store {tracking_uri} needs {exc.name or exc}; install the export extra, "
                          "which brings mlflow with them: pip install -e '.[export]'") from None
    exp_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=_artifact_location(tracking_uri))
    written = skipped = 0
    for r in runs:
        existing = client.search_runs([exp_id], filter_string=f"tags.`fmnist.run_id` = '{r.run_id}'")
        if any(x.data.tags.get("fmnist.fingerprint") == r.fingerprint for x in existing):
            skipped += 1
            continue
        tags = _tags(r)
        run = client.create_run(exp_id, run_name=r.run_id, tags=tags)
        rid = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param(k, v[:6000]) for k, v in flatten(r.metrics["config"]).items()]
        metrics = [Metric(name, float(getattr(row, column)), now, int(row.epoch))
                   for row in r.history.itertuples(index=False) for column, name in EPOCH_SCALARS.items()
                   if pd.notna(getattr(row, column, None))]
        metrics += [Metric(name, value, now, int(r.metrics["epochs_run"]))
                    for name, value in _final(r).items()]
        for i in range(0, max(len(params), len(metrics)), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(rid, metrics=metrics[i:i + 100], params=params[i:i + 100],
                             tags=[RunTag("mlflow.note.content", f"fmnist run {r.run_id}")] if i == 0 else [])
        for name in (METRICS_FILE, HISTORY_FILE):
            client.log_artifact(rid, str(r.directory / name))
        client.set_terminated(rid, RunStatus.to_string(RunStatus.FINISHED))
        written += 1
    log(f"mlflow: {written} run(s) written, {skipped} unchanged, to experiment {experiment!r} at {tracking_uri}; "
        + open_hint(tracking_uri))
    return {"written": written, "unchanged": skipped}
