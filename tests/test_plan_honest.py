"""An honest plan: what is not measured shows as "?" with the command that measures it, never 0.0; a
measurement times the run's own steps (its amp, its augmentation); finished runs' throughput counts
where there is some; and the plan of a slice of the default study holds against the real runs."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO

from fmnist import cli, config, experiments, gpus, plan


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(d))
    return d


def default_study(**data) -> dict:
    return config.load(REPO / "config" / "config.yaml", {"data": data} if data else None)


def test_an_unmeasured_plan_shows_question_marks_and_the_command_not_zero(tmp_path, cache_dir, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/runs here
    assert cli.main(["plan", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"(?<![\d.])0\.0+(?![\d])", out), out  # no 0.0 / 0.00 anywhere
    rows = [line.split() for line in out.splitlines() if line.startswith(("augmentations", "models", "total"))]
    assert len(rows) == 3 and all(r[-2:] == ["?", "?"] for r in rows), out
    assert "?: not measured (lenet_like, standard_cnn); measure them with: python -m fmnist plan" in out
    assert cli.main(["plan", "--no-measure", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["total_hours"] is None and r["studies"]["models"]["hours"] is None and not r["complete"]


def test_a_partly_measured_study_is_a_lower_bound():
    assert cli.plan.hours(None) == "?"
    assert cli.plan.hours(0.25, complete=False) == ">= 0.25"
    assert cli.plan.hours(0.004) == "0.2 min"


def test_a_measurement_times_the_runs_own_amp_and_augmentation(cache_dir, monkeypatch):
    """The figure of a run comes from the trainer's own step loop built for that run: bf16 where the
    run resolves to bf16, its augmentation, each a figure of its own."""
    from fmnist import amp
    from fmnist import train as ftrain

    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: True)  # amp: auto -> bf16 on this CPU
    seen = []
    step = ftrain.StepLoop.step

    def spy(self, images, labels):
        seen.append((type(self.aug).__name__, self.use_bf16))
        return step(self, images, labels)

    monkeypatch.setattr(ftrain.StepLoop, "step", spy)
    cfg = default_study()
    cfg["studies"] = {"augmentations": cfg["studies"]["augmentations"]}
    runs, _ = experiments.expand(cfg)
    r = plan.plan(cfg, measure_missing=True, seconds=0.05, log=lambda _m: None, results=None)
    kinds = {(name, bf16) for name, bf16 in seen}
    auglist = {type(ftrain.augment.build_augmentation(x["augmentation"]["kind"], x["augmentation"]["params"], 10))
               .__name__ for x in runs.values()}
    assert kinds == {(name, True) for name in auglist} and len(auglist) == 3
    cached = json.loads((cache_dir / "throughput.json").read_text())
    assert len(cached) == 3 and all('"amp":"bf16"' in k for k in cached)
    assert r["complete"] and len({row["images_per_s"] for row in r["runs"].values()}) == 3


def test_finished_runs_give_their_measured_throughput(tmp_path, cache_dir):
    """A finished run's metrics.json (this device, this torch) makes the figure of its model,
    augmentation and numerics: the plan then reproduces its train_seconds, for its seeds too."""
    from fmnist.plan.cache import _torch_version

    cfg = default_study()
    runs, _ = gpus.expand_for_jobs(cfg)
    rid = "standard_cnn.mixup.default.s0"
    label = plan.plan_label(cfg)
    out = tmp_path / "results" / "runs" / rid
    out.mkdir(parents=True)
    metrics = {"status": "ok", "config": runs[rid], "cached_features": False, "train_seconds": 40.0,
               "epochs_run": 2, "n_train": 54000, "n_val": 6000, "device": "cpu",
               "device_name": f"cpu (x86_64, {cfg['threads']} threads)", "versions": {"torch": _torch_version()}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "results" / "runs" / "junk").mkdir()
    (tmp_path / "results" / "runs" / "junk" / "metrics.json").write_text("{not json")
    r = plan.plan(cfg, results=tmp_path / "results" / "runs")
    assert label.startswith("cpu")
    for seed in (0, 1, 2):
        row = r["runs"][f"standard_cnn.mixup.default.s{seed}"]
        assert row["source"] == "finished runs (1)" and row["train_seconds"] == pytest.approx(40.0, rel=1e-3)
    assert r["runs"]["standard_cnn.none.default.s0"]["source"] is None  # another augmentation: no figure
    # on another number of threads it is another machine's figure
    other = plan.plan({**cfg, "threads": cfg["threads"] + 1}, results=tmp_path / "results" / "runs")
    assert other["runs"][rid]["source"] is None


@pytest.mark.slow
@pytest.mark.alone  # a timing comparison: not beside other tests' load
def test_the_plan_of_the_default_study_holds_against_real_runs_on_this_machine(tmp_path, cache_dir, raw_dir):
    """Plan first, from a fresh measurement (no finished runs to read), then train a slice of the default
    study's runs (train_limit 12,000, one epoch) and compare each run's planned train_seconds with the
    measured one: within 30%."""
    from fmnist import fetch, train

    cfg = default_study(train_limit=12_000, test_limit=1000)
    cfg["defaults"]["epochs"] = 1
    cfg = config.validate(cfg)
    r = plan.plan(cfg, measure_missing=True, seconds=3.0, log=lambda _m: None, results=None)
    prepared = tmp_path / "prepared.npz"
    d = cfg["data"]
    fetch.prepare(raw_dir, prepared, d["val_fraction"], d["split_seed"], d["train_limit"], d["test_limit"])
    runs, _ = gpus.expand_for_jobs(cfg)
    ratios = {}
    for rid in ("standard_cnn.flip_affine.default.s0", "lenet_like.none.default.s0"):
        m = train.train_run(runs[rid], prepared, tmp_path / "runs" / rid, device=cfg["device"],
                            threads=cfg["threads"], log=lambda _m: None)
        ratios[rid] = r["runs"][rid]["train_seconds"] / m["train_seconds"]
    print("planned / measured train_seconds:", ratios)
    assert all(0.7 <= x <= 1.3 for x in ratios.values()), ratios
    # the finished runs now make the figures: the plan reproduces their own train_seconds
    again = plan.plan(cfg, results=tmp_path / "runs")
    for rid in ratios:
        m = json.loads((tmp_path / "runs" / rid / "metrics.json").read_text())
        assert again["runs"][rid]["train_seconds"] == pytest.approx(m["train_seconds"], rel=0.01)
