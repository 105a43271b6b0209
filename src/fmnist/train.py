"""Train one resolved run on the device that is there and write its per-run files.

The whole dataset is held as one uint8 tensor on the training device; batches are indexed from
it and augmented there, each image with its own random draw. Losses and accuracies accumulate on
the device, so a step never waits for the host. The run's full state is saved after each epoch
to a resume file beside its outputs, so a killed job continues where it stopped.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist import augment, data, features, metrics, recipes
from fmnist.experiments import config_hash
from fmnist.integrity import HISTORY_COLUMNS
from fmnist.models import build_model

RESUME_FILE = "resume.pt"
NOT_LEARNED_ACCURACY = 0.15  # chance is 0.10; a run at or below this learned nothing


def select_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {spec!r} requested but CUDA is not available here; set `device: auto` or `cpu`"
        )
    return device


def versions() -> dict[str, str]:
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or ""),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class Batches:
    """A split held on the device: uint8 images (N, 1, 28, 28) and int64 labels (N,)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(device)
        self.labels = torch.from_numpy(labels.astype(np.int64)).to(device)

    def __len__(self) -> int:
        return len(self.labels)


class Normalizer:
    def __init__(self, mean: float, std: float, channels_last: bool):
        self.mean, self.std, self.channels_last = mean, std, channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    if images_u8.dtype != torch.uint8:  # cached backbone features (fmnist.features) arrive as floats
        return images_u8
    return images_u8.float().div_(255.0)


@torch.inference_mode()
def evaluate(model, split: Batches, normalize: Normalizer, batch_size: int, autocast, num_classes: int = 10):
    """Mean cross-entropy, accuracy and predictions of `model` on a whole split, in large batches."""
    model.eval()
    loss_sum = torch.zeros((), device=split.labels.device, dtype=torch.float64)
    preds = []
    for start in range(0, len(split), batch_size):
        x = normalize(to_unit(split.images[start:start + batch_size]))
        y = split.labels[start:start + batch_size]
        with autocast():
            logits = model(x)
        loss_sum += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
        preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    correct = (pred == split.labels).sum()
    n = max(1, len(split))
    return float(loss_sum) / n, float(correct) / n, pred.cpu().numpy()


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_text(path: Path, text: str) -> None:
    data.atomic_write_bytes(path, text.encode())


def count_params(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


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
    aside = data.move_aside(path, "unusable")
    log(f"ignoring {path}: {problem}; moved to {aside.name}, training from epoch 0")
    return None


class StepLoop:
    """The training steps of a run: model, optimizer, schedule, EMA, augmentation and loss, built once.

    `epoch()` is the trainer's inner loop; `fmnist bench` and the tests drive the same object, so
    what is measured and checked is what users run.
    """

    def __init__(self, model, optimizer, schedule, ema, aug, normalize, loss_fn, use_bf16: bool,
                 device: torch.device, batch_size: int, steps: int, divergence_loss: float,
                 compile_model: bool = False):
        self.model, self.optimizer, self.schedule, self.ema = model, optimizer, schedule, ema
        self.aug, self.normalize, self.loss_fn = aug, normalize, loss_fn
        self.use_bf16, self.device = use_bf16, device
        self.batch_size, self.steps, self.limit = batch_size, steps, divergence_loss
        self.step_model = torch.compile(model) if compile_model else model
        # A finiteness check reads the loss on the host: free on CPU, a pipeline stall on a GPU.
        self.check_every = 1 if device.type == "cpu" else 50

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
        schedule = recipes.build_schedule(optimizer, cfg["scheduler"], cfg["epochs"], steps)
        ema = recipes.build_ema(model, cfg["ema"])
        use_bf16 = cfg["amp"] == "bf16" or (cfg["amp"] == "auto" and device.type == "cuda")
        return cls(model, optimizer, schedule, ema, aug, normalize, loss_fn, use_bf16, device,
                   batch_size, steps, float(cfg["divergence_loss"]), compile_model=cfg["compile"])

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def step(self, images_u8: torch.Tensor, labels: torch.Tensor):
        """One optimizer step on a uint8 batch (N, 1, 28, 28); returns (loss, logits, target), detached."""
        x = to_unit(images_u8)
        x, target = self.aug(x, labels)
        x = self.normalize(x)
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

    def epoch(self, train: Batches, epoch: int, max_steps: int | None = None):
        """One shuffled pass (or its first `max_steps` steps): (loss sum, correct count, images seen,
        divergence reason or ""). Images seen: fewer than the split's with drop_last or max_steps.

        The sums stay on the device; the host reads the loss only every `check_every` steps.
        """
        self.model.train()
        dev, batch_size, n_train = self.device, self.batch_size, len(train)
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        perm = torch.randperm(n_train, device=dev)
        steps = self.steps if max_steps is None else min(self.steps, max_steps)
        seen = 0
        for step in range(steps):
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
) -> dict:
    """Train `run` (a resolved config from fmnist.experiments) and write its files into `out_dir`.

    Writes history.csv, confusion.csv, model.pt and, last, metrics.json. Returns the metrics.
    `stop_after_epochs` ends the process's work early (as a kill would) for resume tests.
    `max_steps` caps the steps of each epoch (smoke mode). `features_path`: the run's cached backbone
    features (fmnist.features); the run then trains and evaluates only its head on them.
    """
    t_setup = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = run["train"]
    if threads:
        torch.set_num_threads(int(threads))
    dev = select_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(run["seed"])

    arrays, meta = data.load_prepared(data_path)
    classes = meta["classes"]
    num_classes = len(classes)
    train_x, train_y = arrays["train_images"], arrays["train_labels"]
    keep = None
    if cfg["train_fraction"] < 1.0:
        keep = data.stratified_subset(
            train_y, float(cfg["train_fraction"]), np.random.default_rng(meta["split_seed"])
        )
        train_x, train_y = train_x[keep], train_y[keep]
    cached = features.load(features_path, dev, keep) if features_path else None
    train = cached["train"] if cached else Batches(train_x, train_y, dev)
    val = cached["val"] if cached else Batches(arrays["val_images"], arrays["val_labels"], dev)

    loop = StepLoop.build(run, num_classes, n_train=len(train), device=dev)
    full_model = loop.model
    n_params, n_trainable = count_params(full_model)
    if cached:
        features.attach_head(loop)
    model, optimizer, schedule, ema = loop.model, loop.optimizer, loop.schedule, loop.ema
    normalize, autocast, aug = loop.normalize, loop.autocast, loop.aug
    batch_size, steps, n_train = loop.batch_size, loop.steps, len(train)
    es = cfg["early_stopping"]
    higher_better = es["monitor"] == "val_accuracy"

    history: list[dict] = []
    best = {"score": None, "epoch": 0, "state": None}
    bad_epochs, start_epoch, elapsed, images_seen = 0, 0, 0.0, 0
    status, reason = "ok", ""
    identity = config_hash({**run, "cached_features": True} if cached else run)  # resume state differs
    resume_path = out_dir / RESUME_FILE
    state = load_resume_state(resume_path, identity, dev, log=lambda m: log(f"[{run['id']}] {m}")) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history, best, bad_epochs = state["history"], state["best"], state["bad_epochs"]
        start_epoch, elapsed, images_seen = state["epoch"], state["elapsed"], state["images_seen"]
        _set_rng_state(state["rng"], dev)
        log(f"[{run['id']}] resuming after epoch {start_epoch} from {resume_path}")

    log(
        f"[{run['id']}] device {dev} ({device_name(dev)}), {n_params:,} parameters, "
        f"{n_train} train / {len(val)} val images, {steps} steps of {batch_size} per epoch"
        f"{f' (capped at {max_steps})' if max_steps is not None and max_steps < steps else ''}, "
        f"setup {time.perf_counter() - t_setup:.1f}s"
    )
    epoch = start_epoch
    for epoch in range(start_epoch + 1, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        loss_sum, correct, seen, reason = loop.epoch(train, epoch, max_steps=max_steps)
        if reason:
            status = "diverged"
            log(f"[{run['id']}] diverged: {reason}; recording the run as diverged")
            break
        eval_model = ema.module if ema is not None else model
        val_loss, val_acc, _ = evaluate(eval_model, val, normalize, cfg["eval_batch_size"], autocast)
        seconds = time.perf_counter() - t0
        elapsed += seconds
        images_seen += seen
        train_loss = float(loss_sum) / seen
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": float(correct) / seen,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
        }
        history.append(row)
        schedule.after_epoch(val_loss)
        score = val_acc if higher_better else val_loss
        improved = best["score"] is None or (
            score > best["score"] + es["min_delta"] if higher_better else score < best["score"] - es["min_delta"]
        )
        if improved:
            best = {"score": score, "epoch": epoch, "state": copy.deepcopy(eval_model.state_dict())}
            bad_epochs = 0
        else:
            bad_epochs += 1
        log(
            f"[{run['id']}] epoch {epoch}/{cfg['epochs']} train_loss {train_loss:.4f} "
            f"train_acc {row['train_accuracy']:.4f} val_loss {val_loss:.4f} val_acc {val_acc:.4f} "
            f"lr {row['lr']:.2e} {seconds:.1f}s" + (" *" if improved else "")
        )
        stop = es["enabled"] and bad_epochs >= max(1, es["patience"])
        atomic_torch_save(
            {
                "identity": identity, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "ema": ema.state_dict() if ema is not None else None, "history": history,
                "best": best, "bad_epochs": bad_epochs, "elapsed": elapsed,
                "images_seen": images_seen, "rng": _rng_state(dev),
            },
            resume_path,
        )
        if stop:
            log(f"[{run['id']}] early stop: no {es['monitor']} gain for {bad_epochs} epochs (best epoch {best['epoch']})")
            break
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            raise SystemExit(f"[{run['id']}] stopped after epoch {epoch} on request")

    final = ema.module if ema is not None else model
    # A fixed-epoch run (early stopping off) is its final weights unless the config asks for the best.
    restore_best = es["enabled"] if es["restore_best"] is None else es["restore_best"]
    tested_epoch = len(history)
    if best["state"] is not None and (restore_best or status == "diverged"):
        final.load_state_dict(best["state"])
        tested_epoch = best["epoch"]
    test = cached["test"] if cached else Batches(arrays["test_images"], arrays["test_labels"], dev)
    if best["state"] is not None or status == "ok":
        test_loss, test_acc, pred = evaluate(final, test, normalize, cfg["eval_batch_size"], autocast)
        cm = metrics.confusion_matrix(arrays["test_labels"], pred, num_classes)
        summary = metrics.summarize(cm, classes)
    else:  # diverged before any epoch finished: nothing to evaluate
        test_loss, test_acc = float("nan"), float("nan")
        cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        summary = {k: None for k in ("precision_macro", "recall_macro", "f1_macro")}
        summary["per_class_accuracy"] = {c: None for c in classes}
    if status == "ok" and test_acc <= NOT_LEARNED_ACCURACY:
        status, reason = "not_learned", f"test accuracy {test_acc:.3f} is at chance level"

    write_history(out_dir / "history.csv", history)
    write_confusion(out_dir / "confusion.csv", cm, classes)
    atomic_torch_save((full_model if cached else final).state_dict(), out_dir / "model.pt")
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
        "confusion_matrix": {"classes": classes, "counts": cm.astype(int).tolist(),
                             "note": "counts[i][j]: test images of true class i predicted as class j"},
        "best_epoch": best["epoch"],
        "tested_epoch": tested_epoch,
        "best_val_loss": _num(min((h["val_loss"] for h in history), default=float("nan"))),
        "best_val_accuracy": _num(max((h["val_accuracy"] for h in history), default=float("nan"))),
        "epochs_run": len(history),
        "epochs_max": cfg["epochs"],
        "params": n_params,
        "trainable_params": n_trainable,
        "train_seconds": round(elapsed, 3),
        "images_per_second": round(images_seen / elapsed, 1) if elapsed > 0 else None,
        "peak_memory_mb": round(peak_memory_mb(dev), 1),
        "train_accuracy": _num(history[-1]["train_accuracy"]) if history else None,
        "train_accuracy_vs_primary_label": bool(aug.mixes_labels),
        "train_accuracy_note": (
            "train accuracy counts a mixed image as correct when the prediction is its primary label (the larger share of its target)"
            if aug.mixes_labels else ""
        ),
        "evaluated_with_ema": ema is not None,
        "cached_features": bool(cached),
        "device": str(dev),
        "device_name": device_name(dev),
        "n_train": n_train,
        "n_val": len(val),
        "n_test": len(test),
        "data": {k: meta[k] for k in ("val_fraction", "split_seed", "train_limit", "test_limit")},
        "versions": versions(),
        "config_hash": identity,
        "config": run,
        # What this run wrote beside this file: a later reader tells a damaged or foreign copy apart.
        "files": {name: data.sha256_file(out_dir / name) for name in ("history.csv", "confusion.csv", "model.pt")},
    }
    atomic_text(out_dir / "metrics.json", json.dumps(result, indent=2, allow_nan=False))
    resume_path.unlink(missing_ok=True)
    log(f"[{run['id']}] {status}: test accuracy {test_acc:.4f}, loss {test_loss:.4f}, "
        f"best epoch {best['epoch']}, {elapsed:.1f}s training")
    return result


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)




def write_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, HISTORY_COLUMNS)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


def write_confusion(path: Path, cm: np.ndarray, classes: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, cm, strict=True):
            w.writerow([name, *map(int, row)])
    os.replace(tmp, path)


def main_log(path: Path | str | None) -> Callable[[str], None]:
    """A logger that prints and, when a path is given, appends to that file (flushed per line)."""
    fh = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - lives as long as the job

    def log(msg: str) -> None:
        print(msg, file=sys.stdout, flush=True)
        if fh:
            fh.write(msg + "\n")

    return log
