"""`fmnist plan`: the cost plan (images, measured images/s, hours) and the wall-clock hours on a machine."""

from __future__ import annotations

import argparse
import json
import sys

from fmnist.cli.common import load_config, quiet_if


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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from fmnist import plan

    cfg = load_config(args.configfile)
    if args.threads:
        cfg["threads"] = args.threads
    r = plan.plan(cfg, fast=args.fast, measure_missing=args.measure, remeasure=args.remeasure,
                  seconds=args.seconds, batch_cap=args.measure_batch_cap,
                  log=quiet_if(args.json))
    r["wall"] = plan_wall(r, cfg, args)
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return 0
    if args.runs:
        print(f"{'run':60s} {'epochs':>6s} {'train images':>13s} {'images/s':>9s} {'hours':>8s}")
        for row in r["runs"].values():
            ips = "-" if row["images_per_s"] is None else f"{row['images_per_s']:9.1f}"
            hours = "-" if row["seconds"] is None else f"{row['seconds'] / 3600:8.2f}"
            print(f"{row['run']:60s} {row['epochs']:6d} {row['train_images']:13,d} {ips:>9s} {hours:>8s}")
    print(f"cost plan on {r['device']} ({r['unit']}; fast paths {'on' if r['fast_paths'] else 'off'}; "
          f"early stopping counted as running every epoch: an upper bound)")
    w = r["wall"]
    print(f"wall-clock hours on {w['machine']}")
    print(f"{'study':24s} {'runs':>5s} {'measured':>9s} {r['unit']:>10s} {'wall hours':>11s}")
    for study, x in r["studies"].items():
        print(f"{study:24s} {x['runs']:5d} {x['measured']:9d} {x['hours']:10.1f} {w['studies'][study]:11.2f}")
    print(f"{'total (each run once)':24s} {len(r['runs']):5d} "
          f"{sum(x['seconds'] is not None for x in r['runs'].values()):9d} {r['total_hours']:10.1f} "
          f"{w['total_hours']:11.2f}")
    if r["missing"]:
        print(f"not measured (left out of the sums; run without --no-measure): {', '.join(r['missing'])}")
    return 0


def plan_wall(r: dict, cfg: dict, args) -> dict:
    """The plan's wall-clock hours on the machine the arguments describe (default: this one)."""
    from fmnist import gpus, plan

    count = args.gpus or len(gpus.visible_gpus()) or 1
    return plan.wall_clock(r, cfg, gpus=count, slots=args.gpu_slots or cfg.get("gpu_slots"),
                           gpu_memory_mb=args.gpu_memory_mb or cfg.get("gpu_memory_mb"), cores=args.cores)
