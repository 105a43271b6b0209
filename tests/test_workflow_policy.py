"""The workflow's policy (fmnist.workflow), without Snakemake: runs, GPU packing, job sizes, packs and
their messages, feature sets, code identities, parse-time repairs, the cache-message filter.

The dry runs of tests/test_packs.py, test_plan_device.py and test_workflow.py check that the rules
read these; here each decision is checked with its numbers.
"""

from __future__ import annotations

import copy
import json
import logging
import os

import pytest
from conftest import REPO, tiny_config

from fmnist import cachelog, codeid, gpus, packs, plan
from fmnist import config as fmnist_config
from fmnist import workflow as wf
from fmnist.config import ConfigError

SEEDS3 = {"tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0, 1, 2]}}
RUN_IDS = [f"standard_cnn.none.default.s{i}" for i in range(3)]
HEAD_MODELS = {"resnet18_head": {"arch": "resnet18", "args": {"trainable": "head"}}}
# no figure measured: every job gets the plan's defaults (fmnist.plan)
NEED_MB = plan.GPU_JOB_DEFAULT_MB + gpus.CUDA_CONTEXT_MB  # a run's share of a GPU with its CUDA context


def study(*, local=True, gpus_asked=None, inventory=(), cost_cache=None, **overrides) -> wf.Study:
    """The Study the workflow builds for tiny_config(**overrides); `inventory`: the GPUs found."""
    cfg = tiny_config(**{"studies": SEEDS3, **overrides})
    runs, _, _ = wf.resolve(cfg, REPO)
    target = gpus.job_target(cfg)
    packing = wf.gpu_packing(cfg, target, local, lambda: gpus_asked, inventory=list(inventory))
    return wf.Study(cfg, runs, target, packing, {} if cost_cache is None else cost_cache)


# ---- the config: validated, runs resolved -------------------------------------------------------

def test_resolve_validates_the_config_and_resolves_the_runs():
    cfg = tiny_config(studies=SEEDS3)
    runs, studies, published = wf.resolve(cfg, REPO)
    assert sorted(runs) == RUN_IDS and studies == {"tiny": RUN_IDS}
    assert cfg["pack_runs"] == 1 and cfg["smoke"] is False  # schema defaults filled in, in place
    assert all(r["train"]["amp"] != "auto" for r in runs.values())  # resolved for the jobs' device
    assert published and os.path.isfile(published)
    with pytest.raises(ConfigError, match="unknown key 'pack_run'"):
        wf.resolve(tiny_config(pack_run=3), REPO)
    with pytest.raises(ConfigError, match="smoke=true"):
        wf.resolve(tiny_config(smoke="maybe"), REPO)


def test_smoke_mode_shrinks_the_runs_to_one_seed_of_a_few_steps():
    cfg = tiny_config(studies=SEEDS3, smoke="true")
    runs, studies, published = wf.resolve(cfg, REPO)
    assert list(runs) == [RUN_IDS[0]] and cfg["smoke"] is True
    assert runs[RUN_IDS[0]]["train"]["epochs"] == 2 and runs[RUN_IDS[0]]["train"]["batch_size"] == 4
    assert os.path.isabs(published)  # smoke mode changes the working directory


def test_a_workflow_file_is_the_studys_own_else_the_workflows(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    (repo / "config" / "published.yaml").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert wf.workflow_file("config/published.yaml", repo) == str(repo / "config" / "published.yaml")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "published.yaml").write_text("{}")
    assert wf.workflow_file("config/published.yaml", repo) == "config/published.yaml"
    assert wf.workflow_file("nowhere.yaml", repo) == "nowhere.yaml"
    assert wf.workflow_file(None, repo) is None


# ---- GPUs: packing, slot registration, the gpu resource -----------------------------------------

def test_local_cuda_jobs_are_packed_onto_the_gpus_found_and_asked_for():
    two = [("0", 80_000), ("1", 40_000)]
    s = study(device="cuda", inventory=two, gpus_asked=None)
    assert s.packing == gpus.Packing(("0", "1"), 40_000, gpus.DEFAULT_SLOTS)  # the smallest GPU's memory
    assert study(device="cuda", inventory=two, gpus_asked=1).packing.devices == ("0",)
    total, env = wf.slot_registration(s.packing)
    assert total == 2 * gpus.DEFAULT_SLOTS
    assert json.loads(env[gpus.PLACEMENT_ENV])["devices"] == ["0", "1"]
    assert (s.gpu_per_run(), s.job_gpus()) == (0, 0)  # packed jobs ask gpu_slots, not gpu


@pytest.mark.parametrize("overrides, local, inventory, why", [
    ({"device": "cuda", "gpu_per_run": 1}, True, [("0", 80_000)], "gpu_per_run turns packing off"),
    ({"device": "cuda"}, False, [("0", 80_000)], "a cluster's executor places the jobs"),
    ({"device": "cpu"}, True, [("0", 80_000)], "CPU jobs take no GPU"),
    ({"device": "cuda"}, True, [], "no GPU found"),
])
def test_no_packing(overrides, local, inventory, why):
    s = study(local=local, inventory=inventory, **overrides)
    assert s.packing is None, why
    assert wf.slot_registration(s.packing) is None
    assert s.train_gpu_slots(RUN_IDS[0]) == 0 and s.features_gpu_slots() == 0


def test_the_gpu_resource_of_a_job():
    assert (study(device="cpu").gpu_per_run(), study(device="cpu").job_gpus()) == (0, 0)
    assert study(device="cuda", local=False).job_gpus() == 1  # one GPU per job on a cluster
    assert study(device="cuda", inventory=[]).job_gpus() == 1  # no GPU listed: one job per GPU
    assert study(device="cuda", gpu_per_run=2).job_gpus() == 2
    # a login node without a GPU, sizing for the nodes' GPU: the jobs still ask one
    login = study(device="auto", plan_device="h200", local=False)
    assert login.job_gpus() == 1
    assert study(device="cpu", plan_device="h200").job_gpus() == 0


def test_slots_are_what_a_jobs_planned_memory_needs_of_one_gpu():
    # 30 GB in 3 slots: 10 GB each; an unmeasured run plans 4 GB + its CUDA context: 1 slot
    s = study(device="cuda", inventory=[("0", 30_000)], gpu_slots=3)
    assert s.train_gpu_slots(RUN_IDS[0]) == 1 and s.features_gpu_slots() == 1
    # 9 GB in 3 slots: 3 GB each, so 4.6 GB takes 2
    s = study(device="cuda", inventory=[("0", 9_000)], gpu_slots=3)
    assert s.train_gpu_slots(RUN_IDS[0]) == 2 and s.features_gpu_slots() == 2


# ---- job sizes ----------------------------------------------------------------------------------

FIGURE = {"train_images_per_s": 10.0, "params": 2**20, "activation_bytes_per_image": 2**16}


def test_unmeasured_jobs_ask_the_defaults_growing_with_each_attempt():
    s = study(device="cpu")
    default = {"runtime": plan.DEFAULT_RUNTIME_MINUTES, "mem_mb": plan.DEFAULT_MEM_MB}
    assert s.train_resources(RUN_IDS[0]) == default
    assert s.train_resources(RUN_IDS[0], attempt=3) == {k: 3 * v for k, v in default.items()}


def test_a_measured_run_is_sized_from_its_figure():
    s = study(device="cpu")
    run = s.runs[RUN_IDS[0]]
    label = plan.plan_label(s.config)
    measured = study(device="cpu", cost_cache={plan.throughput_key(run, label, True): FIGURE})
    size = measured.train_resources(RUN_IDS[0])
    # 2000 training images (tiny_config's slice) x 2 epochs at 10 images/s, and the evaluation passes
    assert size["runtime"] > 2 * 2000 / 10.0 * plan.SAFETY / 60 + plan.OVERHEAD_MINUTES
    assert plan.BASE_MEM_MB < size["mem_mb"] < plan.DEFAULT_MEM_MB
    assert measured.train_resources(RUN_IDS[0], attempt=2)["mem_mb"] == 2 * size["mem_mb"]


def test_a_pack_asks_the_sum_of_its_runs_and_the_slots_of_one_gpu_at_most():
    s = study(device="cpu", pack_runs=3, threads=2)
    assert s.packs == {"p000": RUN_IDS}
    assert s.pack_resources("p000") == {"runtime": 3 * plan.DEFAULT_RUNTIME_MINUTES,
                                        "mem_mb": 3 * plan.DEFAULT_MEM_MB}
    assert s.pack_resources("p000", attempt=2)["runtime"] == 6 * plan.DEFAULT_RUNTIME_MINUTES
    assert s.pack_threads("p000") == 6 and s.pack_gpu_slots("p000") == 0
    # 3 slots per GPU of 30 GB: a run takes 1, a pack of 2 runs takes 2
    packed = study(device="cuda", inventory=[("0", 30_000), ("1", 30_000)], gpu_slots=3, pack_runs=2)
    assert packed.packs == {"p000": RUN_IDS[:2], "p001": RUN_IDS[2:]}
    assert (packed.pack_gpu_slots("p000"), packed.pack_gpu_slots("p001")) == (2, 1)


def test_a_features_job_is_sized_from_its_pass():
    s = study(device="cpu", feature_cache=True, models=HEAD_MODELS,
              studies={"t": {"models": ["resnet18_head"], "augmentations": ["none"], "seeds": [0, 1]}})
    [key] = s.feature_sets
    assert s.feature_resources(key) == {"runtime": plan.DEFAULT_RUNTIME_MINUTES, "mem_mb": plan.DEFAULT_MEM_MB}


# ---- packs: cutting and what is said about them --------------------------------------------------

def test_packs_are_cut_by_count_without_a_known_gpu():
    s = study(device="cuda", local=False, pack_runs=2)
    assert s.packs == {"p000": RUN_IDS[:2], "p001": RUN_IDS[2:]}
    assert (s.pack_need, s.pack_budget) == (None, None)
    assert s.run_pack == {RUN_IDS[0]: "p000", RUN_IDS[1]: "p000", RUN_IDS[2]: "p001"}
    assert study(device="cpu", pack_runs=1).packs == {}


def test_packs_are_cut_by_the_nodes_gpu_memory_at_the_exact_budget():
    """gpu_memory_mb (one node GPU's): each unmeasured run plans NEED_MB with its CUDA context."""
    def cut(gpu_memory_mb):
        return study(device="auto", plan_device="h200", local=False, pack_runs=3,
                     gpu_memory_mb=gpu_memory_mb).packs

    assert cut(3 * NEED_MB) == {"p000": RUN_IDS}
    assert cut(3 * NEED_MB - 1) == {"p000": RUN_IDS[:2], "p001": RUN_IDS[2:]}
    assert cut(2 * NEED_MB - 1) == {"p000": RUN_IDS[:1], "p001": RUN_IDS[1:2], "p002": RUN_IDS[2:]}
    assert cut(1) == {"p000": RUN_IDS[:1], "p001": RUN_IDS[1:2], "p002": RUN_IDS[2:]}  # too big: alone
    # CPU jobs take no GPU: gpu_memory_mb does not cut them
    assert study(device="cpu", pack_runs=3, gpu_memory_mb=1).packs == {"p000": RUN_IDS}


def test_packs_on_local_gpus_are_cut_by_slots():
    one_slot = study(device="cuda", inventory=[("0", 30_000)], gpu_slots=1, pack_runs=2)
    assert one_slot.packs == {f"p00{i}": [r] for i, r in enumerate(RUN_IDS)}
    assert one_slot.pack_need == dict.fromkeys(RUN_IDS, 1) and one_slot.pack_budget == 1


def test_packs_cut_by_count_only_are_said_once_with_the_fix():
    s = study(device="cuda", local=False, pack_runs=3)
    [said] = s.messages(grouped=False)
    assert said.startswith("pack_runs=3: packs are cut by count only")
    assert "gpu_memory_mb=<MB of one GPU of the nodes>" in said and "docs/cluster.md" in said
    checked = study(device="cuda", local=False, pack_runs=3, gpu_memory_mb=80_000)
    assert checked.messages(grouped=False) == []
    assert study(device="cpu", pack_runs=3).messages(grouped=False) == []  # no GPU to overfill
    assert study(device="cuda", local=False).messages(grouped=False) == []  # no packs


def test_packs_are_cut_to_a_partitions_time_limit_and_ask_no_more():
    """Unmeasured runs plan DEFAULT_RUNTIME_MINUTES each: a limit of two runs' minutes holds two."""
    minutes = plan.DEFAULT_RUNTIME_MINUTES
    s = study(device="cpu", pack_runs=3, pack_max_minutes=2 * minutes)
    assert s.packs == {"p000": RUN_IDS[:2], "p001": RUN_IDS[2:]}
    assert s.pack_resources("p000")["runtime"] == 2 * minutes  # the limit, exactly
    assert s.pack_resources("p000", attempt=2)["runtime"] == 2 * minutes  # a retry never asks more
    assert s.messages(grouped=False) == []
    assert study(device="cpu", pack_runs=3, pack_max_minutes=3 * minutes).packs == {"p000": RUN_IDS}
    # a run longer than the limit alone: a pack of its own, asking for the limit, and said once
    short = study(device="cpu", pack_runs=3, pack_max_minutes=minutes - 1)
    assert short.packs == {f"p00{i}": [r] for i, r in enumerate(RUN_IDS)}
    assert short.pack_resources("p000")["runtime"] == minutes - 1
    [said] = short.messages(grouped=False)
    assert said.startswith(f"pack_max_minutes={minutes - 1}: 3 runs plan more minutes alone than the limit")
    assert f"{RUN_IDS[0]} ({minutes} min)" in said
    with pytest.raises(ConfigError, match="pack_max_minutes"):
        wf.resolve(tiny_config(pack_max_minutes=0), REPO)


def test_the_pack_table_round_trips_with_the_plan_inputs_that_cut_it(tmp_path):
    s = study(device="auto", plan_device="h200", local=False, pack_runs=3, gpu_memory_mb=2 * NEED_MB,
              pack_max_minutes=500)
    path = wf.write_pack_table(s, tmp_path / ".snakemake" / "fmnist-packs.json")
    table = wf.read_pack_table(path)
    assert table["packs"] == s.packs == {"p000": RUN_IDS[:2], "p001": RUN_IDS[2:]}
    inputs = table["inputs"]
    assert inputs["budget"] == 2 * NEED_MB and inputs["need"] == dict.fromkeys(RUN_IDS, NEED_MB)
    assert inputs["pack_max_minutes"] == 500 and inputs["minutes"] == s.pack_minutes
    assert inputs["plan_label"] == plan.plan_label(s.config) and inputs["pack_runs"] == 3
    same = study(device="auto", plan_device="h200", local=False, pack_runs=3, gpu_memory_mb=2 * NEED_MB,
                 pack_max_minutes=500)
    assert same.adopt_pack_table(table) is None and same.packs == s.packs


def test_a_node_that_would_cut_other_packs_trains_the_submitters_and_says_so(tmp_path):
    submitter = study(device="auto", plan_device="h200", local=False, pack_runs=3, gpu_memory_mb=3 * NEED_MB)
    table = wf.read_pack_table(wf.write_pack_table(submitter, tmp_path / "packs.json"))
    # the node sees a plan cache with a figure the submitter did not have: its own cut would differ
    run = submitter.runs[RUN_IDS[0]]
    big = {plan.throughput_key(run, plan.plan_label(submitter.config), True):
           {**FIGURE, "params": 2_000_000_000}}
    node = study(device="auto", plan_device="h200", local=False, pack_runs=3, gpu_memory_mb=3 * NEED_MB,
                 cost_cache=big)
    assert node.packs != submitter.packs
    said = node.adopt_pack_table(table)
    assert node.packs == submitter.packs == {"p000": RUN_IDS}
    assert node.run_pack == dict.fromkeys(RUN_IDS, "p000")
    assert node.pack_params("p000")["runs"].keys() == set(RUN_IDS)
    assert said.startswith("fmnist: this node would cut") and "training the submitter's packs" in said
    assert str(wf.PACK_TABLE) in said


def test_a_job_without_a_usable_pack_table_stops_with_the_fix(tmp_path):
    with pytest.raises(wf.PackTableError, match="found no pack table .*run snakemake again there"):
        wf.read_pack_table(tmp_path / "missing.json")
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{not json")
    with pytest.raises(wf.PackTableError, match="cannot be read"):
        wf.read_pack_table(damaged)
    damaged.write_text(json.dumps({"version": 0, "packs": {}}))
    with pytest.raises(wf.PackTableError, match="not one this version writes"):
        wf.read_pack_table(damaged)
    other = {"version": wf.PACK_TABLE_VERSION, "packs": {"p000": ["other.run.s0"]}}
    with pytest.raises(wf.PackTableError, match="names runs this config does not have: other.run.s0"):
        study(device="cpu", pack_runs=3).adopt_pack_table(other)


def test_runs_without_figures_are_said_by_a_grouped_or_plan_device_run():
    s = study(device="auto", plan_device="h200", local=False)
    [said] = s.messages(grouped=False, configfiles=[os.path.abspath("study.yaml")])
    assert "the cost plan has no figures for 3 of 3 training runs" in said and "standard_cnn" in said
    assert "--configfile study.yaml" in said
    assert study(device="cpu").messages(grouped=False) == []
    [grouped] = study(device="cpu").messages(grouped=True)
    assert "config/config.yaml" in grouped


def test_a_pack_of_head_only_runs_gets_their_feature_sets():
    studies = {"t": {"models": ["resnet18_head", "standard_cnn"], "augmentations": ["none"], "seeds": [0]}}
    s = study(device="cpu", feature_cache=True, models=HEAD_MODELS, studies=studies, pack_runs=4)
    [key] = s.feature_sets
    path = s.run_features_path("resnet18_head.none.default.s0")
    assert path == f"results/features/{key}.pt"
    assert s.run_features_path("standard_cnn.none.default.s0") is None
    assert s.pack_features("p000") == [path]
    params = s.pack_params("p000")
    assert params["features"] == {"resnet18_head.none.default.s0": path, "standard_cnn.none.default.s0": None}
    assert params["runs"]["standard_cnn.none.default.s0"] == s.run_json("standard_cnn.none.default.s0")
    assert params["code"] == s.train_code
    assert s.pack_output("p000") == str(packs.PACK_DIR / "p000.json")
    off = study(device="cpu", feature_cache=False, models=HEAD_MODELS, studies=studies)
    assert off.feature_sets == {} and off.run_features_path("resnet18_head.none.default.s0") is None


# ---- identities, wildcards ------------------------------------------------------------------------

def test_code_identities_are_the_families_and_the_feature_passes():
    studies = {"t": {"models": ["resnet18_head", "standard_cnn"], "augmentations": ["none"], "seeds": [0]}}
    s = study(device="cpu", feature_cache=True, models=HEAD_MODELS, studies=studies)
    assert s.train_code == codeid.train_code_ids(s.runs)
    assert len(set(s.train_code.values())) == 2  # two families, two identities
    [key] = s.feature_sets
    assert s.features_code(key) == codeid.features_code_id(s.feature_sets[key])
    assert s.run_json(RUN_IDS[0]) == fmnist_config.canonical_json(s.runs[RUN_IDS[0]])


def test_wildcard_alternatives_match_the_names_exactly():
    assert wf.alternatives(["a.s0", "b.s1"], "NONE") == r"a\.s0|b\.s1"
    assert wf.alternatives([], "NO_RUNS") == "NO_RUNS"


# ---- parse-time repairs ----------------------------------------------------------------------------

def test_repair_unlinks_the_outputs_of_runs_whose_cache_entries_are_gone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = study(device="cpu")
    cache = tmp_path / "cache"
    cache.mkdir()
    run_dir = tmp_path / "results" / "runs" / RUN_IDS[0]
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").symlink_to(cache / "gone")
    said = []
    wf.repair(s, tmp_path / "data" / "prepared" / "fashion_mnist.npz", cache, log=said.append)
    assert not (run_dir / "metrics.json").is_symlink()
    assert len(said) == 1 and "removed cache entries" in said[0]


# ---- the cache-message filter ------------------------------------------------------------------

def test_the_cache_filter_drops_only_the_per_file_lines_and_is_added_once():
    log = logging.getLogger("snakemake.logging")
    before = list(log.filters)
    try:
        cachelog.quiet_cache_messages()
        cachelog.quiet_cache_messages()
        added = [f for f in log.filters if f not in before]
        assert len(added) == 1

        def shown(msg):
            return added[0].filter(logging.LogRecord("snakemake.logging", logging.INFO, "", 0, msg, None, None))

        assert not shown("Moving output file results/runs/x/model.pt to cache.")
        assert not shown("Symlinking output file results/runs/x/model.pt from cache.")
        assert shown("Failed to store output in cache.") and shown("fmnist: finished x")
    finally:
        log.filters[:] = before


def test_the_idle_share_of_static_packs_is_simulated_from_the_plans_figures(tmp_path, monkeypatch, capsys):
    """Two models' seeds in packs of three: the fast model's run waits beside the slow model's two."""
    cfg = tiny_config(studies={"t": {"models": ["simple_cnn", "standard_cnn"], "augmentations": ["none"],
                                     "seeds": [0, 1]}})
    runs, _, _ = wf.resolve(copy.deepcopy(cfg), REPO)
    label = plan.plan_label(cfg)
    cache = {plan.throughput_key(run, label, True): {**FIGURE, "train_images_per_s": ips}
             for run in runs.values()
             for ips in [10.0 if run["model"]["name"] == "simple_cnn" else 20.0]}
    got = wf.pack_idle_share(cfg, REPO, pack_runs=3, gpu_memory_mb=10**6, cost_cache=cache)
    assert (got["packs"], got["runs"], got["measured_packs"], got["pack_sizes"]) == (2, 4, 2, [1, 3])
    # p000: two simple_cnn runs (T) and a standard_cnn run (T/2): T/2 idle of 3T held; p001: T/2 held
    assert got["idle_share"] == pytest.approx(0.5 / 3.5) and got["unmeasured_runs"] == []
    same = wf.pack_idle_share(cfg, REPO, pack_runs=2, gpu_memory_mb=10**6, cost_cache=cache)
    assert same["idle_share"] == 0.0  # each pack one model's seeds
    unmeasured = wf.pack_idle_share(cfg, REPO, pack_runs=3, gpu_memory_mb=10**6, cost_cache={})
    assert unmeasured["measured_packs"] == 0 and len(unmeasured["unmeasured_runs"]) == 4
    # the command: the study's config file and the plan's cache file
    import yaml

    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path))
    plan.save_cache(cache, tmp_path / "throughput.json")
    assert wf._main(["--configfile", str(tmp_path / "study.yaml"), "--pack-runs", "3",
                     "--gpu-memory-mb", "1000000"]) == 0
    said = capsys.readouterr().out
    assert "4 runs in 2 packs" in said and "idle share of the packs' run slots: 14.3% (over 2 packs" in said
    assert wf._main(["--configfile", str(tmp_path / "study.yaml"), "--gpu-memory-mb", "1000000",
                     "--plan-device", "h100"]) == 1
    assert "idle share: unknown" in capsys.readouterr().out
