"""`fmnist models`: the model presets; with --measure, parameters, MACs per image and training images/s."""

from __future__ import annotations

import argparse
import json
import sys

from fmnist.config import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="the model presets; --measure: parameters, MACs per image, training images/s")
    p.add_argument("--measure", action="store_true",
                   help="build each preset and measure it (parameters, MACs, a timed training burst)")
    p.add_argument("--list", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--json", action="store_true", help="one JSON object per preset")
    p.add_argument("--models", help="comma-separated preset names (default: all)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="with --measure: the timed training burst per model; 0 skips it (default 3)")
    p.add_argument("--batch-size", type=int, default=64, help="batch of the training burst (default 64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args) -> int:
    """List the presets (no torch import: instant), or with --measure count and time each one."""
    from fmnist import models

    names = models.known_models()
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        for n in names:
            try:
                models.get_preset(n)
            except KeyError as exc:
                raise ConfigError(str(exc)) from None
    if not args.measure:
        return _list_models(names, args.json)
    return _measure_models(names, args)


def _list_models(names: list[str], as_json: bool) -> int:
    from fmnist import models

    if as_json:
        json.dump([{"model": n, "family": models.PRESETS[n].module, "source": models.PRESETS[n].source,
                    "summary": models.PRESETS[n].summary, "args": models.PRESETS[n].args} for n in names],
                  sys.stdout, indent=2)
        print()
        return 0
    print(f"{'model':22s} {'family':10s} {'report':6s} summary")
    for name in names:
        p = models.PRESETS[name]
        print(f"{name:22s} {p.module:10s} {p.source:6s} {p.summary}")
    print(f"{len(names)} presets; --measure adds parameters, MACs per image and training images/s here")
    return 0


def _measure_models(names: list[str], args) -> int:
    import torch

    from fmnist import models
    from fmnist.models import measure
    from fmnist.runtime import device_name, select_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    rows = []
    if not args.json:
        print(f"# device: {device_name(device)}; training burst: batch {args.batch_size}, "
              f"{args.seconds:g} s per model", flush=True)
        print(f"{'model':22s} {'family':10s} {'report':6s} {'params':>12s} {'MACs/image':>14s} {'train img/s':>12s}",
              flush=True)
    for name in names:
        p = models.PRESETS[name]
        # Transfer presets are measured untrained (same shapes as with ImageNet weights, no file needed).
        build_args = {"pretrained": False} if name in models.TRANSFER_WEIGHTS else {}
        torch.manual_seed(0)
        model = models.build_model(name, build_args)
        params, trainable = measure.count_params(model)
        macs = measure.count_macs(model)
        speed = None
        if args.seconds > 0:
            speed, _ = measure.train_images_per_second(model, device, args.batch_size, args.seconds)
        row = {"model": name, "family": p.module, "source": p.source, "summary": p.summary,
               "params": params, "trainable_params": trainable, "macs_per_image": macs,
               "train_images_per_second": None if speed is None else round(speed, 1),
               "batch_size": args.batch_size, "device": device_name(device), "args": p.args}
        rows.append(row)
        if not args.json:
            img_s = "-" if speed is None else f"{speed:,.0f}"
            print(f"{name:22s} {p.module:10s} {p.source:6s} {params:>12,d} {macs:>14,d} {img_s:>12s}", flush=True)
        del model
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    return 0
