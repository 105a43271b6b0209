"""The CPU record (docs/record/cpu/): its tables are what the project's own aggregate code makes of its
committed runs, and a record whose runs and tables disagree is caught."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml

from fmnist import cli, experiments, record, record_readme
from fmnist import config as fmnist_config

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs" / "record" / "cpu"


def committed_runs() -> list[Path]:
    return sorted((RECORD / "runs").glob("*/metrics.json"))


def record_runs() -> dict:
    """The runs of the record's config (run id -> resolved run), finished or not."""
    runs, _ = experiments.expand(fmnist_config.load(RECORD / "config.yaml"))
    return runs


def test_record_exists_with_its_config_and_runs():
    assert (RECORD / "config.yaml").exists(), "docs/record/cpu/config.yaml is missing"
    assert (RECORD / "published.yaml").exists()
    assert committed_runs(), "the record holds no finished run"
    runs = record_runs()
    for path in committed_runs():
        assert path.parent.name in runs, f"{path.parent.name} is not a run of the record's config"
        assert (path.parent / "history.csv").exists()
        assert not (path.parent / "model.pt").exists(), "model weights stay out of git"
    # The record's config is the repository's record config, so the workflow can go on with it.
    assert (RECORD / "config.yaml").read_text() == (REPO / "config" / "record_cpu.yaml").read_text()


def test_committed_tables_equal_what_the_runs_give():
    assert record.check(RECORD) == []


def test_headline_lists_the_published_figures_the_record_covers():
    published = pd.read_csv(RECORD / "tables" / "published.csv")
    headline = (RECORD / "headline.md").read_text()
    runs = record_runs()
    covered = {experiments.experiment_id(run) for run in runs.values()}
    rows = published[published["experiment"].isin(covered)]
    assert len(rows) >= 10, "the record covers report B's eight and report D's LeNet-like and ResNet10"
    for label in rows["label"]:
        assert label.replace("|", "\\|") in headline


def test_a_changed_run_is_caught(record_copy):
    path = sorted((record_copy / "runs").glob("*/metrics.json"))[0]
    m = json.loads(path.read_text())
    m["test_accuracy"] = (m.get("test_accuracy") or 0.5) - 0.01
    m["best_val_accuracy"] = (m.get("best_val_accuracy") or 0.5) - 0.01
    path.write_text(json.dumps(m))
    differ = record.check(record_copy)
    assert any(d.startswith("runs.csv") for d in differ), differ


def test_a_removed_run_is_caught(record_copy):
    shutil.rmtree(sorted((record_copy / "runs").glob("*"))[0])
    assert any(d.startswith("runs.csv") for d in record.check(record_copy))


def test_export_adds_finished_runs_and_rebuilds(record_copy, tmp_path):
    """Export from a results tree holding the record's runs gives the same tables (idempotent)."""
    results = tmp_path / "results"
    shutil.copytree(record_copy / "runs", results / "runs")
    out = tmp_path / "again"
    r = record.export(RECORD / "config.yaml", results, out, published=RECORD / "published.yaml")
    assert r["finished"] == len(committed_runs())
    assert (out / "runs.csv").read_text() == (RECORD / "runs.csv").read_text()
    assert (out / "headline.md").read_text() == (RECORD / "headline.md").read_text()


def test_readme_shows_the_records_headline_table():
    block = record_readme.readme_block(REPO / "README.md", "cpu")
    assert block is not None, "README.md lacks the <!-- record:cpu:start/end --> markers"
    assert block.strip() == (RECORD / "headline.md").read_text().strip(), (
        "README's record table is stale: python -m fmnist record export ... --readme README.md"
    )


def test_headline_status_counts_the_records_runs():
    """The status line above the table is computed from runs/, so no README can claim more runs."""
    runs = record_runs()
    first = (RECORD / "headline.md").read_text().splitlines()[0]
    n = len(committed_runs())
    assert f"{n} of {len(runs)} runs finished" in first, first
    assert ("complete" in first) == (n == len(runs)), first
    hours = sum(json.loads(p.read_text())["train_seconds"] for p in committed_runs()) / 3600
    assert f"{hours:.1f} hours of training" in first, first


def test_status_line_says_in_progress_until_every_run_finished():
    assert record_readme.status_line(29, 30, 7200).startswith("**Status: in progress** — 29 of 30 runs finished; 2.0 hours")
    assert record_readme.status_line(30, 30, 0).startswith("**Status: complete** — 30 of 30")


def test_export_updates_every_readme_it_is_given(record_copy, tmp_path):
    from fmnist import cli

    results = tmp_path / "results"
    shutil.copytree(record_copy / "runs", results / "runs")
    shutil.rmtree(sorted((results / "runs").iterdir())[0])  # one run fewer than the record holds
    readmes = [tmp_path / "README.md", tmp_path / "record-README.md"]
    for i, path in enumerate(readmes):
        path.write_text(f"# readme {i}\n\n<!-- record:rec:start -->\nold table\n<!-- record:rec:end -->\n\nrest {i}\n")
    dest = tmp_path / "rec"
    args = ["record", "export", "--configfile", str(RECORD / "config.yaml"), "--results", str(results),
            "--dest", str(dest), "--published", str(RECORD / "published.yaml")]
    assert cli.main(args + [a for p in readmes for a in ("--readme", str(p))]) == 0
    headline = (dest / "headline.md").read_text()
    assert f"{len(committed_runs()) - 1} of {len(record_runs())} runs finished" in headline.splitlines()[0]
    for i, path in enumerate(readmes):
        assert record_readme.readme_block(path, "rec") == headline.strip()
        assert path.read_text().startswith(f"# readme {i}\n") and path.read_text().endswith(f"rest {i}\n")


def test_export_refuses_a_readme_without_markers_before_writing_anything(tmp_path, capsys):
    from fmnist import cli

    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text("<!-- record:rec:start -->\nold\n<!-- record:rec:end -->\n")
    bad.write_text("# no markers\n")
    dest = tmp_path / "rec"
    rc = cli.main(["record", "export", "--configfile", str(RECORD / "config.yaml"), "--results", str(tmp_path),
                   "--dest", str(dest), "--readme", str(good), "--readme", str(bad)])
    assert rc == 2
    assert "bad.md has no <!-- record:rec:start -->" in capsys.readouterr().err
    assert not dest.exists() and "old" in good.read_text()


def test_a_complete_record_holds_the_workflows_report_of_all_its_runs():
    runs = record_runs()
    if len(committed_runs()) < len(runs):
        pytest.skip("the record is in progress: summary.html comes once every run has finished")
    html = (RECORD / "summary.html").read_text()
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())  # the page's text, as a reader sees it
    overview = re.search(r"1\. Overview (\d+) runs \d+ experiments (\d+) ok", text)
    assert overview and overview.groups() == (str(len(runs)), str(len(runs))), (
        "summary.html is not the report of every run finished: export it again with --report")
    for experiment in {experiments.experiment_id(run) for run in runs.values()}:
        assert experiment in html, f"summary.html does not show {experiment}: export it again with --report"


# --- every committed run file is hashed: an edited history.csv or confusion.csv is caught ---------


def test_every_run_file_of_the_record_is_hashed():
    listed = record.read_manifest(RECORD)
    assert set(listed) == set(record.run_files(RECORD))
    assert any(r.startswith("runs/") for r in listed) and any(r.startswith("b_valloss/runs/") for r in listed)
    assert {Path(r).name for r in listed} == set(record.RUN_FILES)
    # the manifest is sha256sum's format: the standard tool checks it as well
    proc = subprocess.run(["sha256sum", "-c", "--quiet", record.MANIFEST], cwd=RECORD, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    i = data.rindex(b"0") if b"0" in data else len(data) - 2
    data[i] = ord("1")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["history.csv", "confusion.csv"])
@pytest.mark.parametrize("where", ["runs", "b_valloss/runs"])
def test_one_edited_byte_in_a_run_file_is_caught(record_copy, where, name):
    path = sorted((record_copy / where).glob(f"*/{name}"))[0]
    flip_one_byte(path)
    rel = path.relative_to(record_copy).as_posix()
    differ = record.check(record_copy)
    assert f"{rel}: {record.EDITED}" in differ, differ
    # an edit is never blessed by exporting again over it (here: from a results tree without that run)
    if where == "runs":
        with pytest.raises(ValueError, match=re.escape(rel)):
            record.export(record_copy / "config.yaml", record_copy / "nowhere", record_copy)


def test_a_run_file_missing_or_not_listed_is_caught(record_copy):
    path = sorted((record_copy / "runs").glob("*/history.csv"))[0]
    rel = path.relative_to(record_copy).as_posix()
    path.unlink()
    assert f"{rel}: listed in {record.MANIFEST} but missing" in record.check(record_copy)
    (record_copy / "b_valloss" / "runs" / "x").mkdir()
    (record_copy / "b_valloss" / "runs" / "x" / "history.csv").write_text("epoch\n")
    assert f"b_valloss/runs/x/history.csv: not in {record.MANIFEST}" in record.check(record_copy)
    (record_copy / record.MANIFEST).unlink()
    assert record.check(record_copy)[0].startswith(f"{record.MANIFEST}: missing")


def test_a_file_unlike_its_runs_recorded_hash_is_caught(record_copy):
    """Runs that recorded their files' hashes in metrics.json are checked against those as well."""
    metrics = next(p for p in sorted((record_copy / "runs").glob("*/metrics.json"))
                   if "files" in json.loads(p.read_text()))
    history = metrics.parent / "history.csv"
    flip_one_byte(history)
    record.write_manifest(record_copy)  # even with SHA256SUMS made to agree
    rel = history.relative_to(record_copy).as_posix()
    assert f"{rel}: its SHA-256 is not the one its metrics.json recorded" in record.check(record_copy)


# --- the headline recomputed independently: numpy and scipy on runs/*/metrics.json --------------
# Nothing below uses the project's aggregate, compare or stats code: a bug there that the record was
# exported with would pass record.check (it rebuilds with the same code), and fails here.

MIN_SEEDS_FOR_VERDICT = 3
COUNT_TOLERANCE = 0.01
# published metric -> (its value in one run's metrics.json, in the published unit; its kind)
METRIC_OF_RUN = {
    "test_accuracy": (lambda m: 100 * m["test_accuracy"], "score"),
    "val_accuracy": (lambda m: 100 * m["best_val_accuracy"], "score"),
    "test_loss": (lambda m: m["test_loss"], "score"),
    "val_loss": (lambda m: m["best_val_loss"], "score"),
    "precision": (lambda m: 100 * m["precision_macro"], "score"),
    "recall": (lambda m: 100 * m["recall_macro"], "score"),
    "f1": (lambda m: 100 * m["f1_macro"], "score"),
    "params": (lambda m: m["params"], "count"),
    "seconds_per_epoch": (lambda m: m["train_seconds"] / m["epochs_run"] if m.get("epochs_run") else None, "timing"),
    "train_seconds": (lambda m: m["train_seconds"], "timing"),
}


# A published validation figure was measured on the report's own split; ours on our 6,000 images.
OUR_VAL_IMAGES = 6000
# Per-image cross-entropy sd as a multiple of the mean loss (measured once: docs/fidelity.md).
LOSS_SD_PER_MEAN = 2.6


def split_noise_sd(entry: dict, mean: float, seed_sd: float) -> float:
    """The sd of a val_* comparison beyond what our seeds show: per image v (p(1-p) in points^2 for an
    accuracy at our mean; (LOSS_SD_PER_MEAN x our mean loss)^2 for a loss: the committed runs predate
    a recorded per-image spread), over the report's split and ours, less twice the per-image part our
    seeds' variance holds (at most v / our size); 0 for a test figure, whose 10,000 images both sides
    share."""
    metric = entry["metric"]
    if not metric.startswith("val_") or entry.get("value") is None:
        return 0.0
    theirs = entry.get("split_size") or OUR_VAL_IMAGES
    v = mean * (100 - mean) if metric == "val_accuracy" else (LOSS_SD_PER_MEAN * mean) ** 2
    seed_var = 0.0 if math.isnan(seed_sd) else seed_sd**2
    return math.sqrt(max(0.0, v / theirs + v / OUR_VAL_IMAGES - 2 * min(seed_var, v / OUR_VAL_IMAGES)))


def prediction_interval_95(values: np.ndarray, entry: dict) -> tuple[float, float]:
    """THE INTERVAL DEFINITION the record is checked against; update it here when the project's changes.

    Today: where one more run of ours, compared with a figure measured on another split, falls 95% of
    the time: mean +- t(0.975, df) * sqrt(s^2 (1 + 1/n) + split^2), df by Welch-Satterthwaite with
    the split term known (n - 1 when there is none); (nan, nan) below 2 values.
    """
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    seed_var = values.var(ddof=1) * (1 + 1 / n)
    total = seed_var + split_noise_sd(entry, float(values.mean()), float(values.std(ddof=1))) ** 2
    if seed_var > 0:
        df = total**2 / (seed_var**2 / (n - 1))
        half = scipy.stats.t.ppf(0.975, df) * math.sqrt(total)
    else:
        half = scipy.stats.norm.ppf(0.975) * math.sqrt(total)
    return float(values.mean() - half), float(values.mean() + half)


def expected_row(entry: dict, runs: list[dict]) -> dict:
    """Mean, prediction interval and verdict of one published figure, from its experiment's runs."""
    value_of, kind = METRIC_OF_RUN[entry["metric"]]
    raw = [value_of(m) for m in runs]
    values = np.array([float(v) for v in raw if v is not None and not math.isnan(float(v))])
    n, published = len(values), entry.get("value")
    mean = float(values.mean()) if n else math.nan
    low, high = prediction_interval_95(values, entry)
    if not runs:
        verdict = "not run"
    elif kind == "timing":
        verdict = "not judged"
    elif published is None:
        verdict = "figure only"
    elif n == 0:
        verdict = "no result"
    elif kind == "count":
        relative = (mean - published) / abs(published)
        verdict = "matches" if abs(relative) <= COUNT_TOLERANCE else f"differs by {100 * relative:+.1f}%"
    elif n < MIN_SEEDS_FOR_VERDICT:
        verdict = "too few seeds"
    else:
        higher_better = "loss" not in entry["metric"]
        if low <= published <= high:
            verdict = "consistent"
        else:
            verdict = "published better" if (published > high) == higher_better else "published worse"
    return {"seeds": n, "mean": mean, "low": low, "high": high, "verdict": verdict, "kind": kind}


def headline_rows(path: Path) -> list[dict]:
    """The headline table's rows, cells by column name (a label's escaped | restored)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    split = lambda ln: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]]  # noqa: E731
    head = split(lines[0])
    return [dict(zip(head, split(ln), strict=True)) for ln in lines[2:]]


def number(text: str) -> float:
    return float(text.replace(",", "")) if text else math.nan


def close(shown: float, exact: float, digits: int) -> bool:
    if math.isnan(exact) or math.isnan(shown):
        return math.isnan(exact) and math.isnan(shown)
    return abs(shown - exact) <= 0.5 * 10 ** -digits + 1e-9 * max(1.0, abs(exact))


def independent_problems(rec: Path) -> list[str]:
    """Where the record's headline.md and tables/published.csv disagree with the recomputation."""
    config_runs, _ = experiments.expand(fmnist_config.load(rec / "config.yaml"))
    covered = {rid.rsplit(".s", 1)[0] for rid in config_runs}
    by_experiment: dict[str, list[dict]] = {}
    for path in sorted((rec / "runs").glob("*/metrics.json")):
        m = json.loads(path.read_text())
        by_experiment.setdefault(m["run_id"].rsplit(".s", 1)[0], []).append(m)
    entries = [e for e in yaml.safe_load((rec / "published.yaml").read_text())["published"]
               if e["experiment"] in covered]
    rows = headline_rows(rec / "headline.md")
    table = pd.read_csv(rec / "tables" / "published.csv")
    problems = [] if len(rows) == len(entries) else [f"headline has {len(rows)} rows for {len(entries)} figures"]
    for entry, row in zip(entries, rows, strict=False):
        want = expected_row(entry, by_experiment.get(entry["experiment"], []))
        name = f"{entry['source']} {entry.get('label') or entry['experiment']} {entry['metric']}"
        digits = 0 if want["kind"] == "count" else (3 if "loss" in entry["metric"] else 2)
        shown_low, _, shown_high = row["95% prediction interval"].partition(" - ")
        if want["kind"] != "score":
            want["low"] = want["high"] = math.nan  # the headline shows an interval for scores only
        checks = {
            "figure": (row["report"], row["metric"]) == (entry["source"], entry["metric"]),
            "seeds": int(row["seeds"]) == want["seeds"],
            "mean": close(number(row["reproduced mean"]), want["mean"], digits),
            "interval": close(number(shown_low), want["low"], digits) and close(number(shown_high), want["high"], digits),
            "verdict": row["verdict"] == want["verdict"],
            # the interval's half-width beside it, then the seeds that would halve it
            "half-width": close(number(row["half-width (seeds to halve it)"].split(" (")[0]),
                                (want["high"] - want["low"]) / 2, digits),
        }
        # the full-precision table the headline is made from
        exact = table[(table["experiment"] == entry["experiment"]) & (table["metric"] == entry["metric"])
                      & (table["source"] == entry["source"])]
        if len(exact) != 1:
            checks["published.csv row"] = False
        else:
            r = exact.iloc[0]
            same = lambda a, b: (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9)  # noqa: E731
            checks["published.csv"] = (
                r["verdict"] == want["verdict"] and int(r["seeds"]) == want["seeds"]
                and same(float(r["reproduced_mean"]), want["mean"])
                and (want["kind"] != "score" or (same(float(r["reproduced_pi95_low"]), want["low"])
                                                 and same(float(r["reproduced_pi95_high"]), want["high"])))
            )
        problems += [f"{name}: {what} differs from the recomputation ({row} vs {want})"
                     for what, ok in checks.items() if not ok]
    return problems


def test_headline_recomputed_independently_from_the_runs():
    assert independent_problems(RECORD) == []


def test_the_independent_recomputation_catches_a_wrong_interval_and_verdict(record_copy, monkeypatch):
    """A record exported with a wrong interval (the CI of the mean, the classic mistake) or a wrong
    verdict passes record.check, which rebuilds with the same code, and fails the recomputation."""
    from fmnist import compare, stats

    monkeypatch.setattr(stats, "prediction_interval",
                        lambda values, level=stats.LEVEL, extra_sd=0.0: tuple(stats.mean_ci(values, level)[k]
                                                                              for k in ("ci95_low", "ci95_high")))
    record.rebuild(record_copy, record_copy)
    assert record.check(record_copy) == []
    assert any("interval differs" in p for p in independent_problems(record_copy))
    monkeypatch.undo()
    monkeypatch.setattr(compare, "verdict_score", lambda value, summary, better="higher": "consistent")
    record.rebuild(record_copy, record_copy)
    assert any("verdict differs" in p for p in independent_problems(record_copy))


@pytest.mark.parametrize("seeds", [0, 1, 2])
def test_the_recomputation_agrees_at_any_number_of_finished_runs(record_copy, seeds):
    """The record grows a run at a time: with 0, 1 or 2 seeds of an experiment finished (no interval,
    no verdict yet), the rebuilt headline still equals the recomputation."""
    for run_dir in sorted((record_copy / "runs").iterdir()):
        if int(run_dir.name.rsplit(".s", 1)[1]) >= seeds:
            shutil.rmtree(run_dir)
    record.rebuild(record_copy, record_copy)
    assert independent_problems(record_copy) == []


def test_record_check_names_the_fix_for_an_edited_run_file(record_copy, capsys):
    """An edited run file is restored, not exported over: the fix line says so."""
    history = sorted((record_copy / "runs").glob("*/history.csv"))[0]
    history.write_text(history.read_text().replace("0.", "0.9", 1))
    assert cli.main(["record", "check", "--dest", str(record_copy)]) == 1
    err = capsys.readouterr().err
    assert "edited after export" in err and "fix: restore the run files" in err
    assert "record export" not in err.split("fix: restore")[1].splitlines()[0]


def test_the_records_readme_shows_its_generated_blocks_and_no_history():
    """The record's README shows its headline, findings and provenance as `record export` generated
    them, and tells no development history: no narrative beside the generated numbers."""
    readme = RECORD / "README.md"
    for suffix, name in record_readme.BLOCKS.items():
        block = record_readme.readme_block(readme, "cpu" + suffix)
        assert block is not None and block.strip() == (RECORD / name).read_text().strip(), (
            f"{readme} block cpu{suffix} is stale: python -m fmnist record export ... --readme {readme}")
    text = readme.read_text().lower()
    for stale in ("session", "sitting", "does not survive", "the report's own stopping rule",
                  "89.88-90.55", "0.228-0.243"):
        assert stale not in text, stale
    assert "the report's own stopping rule" not in (REPO / "README.md").read_text()
    assert "does not survive" not in (REPO / "README.md").read_text()


def test_provenance_table_lists_every_run_and_says_what_is_unknown():
    rows = {row["run"]: row for row in headline_rows(RECORD / "provenance.md")}
    assert len(rows) == len(committed_runs())
    assert all(len(" | ".join(row.values())) < 400 for row in rows.values())  # no narrative in a cell
    for path in committed_runs():
        m = json.loads(path.read_text())
        row = rows[m["run_id"]]
        shown = (row["commit"], row["machine"], row["start (UTC)"], row["end (UTC)"])
        prov = m.get("provenance")
        if prov is None:  # trained before metrics.json recorded it
            assert shown == ("not recorded",) * 4, row
        else:  # the run's own commit, machine, start and end, as metrics.json has them
            assert shown == (prov["commit"][:12], prov["machine"], prov["started"], prov["finished"]), row
