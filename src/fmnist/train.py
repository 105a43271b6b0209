"""Train one resolved run on the device that is there and write its per-run files.

The whole dataset is held as one uint8 tensor on the training device; batches are indexed from
it and augmented there, each image with its own random draw. Losses and accuracies accumulate on
the device, so a step never waits for the host. The run's full state is saved after each epoch
to a resume file beside its outputs, so a killed job continues where it stopped.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist import amp, augment, data, features, metrics, recipes, runfiles
from fmnist.config import ConfigError, config_hash, cuda_graph_problem
from fmnist.files import move_aside
from fmnist.models import build_model
from fmnist.runtime import (  # noqa: F401 - re-exported: the trainer's public names since before the split
    Batches,
    Normalizer,
    atomic_torch_save,
    configure_backends,
    device_name,
    peak_memory_mb,
    select_device,
    to_unit,
    versions,
)

NOT_LEARNED_ACCURACY = 0.15  # chance is 0.10; a run at or below this learned nothing

TERMINATED_EXIT = 128 + signal.SIGTERM
"""A run stopped by SIGTERM exits with this code (a shell's for a SIGTERM'd process): its job fails and
is retried or requeued, and the retry resumes after the last saved epoch."""
DEFAULT_GRACE_S = 60.0
"""Seconds the epoch in progress may still take after a SIGTERM (config sigterm_grace_s)."""
EVAL_MARGIN = 1.25
"""The epoch's remaining steps x this: the rest of the epoch with its validation pass."""


class Terminated(SystemExit):
    """The run stopped on SIGTERM; its last finished epoch is saved (exit code TERMINATED_EXIT)."""

    def __init__(self) -> None:
        super().__init__(TERMINATED_EXIT)


class EpochAbandoned(Exception):
    """SIGTERM came, and the epoch in progress would not finish within the grace period."""

    def __init__(self, epoch: int, step: int, steps: int, estimate_s: float | None):
        super().__init__(f"epoch {epoch}, step {step} of {steps}")
        self.epoch, self.step, self.steps, self.estimate_s = epoch, step, steps, estimate_s


class Termination:
    """A SIGTERM's request to stop (preemption, scancel, a time limit's warning signal).

    Resuming inside an epoch would change the run's numbers (the epoch's permutation and every
    augmentation draw come from the RNG stream the epoch started with), so a run stops only between
    epochs: at the first step after the signal, the epoch in progress is finished when the steps left
    (at the epoch's pace so far, with its validation pass) end within `grace_s`, then saved; otherwise
    it is abandoned at once and the run resumes after its last saved epoch. Decided once per signal."""

    def __init__(self, grace_s: float = DEFAULT_GRACE_S):
        self.grace_s = float(grace_s)
        self.deadline: float | None = None  # time.monotonic() by which the run must have exited
        self.finish_epoch: bool | None = None

    @property
    def requested(self) -> bool:
        return self.deadline is not None

    def request(self, *_args) -> None:
        """The signal handler: only notes the time (a second SIGTERM changes nothing)."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace_s

    def check(self, epoch: int, step: int, steps: int, epoch_seconds: float) -> None:
        """Before each step: raise EpochAbandoned when a SIGTERM came and the epoch cannot finish in time."""
        if self.deadline is None or self.finish_epoch:
            return
        estimate = None if step == 0 else epoch_seconds / step * (steps - step) * EVAL_MARGIN
        self.finish_epoch = estimate is not None and time.monotonic() + estimate <= self.deadline
        if not self.finish_epoch:
            raise EpochAbandoned(epoch, step, steps, estimate)

    @contextmanager
    def installed(self) -> Iterator[Termination]:
        """SIGTERM handled by `request` inside the block (the main thread only: elsewhere Python cannot
        set a handler, and the default action stays), the previous handler restored after."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self.request)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)



@torch.inference_mode()
def evaluate(model, split: Batches, normalize: Normalizer, batch_size: int, autocast, num_classes: int = 10,
             spread: bool = False):
    """Mean cross-entropy, accuracy and predictions of `model` on a whole split, in large batches;
    with `spread`, also the standard deviation of the per-image cross-entropies (the split's
    per-image loss spread that fmnist.stats.split_sd needs)."""
    model.eval()
    loss_sum = torch.zeros((), device=split.labels.device, dtype=torch.float64)
    square_sum = torch.zeros((), device=split.labels.device, dtype=torch.float64)
    preds = []
    for start in range(0, len(split), batch_size):
        x = normalize(to_unit(split.images[start:start + batch_size]))
        y = split.labels[start:start + batch_size]
        with autocast():
            logits = model(x)
        losses = torch.nn.functional.cross_entropy(logits.float(), y, reduction="none").double()
        loss_sum += losses.sum()
        square_sum += losses.square().sum()
        preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    correct = (pred == split.labels).sum()
    n = max(1, len(split))
    mean = float(loss_sum) / n
    if spread:
        variance = (float(square_sum) - n * mean**2) / max(1, n - 1)
        return mean, float(correct) / n, pred.cpu().numpy(), math.sqrt(max(variance, 0.0))
    return mean, float(correct) / n, pred.cpu().numpy()


def count_params(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


RESUME_KEYS = ("identity", "epoch", "model", "optimizer", "schedule", "ema", "history", "best",
               "bad_epochs", "elapsed", "images_seen", "rng")


def load_resume_state(path: Path, identity: str, device: torch.device,
                      log: Callable[[str], None] = print) -> dict | None:
    """The resume state at `path` if it is whole and of this config; else None, the file moved aside.

    Loaded with weights_only=True: plain tensors, numbers, strings, lists and dicts, never code, so a
    file planted in a shared results directory cannot run anything. A file that does not load, or
    that belongs to another config, is renamed (never deleted) and the run starts from epoch 0.
    """
    if not path.exists() and not path.is_symlink():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or any(k not in state for k in RESUME_KEYS):
            raise ValueError("not a resume state of this trainer")
        problem = "" if state["identity"] == identity else "it belongs to a different config"
    except Exception as exc:  # any unreadable file: the run must go on from scratch, not crash on retry
        text = str(exc).strip().splitlines()
        problem = f"it cannot be loaded ({text[0][:200] if text else type(exc).__name__})"
    if not problem:
        return state
    aside = move_aside(path, "unusable")
    log(f"ignoring {path}: {problem}; moved to {aside.name}, training from epoch 0")
    return None


class StepLoop:
    """The training steps of a run: model, optimizer, schedule, EMA, augmentation and loss, built once.

    `epoch()` is the trainer's inner loop; `fmnist bench` and the tests drive the same object, so
    what is measured and checked is what users run.
    """

    def __init__(self, model, optimizer, schedule, ema, aug, normalize, loss_fn, use_bf16: bool,
                 device: torch.device, batch_size: int, steps: int, divergence_loss: float,
                 compile_model: bool = False, cuda_graph: bool = False):
        self.model, self.optimizer, self.schedule, self.ema = model, optimizer, schedule, ema
        self.aug, self.normalize, self.loss_fn = aug, normalize, loss_fn
        self.use_bf16, self.device = use_bf16, device
        self.batch_size, self.steps, self.limit = batch_size, steps, divergence_loss
        self.step_model = torch.compile(model) if compile_model else model
        # A finiteness check reads the loss on the host: free on CPU, a pipeline stall on a GPU.
        self.check_every = 1 if device.type == "cpu" else 50
        self.graph = GraphedStep(self) if cuda_graph else None

    @property
    def amp_resolved(self) -> str:
        return "bf16" if self.use_bf16 else "off"

    @classmethod
    def build(cls, run: dict, num_classes: int, n_train: int, device: torch.device) -> StepLoop:
        cfg = run["train"]
        model = build_model(run["model"]["arch"], run["model"]["args"], num_classes=num_classes).to(device)
        if cfg["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        normalize = Normalizer(cfg["normalize"]["mean"], cfg["normalize"]["std"], cfg["channels_last"])
        aug = augment.build_augmentation(
            run["augmentation"]["kind"], run["augmentation"]["params"], num_classes
        )
        loss_fn = recipes.build_loss(cfg["loss"], num_classes)
        batch_size = int(cfg["batch_size"])
        steps = n_train // batch_size if cfg["drop_last"] else math.ceil(n_train / batch_size)
        steps = max(1, steps)
        optimizer = recipes.build_optimizer(model.parameters(), cfg["optimizer"])
        use_bf16 = amp.resolve_amp(cfg["amp"], device.type) == "bf16"
        cuda_graph = bool(cfg.get("cuda_graph", False))
        if cuda_graph:
            check_cuda_graph(cfg, device)
            graph_ready(optimizer, device)
        schedule = recipes.build_schedule(optimizer, cfg["scheduler"], cfg["epochs"], steps)
        if cuda_graph and "betas" in optimizer.defaults:
            schedule.keep_betas_in_tensors(optimizer)
        ema = recipes.build_ema(model, cfg["ema"])
        return cls(model, optimizer, schedule, ema, aug, normalize, loss_fn, use_bf16, device,
                   batch_size, steps, float(cfg["divergence_loss"]), compile_model=cfg["compile"],
                   cuda_graph=cuda_graph)

    def autocast(self, cache_enabled: bool = True):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16,
                              cache_enabled=cache_enabled)

    def step(self, images_u8: torch.Tensor, labels: torch.Tensor):
        """One optimizer step on a uint8 batch (N, 1, 28, 28); returns (loss, logits, target), detached."""
        x = to_unit(images_u8)
        x, target = self.aug(x, labels)
        x = self.normalize(x)
        if self.graph is not None and len(x) == self.batch_size:
            loss, logits = self.graph.step(x, target)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.schedule.after_batch()
            return loss, logits, target
        with self.autocast():
            logits = self.step_model(x)
            loss = self.loss_fn(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.schedule.after_batch()
        return loss.detach(), logits.detach(), target

    def epoch(self, train: Batches, epoch: int, max_steps: int | None = None, stop: Termination | None = None):
        """One shuffled pass (or its first `max_steps` steps): (loss sum, correct count, images seen,
        divergence reason or ""). Images seen: fewer than the split's with drop_last or max_steps.
        `stop`: a SIGTERM's request, asked before each step (raises EpochAbandoned, see Termination).

        The sums stay on the device; the host reads the loss only every `check_every` steps.
        """
        self.model.train()
        dev, batch_size, n_train = self.device, self.batch_size, len(train)
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        perm = torch.randperm(n_train, device=dev)
        steps = self.steps if max_steps is None else min(self.steps, max_steps)
        seen = 0
        t0 = time.perf_counter()
        for step in range(steps):
            if stop is not None:
                stop.check(epoch, step, steps, time.perf_counter() - t0)
            idx = perm[step * batch_size:(step + 1) * batch_size]
            y = train.labels[idx]
            loss, logits, target = self.step(train.images[idx], y)
            loss_sum += loss.double() * len(idx)
            seen += len(idx)
            primary = target.argmax(1) if target.dim() == 2 else y  # mixed: the larger share
            correct += (logits.argmax(1) == primary).sum()
            if (step + 1) % self.check_every == 0 or step == steps - 1:
                last = float(loss)
                if not math.isfinite(last) or last > self.limit:
                    return loss_sum, correct, seen, f"training loss {last:.4g} at epoch {epoch}, step {step + 1}"
        return loss_sum, correct, seen, ""


def check_cuda_graph(cfg: dict, device: torch.device) -> None:
    """`cuda_graph: true` is a config error off CUDA (nothing to capture: the option would silently do
    nothing there), and for every recipe `config.cuda_graph_problem` refuses."""
    problem = cuda_graph_problem(cfg)
    if problem:
        raise ConfigError(problem)
    if device.type != "cuda":
        raise ConfigError(
            f"train.cuda_graph: true needs a CUDA device, and this run trains on {device.type}: "
            "set cuda_graph: false (or train on a GPU)"
        )


def graph_ready(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make `optimizer` replayable from a CUDA graph: its step count, lr and Adam betas live on
    `device` (the schedulers, built after this, fill the lr tensor in place instead of replacing it by
    a float; `Schedule.keep_betas_in_tensors` does the same for betas). On CUDA the step is torch's
    capturable multi-tensor one: the fused kernel takes beta1 as a float, which a one-cycle schedule
    would freeze at its capture-time value."""
    cuda = device.type == "cuda"
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = cuda
        if "fused" in group:
            group["fused"] = False
            group["foreach"] = cuda  # off CUDA a tensor lr needs the single-tensor step
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
        if "betas" in group:
            group["betas"] = tuple(torch.tensor(float(b), device=device) for b in group["betas"])


class GraphedStep:
    """Forward, loss, backward and optimizer step of full batches replayed from one CUDA graph.

    What stays outside the graph, so it behaves as in the eager step: the augmentation (some draw on
    the host), EMA and the LR schedule (the lr is a GPU tensor the graph reads, filled by the
    scheduler). The first `WARMUP` full batches train eagerly on a side stream (cuDNN picks its
    algorithms, the optimizer creates its state), the next is captured and replayed; a last, smaller
    batch trains eagerly. Inputs are copied into static buffers before each replay.
    """

    WARMUP = 3

    def __init__(self, loop: StepLoop):
        self.loop, self.calls = loop, 0
        self.graph = None
        self.x = self.target = self.loss = self.logits = None

    def _forward_backward(self, x, target):
        loop = self.loop
        with loop.autocast(cache_enabled=False):
            logits = loop.step_model(x)
            loss = loop.loss_fn(logits, target)
        loss.backward()
        loop.optimizer.step()
        return loss, logits

    def step(self, x: torch.Tensor, target: torch.Tensor):
        loop = self.loop
        if self.graph is None and self.calls < self.WARMUP:
            self.calls += 1
            side = torch.cuda.Stream(loop.device)
            side.wait_stream(torch.cuda.current_stream(loop.device))
            with torch.cuda.stream(side):
                loop.optimizer.zero_grad(set_to_none=True)
                loss, logits = self._forward_backward(x, target)
            torch.cuda.current_stream(loop.device).wait_stream(side)
            return loss.detach(), logits.detach()
        if self.graph is None:
            self.x, self.target = x.clone(), target.clone()
            self.graph = torch.cuda.CUDAGraph()
            loop.optimizer.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients
            with torch.cuda.graph(self.graph):
                loss, logits = self._forward_backward(self.x, self.target)
            self.loss, self.logits = loss.detach(), logits.detach()
        self.x.copy_(x)
        self.target.copy_(target)
        self.graph.replay()
        return self.loss.clone(), self.logits.clone()


class StopRule:
    """Early stopping and best-epoch selection, in one place: which epoch is an improvement, and when a
    run is done. Report-specific readings (which metric, what patience) come in through the config.

    `patience` counts consecutive epochs without an improvement of more than `min_delta` on `monitor`;
    patience 0 stops at the first such epoch, as patience 1 does (an epoch must fail to improve before
    a run can stop). With `enabled` false a run trains its full epoch budget.
    """

    def __init__(self, early_stopping: dict):
        self.enabled = bool(early_stopping["enabled"])
        self.monitor = early_stopping["monitor"]
        self.patience = int(early_stopping["patience"])
        self.min_delta = float(early_stopping["min_delta"])
        self.higher_better = self.monitor == "val_accuracy"

    def score(self, row: dict) -> float:
        return row[self.monitor]

    def improves(self, score: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.higher_better:
            return score > best + self.min_delta
        return score < best - self.min_delta

    def observe(self, score: float, best: float | None, bad_epochs: int) -> tuple[bool, int]:
        """(whether `score` improves on `best`, the count of consecutive epochs without improvement after it)."""
        if self.improves(score, best):
            return True, 0
        return False, bad_epochs + 1

    def should_stop(self, bad_epochs: int) -> bool:
        return self.enabled and bad_epochs >= max(1, self.patience)


@dataclass
class Progress:
    """Everything about a run that grows epoch by epoch and is saved in its resume state."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": None, "epoch": 0, "state": None})
    bad_epochs: int = 0
    elapsed: float = 0.0
    images_seen: int = 0
    status: str = "ok"
    reason: str = ""
    resumed_from: int | None = None
    """The epoch whose saved state this process started from (None: it started from epoch 0)."""
    segments: list[dict] = field(default_factory=list)
    """One {"start", "end"} (UTC, ISO 8601) per process that trained the run: a resumed run has
    several, and the gaps between them are its pauses (metrics.json `provenance`)."""


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def source_commit() -> str | None:
    """The git commit of the checkout this module runs from, with "+dirty" for uncommitted edits;
    None outside a git checkout."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "."],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


def machine() -> str:
    """The host's CPU model and logical core count, e.g. "AMD EPYC 7B13, 2 cores"."""
    model = amp.cpu_model() or platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def provenance(p: Progress, finished: str) -> dict:
    """When and where the run trained, from its segments: start, end, the pauses between segments."""
    segments = [dict(x) for x in p.segments] or [{"start": None, "end": finished}]
    segments[-1]["end"] = finished
    pauses = [{"from": a.get("end"), "to": b.get("start")} for a, b in zip(segments, segments[1:], strict=False)]
    return {"commit": source_commit(), "machine": machine(), "started": segments[0].get("start"), "finished": finished,
            "segments": segments, "pauses": pauses,
            "note": "pauses are the gaps between the processes that trained the run (stopped and resumed); "
                    "a process suspended in place (SIGSTOP) is not seen"}


@dataclass
class RunSetup:
    """A run ready to train: its device, data splits on the device, step loop and stop rule."""

    run: dict
    dev: torch.device
    arrays: dict[str, np.ndarray]
    meta: dict
    classes: list[str]
    train: Any
    val: Any
    cached: dict | None
    loop: StepLoop
    full_model: torch.nn.Module
    n_params: int
    n_trainable: int
    rule: StopRule
    identity: str

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated: the EMA average when the recipe keeps one."""
        return self.loop.ema.module if self.loop.ema is not None else self.loop.model

    def evaluate(self, split) -> tuple[float, float, np.ndarray]:
        cfg = self.run["train"]
        return evaluate(self.eval_model, split, self.loop.normalize, cfg["eval_batch_size"], self.loop.autocast)


def setup_run(run: dict, data_path: Path | str, device: str = "auto", threads: int | None = None,
              features_path: Path | str | None = None) -> RunSetup:
    """Seed, device, data (or the run's cached backbone features) and the step loop of `run`."""
    cfg = run["train"]
    if threads:
        torch.set_num_threads(int(threads))
    dev = select_device(device)
    configure_backends(dev)
    torch.manual_seed(run["seed"])

    arrays, meta = data.load_prepared(data_path)
    classes = meta["classes"]
    train_x, train_y = arrays["train_images"], arrays["train_labels"]
    keep = None
    if cfg["train_fraction"] < 1.0:
        keep = data.stratified_subset(
            train_y, float(cfg["train_fraction"]), np.random.default_rng(meta["split_seed"])
        )
        train_x, train_y = train_x[keep], train_y[keep]
    if features_path and not features.cacheable(run):
        raise ValueError(f"{run['id']}: cannot train on cached features ({features_path}): its backbone does not "
                         "compute the same features every epoch (augmentation, resize, EMA, or `frozen_norms: "
                         "train`, see fmnist.features.cacheable); train it on images (no features path)")
    cached = features.load(features_path, dev, keep) if features_path else None
    train = cached["train"] if cached else Batches(train_x, train_y, dev)
    val = cached["val"] if cached else Batches(arrays["val_images"], arrays["val_labels"], dev)

    loop = StepLoop.build(run, len(classes), n_train=len(train), device=dev)
    full_model = loop.model
    n_params, n_trainable = count_params(full_model)
    if cached:
        features.attach_head(loop)
    identity = config_hash({**run, "cached_features": True} if cached else run)  # resume state differs
    return RunSetup(run, dev, arrays, meta, classes, train, val, cached, loop, full_model, n_params, n_trainable,
                    StopRule(cfg["early_stopping"]), identity)


def restore_progress(s: RunSetup, resume_path: Path, log: Callable[[str], None]) -> Progress:
    """The run's progress from its resume state (model, optimizer, schedule, EMA and RNG restored in
    place), or a fresh start when there is no usable state."""
    state = load_resume_state(resume_path, s.identity, s.dev, log=log)
    if state is None:
        return Progress()
    loop = s.loop
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.schedule.load_state_dict(state["schedule"])
    if loop.ema is not None and state.get("ema") is not None:
        loop.ema.load_state_dict(state["ema"])
    _set_rng_state(state["rng"], s.dev)
    log(f"resuming after epoch {state['epoch']} from {resume_path}")
    return Progress(epoch=state["epoch"], history=state["history"], best=state["best"],
                    bad_epochs=state["bad_epochs"], elapsed=state["elapsed"], images_seen=state["images_seen"],
                    resumed_from=state["epoch"], segments=list(state.get("segments") or []))


def save_progress(s: RunSetup, p: Progress, path: Path) -> None:
    loop = s.loop
    atomic_torch_save(
        {
            "identity": s.identity, "epoch": p.epoch, "model": loop.model.state_dict(),
            "optimizer": loop.optimizer.state_dict(), "schedule": loop.schedule.state_dict(),
            "ema": loop.ema.state_dict() if loop.ema is not None else None, "history": p.history,
            "best": p.best, "bad_epochs": p.bad_epochs, "elapsed": p.elapsed,
            "images_seen": p.images_seen, "rng": _rng_state(s.dev),
            "segments": [{**x, "end": x.get("end") or utc_now()} if i == len(p.segments) - 1 else x
                         for i, x in enumerate(p.segments)],
        },
        path,
    )


def history_row(epoch: int, **values) -> dict:
    """One epoch's row of history.csv, each value a Python number whatever it came as: under
    cuda_graph the lr is a GPU tensor, and a tensor's repr in the file (`tensor(0.0020,
    device='cuda:0')`) is not a number any reader of the file can parse."""
    return {"epoch": int(epoch), **{k: float(v) for k, v in values.items()}}


def train_epoch(s: RunSetup, p: Progress, max_steps: int | None, log: Callable[[str], None],
                stop: Termination | None = None) -> bool:
    """Train epoch `p.epoch + 1`, evaluate it and apply the stop rule; False when the run diverged
    (recorded in `p`, the epoch not counted). The caller saves the progress. EpochAbandoned (a SIGTERM,
    `stop`) leaves `p` as it was."""
    loop, cfg, rule = s.loop, s.run["train"], s.rule
    epoch = p.epoch + 1
    t0 = time.perf_counter()
    loss_sum, correct, seen, reason = loop.epoch(s.train, epoch, max_steps=max_steps, stop=stop)
    if reason:
        p.status, p.reason = "diverged", reason
        log(f"diverged: {reason}; recording the run as diverged")
        return False
    val_loss, val_acc, _ = s.evaluate(s.val)
    seconds = time.perf_counter() - t0
    p.epoch, p.elapsed, p.images_seen = epoch, p.elapsed + seconds, p.images_seen + seen
    row = history_row(epoch, train_loss=float(loss_sum) / seen, train_accuracy=float(correct) / seen,
                      val_loss=val_loss, val_accuracy=val_acc, lr=loop.optimizer.param_groups[0]["lr"],
                      seconds=seconds)
    p.history.append(row)
    loop.schedule.after_epoch(val_loss)
    score = rule.score(row)
    improved, p.bad_epochs = rule.observe(score, p.best["score"], p.bad_epochs)
    if improved:
        p.best = {"score": score, "epoch": epoch, "state": copy.deepcopy(s.eval_model.state_dict())}
    log(
        f"epoch {epoch}/{cfg['epochs']} train_loss {row['train_loss']:.4f} "
        f"train_acc {row['train_accuracy']:.4f} val_loss {val_loss:.4f} val_acc {val_acc:.4f} "
        f"lr {row['lr']:.2e} {seconds:.1f}s" + (" *" if improved else "")
    )
    return True


def test_tested_weights(s: RunSetup, p: Progress) -> dict:
    """Load the weights the run is tested with (a fixed-epoch run: its final ones, unless the config asks
    for the best), then test them: loss, accuracy, confusion matrix and its summary, and the same weights'
    per-image loss spread on val. NaNs when the run diverged before any epoch finished."""
    cfg, loop = s.run["train"], s.loop
    es = cfg["early_stopping"]
    num_classes = len(s.classes)
    final = s.eval_model
    restore_best = es["enabled"] if es["restore_best"] is None else es["restore_best"]
    tested_epoch = len(p.history)
    if p.best["state"] is not None and (restore_best or p.status == "diverged"):
        final.load_state_dict(p.best["state"])
        tested_epoch = p.best["epoch"]
    test = s.cached["test"] if s.cached else Batches(s.arrays["test_images"], s.arrays["test_labels"], s.dev)
    if p.best["state"] is None and p.status != "ok":  # diverged before any epoch finished: nothing to test
        summary = {k: None for k in ("precision_macro", "recall_macro", "f1_macro")}
        summary["per_class_accuracy"] = {c: None for c in s.classes}
        return {"model": final, "test": test, "tested_epoch": tested_epoch, "loss": float("nan"),
                "accuracy": float("nan"), "cm": np.zeros((num_classes, num_classes), dtype=np.int64),
                "summary": summary, "val_spread": (math.nan, math.nan)}
    test_loss, test_acc, pred = s.evaluate(test)
    cm = metrics.confusion_matrix(s.arrays["test_labels"], pred, num_classes)
    val_mean, _, _, val_std = evaluate(final, s.val, loop.normalize, cfg["eval_batch_size"], loop.autocast,
                                       spread=True)
    return {"model": final, "test": test, "tested_epoch": tested_epoch, "loss": test_loss, "accuracy": test_acc,
            "cm": cm, "summary": metrics.summarize(cm, s.classes), "val_spread": (val_mean, val_std)}


def finish_run(s: RunSetup, p: Progress, out_dir: Path) -> dict:
    """Test the chosen weights, then write history.csv, confusion.csv, model.pt and, last, metrics.json."""
    run, cfg, loop = s.run, s.run["train"], s.loop
    tested = test_tested_weights(s, p)
    final, test, tested_epoch = tested["model"], tested["test"], tested["tested_epoch"]
    test_loss, test_acc, cm, summary = tested["loss"], tested["accuracy"], tested["cm"], tested["summary"]
    val_spread = tested["val_spread"]
    status, reason = p.status, p.reason
    if status == "ok" and test_acc <= NOT_LEARNED_ACCURACY:
        status, reason = "not_learned", f"test accuracy {test_acc:.3f} is at chance level"

    history, meta = p.history, s.meta
    runfiles.write_history(out_dir / runfiles.HISTORY_FILE, history)
    runfiles.write_confusion(out_dir / runfiles.CONFUSION_FILE, cm, s.classes)
    atomic_torch_save((s.full_model if s.cached else final).state_dict(), out_dir / runfiles.MODEL_FILE)
    result = {
        "run_id": run["id"],
        "status": status,
        "status_reason": reason,
        "model": run["model"]["name"],
        "arch": run["model"]["arch"],
        "augmentation": run["augmentation"]["name"],
        "setting": run["setting"],
        "seed": run["seed"],
        "test_accuracy": _num(test_acc),
        "test_loss": _num(test_loss),
        "precision_macro": summary["precision_macro"],
        "recall_macro": summary["recall_macro"],
        "f1_macro": summary["f1_macro"],
        "per_class_accuracy": summary["per_class_accuracy"],
        "confusion_matrix": {"classes": s.classes, "counts": cm.astype(int).tolist(),
                             "note": "counts[i][j]: test images of true class i predicted as class j"},
        "best_epoch": p.best["epoch"],
        "tested_epoch": tested_epoch,
        "best_val_loss": _num(min((h["val_loss"] for h in history), default=float("nan"))),
        "best_val_accuracy": _num(max((h["val_accuracy"] for h in history), default=float("nan"))),
        "val_loss_tested": _num(val_spread[0]),
        "val_loss_image_std": _num(val_spread[1]),
        "epochs_run": len(history),
        "epochs_max": cfg["epochs"],
        "resumed_from_epoch": p.resumed_from,
        "params": s.n_params,
        "trainable_params": s.n_trainable,
        "train_seconds": round(p.elapsed, 3),
        "images_per_second": round(p.images_seen / p.elapsed, 1) if p.elapsed > 0 else None,
        "peak_memory_mb": round(peak_memory_mb(s.dev), 1),
        "train_accuracy": _num(history[-1]["train_accuracy"]) if history else None,
        "train_accuracy_vs_primary_label": bool(loop.aug.mixes_labels),
        "train_accuracy_note": (
            "train accuracy counts a mixed image as correct when the prediction is its primary label (the larger share of its target)"
            if loop.aug.mixes_labels else ""
        ),
        "evaluated_with_ema": loop.ema is not None,
        "amp_resolved": loop.amp_resolved,
        "cached_features": bool(s.cached),
        "device": str(s.dev),
        "device_name": device_name(s.dev),
        "n_train": len(s.train),
        "n_val": len(s.val),
        "n_test": len(test),
        "data": {k: meta[k] for k in ("val_fraction", "split_seed", "train_limit", "test_limit")},
        "versions": versions(),
        "config_hash": s.identity,
        "provenance": provenance(p, utc_now()),
        "config": run,
    }
    return runfiles.write_metrics(out_dir, result)  # adds the SHA-256 of the files written above


def train_run(
    run: dict,
    data_path: Path | str,
    out_dir: Path | str,
    device: str = "auto",
    threads: int | None = None,
    log: Callable[[str], None] = print,
    resume: bool = True,
    stop_after_epochs: int | None = None,
    max_steps: int | None = None,
    features_path: Path | str | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> dict:
    """Train `run` (a resolved config from fmnist.experiments) and write its files into `out_dir`.

    Writes history.csv, confusion.csv, model.pt and, last, metrics.json. Returns the metrics.
    `stop_after_epochs` ends the process once that epoch's state is saved, as a kill would, even when
    that epoch ended the run (resume tests). `max_steps` caps the steps of each epoch (smoke mode).
    `features_path`: the run's cached backbone features (fmnist.features); the run then trains and
    evaluates only its head on them.

    The stop rule is asked before every epoch, a resumed run's first included: a run whose saved
    state had already decided to stop goes straight to its final evaluation.

    On SIGTERM (preemption, scancel, a time limit's warning signal) the run finishes the epoch in
    progress if it ends within `grace_s` seconds and saves it, else abandons it at once; either way it
    then raises Terminated (exit code TERMINATED_EXIT), so its job fails and is retried, resuming after
    the last saved epoch with the numbers of an uninterrupted run (Termination). A SIGTERM during the
    final evaluation lets the run finish.
    """
    t_setup = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"[{run['id']}]"

    def say(msg: str) -> None:
        log(f"{tag} {msg}")

    s = setup_run(run, data_path, device=device, threads=threads, features_path=features_path)
    resume_path = out_dir / runfiles.RESUME_FILE
    p = restore_progress(s, resume_path, say) if resume else Progress()
    p.segments.append({"start": utc_now(), "end": None})
    cfg, loop, rule = run["train"], s.loop, s.rule
    say(
        f"device {s.dev} ({device_name(s.dev)}), {s.n_params:,} parameters, "
        f"{len(s.train)} train / {len(s.val)} val images, {loop.steps} steps of {loop.batch_size} per epoch"
        f"{f' (capped at {max_steps})' if max_steps is not None and max_steps < loop.steps else ''}, "
        f"setup {time.perf_counter() - t_setup:.1f}s"
    )
    stop = Termination(grace_s)
    with stop.installed():
        while p.epoch < cfg["epochs"] and not rule.should_stop(p.bad_epochs):
            try:
                trained = train_epoch(s, p, max_steps, say, stop)
            except EpochAbandoned as why:
                pace = "" if why.estimate_s is None else f" (about {why.estimate_s:.0f}s left)"
                say(f"SIGTERM: stopping at {why}: the epoch would not end within the {stop.grace_s:g}s grace "
                    f"period{pace}, so it is not saved; exit code {TERMINATED_EXIT}, and the run resumes "
                    f"after epoch {p.epoch} from {resume_path}")
                raise Terminated() from None
            if not trained:
                break
            save_progress(s, p, resume_path)
            if stop.requested:
                say(f"SIGTERM: epoch {p.epoch} finished within the {stop.grace_s:g}s grace period and is saved; "
                    f"exit code {TERMINATED_EXIT}, and the run resumes after epoch {p.epoch} from {resume_path}")
                raise Terminated()
            if stop_after_epochs is not None and p.epoch >= stop_after_epochs:
                raise SystemExit(f"{tag} stopped after epoch {p.epoch} on request")
        if p.status == "ok" and rule.should_stop(p.bad_epochs):
            say(f"early stop: no {rule.monitor} gain for {p.bad_epochs} epochs (best epoch {p.best['epoch']})")

        result = finish_run(s, p, out_dir)  # a SIGTERM here: the run finishes (its files are short work)
        resume_path.unlink(missing_ok=True)
    say(f"{result['status']}: test accuracy {_fmt(result['test_accuracy'])}, loss {_fmt(result['test_loss'])}, "
        f"best epoch {p.best['epoch']}, {p.elapsed:.1f}s training")
    return result


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.4f}"


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def main_log(path: Path | str | None) -> Callable[[str], None]:
    """A logger that prints and, when a path is given, appends to that file (flushed per line)."""
    fh = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - lives as long as the job

    def log(msg: str) -> None:
        print(msg, file=sys.stdout, flush=True)
        if fh:
            fh.write(msg + "\n")

    return log
