"""Deformable convolutional networks of reports A and B, built on torchvision.ops.DeformConv2d (fast CPU path: deform_ops)."""

from __future__ import annotations

import torch
from torch import nn

from fmnist.models.deform_ops import DeformConv2d  # torchvision's layer, with a fast CPU path

OFFSET_INITS = ("default", "zero")


class DeformBlock(nn.Module):
    """A 3x3 DeformConv2d whose sampling offsets come from a plain 3x3 conv on the same input.

    The offset conv makes 2 * 3 * 3 = 18 channels (an (dy, dx) shift per kernel tap and pixel).
    `offset_init`: "default" leaves it at PyTorch's Conv2d initialisation, as report B's code does
    (`nn.Conv2d(1, 18, ...)` with nothing after it), so the sampling grid starts randomly shifted;
    "zero" starts it at zero, so the block starts as an ordinary 3x3 conv (Dai et al. 2017).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, offset_init: str = "default") -> None:
        super().__init__()
        if offset_init not in OFFSET_INITS:
            raise ValueError(f"offset_init must be one of {', '.join(OFFSET_INITS)}, not {offset_init!r}")
        pad = kernel_size // 2
        self.offset = nn.Conv2d(cin, 2 * kernel_size * kernel_size, kernel_size, padding=pad)
        if offset_init == "zero":
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(cin, cout, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x))  # (N, cout, H, W)


class DeformableCNNA(nn.Module):
    """Report A's deformable CNN: 3 conv + 2 deformable conv + pool + FC.

    Chosen where the report is silent: 3x3 convs with padding 1 and ReLU after each layer, widths
    32, 32, 64 for the convs and 64, 64 for the deformable convs, all at 28x28; one 2x2 max-pool
    (-> 14x14) and a single FC 64*14*14 -> 10. Offsets start at zero (`offset_init`; the report
    does not say, and publishes no code).
    """

    def __init__(
        self, num_classes: int = 10, channels: tuple[int, ...] | list[int] = (32, 32, 64, 64, 64),
        offset_init: str = "zero",
    ) -> None:
        super().__init__()
        c1, c2, c3, d1, d2 = channels
        self.convs = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(inplace=True),  # (N, c1, 28, 28)
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),  # (N, c2, 28, 28)
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),  # (N, c3, 28, 28)
        )
        self.deform = nn.Sequential(
            DeformBlock(c3, d1, offset_init=offset_init), nn.ReLU(inplace=True),  # (N, d1, 28, 28)
            DeformBlock(d1, d2, offset_init=offset_init), nn.ReLU(inplace=True),  # (N, d2, 28, 28)
        )
        self.pool = nn.MaxPool2d(2)  # (N, d2, 14, 14)
        self.fc = nn.Linear(d2 * 14 * 14, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.deform(self.convs(x)))
        return self.fc(torch.flatten(x, 1))


class DeformableCNN(nn.Module):
    """Report B's deformable CNN: the standard CNN with both convs replaced by DeformBlocks
    (deform 1->32, pool, deform 32->64, pool, FC 3136->128, FC 128->10).

    `batch_norm` adds BatchNorm after each deformable conv and `dropout` acts on the FC layers:
    report B's enhanced variant uses both (dropout 0.3). `offset_init` "default" is report B's
    code (PyTorch's initialisation of the offset convs).
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: tuple[int, int] | list[int] = (32, 64),
        hidden: int = 128,
        batch_norm: bool = False,
        dropout: float = 0.0,
        offset_init: str = "default",
    ) -> None:
        super().__init__()
        c1, c2 = channels

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if batch_norm else nn.Identity()

        self.features = nn.Sequential(
            DeformBlock(1, c1, offset_init=offset_init), norm(c1), nn.ReLU(inplace=True),  # (N, c1, 28, 28)
            nn.MaxPool2d(2),  # (N, c1, 14, 14)
            DeformBlock(c1, c2, offset_init=offset_init), norm(c2), nn.ReLU(inplace=True),  # (N, c2, 14, 14)
            nn.MaxPool2d(2),  # (N, c2, 7, 7)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, c2 * 49)
            nn.Dropout(dropout),
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
