"""gpu: the one prepared call for a GPU machine, measuring the four GPU goals (docs/performance.md, GPUs):

1. the default study through the design card's command (`snakemake --cores N --resources gpu=1`),
   from the raw IDX files, wall time;
2. SM utilisation over the training window only (the first GPU slot taken to the last released, read
   from the jobs' own slot lines), with whether the study was packed at all (the jobs' slot lines, never
   the command);
3. the plan against the real default study: per run planned against measured `train_seconds` (alone
   and packed), the plan's packed makespan against the training window and the wall time, the
   steady-state packed/alone throughput that `plan.PACKED_SPEEDUP` should come from, then the full
   study's plan on this GPU;
4. the trainer against the reports' loop, like with like: fp32 against fp32 and bf16 against bf16.

Then, while the budget lasts, step times (eager/compiled/CUDA graph) and fused seeds. Every part runs
in a child process bounded by what is left of `--budget`; on a timeout its whole process group is killed
(`common.run_bounded`). The JSON and the short text summary are written at the start and after every
part. Without CUDA (or without nvidia-smi, for the SM figure) the parts that need it say so and are
skipped: nothing silently measures the one-at-a-time path in their place.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from fmnist.bench import gpuread
from fmnist.bench.common import DEFAULT_CONFIG, FULL_CONFIG, child_env, run_bounded, run_workflow
from fmnist.config import ConfigError
from fmnist.runfiles import METRICS_FILE

GPU_BENCH_FILE = "bench_gpu.json"
GPU_TABLE_FILE = "bench_gpu.txt"
PREPARED = "data/prepared/fashion_mnist.npz"
MIN_PART_SECONDS = 15.0
"""A part is skipped (and says so) when less than this is left of the budget."""


def parse_dmon(text: str) -> dict[str, list[float]]:
    """SM utilisation samples (%) per GPU from plain `nvidia-smi dmon -s u` output: its `# gpu sm mem ...`
    header names the columns; '-' (not supported) and partial lines are skipped."""
    stamped = "\n".join(f"0\t{line}" for line in text.splitlines())
    out: dict[str, list[float]] = {}
    for _, gpu_id, sm in gpuread.parse_dmon_timed(stamped):
        out.setdefault(gpu_id, []).append(sm)
    return out


class Dmon:
    """`nvidia-smi dmon -s u -d 1` in the background while a block runs, each line it prints written to
    `path` with the time it was read ("<unix time>\\t<line>"), so samples can be cut to a window."""

    def __init__(self, path: Path, smi: str | None = None):
        self.path, self.proc, self.smi = Path(path), None, smi

    def __enter__(self):
        if self.smi:
            self.fh = open(self.path, "w")  # noqa: SIM115 - closed in __exit__
            self.proc = subprocess.Popen([self.smi, "dmon", "-s", "u", "-d", "1"], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, bufsize=1)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.fh.write(f"{time.time():.3f}\t{line}")
            self.fh.flush()

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.reader.join(timeout=5)
            self.fh.close()
        return False

    def samples(self) -> list[tuple[float, str, float]]:
        return gpuread.parse_dmon_timed(self.path.read_text()) if self.path.exists() else []


def sm_summary(sm: dict[str, list[float]]) -> dict:
    import statistics

    samples = [x for xs in sm.values() for x in xs]
    return {"sm_mean_percent": round(statistics.mean(samples), 1) if samples else None,
            "sm_samples": len(samples), "gpus_seen": sorted(sm)}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def require_cuda() -> None:
    if not cuda_available():
        raise ConfigError(
            "bench gpu needs a CUDA GPU and torch.cuda.is_available() is False here: its GPU parts were "
            "skipped (see the summary). Run it on the GPU machine (docs/performance.md, GPUs); `--device cpu` "
            "rehearses every part on a CPU"
        )


def check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"bench gpu: {out} is not empty; a used --out would reuse finished results and "
                          "report a near-zero wall time. Pass a new --out (or remove this one)")


class GpuBench:
    """One `gpu` call's state: the parts' results (written to `out` at the start and after each part)
    and the budget every part shares."""

    def __init__(self, out: Path, configfile: Path | str, cores: int, device: str, raw, budget: float, log,
                 smi: str | None):
        from fmnist import config as fmnist_config
        from fmnist import experiments

        self.out, self.configfile, self.cores, self.device = out, Path(configfile).resolve(), cores, device
        self.budget, self.log, self.smi = budget, log, smi
        self.t_start = time.perf_counter()
        self.result: dict = {"device": device, "cores": cores, "configfile": str(configfile), "budget": budget,
                             "nvidia_smi": smi, "parts": {}}
        self.settings = [f"device={device}"] + (
            [f"data={json.dumps({'sources': [str(Path(raw).resolve())]})}"] if raw else [])
        cfg = fmnist_config.load(configfile)
        self.ids = list(experiments.expand(cfg)[0])
        self.prepared = out / "study" / PREPARED
        self.cache_dir = out / "plan-cache"  # figures measured afresh on this machine, never a stale copy

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t_start)

    def part(self, name: str, fn, needs: float = MIN_PART_SECONDS) -> None:
        t0 = time.perf_counter()
        if self.left() < needs:
            self.result["parts"][name] = {"skipped": f"budget spent ({self.left():.0f}s of {self.budget:.0f}s left)"}
        else:
            self.log(f"[bench gpu] {name} ({self.left():.0f}s of the budget left) ...")
            try:
                self.result["parts"][name] = {**fn(), "seconds": round(time.perf_counter() - t0, 1)}
            except Exception as exc:  # one failing part must not lose the others' figures
                msg = str(exc) if len(str(exc)) <= 1800 else f"{str(exc)[:400]} ... {str(exc)[-1400:]}"
                self.result["parts"][name] = {"error": f"{type(exc).__name__}: {msg}"}
        self.result["elapsed_seconds"] = round(time.perf_counter() - self.t_start, 1)
        write_gpu_result(self.result, self.out)
        self.log(f"[bench gpu] {name}: {json.dumps(self.result['parts'][name])[:400]}")

    def workflow(self, workdir: Path, targets: list[str], extra: list[str]) -> tuple[float, str]:
        return run_workflow(workdir, self.configfile, self.cores, targets, self.settings + extra, ["gpu=1"],
                            self.left())

    # -- 1 and 2: the default study, packed ----------------------------------------------------------
    def packed(self) -> dict:
        workdir = self.out / "study"
        with Dmon(self.out / "dmon_study.txt", self.smi) as d:
            seconds, tail = self.workflow(workdir, [], [])
        runs = read_metrics(workdir, self.ids)
        intervals = gpuread.slot_intervals(gpuread.read_job_logs(workdir))
        conc = gpuread.concurrency(intervals)
        sm = (gpuread.sm_over_window(d.samples(), conc["window"]) if self.smi
              else {"sm": "not measured: no nvidia-smi on PATH"})
        self.study_intervals = intervals
        return {"command": f"snakemake --cores {self.cores} --resources gpu=1 (from the raw IDX files)",
                "runs": len(self.ids), "finished": len(runs), "wall_seconds": round(seconds, 1), **conc, **sm,
                "train_seconds": {r: m["train_seconds"] for r, m in runs.items()},
                "images_per_second": {r: m["images_per_second"] for r, m in runs.items()},
                "side_by_side_per_run": {i["job"]: gpuread.side_by_side_during(i, intervals) for i in intervals},
                "log_tail": tail[-400:]}

    # -- 3: one at a time, the packing speed-up, the plan ---------------------------------------------
    def alone(self, runs: int) -> dict:
        sample = self.ids[:runs]
        workdir = self.out / "alone"
        self.workflow(workdir, [PREPARED], [])  # the data: not timed
        seconds, _ = self.workflow(workdir, [f"results/runs/{r}/metrics.json" for r in sample], ["gpu_slots=1"])
        metrics = read_metrics(workdir, sample)
        conc = gpuread.concurrency(gpuread.slot_intervals(gpuread.read_job_logs(workdir)))
        return {"runs": sample, "command": "... --config gpu_slots=1 (one job at a time)",
                "wall_seconds": round(seconds, 1), "seconds_per_run": round(seconds / len(sample), 1),
                "estimated_study_seconds_one_at_a_time": round(seconds / len(sample) * len(self.ids), 1),
                "max_side_by_side": conc["max_side_by_side"], "jobs_placed": conc["jobs_placed"],
                "train_seconds": {r: m["train_seconds"] for r, m in metrics.items()},
                "images_per_second": {r: m["images_per_second"] for r, m in metrics.items()}}

    def speedup(self) -> dict:
        p, a = self.result["parts"].get("default_study", {}), self.result["parts"].get("one_at_a_time", {})
        if "images_per_second" not in p or "images_per_second" not in a:
            raise RuntimeError("needs the packed study and the one-at-a-time runs, and one of them has no figures")
        from fmnist import plan

        r = {"planned_curve": [list(x) for x in plan.PACKED_SPEEDUP]}
        if not p.get("packed"):
            return {**r, "speedup": None, "why": "not packed: " + p.get("why_not_packed", "")}
        m = gpuread.packed_speedup_measured(p["images_per_second"], a["images_per_second"],
                                            p["side_by_side_per_run"])
        n = m["side_by_side"]
        return {**r, **m, "plan_says": round(plan.packed_speedup(round(n)), 2) if n else None}

    def plan_check(self) -> dict:
        planned = self.child("study_plan", {"configfile": str(self.configfile), "device": self.device,
                                            "cores": self.cores, "seconds": 0.5})
        p, a = self.result["parts"].get("default_study", {}), self.result["parts"].get("one_at_a_time", {})
        out = {"plan": {k: v for k, v in planned.items() if k != "runs"},
               "alone": gpuread.plan_vs_measured({r: x["alone"] for r, x in planned["runs"].items()},
                                                 a.get("train_seconds", {}))}
        if p.get("packed"):
            out["packed"] = gpuread.plan_vs_measured({r: x["packed"] for r, x in planned["runs"].items()},
                                                     p["train_seconds"])
            out["makespan_vs_training_window"] = gpuread.makespan_check(planned["makespan_seconds"],
                                                                        p["window_seconds"] or 0.0)
        else:
            out["packed"] = "not checked: the study was not packed (" + p.get("why_not_packed", "no study") + ")"
        if "wall_seconds" in p:
            out["makespan_vs_wall"] = gpuread.makespan_check(planned["makespan_seconds"], p["wall_seconds"])
        return out

    # -- 4 and the rest: child processes on the study's prepared data ---------------------------------
    def child(self, fn: str, kwargs: dict) -> dict:
        """`fn(**kwargs)` of this module's CHILD_PARTS in a child process bounded by the budget left."""
        target = self.out / f".{fn}.json"
        cmd = [sys.executable, "-m", "fmnist.bench.gpu", fn, str(target), json.dumps(kwargs)]
        env = {**child_env(), "FMNIST_CACHE_DIR": str(self.cache_dir)}
        rc, _, output = run_bounded(cmd, self.left(), env)
        if rc is None:
            raise RuntimeError(f"{fn} ran past the budget; its process group was killed:\n{output[-800:]}")
        if rc != 0 or not target.exists():
            raise RuntimeError(f"{fn} failed:\n{output[-1500:]}")
        return json.loads(target.read_text())

    def loop_vs_reports(self, images: int, repeats: int, warmup: int) -> dict:
        common = {"device": self.device, "data": str(self.prepared), "configfile": str(self.configfile),
                  "images": images, "repeats": repeats, "warmup": warmup, "threads": 2, "workers": 2}
        out = {}
        for amp in ("off", "bf16"):
            r = self.child("throughput", {**common, "amp": amp})
            if r["amp_bf16"] != (amp == "bf16") or r["reference_amp_bf16"] != r["amp_bf16"]:
                raise RuntimeError(f"amp {amp}: the two loops did not run the same numerics ({r})")
            out["fp32" if amp == "off" else "bf16"] = {k: r[k] for k in (
                "reference_images_per_s", "fmnist_images_per_s", "ratio", "channels_last", "device_name")}
        return out


def read_metrics(workdir: Path, ids: list[str]) -> dict[str, dict]:
    out = {}
    for rid in ids:
        path = workdir / "results" / "runs" / rid / METRICS_FILE
        if path.exists():
            out[rid] = json.loads(path.read_text())
    return out


def study_plan(configfile: str, device: str, cores: int, seconds: float) -> dict:
    """The plan of a study on this machine, per run: seconds alone and as the plan packs it (n side by
    side at PACKED_SPEEDUP(n) / n of its speed alone), and the packed makespan on one GPU."""
    from fmnist import config as fmnist_config
    from fmnist import experiments, plan
    from fmnist import gpus as fmnist_gpus

    cfg = fmnist_config.load(configfile, {"device": device})
    r = plan.plan(cfg, measure_missing=True, seconds=seconds, batch_cap=64, log=lambda _m: None)
    wall = plan.wall_clock(r, cfg, gpus=1, cores=cores)
    runs, _ = experiments.expand(cfg)
    out = {}
    if device.startswith("cuda"):
        memory = min((m for _, m in fmnist_gpus.visible_gpus()), default=fmnist_gpus.DEFAULT_GPU_MEM_MB)
        pack = fmnist_gpus.Packing(("0",), int(memory), int(cfg.get("gpu_slots") or fmnist_gpus.DEFAULT_SLOTS))
        cache = plan.load_cache()
    for rid, row in r["runs"].items():
        alone = row["seconds"]
        packed = alone
        if alone is not None and device.startswith("cuda"):
            n = min(len(runs), pack.slots // pack.job_slots(plan.gpu_mem_mb(runs[rid], cfg, cache)))
            packed = alone * n / plan.packed_speedup(n)
        out[rid] = {"alone": alone, "packed": packed}
    return {"runs": out, "makespan_seconds": wall["total_hours"] * 3600, "machine": wall["machine"],
            "unit": r["unit"], "missing": r["missing"]}


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


def _throughput(**kw) -> dict:
    from fmnist.bench.throughput import throughput

    return throughput(**kw, log=lambda _m: None)


def _steps(**kw) -> dict:
    from fmnist.bench.steps import steps

    return steps(**kw, log=lambda _m: None)


def _fused(**kw) -> dict:
    from fmnist.bench.fused import fused_seeds

    return fused_seeds(**kw, log=lambda _m: None)


CHILD_PARTS = {"study_plan": study_plan, "full_plan": full_plan, "throughput": _throughput, "steps": _steps,
               "fused_seeds": _fused}


def gpu(out: Path | str = "bench-gpu", raw: Path | str | None = None, cores: int | None = None,
        sequential_runs: int = 2, budget: float = 330.0, configfile: Path | str = DEFAULT_CONFIG,
        plan_config: Path | str = FULL_CONFIG, device: str = "cuda", n_steps: int = 100, images: int = 12800,
        plan_seconds: float = 0.5, repeats: int = 3, warmup: int = 10, log=print, cuda: bool | None = None,
        smi: str | None = "auto") -> dict:
    """The four GPU goals in one call bounded by `budget` seconds in all (module docstring). `raw`: a
    directory with the four IDX .gz files (default: the config's data.sources). `device: cpu` rehearses
    every part on a CPU (tests), where no job takes a GPU slot, so nothing is called packed. `cuda`,
    `smi`: what this machine has (default: found here). `repeats`, `warmup`: of the loop and step parts
    (fewer only for rehearsals)."""
    out = Path(out).resolve()
    check_out(out)
    cuda = cuda_available() if cuda is None else cuda
    smi = shutil.which("nvidia-smi") if smi == "auto" else smi
    cores = int(cores or os.cpu_count() or 1)
    b = GpuBench(out, configfile, cores, device, raw, budget, log, smi)
    names = ("default_study", "one_at_a_time", "packed_speedup", "plan_check", "loop_vs_reports",
             "full_study_plan", "step_times", "fused_seeds")
    if device == "cuda" and not cuda:
        why = "skipped: no CUDA here (torch.cuda.is_available() is False)"
        b.result["parts"] = {n: {"skipped": why} for n in names}
        b.result["no_cuda"] = True
        write_gpu_result(b.result, out)
        return b.result
    b.result["parts"] = {n: {"pending": True} for n in names}
    write_gpu_result(b.result, out)  # the summary exists from the first second
    data = str(b.prepared)
    b.part("default_study", b.packed)
    b.part("one_at_a_time", lambda: b.alone(sequential_runs))
    b.part("packed_speedup", b.speedup, needs=0)
    b.part("plan_check", b.plan_check)
    b.part("loop_vs_reports", lambda: b.loop_vs_reports(images, repeats, warmup))
    b.part("full_study_plan", lambda: b.child("full_plan", {"plan_config": str(plan_config), "device": device,
                                                             "cores": cores, "seconds": plan_seconds}))
    b.part("step_times", lambda: b.child("steps", {"device": device, "data": data, "n_steps": n_steps,
                                                    "warmup": warmup, "repeats": repeats}))
    b.part("fused_seeds", lambda: b.child("fused_seeds", {"device": device, "data": data, "seeds": 4,
                                                           "n_steps": max(2, n_steps // 5), "warmup": 2,
                                                           "repeats": repeats}))
    b.result["total_seconds"] = round(time.perf_counter() - b.t_start, 1)
    write_gpu_result(b.result, out)
    return b.result


def _fmt(x) -> str:
    return "-" if x is None else str(x)


def goal_lines(result: dict) -> list[str]:
    """The four goals, one line each, from a `gpu` result (whatever parts it has)."""
    parts = result.get("parts", {})
    s, pc, lr = parts.get("default_study", {}), parts.get("plan_check", {}), parts.get("loop_vs_reports", {})
    packed = ("packed, up to " + _fmt(s.get("max_side_by_side")) + " side by side" if s.get("packed")
              else "NOT packed" + (f" ({s['why_not_packed']})" if s.get("why_not_packed") else ""))
    lines = [f"1 default study <= 45 s: {_fmt(s.get('wall_seconds'))} s wall, {_fmt(s.get('finished'))} of "
             f"{_fmt(s.get('runs'))} runs, {packed}" if "wall_seconds" in s else f"1 default study: {_state(s)}"]
    if "wall_seconds" in s:
        sm = s.get("sm_mean_percent_training_window", s.get("sm"))
        lines.append(f"2 SM >= 80% over the training window ({_fmt(s.get('window_seconds'))} s): {_fmt(sm)} "
                     f"(whole workflow {_fmt(s.get('sm_mean_percent_whole_workflow'))})")
    else:
        lines.append(f"2 SM: {_state(s)}")
    if "plan" in pc:
        fp = parts.get("full_study_plan", {})
        mk = pc.get("makespan_vs_training_window", {})
        pk = pc.get("packed")
        lines.append(
            f"3 full study <= 4 wall-hours: {_fmt(fp.get('wall_hours'))} h; plan within 25%: alone "
            f"{_ratio(pc['alone'])}, packed {_ratio(pk) if isinstance(pk, dict) else 'not checked'}, "
            f"makespan/window {_fmt(mk.get('ratio'))}")
    else:
        lines.append(f"3 plan check: {_state(pc)}")
    if "fp32" in lr:
        lines.append(f"4 trainer >= 4x the reports' loop: fp32 {lr['fp32']['ratio']}x, bf16 {lr['bf16']['ratio']}x")
    else:
        lines.append(f"4 trainer vs the reports' loop: {_state(lr)}")
    return lines


def _ratio(check: dict) -> str:
    if not check.get("runs"):
        return "no runs"
    return f"{'yes' if check['all_within'] else 'NO'} (median {check['median_ratio']}, worst {check['worst_ratio']})"


def _short(p: dict) -> str:
    if "seconds" in p:
        return f"{p['seconds']}s"
    return "ERROR" if "error" in p else "skipped" if "skipped" in p else "pending"


def _state(p: dict) -> str:
    if "error" in p:
        return "ERROR " + p["error"][:160].replace("\n", " ")
    if "skipped" in p:
        return p["skipped"]
    return "pending" if p.get("pending") or not p else "done"


def gpu_table(result: dict) -> str:
    """The short summary of a `gpu` result: the four goals, then one line per part."""
    parts = result.get("parts", {})
    lines = [f"fmnist bench gpu ({result.get('device')}, {result.get('cores')} cores, budget "
             f"{result.get('budget')} s, elapsed {_fmt(result.get('elapsed_seconds'))} s)"]
    if result.get("no_cuda"):
        lines.append("NO CUDA HERE: every GPU part skipped (run it on the GPU machine; --device cpu rehearses)")
    if not result.get("nvidia_smi"):
        lines.append("no nvidia-smi: SM utilisation not measured")
    lines += goal_lines(result)
    sp = parts.get("packed_speedup", {})
    if "speedup" in sp:
        lines.append(f"packed/alone speed-up at {_fmt(sp.get('side_by_side'))} side by side: "
                     f"{_fmt(sp['speedup'])} (PACKED_SPEEDUP says {_fmt(sp.get('plan_says'))})")
    st = parts.get("step_times", {})
    if "ms_per_step" in st:
        lines.append("step ms: " + ", ".join(f"{k} {v}" for k, v in st["ms_per_step"].items()))
    fs = parts.get("fused_seeds", {})
    if "fused_speedup" in fs:
        lines.append(f"fused seeds speed-up: {fs['fused_speedup']}x")
    lines.append("parts: " + ", ".join(f"{n} {_short(p)}" for n, p in parts.items()))
    lines += [f"  {n}: {_state(p)}" for n, p in parts.items() if "error" in p]
    if "total_seconds" in result:
        lines.append(f"total: {result['total_seconds']} s")
    return "\n".join(lines) + "\n"


def write_gpu_result(result: dict, out: Path | str) -> None:
    """The text summary, then the JSON of a `gpu` result into `out` (rewritten after every part)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / GPU_TABLE_FILE).write_text(gpu_table(result))
    (out / GPU_BENCH_FILE).write_text(json.dumps(result, indent=2))


def _child_main(argv: list[str]) -> int:
    fn, target, kwargs = argv[0], Path(argv[1]), json.loads(argv[2])
    result = CHILD_PARTS[fn](**kwargs)
    target.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
