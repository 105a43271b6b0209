"""`fmnist runs`: the runs a config expands to, with their resolved configs."""

from __future__ import annotations

import json
import sys

from fmnist.cli.common import DEFAULT_CONFIG, load_config
from fmnist.config import REPO_ROOT, ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("runs", help="list the runs a config expands to, with their resolved configs")
    p.add_argument("--configfile", help=f"config file (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    p.add_argument("--study", help="only this study's runs")
    p.add_argument("--json", action="store_true", help="resolved configs as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from fmnist import experiments

    cfg = load_config(args.configfile)
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
