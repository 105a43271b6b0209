"""Residual networks trained from scratch on 1x28x28 inputs: report D's ResNet10 and report E's ResNet18, as their code builds them."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut, as in torchvision's ResNet."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet10(nn.Module):
    """Report D's ResNet10 (1,229,002 parameters; the report's 1,229k), as its published `models.py` builds it.

    torchvision's ResNet with the fourth stage cut off and one input channel: a 7x7 stride-2 stem
    conv (no bias) + BN + ReLU and a 3x3 stride-2 max-pool (28 -> 14 -> 7), then three stages of
    one BasicBlock each, 64, 128 (stride 2) and 256 (stride 2) channels (7 -> 7 -> 4 -> 2), global
    average pool and FC 256 -> 10. The code asks for blocks [1, 1, 0], but its `_make_layer` always
    builds the first block, so the third stage has one block too. Convs start from Kaiming normal
    (fan_out), BatchNorm from 1 and 0, as there.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] | list[int] = (64, 128, 256)) -> None:
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(1, w0, 7, stride=2, padding=3, bias=False),  # (N, 64, 14, 14)
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),  # (N, 64, 7, 7)
        )
        stages, cin = [], w0
        for i, cout in enumerate(widths):
            stages.append(BasicBlock(cin, cout, stride=1 if i == 0 else 2))
            cin = cout
        self.stages = nn.Sequential(*stages)  # (N, 256, 2, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)  # (N, 256, 1, 1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class SeparableBlockE(nn.Module):
    """Report E's residual block (its models/cnn.py `Block`): a depthwise-separable 3x3 conv (depthwise
    with `stride`, pointwise 1x1, both with bias) + BN + ReLU, then a further BN + ReLU, a 3x3 conv
    (bias) + BN, plus the shortcut (a 3x3 stride-2 conv + BN where the block downsamples), ReLU.

    Its `Block` also builds a plain 3x3 `conv1` that `forward` never calls; we leave it out (it adds
    parameters, not computation: 4,720,512 over its ResNet18).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.dwc = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin),
            nn.Conv2d(cin, cout, 1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.dwc(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18Small(nn.Module):
    """Report E's ResNet18 (its models/cnn.py `ResNet18`, the run of its notebook whose test accuracy
    0.8862 is the report's 88.6%): a 7x7 stride-2 stem conv (bias, padding 3) + BN + ReLU and a 3x3
    stride-2 max-pool (28 -> 14 -> 7), four stages of two SeparableBlockE at `width` x 1, 2, 4, 8
    (64-512; 7 -> 7 -> 4 -> 2 -> 1), global average pool, FC. 8,380,682 parameters.

    The report's text says the map stays at least 7x7 before flattening; its code shrinks it to 1x1,
    and we follow the code. `width` is report E's "more kernels" variant (not in its code: we double
    it); `dilation` is its "dilated convolution" variant: its code writes `dilation=1` only on the stem
    conv, so that is the conv we dilate (2; padding kept at 3, as there).
    """

    def __init__(self, num_classes: int = 10, width: int = 64, dilation: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 7, stride=2, padding=3, dilation=dilation),  # (N, w, 14, 14) undilated
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),  # (N, w, 7, 7)
        )
        widths = [width, 2 * width, 4 * width, 8 * width]
        stages, cin = [], width
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(SeparableBlockE(cin, cout, stride), SeparableBlockE(cout, cout)))
            cin = cout
        self.stages = nn.Sequential(*stages)  # (N, 8w, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))
