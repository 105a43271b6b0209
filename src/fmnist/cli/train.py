"""`fmnist train`: train one run by hand from its resolved config."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one run by hand from its resolved config")
    p.add_argument("--config", required=True, help="a resolved run (JSON from `runs --json`) or a metrics.json")
    p.add_argument("--out", required=True, help="output directory for the run's files")
    p.add_argument("--data", default="data/prepared/fashion_mnist.npz")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--log")
    p.set_defaults(func=run)


def run(args) -> int:
    from fmnist import train

    run = json.loads(Path(args.config).read_text())
    run = run.get("config", run)  # also accepts a metrics.json
    train.train_run(run, args.data, args.out, device=args.device, threads=args.threads,
                    log=train.main_log(args.log))
    return 0
