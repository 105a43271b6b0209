"""Table logic on small synthetic runs: paired differences, Holm-adjusted effects, published verdicts by kind."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from fmnist import aggregate, compare, stats
from fmnist.config import ConfigError

T2 = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom (tables round it to 4.303)


def metric(run_id: str, acc: float | None, status: str = "ok", val: float | None = None, **extra) -> dict:
    model, aug, setting, seed = run_id.split(".")
    m = {
        "run_id": run_id, "status": status, "status_reason": "" if status == "ok" else "synthetic",
        "model": model, "arch": model, "augmentation": aug, "setting": setting, "seed": int(seed[1:]),
        "test_accuracy": acc, "test_loss": 0.3, "precision_macro": acc, "recall_macro": acc, "f1_macro": acc,
        "per_class_accuracy": {"T-shirt/top": acc, "Trouser": acc},
        "best_val_accuracy": val if val is not None else acc, "best_val_loss": 0.3, "best_epoch": 2,
        "epochs_run": 4, "epochs_max": 10, "params": 1000 if model == "small" else 5000,
        "trainable_params": 1000, "train_seconds": 8.0, "images_per_second": 100.0, "peak_memory_mb": 1.0,
        "device": "cpu", "device_name": "cpu", "n_train": 1800, "config_hash": "x",
        "config": {"id": run_id, "model": {"name": model, "arch": model, "args": {"filters": 32}},
                   "augmentation": {"name": aug, "kind": aug, "params": {}}, "setting": setting,
                   "seed": int(seed[1:]), "train": {"batch_size": 64, "optimizer": {"name": "adam", "lr": 0.001}}},
    }
    m.update(extra)
    return m


def runs_of(metrics: list[dict]) -> pd.DataFrame:
    return aggregate.runs_table(metrics)


def test_experiments_table_counts_not_learned_seed_as_a_result():
    runs = runs_of([metric("a.none.d.s0", 0.90), metric("a.none.d.s1", 0.10, status="not_learned"),
                    metric("a.none.d.s2", None, status="diverged")])
    exps = aggregate.experiments_table(runs)
    row = exps.iloc[0]
    assert (row["runs"], row["ok"], row["not_learned"], row["diverged"], row["n"]) == (3, 1, 1, 1, 2)
    assert row["test_accuracy_mean"] == pytest.approx(0.5)
    assert runs["seconds_per_epoch"].iloc[0] == pytest.approx(2.0)


def test_paired_difference_uses_only_common_seeds():
    runs = runs_of([
        metric("m.mix.d.s0", 0.92), metric("m.mix.d.s1", 0.912), metric("m.mix.d.s2", 0.918),
        metric("m.none.d.s0", 0.90), metric("m.none.d.s1", 0.890), metric("m.none.d.s2", 0.900),
        metric("m.none.d.s7", 0.50),  # no partner: must not enter the pairing
    ])
    d = compare.paired_difference(runs, "m.mix.d", "m.none.d")
    # per-seed differences in points: 2.0, 2.2, 1.8 -> mean 2.0, std 0.2
    assert d["n"] == 3 and d["seeds"] == "0 1 2"
    assert d["mean"] == pytest.approx(2.0) and d["std"] == pytest.approx(0.2)
    half = T2 * 0.2 / math.sqrt(3)
    assert (d["ci95_low"], d["ci95_high"]) == pytest.approx((2.0 - half, 2.0 + half))
    assert compare.verdict_difference(d) == "better"


def test_augmentation_effects_per_model_with_verdicts():
    runs = runs_of([
        metric("m.none.d.s0", 0.90), metric("m.none.d.s1", 0.89), metric("m.none.d.s2", 0.90),
        metric("m.flip.d.s0", 0.92), metric("m.flip.d.s1", 0.90), metric("m.flip.d.s2", 0.93),  # +2, +1, +3
        metric("m.mix.d.s0", 0.88), metric("m.mix.d.s1", 0.87), metric("m.mix.d.s2", 0.88),  # -2, -2, -2
        metric("k.mix.d.s0", 0.80),  # model k has no baseline: no row
    ])
    eff = compare.augmentation_effects(runs).set_index("augmentation")
    assert list(eff.index) == ["flip", "mix"]
    assert (eff["comparisons"] == 2).all()
    assert eff.loc["flip", "difference_mean"] == pytest.approx(2.0)
    # t = 2 / (1 / sqrt 3) = 3.464 on 2 df: p = 0.0742 (scipy.stats.ttest_1samp([2, 1, 3], 0))
    assert eff.loc["flip", "p_value"] == pytest.approx(0.07418, abs=1e-4)
    assert eff.loc["flip", "verdict"] == "no clear difference"  # std 1 -> half width 2.48
    assert eff.loc["mix", "difference_mean"] == pytest.approx(-2.0)
    assert eff.loc["mix", "verdict"] == "worse"  # identical differences: zero-width interval below 0
    assert eff.loc["mix", "p_holm"] == 0.0


def test_effects_family_is_holm_adjusted():
    """Three augmentations each clearly better alone (p < 0.05) but not all after Holm over 3 tests."""
    diffs = {"a": (0.020, 0.021, 0.019), "b": (0.020, 0.030, 0.010), "c": (0.020, 0.0265, 0.0135)}
    ms = [metric(f"m.none.d.s{i}", 0.90) for i in range(3)]
    for aug, ds in diffs.items():
        ms += [metric(f"m.{aug}.d.s{i}", 0.90 + d) for i, d in enumerate(ds)]
    eff = compare.augmentation_effects(runs_of(ms)).set_index("augmentation")
    assert (eff["comparisons"] == 3).all()
    p = {aug: stats.t_test_p([100 * d for d in ds]) for aug, ds in diffs.items()}
    assert p["a"] < p["c"] < 0.05 < p["b"]
    assert eff["p_value"].to_dict() == pytest.approx(p)
    assert eff.loc["a", "p_holm"] == pytest.approx(3 * p["a"])
    assert eff.loc["c", "p_holm"] == pytest.approx(max(3 * p["a"], 2 * p["c"]))
    assert eff.loc["a", "verdict"] == "better"
    assert eff.loc["c", "verdict_unadjusted"] == "better"  # its own interval excludes 0 ...
    assert eff.loc["c", "p_holm"] > 0.05 and eff.loc["c", "verdict"] == "no clear difference"  # ... not after Holm


def test_leaderboard_gap_to_best_is_paired():
    runs = runs_of([metric("a.none.d.s0", 0.91), metric("a.none.d.s1", 0.93),
                    metric("b.none.d.s0", 0.90), metric("b.none.d.s1", 0.92),
                    metric("c.none.d.s0", 0.80), metric("c.none.d.s1", 0.79)])
    board = compare.leaderboard(aggregate.experiments_table(runs), runs).set_index("experiment")
    assert board.loc["a.none.d", "rank"] == 1 and board.loc["a.none.d", "vs_best"] == "best"
    # b is 1 point behind on both seeds: zero spread, so clearly worse despite overlapping per-experiment CIs
    assert board.loc["b.none.d", "gap_to_best"] == pytest.approx(-1.0)
    assert board.loc["b.none.d", "vs_best"] == "worse"
    assert board.loc["c.none.d", "gap_to_best"] == pytest.approx(-12.5)
    # -11 and -14 on two seeds: t(1) = 8.3, p = 0.076 -> not established, whatever the size
    assert board.loc["c.none.d", "vs_best"] == "tied"
    assert (board["gap_comparisons"] == 2).all()


def test_compare_published_units_metrics_and_verdicts():
    runs = runs_of([metric(f"m.none.d.s{i}", a, val=v) for i, (a, v) in
                    enumerate([(0.90, 0.92), (0.91, 0.93), (0.92, 0.94)])])
    # ours: 90, 91, 92 (%): mean 91, s 1; CI of the mean 91 +- 2.48, prediction interval 91 +- 4.97
    half_ci, half_pi = T2 / math.sqrt(3), T2 * math.sqrt(1 + 1 / 3)
    published = [
        {"source": "A", "experiment": "m.none.d", "label": "inside", "metric": "test_accuracy", "value": 91.0, "epochs": 40},
        {"source": "A", "experiment": "m.none.d", "label": "pi-only", "metric": "test_accuracy", "value": 94.5},
        {"source": "A", "experiment": "m.none.d", "label": "above", "metric": "test_accuracy", "value": 96.5},
        {"source": "A", "experiment": "m.none.d", "label": "below", "metric": "test_accuracy", "value": 85.0},
        {"source": "B", "experiment": "m.none.d", "label": "val", "metric": "val_accuracy", "value": 93.5},
        {"source": "C", "experiment": "m.none.d", "label": "fig", "metric": "test_accuracy", "value": None},
        {"source": "D", "experiment": "x.none.d", "label": "absent", "metric": "test_accuracy", "value": 90.0},
        {"source": "D", "experiment": "m.none.d", "label": "speed", "metric": "seconds_per_epoch", "value": 1.0},
    ]
    t = compare.compare_published(published, runs).set_index("label")
    assert t.loc["inside", "reproduced_mean"] == pytest.approx(91.0)
    assert (t.loc["inside", "reproduced_ci95_low"], t.loc["inside", "reproduced_ci95_high"]) == pytest.approx((91 - half_ci, 91 + half_ci))
    assert (t.loc["inside", "reproduced_pi95_low"], t.loc["inside", "reproduced_pi95_high"]) == pytest.approx((91 - half_pi, 91 + half_pi))
    assert t.loc["inside", "difference"] == pytest.approx(0.0) and t.loc["inside", "verdict"] == "consistent"
    assert t.loc["inside", "published_epochs"] == 40 and t.loc["inside", "our_epochs_max"] == 10
    # outside the CI of our mean (the old verdict said "above") but a plausible single run of ours
    assert t.loc["pi-only", "published"] > t.loc["pi-only", "reproduced_ci95_high"]
    assert t.loc["pi-only", "verdict"] == "consistent"
    assert t.loc["above", "verdict"] == "published better" and t.loc["above", "difference"] == pytest.approx(-5.5)
    assert t.loc["above", "reading"].startswith("above our 95% prediction interval; 95% prediction interval +-4.97 (3 seeds")
    assert t.loc["below", "verdict"] == "published worse"
    assert t.loc["below", "reading"].startswith("below our 95% prediction interval;")
    assert t.loc["val", "reproduced_mean"] == pytest.approx(93.0)  # best validation accuracy, not test
    assert t.loc["val", "verdict"] == "consistent"
    assert t.loc["fig", "verdict"] == "figure only" and math.isnan(t.loc["fig", "difference"])
    assert t.loc["absent", "verdict"] == "not run" and t.loc["absent", "status"] == "not run"
    assert t.loc["speed", "reproduced_mean"] == pytest.approx(2.0)  # 8 s over 4 epochs
    assert t.loc["speed", "kind"] == "timing" and t.loc["speed", "verdict"] == "not judged"
    assert set(t["verdict"]) - {"differs"} <= {v for v in compare.VERDICT_HELP}  # every verdict explained


def test_published_losses_counts_and_few_seeds():
    runs = runs_of([metric(f"m.none.d.s{i}", 0.9, test_loss=loss, params=173_962)
                    for i, loss in enumerate([0.30, 0.31, 0.32])]
                   + [metric(f"k.none.d.s{i}", 0.9) for i in range(2)])
    published = [
        {"source": "A", "experiment": "m.none.d", "label": "loss-high", "metric": "test_loss", "value": 0.50},
        {"source": "A", "experiment": "m.none.d", "label": "loss-low", "metric": "test_loss", "value": 0.20},
        {"source": "A", "experiment": "m.none.d", "label": "loss-ok", "metric": "test_loss", "value": 0.33},
        {"source": "D", "experiment": "m.none.d", "label": "rounded", "metric": "params", "value": 173_000},
        {"source": "D", "experiment": "m.none.d", "label": "other", "metric": "params", "value": 150_000},
        {"source": "D", "experiment": "k.none.d", "label": "two-seeds", "metric": "test_accuracy", "value": 50.0},
    ]
    t = compare.compare_published(published, runs).set_index("label")
    # a published loss above our interval is a worse run, below it a better one
    assert t.loc["loss-high", "verdict"] == "published worse"
    assert t.loc["loss-high", "reading"].startswith("above our 95% prediction interval")
    assert t.loc["loss-low", "verdict"] == "published better"
    assert t.loc["loss-low", "reading"].startswith("below our 95% prediction interval")
    assert t.loc["loss-ok", "verdict"] == "consistent"
    assert t.loc["loss-ok", "reading"].startswith("95% prediction interval +-")  # what the interval can tell
    # zero spread over seeds: a count is compared exactly, never by an interval
    assert t.loc["rounded", "kind"] == "count" and t.loc["rounded", "verdict"] == "matches"
    assert t.loc["rounded", "relative_difference"] == pytest.approx(962 / 173_000)
    assert t.loc["other", "verdict"] == "differs by +16.0%"
    assert t.loc["two-seeds", "seeds"] == 2 and t.loc["two-seeds", "verdict"] == "too few seeds"


def test_validation_figures_count_both_splits_noise():
    """A val figure carries the noise of the report's own split and of ours, which our seeds (all
    on one split) never see; a test figure on the shared test set carries neither. Same numbers:
    the test figure is outside our interval, the val figure of a 12,000-image split is not."""
    accs = [0.9019, 0.9021, 0.9023]  # seed sd 0.02 points: an interval of +-0.1 points alone
    runs = runs_of([metric(f"m.none.d.s{i}", a, val=a, best_val_loss=loss, n_val=6000)
                    for i, (a, loss) in enumerate(zip(accs, [0.262, 0.263, 0.264], strict=True))])
    published = [
        {"source": "D", "experiment": "m.none.d", "label": "val", "metric": "val_accuracy", "value": 90.8,
         "split_size": 12_000, "best_epoch": 8},
        {"source": "D", "experiment": "m.none.d", "label": "test", "metric": "test_accuracy", "value": 90.8},
        {"source": "D", "experiment": "m.none.d", "label": "far", "metric": "val_accuracy", "value": 91.5,
         "split_size": 12_000},
        {"source": "B", "experiment": "m.none.d", "label": "unsized", "metric": "val_accuracy", "value": 90.8},
        {"source": "D", "experiment": "m.none.d", "label": "loss", "metric": "val_loss", "value": 0.252,
         "split_size": 12_000},
    ]
    t = compare.compare_published(published, runs).set_index("label")
    # per image p(1-p) at our mean, over both splits, less twice the per-image part our seeds show
    # (their variance, 0.02^2 points^2, all of it per-image noise at most): docs/fidelity.md
    v = 0.9021 * 0.0979 * 100**2
    assert t.loc["val", "split_sd"] == pytest.approx(math.sqrt(v / 12_000 + v / 6_000 - 2 * 0.02**2), rel=1e-3)
    assert t.loc["test", "split_sd"] == 0
    assert t.loc["test", "verdict"] == "published better"
    assert t.loc["val", "verdict"] == "consistent"
    assert "12,000-image split" in t.loc["val", "reading"]
    # the report's best epoch beside ours (report B names one per figure)
    assert t.loc["val", "published_best_epoch"] == 8 and t.loc["val", "our_best_epoch_mean"] == 2
    assert t.loc["val", "reading"].endswith("best epoch: published 8, ours 2, 2, 2")
    half = t.loc["val", "reproduced_pi95_high"] - t.loc["val", "reproduced_mean"]
    assert 1.9 * t.loc["val", "split_sd"] < half < 2.0 * t.loc["val", "split_sd"]  # ~normal: the known term dominates
    assert t.loc["far", "verdict"] == "published better"  # wider, not unbounded
    # a report that gives no split size: ours (6,000) assumed, and the reading says so
    assert "ours assumed" in t.loc["unsized", "reading"]
    assert t.loc["unsized", "split_sd"] == pytest.approx(math.sqrt(2 * v / 6_000 - 2 * 0.02**2), rel=1e-3)
    # a loss of runs without a recorded per-image spread: the LOSS_SD_RATIO fallback, labelled
    lv = (stats.LOSS_SD_RATIO * 0.263) ** 2
    expected = math.sqrt(lv / 12_000 + lv / 6_000 - 2 * 0.001**2)
    assert t.loc["loss", "split_sd"] == pytest.approx(expected, rel=1e-3)
    assert t.loc["loss", "verdict"] == "consistent"
    assert "fallback" in t.loc["loss", "reading"]


def test_a_loss_split_term_uses_the_runs_recorded_per_image_spread():
    """Runs that record their per-image validation loss spread replace the 2.6 constant: the ratio
    spread / loss they measured, times our mean loss, is the per-image sd."""
    runs = runs_of([metric(f"m.none.d.s{i}", 0.9, best_val_loss=loss, val_loss_tested=0.25,
                           val_loss_image_std=0.5) for i, loss in enumerate([0.262, 0.263, 0.264])])
    published = [{"source": "D", "experiment": "m.none.d", "label": "loss", "metric": "val_loss", "value": 0.252,
                  "split_size": 12_000}]
    t = compare.compare_published(published, runs).set_index("label")
    lv = (2.0 * 0.263) ** 2  # ratio 0.5 / 0.25 = 2, not 2.6
    assert t.loc["loss", "split_sd"] == pytest.approx(math.sqrt(lv / 12_000 + lv / 6_000 - 2 * 0.001**2), rel=1e-3)
    assert "fallback" not in t.loc["loss", "reading"] and "2.00 x the loss" in t.loc["loss", "reading"]


def test_metric_kinds_default_and_checks(monkeypatch):
    assert compare.metric_spec("test_accuracy") == ("test_accuracy", 100.0, "test accuracy (%)", "score", "higher", None)
    assert compare.metric_spec("val_accuracy").split_noise == "accuracy"
    assert compare.metric_spec("val_loss").split_noise == "loss"
    assert compare.metric_spec("val_loss").better == "lower"
    # a metric added as a plain 3-tuple is a score; "loss" in its name makes lower better
    monkeypatch.setitem(compare.METRICS, "train_loss", ("train_loss", 1.0, "training loss"))
    monkeypatch.setitem(compare.METRICS, "test_f1", ("f1_macro", 100.0, "macro F1 (%)"))
    assert compare.metric_spec("train_loss")[3:5] == ("score", "lower")
    assert compare.metric_spec("test_f1")[3:5] == ("score", "higher")
    monkeypatch.setitem(compare.METRICS, "odd", ("x", 1.0, "x", "ratio"))
    with pytest.raises(ConfigError, match="kind 'ratio' is not one of score, count, timing"):
        compare.metric_spec("odd")
    with pytest.raises(ConfigError, match="unknown published metric 'top5'"):
        compare.metric_spec("top5")


def test_load_published_validates_entries(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("published:\n  - {source: B, experiment: a.none.default, metric: val_accuracy, value: 92.3}\n")
    [entry] = compare.load_published(good)
    assert entry["label"] == "a.none.default" and entry["epochs"] is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("published:\n  - {source: F, experiment: a.none, metric: top5, value: 92.3, colour: red}\n")
    with pytest.raises(ConfigError) as err:
        compare.load_published(bad)
    msg = str(err.value)
    for part in ("published[0].source", "published[0].experiment", "published[0].metric", "colour", "bad.yaml"):
        assert part in msg
    with pytest.raises(ConfigError, match="not found"):
        compare.load_published(tmp_path / "missing.yaml")
    assert compare.load_published("") == []


def test_the_shipped_published_file_is_valid():
    from conftest import REPO

    entries = compare.load_published(REPO / "config" / "published.yaml")
    assert entries and all(e["metric"] in compare.METRICS for e in entries)


def test_sweep_table_groups_lines_by_everything_but_x():
    ms = []
    for model in ("small", "big"):
        for bs in (16, 64, 256):
            for seed in (0, 1):
                m = metric(f"{model}.none.bs{bs}.s{seed}", 0.80 + bs / 10000 + seed / 100)
                m["config"]["train"]["batch_size"] = bs
                ms.append(m)
    runs = runs_of(ms)
    configs = {m["run_id"]: m["config"] for m in ms}
    t = compare.sweep_table(runs, configs, list(configs), {"name": "bs", "x": "batch_size"})
    assert sorted(set(t["line"])) == ["big + none", "small + none"]
    small = t[t["line"] == "small + none"]
    assert list(small["x_numeric"]) == [16, 64, 256]
    assert small["mean"].iloc[0] == pytest.approx(100 * (0.80 + 0.0016 + 0.005))
    assert (small["seeds"] == 2).all()
    with pytest.raises(ConfigError, match="no setting 'optimizer.momentum'"):
        compare.sweep_table(runs, configs, list(configs), {"name": "m", "x": "optimizer.momentum"})
    t2 = compare.sweep_table(runs, configs, list(configs), {"name": "f", "x": "model.args.filters"})
    assert set(t2["x"]) == {"32"}


def test_pareto_front():
    costs = [1, 2, 3, 4, float("nan")]
    gains = [80, 85, 84, 90, 99]
    assert compare.pareto_front(costs, gains) == [True, True, False, True, False]


def test_confused_pairs():
    cm = pd.DataFrame([[8, 2, 0], [1, 9, 0], [5, 0, 5]], columns=["a", "b", "c"], index=["a", "b", "c"])
    pairs = compare.confused_pairs(cm, k=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("c", "a", 5), ("a", "b", 2)]
    assert pairs[0]["fraction"] == pytest.approx(0.5)


def test_write_all_writes_csv_and_markdown_tables(tmp_path):
    paths = []
    for i, m in enumerate([metric("m.none.d.s0", 0.90), metric("m.none.d.s1", 0.91),
                           metric("m.mix.d.s0", 0.92), metric("m.mix.d.s1", 0.925)]):
        p = tmp_path / f"{i}.json"
        p.write_text(json.dumps(m))
        paths.append(p)
    published = [{"source": "B", "experiment": "m.mix.d", "label": "l", "metric": "test_accuracy",
                  "value": 92.0, "epochs": None, "note": ""}]
    out = aggregate.write_all(paths, {"s": ["m.none.d.s0", "m.none.d.s1", "m.mix.d.s0", "m.mix.d.s1"]},
                              tmp_path / "runs.csv", tmp_path / "experiments.csv", tmp_path / "tables",
                              published=published, sweeps=[{"name": "lr", "study": "s", "x": "optimizer.lr"}])
    for name in ("leaderboard", "published", "effects", "study_s", "sweep_lr"):
        assert (tmp_path / "tables" / f"{name}.csv").exists()
        md = (tmp_path / "tables" / f"{name}.md").read_text()
        assert md.startswith("| ") and "|---|" in md
    assert out["effects"]["difference_mean"].iloc[0] == pytest.approx(1.75)
    # two seeds: the published run is not judged against an interval with t(1) = 12.7
    assert pd.read_csv(tmp_path / "tables" / "published.csv")["verdict"].iloc[0] == "too few seeds"
