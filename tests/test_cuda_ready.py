"""The trainer's CUDA paths: CUDA graphs that train the recipe eager trains (or refuse it), fused
optimizers and a host-sync-free EMA.

What a CPU can check runs everywhere: the history writer under a tensor lr, the config refusals, the
betas a one-cycle schedule fills in place, the EMA's numbers. The rest is skipped without CUDA;
docs/performance.md ("Left to measure") gives the one call a lent GPU runs and what it prints.
"""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from conftest import resolve_run
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fmnist import config, integrity, recipes, train

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


# --- history values are numbers ----------------------------------------------------------------------

def test_a_tensor_lr_reaches_history_csv_as_a_number(tmp_path, prepared_small, monkeypatch):
    """Under cuda_graph the lr is a tensor the graph reads. The history row must hold its value: a
    tensor's repr in history.csv (`tensor(0.0020)`) fails integrity.check_run, so every plot and
    report downstream. The optimizer is made graph-ready on the CPU, as the graph makes it on CUDA."""
    real = recipes.build_optimizer
    made = []

    def graph_ready_optimizer(params, cfg):
        opt = real(params, cfg)
        train.graph_ready(opt, torch.device("cpu"))
        made.append(opt)
        return opt

    monkeypatch.setattr(recipes, "build_optimizer", graph_ready_optimizer)
    run = resolve_run({"models": ["lenet_like"]}, defaults={"epochs": 2, "amp": "off"})
    folder = tmp_path / run["id"]  # check_run knows a run's files by its folder's name
    train.train_run(run, prepared_small, folder, device="cpu", log=lambda s: None, max_steps=3)
    assert isinstance(made[0].param_groups[0]["lr"], torch.Tensor)  # the case under test happened
    integrity.check_run(folder)
    with open(folder / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["lr"]) for r in rows] == pytest.approx([float(made[0].param_groups[0]["lr"])] * 2, rel=0.5)
    assert all("tensor" not in value for r in rows for value in r.values())


def test_history_row_makes_every_value_a_float():
    row = train.history_row(torch.tensor(3), lr=torch.tensor(0.002), val_loss=0.5, train_accuracy=torch.tensor(1))
    assert row == {"epoch": 3, "lr": pytest.approx(0.002), "val_loss": 0.5, "train_accuracy": 1.0}
    assert all(type(v) is float for k, v in row.items() if k != "epoch") and type(row["epoch"]) is int


# --- refusals ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", [{"name": "sgd", "lr": 0.05, "momentum": 0.9}, {"name": "rmsprop", "lr": 0.001}])
def test_cuda_graph_refuses_an_optimizer_it_cannot_capture_when_the_config_is_read(optimizer):
    """torch's SGD reads a tensor lr on the host (`.item()`), illegal during capture: refused when the
    workflow expands the config, on any machine, with the fix named."""
    with pytest.raises(config.ConfigError, match=rf"run standard_cnn\.none\.default\.s0: train\.cuda_graph: "
                                                 rf"optimizer '{optimizer['name']}' cannot be captured.*"
                                                 r"use optimizer adam or adamw, or set cuda_graph: false"):
        resolve_run({"models": ["standard_cnn"]}, defaults={"cuda_graph": True, "optimizer": optimizer})


def test_cuda_graph_refusals_come_before_the_device_check():
    """The same refusal where a run is built (a config changed after expansion, as `bench steps` does)."""
    run = resolve_run({"models": ["standard_cnn"]})
    run["train"].update(cuda_graph=True, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    with pytest.raises(config.ConfigError, match="optimizer 'sgd' cannot be captured"):
        train.StepLoop.build(run, 10, 256, torch.device("cpu"))
    run["train"].update(optimizer={"name": "adam", "lr": 0.001}, compile=True)
    with pytest.raises(config.ConfigError, match="cuda_graph and train.compile are exclusive"):
        train.StepLoop.build(run, 10, 256, torch.device("cpu"))


def test_cuda_graph_accepts_adam_with_one_cycle():
    run = resolve_run({"models": ["standard_cnn"]}, defaults={"cuda_graph": True, "scheduler": {"name": "onecycle"}})
    assert config.cuda_graph_problem(run["train"]) == ""
    assert config.cuda_graph_problem({**run["train"], "cuda_graph": False, "optimizer": {"name": "sgd"}}) == ""


# --- one-cycle momentum under the graph ----------------------------------------------------------------

def _one_cycle_betas(graph: bool, steps: int = 12) -> tuple[list[float], torch.Tensor, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    opt = recipes.build_optimizer(model.parameters(), {"name": "adamw", "lr": 0.01, "weight_decay": 0.01})
    if graph:
        train.graph_ready(opt, torch.device("cpu"))
    sched = recipes.build_schedule(opt, {"name": "onecycle", "max_lr_factor": 5.0}, 2, steps // 2)
    if graph:
        sched.keep_betas_in_tensors(opt)
        kept = opt.param_groups[0]["betas"]  # what a graph captured after this reads
        assert all(isinstance(b, torch.Tensor) for b in kept)
    seen = []
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.after_batch()
        seen.append(float(opt.param_groups[0]["betas"][0]))
        if graph:
            assert opt.param_groups[0]["betas"][0] is kept[0], "beta1 replaced: a captured graph would not see it"
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    return seen, weights, opt


def test_one_cycle_momentum_is_kept_in_the_tensors_the_graph_reads():
    """OneCycleLR writes a new float beta1 every step; a captured graph reads the tensor it was captured
    with. Graph-ready betas are tensors, filled in place with the eager values, and train the same."""
    eager, w_eager, _ = _one_cycle_betas(graph=False)
    graphed, w_graphed, _ = _one_cycle_betas(graph=True)
    assert len(set(eager)) > 3  # momentum did cycle
    assert graphed == pytest.approx(eager, rel=1e-6)
    assert torch.allclose(w_graphed, w_eager, rtol=1e-5, atol=1e-6)


def test_kept_betas_survive_a_resume():
    """A resumed run loads the optimizer's (new) beta tensors; the schedule's load puts its own back."""
    _, _, opt = _one_cycle_betas(graph=True, steps=4)
    state = copy.deepcopy(opt.state_dict())
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    opt2 = recipes.build_optimizer(model.parameters(), {"name": "adamw", "lr": 0.01})
    train.graph_ready(opt2, torch.device("cpu"))
    sched = recipes.build_schedule(opt2, {"name": "onecycle", "max_lr_factor": 5.0}, 2, 2)
    sched.keep_betas_in_tensors(opt2)
    kept = opt2.param_groups[0]["betas"]
    opt2.load_state_dict(state)
    sched.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["betas"][0] is kept[0]
    assert float(kept[0]) == pytest.approx(float(state["param_groups"][0]["betas"][0]))


# --- fused optimizers --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_cpu_optimizers_keep_torch_defaults(name):
    """Fused kernels are for CUDA only: a CPU run's optimizer is built as before (its numbers unchanged)."""
    opt = recipes.build_optimizer(torch.nn.Linear(3, 2).parameters(), {"name": name, "lr": 0.01})
    group = opt.param_groups[0]
    assert not group.get("fused") and group.get("foreach") is None


@gpu
@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_cuda_optimizers_are_fused(name):
    opt = recipes.build_optimizer(torch.nn.Linear(3, 2).cuda().parameters(), {"name": name, "lr": 0.01})
    assert opt.param_groups[0]["fused"] is True


# --- EMA without host syncs ----------------------------------------------------------------------------

def _bn_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))


def _train_steps(model, steps: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8, generator=gen)
        y = torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        yield


def _averages(ema: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in ema.state_dict().items()}


@pytest.mark.parametrize("decay", [0.99, 0.5])
def test_ema_equals_torchs_averaged_model_bit_for_bit(decay):
    """The EMA's weights and buffers (BatchNorm's running stats and its integer batch count) after each
    of several steps are exactly torch's AveragedModel with get_ema_multi_avg_fn, the formula before."""
    torch.manual_seed(0)
    model = _bn_model()
    new = recipes.build_ema(model, {"enabled": True, "decay": decay})
    old = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    for step, _ in enumerate(_train_steps(model, 6, seed=1)):
        new.update_parameters(model)
        old.update_parameters(model)
        got, want = _averages(new), _averages(old)
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), f"{key} differs after step {step + 1}"
    assert int(new.n_averaged) == 6
    assert new.module[1].num_batches_tracked.dtype == torch.int64
    # the average moved off the model: the comparison is of a real average, not of copies
    assert not torch.equal(new.module[0].weight, model[0].weight)


def test_ema_resumes_from_a_saved_state_as_torchs_does():
    """A resume loads the EMA's state (n_averaged included) into a fresh EMA: it goes on averaging, not
    copying the model as a first update would."""
    torch.manual_seed(0)
    model = _bn_model()
    ema = recipes.build_ema(model, {"enabled": True, "decay": 0.9})
    old = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    steps = _train_steps(model, 6, seed=2)
    for _ in range(3):
        next(steps)
        ema.update_parameters(model)
        old.update_parameters(model)
    resumed = recipes.build_ema(model, {"enabled": True, "decay": 0.9})
    resumed.load_state_dict(ema.state_dict())
    for _ in steps:
        resumed.update_parameters(model)
        old.update_parameters(model)
    for key, want in _averages(old).items():
        assert torch.equal(resumed.state_dict()[key], want), key


def test_ema_update_never_reads_a_tensor_on_the_host(monkeypatch):
    """No `bool(tensor)`, `.item()` or `float(tensor)` per update (AveragedModel compares its count on
    the host, and copies it to the device, every step: pipeline stalls on a GPU)."""
    model = _bn_model()
    ema = recipes.build_ema(model, {"enabled": True, "decay": 0.99})
    ema.update_parameters(model)  # the first update copies

    def host_read(*_a, **_k):
        raise AssertionError("the EMA update read a tensor on the host")

    for name in ("__bool__", "item", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    for _ in range(3):
        ema.update_parameters(model)
    monkeypatch.undo()
    assert int(ema.n_averaged) == 4


@gpu
def test_ema_update_does_not_sync_the_gpu():
    model = _bn_model().cuda()
    ema = recipes.build_ema(model, {"enabled": True, "decay": 0.99})
    ema.update_parameters(model)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            ema.update_parameters(model)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --- graphed against eager, through the whole trainer (GPU) ------------------------------------------

GRAPH_RECIPES = {
    "adam": {"optimizer": {"name": "adam", "lr": 0.002}, "scheduler": {"name": "none"}},
    "adamw_warmup_cosine": {"optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.01},
                            "scheduler": {"name": "warmup_cosine", "warmup_epochs": 0.5}},
    "adam_onecycle": {"optimizer": {"name": "adam", "lr": 0.002},
                      "scheduler": {"name": "onecycle", "max_lr_factor": 2.0}},
    "adam_onecycle_ema": {"optimizer": {"name": "adam", "lr": 0.002},
                          "scheduler": {"name": "onecycle", "max_lr_factor": 2.0},
                          "ema": {"enabled": True, "decay": 0.99}},
}


@gpu
@pytest.mark.parametrize("recipe", list(GRAPH_RECIPES))
def test_graphed_training_is_the_eager_recipe(tmp_path, prepared_small, recipe):
    """train_run eager and graphed on the same seed: both pass integrity.check_run, the history's lr
    column is the same, and the accuracies are close (bf16 autocast; capture reorders nothing else)."""
    out = {}
    for graphed in (False, True):
        run = resolve_run({"models": ["standard_cnn"]},
                      defaults={"epochs": 3, "amp": "bf16", "dropout": 0.0, "cuda_graph": graphed,
                                "early_stopping": {"enabled": False}, **GRAPH_RECIPES[recipe]})
        folder = tmp_path / ("graphed" if graphed else "eager") / run["id"]
        m = train.train_run(run, prepared_small, folder, device="cuda", log=lambda s: None)
        integrity.check_run(folder)
        with open(folder / "history.csv") as fh:
            rows = list(csv.DictReader(fh))
        out[graphed] = m, [float(r["lr"]) for r in rows], [float(r["val_accuracy"]) for r in rows]
    (m_eager, lr_eager, val_eager), (m_graph, lr_graph, val_graph) = out[False], out[True]
    print(f"{recipe}: eager test {m_eager['test_accuracy']:.4f}, graphed {m_graph['test_accuracy']:.4f}; "
          f"lr {lr_graph}")
    assert m_graph["status"] == m_eager["status"] == "ok"
    assert lr_graph == pytest.approx(lr_eager, rel=1e-5)
    assert abs(m_graph["test_accuracy"] - m_eager["test_accuracy"]) < 0.03
    assert val_graph == pytest.approx(val_eager, abs=0.04)
