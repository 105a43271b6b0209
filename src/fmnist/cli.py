"""Command line: list runs, fetch and prepare data, train one run by hand, list models, follow a
study (status), export runs to TensorBoard/MLflow, benchmark, plan."""

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


def _print_result(result: dict, as_json: bool, lines: list[str]) -> int:
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print("\n".join(lines))
    return 0


def cmd_bench_throughput(args) -> int:
    from fmnist import bench

    r = bench.throughput(args.model, args.augmentation, args.device, args.data, args.configfile or
                         bench.DEFAULT_CONFIG, args.batch_size, args.images, args.warmup, args.repeats,
                         args.threads, args.workers, args.channels_last, args.compile,
                         log=(lambda _m: None) if args.json else print)
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    return _print_result(r, args.json, [
        f"{r['model']} + {r['augmentation']}, batch {r['batch_size']}, {r['images']} images x "
        f"{r['repeats']} repeats (medians), {r['device_name']}, {r['workers']} DataLoader workers, "
        f"channels_last {r['channels_last']}, compile {r['compile']}, bf16 {r['amp_bf16']}",
        f"reference loop (torchvision dataset + DataLoader + PIL transforms): {r['reference_images_per_s']:8.0f} images/s",
        f"fmnist trainer (data and augmentation on the device):               {r['fmnist_images_per_s']:8.0f} images/s",
        f"ratio fmnist / reference: {r['ratio']:.2f}x   (load average {load})",
    ])


def cmd_bench_speedrun(args) -> int:
    from fmnist import bench

    r = bench.speedrun(args.data, args.configfile or bench.SPEEDRUN_CONFIG, args.seeds, args.epochs,
                       args.device, args.threads, log=(lambda _m: None) if args.json else print)
    return _print_result(r, args.json, [
        f"speedrun: {r['model']}, {r['epochs']} epochs on {r['n_train']} images, {r['device_name']}",
        *(f"  seed {x['seed']}: test accuracy {x['test_accuracy']:.4f}, {x['seconds']:.1f}s" for x in r["runs"]),
        f"mean over {len(r['runs'])} seeds: test accuracy {r['mean_test_accuracy']:.4f}, "
        f"wall time {r['mean_seconds']:.1f}s per run",
    ])


def cmd_bench_dag(args) -> int:
    from fmnist import bench

    r = bench.dag(args.configfile or bench.FULL_CONFIG, data=args.data, repeats=args.repeats,
                  threads=args.threads, log=(lambda _m: None) if args.json else print)
    return _print_result(r, args.json, [
        f"snakemake -n --configfile {r['configfile']}: {r['snakemake_dry_run_seconds']:.2f}s "
        f"(median of {len(r['snakemake_samples'])}; {r['training_runs']} training runs, "
        f"{r['planned_jobs']} jobs planned)",
        f"start-up of one training job ({r['startup_run']}), median seconds:",
        *(f"  {k:32s} {v:6.2f}" for k, v in r["startup_seconds"].items()),
    ])


def cmd_bench_steps(args) -> int:
    from fmnist import bench

    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    r = bench.steps(args.model, args.device, variants, args.data, args.configfile or bench.DEFAULT_CONFIG,
                    args.batch_size, args.steps, args.warmup, args.repeats, args.threads,
                    log=(lambda _m: None) if args.json else print)
    base = next(k for k in r if k.startswith("speedup_vs_"))
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    return _print_result(r, args.json, [
        f"{r['model']}, batch {r['batch_size']}, {r['steps']} steps x {r['repeats']} alternating repeats (medians), "
        f"{r['device_name']}, load average {load}",
        f"{'variant':26s} {'ms/step':>9s} {'images/s':>10s} {base.replace('_', ' '):>16s}",
        *(f"{v:26s} {ms:9.3f} {r['images_per_s'][v]:10.1f} {r[base][v]:15.2f}x" for v, ms in r["ms_per_step"].items()),
    ])


def cmd_bench_fused(args) -> int:
    from fmnist import bench

    r = bench.fused_seeds(args.model, args.seeds, args.device, args.data, args.configfile or bench.DEFAULT_CONFIG,
                          args.batch_size, args.steps, args.warmup, args.repeats, args.threads,
                          log=(lambda _m: None) if args.json else print)
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    return _print_result(r, args.json, [
        f"{r['seeds']} seeds of {r['model']}, batch {r['batch_size']} each, {r['steps']} steps x {r['repeats']} "
        f"alternating repeats (medians), {r['device_name']}, amp {r['amp']}, load average {load}",
        f"{'variant':10s} {'ms/step (all seeds)':>20s} {'images/s':>10s}",
        *(f"{v:10s} {ms:20.3f} {r['images_per_s'][v]:10.1f}" for v, ms in r["ms_per_step_of_all_seeds"].items()),
        f"fused speedup {r['fused_speedup']}x; gradients equal to each model's own within "
        f"{r['max_relative_grad_difference']:.1e} (relative)",
    ])


def cmd_bench_gpu(args) -> int:
    from fmnist import bench

    if args.sequential_runs < 1 or args.budget <= 0:
        raise ConfigError("bench gpu: --sequential-runs must be at least 1 and --budget positive")
    r = bench.gpu(args.out, args.data, args.raw, args.cores, args.sequential_runs, args.budget,
                  device=args.device, log=(lambda _m: None) if args.json else print)
    return _print_result(r, args.json, [
        bench.gpu_table(r).rstrip("\n"),
        f"written: {Path(args.out) / bench.GPU_BENCH_FILE}, {Path(args.out) / bench.GPU_TABLE_FILE}",
    ])


def cmd_bench_amp(args) -> int:
    from fmnist import bench

    r = bench.amp(args.out, args.configfile or bench.DEFAULT_CONFIG, args.seeds, args.cores, args.device,
                  tuple(args.order.split(",")), log=(lambda _m: None) if args.json else print)
    return _print_result(r, args.json, [bench.amp_table(r).rstrip("\n"), f"written: {Path(args.out) / bench.AMP_BENCH_FILE}"])


def cmd_bench_deform(args) -> int:
    from fmnist import bench

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    r = bench.deform(models, args.batch_size, args.seconds, args.repeats, args.threads,
                     log=(lambda _m: None) if args.json else print)
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    return _print_result(r, args.json, [
        f"deformable convolution, training images/s on {r['device_name']}, batch {r['batch_size']}, "
        f"{r['threads']} thread(s), medians of {r['repeats']} alternating repeats (load average {load})",
        f"{'model':18s} {'part':16s} {'input':10s} {'torchvision':>12s} {'fast':>10s} {'ratio':>7s}",
        *(f"{x['model']:18s} {x['part']:16s} {x['input']:10s} {x['torchvision_images_per_s']:12.1f} "
          f"{x['fast_images_per_s']:10.1f} {x['ratio']:6.2f}x" for x in r["rows"]),
    ])


def cmd_plan(args) -> int:
    from fmnist import plan

    cfg = _load(args.configfile)
    if args.threads:
        cfg["threads"] = args.threads
    r = plan.plan(cfg, fast=args.fast, measure_missing=args.measure, remeasure=args.remeasure,
                  seconds=args.seconds, batch_cap=args.measure_batch_cap,
                  log=(lambda _m: None) if args.json else print)
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


def cmd_status(args) -> int:
    """Print the study's status; with --watch, again every --interval seconds until nothing is left."""
    import time

    from fmnist import status

    cfg = _load(args.configfile)
    name = args.configfile or str(DEFAULT_CONFIG.relative_to(REPO_ROOT))
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


def cmd_export(args) -> int:
    """Write the config's finished runs to TensorBoard event files and/or an MLflow store."""
    from fmnist import export

    if not (args.tensorboard or args.mlflow or args.mlflow_uri):
        raise ConfigError("nothing to export to: give --tensorboard DIR, --mlflow DIR or --mlflow-uri URI")
    cfg = _load(args.configfile)
    runs = export.finished_runs(cfg, args.results)
    if not runs:
        print(f"fmnist: no finished run of this config in {args.results}/runs (run the study first)", file=sys.stderr)
        return 1
    try:
        if args.tensorboard:
            export.to_tensorboard(runs, args.tensorboard)
        for uri in filter(None, [args.mlflow and export.mlflow_uri_for(args.mlflow), args.mlflow_uri]):
            export.to_mlflow(runs, uri, experiment=args.mlflow_experiment)
    except export.ExportError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return 2
    return 0


def plan_wall(r: dict, cfg: dict, args) -> dict:
    """The plan's wall-clock hours on the machine the arguments describe (default: this one)."""
    from fmnist import gpus, plan

    count = args.gpus or len(gpus.visible_gpus()) or 1
    return plan.wall_clock(r, cfg, gpus=count, slots=args.gpu_slots or cfg.get("gpu_slots"),
                           gpu_memory_mb=args.gpu_memory_mb or cfg.get("gpu_memory_mb"), cores=args.cores)


def cmd_record_export(args) -> int:
    from fmnist import record

    name = Path(args.dest).name
    for readme in args.readme or []:  # every README is checked before anything is written
        problem = record.readme_problem(readme, name)
        if problem is not None:
            print(f"fmnist: {problem} (nothing was exported)", file=sys.stderr)
            return 2
    r = record.export(args.configfile, args.results, args.dest, published=args.published,
                      report=args.report)
    print(f"{args.dest}: {r['finished']} of {r['runs']} runs finished and recorded; tables rebuilt")
    headline = (Path(args.dest) / "headline.md").read_text()
    for readme in args.readme or []:
        blocks = record.update_readme_blocks(readme, name, args.dest)
        print(f"{readme}: the record's {', '.join(blocks)} block(s) updated")
    print(headline, end="")
    return 0


def cmd_record_check(args) -> int:
    from fmnist import record

    differ = record.check(args.dest)
    for line in differ:
        print(f"{args.dest}/{line}", file=sys.stderr)
    if differ:
        restore = ("edited after export", "but missing", "not the one its metrics.json recorded")
        hashes = [line for line in differ if any(words in line for words in restore)]
        if hashes:  # a run file is not what was recorded: the results changed, not the tables
            print(f"fix: restore the run files named above (git checkout -- {args.dest}/runs "
                  "or the run's own copy); a record's runs are added, never edited", file=sys.stderr)
        if len(hashes) < len(differ):
            print(f"fix: python -m fmnist record export ... --dest {args.dest} (or rebuild its tables "
                  "from its runs) and commit the result", file=sys.stderr)
        return 1
    print(f"{args.dest}: tables equal what its runs give, and every run file its recorded hash")
    return 0


def add_step_bench_arguments(p: argparse.ArgumentParser, steps: int, warmup: int) -> None:
    """The arguments `bench steps` and `bench fused` share: data, recipe, batch, and how they time."""
    p.add_argument("--data", default="data/prepared/fashion_mnist.npz")
    p.add_argument("--configfile", help="config whose defaults give the recipe (default config/config.yaml)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=steps, help="timed steps per repeat and variant")
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")


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
    p.set_defaults(func=cmd_models)

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
    p.set_defaults(func=cmd_plan)

    bench = sub.add_parser("bench", help="benchmarks: throughput, speedrun, dag, steps, fused, gpu, amp, deform").add_subparsers(
        dest="bench", required=True)
    p = bench.add_parser("throughput", help="fmnist's trainer against the reports' DataLoader loop")
    p.add_argument("--model", default="standard_cnn")
    p.add_argument("--augmentation", default="none", help="none or flip_affine (a name in the config)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default="data/prepared/fashion_mnist.npz")
    p.add_argument("--configfile", help="config whose defaults the fmnist side uses (default config/config.yaml)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=6400, help="timed images per repeat and loop")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before each timed part")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads of both loops")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="override the config's channels_last on the fmnist side")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="override the config's compile on the fmnist side")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_throughput)

    p = bench.add_parser("speedrun", help="the speedrun recipe: wall time and test accuracy over seeds")
    p.add_argument("--data", default="data/prepared/fashion_mnist.npz")
    p.add_argument("--configfile", help="config with a `speedrun` study (default config/speedrun.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", help="default: the study's seeds (0 1 2)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (for quick checks)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_speedrun)

    p = bench.add_parser("dag", help="snakemake -n time on a study and one training job's start-up cost")
    p.add_argument("--configfile", help="study to plan (default config/full.yaml)")
    p.add_argument("--data", default="data/prepared/fashion_mnist.npz")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_dag)

    p = bench.add_parser("steps", help="ms per training step: fp32/bf16 on CPU; eager/compiled/CUDA-graphed on CUDA")
    p.add_argument("--model", default="standard_cnn")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", help="comma-separated: fp32, bf16, compile, compile_reduce_overhead, cuda_graph "
                                      "(default: fp32,bf16 on CPU; the four bf16 ones on CUDA)")
    add_step_bench_arguments(p, steps=100, warmup=10)
    p.set_defaults(func=cmd_bench_steps)

    p = bench.add_parser("fused", help="ms per step of k seeds fused into one vmapped model against k separate models")
    p.add_argument("--model", default="standard_cnn")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--device", default="auto")
    add_step_bench_arguments(p, steps=30, warmup=5)
    p.set_defaults(func=cmd_bench_fused)

    p = bench.add_parser("gpu", help="the GPU check in one call: packed study, SM use, step times, plan (<= 6 min)")
    p.add_argument("--out", default="bench-gpu", help="directory for bench_gpu.json, bench_gpu.txt, dmon logs")
    p.add_argument("--data", default="data/prepared/fashion_mnist.npz", help="prepared data for the step benches")
    p.add_argument("--raw", help="directory with the four IDX .gz files (default: the config's data.sources)")
    p.add_argument("--cores", type=int, help="snakemake --cores (default: all)")
    p.add_argument("--sequential-runs", type=int, default=2, help="runs timed one job at a time (default 2)")
    p.add_argument("--budget", type=float, default=330.0, help="seconds the workflow parts may take in all")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda; cpu rehearses the same calls on a CPU (tests)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_gpu)

    p = bench.add_parser("amp", help="a whole study in float32 and in bf16: wall time, and per run the training-"
                                     "time ratio and test-accuracy difference (what amp: auto trades)")
    p.add_argument("--configfile", help="the study (default: config/config.yaml)")
    p.add_argument("--seeds", type=int, help="replace every study's seeds with 0..N-1 (more pairs)")
    p.add_argument("--out", default="bench-amp", help="directory for the two workflow runs and bench_amp.json")
    p.add_argument("--cores", type=int, help="snakemake --cores (default: all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--order", default="off,bf16", help="which mode runs first (default: off,bf16)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_amp)

    p = bench.add_parser("deform", help="fast CPU deformable convolution against torchvision's kernel")
    p.add_argument("--models", default="deformable_cnn,deformable_cnn_a", help="comma-separated presets")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per layer, model and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_deform)

    p = sub.add_parser("status", help="how far a study has got: finished, running (epoch, val accuracy, ETA), "
                                      "failed and waiting runs, and the study's ETA")
    p.add_argument("--configfile", help=f"the study's config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    p.add_argument("--directory", default=".", help="the workflow's working directory (default: here; smoke/ in smoke mode)")
    p.add_argument("--watch", action="store_true", help="print again every --interval seconds while snakemake runs")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between updates with --watch (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", help="finished runs to TensorBoard event files and/or an MLflow store "
                                      "(needs the [export] extra)")
    p.add_argument("--configfile", help=f"the study's config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    p.add_argument("--results", default="results", help="the workflow's results directory (default results)")
    p.add_argument("--tensorboard", metavar="DIR", help="one folder of event files per run under DIR")
    p.add_argument("--mlflow", metavar="DIR", help="a local MLflow file store in DIR")
    p.add_argument("--mlflow-uri", metavar="URI", help="any MLflow tracking URI (sqlite:///mlflow.db, http://...)")
    p.add_argument("--mlflow-experiment", default="fmnist", help="MLflow experiment name (default fmnist)")
    p.set_defaults(func=cmd_export)

    rec = sub.add_parser("record", help="a study's record in git: export finished runs, check its tables")
    rec = rec.add_subparsers(dest="record_command", required=True)
    p = rec.add_parser("export", help="copy finished runs' metrics/history and aggregate them")
    p.add_argument("--configfile", required=True, help="the study's config, e.g. config/record_cpu.yaml")
    p.add_argument("--results", default="results", help="the workflow's results directory")
    p.add_argument("--dest", required=True, help="the record directory, e.g. docs/record/cpu")
    p.add_argument("--published", help="published figures (default: the config's report.published)")
    p.add_argument("--report", help="the workflow's summary.html, copied once every run has finished")
    p.add_argument("--readme", action="append",
                   help="a README with <!-- record:NAME:start/end --> markers to update (NAME: dest's name); "
                        "give it once per README")
    p.set_defaults(func=cmd_record_export)
    p = rec.add_parser("check", help="rebuild a record's tables from its runs and compare")
    p.add_argument("--dest", required=True, help="the record directory")
    p.set_defaults(func=cmd_record_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return 2
