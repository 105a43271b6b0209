"""Runs trained on a lent GPU brought into a record as one archive: the archive names each run's device,
the import checks every file and refuses duplicates, foreign runs and an experiment that would mix a
CPU and a GPU (fmnist.record_gpu)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from fmnist import cli, record, record_gpu

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs" / "record" / "cpu"
EXP = "deep_cnn.none.b_default"  # an experiment of the CPU record, three seeds


def take_out(rec: Path, run_ids: list[str], results: Path, device: str | None = None) -> Path:
    """Move runs out of a record into a results tree (as a workflow would have them), optionally
    relabelled as trained on `device`; the record's SHA256SUMS and tables follow."""
    for rid in run_ids:
        shutil.move(rec / "runs" / rid, results / "runs" / rid)
        if device:
            path = results / "runs" / rid / "metrics.json"
            m = json.loads(path.read_text())
            m["device"], m["device_name"] = device, "NVIDIA H100 80GB HBM3" if device.startswith("cuda") else "cpu"
            path.write_text(json.dumps(m, indent=2))
    record.write_manifest(rec)
    record.rebuild(rec, rec)
    return results / "runs"


def archive_of(runs_dir: Path, run_ids: list[str], out: Path, rec: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return record_gpu.build_archive(runs_dir, run_ids, out, record_name=rec.name, configfile=rec / "config.yaml",
                                    start=1_765_000_000.0, end=1_765_000_600.0)


def seeds(exp: str = EXP) -> list[str]:
    return [f"{exp}.s{i}" for i in range(3)]


def test_a_gpu_archive_of_a_whole_experiment_is_imported(record_copy, tmp_path, capsys):
    runs_dir = take_out(record_copy, seeds(), tmp_path / "results", device="cuda:0")
    assert set(seeds()) <= set(record_gpu.next_runs(record_copy / "config.yaml", record_copy, "cuda"))
    archive = archive_of(runs_dir, seeds(), tmp_path / "out", record_copy)
    manifest, members = record_gpu.read_archive(archive)
    assert set(manifest["runs"]) == set(seeds()) and manifest["record"] == "cpu"
    assert {e["device"] for e in manifest["runs"].values()} == {"cuda:0"}
    assert len(members) == 1 + 3 * 3  # the manifest and three files per run, no weights
    assert cli.main(["record", "import", str(archive), "--dest", str(record_copy)]) == 0
    assert "imported 3 runs trained on cuda" in capsys.readouterr().out
    runs = pd.read_csv(record_copy / "runs.csv")
    assert set(runs.loc[runs["experiment"] == EXP, "device"]) == {"cuda:0"}  # the record states the device
    assert set(runs.loc[runs["experiment"] != EXP, "device"]) == {"cpu"}
    assert record.check(record_copy) == []  # hashes and tables agree with the imported runs
    # the runs are byte for byte the archive's
    for rid in seeds():
        for name in record_gpu.RUN_FILES:
            assert (record_copy / "runs" / rid / name).read_bytes() == members[f"runs/{rid}/{name}"]


def test_an_experiment_never_mixes_a_cpu_and_a_gpu(record_copy, tmp_path, capsys):
    """One seed trained on a GPU cannot join two seeds trained on a CPU; nothing is imported."""
    rid = f"{EXP}.s2"
    runs_dir = take_out(record_copy, [rid], tmp_path / "results", device="cuda:0")
    assert rid not in record_gpu.next_runs(record_copy / "config.yaml", record_copy, "cuda")
    assert rid in record_gpu.next_runs(record_copy / "config.yaml", record_copy, "cpu")
    archive = archive_of(runs_dir, [rid], tmp_path / "out", record_copy)
    before = sorted(p.name for p in (record_copy / "runs").iterdir())
    assert cli.main(["record", "import", str(archive), "--dest", str(record_copy)]) == 2
    err = capsys.readouterr().err
    assert f"experiment {EXP} already has runs from another device class: cpu" in err and "nothing imported" in err
    assert sorted(p.name for p in (record_copy / "runs").iterdir()) == before
    # the same run as trained on a CPU joins its experiment
    runs_dir = tmp_path / "results" / "runs"
    m = json.loads((runs_dir / rid / "metrics.json").read_text())
    m["device"] = "cpu"
    (runs_dir / rid / "metrics.json").write_text(json.dumps(m))
    record_gpu.import_archive(archive_of(runs_dir, [rid], tmp_path / "out2", record_copy), record_copy)
    assert (record_copy / "runs" / rid).exists() and record.check(record_copy) == []


def test_one_archive_cannot_mix_devices_in_an_experiment(record_copy, tmp_path):
    runs_dir = take_out(record_copy, seeds(), tmp_path / "results", device="cuda:0")
    m = json.loads((runs_dir / seeds()[0] / "metrics.json").read_text())
    m["device"] = "cpu"
    (runs_dir / seeds()[0] / "metrics.json").write_text(json.dumps(m))
    archive = archive_of(runs_dir, seeds(), tmp_path / "out", record_copy)
    with pytest.raises(ValueError, match="another device class"):
        record_gpu.import_archive(archive, record_copy)
    assert not (record_copy / "runs" / seeds()[1]).exists()


def test_a_run_already_in_the_record_is_refused(record_copy, tmp_path):
    rid = f"{EXP}.s0"
    (tmp_path / "results" / "runs").mkdir(parents=True)
    shutil.copytree(record_copy / "runs" / rid, tmp_path / "results" / "runs" / rid)
    archive = archive_of(tmp_path / "results" / "runs", [rid], tmp_path / "out", record_copy)
    sums = (record_copy / "SHA256SUMS").read_text()
    with pytest.raises(ValueError, match=f"{rid}: already in .*never replaced"):
        record_gpu.import_archive(archive, record_copy)
    assert (record_copy / "SHA256SUMS").read_text() == sums


def _rewrite(archive: Path, edit) -> None:
    """Rewrite an archive's members through `edit(name, bytes) -> bytes` (the manifest kept as is)."""
    _, members = record_gpu.read_archive(archive)
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            data = edit(name, data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_damaged_file_is_refused(record_copy, tmp_path):
    runs_dir = take_out(record_copy, seeds(), tmp_path / "results", device="cuda:0")
    archive = archive_of(runs_dir, seeds(), tmp_path / "out", record_copy)
    shutil.copy(archive, tmp_path / "clean.tar.gz")

    def flip(name, data):
        return data.replace(b"0.", b"1.", 1) if name.endswith(f"{seeds()[1]}/history.csv") else data

    _rewrite(archive, flip)
    with pytest.raises(ValueError, match=rf"{seeds()[1]}/history.csv: its SHA-256 is not the one in MANIFEST.json"):
        record_gpu.import_archive(archive, record_copy)
    assert not any((record_copy / "runs" / r).exists() for r in seeds())  # all or nothing

    # a history.csv edited with its manifest hash updated still differs from what its metrics.json recorded
    manifest, members = record_gpu.read_archive(tmp_path / "clean.tar.gz")
    name = f"runs/{seeds()[1]}/history.csv"
    members[name] = members[name].replace(b"0.", b"1.", 1)
    manifest["runs"][seeds()[1]]["files"]["history.csv"] = record_gpu._sha256_bytes(members[name])
    members[record_gpu.MANIFEST] = json.dumps(manifest).encode()
    _rewrite(tmp_path / "clean.tar.gz", lambda n, d: members[n])
    with pytest.raises(ValueError, match=seeds()[1]):
        record_gpu.import_archive(tmp_path / "clean.tar.gz", record_copy)
    assert not any((record_copy / "runs" / r).exists() for r in seeds())


def test_foreign_runs_and_members_are_refused(record_copy, tmp_path):
    runs_dir = take_out(record_copy, seeds(), tmp_path / "results", device="cuda:0")
    archive = archive_of(runs_dir, seeds()[:1], tmp_path / "out", record_copy)
    manifest, members = record_gpu.read_archive(archive)
    foreign = "not_a_model.none.b_default.s0"
    manifest["runs"] = {foreign: manifest["runs"][seeds()[0]]}
    renamed = {n.replace(seeds()[0], foreign): d for n, d in members.items()}
    renamed[record_gpu.MANIFEST] = json.dumps(manifest).encode()
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in renamed.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=f"{foreign}: not a run of"):
        record_gpu.import_archive(archive, record_copy)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="unexpected member '../outside.txt'"):
        record_gpu.import_archive(evil, record_copy)


def test_the_greedy_scheduler_where_pulp_is_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pulp" else real(name, *a))
    from fmnist.bench.common import snakemake_scheduler

    assert snakemake_scheduler() == ["--scheduler", "greedy"]


@pytest.mark.slow
def test_record_gpu_chunk_rehearsed_on_the_cpu(tmp_path, capsys):
    """The whole path on a tiny record: the next runs trained through the workflow within the minutes,
    archived with their device, imported; a second import of the same archive is refused."""
    from conftest import tiny_config, write_config

    cfg = tiny_config(defaults={"epochs": 1}, studies={"tiny": {"models": ["standard_cnn"], "seeds": [0, 1]}})
    rec = tmp_path / "tiny"
    (rec / "runs").mkdir(parents=True)
    shutil.copy(write_config(tmp_path, cfg), rec / "config.yaml")
    shutil.copy(REPO / "config" / "published.yaml", rec / "published.yaml")
    assert cli.main(["record", "gpu", "--configfile", str(rec / "config.yaml"), "--record", str(rec),
                     "--minutes", "8", "--out", str(tmp_path / "out"), "--cores", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 unfinished runs trained" in out
    (archive,) = (tmp_path / "out").glob("record-tiny-*.tar.gz")
    manifest, _ = record_gpu.read_archive(archive)
    assert sorted(manifest["runs"]) == ["standard_cnn.none.default.s0", "standard_cnn.none.default.s1"]
    assert {e["device"] for e in manifest["runs"].values()} == {"cpu"}
    assert cli.main(["record", "import", str(archive), "--dest", str(rec)]) == 0
    assert set(pd.read_csv(rec / "runs.csv")["device"]) == {"cpu"}
    assert record.check(rec) == []
    assert cli.main(["record", "import", str(archive), "--dest", str(rec)]) == 2
    assert "already in" in capsys.readouterr().err
    assert record_gpu.next_runs(rec / "config.yaml", rec, "cpu") == []
