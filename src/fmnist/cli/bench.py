"""`fmnist bench ...`: the benchmarks of fmnist.bench, each subcommand's arguments beside its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmnist.cli.common import print_result, quiet_if
from fmnist.config import ConfigError


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks: throughput, speedrun, dag, steps, fused, gpu, amp, deform").add_subparsers(
        dest="bench", required=True)
    add_throughput(bench)
    add_speedrun(bench)
    add_dag(bench)
    add_steps(bench)
    add_fused(bench)
    add_gpu(bench)
    add_amp(bench)
    add_deform(bench)


def add_throughput(bench) -> None:
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
    p.add_argument("--amp", choices=["off", "bf16"],
                   help="numerics of both loops (default: the config's amp, resolved as the trainer does; "
                        "the reference loop runs bf16 autocast exactly when the trainer does)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_throughput)


def run_throughput(args) -> int:
    from fmnist import bench

    r = bench.throughput(args.model, args.augmentation, args.device, args.data, args.configfile or
                         bench.DEFAULT_CONFIG, args.batch_size, args.images, args.warmup, args.repeats,
                         args.threads, args.workers, args.channels_last, args.compile, args.amp,
                         log=quiet_if(args.json))
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    return print_result(r, args.json, [
        f"{r['model']} + {r['augmentation']}, batch {r['batch_size']}, {r['images']} images x "
        f"{r['repeats']} repeats (medians), {r['device_name']}, {r['workers']} DataLoader workers, "
        f"channels_last {r['channels_last']}, compile {r['compile']}, bf16 {r['amp_bf16']} (both loops)",
        f"reference loop (torchvision dataset + DataLoader + PIL transforms): {r['reference_images_per_s']:8.0f} images/s",
        f"fmnist trainer (data and augmentation on the device):               {r['fmnist_images_per_s']:8.0f} images/s",
        f"ratio fmnist / reference: {r['ratio']:.2f}x   (load average {load})",
    ])


def add_speedrun(bench) -> None:
    p = bench.add_parser("speedrun", help="the speedrun recipe: wall time and test accuracy over seeds")
    p.add_argument("--data", default="data/prepared/fashion_mnist.npz")
    p.add_argument("--configfile", help="config with a `speedrun` study (default config/speedrun.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", help="default: the study's seeds (0 1 2)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (for quick checks)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_speedrun)


def run_speedrun(args) -> int:
    from fmnist import bench

    r = bench.speedrun(args.data, args.configfile or bench.SPEEDRUN_CONFIG, args.seeds, args.epochs,
                       args.device, args.threads, log=quiet_if(args.json))
    return print_result(r, args.json, [
        f"speedrun: {r['model']}, {r['epochs']} epochs on {r['n_train']} images, {r['device_name']}",
        *(f"  seed {x['seed']}: test accuracy {x['test_accuracy']:.4f}, {x['seconds']:.1f}s" for x in r["runs"]),
        f"mean over {len(r['runs'])} seeds: test accuracy {r['mean_test_accuracy']:.4f}, "
        f"wall time {r['mean_seconds']:.1f}s per run",
    ])


def add_dag(bench) -> None:
    p = bench.add_parser("dag", help="snakemake -n time on a study and one training job's start-up cost")
    p.add_argument("--configfile", help="study to plan (default config/full.yaml)")
    p.add_argument("--data", default="data/prepared/fashion_mnist.npz")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_dag)


def run_dag(args) -> int:
    from fmnist import bench

    r = bench.dag(args.configfile or bench.FULL_CONFIG, data=args.data, repeats=args.repeats,
                  threads=args.threads, log=quiet_if(args.json))
    return print_result(r, args.json, [
        f"snakemake -n --configfile {r['configfile']}: {r['snakemake_dry_run_seconds']:.2f}s "
        f"(median of {len(r['snakemake_samples'])}; {r['training_runs']} training runs, "
        f"{r['planned_jobs']} jobs planned)",
        f"start-up of one training job ({r['startup_run']}), median seconds:",
        *(f"  {k:32s} {v:6.2f}" for k, v in r["startup_seconds"].items()),
    ])


def add_steps(bench) -> None:
    p = bench.add_parser("steps", help="ms per training step: fp32/bf16 on CPU; eager/compiled/CUDA-graphed on CUDA")
    p.add_argument("--model", default="standard_cnn")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", help="comma-separated: fp32, bf16, compile, compile_reduce_overhead, cuda_graph "
                                      "(default: fp32,bf16 on CPU; the four bf16 ones on CUDA)")
    add_step_bench_arguments(p, steps=100, warmup=10)
    p.set_defaults(func=run_steps)


def run_steps(args) -> int:
    from fmnist import bench

    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    r = bench.steps(args.model, args.device, variants, args.data, args.configfile or bench.DEFAULT_CONFIG,
                    args.batch_size, args.steps, args.warmup, args.repeats, args.threads,
                    log=quiet_if(args.json))
    base = next(k for k in r if k.startswith("speedup_vs_"))
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    return print_result(r, args.json, [
        f"{r['model']}, batch {r['batch_size']}, {r['steps']} steps x {r['repeats']} alternating repeats (medians), "
        f"{r['device_name']}, load average {load}",
        f"{'variant':26s} {'ms/step':>9s} {'images/s':>10s} {base.replace('_', ' '):>16s}",
        *(f"{v:26s} {ms:9.3f} {r['images_per_s'][v]:10.1f} {r[base][v]:15.2f}x" for v, ms in r["ms_per_step"].items()),
    ])


def add_fused(bench) -> None:
    p = bench.add_parser("fused", help="ms per step of k seeds fused into one vmapped model against k separate models")
    p.add_argument("--model", default="standard_cnn")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--device", default="auto")
    add_step_bench_arguments(p, steps=30, warmup=5)
    p.set_defaults(func=run_fused)


def run_fused(args) -> int:
    from fmnist import bench

    r = bench.fused_seeds(args.model, args.seeds, args.device, args.data, args.configfile or bench.DEFAULT_CONFIG,
                          args.batch_size, args.steps, args.warmup, args.repeats, args.threads,
                          log=quiet_if(args.json))
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    return print_result(r, args.json, [
        f"{r['seeds']} seeds of {r['model']}, batch {r['batch_size']} each, {r['steps']} steps x {r['repeats']} "
        f"alternating repeats (medians), {r['device_name']}, amp {r['amp']}, load average {load}",
        f"{'variant':10s} {'ms/step (all seeds)':>20s} {'images/s':>10s}",
        *(f"{v:10s} {ms:20.3f} {r['images_per_s'][v]:10.1f}" for v, ms in r["ms_per_step_of_all_seeds"].items()),
        f"fused speedup {r['fused_speedup']}x; gradients equal to each model's own within "
        f"{r['max_relative_grad_difference']:.1e} (relative)",
    ])


def add_gpu(bench) -> None:
    p = bench.add_parser("gpu", help="the four GPU goals in one call bounded by --budget: the default study packed "
                                     "from the raw IDX files, SM over the training window, the plan against real "
                                     "runs, the trainer against the reports' loop")
    p.add_argument("--out", default="bench-gpu", help="a new directory for bench_gpu.txt, bench_gpu.json, the "
                                                      "workflow runs and dmon logs (a used one is refused)")
    p.add_argument("--raw", help="directory with the four IDX .gz files (default: the config's data.sources)")
    p.add_argument("--configfile", help="the study (default config/config.yaml)")
    p.add_argument("--cores", type=int, help="snakemake --cores (default: all)")
    p.add_argument("--sequential-runs", type=int, default=2, help="runs timed one job at a time (default 2)")
    p.add_argument("--budget", type=float, default=330.0,
                   help="seconds the whole call may take (default 330; each part is cut to what is left)")
    p.add_argument("--images", type=int, default=12800, help="timed images per loop in the reports' loop part")
    p.add_argument("--steps", type=int, default=100, help="timed steps per variant in the step-time part")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda; cpu rehearses the same calls on a CPU (tests)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_gpu)


def run_gpu(args) -> int:
    from fmnist import bench

    if args.sequential_runs < 1 or args.budget <= 0:
        raise ConfigError("bench gpu: --sequential-runs must be at least 1 and --budget positive")
    r = bench.gpu(args.out, args.raw, args.cores, args.sequential_runs, args.budget,
                  configfile=args.configfile or bench.DEFAULT_CONFIG, device=args.device, n_steps=args.steps,
                  images=args.images, log=quiet_if(args.json))
    print_result(r, args.json, [
        bench.gpu_table(r).rstrip("\n"),
        f"written: {Path(args.out) / bench.GPU_TABLE_FILE}, {Path(args.out) / bench.GPU_BENCH_FILE}",
    ])
    if r.get("no_cuda"):
        bench.require_cuda()  # the clear error, after the summary that says what was skipped
    return 0


def add_amp(bench) -> None:
    p = bench.add_parser("amp", help="a whole study in float32 and in bf16: wall time, and per run the training-"
                                     "time ratio and test-accuracy difference (what amp: auto trades)")
    p.add_argument("--configfile", help="the study (default: config/config.yaml)")
    p.add_argument("--seeds", type=int, help="replace every study's seeds with 0..N-1 (more pairs)")
    p.add_argument("--out", default="bench-amp", help="directory for the two workflow runs and bench_amp.json")
    p.add_argument("--cores", type=int, help="snakemake --cores (default: all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--order", default="off,bf16", help="which mode runs first (default: off,bf16)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_amp)


def run_amp(args) -> int:
    from fmnist import bench

    r = bench.amp(args.out, args.configfile or bench.DEFAULT_CONFIG, args.seeds, args.cores, args.device,
                  tuple(args.order.split(",")), log=quiet_if(args.json))
    return print_result(r, args.json, [bench.amp_table(r).rstrip("\n"), f"written: {Path(args.out) / bench.AMP_BENCH_FILE}"])


def add_deform(bench) -> None:
    p = bench.add_parser("deform", help="fast CPU deformable convolution against torchvision's kernel")
    p.add_argument("--models", default="deformable_cnn,deformable_cnn_a", help="comma-separated presets")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per layer, model and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_deform)


def run_deform(args) -> int:
    from fmnist import bench

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    r = bench.deform(models, args.batch_size, args.seconds, args.repeats, args.threads,
                     log=quiet_if(args.json))
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    return print_result(r, args.json, [
        f"deformable convolution, training images/s on {r['device_name']}, batch {r['batch_size']}, "
        f"{r['threads']} thread(s), medians of {r['repeats']} alternating repeats (load average {load})",
        f"{'model':18s} {'part':16s} {'input':10s} {'torchvision':>12s} {'fast':>10s} {'ratio':>7s}",
        *(f"{x['model']:18s} {x['part']:16s} {x['input']:10s} {x['torchvision_images_per_s']:12.1f} "
          f"{x['fast_images_per_s']:10.1f} {x['ratio']:6.2f}x" for x in r["rows"]),
    ])


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
