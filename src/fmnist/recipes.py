"""Training recipe parts built from a run's `train` config: loss, optimizer, LR schedule, EMA of weights."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class Loss(nn.Module):
    """Cross-entropy on hard or soft targets (label smoothing optional), or BCE-with-logits on one-hots.

    Soft targets are what MixUp/CutMix produce; report B trained MixUp with BCE, kept as `bce`.
    """

    def __init__(self, name: str = "cross_entropy", label_smoothing: float = 0.0, num_classes: int = 10):
        super().__init__()
        self.name, self.label_smoothing, self.num_classes = name, label_smoothing, num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.name == "cross_entropy":
            return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        if target.dim() == 1:
            target = F.one_hot(target, self.num_classes).to(logits.dtype)
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
        return F.binary_cross_entropy_with_logits(logits, target)


def build_loss(cfg: dict[str, Any], num_classes: int = 10) -> Loss:
    return Loss(cfg.get("name", "cross_entropy"), cfg.get("label_smoothing", 0.0), num_classes)


def build_optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = cfg["name"], cfg["lr"], cfg.get("weight_decay", 0.0)
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))), weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.get("momentum", 0.0), nesterov=cfg.get("nesterov", False),
            weight_decay=wd,
        )
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.get("momentum", 0.0), weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}; known: adam, adamw, sgd, adagrad, rmsprop")


class Schedule:
    """An LR scheduler with the knowledge of when to step it: per batch, per epoch, or on val loss."""

    def __init__(self, scheduler: lr_scheduler.LRScheduler | None, per: str):
        self.scheduler, self.per = scheduler, per

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per == "batch":
            self.scheduler.step()

    def after_epoch(self, val_loss: float) -> None:
        if self.scheduler is None:
            return
        if self.per == "epoch":
            self.scheduler.step()
        elif self.per == "plateau":
            self.scheduler.step(val_loss)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)


def build_schedule(opt: torch.optim.Optimizer, cfg: dict[str, Any], epochs: int, steps_per_epoch: int) -> Schedule:
    name = cfg.get("name", "none")
    if name == "none":
        return Schedule(None, "none")
    if name == "step":
        return Schedule(lr_scheduler.StepLR(opt, cfg["step_size"], gamma=cfg["gamma"]), "epoch")
    if name == "cosine":
        return Schedule(lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=cfg.get("min_lr", 0.0)), "epoch")
    if name == "plateau":
        return Schedule(
            lr_scheduler.ReduceLROnPlateau(opt, factor=cfg["gamma"], patience=cfg["patience"],
                                           min_lr=cfg.get("min_lr", 0.0)),
            "plateau",
        )
    total = max(1, epochs * steps_per_epoch)
    if name == "onecycle":
        max_lrs = [g["lr"] * cfg["max_lr_factor"] for g in opt.param_groups]
        return Schedule(lr_scheduler.OneCycleLR(opt, max_lr=max_lrs, total_steps=total), "batch")
    if name == "warmup":  # linear warm-up over warmup_epochs, then the constant base lr
        warm = max(1, int(round(cfg["warmup_epochs"] * steps_per_epoch)))
        return Schedule(lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm)), "batch")
    if name == "warmup_cosine":
        warm = max(1, int(round(cfg["warmup_epochs"] * steps_per_epoch)))
        floor = cfg.get("min_lr", 0.0)
        base = [g["lr"] for g in opt.param_groups]

        def factor(step: int, base_lr: float) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, total - warm))
            cos = 0.5 * (1 + math.cos(math.pi * progress))
            return (floor + (base_lr - floor) * cos) / base_lr

        lambdas = [lambda s, b=b: factor(s, b) for b in base]
        return Schedule(lr_scheduler.LambdaLR(opt, lambdas), "batch")
    raise ValueError(
        f"unknown scheduler {name!r}; known: none, step, cosine, onecycle, plateau, warmup, warmup_cosine"
    )


def build_ema(model: nn.Module, cfg: dict[str, Any]) -> AveragedModel | None:
    """An exponential moving average of the weights (and buffers), or None when disabled."""
    if not cfg.get("enabled"):
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg["decay"]), use_buffers=True)
