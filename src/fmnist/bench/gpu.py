"""gpu: the one prepared call for a GPU machine (the packed study, SM use, step times, fused seeds,
the trainer against the reports' loop, the full study's plan), and its nvidia-smi dmon reader."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from fmnist.bench.common import DEFAULT_CONFIG, DEFAULT_DATA, FULL_CONFIG, check_data, run_workflow
from fmnist.config import ConfigError

GPU_BENCH_FILE = "bench_gpu.json"
GPU_TABLE_FILE = "bench_gpu.txt"


def parse_dmon(text: str) -> dict[str, list[float]]:
    """SM utilisation samples (%) per GPU from `nvidia-smi dmon -s u` output: its `# gpu sm mem ...`
    header names the columns; '-' (not supported) and partial lines are skipped."""
    columns: list[str] = []
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "#":
            if len(parts) > 1 and parts[1].lower() in ("gpu", "idx") and "sm" in [p.lower() for p in parts]:
                columns = [p.lower() for p in parts[1:]]
            continue
        if not columns or len(parts) != len(columns):
            continue
        row = dict(zip(columns, parts, strict=True))
        try:
            out.setdefault(row["gpu"], []).append(float(row["sm"]))
        except ValueError:
            continue
    return out


class Dmon:
    """`nvidia-smi dmon -s u -d 1` in the background while a block runs; `.sm` holds its samples."""

    def __init__(self, path: Path):
        self.path, self.proc, self.sm = Path(path), None, {}

    def __enter__(self):
        smi = shutil.which("nvidia-smi")
        if smi:
            self.fh = open(self.path, "w")  # noqa: SIM115 - closed in __exit__
            self.proc = subprocess.Popen([smi, "dmon", "-s", "u", "-d", "1"], stdout=self.fh,
                                         stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.fh.close()
            self.sm = parse_dmon(self.path.read_text())
        return False


def sm_summary(sm: dict[str, list[float]]) -> dict:
    samples = [x for xs in sm.values() for x in xs]
    return {"sm_mean_percent": round(statistics.mean(samples), 1) if samples else None,
            "sm_samples": len(samples), "gpus_seen": sorted(sm)}


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "bench gpu needs a CUDA GPU and torch.cuda.is_available() is False here: run it on the GPU "
            "machine (docs/performance.md, GPUs); on a CPU use `bench steps` and `bench throughput`"
        )


class GpuBench:
    """One `gpu` call's state: the parts' results (rewritten to `out` after each part) and the budget
    the workflow parts share."""

    def __init__(self, out: Path, configfile: Path | str, cores: int, device: str, raw, budget: float, log):
        from fmnist import config as fmnist_config
        from fmnist import experiments

        self.out, self.configfile, self.cores, self.budget, self.log = out, configfile, cores, budget, log
        self.t_start = time.perf_counter()
        self.result: dict = {"device": device, "cores": cores, "configfile": str(configfile), "parts": {}}
        self.settings = [f"device={device}"] + (
            [f"data={json.dumps({'sources': [str(Path(raw).resolve())]})}"] if raw else [])
        cfg = fmnist_config.load(configfile)
        self.ids = list(experiments.expand(cfg)[0])
        self.prepared = str(Path(cfg["data"]["dir"]) / "prepared" / "fashion_mnist.npz")

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t_start)

    def part(self, name: str, fn) -> None:
        t0 = time.perf_counter()
        self.log(f"[bench gpu] {name} ({self.left():.0f}s of the budget left) ...")
        try:
            self.result["parts"][name] = {**fn(), "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as exc:  # one failing part must not lose the others' figures
            self.result["parts"][name] = {"error": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
        write_gpu_result(self.result, self.out)
        self.log(f"[bench gpu] {name}: {json.dumps(self.result['parts'][name])[:400]}")

    def study(self, workdir: Path, targets: list[str], extra: list[str]) -> tuple[float, str, dict]:
        run_workflow(workdir, self.configfile, self.cores, [self.prepared], self.settings, ["gpu=1"],
                     self.left())  # data: not timed
        with Dmon(self.out / f"dmon_{workdir.name}.txt") as d:
            seconds, tail = run_workflow(workdir, self.configfile, self.cores, targets, self.settings + extra,
                                         ["gpu=1"], self.left())
        return seconds, tail, sm_summary(d.sm)

    def packed(self) -> dict:
        seconds, tail, sm = self.study(self.out / "packed", [], [])
        return {"command": f"snakemake --cores {self.cores} --resources gpu=1", "runs": len(self.ids),
                "wall_seconds": round(seconds, 1), **sm, "log_tail": tail[-600:]}

    def sequential(self, runs: int) -> dict:
        sample = self.ids[:runs]
        seconds, _, sm = self.study(self.out / "sequential", [f"results/runs/{r}/metrics.json" for r in sample],
                                    ["gpu_slots=1"])
        per_run = seconds / len(sample)
        return {"runs": sample, "wall_seconds": round(seconds, 1), "seconds_per_run": round(per_run, 1),
                "estimated_study_seconds_one_at_a_time": round(per_run * len(self.ids), 1), **sm}

    def packing_ratio(self) -> None:
        p, s = self.result["parts"]["packed_default_study"], self.result["parts"]["one_job_at_a_time_sample"]
        if "wall_seconds" in p and "estimated_study_seconds_one_at_a_time" in s:
            self.result["packing_ratio"] = round(s["estimated_study_seconds_one_at_a_time"] / p["wall_seconds"], 2)


def full_plan(plan_config: Path | str, device: str, cores: int, seconds: float) -> dict:
    """The full study's cost plan on this machine: GPU-hours and packed wall-hours, per study."""
    from fmnist import config as fmnist_config
    from fmnist import plan

    pcfg = fmnist_config.load(plan_config, {"device": device})
    r = plan.plan(pcfg, measure_missing=True, seconds=seconds, batch_cap=64, log=lambda _m: None)
    wall = plan.wall_clock(r, pcfg, gpus=1, cores=cores)
    return {"configfile": str(plan_config), "unit": r["unit"], "hours": round(r["total_hours"], 4),
            "wall_hours": round(wall["total_hours"], 4), "machine": wall["machine"], "missing": r["missing"],
            "studies": {k: {"hours": round(v["hours"], 4), "wall_hours": round(wall["studies"][k], 4)}
                        for k, v in r["studies"].items()}}


def gpu(out: Path | str = "bench-gpu", data: Path | str = DEFAULT_DATA, raw: Path | str | None = None,
        cores: int | None = None, sequential_runs: int = 2, budget: float = 330.0,
        configfile: Path | str = DEFAULT_CONFIG, plan_config: Path | str = FULL_CONFIG, device: str = "cuda",
        n_steps: int = 100, images: int = 12800, plan_seconds: float = 0.5, log=print) -> dict:
    """Everything the GPU goals need, in one command (at most ~6 minutes on one H200): the default study
    through `snakemake --cores N --resources gpu=1` (wall time, SM utilisation from nvidia-smi dmon),
    `sequential_runs` of its runs one job at a time (gpu_slots=1) for the packing ratio, step times
    eager/compiled/graphed, the trainer against the reports' loop, and the full study's plan (GPU-hours
    and packed wall-hours on this machine), and seeds fused into one vmapped model against separate
    steps (`fused_seeds`). Each part's result is written to `out` as soon as it ends;
    a part that fails is recorded with its error and the others still run. `raw`: a directory with the
    four IDX .gz files (default: the config's data.sources). `device: cpu` rehearses the same calls
    on a CPU (tests)."""
    from fmnist.bench.fused import fused_seeds
    from fmnist.bench.steps import steps
    from fmnist.bench.throughput import throughput

    if device == "cuda":
        require_cuda()
    data = check_data(data)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = int(cores or os.cpu_count() or 1)
    b = GpuBench(out, configfile, cores, device, raw, budget, log)

    def quiet(_m: str) -> None:
        pass

    b.part("packed_default_study", b.packed)
    b.part("one_job_at_a_time_sample", lambda: b.sequential(sequential_runs))
    b.packing_ratio()
    b.part("step_times", lambda: steps(device=device, data=data, n_steps=n_steps, repeats=3, log=quiet))
    b.part("fused_seeds", lambda: fused_seeds(device=device, data=data, seeds=4, n_steps=max(2, n_steps // 5),
                                              warmup=2, repeats=3, log=quiet))
    b.part("throughput_vs_reports_loop", lambda: throughput(device=device, data=data, images=images, repeats=3,
                                                            threads=2, workers=2, log=quiet))
    b.part("full_study_plan", lambda: full_plan(plan_config, device, cores, plan_seconds))
    b.result["total_seconds"] = round(time.perf_counter() - b.t_start, 1)
    write_gpu_result(b.result, out)
    return b.result


def gpu_table(result: dict) -> str:
    """A short human table of a `gpu` result (whatever parts it has)."""
    parts = result.get("parts", {})
    lines = ["fmnist bench gpu"]

    def row(label: str, value) -> None:
        lines.append(f"  {label:52s} {value}")

    for name, p in parts.items():
        lines.append(f"{name}:" + (f" ERROR {p['error'][:200]}" if "error" in p else ""))
        if "error" in p:
            continue
        if name == "packed_default_study":
            row(f"{p['command']}, {p['runs']} runs: wall seconds", p["wall_seconds"])
            row("SM utilisation, mean %", p["sm_mean_percent"])
        elif name == "one_job_at_a_time_sample":
            row(f"{len(p['runs'])} runs one at a time: seconds per run", p["seconds_per_run"])
            row("the whole study one at a time (estimated), seconds", p["estimated_study_seconds_one_at_a_time"])
            row("SM utilisation, mean %", p["sm_mean_percent"])
        elif name == "step_times":
            for v, ms in p["ms_per_step"].items():
                row(f"step ms, {p['model']} batch {p['batch_size']}, {v}", ms)
        elif name == "fused_seeds":
            for v, ms in p["ms_per_step_of_all_seeds"].items():
                row(f"step ms of {p['seeds']} seeds of {p['model']}, {v}", ms)
            row("fused speedup (separate / fused)", f"{p['fused_speedup']}x")
        elif name == "throughput_vs_reports_loop":
            row("reports' loop, images/s", p["reference_images_per_s"])
            row("fmnist trainer, images/s", p["fmnist_images_per_s"])
            row("ratio", f"{p['ratio']}x")
        elif name == "full_study_plan":
            row(f"full study: {p['unit']} (one job at a time)", p["hours"])
            row(f"full study: wall hours ({p['machine']})", p["wall_hours"])
    if "packing_ratio" in result:
        lines.append(f"packing ratio (one at a time / packed): {result['packing_ratio']}x")
    if "total_seconds" in result:
        lines.append(f"total: {result['total_seconds']} s")
    return "\n".join(lines) + "\n"


def write_gpu_result(result: dict, out: Path | str) -> None:
    """The JSON and the table of a `gpu` result into `out` (rewritten after every part)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / GPU_BENCH_FILE).write_text(json.dumps(result, indent=2))
    (out / GPU_TABLE_FILE).write_text(gpu_table(result))
