"""The run cache without surprises: forced runs retrain, and results link to their entries relatively.

Snakemake's between-workflow cache (`cache: True` on the train rule, `--cache` in the profiles)
restores a job's outputs whenever an entry for its provenance exists, even for a job the user
forced: `snakemake --forcerun train` would link every run back in instead of training it. And it
links each output to its entry by absolute path, so moving or copying the project leaves links into
the old place. This module, imported while the workflow parses (standard library only; Snakemake's
own classes inside functions), does two things:

- forced runs (`--forceall`, `--forcerun train`, `--forcerun`/`--force` naming a run's file) miss the
  cache: they train, and their new result replaces the entry. The main snakemake reads what is
  forced from its DAG settings and hands it to the jobs' own snakemake processes (a SLURM job
  re-parses the workflow with `--force`, so it cannot tell by itself) in $FMNIST_RETRAIN.
- `relink` turns the links into relative ones when the entry lies inside the project (so moving or
  copying the project keeps them), re-pointing links whose entry moved with the project. An entry
  outside the project (a shared $SNAKEMAKE_OUTPUT_CACHE) keeps its absolute link.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from fmnist.packs import PACK_DIR

RETRAIN_ENV = "FMNIST_RETRAIN"
ALL = "*"
"""$FMNIST_RETRAIN: "" (none), "*" (every run) or run ids separated by spaces."""


PACK_RULE = "train_pack"


def forced_runs(
    forceall: bool,
    forcerun: Iterable[str],
    forcetargets: bool,
    targets: Iterable[str],
    rule: str = "train",
    run_dir: str = "results/runs/{run}",
    packs: dict[str, list[str]] | None = None,
) -> str:
    """The runs a Snakemake command line forces `rule` to compute, as $FMNIST_RETRAIN holds them.

    `--forceall` and `--forcerun <rule>` force every run; `--forcerun <file>` and `--force <target>`
    force the run whose directory holds the file. Another rule forced (`--forcerun report`)
    retrains nothing: its jobs read the results, they do not make them. In pack mode (`packs`: pack
    -> its runs) `--forcerun train_pack` forces every run and a pack's summary file (`--forcerun
    results/packs/p003.json`) the runs of that pack.
    """
    forcerun = set(forcerun)
    if forceall or rule in forcerun or (packs and PACK_RULE in forcerun):
        return ALL
    files = forcerun | (set(targets) if forcetargets else set())
    pattern = re.compile(re.escape(run_dir).replace(re.escape("{run}"), r"([^/]+)") + r"(?:/|$)")
    runs = set()
    for f in files:
        path = os.path.relpath(f) if os.path.isabs(f) else os.path.normpath(f)
        m = pattern.match(path)
        if m:
            runs.add(m.group(1))
        summary = Path(path)  # a pack's summary, results/packs/<pack>.json
        if packs and summary.parent == PACK_DIR and summary.suffix == ".json" and summary.stem in packs:
            runs.update(packs[summary.stem])
    return " ".join(sorted(runs))


def retrain_set(workflow, run_dir: str = "results/runs/{run}", packs: dict[str, list[str]] | None = None) -> str:
    """The forced runs ($FMNIST_RETRAIN's form): from the command line in the main snakemake, from
    the environment (the main one exported it) in a job's own snakemake.

    Snakemake knows its DAG settings (what is forced) only once it builds the DAG, after parsing,
    so this is asked when a job's cache is looked up, never while parsing.
    """
    if not workflow.is_main_process:
        return os.environ.get(RETRAIN_ENV, "")
    dag = workflow.dag_settings
    if dag is None:
        return ""
    return forced_runs(dag.forceall, dag.forcerun, dag.forcetargets, dag.targets, run_dir=run_dir, packs=packs)


def is_forced(run: str, retrain: str) -> bool:
    return retrain == ALL or run in retrain.split()


def retrain_when_forced(rule, run_dir: str = "results/runs/{run}") -> None:
    """Make `rule`'s cache miss for forced runs, so they train and store their new result.

    Replaces the rule's Snakemake RuleCache with a subclass whose lookups (`fetch`, and `exists`,
    which a dry run reports) answer "not cached" for a forced run; storing is unchanged, so the new
    result replaces the entry. Its `check`, which Snakemake calls as it sets up the cache for a run
    (DAG settings known, no job submitted yet), exports the forced runs for the jobs' snakemake
    processes (a SLURM job inherits the environment).
    """
    from snakemake.caching.rule import RuleCache
    from snakemake.exceptions import CacheMissException

    if rule.cache is None:
        return
    workflow = rule.workflow

    class RetrainWhenForced(RuleCache):
        def check(self):
            super().check()
            if workflow.is_main_process and workflow.dag_settings is not None:
                os.environ[RETRAIN_ENV] = retrain_set(workflow, run_dir)

        def forced(self, job) -> bool:
            return is_forced(job.wildcards.run, retrain_set(workflow, run_dir))

        async def exists(self, job):
            return False if self.forced(job) else await super().exists(job)

        async def fetch(self, job):
            if self.forced(job):
                raise CacheMissException(f"Job {job} was forced: it trains, its result replaces the entry.")
            return await super().fetch(job)

    rule.cache = RetrainWhenForced(rule.cache.rule, rule.cache.flag)


def relink(
    run_dirs: Iterable[Path | str],
    names: Iterable[str],
    cache_dir: Path | str,
    project: Path | str = ".",
) -> list[Path]:
    """Point each output link of the runs at its cache entry by a relative path where that survives a move.

    A link whose entry exists under `cache_dir` (the cache in effect) is pointed there, even when it
    pointed elsewhere (the project was moved or copied: its links still name the old place). The
    link is relative when the entry lies inside `project`, absolute otherwise (a shared cache
    elsewhere stays reachable from a moved project). A link whose entry is found nowhere is left
    alone (fmnist.integrity.unlink_lost_outputs deals with it). The link's own timestamps are kept,
    so Snakemake sees no newer output. Returns the links changed.
    """
    cache_dir = Path(cache_dir).resolve()
    project = Path(project).resolve()
    names = list(names)
    changed = []
    for run_dir in map(Path, run_dirs):
        for name in names:
            link = run_dir / name
            if not link.is_symlink():
                continue
            target = os.readlink(link)
            here = link.parent.resolve()
            entry = Path(target) if os.path.isabs(target) else here / target
            in_cache = cache_dir / entry.name
            if in_cache.exists():
                entry = in_cache
            elif not entry.exists():
                continue
            entry = entry.resolve()
            wanted = os.path.relpath(entry, here) if entry.is_relative_to(project) else str(entry)
            if wanted != target:
                replace_link(link, wanted)
                changed.append(link)
    return changed


def replace_link(link: Path, target: str) -> None:
    """Atomically re-point `link` at `target`, keeping the link's own access and modification times."""
    st = os.lstat(link)
    tmp = link.with_name(f".{link.name}.relink")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    os.replace(tmp, link)
