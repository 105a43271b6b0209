"""A fast CPU deformable convolution: bilinear sampling of all kernel taps in one grid_sample, then one matmul.

torchvision's `deform_conv2d` CPU kernel loops over pixels and taps in scalar C++ (im2col and col2im
with per-element atomics), which makes report B's deformable CNN train at a few hundred images/s. The
same operation is: sample the input at the K = kh * kw shifted positions of every output pixel (a
bilinear `grid_sample` with zero padding, batched over all taps), optionally scale by the modulation
mask, and multiply the (C * K, L) columns by the (Cout, C * K) weight, where both steps have fast,
vectorised CPU kernels and autograd gives all four gradients.

The sampling convention is torchvision's (the oracle in tests/test_deform_ops.py): tap (i, j) of output
pixel (ho, wo) reads y = ho * stride - pad + i * dilation + offset_y (likewise x), offsets ordered
(dy, dx) per tap; the four bilinear corners count as 0 where they fall outside the image, and at an
integer position the offset gradient takes the difference towards the next pixel (floor convention).
`grid_sample(align_corners=True, padding_mode="zeros")` has the same conventions, as long as its
pixel -> grid -> pixel round trip is exact (see the padding below).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair
from torchvision.ops import DeformConv2d as _TorchvisionDeformConv2d
from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

FAST_CPU_ENV = "FMNIST_FAST_DEFORM"
"""Set to 0 to train deformable layers with torchvision's CPU kernel (for benchmarks and cost plans)."""


def fast_cpu_enabled() -> bool:
    return os.environ.get(FAST_CPU_ENV, "1") != "0"


@contextlib.contextmanager
def torchvision_kernel() -> Iterator[None]:
    """Within the block, deformable layers run torchvision's kernel (as FMNIST_FAST_DEFORM=0 does)."""
    previous = os.environ.get(FAST_CPU_ENV)
    os.environ[FAST_CPU_ENV] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FAST_CPU_ENV, None)
        else:
            os.environ[FAST_CPU_ENV] = previous


def _base_positions(
    out_size: int, kernel: int, stride: int, pad: int, dilation: int, device, dtype
) -> Tensor:
    """(kernel, out_size): the undeformed sampling coordinate of each tap along one axis."""
    taps = torch.arange(kernel, device=device, dtype=dtype) * dilation
    outs = torch.arange(out_size, device=device, dtype=dtype) * stride - pad
    return taps[:, None] + outs[None, :]


def _pow2_plus_one(size: int) -> int:
    """The smallest 2 ** m + 1 >= size (m >= 1)."""
    m = 1
    while 2**m + 1 < size:
        m += 1
    return 2**m + 1


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Same signature and result as `torchvision.ops.deform_conv2d`, built from grid_sample and matmul.

    input (N, C, H, W); offset (N, 2 * G * kh * kw, Ho, Wo) for G offset groups; weight
    (Cout, C / groups, kh, kw); mask (N, G * kh * kw, Ho, Wo) or None. Returns (N, Cout, Ho, Wo).
    """
    n, c, h, w = input.shape
    cout, c_per_group, kh, kw = weight.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    k = kh * kw
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if offset.shape[0] != n or offset.shape[2:] != (ho, wo) or offset.shape[1] % (2 * k):
        raise ValueError(
            f"offset of shape {tuple(offset.shape)} does not fit input {tuple(input.shape)} "
            f"and a {kh}x{kw} kernel (expected (N, 2 * groups * {k}, {ho}, {wo}))"
        )
    g = offset.shape[1] // (2 * k)  # offset groups
    weight_groups = c // c_per_group
    if c % g or c % c_per_group:
        raise ValueError(
            f"{c} input channels do not split into {g} offset groups and {weight_groups} weight groups"
        )

    off = offset.view(n, g, k, 2, ho, wo)
    y = (
        off[:, :, :, 0]
        + _base_positions(ho, kh, sh, ph, dh, input.device, offset.dtype).repeat_interleave(kw, 0)[
            :, :, None
        ]
    )  # (N, G, K, Ho, Wo); tap index i * kw + j, row position depends on i
    x = (
        off[:, :, :, 1]
        + _base_positions(wo, kw, sw, pw, dw, input.device, offset.dtype).repeat(kh, 1)[:, None, :]
    )
    # align_corners=True maps -1 -> pixel 0 and 1 -> pixel S - 1. With S - 1 a power of two the round trip
    # pixel -> grid -> pixel is exact, so integer positions (every tap at zero offset) stay integers and
    # take torchvision's side of the bilinear kink in the offset gradient; the zero rows and columns the
    # padding adds read as the zeros outside the image.
    hp, wp = _pow2_plus_one(h), _pow2_plus_one(w)
    gx = x * (2.0 / (wp - 1)) - 1.0
    gy = y * (2.0 / (hp - 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1).view(n * g, k * ho, wo, 2).to(input.dtype)
    padded = F.pad(input, (0, wp - w, 0, hp - h)) if (hp, wp) != (h, w) else input
    cols = F.grid_sample(
        padded.reshape(n * g, c // g, hp, wp),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )  # (N * G, C / G, K * Ho, Wo)
    cols = cols.view(n, g, c // g, k, ho * wo)
    if mask is not None:
        cols = cols * mask.view(n, g, 1, k, ho * wo)
    # One GEMM per weight group over the whole batch, (Cout / groups, C / groups * K) x (C / groups * K, N * L),
    # rather than N small ones: the weight gradient is then one GEMM too, not N of them and a sum.
    cols = cols.reshape(n, weight_groups, c_per_group * k, ho * wo).permute(1, 2, 0, 3)
    cols = cols.reshape(weight_groups, c_per_group * k, n * ho * wo)
    wmat = weight.reshape(weight_groups, cout // weight_groups, c_per_group * k)
    out = torch.matmul(wmat, cols).view(cout, n, ho, wo)
    if bias is not None:
        out = out + bias.view(cout, 1, 1, 1)
    # back to (N, Cout, Ho, Wo) in the contiguous layout the next layers' CPU kernels are fast on
    return out.permute(1, 0, 2, 3).contiguous()


class DeformConv2d(_TorchvisionDeformConv2d):
    """torchvision's DeformConv2d (same parameters and state_dict) that computes with `deform_conv2d`
    above on the CPU; on CUDA, or with FMNIST_FAST_DEFORM=0, torchvision's kernel runs as before."""

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        if input.device.type != "cpu" or not fast_cpu_enabled():
            return super().forward(input, offset, mask)
        return deform_conv2d(
            input,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )


__all__ = [
    "DeformConv2d",
    "deform_conv2d",
    "fast_cpu_enabled",
    "torchvision_deform_conv2d",
    "FAST_CPU_ENV",
]
