"""Training packs (config pack_runs, fmnist.packs): several runs side by side in one job."""

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import make_workflow, planned_jobs, snakemake, tiny_config
from hypothesis import given
from hypothesis import strategies as st

from fmnist import packs, status

SEEDS3 = {"tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0, 1, 2]}}
SEEDS2 = {"tiny": {"models": ["standard_cnn"], "augmentations": ["none"], "seeds": [0, 1]}}


def run_targets(run_ids):
    return [f"results/runs/{r}/metrics.json" for r in run_ids]


def test_packs_are_the_sorted_runs_in_chunks():
    runs = ["b.s1", "a.s2", "a.s0", "b.s0", "a.s1"]
    assert packs.packs(runs, 2) == {"p000": ["a.s0", "a.s1"], "p001": ["a.s2", "b.s0"], "p002": ["b.s1"]}
    assert packs.packs(runs, 5) == {"p000": sorted(runs)}
    assert packs.packs([], 3) == {}
    with pytest.raises(ValueError):
        packs.packs(runs, 0)


def test_packs_are_cut_where_the_next_run_would_not_fit_the_gpu():
    runs = ["a.s0", "a.s1", "a.s2", "b.s0", "b.s1", "c.s0"]
    need = {"a.s0": 30, "a.s1": 30, "a.s2": 30, "b.s0": 60, "b.s1": 60, "c.s0": 150}
    assert packs.packs(runs, 4, need, 100) == {
        "p000": ["a.s0", "a.s1", "a.s2"],  # 90: b.s0 would take it to 150
        "p001": ["b.s0"],  # 60: b.s1 would take it to 120
        "p002": ["b.s1"],
        "p003": ["c.s0"],  # too big to share: a pack of its own, not refused
    }
    assert packs.packs(runs, 2, need, 100) == {
        "p000": ["a.s0", "a.s1"], "p001": ["a.s2", "b.s0"], "p002": ["b.s1"], "p003": ["c.s0"]}
    exact = {r: 25 for r in runs}
    assert packs.packs(runs, 8, exact, 100) == {"p000": runs[:4], "p001": runs[4:]}  # 100 fits 100
    assert packs.packs(runs, 3, need) == packs.packs(runs, 3)  # no budget: by count only
    with pytest.raises(ValueError, match="need"):
        packs.packs(runs, 3, None, 100)


@given(
    st.dictionaries(st.from_regex(r"[a-z]{1,3}\.s[0-9]", fullmatch=True), st.integers(1, 120), max_size=30),
    st.integers(1, 6),
    st.integers(1, 100),
)
def test_every_pack_fits_its_gpu_unless_one_run_alone_does_not(need, size, budget):
    got = packs.packs(need, size, need, budget)
    assert [r for chunk in got.values() for r in chunk] == sorted(need)  # each run once, in order
    for chunk in got.values():
        assert 1 <= len(chunk) <= size
        assert sum(need[r] for r in chunk) <= budget or len(chunk) == 1
    chunks = list(got.values())
    for first, second in zip(chunks, chunks[1:], strict=False):  # cut only where the next run would not fit
        assert len(first) == size or sum(need[r] for r in first) + need[second[0]] > budget


@given(
    st.dictionaries(st.from_regex(r"[a-z]{1,3}\.s[0-9]", fullmatch=True), st.integers(1, 600), max_size=30),
    st.integers(1, 6),
    st.integers(1, 900),
)
def test_every_pack_fits_the_time_limit_unless_one_run_alone_does_not(minutes, size, limit):
    got = packs.packs(minutes, size, minutes=minutes, max_minutes=limit)
    assert [r for chunk in got.values() for r in chunk] == sorted(minutes)
    for chunk in got.values():
        assert 1 <= len(chunk) <= size
        assert sum(minutes[r] for r in chunk) <= limit or len(chunk) == 1
    chunks = list(got.values())
    for first, second in zip(chunks, chunks[1:], strict=False):  # cut only where the next run would pass it
        assert len(first) == size or sum(minutes[r] for r in first) + minutes[second[0]] > limit
    assert packs.over_time(minutes, limit) == sorted(r for r, m in minutes.items() if m > limit)


def test_packs_are_cut_by_time_and_memory_together():
    runs = ["a.s0", "a.s1", "a.s2", "b.s0"]
    need = dict.fromkeys(runs, 10)
    minutes = {"a.s0": 100, "a.s1": 100, "a.s2": 50, "b.s0": 500}
    assert packs.packs(runs, 4, need, 25, minutes, 250) == {
        "p000": ["a.s0", "a.s1"], "p001": ["a.s2"], "p002": ["b.s0"]}  # memory cuts, then time cuts
    assert packs.packs(runs, 4, minutes=minutes, max_minutes=250) == {
        "p000": ["a.s0", "a.s1", "a.s2"], "p001": ["b.s0"]}  # 250 fits 250; b.s0 is over it alone
    assert packs.over_time(minutes, 250) == ["b.s0"] and packs.over_time(minutes, None) == []
    with pytest.raises(ValueError, match="minutes"):
        packs.packs(runs, 3, max_minutes=100)


def test_the_idle_share_is_what_a_packs_slots_wait_for_its_slowest_run():
    assert packs.idle_share({"p000": ["a", "b"]}, {"a": 10, "b": 10}) == 0.0
    # slots held: 4 x 40 + 1 x 5; idle: (40-10) x 3 in the first pack
    got = packs.idle_share({"p000": ["a", "b", "c", "d"], "p001": ["e"]},
                           {"a": 40, "b": 10, "c": 10, "d": 10, "e": 5})
    assert got == pytest.approx(90 / 165)
    assert packs.idle_share({}, {}) == 0.0


def test_the_stamp_changes_with_every_param():
    base = packs.stamp('{"id": "a"}', "code1", "cpu", None)
    assert base == packs.stamp('{"id": "a"}', "code1", "cpu", None)
    others = {packs.stamp('{"id": "b"}', "code1", "cpu", None), packs.stamp('{"id": "a"}', "code2", "cpu", None),
              packs.stamp('{"id": "a"}', "code1", "cuda", None), packs.stamp('{"id": "a"}', "code1", "cpu", 5)}
    assert base not in others and len(others) == 4


def stage(root: Path, run_id: str, stamp: str) -> Path:
    folder = root / packs.staged_dir(run_id)
    folder.mkdir(parents=True)
    for name in packs.STAGED_FILES:
        (folder / name).write_text(json.dumps({"run_id": run_id}) if name == "metrics.json" else name)
    (folder / packs.STAMP).write_text(json.dumps({"stamp": stamp}))
    return folder


def test_collect_links_a_staged_result_and_refuses_one_of_other_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = stage(tmp_path, "a.s0", "right")
    with pytest.raises(packs.PackError, match="was trained from other params"):
        packs.collect("a.s0", "wrong", tmp_path / "out")
    assert packs.collect("a.s0", "right", tmp_path / "out") == {"run_id": "a.s0"}
    assert (tmp_path / "out" / "model.pt").read_text() == "model.pt"
    (folder / "history.csv").unlink()  # a staged result with a file missing is not finished
    assert packs.staged_stamp(folder) is None
    with pytest.raises(packs.PackError, match="is missing or unfinished"):
        packs.collect("a.s0", "right", tmp_path / "out2")


def comparable(metrics: dict) -> dict:
    """What a run computed: its numbers, not its timings or host."""
    keep = ("test_accuracy", "test_loss", "best_epoch", "tested_epoch", "epochs_run", "status")
    return {k: metrics.get(k) for k in keep} | {"files": {
        k: v for k, v in metrics["files"].items() if k != "history.csv"}}


@pytest.mark.slow
def test_a_pack_trains_its_runs_side_by_side_to_the_numbers_of_one_job_each(tmp_path):
    single = make_workflow(tmp_path / "single", tiny_config(studies=SEEDS3))
    packed = make_workflow(tmp_path / "packed", tiny_config(studies=SEEDS3, pack_runs=2))
    from fmnist import config, experiments

    run_ids = sorted(experiments.expand(config.load(packed / "test.yaml"))[0])
    assert planned_jobs(packed, *run_targets(run_ids)) == {
        "download": 4, "prepare": 1, "train_pack": 2, "train": 3}
    snakemake(packed, *run_targets(run_ids))
    snakemake(single, *run_targets(run_ids))

    summary = json.loads((packed / "results" / "packs" / "p000.json").read_text())
    first, second = (summary["runs"][r] for r in run_ids[:2])
    # side by side: each run's process started before the other's had trained
    assert first["train_started"] < second["train_finished"], summary
    assert second["train_started"] < first["train_finished"], summary
    assert sorted(json.loads((packed / "results" / "packs" / "p001.json").read_text())["runs"]) == run_ids[2:]
    for rid in run_ids:
        got = json.loads((packed / "results" / "runs" / rid / "metrics.json").read_text())
        want = json.loads((single / "results" / "runs" / rid / "metrics.json").read_text())
        assert comparable(got) == comparable(want), rid
        log = (packed / "logs" / "train" / f"{rid}.log").read_text()
        assert "epoch 2/2" in log, log[-2000:]  # the run's epochs, copied from its pack's staging log
    assert planned_jobs(packed, *run_targets(run_ids)) == {}  # linked results are not planned again


@pytest.mark.slow
def test_a_failed_run_keeps_its_packs_finished_runs(tmp_path):
    root = make_workflow(tmp_path, tiny_config(studies=SEEDS2, pack_runs=2))
    from fmnist import config, experiments

    ok_run, bad_run = sorted(experiments.expand(config.load(root / "test.yaml"))[0])
    # a disk fault for one run: its model file cannot be written once it has trained
    obstacle = root / packs.staged_dir(bad_run) / ".model.pt.part"
    obstacle.mkdir(parents=True)
    (obstacle / "keep").write_text("")
    proc = snakemake(root, *run_targets([ok_run, bad_run]), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    pack_log = (root / "logs" / "train_pack" / "p000.log").read_text()
    assert f"1 of 2 runs of this pack failed: {bad_run} (log logs/train_pack/{bad_run}.log)" in pack_log, pack_log
    assert f"Kept, not trained again on the next attempt: {ok_run}" in pack_log
    assert packs.staged_stamp(root / packs.staged_dir(ok_run)) is not None, out[-3000:]
    assert packs.staged_stamp(root / packs.staged_dir(bad_run)) is None
    # fmnist status reads a pack's runs from their pack logs
    rows = {r["run"]: r for r in status.study_status(config.load(root / "test.yaml"), root)["runs"]}
    assert rows[bad_run]["state"] == "failed" and "Is a directory" in rows[bad_run]["note"], rows[bad_run]
    assert rows[ok_run]["state"] == "finished" and "staging" in rows[ok_run]["note"], rows[ok_run]

    shutil.rmtree(obstacle)  # the fault fixed
    snakemake(root, *run_targets([ok_run, bad_run]))
    ok_log = (root / "logs" / "train_pack" / f"{ok_run}.log").read_text()
    assert ok_log.count("job started") == 1, ok_log  # not trained again
    bad_log = (root / "logs" / "train_pack" / f"{bad_run}.log").read_text()
    assert bad_log.count("job started") == 2 and "resuming after epoch 2" in bad_log, bad_log[-3000:]
    for rid in (ok_run, bad_run):
        assert json.loads((root / "results" / "runs" / rid / "metrics.json").read_text())["status"] == "ok"


def job_blocks(text: str, rule: str) -> list[str]:
    """The job blocks `snakemake -n` prints for `rule`."""
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", text)
    return [b for b in blocks if re.match(rf"(local)?rule {rule}:", b)]


def test_packed_on_local_gpus_a_pack_asks_the_slots_of_its_runs(tmp_path):
    cfg = tiny_config(gpu_devices=["0", "1"], gpu_slots=3, gpu_memory_mb=30_000, pack_runs=2, studies=SEEDS3)
    root = make_workflow(tmp_path / "wf", cfg)
    targets = run_targets(f"standard_cnn.none.default.s{i}" for i in range(3))
    proc = snakemake(root, *targets, "-n", "--resources", "gpu=2")
    text = proc.stdout + proc.stderr
    slots = {}
    for block in job_blocks(text, "train_pack"):
        pack = re.search(r"wildcards: pack=(p\d+)", block).group(1)
        slots[pack] = int(re.search(r"gpu_slots=(\d+)", block).group(1))
    assert slots == {"p000": 2, "p001": 1}, text[-3000:]  # one slot per run, the runs together
    trains = job_blocks(text, "train")
    assert len(trains) == 3 and all("gpu_slots=0" in b and "gpu=0" in b for b in trains), trains


def planned_packs(text: str) -> dict[str, int]:
    """pack -> the runs `snakemake -n` says it trains (its train jobs name it as input)."""
    found = {}
    for block in job_blocks(text, "train"):
        pack = re.search(r"results/packs/(p\d+)\.json", block).group(1)
        found[pack] = found.get(pack, 0) + 1
    return found


def test_packed_on_local_gpus_a_pack_never_asks_more_than_one_gpu(tmp_path):
    """One slot per GPU: two runs of a pack would share memory meant for one, so each gets its own."""
    cfg = tiny_config(gpu_devices=["0"], gpu_slots=1, gpu_memory_mb=30_000, pack_runs=2, studies=SEEDS3)
    root = make_workflow(tmp_path / "wf", cfg)
    proc = snakemake(root, *run_targets(f"standard_cnn.none.default.s{i}" for i in range(3)), "-n",
                     "--resources", "gpu=1")
    text = proc.stdout + proc.stderr
    assert planned_packs(text) == {"p000": 1, "p001": 1, "p002": 1}, text[-3000:]


def test_cluster_packs_are_cut_by_the_nodes_gpu_memory(tmp_path):
    """plan_device on a login node without a GPU: gpu_memory_mb (one node GPU's) cuts the packs; without
    it packs go by count, and the submitting Snakemake says how to have them checked."""
    cfg = tiny_config(plan_device="h200", device="auto", pack_runs=3, studies=SEEDS3)
    root = make_workflow(tmp_path / "wf", cfg)
    targets = run_targets(f"standard_cnn.none.default.s{i}" for i in range(3))
    by_count = snakemake(root, *targets, "-n")
    assert planned_packs(by_count.stdout + by_count.stderr) == {"p000": 3}
    assert "packs are cut by count only" in by_count.stderr and "gpu_memory_mb=" in by_count.stderr
    roomy = snakemake(root, *targets, "-n", "--config", "gpu_memory_mb=1000000")
    assert planned_packs(roomy.stdout + roomy.stderr) == {"p000": 3}
    assert "packs are cut by count only" not in roomy.stderr
    tight = snakemake(root, *targets, "-n", "--config", "gpu_memory_mb=1")  # no run fits: one each
    assert planned_packs(tight.stdout + tight.stderr) == {"p000": 1, "p001": 1, "p002": 1}


@pytest.mark.slow
def test_a_pack_of_head_only_runs_trains_on_their_cached_features(tmp_path):
    """Head-only transfer runs in a pack get their feature set as the pack's input, in smoke mode's tree."""
    cfg = tiny_config(
        models={"m": {"arch": "mobilenet_v3_small", "args": {"trainable": "head", "pretrained": False,
                                                            "image_size": 32}}},
        settings={f"bs{b}": {"batch_size": b} for b in (16, 32)}, pack_runs=3,
    )
    cfg["studies"] = {"sweep": {"models": ["m"], "settings": ["bs16", "bs32"], "augmentations": ["none", "flip"]}}
    root = make_workflow(tmp_path / "wf", cfg)
    assert {k: v for k, v in planned_jobs(root, "--until", "train").items() if k in ("features", "train_pack", "train")} \
        == {"features": 1, "train_pack": 2, "train": 4}
    snakemake(root, "--config", "smoke=true", "--until", "train")
    done = sorted((root / "smoke" / "results" / "runs").glob("*/metrics.json"))
    assert len(done) == 4, done
    for path in done:
        m = json.loads(path.read_text())
        assert m["cached_features"] == (m["augmentation"] == "none"), path.parent.name
    assert sorted(p.name for p in (root / "smoke" / "results" / "packs").glob("*.json")) == ["p000.json", "p001.json"]


def test_forcing_a_pack_or_the_pack_rule_forces_its_runs():
    from fmnist import runcache

    pk = {"p000": ["a.s0", "a.s1"], "p001": ["b.s0"]}
    assert runcache.forced_runs(False, ["train_pack"], False, [], packs=pk) == runcache.ALL
    assert runcache.forced_runs(False, ["results/packs/p001.json"], False, [], packs=pk) == "b.s0"
    assert runcache.forced_runs(False, [], True, ["results/packs/p000.json"], packs=pk) == "a.s0 a.s1"
    assert runcache.forced_runs(False, ["train_pack"], False, []) == ""  # no packs: not a rule here
    assert runcache.forced_runs(False, ["report"], False, [], packs=pk) == ""


@pytest.mark.slow
def test_forced_packs_retrain_their_runs(tmp_path):
    """`--forcerun train_pack` retrains every packed run (its staged result would otherwise be kept);
    a pack's summary file forces that pack's runs only."""
    root = make_workflow(tmp_path, tiny_config(studies=SEEDS3, pack_runs=2, defaults={"epochs": 1}))
    run_ids = [f"standard_cnn.none.default.s{i}" for i in range(3)]
    snakemake(root, *run_targets(run_ids))

    def attempts(rid):
        return (root / "logs" / "train_pack" / f"{rid}.log").read_text().count("job started")

    assert [attempts(r) for r in run_ids] == [1, 1, 1]
    snakemake(root, *run_targets(run_ids), "--forcerun", "results/packs/p001.json")
    assert [attempts(r) for r in run_ids] == [1, 1, 2]
    snakemake(root, *run_targets(run_ids), "--forcerun", "train_pack")
    assert [attempts(r) for r in run_ids] == [2, 2, 3]
    assert planned_jobs(root, *run_targets(run_ids)) == {}


def test_a_killed_pack_leaves_no_run_training(tmp_path, prepared_small):
    """SIGKILL of a pack's process (what a node's teardown or `kill -9` does) ends its runs' processes
    too: the next attempt must not find a run still writing into the staging folder it resumes from."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from fmnist import config as fconfig
    from fmnist import experiments

    cfg = fconfig.validate(tiny_config(defaults={"epochs": 50}))
    run = next(iter(experiments.expand(cfg)[0].values()))
    job = {"id": run["id"], "run": fconfig.canonical_json(run), "data": str(prepared_small),
           "features": None, "device": "cpu", "max_steps": None, "stamp": "s"}
    (tmp_path / "jobs.json").write_text(json.dumps([job]))
    code = ("import json, sys; from fmnist import packs; "
            "packs.run_pack(json.load(open('jobs.json')), threads=1, log=lambda m: print(m, flush=True))")
    env = {**os.environ, "PYTHONPATH": str(Path(packs.__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    child = int(re.search(r"started \(pid (\d+)\)", line).group(1))
    time.sleep(2)
    os.kill(child, 0)  # training
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the run's process outlived its killed pack")


def test_a_job_trains_the_pack_table_the_submitting_snakemake_wrote(tmp_path):
    """A job's parse (`--mode subprocess`, as a cluster job's `--mode remote`) reads the pack table: none
    there is an error naming the fix; one that differs from the node's own cut wins, and is said."""
    cfg = tiny_config(pack_runs=2, studies=SEEDS3)
    root = make_workflow(tmp_path / "wf", cfg)
    targets = run_targets(f"standard_cnn.none.default.s{i}" for i in range(3))
    proc = snakemake(root, "--mode", "subprocess", "-n", *targets, check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "this job found no pack table" in said, said[-2000:]
    assert "run snakemake again there" in said
    snakemake(root, "--list-rules")  # any real run of the submitting snakemake writes it
    table = json.loads((root / ".snakemake" / "fmnist-packs.json").read_text())
    assert table["packs"] == {"p000": ["standard_cnn.none.default.s0", "standard_cnn.none.default.s1"],
                              "p001": ["standard_cnn.none.default.s2"]}
    table["packs"] = {"p000": ["standard_cnn.none.default.s0"],
                      "p001": ["standard_cnn.none.default.s1", "standard_cnn.none.default.s2"]}
    (root / ".snakemake" / "fmnist-packs.json").write_text(json.dumps(table))
    proc = snakemake(root, "--mode", "subprocess", "-n", *targets)
    text = proc.stdout + proc.stderr
    assert "this node would cut 2 packs where the submitting machine cut 2" in text, text[-2000:]
    assert "(1 runs in another pack, e.g. standard_cnn.none.default.s1)" in text
    # the submitting snakemake's own parse ignores a table and cuts again (then writes it anew)
    assert "this node would cut" not in (lambda p: p.stdout + p.stderr)(snakemake(root, "-n", *targets))
