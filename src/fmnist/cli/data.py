"""`fmnist download` and `fmnist prepare`: fetch and verify the IDX files, decode them into the prepared file."""

from __future__ import annotations

import json
from pathlib import Path

from fmnist.cli.common import load_config


def add_parser(sub) -> None:
    p = sub.add_parser("download", help="fetch and verify the four IDX files")
    p.add_argument("--configfile")
    p.add_argument("--dest")
    p.set_defaults(func=run_download)

    p = sub.add_parser("prepare", help="decode the IDX files into the prepared split file")
    p.add_argument("--configfile")
    p.add_argument("--out")
    p.set_defaults(func=run_prepare)


def run_download(args) -> int:
    from fmnist import fetch

    cfg = load_config(args.configfile)["data"]
    dest = Path(args.dest or Path(cfg["dir"]) / "raw")
    fetch.check_cached(dest)
    for name in fetch.FILES:
        if not (dest / name).exists():
            fetch.fetch(name, cfg["sources"], dest / name, timeout=cfg["timeout"])
    return 0


def run_prepare(args) -> int:
    from fmnist import fetch

    cfg = load_config(args.configfile)["data"]
    raw = Path(cfg["dir"]) / "raw"
    meta = fetch.prepare(raw, args.out or Path(cfg["dir"]) / "prepared" / "fashion_mnist.npz",
                        cfg["val_fraction"], cfg["split_seed"], cfg["train_limit"], cfg["test_limit"])
    print(json.dumps({k: v for k, v in meta.items() if k != "sha256"}))
    return 0
