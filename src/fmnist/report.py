"""Render the single-file HTML summary (figures embedded as data URIs) from the aggregated tables and figures.

What keeps the page small and quick however many runs it holds: figures are embedded as palette PNGs
(256 colours at most, see `png_bytes`), confusion matrices are HTML tables, and each run's detail
sits, as escaped HTML, in a <script type="text/html"> inside its closed <details>, which the page's
one script inserts into the document when the reader opens it (before, the browser neither parses
it into elements nor lays it out).
`python -m fmnist.reportsize` measures the page of a synthetic 363-run study.

The top box answers first: what kind of study this is (`study_kind`), the verdicts on the published
figures it runs, and where nothing is judged, why, with links to the committed records
(docs/record/<name>/), which are listed in their own section and never mixed with this study's runs."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import importlib.metadata
import io
import json
import math
import os
import platform
import subprocess
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

from fmnist import compare, svgplot
from fmnist.runfiles import CONFUSION_FILE, HISTORY_FILE, METRICS_FILE

TEMPLATE = Path(__file__).resolve().parent / "templates" / "summary.html.j2"
PACKAGES = ["torch", "torchvision", "snakemake", "pandas", "numpy", "matplotlib", "jinja2", "fmnist"]
SOURCES = {
    "A": "Report A (CZ4042 2023)", "B": "Report B (SC4001 2025), validation accuracy",
    "C": "Report C (CZ4042 2023)", "D": "Report D (2020)", "E": "Report E (SC4001 2025)",
}


def png_bytes(path: Path | str) -> bytes:
    """A PNG as a palette PNG: as it is when it already is one (fmnist.plots writes them so), else
    flattened on white and quantized to at most 256 colours (figures drawn by older code)."""
    data = Path(path).read_bytes()
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("P", "L", "1"):
            return data
        from fmnist.plots import quantized_png

        return quantized_png(im)


def data_uri(path: Path | str, mime: str = "image/png") -> str:
    data = png_bytes(path) if mime == "image/png" else Path(path).read_bytes()
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def maybe_uri(path: Path | str | None) -> str:
    return data_uri(path) if path and Path(path).is_file() and Path(path).stat().st_size else ""


def confusion_table(confusion_csv: Path | str) -> dict:
    """A confusion matrix for an HTML table: class names, and per row the counts with their share of
    the true class in tenths (the cell's shade, 0-9)."""
    cm = pd.read_csv(confusion_csv, index_col=0)
    rows = []
    for name, counts in zip(cm.index, cm.to_numpy(), strict=True):
        total = counts.sum()
        rows.append({"name": str(name), "cells": [
            (int(c), min(9, int(10 * c / total)) if total else 0) for c in counts]})
    return {"classes": [str(c) for c in cm.columns], "rows": rows}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(repo: Path | str) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_pct(x) -> str:
    """A fraction as a percentage with two decimals."""
    return "" if _nan(x) else f"{100 * x:.2f}"


def fmt_pct_clipped(x) -> str:
    """An accuracy bound as a percentage, clipped to 0..100 (a t-interval over few seeds can pass 100%)."""
    return "" if _nan(x) else fmt_pct(min(max(x, 0.0), 1.0))


def fmt_num(x, digits: int = 0) -> str:
    return "" if _nan(x) else f"{x:,.{digits}f}"


def fmt_signed(x, digits: int = 2) -> str:
    return "" if _nan(x) else f"{x:+.{digits}f}"


def fmt_metric(x, metric: str) -> str:
    """A value in the unit its published metric uses (accuracies in percent)."""
    if _nan(x):
        return ""
    if metric in ("test_loss", "val_loss"):
        return f"{x:.3f}"
    if metric == "params":
        return f"{x:,.0f}"
    if metric == "seconds_per_epoch":
        return f"{x:,.1f}"
    return f"{min(max(x, 0.0), 100.0):.2f}"  # accuracies in percent; a wide t-interval can pass 100


def fmt_pvalue(p) -> str:
    """A p-value: three decimals, or "< 0.001"."""
    if _nan(p):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def verdict_class(verdict) -> str:
    """The CSS class of a verdict badge: `v-` and the verdict's words joined by dashes; every
    "differs by x%" shares `v-differs`."""
    text = "" if _nan(verdict) else str(verdict)
    if text.startswith("differs"):
        return "v-differs"
    return "v-" + "-".join("".join(c for c in text.lower() if c.isalnum() or c == " ").split())


def verdict_counts(verdicts: list[str]) -> dict[str, int]:
    """How many rows carry each verdict, every "differs by x%" counted as one "differs"."""
    keys = ["differs" if str(v).startswith("differs") else str(v) for v in verdicts]
    return pd.Series(keys, dtype=object).value_counts().to_dict() if keys else {}


def fmt_duration(seconds) -> str:
    if _nan(seconds):
        return ""
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts with NaN as None, so templates test `is none` rather than NaN."""
    return json.loads(df.to_json(orient="records")) if len(df) else []


def read_table(tables_dir: Path, name: str) -> pd.DataFrame:
    path = tables_dir / f"{name}.csv"
    if not path.exists() or not path.stat().st_size:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _curves_svg(rdir: Path, best_epoch) -> Markup | str:
    """The run's learning curves as inline SVG (fmnist.svgplot), from its history.csv."""
    path = rdir / HISTORY_FILE
    if not path.is_file():
        return ""
    best = None if _nan(best_epoch) else int(best_epoch)
    return Markup(svgplot.learning_curves_svg(pd.read_csv(path), best))  # numbers and fixed words only


def run_detail(row: dict, run_dir: Path) -> dict:
    """One run's drill-down: figures, per-class accuracy, most confused pairs, resolved config."""
    rdir = run_dir / str(row["run_id"])
    metrics_path = rdir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    per_class = metrics.get("per_class_accuracy") or {
        k[4:]: v for k, v in row.items() if k.startswith("acc_")
    }
    confusion_csv = rdir / CONFUSION_FILE
    pairs, matrix = [], None
    if confusion_csv.is_file():
        cm = pd.read_csv(confusion_csv, index_col=0)
        if cm.to_numpy().sum():
            pairs = compare.confused_pairs(cm, k=3)
            matrix = confusion_table(confusion_csv)
    return {
        **row,
        "curves_svg": _curves_svg(rdir, row.get("best_epoch")),
        "curves": "" if (rdir / HISTORY_FILE).is_file() else maybe_uri(rdir / "curves.png"),
        "confusion": matrix,
        "per_class": per_class,
        "confused": pairs,
        "config_json": json.dumps(metrics["config"], indent=2, sort_keys=True) if "config" in metrics else "",
    }


def headline(board: list[dict], effects: list[dict]) -> dict:
    """The at-a-glance answer: the best experiment, which others are statistically tied with it,
    and which augmentations clearly help or hurt."""
    ranked = [e for e in board if e.get("test_accuracy_mean") is not None]
    if not ranked:
        return {}
    best = ranked[0]
    return {
        "best": best,
        "effect_comparisons": effects[0]["comparisons"] if effects else 0,
        "few_seeds": min((e["n"] for e in ranked), default=0) < 3,
        "tied": [e for e in ranked[1:] if e.get("vs_best") == "tied"],
        "helps": [e for e in effects if e["verdict"] == "better"],
        "hurts": [e for e in effects if e["verdict"] == "worse"],
        "unclear": [e for e in effects if e["verdict"] not in ("better", "worse")],
    }


def _needed_epochs(p: dict):
    """The epochs a published figure took: the report's budget where it states one, else the epoch
    it names for the figure, else None (not stated)."""
    for key in ("published_epochs", "published_best_epoch"):
        if p.get(key) is not None:
            return p[key]
    return None


def study_kind(published: list[dict], runs: pd.DataFrame) -> dict:
    """What kind of study the page reports, decided from its runs' epoch budgets against the
    published figures' epochs. The rule:

    - a *reproduction* runs at least one published figure's experiment, and for every figure it
      runs, its epoch budget reaches the report's (the report's stated epochs, or where it states
      none, the epoch it took the figure at);
    - otherwise it is a *short-budget study*: it runs none of the published experiments, or some
      with fewer epochs than the report trained, so what it judges is a shorter training.
    """
    judged = [p for p in published if p.get("runs")]
    budget = None
    if len(runs) and "epochs_max" in runs and runs["epochs_max"].notna().any():
        budget = int(runs["epochs_max"].max())
    needed = sorted({int(n) for n in (_needed_epochs(p) for p in published) if n is not None})
    span = (f"{needed[0]}" if len(needed) == 1 else f"{needed[0]}-{needed[-1]}") if needed else ""
    short = [p for p in judged if _needed_epochs(p) is not None
             and (p.get("our_epochs_max") is None or p["our_epochs_max"] < _needed_epochs(p))]
    counts = verdict_counts([p["verdict"] for p in judged])
    out = {"budget": budget, "published_epochs": span, "judged": len(judged), "figures": len(published),
           "not_run": len(published) - len(judged), "counts": counts, "short": len(short)}
    if judged and not short:
        return {**out, "kind": "reproduction",
                "why": f"it runs {len(judged)} of the {len(published)} published figures' experiments, "
                       "each for at least the report's epochs"}
    limit = (f"its runs train for at most {budget} epoch{'s' if budget != 1 else ''} (the published figures: "
             f"{span.replace('-', ' to ')} epochs)") if budget is not None and span else ""
    if not judged:  # the verdict line says that nothing is judged, and why
        why = limit or "it runs none of the published figures' experiments"
    else:
        why = (f"{len(short)} of the {len(judged)} published figures it runs were trained longer in their "
               "report than here, so their verdicts compare a shorter training with the published one")
        why = f"{limit}; {why}" if limit else why
    return {**out, "kind": "short-budget study", "why": why}


@functools.cache
def _git_last_commit(repo: str, path: str) -> str:
    try:
        return subprocess.run(["git", "log", "-1", "--format=%h (%cs)", "--", path], cwd=repo, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def committed_records(repo: Path | str, out_dir: Path | str) -> list[dict]:
    """The records committed under docs/record/<name>/ (their runs.csv and published table): the
    device, the commit that last changed their runs, their verdict counts, and links to their report and
    README relative to `out_dir` (where the page is written) and as repository paths."""
    repo, out_dir = Path(repo).resolve(), Path(out_dir).resolve()
    out = []
    for d in sorted((repo / "docs" / "record").glob("*/runs.csv")):
        d = d.parent
        runs = pd.read_csv(d / "runs.csv")
        pub = read_table(d / "tables", "published")
        judged = pub[pub["runs"].fillna(0) > 0] if len(pub) else pub
        rel = d.relative_to(repo).as_posix()
        out.append({
            "name": d.name, "path": rel,
            "devices": ", ".join(sorted(set(runs["device_name"].dropna().astype(str)))) if len(runs) else "",
            "runs": len(runs), "commit": _git_last_commit(str(repo), f"{rel}/runs"),
            "judged": len(judged), "counts": verdict_counts(list(judged["verdict"])) if len(judged) else {},
            "links": [{"label": label, "href": os.path.relpath(d / name, out_dir), "path": f"{rel}/{name}"}
                      for label, name in (("its report", "summary.html"), ("README", "README.md"))
                      if (d / name).is_file()],
        })
    return out


def build_context(runs_csv, experiments_csv, tables_dir, studies: dict[str, list[str]],
                  run_dir: Path | str = "results/runs", figures_dir: Path | str = "results/figures",
                  descriptions: dict[str, str] | None = None, sweeps: list[dict] | None = None,
                  title: str = "Fashion-MNIST model study", config_hash: str = "",
                  repo: Path | str = ".", out_dir: Path | str = "reports") -> dict:
    runs = pd.read_csv(runs_csv)
    tables_dir, run_dir, figures_dir = Path(tables_dir), Path(run_dir), Path(figures_dir)
    descriptions = descriptions or {}
    board = records(read_table(tables_dir, "leaderboard"))
    effects = records(read_table(tables_dir, "effects"))
    published = records(read_table(tables_dir, "published"))
    per_report = []
    for source in sorted({p["source"] for p in published}):
        rows = [p for p in published if p["source"] == source]
        counts = verdict_counts([r["verdict"] for r in rows])
        per_report.append({"source": source, "title": SOURCES.get(source, f"Report {source}"),
                           "rows": rows, "counts": counts, "ran": [r for r in rows if r.get("runs")],
                           "not_run": [r for r in rows if not r.get("runs")]})
    claims = records(read_table(tables_dir, "findings"))
    findings = []
    for source in sorted({c["source"] for c in claims}):
        rows = [c for c in claims if c["source"] == source]
        counts = {v: n for v in compare.FINDING_VERDICTS if (n := sum(r["verdict"] == v for r in rows))}
        findings.append({"source": source, "title": SOURCES.get(source, f"Report {source}"), "rows": rows,
                         "counts": counts})
    study_list = []
    for name, ids in studies.items():
        table = records(read_table(tables_dir, f"study_{name}"))
        study_list.append({"name": name, "description": descriptions.get(name, ""), "runs": len(ids),
                           "experiments": len(table), "table": table})
    sweep_list = []
    for sweep in sweeps or []:
        sweep_list.append({**sweep, "figure": maybe_uri(figures_dir / f"sweep_{sweep['name']}.png"),
                           "table": records(read_table(tables_dir, f"sweep_{sweep['name']}"))})
    all_runs = records(runs.sort_values(["experiment", "seed"]) if len(runs) else runs)
    status_counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    devices = sorted(set(runs["device_name"].dropna().astype(str))) if len(runs) else []
    n_train = sorted(set(runs["n_train"].dropna().astype(int))) if len(runs) else []
    return {
        "title": title,
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "n_runs": len(runs),
        "n_experiments": len(board),
        "status_counts": status_counts,
        "problem_runs": [r for r in all_runs if r["status"] != "ok"],
        "total_train_seconds": float(runs["train_seconds"].sum()) if len(runs) else 0.0,
        "devices": devices,
        "n_train": n_train,
        "studies": study_list,
        "headline": headline(board, effects),
        "kind": study_kind(published, runs),
        "records": committed_records(repo, out_dir),
        "leaderboard": board,
        "per_report": per_report,
        "verdict_help": compare.VERDICT_HELP,
        "findings": findings,
        "finding_help": compare.FINDING_HELP,
        "effects": effects,
        "sweeps": sweep_list,
        "figures": {name: maybe_uri(figures_dir / f"{name}.png")
                    for name in ("effects", "pareto", "class_distribution", "samples", "augmentations")},
        "runs": [run_detail(r, run_dir) for r in all_runs],
        "environment": {
            **package_versions(),
            "git commit": git_commit(repo),
            "config hash": config_hash,
            "devices": ", ".join(devices),
        },
    }


def render(context: dict, template: Path | str) -> str:
    template = Path(template)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template.parent),
        autoescape=True,  # every run name and config string is text, whatever characters it holds
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = fmt_pct
    env.filters["num"] = fmt_num
    env.filters["pct_clipped"] = fmt_pct_clipped
    env.filters["signed"] = fmt_signed
    env.filters["duration"] = fmt_duration
    env.filters["metric"] = fmt_metric
    env.filters["pvalue"] = fmt_pvalue
    env.filters["verdict_class"] = verdict_class
    html = env.get_template(template.name).render(**context)
    # A detail block is the text of a <script type="text/html">: every text of the study in it is
    # escaped, so none can end the block early; this holds the templates to it.
    if html.count("<script") != html.count("</script>") or "<!--" in html:
        raise ValueError(f"{template.name}: a detail block would not be inert text (an unbalanced <script> or an HTML comment)")
    return html


def write_report(out: Path | str, template: Path | str, **kwargs) -> None:
    html = render(build_context(out_dir=Path(out).parent, **kwargs), template)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(html, encoding="utf-8")
