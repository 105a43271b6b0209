"""`fmnist plan`: the cost plan (images, measured images/s, hours) and the wall-clock hours on a machine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fmnist.cli.common import load_config


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="cost plan: images, measured images/s and hours per run, study and total")
    p.add_argument("--configfile", help="config to plan (default config/config.yaml)")
    p.add_argument("--measure", action=argparse.BooleanOptionalAction, default=True,
                   help="measure models with no cached figure (default); --no-measure uses the cache only")
    p.add_argument("--remeasure", action="store_true", help="measure every model again, replacing cached figures")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                   help="cost with fmnist's fast paths (default) or without them (--no-fast)")
    p.add_argument("--seconds", type=float, default=2.0, help="timed training seconds per measured model")
    p.add_argument("--threads", type=int, help="torch threads per job (default: the config's)")
    p.add_argument("--measure-batch-cap", type=int,
                   help="measure at most this many images per step (big models on a slow device)")
    p.add_argument("--runs", action="store_true", help="also print one line per run")
    p.add_argument("--gpus", type=int, help="wall-clock hours on this many GPUs (default: the GPUs here, or 1)")
    p.add_argument("--gpu-slots", type=int, help="jobs side by side per GPU (default: the config's gpu_slots, or 12)")
    p.add_argument("--gpu-memory-mb", type=int, help="memory of each GPU (default: the config's, or nvidia-smi's)")
    p.add_argument("--cores", type=int, help="on a CPU: wall-clock hours on this many cores (default: this machine's)")
    p.add_argument("--results", default="results/runs",
                   help="finished runs whose measured throughput the plan takes where it has them "
                        "(default results/runs; '' for none)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from fmnist import plan

    cfg = load_config(args.configfile)
    if args.threads:
        cfg["threads"] = args.threads
    r = plan.plan(cfg, fast=args.fast, measure_missing=args.measure, remeasure=args.remeasure,
                  seconds=args.seconds, batch_cap=args.measure_batch_cap, log=progress,
                  results=Path(args.results) if args.results else None)
    r["wall"] = plan_wall(r, cfg, args)
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return 0
    print("\n".join(plan_lines(r, args)))
    return 0


def progress(message: str) -> None:
    """What measuring is doing ("k of N"), on stderr: stdout carries the plan (or its JSON)."""
    print(message, file=sys.stderr, flush=True)


UNKNOWN = "?"
"""A figure the plan does not have: no run of it measured. Never 0.0."""


def hours(value: float | None, complete: bool = True) -> str:
    """Hours to two places (minutes where under 0.01 h); "?" where unmeasured; ">= x" where only some
    of the runs behind the figure are measured (a lower bound)."""
    if value is None:
        return UNKNOWN
    text = f"{value:.2f}" if value >= 0.01 else f"{value * 60:.1f} min"
    return text if complete else f">= {text}"


def plan_lines(r: dict, args) -> list[str]:
    """The plan as a table: per study its runs, how many have a figure, hours and wall-clock hours."""
    lines = []
    if args.runs:
        lines.append(f"{'run':60s} {'epochs':>6s} {'train images':>13s} {'images/s':>9s} {'hours':>8s}  figure")
        for row in r["runs"].values():
            ips = UNKNOWN if row["images_per_s"] is None else f"{row['images_per_s']:9.1f}"
            h = UNKNOWN if row["seconds"] is None else f"{row['seconds'] / 3600:8.3f}"
            lines.append(f"{row['run']:60s} {row['epochs']:6d} {row['train_images']:13,d} {ips:>9s} {h:>8s}  "
                         f"{row['source'] or 'not measured'}")
    lines.append(f"cost plan on {r['device']} ({r['unit']}; fast paths {'on' if r['fast_paths'] else 'off'}; "
                 f"early stopping counted as running every epoch: an upper bound)")
    w = r["wall"]
    lines.append(f"wall-clock hours on {w['machine']}")
    lines.append(f"{'study':24s} {'runs':>5s} {'measured':>9s} {r['unit']:>16s} {'wall hours':>11s}")
    for study, x in r["studies"].items():
        wall = w["studies"][study] if x["hours"] is not None else None
        lines.append(f"{study:24s} {x['runs']:5d} {x['measured']:9d} {hours(x['hours'], x['complete']):>16s} "
                     f"{hours(wall, x['complete']):>11s}")
    measured = sum(x["seconds"] is not None for x in r["runs"].values())
    wall = w["total_hours"] if r["total_hours"] is not None else None
    lines.append(f"{'total (each run once)':24s} {len(r['runs']):5d} {measured:9d} "
                 f"{hours(r['total_hours'], r['complete']):>16s} {hours(wall, r['complete']):>11s}")
    if r["missing"]:
        lines.append(f"{UNKNOWN}: not measured ({', '.join(r['missing'])}); measure them with: "
                     f"{measure_command(args)}")
    return lines


def measure_command(args) -> str:
    """The command that measures what this plan lacks: this one, measuring."""
    config = f" --configfile {args.configfile}" if args.configfile else ""
    threads = f" --threads {args.threads}" if args.threads else ""
    return f"python -m fmnist plan{config}{threads}"


def plan_wall(r: dict, cfg: dict, args) -> dict:
    """The plan's wall-clock hours on the machine the arguments describe (default: this one)."""
    from fmnist import gpus, plan

    count = args.gpus or len(gpus.visible_gpus()) or 1
    return plan.wall_clock(r, cfg, gpus=count, slots=args.gpu_slots or cfg.get("gpu_slots"),
                           gpu_memory_mb=args.gpu_memory_mb or cfg.get("gpu_memory_mb"), cores=args.cores)
