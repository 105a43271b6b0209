"""What the workflow's rules read, computed from its config: the policy of workflow/rules/, without Snakemake.

`workflow/rules/common.smk` hands `resolve` the config (validated in place; the runs come back) and
`jobs` what only Snakemake knows (whether jobs run locally, how many GPUs `--resources gpu=N` gives);
the rules then read the `Study` that `jobs` returns:
- the runs (`amp: auto` resolved for the jobs' device, shrunk in smoke mode) and the report's studies;
- the feature sets head-only runs share (fmnist.features) and the code identities (fmnist.codeid);
- GPU packing on local GPUs (fmnist.gpus): the `gpu_slots` resource the workflow registers, and the
  slots each job asks;
- each job's resources: `gpu`, `gpu_slots`, `runtime` and `mem_mb` (fmnist.plan's figures);
- the training packs of `pack_runs` (fmnist.packs), cut by GPU memory where one GPU's is known, and
  what the submitting Snakemake says about them.

Parsing stays light: this module imports only fmnist's light modules (standard library, PyYAML,
jsonschema), so the workflow parses in an environment holding Snakemake alone (tests/test_catalog.py).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from fmnist import (
    codeid,
    features,
    gpus,
    integrity,
    packs,
    plan,
    published,
    runcache,
    runfiles,
    smoke,
    usermodel,
)
from fmnist import config as fmnist_config
from fmnist import data as fmnist_data

RUN_DIR = "results/runs/{run}"
"""A run's folder, as the rules name it (wildcard `run`)."""

PACK_LINK_RUNTIME = 5
"""Minutes a pack-mode train job asks: it only links its staged result."""
PACK_LINK_MEM_MB = 1000

OVER_TIME = (
    "pack_max_minutes={limit}: {n} runs plan more minutes alone than the limit and each gets a pack of "
    "its own, asking for the limit: {runs}. Each resumes after its last finished epoch on every retry "
    "(profiles/slurm: retries); give them a partition with a longer limit to train in one job"
)

PACK_TABLE = Path(".snakemake/fmnist-packs.json")
"""The pack table (`Study.pack_table`): written by the submitting Snakemake, read by each job's parse,
in the working directory, which a cluster's nodes share."""
PACK_TABLE_VERSION = 1


class PackTableError(RuntimeError):
    """A job found no pack table, or one it cannot use; the message names the fix."""


COUNT_ONLY = (
    "pack_runs={n}: packs are cut by count only, not checked against GPU memory; add "
    "gpu_memory_mb=<MB of one GPU of the nodes> to --config so that no pack plans more memory than "
    "its GPU has (docs/cluster.md, packs)"
)


def workflow_file(path: str | None, repo: Path | str) -> str | None:
    """A relative path as given when it exists in the working directory, else the workflow's own copy
    in `repo` (its checkout), else as given.

    So config/published.yaml is the study's own file when it has one, and the shipped one otherwise
    (a consumer of this workflow as a module has no config/ of its own).
    """
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    own = Path(repo) / path
    return str(own) if own.exists() else path


def resolve(config: dict, repo: Path | str) -> tuple[dict[str, dict], dict[str, list[str]], str | None]:
    """Validate `config` in place (schema defaults filled in, smoke mode applied) and return the runs as
    the jobs get them, the report's studies and the published-figures file the rules read.

    The config keeps the published path as written (it is hashed into the report); the file returned
    is the one found (absolute in smoke mode, which changes the working directory). Raises
    fmnist.config.ConfigError, naming the problem and its fix.
    """
    smoke.normalise_switch(config)
    fmnist_config.validate(config)
    published_file = workflow_file(config["report"]["published"], repo)
    if config["smoke"]:  # every job for a few steps, in its own tree (fmnist.smoke)
        published_file = os.path.abspath(published_file) if published_file else published_file
        smoke.configure(config)
        usermodel.from_launch_directory(config)  # own models: found from here
    # `amp: auto` resolved for the device the jobs train on, into each run's config: it is part of the
    # run's identity, so a result never mixes numerics (docs/performance.md, "GPUs")
    runs, studies = gpus.expand_for_jobs(config)
    if config["smoke"]:
        runs = {rid: smoke.shrink_run(run) for rid, run in runs.items()}
    published.check_report_config({**config["report"], "published": published_file}, studies)
    return runs, studies, published_file


def gpu_packing(config: dict, gpu_target: str, local: bool, gpus_asked: Callable[[], int | None],
                inventory=None) -> gpus.Packing | None:
    """How local jobs share the GPUs, or None: one job per GPU by the `gpu` resource.

    The user counts GPUs (`--resources gpu=N`, read by `gpus_asked` only when needed). Run locally
    (`local`: not a cluster's executor), with CUDA jobs or `gpu_devices` listed and `gpu_per_run`
    unset, the workflow registers `gpu_slots` = N x slots per GPU and each GPU job asks the slots its
    planned memory needs (fmnist.gpus). No GPU found or listed (no nvidia-smi, or gpu=0): None.
    `inventory`: the GPUs found, for tests (default: nvidia-smi's).
    """
    if config["gpu_per_run"] is not None or not local:
        return None
    if gpu_target != "cuda" and not config["gpu_devices"]:
        return None
    packing = gpus.packing(config, gpus_asked(), inventory)
    return packing if packing.devices else None


def slot_registration(packing: gpus.Packing | None) -> tuple[int, dict[str, str]] | None:
    """What the workflow registers when it packs jobs onto local GPUs: the `gpu_slots` resource's total
    (unless the user gave one) and the environment the jobs find their GPU placement in; None unpacked."""
    if packing is None:
        return None
    return packing.total_slots, {gpus.PLACEMENT_ENV: gpus.placement_json(packing)}


def feature_sets(config: dict, runs: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Head-only transfer runs share one backbone pass per feature set (fmnist.features): each set's
    spec, and a run of each set (the plan's figures for its pass are keyed by it). Empty without
    `feature_cache`."""
    specs: dict[str, dict] = {}
    first: dict[str, dict] = {}
    if config["feature_cache"]:
        for run in runs.values():
            if features.cacheable(run):
                key = features.feature_key(run)
                specs.setdefault(key, features.feature_spec(run))
                first.setdefault(key, run)
    return specs, first


def alternatives(names: Iterable[str], none: str) -> str:
    """A wildcard constraint matching exactly `names` (dots escaped); `none`, a name no file has, when
    there are none (an empty constraint would match anything)."""
    return "|".join(name.replace(".", r"\.") for name in names) or none


@dataclass
class Study:
    """The jobs of a resolved config: what the rules read (see the module's docstring).

    `gpu_target`: what the jobs train on (fmnist.gpus.job_target); `packing`: local GPU packing
    (`gpu_packing`), None when off; `cost_cache`: the plan's measured figures (fmnist.plan.load_cache,
    never measured while parsing).
    """

    config: dict
    runs: dict[str, dict]
    gpu_target: str
    packing: gpus.Packing | None = None
    cost_cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.feature_sets, self.feature_run = feature_sets(self.config, self.runs)
        self.pack_need, self.pack_budget = self._pack_budget()
        self.pack_minutes = (
            {r: self.train_resources(r)["runtime"] for r in self.runs} if self.config["pack_runs"] > 1 else {}
        )
        self.packs: dict[str, list[str]] = (
            packs.packs(self.runs, self.config["pack_runs"], self.pack_need, self.pack_budget,
                        self.pack_minutes, self.config["pack_max_minutes"])
            if self.config["pack_runs"] > 1 else {}
        )
        self.run_pack = {run_id: pack for pack, run_ids in self.packs.items() for run_id in run_ids}
        self.pack_table_said: str | None = None  # a node's word on a table that differs from its own cut

    # ---- GPUs --------------------------------------------------------------------------------

    def gpu_per_run(self) -> int:
        """The gpu resource of a training job: config gpu_per_run, or 1 where the run trains on CUDA
        unpacked (SLURM, or no packing); 0 when packed (it asks gpu_slots instead)."""
        if self.config["gpu_per_run"] is not None:
            return self.config["gpu_per_run"]
        return int(self.gpu_target == "cuda" and self.packing is None)

    def job_gpus(self) -> int:
        """The gpu resource of a training or features job: 1 wherever training runs on a GPU, also when
        `plan_device` names the GPU of a cluster's nodes and the submitting machine has none."""
        cfg = self.config
        if cfg["plan_device"] and cfg["gpu_per_run"] is None and cfg["device"] != "cpu":
            return 1
        return self.gpu_per_run()

    def features_gpu_slots(self) -> int:
        """The gpu_slots of a features job (0 without packing)."""
        return 0 if self.packing is None else self.packing.job_slots(gpus.FEATURE_JOB_MB)

    def train_gpu_slots(self, run_id: str) -> int:
        """The slots of one GPU a training run's planned memory needs (0 without packing)."""
        if self.packing is None:
            return 0
        return self.packing.job_slots(plan.gpu_mem_mb(self.runs[run_id], self.config, self.cost_cache))

    # ---- job sizes (minutes, MB), growing with each attempt ------------------------------------

    def train_resources(self, run_id: str, attempt: int = 1) -> dict[str, int]:
        """A train job's runtime and mem_mb from the cost plan's figures."""
        return plan.resources(self.runs[run_id], self.config, attempt, self.cost_cache)

    def feature_resources(self, feature_set: str, attempt: int = 1) -> dict[str, int]:
        """A features job's runtime and mem_mb from the plan's figure for its backbone pass."""
        return plan.feature_resources(self.feature_run[feature_set], self.config, attempt, self.cost_cache)

    # ---- training packs (config pack_runs > 1; fmnist.packs, docs/cluster.md) ------------------

    def _pack_budget(self) -> tuple[dict[str, float] | None, float | None]:
        """(each run's need, one GPU's budget) for cutting packs, or (None, None): count only.

        A pack gets one GPU, so it is cut by the plan's GPU memory figures where one GPU's memory is
        known: in gpu_slots on local GPUs (packing on), in MB where config gpu_memory_mb gives a
        cluster node's GPU."""
        if self.config["pack_runs"] <= 1:
            return None, None
        if self.packing is not None:
            return {r: self.train_gpu_slots(r) for r in self.runs}, self.packing.slots
        if self.config["gpu_memory_mb"] and self.job_gpus():
            need = {r: plan.gpu_need_mb(run, self.config, self.cost_cache) for r, run in self.runs.items()}
            return need, self.config["gpu_memory_mb"]
        return None, None

    def pack_resources(self, pack: str, attempt: int = 1) -> dict[str, int]:
        """A train_pack job's runtime and mem_mb: the sums over its runs of what each would ask alone
        (side by side on one GPU they end no later than one after another; their host memory adds up).
        The runtime is at most config pack_max_minutes, the partition's limit: a pack cut to it that
        still runs out of time on a retry resumes each run after its last finished epoch."""
        sizes = [self.train_resources(r, attempt) for r in self.packs[pack]]
        got = {name: sum(s[name] for s in sizes) for name in ("runtime", "mem_mb")}
        if self.config["pack_max_minutes"]:
            got["runtime"] = min(got["runtime"], self.config["pack_max_minutes"])
        return got

    def pack_gpu_slots(self, pack: str) -> int:
        """Packed locally onto GPUs: the slots of a pack's runs together, at most one GPU's; else 0."""
        if self.packing is None:
            return 0
        return min(self.packing.slots, sum(self.pack_need[r] for r in self.packs[pack]))

    def pack_threads(self, pack: str) -> int:
        """A pack's CPUs: `threads` per run."""
        return self.config["threads"] * len(self.packs[pack])

    @staticmethod
    def pack_output(pack: str) -> str:
        """A pack's summary, its job's output."""
        return str(packs.PACK_DIR / f"{pack}.json")

    def pack_features(self, pack: str) -> list[str]:
        """The feature files of a pack's head-only runs."""
        return sorted({self.run_features_path(r) for r in self.packs[pack]} - {None})

    def pack_params(self, pack: str) -> dict[str, dict]:
        """A train_pack job's per-run params: each run's config, code identity and features file."""
        runs = self.packs[pack]
        return {
            "runs": {r: fmnist_config.canonical_json(self.runs[r]) for r in runs},
            "code": {r: self.train_code[r] for r in runs},
            "features": {r: self.run_features_path(r) for r in runs},
        }

    def messages(self, *, grouped: bool, configfiles: Iterable[str] = ()) -> list[str]:
        """What the submitting Snakemake says once: the runs whose jobs get the default resources and how
        to measure their figures (a grouped cluster run, or one that names plan_device), and packs cut by
        count only where their jobs take a GPU."""
        said = []
        if self.config["plan_device"] or grouped:
            configfile = " ".join(map(os.path.relpath, configfiles)) or "config/config.yaml"
            missing = plan.missing_figures_message(self.runs, self.config, self.cost_cache, configfile)
            if missing:
                said.append(missing)
        if self.packs and self.job_gpus() and self.pack_budget is None:
            said.append(COUNT_ONLY.format(n=self.config["pack_runs"]))
        longer = packs.over_time(self.pack_minutes, self.config["pack_max_minutes"]) if self.packs else []
        if longer:
            said.append(OVER_TIME.format(
                n=len(longer), limit=self.config["pack_max_minutes"],
                runs=", ".join(f"{r} ({self.pack_minutes[r]} min)" for r in longer)))
        return said

    # ---- the pack table: written once by the submitting Snakemake, read by the jobs ------------

    def pack_table(self) -> dict:
        """What the submitting Snakemake decided: each pack's runs, and the plan inputs that cut them
        (pack_runs, the GPU budget and each run's need, the time limit and each run's minutes, the plan
        label whose figures sized them)."""
        return {
            "version": PACK_TABLE_VERSION,
            "packs": self.packs,
            "inputs": {
                "pack_runs": self.config["pack_runs"],
                "pack_max_minutes": self.config["pack_max_minutes"],
                "gpu_memory_mb": self.config["gpu_memory_mb"],
                "budget": self.pack_budget,
                "need": self.pack_need,
                "minutes": self.pack_minutes,
                "plan_label": plan.plan_label(self.config),
            },
        }

    def adopt_pack_table(self, table: dict) -> str | None:
        """A job's parse: take the packs the submitting Snakemake wrote (`read_pack_table`) instead of its
        own cut, which may differ where this node sees another plan cache or host label. Returns what to
        say when they differ (None when they agree). Raises PackTableError when the table names runs
        this config does not have (a table of another config: the submitting Snakemake writes it again)."""
        theirs = {pack: list(run_ids) for pack, run_ids in table["packs"].items()}
        unknown = sorted({r for run_ids in theirs.values() for r in run_ids} - set(self.runs))
        if unknown:
            raise PackTableError(
                f"the pack table {PACK_TABLE} names runs this config does not have: "
                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}. It was written for another "
                "config: run snakemake again on the submitting machine, which writes it anew")
        said = None
        if theirs != self.packs:
            moved = sorted(r for r in self.runs if self.run_pack.get(r) != _pack_of(theirs).get(r))
            mine = table.get("inputs", {})
            said = (f"fmnist: this node would cut {len(self.packs)} packs where the submitting machine cut "
                    f"{len(theirs)} ({len(moved)} runs in another pack, e.g. {', '.join(moved[:3])}); "
                    f"training the submitter's packs from {PACK_TABLE} (its plan label "
                    f"{mine.get('plan_label')!r}, this node's {plan.plan_label(self.config)!r})")
        self.packs = theirs
        self.run_pack = _pack_of(theirs)
        self.pack_table_said = said
        return said

    # ---- runs: features, config, code identity -------------------------------------------------

    def run_features_path(self, run_id: str) -> str | None:
        """The cached features file a run trains its head on, or None."""
        return features.run_features_file(self.runs[run_id], self.config["feature_cache"])

    def run_json(self, run_id: str) -> str:
        """A run's resolved config, the train job's `run` param."""
        return fmnist_config.canonical_json(self.runs[run_id])

    @cached_property
    def train_code(self) -> dict[str, str]:
        """The code identity of each run: its model family's module and class, the trainer and every
        fmnist module they import (fmnist.codeid). Editing one family's file reruns its runs only."""
        return codeid.train_code_ids(self.runs)

    def features_code(self, feature_set: str) -> str:
        """A features job's identity: the feature code and the backbone's family module."""
        return codeid.features_code_id(self.feature_sets[feature_set])

    def run_dirs(self) -> list[str]:
        return [RUN_DIR.format(run=r) for r in self.runs]


def _pack_of(pack_runs: dict[str, list[str]]) -> dict[str, str]:
    return {run_id: pack for pack, run_ids in pack_runs.items() for run_id in run_ids}


def write_pack_table(study: Study, path: Path | str = PACK_TABLE) -> Path:
    """The submitting Snakemake's packs, for its jobs to read (atomically replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(study.pack_table(), indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_pack_table(path: Path | str = PACK_TABLE) -> dict:
    """The pack table a job reads; PackTableError, naming the fix, when it is missing or damaged."""
    path = Path(path)
    fix = ("the submitting snakemake writes it when it starts a real run (not -n) with pack_runs > 1, "
           "in its working directory, which the job's node must share: run snakemake again there, from "
           "the same directory")
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise PackTableError(f"this job found no pack table {path.resolve()}: {fix}") from None
    except (OSError, ValueError) as exc:
        raise PackTableError(f"the pack table {path.resolve()} cannot be read ({exc}): {fix}") from None
    if (not isinstance(table, dict) or table.get("version") != PACK_TABLE_VERSION
            or not isinstance(table.get("packs"), dict)
            or not all(isinstance(v, list) for v in table["packs"].values())):
        raise PackTableError(f"the pack table {path.resolve()} is not one this version writes: {fix}")
    return table


def repair(study: Study, prepared: Path | str, run_cache: Path, log: Callable[[str], None]) -> None:
    """A real run's repairs while parsing (they must be settled before the DAG is built, an onstart is
    too late for that): a damaged prepared file is moved aside (never deleted), so `prepare` recomputes
    it; a moved or copied project's links are pointed at `run_cache`; runs whose outputs link to removed
    run-cache entries lose those links, so they are restored from the cache or retrained."""
    fmnist_data.check_prepared(prepared, log=log)
    runcache.relink(study.run_dirs(), runfiles.RUN_OUTPUTS, run_cache)
    integrity.unlink_lost_outputs(study.run_dirs(), log=log)


def jobs(config: dict, runs: dict[str, dict], *, local: bool, gpus_asked: Callable[[], int | None],
         cost_cache: dict | None = None) -> Study:
    """The `Study` of a config and its runs (`resolve`'s). `local`, `gpus_asked`: see `gpu_packing`;
    `cost_cache`: the plan's figures (default: read once from fmnist.plan's cache file)."""
    target = gpus.job_target(config)
    packing = gpu_packing(config, target, local, gpus_asked)
    cache = plan.load_cache() if cost_cache is None else cost_cache
    return Study(config, runs, target, packing, cache)


def pack_idle_share(config: dict, repo: Path | str, *, pack_runs: int, gpu_memory_mb: int,
                    cost_cache: dict, pack_max_minutes: int | None = None) -> dict:
    """Static packs in a simulation from the plan: the share of their run slots left idle while each
    pack's slowest run finishes (fmnist.packs.idle_share), for `config`'s runs cut as a cluster run of
    `pack_runs` on GPUs of `gpu_memory_mb` would cut them, each run taking the plan's estimated seconds
    (the figures of `cost_cache` on the config's plan label: plan_device's GPU, else this machine).

    Returns packs, runs, the idle share over the measured packs, and the runs without a figure (their
    packs are left out, not guessed)."""
    config = {**copy.deepcopy(config), "pack_runs": pack_runs, "gpu_memory_mb": gpu_memory_mb,
              "pack_max_minutes": pack_max_minutes}
    runs, _, _ = resolve(config, repo)
    study = Study(config, runs, "cuda", None, cost_cache)  # a cluster's GPU jobs: cut by gpu_memory_mb
    label, fast = plan.plan_label(config), config.get("feature_cache", True)
    seconds: dict[str, float] = {}
    for run_id, run in runs.items():
        figure = plan.find_figure(cost_cache, run, label, plan.fast_paths_enabled())
        sizes = plan.split_sizes(config["data"], run["train"]["train_fraction"])
        got = plan.run_cost(run, sizes, figure, fast=plan.fast_paths_enabled() and fast)["seconds"]
        if got is not None:
            seconds[run_id] = got
    measured = {p: r for p, r in study.packs.items() if all(x in seconds for x in r)}
    return {
        "label": label,
        "packs": len(study.packs),
        "runs": len(runs),
        "measured_packs": len(measured),
        "unmeasured_runs": sorted(set(runs) - set(seconds)),
        "idle_share": packs.idle_share(measured, seconds),
        "pack_sizes": sorted({len(r) for r in study.packs.values()}),
    }


def _main(argv=None) -> int:
    import argparse

    import yaml

    parser = argparse.ArgumentParser(
        prog="python -m fmnist.workflow",
        description="static training packs, simulated from the plan: the share of their run slots idle "
                    "while each pack waits for its slowest run (docs/cluster.md, packs)")
    parser.add_argument("--configfile", default="config/full.yaml")
    parser.add_argument("--pack-runs", type=int, default=4)
    parser.add_argument("--gpu-memory-mb", type=int, required=True, help="one node GPU's memory")
    parser.add_argument("--pack-max-minutes", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="the figures' threads (default: the config's)")
    parser.add_argument("--plan-device", default=None,
                        help="the GPU model whose figures time the runs (h200, ...; default: the config's)")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[2]
    config = yaml.safe_load(Path(args.configfile).read_text()) or {}
    if args.threads:
        config["threads"] = args.threads
    if args.plan_device:
        config["plan_device"] = args.plan_device
    got = pack_idle_share(config, repo, pack_runs=args.pack_runs, gpu_memory_mb=args.gpu_memory_mb,
                          cost_cache=plan.load_cache(), pack_max_minutes=args.pack_max_minutes)
    print(f"{args.configfile}: {got['runs']} runs in {got['packs']} packs (pack_runs={args.pack_runs}, "
          f"gpu_memory_mb={args.gpu_memory_mb}, sizes {got['pack_sizes']}), figures of {got['label']}")
    if got["measured_packs"]:
        print(f"idle share of the packs' run slots: {got['idle_share']:.1%} "
              f"(over {got['measured_packs']} packs whose runs all have a figure)")
    else:
        print("idle share: unknown, no pack has a figure for each of its runs")
    if got["unmeasured_runs"]:
        print(f"{len(got['unmeasured_runs'])} runs have no figure on {got['label']}: `python -m fmnist plan "
              f"--configfile {args.configfile}` measures them (on a node with that GPU for --plan-device)")
        return 1 if not got["measured_packs"] else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
