"""How far a study has got: finished, running, interrupted, failed and waiting runs, with ETAs.

Read from the files a study leaves, with no torch import and nothing written: a run is *finished*
when `results/runs/<run>/metrics.json` holds this config's resolved run (the run cache may link
another config's result there); otherwise its log `logs/train/<run>.log` tells the rest. The log's
last attempt (from its "job started" line) is *failed* when it ends in a traceback or an fmnist
error; a log that ended with a result, or trains to another number of epochs, is another config's
(the run is *waiting* for this one); otherwise the run is *running* while a Snakemake holds this
directory's lock (`.snakemake/locks/`), and *interrupted* without one (the next `snakemake` resumes
it from `resume.pt`). No log: *waiting*. In pack mode (config pack_runs) a run's log is
`logs/train_pack/<run>.log` until its train job copies it.

What we chose where nothing tells us:
- A running run's ETA is its remaining epochs times the mean of its last five epochs' seconds
  (from its log); before its first epoch, the plan's estimate less the time since it started.
- A waiting run's estimate is the mean training time of its experiment's finished runs (other
  seeds), else `fmnist.plan`'s figure from the cached throughput (no measuring here), else unknown.
- Every estimate counts all of a run's epochs: early stopping can only make it shorter, so the
  ETAs are upper bounds.
- The study's ETA divides the remaining training seconds by the number of runs training now (at
  least one): Snakemake keeps that many busy while work is left.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fmnist import runfiles
from fmnist.runline import format_duration, result_line  # noqa: F401 - result_line: part of this API

EPOCH = re.compile(r"\bepoch (\d+)/(\d+) .*\bval_acc ([0-9.]+|nan) .* ([0-9.]+)s(?: \*)?$")
RESUMED = re.compile(r"\bresuming after epoch (\d+)\b")
ENDED = re.compile(r"\] (ok|diverged|not_learned): test accuracy ")
FAILURE = re.compile(r"^(Traceback \(most recent call last\)|fmnist: |[A-Za-z_.]*(Error|Exception): )")
RECENT_EPOCHS = 5


@dataclass
class LogInfo:
    """What a training log says about its last attempt."""

    started: float | None = None  # epoch seconds of the last "job started" line
    epoch: int = 0
    epochs: int | None = None
    val_accuracy: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    failure: str = ""
    ended: bool = False  # the attempt wrote its result line (fmnist.train's last)
    mtime: float = 0.0


def read_log(path: Path) -> LogInfo | None:
    """Parse a training log (fmnist.train's lines); None when there is none."""
    try:
        text = path.read_text(errors="replace")
        mtime = path.stat().st_mtime
    except OSError:
        return None
    info = LogInfo(mtime=mtime)
    for line in text.splitlines():
        line = line.rstrip()
        if (started := runfiles.job_started(line)) is not None:
            info = LogInfo(mtime=mtime, started=started)
        elif m := EPOCH.search(line):
            info.epoch, info.epochs = int(m.group(1)), int(m.group(2))
            info.val_accuracy = None if m.group(3) == "nan" else float(m.group(3))
            info.epoch_seconds.append(float(m.group(4)))
        elif m := RESUMED.search(line):
            info.epoch = int(m.group(1))
        elif ENDED.search(line):
            info.ended = True
        elif not info.failure and FAILURE.match(line):
            info.failure = line
        elif info.failure.startswith("Traceback") and line and not line.startswith(" "):
            info.failure = line  # the exception line that ends the traceback
    return info


@dataclass
class RunStatus:
    run: str
    state: str  # finished | running | interrupted | failed | waiting
    epochs: int
    epoch: int = 0
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    result: str = ""  # a finished run's status (ok, diverged, not_learned)
    train_seconds: float | None = None
    remaining_seconds: float | None = None  # training seconds left (upper bound)
    estimate_from: str = ""  # history | finished seeds | plan | ""
    note: str = ""


def _finished(run: dict, metrics_path: Path) -> dict | None:
    from fmnist.config import canonical_json

    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or canonical_json(metrics.get("config")) != canonical_json(run):
        return None  # another config's result (the run cache links the config in effect), or damaged
    return metrics


def snakemake_active(workdir: Path) -> bool:
    """A Snakemake holds this directory's lock (it removes its lock files when it ends)."""
    locks = workdir / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


STALE_NOTE = "another config's result in place"


def run_status(run: dict, workdir: Path, active: bool, planned: float | None, now: float) -> RunStatus:
    rid, epochs = run["id"], int(run["train"]["epochs"])
    metrics = _finished(run, workdir / "results" / "runs" / rid / runfiles.METRICS_FILE)
    staged = None
    if metrics is None:  # pack mode: trained in its pack, not linked yet (its pack's other runs go on)
        staged = _finished(run, workdir / "results" / "packs" / "runs" / rid / runfiles.METRICS_FILE)
    if metrics is not None or staged is not None:
        m = metrics or staged
        return RunStatus(rid, "finished", epochs, epoch=m["epochs_run"],
                         val_accuracy=m.get("best_val_accuracy"), test_accuracy=m.get("test_accuracy"),
                         result=m["status"], train_seconds=m.get("train_seconds"),
                         note="" if metrics is not None else "in its pack's staging; linked when the pack ends")
    log = read_log(workdir / "logs" / "train" / f"{rid}.log")
    if log is None or log.started is None:  # pack mode: the run trains in its pack (fmnist.packs)
        log = read_log(workdir / "logs" / "train_pack" / f"{rid}.log") or log
    if log is None or log.started is None or log.ended or (log.epochs is not None and log.epochs != epochs):
        # no attempt yet, or the log of a run of another config (it ended, or trains to other epochs)
        stale = (workdir / "results" / "runs" / rid / runfiles.METRICS_FILE).exists()
        return RunStatus(rid, "waiting", epochs, remaining_seconds=planned, estimate_from="plan" if planned else "",
                         note=STALE_NOTE if stale else "")
    st = RunStatus(rid, "running" if active else "interrupted", epochs, epoch=log.epoch,
                   val_accuracy=log.val_accuracy)
    if log.failure:
        st.state, st.note = "failed", log.failure
        return st
    recent = log.epoch_seconds[-RECENT_EPOCHS:]
    if recent:
        st.remaining_seconds, st.estimate_from = (epochs - log.epoch) * sum(recent) / len(recent), "history"
    elif planned is not None:
        st.remaining_seconds, st.estimate_from = max(0.0, planned - (now - log.started)), "plan"
    if st.state == "interrupted":
        st.note = f"resumes after epoch {log.epoch} on the next snakemake run"
    elif now - log.mtime > max(900.0, 5 * (sum(recent) / len(recent) if recent else 0)):
        st.note = f"log silent for {format_duration(now - log.mtime)}: is the job still alive?"
    return st


def _planned_seconds(cfg: dict, runs: dict[str, dict], workdir: Path) -> dict[str, float | None]:
    """Each run's planned training seconds from the study's finished runs and the cached throughput
    figures (nothing measured)."""
    from fmnist import plan

    try:
        rows = plan.plan(cfg, measure_missing=False, log=lambda _m: None,
                         results=workdir / "results" / "runs")["runs"]
    except Exception:  # noqa: BLE001 - a plan that cannot be made leaves the estimates unknown
        return dict.fromkeys(runs)
    return {rid: rows.get(rid, {}).get("seconds") for rid in runs}


def study_status(cfg: dict, workdir: Path | str = ".", now: float | None = None) -> dict:
    """Every run of `cfg` with its state, and the study's remaining time (see the module docstring)."""
    from fmnist import gpus

    workdir = Path(workdir)
    now = time.time() if now is None else now
    runs, studies = gpus.expand_for_jobs(cfg)  # as the workflow hands them to its jobs
    planned = _planned_seconds(cfg, runs, workdir)
    active = snakemake_active(workdir)
    rows = [run_status(run, workdir, active, planned[rid], now) for rid, run in runs.items()]
    _estimate_from_finished_seeds(rows, runs)
    running = sum(r.state == "running" for r in rows)
    left = [r for r in rows if r.state in ("running", "interrupted", "waiting")]
    known = [r.remaining_seconds for r in left if r.remaining_seconds is not None]
    remaining = sum(known)
    counts = {s: sum(r.state == s for r in rows) for s in ("finished", "running", "interrupted", "failed", "waiting")}
    return {
        "runs": [asdict(r) for r in rows],
        "studies": {s: len(set(ids)) for s, ids in studies.items()},
        "counts": counts,
        "snakemake_running": active,
        "remaining_training_seconds": remaining,
        "unknown_estimates": len(left) - len(known),
        "parallel": max(1, running),
        "eta_seconds": remaining / max(1, running) if left else 0.0,
    }


def _estimate_from_finished_seeds(rows: list[RunStatus], runs: dict[str, dict]) -> None:
    """A waiting run takes about as long as its experiment's finished seeds did."""
    from fmnist.experiments import experiment_id

    done: dict[str, list[float]] = {}
    for r in rows:
        if r.state == "finished" and r.train_seconds is not None:
            done.setdefault(experiment_id(runs[r.run]), []).append(r.train_seconds)
    for r in rows:
        seeds = done.get(experiment_id(runs[r.run]))
        if r.state == "waiting" and seeds:
            r.remaining_seconds, r.estimate_from = sum(seeds) / len(seeds), "finished seeds"


def _pct(x: float | None) -> str:
    return "  n/a " if x is None else f"{100 * x:5.2f}%"


def render(status: dict, configfile: str) -> str:
    """The status as text for a terminal, one section per state."""
    c = status["counts"]
    total = len(status["runs"])
    lines = [f"{configfile}: {total} runs — {c['finished']} finished, {c['running']} running, "
             f"{c['interrupted']} interrupted, {c['failed']} failed, {c['waiting']} waiting"]
    width = max((len(r["run"]) for r in status["runs"]), default=10)
    by_state = {s: [r for r in status["runs"] if r["state"] == s] for s in c}
    if by_state["running"] or by_state["interrupted"]:
        lines.append("\nrunning" if by_state["running"] else "\ninterrupted")
        for r in by_state["running"] + by_state["interrupted"]:
            eta = "ETA unknown" if r["remaining_seconds"] is None else \
                f"ETA at most {format_duration(r['remaining_seconds'])} ({r['estimate_from']})"
            tag = "" if r["state"] == "running" else "[interrupted] "
            lines.append(f"  {r['run']:{width}s}  {tag}epoch {r['epoch']:>3d}/{r['epochs']:<3d}  "
                         f"val acc {_pct(r['val_accuracy'])}  {eta}" + (f"  — {r['note']}" if r["note"] else ""))
    if by_state["failed"]:
        lines.append("\nfailed (log: logs/train/<run>.log)")
        for r in by_state["failed"]:
            lines.append(f"  {r['run']:{width}s}  after epoch {r['epoch']}/{r['epochs']}: {r['note'][:120]}")
    if by_state["finished"]:
        lines.append("\nfinished")
        for r in by_state["finished"]:
            extra = "" if r["result"] == "ok" else f"  [{r['result']}]"
            lines.append(f"  {r['run']:{width}s}  test acc {_pct(r['test_accuracy'])}  epochs {r['epoch']}/{r['epochs']}  "
                         f"{format_duration(r['train_seconds'])}{extra}" + (f"  ({r['note']})" if r["note"] else ""))
    if by_state["waiting"]:
        lines.append("\nwaiting (by experiment: its seeds, and the training time of one run)")
        groups: dict[str, list[dict]] = {}
        for r in by_state["waiting"]:
            groups.setdefault(r["run"].rsplit(".s", 1)[0], []).append(r)
        for experiment, rs in groups.items():
            est = [r["remaining_seconds"] for r in rs if r["remaining_seconds"] is not None]
            each = "no estimate" if not est else \
                f"about {format_duration(max(est))} each ({rs[0]['estimate_from']})"
            seeds = ", ".join(r["run"].rsplit(".s", 1)[1] for r in rs)
            stale = sum(r["note"] == STALE_NOTE for r in rs)
            lines.append(f"  {experiment:{width}s}  seed{'s' if len(rs) > 1 else ''} {seeds}  {each}"
                         + (f"  ({stale} with {STALE_NOTE}: snakemake retrains or restores this config's)"
                            if stale else ""))
    lines.append("")
    left = c["running"] + c["interrupted"] + c["waiting"]
    if not left:
        lines.append(f"study done: {c['finished']} finished, {c['failed']} failed")
    else:
        unknown = status["unknown_estimates"]
        eta = format_duration(status["eta_seconds"])
        lines.append(
            (f"study ETA: at most {eta}" if not unknown else
             f"study ETA: unknown ({unknown} run(s) without an estimate: `python -m fmnist plan` measures "
             f"their models); the others need at most {eta}")
            + f" ({format_duration(status['remaining_training_seconds'])} of training left, "
            f"{status['parallel']} run(s) at a time as now)")
        if not status["snakemake_running"]:
            lines.append("no snakemake is running in this directory: start it to continue")
    return "\n".join(lines)
