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


FUSED_OPTIMIZERS = ("adam", "adamw", "sgd")
"""Optimizers built with torch's fused kernels on CUDA (one launch for every parameter's update).
Elsewhere they keep torch's default implementation, so CPU runs train exactly as before."""


def build_optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = cfg["name"], cfg["lr"], cfg.get("weight_decay", 0.0)
    params = [p for p in params if p.requires_grad]
    fused = {"fused": True} if name in FUSED_OPTIMIZERS and params and all(p.is_cuda for p in params) else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))), weight_decay=wd,
                                **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))), weight_decay=wd,
                                 **fused)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.get("momentum", 0.0), nesterov=cfg.get("nesterov", False),
            weight_decay=wd, **fused,
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
        self.betas: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def keep_betas_in_tensors(self, opt: torch.optim.Optimizer) -> None:
        """Hold each group's Adam betas in two tensors that every later step fills in place.

        A scheduler that cycles momentum (OneCycleLR) writes a new float beta1 into the group each
        step; a CUDA graph captured the tensors it read, so they must stay the same objects and take
        the new values. Called once the optimizer's betas are tensors (`train.graph_ready`)."""
        self.betas = []
        for group in opt.param_groups:
            b1, b2 = group["betas"]
            device = next(iter(group["params"])).device
            self.betas.append(tuple(b if isinstance(b, torch.Tensor) else torch.tensor(float(b), device=device)
                                    for b in (b1, b2)))
        self._pin_betas()

    def _pin_betas(self) -> None:
        if self.betas is None or self.scheduler is None:
            return
        for group, kept in zip(self.scheduler.optimizer.param_groups, self.betas, strict=True):
            for value, tensor in zip(group["betas"], kept, strict=True):
                if value is not tensor:
                    tensor.fill_(value)  # a float from the scheduler: no host sync
            group["betas"] = kept

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per == "batch":
            self.scheduler.step()
            self._pin_betas()

    def after_epoch(self, val_loss: float) -> None:
        if self.scheduler is None:
            return
        if self.per == "epoch":
            self.scheduler.step()
        elif self.per == "plateau":
            self.scheduler.step(val_loss)
        self._pin_betas()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)
            self._pin_betas()


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


class EMA(AveragedModel):
    """An exponential moving average of the weights and buffers: AveragedModel's numbers, state and
    `module`, without its host syncs.

    AveragedModel reads its step count (a tensor) on the host twice per update, which stalls a GPU's
    pipeline every step. Here whether the average has started is a Python flag (read from the count
    once, after a load), and the update is one `_foreach_lerp_` per device and dtype: the same
    kernels torch's `get_ema_multi_avg_fn` runs, so the averages are bit for bit the same. Integer
    buffers (BatchNorm's `num_batches_tracked`) are averaged and truncated as torch does.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.decay = float(decay)
        self._started: bool | None = False
        self._pairs: tuple[nn.Module, list] | None = None

    def load_state_dict(self, *args, **kwargs):
        out = super().load_state_dict(*args, **kwargs)
        self._started = None  # the loaded count decides, read once at the next update
        return out

    def _grouped(self, model: nn.Module) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """(averaged, current) tensor lists per device and dtype, paired as AveragedModel pairs them."""
        if self._pairs is None or self._pairs[0] is not model:
            groups: dict[tuple, tuple[list, list]] = {}
            mine = [*self.module.parameters(), *self.module.buffers()]
            theirs = [*model.parameters(), *model.buffers()]
            for p_avg, p_model in zip(mine, theirs, strict=False):
                p_avg, p_model = p_avg.detach(), p_model.detach()
                if p_model.device != p_avg.device:
                    raise ValueError("the EMA and its model must live on the same device")
                ema_list, model_list = groups.setdefault((p_avg.device, p_avg.dtype), ([], []))
                ema_list.append(p_avg)
                model_list.append(p_model)
            self._pairs = (model, list(groups.values()))
        return self._pairs[1]

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        groups = self._grouped(model)
        if self._started is None:
            self._started = bool(self.n_averaged > 0)  # one sync, after a load only
        if not self._started:
            for ema_list, model_list in groups:
                torch._foreach_copy_(ema_list, model_list)
            self._started = True
        else:
            weight = 1 - self.decay
            for ema_list, model_list in groups:
                if torch.is_floating_point(ema_list[0]) or torch.is_complex(ema_list[0]):
                    torch._foreach_lerp_(ema_list, model_list, weight)
                else:
                    for p_ema, p_model in zip(ema_list, model_list, strict=True):
                        p_ema.copy_(p_ema * self.decay + p_model * weight)
        self.n_averaged += 1


def build_ema(model: nn.Module, cfg: dict[str, Any]) -> EMA | None:
    """An exponential moving average of the weights (and buffers), or None when disabled."""
    if not cfg.get("enabled"):
        return None
    return EMA(model, cfg["decay"])
