"""Export to TensorBoard and MLflow, read back with each library's own reader: the values must be the
runs' own (history.csv per epoch, metrics.json at the end), not just files that exist."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, tiny_config, write_config

from fmnist import config as fconfig
from fmnist import gpus, train

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def study(tmp_path_factory, prepared_small) -> dict:
    """Two real runs (2 epochs on a quarter of the small slice) in a results folder, and their config file."""
    root = tmp_path_factory.mktemp("export")
    cfgfile = write_config(root, tiny_config(defaults={"train_fraction": 0.25},
                                             studies={"tiny": {"seeds": list(SEEDS)}}))
    runs, _ = gpus.expand_for_jobs(fconfig.load(cfgfile))  # as the workflow hands them to its train jobs
    for rid, run in runs.items():
        train.train_run(run, prepared_small, root / "results" / "runs" / rid, device="cpu", threads=1,
                        log=lambda _m: None)
    return {"root": root, "config": cfgfile, "runs": sorted(runs)}


def fmnist_export(study: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "fmnist", "export", "--configfile", str(study["config"]),
                           "--results", str(study["root"] / "results"), *args],
                          capture_output=True, text=True, env=env, timeout=600, cwd=study["root"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def history(study: dict, rid: str) -> pd.DataFrame:
    return pd.read_csv(study["root"] / "results" / "runs" / rid / "history.csv")


def metrics(study: dict, rid: str) -> dict:
    return json.loads((study["root"] / "results" / "runs" / rid / "metrics.json").read_text())


def test_tensorboard_event_files_hold_each_epoch(study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dest = study["root"] / "tb"
    out = fmnist_export(study, "--tensorboard", str(dest)).stdout
    assert "2 run(s) written" in out
    for rid in study["runs"]:
        acc = EventAccumulator(str(dest / rid))
        acc.Reload()
        h = history(study, rid)
        val = acc.Scalars("val/accuracy")
        assert [e.step for e in val] == h["epoch"].tolist()
        assert [e.value for e in val] == pytest.approx(h["val_accuracy"].tolist(), abs=1e-6)
        assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(h["train_loss"].tolist(), rel=1e-6)
        (test,) = acc.Scalars("test/accuracy")
        m = metrics(study, rid)
        assert test.value == pytest.approx(m["test_accuracy"], abs=1e-6) and test.step == m["epochs_run"]
    # again: nothing changed, nothing written twice
    assert "0 run(s) written, 2 unchanged" in fmnist_export(study, "--tensorboard", str(dest)).stdout
    assert len(list((dest / study["runs"][0]).glob("events.out.tfevents.*"))) == 1


def test_mlflow_store_holds_params_metrics_tags_and_the_metrics_file(study, tmp_path):
    """`--mlflow DIR` writes an SQLite store that MLflow's own client reads back as it is (no
    environment variable), and says how to open it."""
    from mlflow.tracking import MlflowClient

    store = study["root"] / "mlflow"
    out = fmnist_export(study, "--mlflow", str(store)).stdout
    uri = f"sqlite:///{store.resolve() / 'mlflow.db'}"
    assert "2 run(s) written" in out and f"mlflow ui --backend-store-uri {uri}" in out
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("fmnist")
    assert exp.artifact_location == (store.resolve() / "artifacts").as_uri()  # beside the database
    found = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(found) == study["runs"]
    for seed, rid in zip(SEEDS, study["runs"], strict=True):
        r, m, h = found[rid], metrics(study, rid), history(study, rid)
        assert r.data.tags["study"] == "tiny" and r.data.tags["seed"] == str(seed)
        assert r.data.tags["experiment"] == "standard_cnn.none.default"
        assert r.data.params["train.epochs"] == "2" and r.data.params["model.name"] == "standard_cnn"
        assert r.data.params["train.optimizer.lr"] == str(m["config"]["train"]["optimizer"]["lr"])
        val = sorted(client.get_metric_history(r.info.run_id, "val/accuracy"), key=lambda x: x.step)
        assert [x.step for x in val] == h["epoch"].tolist()
        assert [x.value for x in val] == pytest.approx(h["val_accuracy"].tolist())
        assert r.data.metrics["test/accuracy"] == pytest.approx(m["test_accuracy"])
        local = client.download_artifacts(r.info.run_id, "metrics.json", str(tmp_path / rid))
        assert json.loads(Path(local).read_text()) == m
        assert r.info.status == "FINISHED"
    # again: the store already holds these results
    assert "0 run(s) written, 2 unchanged" in fmnist_export(study, "--mlflow", str(store)).stdout
    assert len(client.search_runs([exp.experiment_id])) == 2
    study["mlflow_uri"] = uri


@pytest.mark.slow
def test_mlflow_ui_serves_the_exported_store(study, tmp_path):
    """What the export prints works: `mlflow ui` (installed by the export extra) starts on the store,
    serves its web page and lists the runs through its REST API."""
    import socket
    import time
    import urllib.error
    import urllib.request

    if "mlflow_uri" not in study:
        test_mlflow_store_holds_params_metrics_tags_and_the_metrics_file(study, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = Path(sys.executable).parent / "mlflow"
    log = tmp_path / "mlflow-ui.log"
    with log.open("w") as out:  # its own process group: the server's workers are stopped with it
        proc = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", study["mlflow_uri"], "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        page = None
        deadline = time.monotonic() + 300  # four workers import MLflow: over a minute on a busy 2-core machine
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(base + "/", timeout=5) as resp:
                    page = resp.read().decode()
                break
            except urllib.error.HTTPError:
                raise
            except OSError:  # not listening yet
                time.sleep(1)
        assert page is not None, f"mlflow ui did not answer:\n{log.read_text()[-3000:]}"
        assert "<html" in page.lower() and "mlflow" in page.lower()
        query = urllib.request.Request(base + "/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=fmnist")
        with urllib.request.urlopen(query, timeout=10) as resp:
            exp = json.loads(resp.read())["experiment"]
        body = json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode()
        search = urllib.request.Request(base + "/ajax-api/2.0/mlflow/runs/search", data=body,
                                        headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(search, timeout=10) as resp:
            names = sorted(r["info"]["run_name"] for r in json.loads(resp.read())["runs"])
        assert names == study["runs"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_an_old_file_store_is_refused_with_the_way_out(study):
    old = study["root"] / "old-mlruns"
    (old / "0").mkdir(parents=True)
    (old / "0" / "meta.yaml").write_text("name: Default\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "fmnist", "export", "--configfile", str(study["config"]),
                           "--results", str(study["root"] / "results"), "--mlflow", str(old)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=study["root"])
    assert proc.returncode == 2 and "holds an MLflow file store" in proc.stderr and "--mlflow-uri" in proc.stderr


def test_export_without_a_target_names_the_options(study):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "fmnist", "export", "--configfile", str(study["config"])],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "--tensorboard DIR, --mlflow DIR or --mlflow-uri URI" in proc.stderr


def test_a_folder_becomes_an_sqlite_store_with_its_artifacts_beside_it(tmp_path):
    from fmnist import export

    uri = export.mlflow_uri_for(tmp_path / "new")
    assert uri == f"sqlite:///{(tmp_path / 'new').resolve()}/mlflow.db" and (tmp_path / "new").is_dir()
    assert export._artifact_location(uri) == ((tmp_path / "new").resolve() / "artifacts").as_uri()
    assert export._artifact_location("http://127.0.0.1:5000") is None  # a server keeps its own
    assert "mlflow ui --backend-store-uri " + uri in export.open_hint(uri)
    (tmp_path / "old" / "0").mkdir(parents=True)
    (tmp_path / "old" / "0" / "meta.yaml").write_text("name: Default\n")
    with pytest.raises(export.ExportError, match="holds an MLflow file store"):
        export.mlflow_uri_for(tmp_path / "old")
