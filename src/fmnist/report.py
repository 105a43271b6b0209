"""Render the single-file HTML summary (figures embedded as data URIs) from the aggregated tables and figures."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.metadata
import json
import math
import platform
import subprocess
from pathlib import Path

import jinja2
import pandas as pd

from fmnist import compare

PACKAGES = ["torch", "torchvision", "snakemake", "pandas", "numpy", "matplotlib", "jinja2", "fmnist"]
SOURCES = {
    "A": "Report A (CZ4042 2023)", "B": "Report B (SC4001 2025), validation accuracy",
    "C": "Report C (CZ4042 2023)", "D": "Report D (2020)", "E": "Report E (SC4001 2025)",
}


def data_uri(path: Path | str, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def maybe_uri(path: Path | str | None) -> str:
    return data_uri(path) if path and Path(path).is_file() and Path(path).stat().st_size else ""


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


def run_detail(row: dict, run_dir: Path) -> dict:
    """One run's drill-down: figures, per-class accuracy, most confused pairs, resolved config."""
    rdir = run_dir / str(row["run_id"])
    metrics_path = rdir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    per_class = metrics.get("per_class_accuracy") or {
        k[4:]: v for k, v in row.items() if k.startswith("acc_")
    }
    confusion_csv = rdir / "confusion.csv"
    pairs = []
    if confusion_csv.is_file():
        cm = pd.read_csv(confusion_csv, index_col=0)
        if cm.to_numpy().sum():
            pairs = compare.confused_pairs(cm, k=3)
    return {
        **row,
        "curves": maybe_uri(rdir / "curves.png"),
        "confusion_png": maybe_uri(rdir / "confusion.png"),
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


def build_context(runs_csv, experiments_csv, tables_dir, studies: dict[str, list[str]],
                  run_dir: Path | str = "results/runs", figures_dir: Path | str = "results/figures",
                  descriptions: dict[str, str] | None = None, sweeps: list[dict] | None = None,
                  title: str = "Fashion-MNIST model study", config_hash: str = "",
                  repo: Path | str = ".") -> dict:
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
                           "rows": rows, "counts": counts})
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
    return env.get_template(template.name).render(**context)


def write_report(out: Path | str, template: Path | str, **kwargs) -> None:
    html = render(build_context(**kwargs), template)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(html, encoding="utf-8")
