"""A study's record in git: the finished runs' metrics and histories, the tables aggregated from them,
and a check that the tables can be rebuilt from the runs (docs/record/<name>/).

Layout of a record directory:
    config.yaml        the study's config as it ran (config/record_cpu.yaml)
    published.yaml     the published figures it was judged against, as they were
    runs/<run>/        metrics.json, history.csv and confusion.csv of every finished run (no weights)
    runs.csv, experiments.csv, tables/*.csv|md   aggregated by fmnist.aggregate from runs/
    headline.md        a status line (runs finished, hours of training) and the published-vs-reproduced
                       table of the figures the record covers: what the READMEs show between their
                       <!-- record:<name>:start/end --> markers
    summary.html       the workflow's report, when the study has been run to the end
    SHA256SUMS         the SHA-256 of every file under runs/ and under an archive's runs/ (such as
                       b_valloss/runs/), in `sha256sum` format (`sha256sum -c SHA256SUMS` checks it too)

`export` copies what a workflow directory has finished and aggregates; `rebuild` aggregates a record's
runs again into another directory; `check` compares the two, so the record cannot drift from its runs,
and checks every run file against SHA256SUMS (and against the hashes its metrics.json recorded, where
it has them), so no run file can be edited after export unnoticed: the tables are rebuilt from
metrics.json only, and history.csv and confusion.csv would otherwise go unchecked.
Exporting again after more runs finished adds them: a long record is committed as it grows.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from fmnist import aggregate, compare, experiments
from fmnist import config as fmnist_config
from fmnist.files import sha256_file
from fmnist.record_gpu import RUN_FILES
from fmnist.record_readme import (
    findings_markdown,
    headline_markdown,
    provenance_markdown,
    status_line,
)
from fmnist.runfiles import METRICS_FILE

MANIFEST = "SHA256SUMS"
EDITED = f"its SHA-256 is not the one in {MANIFEST} (edited after export)"


def finished_runs(results_dir: Path, run_ids: list[str]) -> list[str]:
    """The runs of the study whose metrics.json passes the integrity check (a finished run)."""
    from fmnist import integrity

    done = [rid for rid in run_ids if (results_dir / "runs" / rid / METRICS_FILE).exists()]
    integrity.check_metrics(results_dir / "runs" / rid / METRICS_FILE for rid in done)
    return done


def export(configfile: Path | str, results_dir: Path | str, dest: Path | str,
           published: Path | str | None = None, report: Path | str | None = None) -> dict:
    """Copy the finished runs of `configfile`'s study from `results_dir` into `dest` and aggregate them."""
    configfile, results_dir, dest = Path(configfile), Path(results_dir), Path(dest)
    cfg = fmnist_config.load(configfile)
    runs, _ = experiments.expand(cfg)
    done = finished_runs(results_dir, list(runs))
    dest.mkdir(parents=True, exist_ok=True)
    # Never bless an edit: a run file not exported now must still be what was exported (a file moved
    # or added by hand, such as an archive's, is listed anew).
    edited = [p for p in manifest_problems(dest, skip={f"runs/{rid}/{n}" for rid in done for n in RUN_FILES})
              if p.endswith(EDITED)]
    if edited:
        raise ValueError(f"{dest}: " + "; ".join(edited) + f"; restore it (e.g. git checkout -- {dest}), "
                         "then export again")
    shutil.copyfile(configfile, dest / "config.yaml")
    published = Path(published or cfg["report"]["published"] or "config/published.yaml")
    shutil.copyfile(published, dest / "published.yaml")
    for rid in done:
        (dest / "runs" / rid).mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            # copyfile follows the run cache's links: the record holds the files themselves.
            shutil.copyfile(results_dir / "runs" / rid / name, dest / "runs" / rid / name)
    if report is not None and Path(report).exists() and len(done) == len(runs):
        shutil.copyfile(report, dest / "summary.html")
    write_manifest(dest)
    tables = rebuild(dest, dest)
    return {"runs": len(runs), "finished": len(done), "tables": tables}


def rebuild(record: Path | str, out: Path | str) -> dict[str, pd.DataFrame]:
    """Aggregate a record's runs/ with the project's own code into `out` (runs.csv, experiments.csv,
    tables/, headline.md)."""
    record, out = Path(record), Path(out)
    cfg = fmnist_config.load(record / "config.yaml")
    runs, studies = experiments.expand(cfg)
    published = compare.load_published(record / "published.yaml")
    metric_paths = sorted((record / "runs").glob("*/metrics.json"))
    out.mkdir(parents=True, exist_ok=True)
    tables = aggregate.write_all(metric_paths, studies, out / "runs.csv", out / "experiments.csv",
                                 out / "tables", published=published,
                                 sweeps=cfg["report"]["sweeps"],
                                 baseline=cfg["report"]["baseline_augmentation"],
                                 claims=compare.load_effects(record / "published.yaml"))
    covered = {experiments.experiment_id(run) for run in runs.values()}
    train_seconds = tables["runs"]["train_seconds"].sum() if len(tables["runs"]) else 0.0
    status = status_line(len(metric_paths), len(runs), float(train_seconds))
    (out / "headline.md").write_text(status + "\n\n" + headline_markdown(tables["published"], covered) + "\n")
    (out / "findings.md").write_text(findings_markdown(tables["findings"]) + "\n")
    (out / "provenance.md").write_text(provenance_markdown(metric_paths) + "\n")
    return tables


GENERATED = ("runs.csv", "experiments.csv", "headline.md", "findings.md", "provenance.md")
"""The files `rebuild` writes beside tables/, each checked by `check`."""


def run_files(record: Path | str) -> list[str]:
    """Every file under the record's runs/ and under an archive's runs/ (e.g. b_valloss/runs/), relative."""
    record = Path(record)
    return sorted(p.relative_to(record).as_posix() for p in record.rglob("*")
                  if p.is_file() and "runs" in p.relative_to(record).parts[:-1])


def read_manifest(record: Path | str) -> dict[str, str]:
    """Relative path -> SHA-256 from the record's SHA256SUMS (empty when it has none)."""
    path = Path(record) / MANIFEST
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if line.strip():
            out[name] = digest
    return out


def write_manifest(record: Path | str) -> None:
    """SHA256SUMS of every run file of the record, in `sha256sum` format."""
    record = Path(record)
    lines = [f"{sha256_file(record / rel)}  {rel}\n" for rel in run_files(record)]
    (record / MANIFEST).write_text("".join(lines))


def manifest_problems(record: Path | str, skip: set[str] = frozenset()) -> list[str]:
    """Run files that differ from SHA256SUMS, are missing or are not listed (`skip`: paths not checked)."""
    record = Path(record)
    listed = read_manifest(record)
    present = set(run_files(record))
    problems = []
    for rel in sorted((set(listed) | present) - set(skip)):
        if rel not in present:
            problems.append(f"{rel}: listed in {MANIFEST} but missing")
        elif rel not in listed:
            problems.append(f"{rel}: not in {MANIFEST}")
        elif sha256_file(record / rel) != listed[rel]:
            problems.append(f"{rel}: {EDITED}")
    return problems


def recorded_hash_problems(record: Path | str) -> list[str]:
    """Run files whose SHA-256 is not the one their run's metrics.json recorded when the run wrote them."""
    record = Path(record)
    problems = []
    for metrics in sorted(record.glob("**/runs/*/metrics.json")):
        files = json.loads(metrics.read_text()).get("files") or {}
        for name, digest in sorted(files.items()):
            path = metrics.parent / name
            if path.exists() and sha256_file(path) != digest:
                rel = path.relative_to(record).as_posix()
                problems.append(f"{rel}: its SHA-256 is not the one its metrics.json recorded")
    return problems


def check(record: Path | str) -> list[str]:
    """Rebuild a record's tables from its runs; return the files that differ from the committed ones,
    and the run files that differ from SHA256SUMS or from the hashes their metrics.json recorded."""
    record = Path(record)
    problems = [f"{MANIFEST}: missing (python -m fmnist record export writes it)"] if not (
        record / MANIFEST).exists() else []
    problems += manifest_problems(record) if not problems else []
    problems += recorded_hash_problems(record)
    return problems + _table_problems(record)


def _table_problems(record: Path) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rebuild(record, out)
        rebuilt = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        committed = {p.relative_to(record) for p in (record / "tables").rglob("*") if p.is_file()}
        committed |= {Path(n) for n in GENERATED if (record / n).exists()}
        differ = []
        for rel in sorted(set(rebuilt) | committed):
            a, b = out / rel, record / rel
            if not a.exists() or not b.exists():
                differ.append(f"{rel}: {'missing from the record' if a.exists() else 'not rebuilt'}")
            elif not _same(a, b):
                differ.append(f"{rel}: differs from what its runs give")
        return differ


def _same(a: Path, b: Path) -> bool:
    if a.suffix == ".csv" and a.stat().st_size > 1 and b.stat().st_size > 1:
        try:
            pd.testing.assert_frame_equal(pd.read_csv(a), pd.read_csv(b), check_exact=False, rtol=1e-9)
            return True
        except AssertionError:
            return False
    return a.read_bytes() == b.read_bytes()


