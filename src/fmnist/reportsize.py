"""How the summary report scales: a synthetic results tree for a whole config (config/full.yaml's 363
runs by default), the report rendered from it with the real templates, its size, and the time
headless Chromium takes to load it.

The synthetic runs are shaped like real ones (the config's run ids and studies, the published
figures of config/published.yaml, a history of the run's own epoch budget, a 10-class confusion
matrix, both per-run figures drawn by fmnist.plots), with made-up values: what is measured is the
page, not the study. The dataset figures (class distribution, samples, augmentation gallery) need
prepared data and are left out: three figures of fixed size whatever the number of runs.

Time to interactive is measured as honestly as a plain command allows: Chromium is started
headless with `--screenshot` at 1280x900 (it draws the first screen once the page has loaded:
parse, style, layout and paint of the whole document), and the same command on an empty page is the
baseline subtracted from it; the best of `repeat` tries is kept. It is not an input-latency figure,
and on a loaded machine it is noisy: compare pages measured in one sitting.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fmnist.runfiles import CONFUSION_FILE, HISTORY_FILE, METRICS_FILE

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def _history(epochs: int, rng: random.Random) -> pd.DataFrame:
    rows = []
    for e in range(1, epochs + 1):
        t = 1 - math.exp(-e / max(2.0, epochs / 4))
        rows.append({"epoch": e, "train_loss": 0.9 - 0.65 * t + rng.uniform(-0.01, 0.01),
                     "train_accuracy": 0.70 + 0.25 * t + rng.uniform(-0.004, 0.004),
                     "val_loss": 0.7 - 0.45 * t + rng.uniform(-0.015, 0.015),
                     "val_accuracy": 0.75 + 0.17 * t + rng.uniform(-0.006, 0.006),
                     "lr": 1e-3 * (1 - e / (epochs + 1)), "seconds": 20 + rng.uniform(-2, 2)})
    return pd.DataFrame(rows)


def _confusion(acc: float, rng: random.Random) -> list[list[int]]:
    cm = []
    for i in range(10):
        right = int(1000 * min(0.99, max(0.5, acc + rng.uniform(-0.08, 0.05))))
        wrong = [rng.random() for _ in range(9)]
        scale = (1000 - right) / sum(wrong)
        row = [int(w * scale) for w in wrong]
        row.insert(i, 1000 - sum(row))
        cm.append(row)
    return cm


def _metrics(rid: str, run: dict, history: pd.DataFrame, cm: list[list[int]]) -> dict:
    test_acc = sum(cm[i][i] for i in range(10)) / 10_000
    best = int(history["val_loss"].idxmin())
    return {
        "run_id": rid, "status": "ok", "status_reason": "",
        "model": run["model"]["name"], "arch": run["model"].get("arch", run["model"]["name"]),
        "augmentation": run["augmentation"]["name"], "setting": run["setting"], "seed": run["seed"],
        "test_accuracy": test_acc, "test_loss": 0.3, "precision_macro": test_acc, "recall_macro": test_acc,
        "f1_macro": test_acc, "per_class_accuracy": {c: cm[i][i] / 1000 for i, c in enumerate(CLASSES)},
        "confusion_matrix": cm, "best_epoch": best + 1, "tested_epoch": best + 1,
        "best_val_loss": float(history["val_loss"].min()), "best_val_accuracy": float(history["val_accuracy"].max()),
        "epochs_run": len(history), "epochs_max": int(run["train"]["epochs"]), "params": 100_000,
        "trainable_params": 100_000, "train_seconds": float(history["seconds"].sum()),
        "images_per_second": 2000.0, "peak_memory_mb": 100.0, "device": "cpu", "device_name": "synthetic",
        "n_train": 54_000, "config_hash": "synthetic", "config": run,
    }


def synthetic_results(root: Path | str, configfile: Path | str = "config/full.yaml", limit: int | None = None,
                      max_epochs: int | None = 40, figures: bool = True, seed: int = 0,
                      log: Callable[[str], None] = lambda _m: None) -> dict:
    """Write a results tree for `configfile`'s runs under `root` (results/runs, runs.csv,
    experiments.csv, tables/, figures/); `limit` keeps the first runs only, `max_epochs` caps each
    run's history (the full study's budgets run to 100 epochs), `figures=False` skips the drawing.
    Returns what write_report needs."""
    from fmnist import aggregate, experiments, plots, published
    from fmnist import config as fconfig

    root = Path(root)
    cfg = fconfig.load(configfile)
    runs, studies = experiments.expand(cfg)
    ids = list(runs)[:limit] if limit else list(runs)
    studies = {name: [r for r in members if r in ids] for name, members in studies.items()}
    studies = {name: members for name, members in studies.items() if members}
    rng = random.Random(seed)
    run_dir, tables, fig_dir = root / "results" / "runs", root / "results" / "tables", root / "results" / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, rid in enumerate(ids, 1):
        d = run_dir / rid
        d.mkdir(parents=True, exist_ok=True)
        run = runs[rid]
        epochs = int(run["train"]["epochs"])
        history = _history(min(epochs, max_epochs) if max_epochs else epochs, rng)
        cm = _confusion(0.9, rng)
        history.to_csv(d / HISTORY_FILE, index=False)
        pd.DataFrame(cm, columns=CLASSES, index=pd.Index(CLASSES, name="true \\ predicted")).to_csv(d / CONFUSION_FILE)
        m = _metrics(rid, run, history, cm)
        (d / METRICS_FILE).write_text(json.dumps(m))
        if figures:
            plots.learning_curves(d / HISTORY_FILE, d / "curves.png", title=f"{rid} (ok)", best_epoch=m["best_epoch"])
            plots.confusion(d / CONFUSION_FILE, d / "confusion.png", title=f"{rid}: test confusion matrix")
        paths.append(d / METRICS_FILE)
        if k % 50 == 0:
            log(f"  {k} of {len(ids)} synthetic runs written")
    pub_file = cfg["report"].get("published")
    pub = published.load_published(Path(configfile).resolve().parent.parent / pub_file) if pub_file else []
    aggregate.write_all(paths, studies, root / "results" / "runs.csv", root / "results" / "experiments.csv",
                        tables, published=pub, sweeps=[], baseline=cfg["report"]["baseline_augmentation"])
    if figures:
        plots.effects(tables / "effects.csv", fig_dir / "effects.png")
        plots.pareto(root / "results" / "experiments.csv", fig_dir / "pareto.png")
    return report_inputs(root, configfile, limit)


def report_inputs(root: Path | str, configfile: Path | str = "config/full.yaml", limit: int | None = None) -> dict:
    """What write_report takes for the synthetic tree under `root` (written by `synthetic_results`)."""
    from fmnist import config as fconfig
    from fmnist import experiments

    root = Path(root)
    cfg = fconfig.load(configfile)
    runs, studies = experiments.expand(cfg)
    ids = set(list(runs)[:limit] if limit else runs)
    studies = {name: [r for r in members if r in ids] for name, members in studies.items()}
    return {"runs_csv": root / "results" / "runs.csv", "experiments_csv": root / "results" / "experiments.csv",
            "tables_dir": root / "results" / "tables", "studies": {n: m for n, m in studies.items() if m},
            "figures_dir": root / "results" / "figures", "run_dir": root / "results" / "runs",
            "descriptions": {n: s.get("description", "") for n, s in cfg["studies"].items()}}


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def load_seconds(page: Path | str, browser: str, repeat: int = 3, timeout: float = 120) -> float:
    """Seconds headless Chromium takes to load `page` and draw its first screen, less the same for an
    empty page (the browser's own start), best of `repeat`."""
    def best(target: Path) -> float:
        times = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as profile:
                shot = Path(profile) / "shot.png"
                cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                       "--disable-background-networking", "--disable-component-update", "--disable-sync",
                       "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1280,900",
                       f"--screenshot={shot}", Path(target).resolve().as_uri()]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                times.append(time.perf_counter() - t0)
                if not shot.is_file():
                    raise RuntimeError(f"chromium drew no page for {target}: {proc.stderr[-2000:]}")
        return min(times)

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.html"
        empty.write_text("<!DOCTYPE html><html><head><title>empty</title></head><body></body></html>")
        return max(0.0, best(Path(page)) - best(empty))


def page_parts(html: str) -> dict[str, int]:
    """Bytes of the page by kind: embedded images (data: URIs) and the rest."""
    import re

    images = sum(len(m.group(0)) for m in re.finditer(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=]+", html))
    return {"total": len(html.encode("utf-8")), "images": images}


def measure(out_dir: Path | str, configfile: Path | str = "config/full.yaml", limit: int | None = None,
            repeat: int = 3, reuse: bool = False, log: Callable[[str], None] = print) -> dict:
    """Build the synthetic tree in `out_dir` (or, with `reuse`, take the one already there: the same
    tree measured before and after a change), render reports/summary.html, and measure it."""
    from fmnist import report

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    if reuse and (out_dir / "results" / "runs.csv").is_file():
        ctx = report_inputs(out_dir, configfile, limit)
        log(f"reusing the synthetic results in {out_dir / 'results'}")
    else:
        ctx = synthetic_results(out_dir, configfile, limit=limit, log=log)
    t_tree = time.perf_counter() - t0
    page = out_dir / "reports" / "summary.html"
    t0 = time.perf_counter()
    report.write_report(page, report.TEMPLATE, runs_csv=ctx["runs_csv"], experiments_csv=ctx["experiments_csv"],
                        tables_dir=ctx["tables_dir"], studies=ctx["studies"], run_dir=ctx["run_dir"],
                        figures_dir=ctx["figures_dir"], descriptions=ctx["descriptions"], sweeps=[],
                        config_hash="synthetic", repo=Path(configfile).resolve().parent.parent)
    t_render = time.perf_counter() - t0
    html = page.read_text(encoding="utf-8")
    parts = page_parts(html)
    runs = len(pd.read_csv(ctx["runs_csv"]))
    browser = chromium()
    load = load_seconds(page, browser, repeat=repeat) if browser else None
    result = {"runs": runs, "page": str(page), "bytes": parts["total"], "image_bytes": parts["images"],
              "bytes_per_run": parts["total"] / max(runs, 1), "tree_seconds": t_tree,
              "render_seconds": t_render, "load_seconds": load}
    log(f"{runs} runs: page {parts['total'] / 1e6:.2f} MB ({parts['images'] / 1e6:.2f} MB of it embedded images, "
        f"{result['bytes_per_run'] / 1e3:.1f} KB per run); rendered in {t_render:.1f} s; "
        + (f"loaded by headless Chromium in {load:.2f} s (best of {repeat}, browser start subtracted)"
           if load is not None else "no Chromium here: load time not measured"))
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m fmnist.reportsize", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder for the synthetic results and the page (reports/summary.html)")
    p.add_argument("--configfile", default="config/full.yaml", help="whose runs (default config/full.yaml: 363)")
    p.add_argument("--limit", type=int, help="the first N runs only")
    p.add_argument("--repeat", type=int, default=3, help="browser loads, best kept (default 3)")
    p.add_argument("--reuse", action="store_true", help="render from the synthetic results already in OUT")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    result = measure(args.out, args.configfile, limit=args.limit, repeat=args.repeat, reuse=args.reuse,
                     log=(lambda _m: None) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
