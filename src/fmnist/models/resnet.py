"""Residual networks trained from scratch on 1x28x28 inputs: report D's ResNet10 and report E's ResNet18."""

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


class SmallImageResNet(nn.Module):
    """A ResNet for 28x28 images: a 3x3 stride-1 stem (no 7x7 conv, no max-pool), four stages of
    BasicBlocks whose widths double while the map halves (28 -> 28 -> 14 -> 7 -> 4), global average
    pool and one FC layer. `dilation` dilates every 3x3 conv of the stages (padding = dilation, so
    map sizes are unchanged)."""

    def __init__(
        self,
        num_classes: int = 10,
        blocks: tuple[int, ...] | list[int] = (2, 2, 2, 2),
        width: int = 64,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(len(blocks))]
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),  # (N, width, 28, 28)
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages = []
        cin = width
        for i, (n, cout) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(cin, cout, stride, dilation)]
            layers += [BasicBlock(cout, cout, 1, dilation) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.Sequential(*stages)  # (N, widths[-1], 4, 4) for four stages
        self.pool = nn.AdaptiveAvgPool2d(1)  # (N, widths[-1], 1, 1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


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


class ResNet18Small(SmallImageResNet):
    """Report E's ResNet18 adapted to 28x28: torchvision's [2, 2, 2, 2] BasicBlock layout and widths
    64-512, with the 7x7 stride-2 stem and its max-pool replaced by a 3x3 stride-1 conv.

    `width` is the first stage's width (report E's "more kernels" variant: we double it to 128);
    `dilation` dilates every stage conv (report E's "dilated convs" variant: we use 2). The report
    gives neither number.
    """

    def __init__(self, num_classes: int = 10, width: int = 64, dilation: int = 1) -> None:
        super().__init__(num_classes, blocks=(2, 2, 2, 2), width=width, dilation=dilation)
