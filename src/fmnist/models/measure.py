"""Measure a model preset: parameters, multiply-accumulates per image, and training images/s on a device."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import DeformConv2d

from fmnist.models import deform_ops


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, image: torch.Tensor | None = None) -> int:
    """Multiply-accumulates of one inference forward pass on one (1, 1, 28, 28) image.

    PyTorch's FlopCounterMode counts convolutions and matrix products (MACs = FLOPs / 2); attention
    runs on the math backend so its two matmuls are counted too. torchvision's deform_conv2d is not
    a counted op, so each DeformConv2d adds its GEMM, out_h*out_w*cout*cin/groups*kh*kw, by a hook
    (the bilinear sampling of its inputs is not counted, like the adds of a bias or a BatchNorm).
    The count runs torchvision's kernel, whose GEMM the counter does not see (fmnist's fast CPU path
    is a visible matmul and would be counted twice).
    """
    image = torch.zeros(1, 1, 28, 28) if image is None else image
    deform = [0]

    def hook(mod: DeformConv2d, _inp, out: torch.Tensor) -> None:
        kh, kw = mod.weight.shape[-2:]
        deform[0] += out.numel() * (mod.in_channels // mod.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, DeformConv2d)]
    was_training = model.training
    model.eval()
    try:
        with (FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH),
              deform_ops.torchvision_kernel()):
            model(image.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(counter.get_total_flops() // 2) + deform[0]


def train_images_per_second(model: nn.Module, device: torch.device, batch_size: int = 64,
                            seconds: float = 3.0, warmup_steps: int = 1) -> tuple[float, int]:
    """(images/s, steps timed) of plain training steps (Adam, cross-entropy, random batches held on
    `device`) after `warmup_steps`, for at least `seconds` and at least two steps."""
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    x = torch.randn(batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup_steps):
        step()
    sync()
    steps, t0 = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    sync()  # CUDA runs asynchronously: the clock stops when the queued steps are done
    return steps * batch_size / (time.perf_counter() - t0), steps
