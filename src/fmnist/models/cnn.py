"""Plain convolutional networks of reports A, B, C and D, sized for 1x28x28 inputs."""

from __future__ import annotations

import torch
from torch import nn


class SimpleCNN(nn.Module):
    """Report A's simple CNN: conv-pool-conv, then three fully connected layers, ReLU throughout.

    Chosen where the report is silent: 3x3 convs without padding, 32 then 64 filters
    (28 -> 26 -> pool 13 -> 11), hidden FCs of 128 and 64 units, no dropout.
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: tuple[int, int] | list[int] = (32, 64),
        hidden: tuple[int, int] | list[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        h1, h2 = hidden
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3),  # (N, c1, 26, 26)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, c1, 13, 13)
            nn.Conv2d(c1, c2, 3),  # (N, c2, 11, 11)
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, c2 * 121)
            nn.Linear(c2 * 11 * 11, h1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(h1, h2),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class StandardCNN(nn.Module):
    """Report B's standard CNN: conv 1->32 3x3 p1, pool, conv 32->64 3x3 p1, pool, FC 3136->128, FC 128->10.

    `dilation` applies to the second conv (report B's dilated variants use 2 and 10, with padding
    equal to the dilation so the 14x14 map keeps its size). ReLU after every conv and hidden FC
    (the report does not name the activation; ReLU is the common default).
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: tuple[int, int] | list[int] = (32, 64),
        hidden: int = 128,
        dilation: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),  # (N, c1, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, c1, 14, 14)
            nn.Conv2d(c1, c2, 3, padding=dilation, dilation=dilation),  # (N, c2, 14, 14)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, c2, 7, 7)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, c2 * 49)
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DeepCNN(nn.Module):
    """Report B's deep CNN: the standard CNN plus conv 64->128 and conv 128->256 (all 3x3, padding 1).

    The report adds no pooling for the two extra convs, so they run at 7x7 and the first FC
    grows to 256*7*7 -> 128 (our reading; ReLU after each conv as in the standard CNN).
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: tuple[int, ...] | list[int] = (32, 64, 128, 256),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),  # (N, c1, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, c1, 14, 14)
            nn.Conv2d(c1, c2, 3, padding=1),  # (N, c2, 14, 14)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, c2, 7, 7)
            nn.Conv2d(c2, c3, 3, padding=1),  # (N, c3, 7, 7)
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1),  # (N, c4, 7, 7)
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, c4 * 49)
            nn.Linear(c4 * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TunedCNN(nn.Module):
    """Report C's tuned CNN: two conv layers with `filters1` then `filters2` filters (64 and 1024).

    Report C (section 2.1B) found that a pooling layer *between* the two convs lowered accuracy,
    so its final model has none: conv 3x3 `filters1` (padding 1) + ReLU, conv 3x3 `filters2` + ReLU,
    both at 28x28, then a 2x2 max-pool (14x14; the pool before flattening of the CNN it builds on,
    Brownlee's), dropout (0 by default; the report's variant uses 0.25) and one FC
    filters2*14*14 -> 10. `pool_between: true` gives the rejected variant. Chosen where the report
    is silent: the 3x3 kernels, padding 1, the single pool and FC.
    """

    def __init__(
        self,
        num_classes: int = 10,
        filters1: int = 64,
        filters2: int = 1024,
        kernel_size: int = 3,
        dropout: float = 0.0,
        pool_between: bool = False,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        side = 7 if pool_between else 14
        self.features = nn.Sequential(
            nn.Conv2d(1, filters1, kernel_size, padding=pad),  # (N, f1, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2) if pool_between else nn.Identity(),  # (N, f1, 14, 14) when pooled
            nn.Conv2d(filters1, filters2, kernel_size, padding=pad),  # (N, f2, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, f2, 14, 14)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, f2 * side * side)
            nn.Dropout(dropout),
            nn.Linear(filters2 * side * side, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNetLike(nn.Module):
    """Report D's LeNet-like net (173k parameters): conv16/32/64 5x5 'same' -relu-pool, FC128, FC256, FC10.

    Spatial size 28 -> 14 -> 7 -> 3 (floor pooling); dropout 0.5 before each of the first two FCs;
    ReLU after FC128 and FC256 (the report lists no activation there).
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(1, 16), block(16, 32), block(32, 64))  # (N, 64, 3, 3)
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, 576)
            nn.Dropout(dropout),
            nn.Linear(64 * 3 * 3, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class VGGLike(nn.Module):
    """Report D's VGG-like net (1,148,618 parameters; the report's 1,148k): three stages of
    [conv3x3-BN-ReLU]x2 (64, 128, 256).

    Max-pool and dropout (0.4) after the first two stages (28 -> 14 -> 7), a 7x7 average pool after
    the third, then dropout `head_dropout` (0.5) and FC 256 -> 10. The report's table 2 leaves out
    the 0.5 dropout before the FC; its published `models.py` applies it in `forward`. The report's
    no-dropout comparison sets both to 0 (preset vgg_like_nodropout).
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.4, head_dropout: float = 0.5) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=True),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=True),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *stage(1, 64), nn.MaxPool2d(2), nn.Dropout(dropout),  # (N, 64, 14, 14)
            *stage(64, 128), nn.MaxPool2d(2), nn.Dropout(dropout),  # (N, 128, 7, 7)
            *stage(128, 256), nn.AvgPool2d(7),  # (N, 256, 1, 1)
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(head_dropout), nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
