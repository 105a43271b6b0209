"""Command line: list runs, fetch and prepare data, train one run by hand, inspect models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fmnist.config import REPO_ROOT, ConfigError

DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


def _load(configfile: str | None) -> dict:
    from fmnist import config

    return config.load(configfile or DEFAULT_CONFIG)


def cmd_runs(args) -> int:
    from fmnist import experiments

    cfg = _load(args.configfile)
    runs, studies = experiments.expand(cfg)
    if args.study:
        if args.study not in studies:
            raise ConfigError(f"no study {args.study!r}; studies: {', '.join(studies)}")
        runs = {rid: runs[rid] for rid in studies[args.study]}
    if args.json:
        json.dump({"runs": runs, "studies": studies if not args.study else {args.study: studies[args.study]}},
                  sys.stdout, indent=2)
        print()
        return 0
    for rid, run in runs.items():
        t = run["train"]
        opt = t["optimizer"]
        print(
            f"{rid:55s} epochs {t['epochs']:3d}  batch {t['batch_size']:4d}  "
            f"{opt['name']} lr {opt['lr']:g}  sched {t['scheduler']['name']}"
        )
    print(f"{len(runs)} runs in {len(studies)} studies: "
          + ", ".join(f"{s} ({len(ids)})" for s, ids in studies.items()))
    return 0


def cmd_train(args) -> int:
    from fmnist import train

    run = json.loads(Path(args.config).read_text())
    run = run.get("config", run)  # also accepts a metrics.json
    train.train_run(run, args.data, args.out, device=args.device, threads=args.threads,
                    log=train.main_log(args.log))
    return 0


def cmd_download(args) -> int:
    from fmnist import data

    cfg = _load(args.configfile)["data"]
    dest = Path(args.dest or Path(cfg["dir"]) / "raw")
    data.check_cached(dest)
    for name in data.FILES:
        if not (dest / name).exists():
            data.fetch(name, cfg["sources"], dest / name, timeout=cfg["timeout"])
    return 0


def cmd_prepare(args) -> int:
    from fmnist import data

    cfg = _load(args.configfile)["data"]
    raw = Path(cfg["dir"]) / "raw"
    meta = data.prepare(raw, args.out or Path(cfg["dir"]) / "prepared" / "fashion_mnist.npz",
                        cfg["val_fraction"], cfg["split_seed"], cfg["train_limit"], cfg["test_limit"])
    print(json.dumps({k: v for k, v in meta.items() if k != "sha256"}))
    return 0


def cmd_models(args) -> int:
    from fmnist import models

    if args.list or not args.json:
        for name in models.known_models():
            p = models.PRESETS[name]
            print(f"{name:24s} report {p.source}  {p.summary}")
        return 0
    json.dump({n: {"source": p.source, "summary": p.summary, "args": p.args}
               for n, p in models.PRESETS.items()}, sys.stdout, indent=2)
    print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("runs", help="list the runs a config expands to, with their resolved configs")
    p.add_argument("--configfile", help=f"config file (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    p.add_argument("--study", help="only this study's runs")
    p.add_argument("--json", action="store_true", help="resolved configs as JSON")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("train", help="train one run by hand from its resolved config")
    p.add_argument("--config", required=True, help="a resolved run (JSON from `runs --json`) or a metrics.json")
    p.add_argument("--out", required=True, help="output directory for the run's files")
    p.add_argument("--data", default="data/prepared/fashion_mnist.npz")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--log")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("download", help="fetch and verify the four IDX files")
    p.add_argument("--configfile")
    p.add_argument("--dest")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("prepare", help="decode the IDX files into the prepared split file")
    p.add_argument("--configfile")
    p.add_argument("--out")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("models", help="the model presets")
    p.add_argument("--list", action="store_true", help="names, sources and summaries only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return 2
