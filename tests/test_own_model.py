"""Your own model: a class in a module of yours named in a config line, its code in the run's identity,
and a finished run's model.pt back in Python with its test metrics equal to metrics.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, make_workflow, planned_jobs, snakemake, tiny_config, write_config

from fmnist import codeid, evaluate, experiments, gpus, models, train, usermodel
from fmnist.config import ConfigError, validate

MODULE = textwrap.dedent('''
    """A researcher's own model."""
    import torch
    from torch import nn

    from helpers import Flat


    class TinyNet(nn.Module):
        def __init__(self, width=8, num_classes=10, dropout=0.0):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(4))
            self.head = nn.Sequential(Flat(), nn.Dropout(dropout), nn.Linear(width * 49, num_classes))

        def forward(self, x):
            return self.head(self.features(x))


    class NoClasses(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(28 * 28, 7)

        def forward(self, x):
            return self.fc(x.flatten(1))


    class NotAModule:
        pass
''')
HELPERS = "from torch import nn\n\n\nclass Flat(nn.Flatten):\n    pass\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working directory holding the user's module (and a helper module it imports)."""
    (tmp_path / "my_models.py").write_text(MODULE)
    (tmp_path / "helpers.py").write_text(HELPERS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("my_models", "helpers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def own_config(arch="my_models:TinyNet", args=None, **defaults) -> dict:
    cfg = tiny_config(defaults={"epochs": 1, **defaults},
                      models={"mine": {"arch": arch, "args": {"width": 4} if args is None else args}},
                      studies={"tiny": {"models": ["mine"]}})
    return validate(cfg)


def resolve(cfg):
    return experiments.resolve_run(cfg, "mine", "none", "default", 0)


# --- naming a class in a config line ---

def test_a_config_line_names_a_class_in_the_users_module(project):
    run = resolve(own_config())
    assert run["model"]["arch"] == "my_models:TinyNet" and run["model"]["args"] == {"width": 4}
    model = models.build_model(run["model"]["arch"], run["model"]["args"])
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert model.head[2].in_features == 4 * 49  # the args reached the constructor
    by_path = models.build_model(str(project / "my_models.py") + ":TinyNet", {"width": 4})
    assert sum(p.numel() for p in by_path.parameters()) == sum(p.numel() for p in model.parameters())
    assert resolve(own_config(arch="my_models.py:TinyNet"))["model"]["arch"] == "my_models.py:TinyNet"


def test_the_setting_dropout_reaches_an_own_model(project):
    cfg = own_config(args={"width": 4, "dropout": 0.0})
    cfg["settings"] = {"drop": {"dropout": 0.3}}
    run = experiments.resolve_run(cfg, "mine", "none", "drop", 0)
    assert run["model"]["args"]["dropout"] == 0.3


@pytest.mark.parametrize(("arch", "args", "message"), [
    ("nowhere:Net", {}, r"no module 'nowhere' found in .*Put nowhere.py in the working directory"),
    ("sub/nowhere.py:Net", {}, r"no Python file .*nowhere.py.*Create it, or fix the path"),
    ("my_models:Missing", {}, r"defines no 'Missing' at its top level; its classes: NoClasses, NotAModule, TinyNet"),
    ("my_models:TinyNet", {"depth": 3}, r"TinyNet takes no argument 'depth'; its arguments: width, dropout"),
    ("my_models:TinyNet", {"num_classes": 3}, r"sets num_classes, which fmnist passes itself"),
    ("my_models:", {}, r"expected MODULE:CLASS"),
])
def test_config_errors_name_the_problem_and_the_fix(project, arch, args, message):
    with pytest.raises(ConfigError, match=message) as err:
        resolve(own_config(arch=arch, args=args))
    assert str(err.value).startswith("models.mine: model arch")


@pytest.mark.parametrize(("cls", "message"), [
    ("NotAModule", r"gave a NotAModule, not a torch.nn.Module"),
    ("NoClasses", r"returns \(2, 7\), not logits of shape \(2, 10\)"),
])
def test_build_errors_name_the_problem_and_the_fix(project, cls, message):
    resolve(own_config(arch=f"my_models:{cls}", args={}))  # the config parses: its code is not run
    with pytest.raises(usermodel.UserModelError, match=message):
        models.build_model(f"my_models:{cls}", {})


def test_an_import_error_in_the_module_is_named(project):
    (project / "broken.py").write_text("import torch\nraise RuntimeError('oops')\nclass Net(torch.nn.Module): pass\n")
    with pytest.raises(usermodel.UserModelError, match=r"importing .*broken.py' failed: RuntimeError: oops"):
        models.build_model("broken:Net", {})


def test_parsing_an_own_model_runs_none_of_its_code(project):
    """The workflow checks the config and computes identities while it parses, without torch: the
    user's module must not be imported then."""
    script = ("import sys; from fmnist import config, codeid, gpus; "
              "from fmnist.config import validate; "
              f"cfg = validate({own_config()!r}); runs, _ = gpus.expand_for_jobs(cfg); "
              "codeid.train_code_ids(runs); "
              "print(sorted(m for m in ('torch', 'my_models', 'helpers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=project,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- code identity ---

def test_the_users_module_is_part_of_its_runs_identity_and_only_theirs(project):
    mine = {"model": {"arch": "my_models:TinyNet"}}
    other = {"model": {"arch": "standard_cnn"}}
    base = codeid.train_code_ids({"mine": mine, "other": other})
    assert base["mine"] != base["other"]
    files, fmnist_modules = codeid.user_model_files("my_models:TinyNet")
    assert set(files) == {"my_models", "helpers"} and not fmnist_modules
    for name in ("my_models.py", "helpers.py"):
        path = project / name
        old = path.read_text()
        path.write_text(old + "\n# a comment only\n")
        assert codeid.train_code_ids({"mine": mine, "other": other}) == base, name
        path.write_text(old + "\n_EDITED = 1\n")
        now = codeid.train_code_ids({"mine": mine, "other": other})
        assert now["mine"] != base["mine"], f"an edit to {name} is not seen"
        assert now["other"] == base["other"]
        path.write_text(old)
    assert codeid.train_code_ids({"mine": mine}) == {"mine": base["mine"]}
    # another class of the same module is another identity; an fmnist module it imports is covered
    assert codeid.train_code_id({"model": {"arch": "my_models:NoClasses"}}) != base["mine"]
    (project / "uses_fmnist.py").write_text("from fmnist.models.cnn import StandardCNN as Net\n")
    _, imported = codeid.user_model_files("uses_fmnist:Net")
    assert "fmnist.models.cnn" in imported


# --- a trained run back in Python ---

def train_one(project, prepared_small, **defaults) -> tuple[dict, object]:
    runs, _ = gpus.expand_for_jobs(own_config(**defaults))
    (rid, run), = runs.items()
    out = project / "results" / "runs" / rid
    result = train.train_run(run, prepared_small, out, device="cpu", threads=1, log=lambda _m: None)
    return result, out


@pytest.fixture
def trained(project, prepared_small):
    # normalisation other than the default, and bf16 on any CPU, so that evaluating with the default
    # normalisation or in float32 is seen
    result, out = train_one(project, prepared_small, normalize={"mean": 0.5, "std": 0.5}, amp="bf16")
    return {"project": project, "data": prepared_small, "metrics": result, "dir": out}


def test_evaluate_reproduces_the_runs_test_metrics(trained):
    m = trained["metrics"]
    assert m["status"] == "ok" and m["arch"] == "my_models:TinyNet"
    got = evaluate.evaluate_run(m["run_id"], trained["data"])  # a run id under results/runs
    assert got["differences"] == [] and got["equal"]
    assert got["test_accuracy"] == m["test_accuracy"] and got["n_test"] == m["n_test"] == 1000
    assert got["test_loss"] == pytest.approx(m["test_loss"], rel=1e-6)
    assert got["confusion_matrix"] == m["confusion_matrix"]["counts"]
    assert got["amp"] == m["amp_resolved"]
    assert evaluate.evaluate_run(trained["dir"], trained["data"])["equal"]  # a run folder


def test_load_model_gives_the_trained_module(trained):
    model = evaluate.load_model(trained["dir"])
    assert isinstance(model, torch.nn.Module) and not model.training
    saved = torch.load(trained["dir"] / "model.pt", weights_only=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved.items())
    loaded = evaluate.load_run(trained["dir"])
    import numpy as np

    with np.load(trained["data"]) as npz:
        images, labels = torch.from_numpy(npz["test_images"][:200]), torch.from_numpy(npz["test_labels"][:200])
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=loaded.metrics["amp_resolved"] == "bf16"):
        pred = model(loaded.normalize(images)).argmax(1)
    first = trained["metrics"]["confusion_matrix"]["counts"]
    assert (pred == labels).float().mean() > 0.3 and sum(map(sum, first)) == 1000


def test_evaluate_cli_prints_equal_and_fails_on_a_damaged_model(trained):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rid = trained["metrics"]["run_id"]

    def cli(*args):  # the real command line: `python -m fmnist evaluate ...`
        return subprocess.run([sys.executable, "-m", "fmnist", "evaluate", *args], capture_output=True, text=True,
                              cwd=trained["project"], env=env, timeout=300)

    ok = cli(rid, "--data", str(trained["data"]), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["test_accuracy"] == trained["metrics"]["test_accuracy"]
    state = torch.load(trained["dir"] / "model.pt", weights_only=True)
    state = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in state.items()}
    torch.save(state, trained["dir"] / "model.pt")
    with pytest.raises(evaluate.EvaluateError, match=r"is not the file its metrics.json records"):
        evaluate.load_model(trained["dir"])


def test_evaluate_names_a_missing_run_and_foreign_data(trained, tmp_path):
    with pytest.raises(evaluate.EvaluateError, match=r"no finished run 'nope'.*run id under results/runs"):
        evaluate.evaluate_run("nope", trained["data"])
    with pytest.raises(evaluate.EvaluateError, match=r"no prepared data at"):
        evaluate.evaluate_run(trained["dir"], tmp_path / "none.npz")
    from fmnist import data

    other = tmp_path / "other.npz"
    arrays, meta = data.load_prepared(trained["data"])
    import numpy as np

    meta = {**meta, "test_limit": 500}
    np.savez(other, meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(evaluate.EvaluateError, match=r"is not the data run .* test_limit 500 \(run: 1000\)"):
        evaluate.evaluate_run(trained["dir"], other)


def test_a_process_training_an_own_model_loads_nothing_outside_its_identity(project):
    """Build the user's model as a train job does: every fmnist module and every module of the user's
    directory that loads is covered by the run's identity."""
    script = textwrap.dedent("""
        import json, sys
        import fmnist.train
        fmnist.train.build_model("my_models:TinyNet", {"width": 4})
        print(json.dumps(sorted(sys.modules)))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=project,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": os.environ.get("PATH", "")})
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    files, fmnist_modules = codeid.user_model_files("my_models:TinyNet")
    covered = set(codeid.closure((*codeid.TRAIN_MODULES, "fmnist.usermodel", *fmnist_modules)))
    assert "fmnist.usermodel" in loaded
    assert {m for m in loaded if m.startswith("fmnist.")} - codeid.BOUNDARY <= covered
    assert {"my_models", "helpers"} <= loaded and set(files) == {"my_models", "helpers"}


@pytest.mark.slow
def test_snakemake_reruns_exactly_the_runs_of_an_edited_own_model(tmp_path):
    """A real workflow (smoke mode: a few steps a run, in its own working directory) with an own model
    beside a preset: a comment in the user's module reruns nothing, a code edit reruns its run only."""
    cfg = tiny_config(models={"mine": {"arch": "my_models:TinyNet", "args": {"width": 4}},
                              "mine_file": {"arch": "nets/other.py:TinyNet", "args": {"width": 4}}})
    cfg["studies"] = {"mix": {"models": ["standard_cnn", "mine", "mine_file"], "augmentations": ["none"],
                              "seeds": [0]}}
    root = make_workflow(tmp_path / "wf")
    write_config(root, cfg)
    (root / "my_models.py").write_text(MODULE)
    (root / "helpers.py").write_text(HELPERS)
    (root / "nets").mkdir()
    (root / "nets" / "other.py").write_text(MODULE)
    smoke = ("--config", "smoke=true")
    snakemake(root, *smoke, "--until", "train")
    metrics = json.loads((root / "smoke/results/runs/mine.none.default.s0/metrics.json").read_text())
    assert metrics["arch"] == "my_models:TinyNet" and metrics["params"] > 0
    assert planned_jobs(root, *smoke, "--until", "train") == {}
    module = root / "my_models.py"
    old = module.read_text()
    module.write_text(old + "\n# a comment only\n")
    assert planned_jobs(root, *smoke, "--until", "train") == {}
    # both import helpers.py (nets/other.py finds it in the working directory)
    for edited, expected in ((root / "helpers.py", {"mine", "mine_file"}), (module, {"mine"}),
                             (root / "nets" / "other.py", {"mine_file"})):
        before = edited.read_text()
        edited.write_text(before + "\n_EDITED = 1\n")
        out = snakemake(root, "-n", *smoke, "--until", "train").stdout
        assert set(re.findall(r"rule train:.*?wildcards: run=(\S+)", out, flags=re.S)) == {
            f"{name}.none.default.s0" for name in expected}, edited
        edited.write_text(before)
    assert planned_jobs(root, *smoke, "--until", "train") == {}
