"""`fmnist status`: how far a study has got, once or --watch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from fmnist.cli.common import DEFAULT_CONFIG, load_config
from fmnist.config import REPO_ROOT


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="how far a study has got: finished, running (epoch, val accuracy, ETA), "
                                      "failed and waiting runs, and the study's ETA")
    p.add_argument("--configfile", help="the study's config (default: config/config.yaml in --directory, "
                                         f"else {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    p.add_argument("--directory", default=".", help="the workflow's working directory (default: here; smoke/ in smoke mode)")
    p.add_argument("--watch", action="store_true", help="print again every --interval seconds while snakemake runs")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between updates with --watch (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    """Print the study's status; with --watch, again every --interval seconds until nothing is left."""
    import time

    from fmnist import status

    configfile = study_configfile(args.configfile, args.directory)
    cfg = load_config(configfile)
    name = args.configfile or os.path.relpath(configfile)
    clear = "\033[H\033[J" if sys.stdout.isatty() else ""
    try:
        while True:
            s = status.study_status(cfg, args.directory)
            if args.json:
                json.dump(s, sys.stdout, indent=2)
                print()
            else:
                stamp = time.strftime("%H:%M:%S")
                print(f"{clear if args.watch else ''}{status.render(s, name)}"
                      + (f"\n(updated {stamp}; every {args.interval:g} s; Ctrl-C to stop)" if args.watch else ""),
                      flush=True)
            left = s["counts"]["running"] + s["counts"]["interrupted"] + s["counts"]["waiting"]
            if not args.watch or not left or not s["snakemake_running"]:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def study_configfile(configfile: str | None, directory: str) -> str:
    """The config a status reads: the one given, else the workflow directory's own
    config/config.yaml (the study that runs there), else this checkout's default config."""
    if configfile:
        return configfile
    own = Path(directory) / "config" / "config.yaml"
    return str(own if own.is_file() else DEFAULT_CONFIG)
