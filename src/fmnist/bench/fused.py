"""fused seeds: k seeds of one model as one vmapped model (torch.func) against k runs stepped in turn.

The separate side is the trainer itself: one `train.StepLoop` per seed (the config's recipe for the
model: its loss, optimizer and normalisation), stepped with `StepLoop.step`. The fused side stacks the
parameters of k more such loops' models (the same seeds, so the same initialisations) into one
functional model, with the recipe's loss and optimizer over the stacks.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from fmnist.bench.common import (
    DEFAULT_CONFIG,
    DEFAULT_DATA,
    check_data,
    configure_device,
    ms_per_step,
    resolve_one,
)
from fmnist.config import ConfigError


def seed_loops(run: dict, seeds: int, n_train: int, dev) -> list:
    """One trainer step loop per seed, BatchNorm on batch statistics only (`replace_all_batch_norm_modules_`:
    vmap cannot update running stats in place, so both sides run without them)."""
    import torch
    from torch.func import replace_all_batch_norm_modules_

    from fmnist import train

    loops = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        loop = train.StepLoop.build(run, 10, n_train, dev)
        replace_all_batch_norm_modules_(loop.model)
        loop.model.train()
        loops.append(loop)
    return loops


class Fused:
    """The models of `loops` as one: their parameters stacked, one optimizer (the recipe's) over the stacks,
    the gradient of each seed's loss on its own batch computed in one vmapped call."""

    def __init__(self, loops: list, optimizer_cfg: dict):
        import torch
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap

        from fmnist import recipes

        params, self.buffers = stack_module_state([loop.model for loop in loops])
        first = loops[0]
        self.loops, self.base = loops, first.model.to("meta")
        # the optimizer is built on parameters that require grad (the recipe's builder keeps only
        # those), then they stop requiring it: vmap's grad_and_value computes the gradients
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.optimizer = recipes.build_optimizer(list(self.params.values()), optimizer_cfg)
        for v in self.params.values():
            v.requires_grad_(False)

        def loss_of(p, b, x, y):
            with first.autocast():
                return first.loss_fn(functional_call(self.base, (p, b), (x,)), y)

        self.grad_fn = vmap(grad_and_value(loss_of), in_dims=(0, 0, 0, 0), randomness="different")
        self.stack = torch.stack

    def grads(self, xs, ys) -> dict:
        grads, _ = self.grad_fn(self.params, self.buffers, self.stack(xs), self.stack(ys))
        return grads

    def step(self, xs, ys) -> None:
        for k, g in self.grads(xs, ys).items():
            self.params[k].grad = g
        self.optimizer.step()


def inputs(loop, images_u8, labels):
    """A uint8 batch as the trainer's step sees it: in [0, 1], augmented (the run's), normalised."""
    from fmnist import train

    x, target = loop.aug(train.to_unit(images_u8), labels)
    return loop.normalize(x), target


def grad_difference(separate: list, fused: Fused, batches: list) -> float:
    """Largest relative difference between the fused gradients and each model's own, before any step, in
    eval mode (no dropout draws): both compute the same thing."""
    for loop in separate:
        loop.model.eval()
    fused.base.eval()
    xs, ys = zip(*(inputs(loop, *b) for loop, b in zip(separate, batches, strict=True)), strict=True)
    fused_grads = fused.grads(xs, ys)
    worst = 0.0
    for seed, loop in enumerate(separate):
        loop.model.zero_grad(set_to_none=True)
        with loop.autocast():
            loop.loss_fn(loop.model(xs[seed]), ys[seed]).backward()
        for name, p in loop.model.named_parameters():
            ref, got = p.grad.float(), fused_grads[name][seed].float()
            worst = max(worst, float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)))
        loop.model.zero_grad(set_to_none=True)
        loop.model.train()
    fused.base.train()
    return worst


def fused_seeds(model: str = "standard_cnn", seeds: int = 4, device: str = "auto",
                data: Path | str = DEFAULT_DATA, configfile: Path | str = DEFAULT_CONFIG, batch_size: int = 64,
                n_steps: int = 30, warmup: int = 5, repeats: int = 3, threads: int = 2, log=print) -> dict:
    """Milliseconds per step of `seeds` runs of `model` (their own initialisations, their own batches):
    one vmapped model over their stacked parameters (`torch.func.stack_module_state` + `vmap`, one
    optimizer over the stacks), against the trainer's step loops stepped one after another in one process.
    The ratio says whether fusing seeds (HFTA's idea) beats separate runs before anyone builds it into the
    trainer. bf16 autocast on CUDA as the trainer's, float32 on a CPU; no LR schedule, no EMA, eager.
    BatchNorm runs on batch statistics only in both; dropout draws differently per seed."""
    from fmnist import train
    from fmnist.data import load_prepared

    if seeds < 2:
        raise ConfigError(f"fused seeds needs at least 2 seeds, got {seeds}")
    data = check_data(data)
    dev = configure_device(device, threads)
    amp = "bf16" if dev.type == "cuda" else "off"
    run = resolve_one(configfile, model, "none", train={
        "batch_size": batch_size, "amp": amp, "scheduler": {"name": "none"}, "ema": {"enabled": False},
        "compile": False, "cuda_graph": False, "channels_last": False})
    arrays, _ = load_prepared(data)
    split = train.Batches(arrays["train_images"], arrays["train_labels"], dev)
    need = (n_steps + warmup) * batch_size * seeds
    if need > len(split):
        raise ConfigError(f"{seeds} seeds x {n_steps + warmup} steps of {batch_size} need {need} images; "
                          f"the data file has {len(split)}")

    def batch(step: int, seed: int):
        i = (step * seeds + seed) * batch_size
        return split.images[i:i + batch_size], split.labels[i:i + batch_size]

    separate = seed_loops(run, seeds, len(split), dev)
    fused = Fused(seed_loops(run, seeds, len(split), dev), run["train"]["optimizer"])

    def step_separate(step: int) -> None:
        for seed, loop in enumerate(separate):
            loop.step(*batch(step, seed))

    def step_fused(step: int) -> None:
        xs, ys = zip(*(inputs(fused.loops[s], *batch(step, s)) for s in range(seeds)), strict=True)
        fused.step(xs, ys)

    difference = grad_difference(separate, fused, [batch(0, s) for s in range(seeds)])
    samples: dict[str, list[float]] = {"separate": [], "fused": []}
    for rep in range(repeats):
        for name, fn in (("separate", step_separate), ("fused", step_fused)):
            samples[name].append(ms_per_step(fn, warmup, n_steps, dev))
            log(f"[bench] repeat {rep + 1}/{repeats} {name:9s} {samples[name][-1]:8.3f} ms per step of {seeds} seeds")
    ms = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "model": model, "seeds": seeds, "device": str(dev), "device_name": train.device_name(dev),
        "threads": threads, "batch_size": batch_size, "steps": n_steps, "repeats": repeats, "amp": amp,
        "ms_per_step_of_all_seeds": {k: round(v, 3) for k, v in ms.items()},
        "images_per_s": {k: round(seeds * batch_size / v * 1000, 1) for k, v in ms.items()},
        "fused_speedup": round(ms["separate"] / ms["fused"], 2),
        "max_relative_grad_difference": float(f"{difference:.3g}"),
        "samples": {k: [round(x, 3) for x in v] for k, v in samples.items()},
        "load_average": list(os.getloadavg()),
    }
