"""gpuread: the pure readers and checks behind `bench gpu` (no torch, no processes): the jobs' GPU slot
log lines (concurrency and the training window), timestamped `nvidia-smi dmon` samples filtered to that
window, the plan against measured runs, and the packed/alone throughput ratio.

Every figure `bench gpu` reports about packing comes from what the jobs themselves logged
(`fmnist.gpus.place_job`/`release_job`: "gpu slot: GPU g, slot(s) ... taken at T" and "... released at
T"), never from the command that was run: a study with no slot lines, or with one job at a time, is not
called packed.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

SLOT_TAKEN = re.compile(r"gpu slot: GPU (\S+?),? slot\(s\) ([\d,]+)\b.*?taken at (\d+(?:\.\d+)?)")
SLOT_RELEASED = re.compile(r"gpu slot: GPU (\S+?),? slot\(s\) ([\d,]+) released at (\d+(?:\.\d+)?)")
TOLERANCE = 0.25
"""How far (as a fraction) a plan may miss the measured figure and still match (the goal: within 25%)."""


# ---------------------------------------------------------------------------------------------
# the jobs' GPU slot lines
# ---------------------------------------------------------------------------------------------

def slot_intervals(logs: dict[str, str]) -> list[dict]:
    """One interval per job that took GPU slots, from its log's slot lines: {job, gpu, slots, start, end}.
    `logs`: job name (e.g. the run id) -> the log's text. A job that took slots and never logged their
    release (killed, failed) has `end` None."""
    out = []
    for job, text in sorted(logs.items()):
        taken = SLOT_TAKEN.search(text)
        if not taken:
            continue
        released = SLOT_RELEASED.search(text, taken.end())
        out.append({"job": job, "gpu": taken.group(1), "slots": len(taken.group(2).split(",")),
                    "start": float(taken.group(3)), "end": float(released.group(3)) if released else None})
    return out


def read_job_logs(workdir: Path | str, kinds: tuple[str, ...] = ("train", "train_pack")) -> dict[str, str]:
    """The logs of a workflow directory's training jobs (logs/train/<run>.log, logs/train_pack/<pack>.log)."""
    workdir = Path(workdir)
    return {p.stem: p.read_text(errors="replace") for kind in kinds
            for p in sorted((workdir / "logs" / kind).glob("*.log"))}


def concurrency(intervals: list[dict]) -> dict:
    """Side-by-side counts over the training window (the first slot taken to the last released):
    the most jobs holding slots at once, the time-weighted mean while at least one did, and whether
    the study was packed (more than one job at once on one GPU). Open intervals (no release line)
    are counted and named, and make the window unknown."""
    if not intervals:
        return {"jobs_placed": 0, "packed": False, "max_side_by_side": 0, "mean_side_by_side": None,
                "window": None, "why_not_packed": "no job logged a GPU slot: the jobs ran unplaced "
                                                   "(no CUDA, no --resources gpu=N, or gpu_per_run set)"}
    open_jobs = [i["job"] for i in intervals if i["end"] is None]
    closed = [i for i in intervals if i["end"] is not None]
    per_gpu = {}
    for gpu in sorted({i["gpu"] for i in closed}):
        per_gpu[gpu] = _overlap([i for i in closed if i["gpu"] == gpu])
    best = max((v["max"] for v in per_gpu.values()), default=0)
    busy = sum(v["busy_seconds"] for v in per_gpu.values())
    weighted = sum(v["job_seconds"] for v in per_gpu.values())
    window = None if open_jobs or not closed else [min(i["start"] for i in closed), max(i["end"] for i in closed)]
    r = {"jobs_placed": len(intervals), "packed": best > 1, "max_side_by_side": best,
         "mean_side_by_side": round(weighted / busy, 2) if busy > 0 else None, "window": window,
         "window_seconds": round(window[1] - window[0], 1) if window else None,
         "per_gpu_max": {g: v["max"] for g, v in per_gpu.items()}, "jobs_without_release": open_jobs}
    if best <= 1:
        r["why_not_packed"] = "the jobs' slot lines show one job at a time on every GPU"
    return r


def _overlap(intervals: list[dict]) -> dict:
    events = sorted([(i["start"], 1) for i in intervals] + [(i["end"], -1) for i in intervals],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    running, most, last, busy, job_seconds = 0, 0, None, 0.0, 0.0
    for t, step in events:
        if last is not None and running > 0:
            busy += t - last
            job_seconds += (t - last) * running
        running += step
        most = max(most, running)
        last = t
    return {"max": most, "busy_seconds": busy, "job_seconds": job_seconds}


def side_by_side_during(interval: dict, intervals: list[dict]) -> float:
    """Time-weighted mean number of jobs on `interval`'s GPU (itself included) while it held its slots."""
    start, end = interval["start"], interval["end"]
    if end is None or end <= start:
        return 1.0
    total = 0.0
    for other in intervals:
        if other["gpu"] != interval["gpu"] or other["end"] is None:
            continue
        total += max(0.0, min(end, other["end"]) - max(start, other["start"]))
    return round(total / (end - start), 2)


# ---------------------------------------------------------------------------------------------
# nvidia-smi dmon, timestamped
# ---------------------------------------------------------------------------------------------

def parse_dmon_timed(text: str) -> list[tuple[float, str, float]]:
    """(unix time, gpu, SM %) samples from a dmon log whose every line `Dmon` prefixed with the time it
    was read ("1765059301.25<TAB># gpu sm mem ..."): the `# gpu sm ...` header names the columns, '-'
    (not supported) and partial lines are skipped."""
    columns: list[str] = []
    out = []
    for line in text.splitlines():
        stamp, sep, rest = line.partition("\t")
        if not sep:
            continue
        try:
            t = float(stamp)
        except ValueError:
            continue
        parts = rest.split()
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
            out.append((t, row["gpu"], float(row["sm"])))
        except ValueError:
            continue
    return out


def sm_over_window(samples: list[tuple[float, str, float]], window: list[float] | None,
                   gpus: set[str] | None = None) -> dict:
    """Mean SM utilisation of the samples inside the training window (of `gpus`, default all), and of
    all samples for contrast. No window: no figure (it is never taken over the whole workflow)."""
    chosen = [s for s in samples if gpus is None or s[1] in gpus]
    inside = [sm for t, _, sm in chosen if window and window[0] <= t <= window[1]]
    return {"sm_mean_percent_training_window": round(statistics.mean(inside), 1) if inside else None,
            "sm_samples_in_window": len(inside),
            "sm_mean_percent_whole_workflow": round(statistics.mean([s[2] for s in chosen]), 1) if chosen else None,
            "sm_samples": len(chosen)}


# ---------------------------------------------------------------------------------------------
# the plan against real runs
# ---------------------------------------------------------------------------------------------

def plan_vs_measured(planned: dict[str, float | None], measured: dict[str, float],
                     tolerance: float = TOLERANCE) -> dict:
    """Per run: planned and measured seconds and their ratio (measured / planned); whether every run
    with both figures is within `tolerance`, and the worst ratio. A run the plan has no figure for is
    listed as unplanned (it can never pass silently)."""
    rows, unplanned = {}, []
    for rid, got in sorted(measured.items()):
        want = planned.get(rid)
        if not want:
            unplanned.append(rid)
            continue
        ratio = got / want
        rows[rid] = {"planned": round(want, 2), "measured": round(got, 2), "ratio": round(ratio, 3),
                     "within": abs(ratio - 1) <= tolerance}
    worst = max(rows.values(), key=lambda r: abs(r["ratio"] - 1), default=None)
    return {"runs": rows, "unplanned": unplanned, "tolerance": tolerance,
            "all_within": bool(rows) and not unplanned and all(r["within"] for r in rows.values()),
            "worst_ratio": worst["ratio"] if worst else None,
            "median_ratio": round(statistics.median(r["ratio"] for r in rows.values()), 3) if rows else None}


def makespan_check(planned_seconds: float, measured_seconds: float, tolerance: float = TOLERANCE) -> dict:
    """The plan's packed makespan against a measured time (the training window, or the wall time)."""
    ratio = measured_seconds / planned_seconds if planned_seconds > 0 else None
    return {"planned_seconds": round(planned_seconds, 1), "measured_seconds": round(measured_seconds, 1),
            "ratio": round(ratio, 3) if ratio else None,
            "within": ratio is not None and abs(ratio - 1) <= tolerance}


def packed_speedup_measured(packed_ips: dict[str, float], alone_ips: dict[str, float],
                            side_by_side: dict[str, float]) -> dict:
    """The steady-state speed-up of packing, run by run: a run trained at `packed_ips` images/s while
    `side_by_side[run]` jobs (itself included, time-weighted) shared its GPU, and at `alone_ips` alone;
    n jobs each at packed/alone of its own speed carry n x packed/alone of one job's work:
    what `fmnist.plan.PACKED_SPEEDUP(n)` should say. Images/s come from each run's training loop only
    (metrics.json), so start-up and evaluation are left out."""
    rows = {}
    for rid in sorted(set(packed_ips) & set(alone_ips)):
        n, per_job = side_by_side.get(rid, 1.0), packed_ips[rid] / alone_ips[rid]
        rows[rid] = {"side_by_side": n, "packed_over_alone": round(per_job, 3), "speedup": round(n * per_job, 2)}
    if not rows:
        return {"runs": {}, "side_by_side": None, "speedup": None}
    return {"runs": rows, "side_by_side": round(statistics.mean(r["side_by_side"] for r in rows.values()), 2),
            "speedup": round(statistics.mean(r["speedup"] for r in rows.values()), 2)}
