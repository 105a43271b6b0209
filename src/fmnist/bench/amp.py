"""amp: a whole study in float32 and in bf16 through the workflow, paired run by run."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from fmnist.bench.common import DEFAULT_CONFIG, run_workflow
from fmnist.config import ConfigError

AMP_BENCH_FILE = "bench_amp.json"
AMP_MODES = ("off", "bf16")


def amp_config(configfile: Path | str, amp: str, seeds: int | None = None) -> dict:
    """`configfile` as written, with every run's `amp` pinned to `amp` and, with `seeds`, every
    study's seeds replaced by 0..seeds-1 (both modes get the same runs, so they pair up)."""
    import yaml

    from fmnist.config import deep_merge

    raw = yaml.safe_load(Path(configfile).read_text()) or {}
    cfg = deep_merge(raw, {"defaults": {"amp": amp}})
    if seeds is not None:
        for study in cfg.get("studies", {}).values():
            study["seeds"] = list(range(seeds))
    return cfg


def amp_pairs(results: dict[str, dict[str, dict]]) -> dict:
    """Pair each run's bf16 result with its float32 one ({mode: {run id: metrics}}): the training-time
    ratio (float32 seconds / bf16 seconds) and the test-accuracy difference (bf16 - float32, points),
    with a paired t interval over the runs both modes finished."""
    from scipy import stats

    off, bf16 = results.get("off", {}), results.get("bf16", {})
    runs = sorted(set(off) & set(bf16))
    rows = [{"run": r, "accuracy_off": 100 * off[r]["test_accuracy"], "accuracy_bf16": 100 * bf16[r]["test_accuracy"],
             "seconds_off": off[r]["train_seconds"], "seconds_bf16": bf16[r]["train_seconds"]} for r in runs]
    for row in rows:
        row["accuracy_diff"] = round(row["accuracy_bf16"] - row["accuracy_off"], 4)
        row["train_speedup"] = round(row["seconds_off"] / row["seconds_bf16"], 3)
    out: dict = {"pairs": len(rows), "unpaired": sorted(set(off) ^ set(bf16)), "runs": rows}
    if not rows:
        return out
    diffs, ratios = [r["accuracy_diff"] for r in rows], [r["train_speedup"] for r in rows]
    out["train_speedup_median"] = round(statistics.median(ratios), 2)
    out["train_speedup_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
    out["accuracy_diff_mean"] = round(statistics.fmean(diffs), 3)
    out["bf16_lower"] = sum(d < 0 for d in diffs)
    out["bf16_higher"] = sum(d > 0 for d in diffs)
    if len(rows) >= 2 and statistics.stdev(diffs) > 0:
        t = stats.ttest_1samp(diffs, 0.0)
        ci = t.confidence_interval(0.95)
        out["accuracy_diff_ci95"] = [round(float(ci.low), 3), round(float(ci.high), 3)]
        out["accuracy_diff_p"] = round(float(t.pvalue), 4)
    return out


def amp(out: Path | str = "bench-amp", configfile: Path | str = DEFAULT_CONFIG, seeds: int | None = None,
        cores: int | None = None, device: str = "cpu", modes: tuple[str, ...] = AMP_MODES,
        budget: float = 4 * 3600.0, log=print) -> dict:
    """The study of `configfile` run twice through the workflow, in `out`/off (float32) and `out`/bf16,
    one mode after the other (`modes` sets the order): each one's wall time (data preparation not
    timed) and, run by run, the training-time ratio and the test-accuracy difference (`amp_pairs`).
    This is what `amp: auto` trades on a CPU with native bf16; the figures say which CPU. A run whose
    setting or preset pins its own `amp` computes the same way in both folders: it is counted only in
    the mode it ran in, and listed as unpaired rather than compared with itself."""
    import yaml

    from fmnist import amp as fmnist_amp
    from fmnist import gpus, plan

    if sorted(modes) != sorted(AMP_MODES):
        raise ConfigError(f"bench amp: modes {list(modes)}: give each of {', '.join(AMP_MODES)} once")
    if seeds is not None and seeds < 1:
        raise ConfigError("bench amp: --seeds must be at least 1")
    out = Path(out).resolve()
    done = [str(out / mode / "results") for mode in modes if (out / mode / "results").exists()]
    if done:
        raise ConfigError(f"bench amp: {', '.join(done)} holds an earlier bench's runs, which would not be "
                          f"trained (and timed) again: give another --out, or remove {out} first")
    out.mkdir(parents=True, exist_ok=True)
    cores = int(cores or os.cpu_count() or 1)
    t_start = time.perf_counter()
    result: dict = {"configfile": str(configfile), "seeds": seeds, "cores": cores, "device": device,
                    "machine": plan.device_label(device), "native_bf16_cpu": fmnist_amp.cpu_has_native_bf16(),
                    "auto_resolves_to": fmnist_amp.resolve_amp("auto", gpus.target_kind(device)),
                    "order": list(modes), "wall_seconds": {}}
    results: dict[str, dict[str, dict]] = {}

    def left() -> float:
        return budget - (time.perf_counter() - t_start)

    for mode in modes:
        workdir = out / mode
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = amp_config(configfile, mode, seeds)
        cfg_path = workdir / "bench_amp_config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        prepared = str(Path(cfg.get("data", {}).get("dir", "data")) / "prepared" / "fashion_mnist.npz")
        settings = [f"device={device}"]
        log(f"[bench amp] {mode}: preparing the data (not timed) ...")
        run_workflow(workdir, cfg_path, cores, [prepared], settings, ["gpu=1"], left())
        log(f"[bench amp] {mode}: the study ({left():.0f}s of the budget left) ...")
        seconds, _ = run_workflow(workdir, cfg_path, cores, [], settings, ["gpu=1"], left())
        result["wall_seconds"][mode] = round(seconds, 1)
        results[mode] = {}
        for f in sorted((workdir / "results" / "runs").glob("*/metrics.json")):
            m = json.loads(f.read_text())
            if m.get("status", "ok") == "ok" and m.get("amp_resolved") == mode:
                results[mode][m["run_id"]] = m
        log(f"[bench amp] {mode}: {seconds:.1f}s, {len(results[mode])} runs")
    w = result["wall_seconds"]
    result["study_speedup"] = round(w["off"] / w["bf16"], 2)
    result.update(amp_pairs(results))
    (out / AMP_BENCH_FILE).write_text(json.dumps(result, indent=2))
    return result


def amp_table(r: dict) -> str:
    """A short human table of an `amp` result."""
    lines = [f"fmnist bench amp: {r['configfile']} on {r['machine']} ({r['cores']} cores; native bf16: "
             f"{'yes' if r['native_bf16_cpu'] else 'no'}; amp auto here: {r['auto_resolves_to']})",
             f"  study wall seconds: float32 {r['wall_seconds']['off']}, bf16 {r['wall_seconds']['bf16']}: "
             f"bf16 {r['study_speedup']}x (order: {', '.join(r['order'])})"]
    if r["pairs"]:
        lines.append(f"  training time per run, float32 / bf16: median {r['train_speedup_median']}x "
                     f"(range {r['train_speedup_range'][0]}-{r['train_speedup_range'][1]}), {r['pairs']} runs")
        ci = (f", 95% CI {r['accuracy_diff_ci95'][0]:+.3f} to {r['accuracy_diff_ci95'][1]:+.3f}, "
              f"paired t p = {r['accuracy_diff_p']}") if "accuracy_diff_ci95" in r else ""
        lines.append(f"  test accuracy, bf16 - float32: mean {r['accuracy_diff_mean']:+.3f} points{ci}; "
                     f"bf16 lower in {r['bf16_lower']}, higher in {r['bf16_higher']} of {r['pairs']}")
    if r["unpaired"]:
        lines.append(f"  runs finished in one mode only (not compared): {', '.join(r['unpaired'])}")
    return "\n".join(lines) + "\n"
