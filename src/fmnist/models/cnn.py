"""Plain convolutional networks of reports B and D, sized for 1x28x28 inputs."""

from __future__ import annotations

import torch
from torch import nn


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
    """Report D's VGG-like net (1,148k parameters): three stages of [conv3x3-BN-ReLU]x2 (64, 128, 256).

    Max-pool and dropout after the first two stages (28 -> 14 -> 7), a 7x7 average pool after the
    third, then FC 256 -> 10. `dropout=0` gives the report's no-dropout comparison.
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.4) -> None:
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
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
