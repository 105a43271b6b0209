"""Numbers that decide a published figure, each pinned where it is computed, against values worked out
by hand: evaluation, MixUp's draws, the metrics, the report's interval columns, the confusion figure,
which weights a run tests, the stop rule's ties, the train subset, the code identity, the GPU memory
a job and a pack plan for, and what the feature cache applies to.

Each test here was checked by planting its bug alone in src/ and watching it fail. The models have
dropout and BatchNorm where evaluation is concerned; the seeds are not 0 where a seed could be
confused with the split seed (0); memory figures are those of real GPUs and runs.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from fmnist import (
    aggregate,
    augment,
    codeid,
    compare,
    config,
    data,
    experiments,
    features,
    metrics,
    plots,
    runfiles,
    train,
)
from fmnist import gpus as fmnist_gpus
from fmnist import packs as fmnist_packs
from fmnist import plan as fmnist_plan
from fmnist import report as fmnist_report
from fmnist.runtime import Batches, Normalizer
from fmnist.train import evaluate


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def resolve(study: dict, seeds=(0,), **cfg) -> list[dict]:
    full = config.validate({**cfg, "studies": {"t": {**study, "seeds": list(seeds)}}})
    runs, _ = experiments.expand(full)
    return list(runs.values())


# --- evaluation: eval mode, loss per image -----------------------------------------------------------

NORM_MEAN, NORM_STD = 0.25, 0.5


def eval_case(seed: int, n: int = 50, classes: int = 3):
    """A model with BatchNorm and dropout whose eval-mode logits are worked out with numpy: Flatten,
    Linear(784, 3), BatchNorm1d(3) with set running statistics and affine terms, Dropout(0.5); and a
    split of `n` random images. Returns (model in TRAIN mode, split, expected loss, expected accuracy,
    expected predictions)."""
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = g.integers(0, classes, size=n)
    w = g.normal(0, 0.02, size=(classes, 784))
    b = g.normal(0, 0.1, size=classes)
    run_mean, run_var = np.array([0.3, -0.2, 0.1]), np.array([2.0, 0.5, 1.5])
    gamma, beta = np.array([1.5, 0.8, 1.1]), np.array([0.2, -0.1, 0.05])
    eps = 1e-5
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, classes),
                                torch.nn.BatchNorm1d(classes, eps=eps), torch.nn.Dropout(0.5))
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(w))
        model[1].bias.copy_(torch.from_numpy(b))
        bn = model[2]
        bn.running_mean.copy_(torch.from_numpy(run_mean))
        bn.running_var.copy_(torch.from_numpy(run_var))
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
    model.train()  # as a training epoch leaves it
    # by hand: normalised pixels, the linear layer, BatchNorm with its running statistics, no dropout
    x = (images.reshape(n, -1) / 255.0 - NORM_MEAN) / NORM_STD
    logits = ((x @ w.T + b) - run_mean) / np.sqrt(run_var + eps) * gamma + beta
    top = logits.max(1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    loss = float(-log_p[np.arange(n), labels].mean())
    pred = logits.argmax(1)
    return model, Batches(images, labels, torch.device("cpu")), loss, float((pred == labels).mean()), pred


def run_evaluate(model, split, batch_size):
    return evaluate(model, split, Normalizer(NORM_MEAN, NORM_STD, False), batch_size, contextlib.nullcontext)


@pytest.mark.parametrize("seed", [1, 2])
def test_evaluation_runs_the_model_in_eval_mode_dropout_off_batchnorm_on_running_statistics(seed):
    model, split, loss, acc, pred = eval_case(seed)
    torch.manual_seed(seed)
    got_loss, got_acc, got_pred = run_evaluate(model, split, 16)
    assert got_loss == pytest.approx(loss, rel=1e-5), "not the eval-mode loss worked out by hand"
    assert got_acc == pytest.approx(acc) and (got_pred == pred).all()


@pytest.mark.parametrize("seed", [1, 2])
def test_eval_loss_is_the_mean_over_images_not_over_batches(seed):
    """50 images in batches of 16: 16, 16, 16 and 2. A mean of the batch means weighs the last two
    images 8 times as much as the others; a sum over batch means divided by the images is 16 times too
    small. Only the mean over images is the same for every batch size."""
    model, split, loss, _, _ = eval_case(seed)
    for batch_size in (16, 7, 50):
        got, _, _ = run_evaluate(model, split, batch_size)
        assert got == pytest.approx(loss, rel=1e-5), f"batch size {batch_size}"


# --- MixUp: a lambda per draw ------------------------------------------------------------------------

def mixup_lambdas(aug, y: torch.Tensor) -> torch.Tensor:
    """The lambda of each image of a batch, read from its target: the weight of its own label (the
    partner, the batch rolled by one, always has another label here)."""
    x = torch.rand(len(y), 1, 28, 28)
    _, target = aug(x, y)
    return target[torch.arange(len(y)), y]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("per_batch", [False, True])
def test_mixup_draws_new_lambdas_for_every_batch(seed, per_batch):
    """Beta(1, 1) is uniform: 40 batches of 8 give 40 (per batch) or 320 (per image) distinct lambdas
    with a mean near 0.5 and a standard deviation near sqrt(1/12) = 0.289; lambdas drawn once and
    reused give one batch's values again and again."""
    torch.manual_seed(seed)
    aug = augment.build_augmentation("mixup", {"alpha": 1.0, "per_batch": per_batch}, 10)
    y = torch.arange(8) % 10  # neighbours differ: the partner's label is never the image's own
    lams = torch.stack([mixup_lambdas(aug, y) for _ in range(40)])  # (batches, images)
    per = lams[:, 0] if per_batch else lams.flatten()
    if per_batch:
        assert torch.allclose(lams, lams[:, :1].expand_as(lams))  # one lambda for the whole batch
    assert len(torch.unique(per)) == len(per), "the same lambdas in several batches"
    assert float(per.mean()) == pytest.approx(0.5, abs=0.12)
    assert float(per.std()) == pytest.approx(math.sqrt(1 / 12), abs=0.08)


# --- metrics: macro F1, the confusion matrix's axes ----------------------------------------------------

CLASSES = ["a", "b", "c"]
# rows true, columns predicted: supports 6, 6, 8; predicted 7, 6, 7; 14 of 20 right (accuracy 0.7)
CM = np.array([[5, 1, 0],
               [2, 3, 1],
               [0, 2, 6]])


def labels_of(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true, pred = [], []
    for i in range(len(cm)):
        for j in range(len(cm)):
            true += [i] * int(cm[i, j])
            pred += [j] * int(cm[i, j])
    order = np.random.default_rng(5).permutation(len(true))
    return np.array(true)[order], np.array(pred)[order]


def test_macro_f1_is_the_mean_of_the_per_class_f1s():
    """Per class: recall 5/6, 1/2, 3/4; precision 5/7, 1/2, 6/7; F1 10/13, 1/2, 4/5: macro F1
    0.68974..., not the accuracy 0.7 nor the F1 of the macro precision and recall (0.69245...)."""
    s = metrics.summarize(CM, CLASSES)
    assert s["accuracy"] == pytest.approx(0.7)
    assert s["precision_macro"] == pytest.approx((5 / 7 + 1 / 2 + 6 / 7) / 3, abs=1e-12)
    assert s["recall_macro"] == pytest.approx((5 / 6 + 1 / 2 + 3 / 4) / 3, abs=1e-12)
    assert s["f1_macro"] == pytest.approx((10 / 13 + 1 / 2 + 4 / 5) / 3, abs=1e-12)


def test_confusion_rows_are_true_classes_and_per_class_accuracy_is_recall():
    """From labels: counts[i][j] is true class i predicted as j, and a class's accuracy is the share
    of its own images predicted right (recall: 5/6, 1/2, 3/4), not the share of the predictions of
    it that are right (precision: 5/7, 1/2, 6/7)."""
    true, pred = labels_of(CM)
    cm = metrics.confusion_matrix(true, pred, 3)
    assert cm.tolist() == CM.tolist()
    s = metrics.summarize(cm, CLASSES)
    assert s["per_class_accuracy"] == pytest.approx({"a": 5 / 6, "b": 1 / 2, "c": 3 / 4}, abs=1e-12)


# --- the report's interval columns ---------------------------------------------------------------------

def run_metrics(run_id: str, acc: float) -> dict:
    model, aug, setting, seed = run_id.split(".")
    return {
        "run_id": run_id, "status": "ok", "status_reason": "", "model": model, "arch": model,
        "augmentation": aug, "setting": setting, "seed": int(seed[1:]), "test_accuracy": acc,
        "test_loss": 0.3, "precision_macro": acc, "recall_macro": acc, "f1_macro": acc,
        "per_class_accuracy": {"T-shirt/top": acc}, "best_val_accuracy": acc, "best_val_loss": 0.3,
        "best_epoch": 2, "epochs_run": 4, "epochs_max": 10, "params": 5000, "trainable_params": 5000,
        "train_seconds": 8.0, "images_per_second": 100.0, "peak_memory_mb": 1.0, "device": "cpu",
        "device_name": "cpu", "n_train": 1800, "config_hash": "x",
        "config": {"id": run_id, "model": {"name": model, "arch": model, "args": {}},
                   "augmentation": {"name": aug, "kind": aug, "params": {}}, "setting": setting,
                   "seed": int(seed[1:]), "train": {"batch_size": 64, "optimizer": {"name": "adam", "lr": 0.001}}},
    }


def cells(html: str, marker: str) -> list[str]:
    """The text of each cell of the first table row holding `marker`."""
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S) if marker in r)
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, flags=re.S)]


def test_the_reports_prediction_interval_column_shows_the_prediction_interval(tmp_path):
    """Four seeds at 90, 91, 92, 93%: mean 91.5, s = sqrt(5/3), t(3) = 3.18245. The prediction
    interval is 91.5 +- 3.18245 s sqrt(1 + 1/4) = 86.91-96.09; the CI of the mean 91.5 +- 3.18245 s / 2
    = 89.45-93.55. Each goes in its own column of the published table."""
    runs = aggregate.runs_table([run_metrics(f"m.none.d.s{i + 1}", a) for i, a in enumerate([0.90, 0.91, 0.92, 0.93])])
    published = [{"source": "A", "experiment": "m.none.d", "label": "the figure", "metric": "test_accuracy",
                  "value": 95.0}]
    rows = fmnist_report.records(compare.compare_published(published, runs))
    templates = Path(fmnist_report.__file__).with_name("templates")
    shutil.copy(templates / "_macros.html.j2", tmp_path / "_macros.html.j2")
    page = tmp_path / "page.html.j2"
    page.write_text('{% import "_macros.html.j2" as m %}{{ m.published_table(rows) }}')
    html = fmnist_report.render({"rows": rows}, page)
    header, row = cells(html, "prediction interval"), cells(html, "the figure")
    pi = next(i for i, h in enumerate(header) if "prediction interval" in h)
    ci = next(i for i, h in enumerate(header) if "CI" in h and "of our mean" in h)
    assert row[pi] == "86.91 – 96.09"
    assert row[ci] == "89.45 – 93.55"


# --- the confusion figure -------------------------------------------------------------------------------

def test_the_confusion_figure_shades_each_cell_by_its_share_of_the_true_class(tmp_path, monkeypatch):
    """Colour = count / its row's total (rows: true classes): row a 5/6, 1/6, 0; by column it would
    be 5/7, 1/6, 0. The numbers written in the cells are the counts."""
    csv = tmp_path / "confusion.csv"
    runfiles.write_confusion(csv, CM, CLASSES)
    shown = {}
    real_close = plots.plt.close

    def close(fig=None):
        if fig is not None and fig.axes and fig.axes[0].images:
            shown["image"] = np.asarray(fig.axes[0].images[0].get_array())
            shown["texts"] = [t.get_text() for t in fig.axes[0].texts]
        return real_close(fig)

    monkeypatch.setattr(plots.plt, "close", close)
    plots.confusion(csv, tmp_path / "confusion.png")
    expected = CM / CM.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shown["image"], expected, atol=1e-12)
    assert shown["texts"] == [str(v) for v in CM.flatten()]
    assert (tmp_path / "confusion.png").stat().st_size > 0


# --- which weights a run tests, and the stop rule's ties ----------------------------------------------

@pytest.mark.parametrize("seed", [1, 2])
def test_a_fixed_epoch_run_tests_its_final_weights(tmp_path, prepared_small, monkeypatch, seed):
    """Early stopping off, validation scores scripted so that epoch 1 is the best of 3: the run must
    test the weights it had after epoch 3 (and say so), not epoch 1's. Checked on the weights the test
    split was evaluated with, not on the metadata."""
    (run,) = resolve({"models": ["lenet_like"]}, seeds=(seed,),
                     defaults={"epochs": 3, "train_fraction": 0.25,
                               "early_stopping": {"enabled": False, "monitor": "val_accuracy"}})
    real, scripted = train.RunSetup.evaluate, iter([0.90, 0.50, 0.60])
    seen: dict[str, list] = {"val": [], "test": []}

    def evaluate_split(self, split):
        state = copy.deepcopy(self.eval_model.state_dict())
        loss, acc, pred = real(self, split)
        if split is self.val:
            seen["val"].append(state)
            return loss, next(scripted), pred
        seen["test"].append(state)
        return loss, acc, pred

    monkeypatch.setattr(train.RunSetup, "evaluate", evaluate_split)
    m = train.train_run(run, prepared_small, tmp_path, device="cpu", log=lambda _s: None, max_steps=3)
    assert (m["best_epoch"], m["epochs_run"], m["tested_epoch"]) == (1, 3, 3)
    (tested,) = seen["test"]
    after = seen["val"]  # the weights after epochs 1, 2 and 3

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    assert not same(after[0], after[2])  # the epochs trained: the two candidates differ
    assert same(tested, after[2]), "the test split was evaluated with other weights than epoch 3's"
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert same(saved, after[2])


def test_an_accuracy_tie_is_no_improvement():
    """Validation accuracies are k/6000: equal ones are common. A tie neither moves the best epoch nor
    resets the patience count; one image more (k + 1) does."""
    rule = train.StopRule({"enabled": True, "monitor": "val_accuracy", "patience": 2, "min_delta": 0.0})
    acc = [5300 / 6000, 5412 / 6000, 5412 / 6000, 5413 / 6000, 5413 / 6000, 5413 / 6000, 5500 / 6000]
    best, best_epoch, bad, stopped = None, 0, 0, None
    for epoch, score in enumerate(acc, 1):
        if rule.should_stop(bad):
            stopped = epoch - 1
            break
        improved, bad = rule.observe(score, best, bad)
        if improved:
            best, best_epoch = score, epoch
    # 1 improves, 2 improves, 3 ties (bad 1), 4 improves by one image (bad 0), 5 and 6 tie: stop after 6
    assert (stopped, best_epoch) == (6, 4)
    assert not rule.improves(5412 / 6000, 5412 / 6000)
    assert rule.improves(5413 / 6000, 5412 / 6000)


# --- the train subset ------------------------------------------------------------------------------------

def test_the_train_subset_is_drawn_with_the_split_seed_not_the_runs(prepared_small):
    """train_fraction 0.25 of the prepared slice: the same images for runs of seeds 1 and 3 (their
    seeds must only change the model's init and the batches), the ones the split seed draws."""
    arrays, meta = data.load_prepared(prepared_small)
    assert meta["split_seed"] == 0
    keep = data.stratified_subset(arrays["train_labels"], 0.25, np.random.default_rng(meta["split_seed"]))
    for run in resolve({"models": ["lenet_like"]}, seeds=(1, 3), defaults={"train_fraction": 0.25}):
        s = train.setup_run(run, prepared_small, device="cpu")
        assert len(s.train) == len(keep) == 450
        assert torch.equal(s.train.images[:, 0], torch.from_numpy(arrays["train_images"][keep])), run["id"]
        assert torch.equal(s.train.labels, torch.from_numpy(arrays["train_labels"][keep].astype(np.int64)))


# --- the code identity sees a function body edited --------------------------------------------------------

def body_edit(text: str, in_class: bool) -> tuple[str, str]:
    """`text` with the first number inside a function's body (a method's, `in_class`) raised by one, and
    that function's name: no name is added, removed or renamed, only a statement in a body changes."""
    tree = ast.parse(text)
    scopes = [n for n in tree.body if isinstance(n, ast.ClassDef)] if in_class else [tree]
    for scope in scopes:
        for fn in (n for n in scope.body if isinstance(n, ast.FunctionDef)):
            for node in (n for stmt in fn.body for n in ast.walk(stmt)):
                if isinstance(node, ast.Constant) and type(node.value) in (int, float):
                    lines = text.splitlines(keepends=True)
                    line = lines[node.lineno - 1].encode()
                    before, after = line[:node.col_offset], line[node.end_col_offset:]
                    lines[node.lineno - 1] = (before + repr(node.value + 1).encode() + after).decode()
                    return "".join(lines), fn.name
    raise AssertionError("no number in a function body to edit: pick another module for this test")


@pytest.mark.parametrize(("module", "in_class"), [("metrics.py", False), ("runtime.py", True)])
def test_editing_a_function_body_changes_the_code_identity(tmp_path, module, in_class):
    """A number inside a function (metrics) or a method (runtime) changed: the module's digest and the
    identity of a run that uses it change, though its top-level names stay the same."""
    root = tmp_path / "src" / "fmnist"
    shutil.copytree(Path(codeid.PACKAGE_DIR), root, ignore=shutil.ignore_patterns("__pycache__"))
    run = {"model": {"arch": "lenet_like"}}
    name = f"fmnist.{module[:-3]}"
    assert name in codeid.train_modules("cnn", root)
    before, digest = codeid.train_code_id(run, root), codeid.module_digest(name, root)
    path = root / module
    edited, where = body_edit(path.read_text(), in_class)
    path.write_text(edited)
    assert codeid.module_digest(name, root) != digest, f"an edit inside {where}() of {module} is not seen"
    assert codeid.train_code_id(run, root) != before


# --- GPU memory: the CUDA context in a pack's need and in a job's slots ------------------------------------

def test_a_job_asks_gpu_slots_for_its_memory_and_its_cuda_context():
    """An 80 GB GPU in 8 slots of 10,000 MB; each process adds its CUDA context (600 MB)."""
    pack = fmnist_gpus.Packing(("0",), 80_000, 8)
    assert fmnist_gpus.CUDA_CONTEXT_MB == 600
    assert pack.job_slots(3_000) == 1     # 3,600 MB
    assert pack.job_slots(9_600) == 2     # 10,200 MB: past one slot only with the context
    assert pack.job_slots(19_500) == 3    # 20,100 MB
    assert pack.job_slots(9_300) == 1     # 9,900 MB


def test_a_packs_memory_need_counts_each_runs_cuda_context():
    """Four seeds of a run without a measured figure plan 4,000 MB each, 4,600 MB with its process's
    CUDA context. On a 16,000 MB GPU (a cluster node's, gpu_memory_mb) three fit in a pack (13,800 MB),
    not four (18,400 MB; 16,000 MB without the contexts, which would just fit)."""
    cfg = tiny_config()
    cfg["studies"] = {"t": {"models": ["lenet_like"], "augmentations": ["none"], "seeds": [1, 2, 3, 4]}}
    cfg = config.validate(cfg)
    runs, _ = experiments.expand(cfg)
    assert len(runs) == 4
    need = {r: fmnist_plan.gpu_need_mb(run, cfg, {}) for r, run in runs.items()}
    assert set(need.values()) == {fmnist_plan.GPU_JOB_DEFAULT_MB + 600} == {4_600}
    cut = fmnist_packs.packs(runs, 4, need, 16_000)
    assert [len(p) for p in cut.values()] == [3, 1]


# --- what the feature cache applies to ----------------------------------------------------------------------

def transfer_run(resize: str) -> dict:
    cfg = tiny_config(
        models={"m": {"arch": "mobilenet_v3_small",
                      "args": {"trainable": "head", "pretrained": False, "image_size": 32, "resize": resize}}},
        defaults={"epochs": 1, "early_stopping": {"enabled": False}},
    )
    cfg["studies"] = {"s": {"models": ["m"], "augmentations": ["none"], "seeds": [2]}}
    return next(iter(experiments.expand(config.validate(cfg))[0].values()))


def test_a_random_resized_crop_is_not_cacheable():
    """resize report_d crops at random in training: the backbone's input differs every epoch."""
    assert features.cacheable(transfer_run("plain"))
    assert not features.cacheable(transfer_run("report_d"))
