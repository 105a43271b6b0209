"""A record that grows on any GPU that is lent: train the record's next unfinished runs packed on the GPU
for a given number of minutes (`chunk`), leave the finished runs in one archive with the device named per
run, and import that archive into the record in git (`import_archive`), checked.

The archive (`<out>/record-<name>-<host>-<UTC time>.tar.gz`):
    MANIFEST.json          the record's name, the config's SHA-256, the host, the commit, start and end,
                           and per run: its device, device name, and the SHA-256 of each of its files
    runs/<run>/metrics.json, history.csv, confusion.csv     (no weights: the record holds none)

A record may hold runs from a CPU and from a GPU, but no experiment (a run id without its seed) mixes
them: its seeds must differ by seed only, and the device changes the numbers (float order, kernels).
`chunk` picks only runs of experiments the record has no other device class for, and `import_archive`
refuses a run that would mix them, a run already in the record, a run of another config, and any file
whose hash or content does not check. Nothing is copied unless every run of the archive passes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from fmnist import config as fmnist_config
from fmnist import experiments
from fmnist.config import REPO_ROOT, ConfigError
from fmnist.runfiles import CONFUSION_FILE, HISTORY_FILE, METRICS_FILE

RUN_FILES = (METRICS_FILE, HISTORY_FILE, CONFUSION_FILE)
"""A record's files per run: a run's outputs without its weights (a record holds none)."""
MANIFEST = "MANIFEST.json"


def device_class(device: str) -> str:
    """`cpu`, `cuda` or `mps`: the class of a metrics.json `device` ("cuda:0" -> "cuda")."""
    return str(device).split(":", 1)[0]


def record_devices(record: Path | str) -> dict[str, dict[str, set[str]]]:
    """Per experiment of a record, the device classes of its runs and the runs (from runs/*/metrics.json)."""
    out: dict[str, dict[str, set[str]]] = {}
    for path in sorted(Path(record).glob("runs/*/metrics.json")):
        m = json.loads(path.read_text())
        exp = path.parent.name.rsplit(".s", 1)[0]
        out.setdefault(exp, {}).setdefault(device_class(m.get("device", "cpu")), set()).add(path.parent.name)
    return out


def next_runs(configfile: Path | str, record: Path | str, kind: str = "cuda", limit: int | None = None) -> list[str]:
    """The record's unfinished runs a `kind` device may train, in the config's order: not in the record
    yet, and of an experiment whose recorded runs (if any) are all of `kind`."""
    runs, _ = experiments.expand(fmnist_config.load(configfile))
    done = {p.name for p in Path(record).glob("runs/*") if (p / METRICS_FILE).exists()}
    devices = record_devices(record)
    out = [rid for rid, run in runs.items() if rid not in done
           and set(devices.get(experiments.experiment_id(run), {})) <= {kind}]
    return out[:limit] if limit else out


def chunk(configfile: Path | str, record: Path | str, out: Path | str, minutes: float, *, gpus: int = 1,
          cores: int | None = None, device: str = "cuda", limit: int | None = None, log=print) -> dict:
    """Train the record's next unfinished runs (`next_runs`) packed on `gpus` GPUs through the workflow
    (`--resources gpu=G`) for at most `minutes`, then archive the finished ones (`build_archive`).
    The workflow's whole process group is killed at the deadline; runs it had not finished are left out."""
    import os

    from fmnist.bench.common import child_env, run_bounded, snakemake_scheduler

    configfile, record, out = Path(configfile).resolve(), Path(record), Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    todo = next_runs(configfile, record, device_class(device), limit)
    if not todo:
        raise ConfigError(f"{record}: no unfinished run of {configfile.name} that a {device} may train "
                          "(every run is recorded, or its experiment already has runs from another device)")
    workdir = out / "work"
    cmd = [sys.executable, "-m", "snakemake", *[f"results/runs/{r}/metrics.json" for r in todo],
           "-s", str(REPO_ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
           "--cores", str(cores or os.cpu_count() or 1), "--resources", f"gpu={gpus}", "--config",
           f"device={device}", "--keep-going", *snakemake_scheduler()]
    log(f"[record gpu] {len(todo)} unfinished runs, {minutes:g} minutes: {' '.join(cmd)}")
    start = time.time()
    env = {**child_env(), "SNAKEMAKE_OUTPUT_CACHE": str(workdir / "cache")}
    rc, seconds, output = run_bounded(cmd, minutes * 60, env)
    (out / "workflow.log").write_text(output)
    finished = [r for r in todo if (workdir / "results" / "runs" / r / METRICS_FILE).exists()]
    log(f"[record gpu] workflow {'ran out of time' if rc is None else f'exited {rc}'} after {seconds:.0f}s; "
        f"{len(finished)} of {len(todo)} runs finished")
    if not finished:
        raise RuntimeError(f"no run finished in {minutes:g} minutes; the workflow's log: {out / 'workflow.log'}\n"
                           + output[-2000:])
    archive = build_archive(workdir / "results" / "runs", finished, out, record_name=record.name,
                            configfile=configfile, start=start, end=time.time())
    return {"archive": str(archive), "finished": finished, "candidates": len(todo), "seconds": round(seconds, 1),
            "timed_out": rc is None}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def build_archive(runs_dir: Path | str, run_ids: list[str], out: Path | str, *, record_name: str,
                  configfile: Path | str, start: float, end: float) -> Path:
    """One .tar.gz of the finished runs' files (links followed: the run cache's files themselves), each
    run checked first (`integrity.check_run`), with MANIFEST.json naming each run's device."""
    from fmnist import integrity

    runs_dir, out = Path(runs_dir), Path(out)
    manifest = {"record": record_name, "config_sha256": _sha256_bytes(Path(configfile).read_bytes()),
                "host": socket.gethostname(), "commit": _commit(),
                "start": _iso(start), "end": _iso(end), "runs": {}}
    files: dict[str, bytes] = {}
    for rid in run_ids:
        m = integrity.check_run(runs_dir / rid, model=False)
        entry = {"device": m["device"], "device_class": device_class(m["device"]),
                 "device_name": m.get("device_name"), "files": {}}
        for name in RUN_FILES:
            data = (runs_dir / rid / name).read_bytes()
            files[f"runs/{rid}/{name}"] = data
            entry["files"][name] = _sha256_bytes(data)
        manifest["runs"][rid] = entry
    stamp = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"record-{record_name}-{socket.gethostname()}-{stamp}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=2).encode()), *sorted(files.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(end), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_archive(archive: Path | str) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {member name: bytes}) of an archive; only MANIFEST.json and runs/<run>/<run file> are
    allowed (no links, no absolute or parent paths)."""
    members: dict[str, bytes] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar.getmembers():
            parts = Path(info.name).parts
            if info.isdir():
                continue
            ok = info.isfile() and (info.name == MANIFEST or (
                len(parts) == 3 and parts[0] == "runs" and parts[2] in RUN_FILES and ".." not in parts))
            if not ok:
                raise ValueError(f"{archive}: unexpected member {info.name!r}; an archive holds only {MANIFEST} "
                                 "and runs/<run>/{metrics.json,history.csv,confusion.csv}")
            members[info.name] = tar.extractfile(info).read()
    if MANIFEST not in members:
        raise ValueError(f"{archive}: no {MANIFEST}; not an archive `record gpu` wrote")
    return json.loads(members[MANIFEST]), members


def import_archive(archive: Path | str, dest: Path | str) -> dict:
    """Add an archive's runs to the record `dest`, after checking all of them (module docstring); then
    the record's SHA256SUMS and tables are rebuilt as `record export` rebuilds them."""
    import tempfile

    from fmnist import integrity, record

    dest = Path(dest)
    manifest, members = read_archive(archive)
    cfg = fmnist_config.load(dest / "config.yaml")
    runs, _ = experiments.expand(cfg)
    devices = record_devices(dest)
    problems, incoming = [], {}
    for rid, entry in sorted(manifest["runs"].items()):
        problems += _run_problems(rid, entry, members, runs, dest, devices, incoming)
    extra = sorted({n.split("/")[1] for n in members if n != MANIFEST} - set(manifest["runs"]))
    problems += [f"{rid}: files in the archive but not in its {MANIFEST}" for rid in extra]
    if problems:
        raise ValueError(f"{archive}: nothing imported:\n  " + "\n  ".join(problems))
    with tempfile.TemporaryDirectory() as tmp:  # the integrity check reads the files as a run folder
        for rid in manifest["runs"]:
            (Path(tmp) / rid).mkdir()
            for name in RUN_FILES:
                (Path(tmp) / rid / name).write_bytes(members[f"runs/{rid}/{name}"])
            try:
                integrity.check_run(Path(tmp) / rid, model=False)
            except Exception as exc:  # noqa: BLE001 - DamagedFileError or ValueError: named, nothing imported
                problems.append(f"{rid}: {str(exc).splitlines()[0]}")
    if problems:
        raise ValueError(f"{archive}: nothing imported:\n  " + "\n  ".join(problems))
    for rid in manifest["runs"]:
        (dest / "runs" / rid).mkdir(parents=True)
        for name in RUN_FILES:
            (dest / "runs" / rid / name).write_bytes(members[f"runs/{rid}/{name}"])
    record.write_manifest(dest)
    record.rebuild(dest, dest)
    return {"imported": sorted(manifest["runs"]), "devices": sorted({e["device_class"] for e in manifest["runs"].values()}),
            "host": manifest.get("host"), "commit": manifest.get("commit")}


def _run_problems(rid: str, entry: dict, members: dict[str, bytes], runs: dict, dest: Path,
                  devices: dict[str, dict[str, set[str]]], incoming: dict[str, set[str]]) -> list[str]:
    """Why one run of an archive cannot join the record (empty when it can)."""
    out = []
    if rid not in runs:
        return [f"{rid}: not a run of {dest / 'config.yaml'} (an archive of another record?)"]
    if (dest / "runs" / rid).exists():
        return [f"{rid}: already in {dest / 'runs'}; a record's runs are added, never replaced"]
    for name in RUN_FILES:
        data = members.get(f"runs/{rid}/{name}")
        if data is None:
            out.append(f"{rid}/{name}: missing from the archive")
        elif _sha256_bytes(data) != entry["files"].get(name):
            out.append(f"{rid}/{name}: its SHA-256 is not the one in {MANIFEST} (damaged or edited)")
    if out:
        return out
    metrics = json.loads(members[f"runs/{rid}/metrics.json"])
    kind = device_class(metrics.get("device", ""))
    if kind != entry.get("device_class") or metrics.get("device") != entry.get("device"):
        out.append(f"{rid}: metrics.json says device {metrics.get('device')!r}, {MANIFEST} {entry.get('device')!r}")
    exp = experiments.experiment_id(runs[rid])
    others = {k: v for k, v in devices.get(exp, {}).items() if k != kind}
    others.update({k: v for k, v in incoming.items() if k.startswith(exp + "|") and k.split("|")[1] != kind})
    if others:
        named = ", ".join(f"{k.split('|')[-1]} ({', '.join(sorted(v))})" for k, v in sorted(others.items()))
        out.append(f"{rid}: experiment {exp} already has runs from another device class: {named}; "
                   f"no experiment mixes devices (train its other seeds on a {kind}, or all of it on one device)")
    incoming.setdefault(f"{exp}|{kind}", set()).add(rid)
    return out
