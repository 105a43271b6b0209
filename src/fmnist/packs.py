"""Training packs: several runs trained side by side in one job (config `pack_runs`).

A SLURM job of the plugin's job groups runs its training runs one after another (the plugin starts a
group's jobs with `--jobs 1`, snakemake-executor-plugin-slurm issue #469), so a group shares one GPU
allocation but never fills the GPU. A pack is one Snakemake job, `train_pack`, that starts one
training process per run of the pack at once, on the job's GPU, and waits for all of them.

Each run trains into its own staging folder, `results/packs/runs/<run id>/`, which is not an output of
any rule: it holds the run's resume state while it trains and its finished files after. A finished
run's folder carries a stamp (`staged.json`, written last) of the exact params it was trained with. So:
- a pack killed or preempted resumes each unfinished run after its last saved epoch;
- a run that fails does not take its pack's finished runs with it: the pack job fails, Snakemake
  deletes only the pack's own output (its summary), and the next attempt skips every run whose stamp
  matches;
- the `train` rule of each run, a local job in pack mode, links the staged files into
  `results/runs/<run id>/` after checking the stamp, so everything downstream is unchanged.

The pack composition is the sorted run ids cut into chunks of at most `pack_runs`, and, where one GPU's
memory is known (`gpu_memory_mb`, or the local GPUs), before a run that would not fit beside the
pack's others by the plan's GPU memory figures: an experiment's seeds sit side by side, and a run that
moves to another pack (a run added before it) keeps its staged result.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from fmnist.runfiles import METRICS_FILE, RESUME_FILE, RUN_OUTPUTS, job_header

PACK_DIR = Path("results/packs")
STAGING_DIR = PACK_DIR / "runs"
STAMP = "staged.json"
STAGED_FILES = RUN_OUTPUTS  # a run folder's files, staged
LOG_DIR = Path("logs/train_pack")
DEFAULT_GRACE_S = 60.0  # fmnist.train.DEFAULT_GRACE_S (train is not imported by the launcher)


class PackError(RuntimeError):
    """A pack's run failed, or a staged result is missing or from other params."""


def packs(run_ids, size: int, need: Mapping[str, float] | None = None,
          budget: float | None = None, minutes: Mapping[str, float] | None = None,
          max_minutes: float | None = None) -> dict[str, list[str]]:
    """The packs of `run_ids`: sorted, cut into chunks of at most `size` runs, named p000, p001, ...

    With `need` (each run's share of a GPU: its planned memory in MB with its CUDA context, or the GPU
    slots that memory takes) and `budget` (the same measure of the one GPU a pack gets), a pack is also
    cut before the run that would take it past the budget: a pack never plans more of a GPU than it
    gets, and a run too big to share one gets a pack of its own. With `minutes` (each run's planned
    runtime) and `max_minutes` (a partition's time limit), a pack is also cut before the run that would
    take its summed runtime past the limit; a run longer than the limit alone gets a pack of its own
    (`over_time` names those). Packs stay runs of consecutive sorted ids, so an experiment's seeds
    still sit side by side."""
    if size < 1:
        raise ValueError(f"pack size must be at least 1, got {size}")
    if budget is not None and need is None:
        raise ValueError("a pack budget needs each run's need")
    if max_minutes is not None and minutes is None:
        raise ValueError("a pack time limit needs each run's minutes")
    chunks: list[list[str]] = []
    used = 0.0
    spent = 0.0
    for run_id in sorted(run_ids):
        want = need[run_id] if budget is not None else 0.0
        takes = minutes[run_id] if max_minutes is not None else 0.0
        if (not chunks or len(chunks[-1]) >= size or (budget is not None and used + want > budget)
                or (max_minutes is not None and spent + takes > max_minutes)):
            chunks.append([])
            used = spent = 0.0
        chunks[-1].append(run_id)
        used += want
        spent += takes
    return {f"p{i:03d}": chunk for i, chunk in enumerate(chunks)}


def over_time(minutes: Mapping[str, float], max_minutes: float | None) -> list[str]:
    """The runs whose planned runtime alone passes `max_minutes` (each is a pack of its own, and its
    job asks for the limit: it resumes after its last finished epoch on each retry)."""
    if max_minutes is None:
        return []
    return sorted(r for r, m in minutes.items() if m > max_minutes)


def idle_share(pack_runs: Mapping[str, list[str]], seconds: Mapping[str, float]) -> float:
    """The share of a static pack's run slots left idle while its slowest run finishes: the sum over
    packs of (the pack's longest run - each run's time), over the sum of packs' (longest x runs).

    A pack holds its GPU until its slowest run ends, so a pack of one long run and three short ones
    leaves three slots waiting. 0 when every pack's runs take equally long (or no packs)."""
    idle = held = 0.0
    for run_ids in pack_runs.values():
        if not run_ids:
            continue
        times = [float(seconds[r]) for r in run_ids]
        longest = max(times)
        idle += sum(longest - t for t in times)
        held += longest * len(times)
    return idle / held if held else 0.0


def stamp(run_json: str, code: str, device: str, max_steps: int | None) -> str:
    """What a staged result was trained from: the run's resolved config, its code identity, the device
    asked and the smoke cap (the train rule's params)."""
    text = json.dumps({"run": run_json, "code": code, "device": device, "max_steps": max_steps},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def staged_dir(run_id: str, root: Path | str = ".") -> Path:
    return Path(root) / STAGING_DIR / run_id


def staged_record(folder: Path) -> dict | None:
    """The stamp file of a finished staged run (stamp, and its process's started and finished times),
    or None (unfinished, damaged, or files missing)."""
    try:
        record = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all((folder / f).is_file() for f in STAGED_FILES):
        return None
    return record


def staged_stamp(folder: Path) -> str | None:
    """The stamp of a finished staged run, or None (unfinished, damaged, or files missing)."""
    record = staged_record(folder)
    return None if record is None else record.get("stamp")


def run_pack(jobs: list[dict], threads: int, log=print, poll_s: float = 0.5,
             retrain: frozenset[str] | set[str] = frozenset()) -> dict[str, dict]:
    """Train the pack's runs side by side, one process each, and wait for all.

    `jobs`: one dict per run: id, run (resolved config, JSON text), data, features (or None), device,
    max_steps, stamp. Runs whose staged stamp matches are skipped, unless in `retrain` (the run ids
    forced to retrain). Returns per run: status (ok,
    skipped, failed), started, finished (epoch seconds, as this process saw them), train_started and
    train_finished (the run's process's own), log. Raises PackError, after every process has
    ended, if any run failed; the finished runs stay staged.
    """
    results: dict[str, dict] = {}
    procs: dict[str, subprocess.Popen] = {}
    with _forward_sigterm(procs, log) as terminated:
        _start_and_wait(jobs, threads, log, poll_s, retrain, results, procs, terminated)
    failed = [r for r, v in results.items() if v["status"] == "failed"]
    if failed:
        kept = [r for r, v in results.items() if v["status"] != "failed"]
        raise PackError(
            (f"SIGTERM: {len(failed)} of {len(results)} runs of this pack stopped before they finished: "
             if terminated[0] else f"{len(failed)} of {len(results)} runs of this pack failed: ")
            + ", ".join(f"{r} (log {results[r]['log']})" for r in failed)
            + (f". Kept, not trained again on the next attempt: {', '.join(kept)}" if kept else "")
            + (". The next attempt resumes each after its last saved epoch." if terminated[0] else
               ". Fix the cause (the logs say it), then run snakemake again: the failed runs resume "
               "after their last finished epoch."))
    return results


@contextlib.contextmanager
def _forward_sigterm(procs: dict[str, subprocess.Popen], log) -> Iterator[list[bool]]:
    """While the pack waits: a SIGTERM (preemption, scancel, a time limit's warning signal) is passed on
    to every run still training, and the pack goes on waiting for them, each saving its epoch or
    abandoning it within its grace period (fmnist.train.Termination). Yields [whether one came]. In the
    main thread only (elsewhere Python cannot set a handler)."""
    came = [False]

    def forward(*_args) -> None:
        came[0] = True
        running = [(r, p) for r, p in procs.items() if p.poll() is None]
        for _, proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(RuntimeError):  # a print the signal interrupted: the runs' logs say it
            log(f"SIGTERM: passed on to {len(running)} running runs ({', '.join(r for r, _ in running)}); "
                "waiting for each to save its epoch or stop")

    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_and_wait(jobs, threads, log, poll_s, retrain, results, procs, terminated) -> None:
    for job in jobs:
        folder = staged_dir(job["id"])
        log_path = LOG_DIR / f"{job['id']}.log"
        if terminated[0]:  # a SIGTERM while the pack starts: no run starts after it
            results[job["id"]] = {"status": "failed", "log": str(log_path), "exit_code": None}
            log(f"{job['id']}: not started (SIGTERM)")
            continue
        forced = job["id"] in retrain
        if staged_stamp(folder) == job["stamp"] and not forced:
            results[job["id"]] = {"status": "skipped", "log": str(log_path)}
            log(f"{job['id']}: already trained with these params, in {folder}")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STAMP).unlink(missing_ok=True)  # retraining: not finished until stamped again
        if forced:  # from the start, not from a resume state
            (folder / RESUME_FILE).unlink(missing_ok=True)
        spec = folder / "job.json"
        spec.write_text(json.dumps({**job, "out_dir": str(folder), "threads": threads}))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            procs[job["id"]] = subprocess.Popen(
                [sys.executable, "-m", "fmnist.packs", str(spec)], stdout=fh, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                    str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))})
        results[job["id"]] = {"status": "running", "started": time.time(), "log": str(log_path)}
        log(f"{job['id']}: started (pid {procs[job['id']].pid}), log {log_path}")
    while procs:
        for run_id, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del procs[run_id]
            record = staged_record(staged_dir(run_id)) if code == 0 else None
            ok = record is not None
            results[run_id].update(status="ok" if ok else "failed", finished=time.time(), exit_code=code)
            if ok:  # the run's own times, from its process's start to its stamp
                results[run_id].update(train_started=record["started"], train_finished=record["finished"])
            log(f"{run_id}: {'finished' if ok else f'FAILED (exit code {code})'}")
        if procs:
            time.sleep(poll_s)


def _die_with_parent() -> None:
    """In a run's process, before it starts: ask Linux to SIGTERM it when the pack's process dies, so a
    pack killed by SIGKILL (or its node's job step torn down) leaves no run training on its own, where
    the next attempt would start a second process in the same staging folder. Elsewhere a no-op."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def collect(run_id: str, expected_stamp: str, out_dir: Path | str) -> dict:
    """Link (or copy) a staged run's files into its run folder; returns its metrics. Refuses a staged
    result trained from other params."""
    folder = staged_dir(run_id)
    got = staged_stamp(folder)
    if got != expected_stamp:
        why = "is missing or unfinished" if got is None else "was trained from other params"
        raise PackError(f"the staged result of {run_id} in {folder} {why}: its pack must train it again "
                        f"(snakemake reruns the pack when its params changed; else delete {folder / STAMP})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for name in STAGED_FILES:
        dest = out_dir / name
        dest.unlink(missing_ok=True)
        try:
            os.link(folder / name, dest)
        except OSError:
            shutil.copyfile(folder / name, dest)
        os.utime(dest, (now, now))  # newer than the pack's summary, so the run is not planned again
    return json.loads((out_dir / METRICS_FILE).read_text())


def _child(spec_path: str) -> int:
    """One run of a pack, in its own process: train into the staging folder, then stamp it."""
    started = time.time()
    # the header of a train job's log (fmnist status reads a pack's runs from these logs)
    print(job_header(), flush=True)
    job = json.loads(Path(spec_path).read_text())
    from fmnist import train
    from fmnist.runline import result_line

    out_dir = Path(job["out_dir"])
    metrics = train.train_run(json.loads(job["run"]), job["data"], out_dir, device=job["device"],
                              threads=job["threads"], max_steps=job["max_steps"],
                              features_path=job.get("features"),
                              grace_s=job.get("grace_s", DEFAULT_GRACE_S))
    tmp = out_dir / f".{STAMP}.part"
    tmp.write_text(json.dumps({"stamp": job["stamp"], "started": started, "finished": time.time()}))
    os.replace(tmp, out_dir / STAMP)
    print(result_line(metrics), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one run of a training pack (fmnist.packs)")
    parser.add_argument("spec")
    sys.exit(_child(parser.parse_args().spec))
