"""The fast CPU deformable convolution against torchvision.ops.deform_conv2d as the oracle: output and
the gradients w.r.t. input, offset, weight, bias (and mask), at the positions where bilinear sampling has
its edge cases (integer positions, samples outside the image)."""

from __future__ import annotations

import zlib

import pytest
import torch
from torchvision.ops import deform_conv2d as oracle

from fmnist import models
from fmnist.models import deform_ops


def _offsets(kind: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if kind == "zero":  # every tap on an integer pixel, the outer ones on the padding at -1 and H
        return torch.zeros(shape, dtype=torch.float64)
    if kind == "integer":  # integer and half-integer shifts: the kinks of bilinear sampling
        return torch.randint(-8, 9, shape, generator=gen).double() / 2
    if kind == "large":  # most samples fall outside the image, some straddle its border
        return torch.randn(shape, generator=gen, dtype=torch.float64) * 20
    return torch.randn(shape, generator=gen, dtype=torch.float64) * 1.5


def _compare(
    n,
    c,
    h,
    w,
    cout,
    *,
    kind,
    stride=1,
    padding=1,
    dilation=1,
    offset_groups=1,
    groups=1,
    mask=False,
    dtype=torch.float64,
    atol=1e-10,
):
    gen = torch.Generator().manual_seed(
        zlib.crc32(repr((n, c, h, w, kind, stride, padding, dilation, mask)).encode())
    )
    ho = (h + 2 * padding - (dilation * 2 + 1)) // stride + 1
    wo = (w + 2 * padding - (dilation * 2 + 1)) // stride + 1
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    off = _offsets(kind, (n, 2 * offset_groups * 9, ho, wo), gen)
    weight = torch.randn(cout, c // groups, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(cout, generator=gen, dtype=torch.float64)
    m = (
        torch.rand(n, offset_groups * 9, ho, wo, generator=gen, dtype=torch.float64)
        if mask
        else None
    )
    inputs = [t.to(dtype).requires_grad_() for t in (x, off, weight, bias, *([m] if mask else []))]
    kw = {"stride": stride, "padding": padding, "dilation": dilation}
    results = []
    for fn in (oracle, deform_ops.deform_conv2d):
        out = fn(*inputs[:4], mask=inputs[4] if mask else None, **kw)
        grad_out = torch.linspace(-1, 1, out.numel(), dtype=dtype).view(out.shape)
        results.append((out, *torch.autograd.grad(out, inputs, grad_out)))
    names = ["output", "grad input", "grad offset", "grad weight", "grad bias", "grad mask"]
    for name, want, got in zip(names, results[0], results[1], strict=False):
        assert got.shape == want.shape, name
        scale = max(1.0, want.abs().max().item())
        err = (got - want).abs().max().item() / scale
        assert err <= atol, f"{name}: max relative difference {err:.3g} ({kind} offsets)"


@pytest.mark.parametrize("kind", ["zero", "integer", "large", "random"])
def test_matches_torchvision_on_report_b_layers(kind):
    # report B's layers: 1->32 at 28x28 and 32->64 at 14x14 (3x3, stride 1, padding 1)
    _compare(2, 1, 28, 28, 4, kind=kind)
    _compare(2, 6, 14, 14, 5, kind=kind)


@pytest.mark.parametrize("kind", ["zero", "integer", "random"])
def test_matches_torchvision_with_mask_stride_dilation_and_groups(kind):
    _compare(2, 4, 9, 7, 6, kind=kind, stride=2, padding=2, dilation=2, mask=True)
    _compare(1, 4, 7, 7, 4, kind=kind, offset_groups=2, groups=2, mask=True)
    _compare(1, 2, 5, 6, 3, kind=kind, padding=0)  # no padding, non-square, odd sizes


def test_float32_agrees_within_1e_4():
    for kind in ("zero", "random", "large"):
        _compare(4, 8, 28, 28, 8, kind=kind, dtype=torch.float32, atol=1e-4)


def test_layer_uses_the_fast_path_on_cpu_and_the_switch_turns_it_off(monkeypatch):
    torch.manual_seed(0)
    model = models.build_model("deformable_cnn").train()
    with torch.no_grad():  # non-zero offsets, so the check covers actual deformation
        for block in (model.features[0], model.features[4]):
            block.offset.weight.normal_(0, 0.2)
    x = torch.randn(3, 1, 28, 28)
    calls = []
    fast = deform_ops.deform_conv2d
    monkeypatch.setattr(
        deform_ops, "deform_conv2d", lambda *a, **k: calls.append(1) or fast(*a, **k)
    )
    out_fast = model(x)
    assert len(calls) == 2
    monkeypatch.setenv(deform_ops.FAST_CPU_ENV, "0")
    out_tv = model(x)
    assert len(calls) == 2, "FMNIST_FAST_DEFORM=0 must fall back to torchvision's kernel"
    torch.testing.assert_close(out_fast, out_tv, rtol=1e-4, atol=1e-4)
    # the parameters are torchvision's: a state_dict moves between the two layers unchanged
    from torchvision.ops import DeformConv2d

    assert isinstance(model.features[0].conv, DeformConv2d)


def test_bench_deform_prints_per_layer_and_whole_model_ratios(capsys):
    from fmnist import cli

    assert (
        cli.main(
            [
                "bench",
                "deform",
                "--models",
                "deformable_cnn",
                "--seconds",
                "0.05",
                "--repeats",
                "1",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for part in ("features.0", "features.4", "whole model"):
        assert part in out
    assert out.count("x\n") >= 3 and "torchvision" in out
