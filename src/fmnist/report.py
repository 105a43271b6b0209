"""Render the single-file HTML summary (figures embedded as data URIs) from the aggregated tables."""

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

PACKAGES = ["torch", "torchvision", "snakemake", "pandas", "numpy", "matplotlib", "jinja2", "fmnist"]


def data_uri(path: Path | str, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


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


def fmt_pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def fmt_num(x, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:,.{digits}f}"


def records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records")) if len(df) else []


def build_context(runs_csv, experiments_csv, tables_dir, studies: dict[str, list[str]],
                  run_dir: str = "results/runs", title: str = "Fashion-MNIST model study",
                  config_hash: str = "", repo: Path | str = ".") -> dict:
    runs = pd.read_csv(runs_csv)
    exps = pd.read_csv(experiments_csv)
    tables_dir = Path(tables_dir)
    study_tables = {}
    for study in studies:
        path = tables_dir / f"study_{study}.csv"
        study_tables[study] = records(pd.read_csv(path)) if path.exists() and path.stat().st_size else []
    run_details = []
    for row in records(runs):
        rdir = Path(run_dir) / row["run_id"]
        metrics = json.loads((rdir / "metrics.json").read_text())
        run_details.append({
            **row,
            "curves": data_uri(rdir / "curves.png") if (rdir / "curves.png").exists() else "",
            "confusion_png": data_uri(rdir / "confusion.png") if (rdir / "confusion.png").exists() else "",
            "per_class": metrics.get("per_class_accuracy") or {},
            "config_json": json.dumps(metrics.get("config", {}), indent=2, sort_keys=True),
        })
    status_counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    devices = sorted(set(runs["device_name"].dropna())) if len(runs) else []
    return {
        "title": title,
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "n_runs": len(runs),
        "status_counts": status_counts,
        "problem_runs": [r for r in records(runs) if r["status"] != "ok"],
        "total_train_seconds": float(runs["train_seconds"].sum()) if len(runs) else 0.0,
        "devices": devices,
        "leaderboard": records(exps),
        "studies": {s: {"ids": ids, "table": study_tables[s]} for s, ids in studies.items()},
        "runs": run_details,
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
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = fmt_pct
    env.filters["num"] = fmt_num
    return env.get_template(template.name).render(**context)


def write_report(out: Path | str, template: Path | str, **kwargs) -> None:
    html = render(build_context(**kwargs), template)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(html, encoding="utf-8")
