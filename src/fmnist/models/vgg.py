"""Report E's VGG networks for 28x28 inputs, as its published models/vgg.py builds them: VGG8, VGG8-DSC, VGG12."""

from __future__ import annotations

import torch
from torch import nn

# Conv widths in order, "M" a 2x2 max-pool. Two pools, so the map is 7x7 before flattening.
VGG8_LAYERS = [32, 32, "M", 64, 64, "M", 128]  # 5 conv + 3 FC = 8 weight layers
VGG12_LAYERS = [8, 8, 16, "M", 32, 64, 128, "M", 256, 512, 1024]  # 9 conv + 3 FC = 12


class VGG(nn.Module):
    """Report E's VGG (`models/vgg.py` of its repository): every conv is conv 3x3 (padding 1, bias)
    + BatchNorm + ReLU, two 2x2 max-pools (28 -> 14 -> 7), then [dropout 0.2, FC `fc`, ReLU] twice
    and FC `fc` -> 10.

    `separable` lists the 1-based conv layers that are depthwise-separable: depthwise 3x3 (bias)
    + pointwise 1x1 (bias), then BatchNorm + ReLU (its `create_dws_layer`). Presets: VGG8 = convs
    32, 32, M, 64, 64, M, 128, FC 6272 -> 4096 -> 4096 -> 10 (42,655,978 parameters, the report's
    "over 42 million"); VGG8-DSC = layers 2-5 separable (120,960 fewer, the report's "~100,000");
    VGG12 = convs 8, 8, 16, M, 32, 64, 128, M, 256, 512, 1024 with layers 2-9 separable and FC
    50176 -> 4096 (223,062,802). `width` multiplies every conv width (report E's "more kernels"
    VGG8 is not in its code: we double them).
    """

    def __init__(
        self,
        num_classes: int = 10,
        layers: list | tuple = tuple(VGG8_LAYERS),
        width: float = 1.0,
        separable: list[int] | tuple[int, ...] = (),
        fc: int = 4096,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        feats: list[nn.Module] = []
        cin, conv_index, pools = 1, 0, 0
        for item in layers:
            if item == "M":
                feats.append(nn.MaxPool2d(2))
                pools += 1
                continue
            conv_index += 1
            cout = max(1, round(int(item) * width))
            if conv_index in separable:
                feats += [nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.Conv2d(cin, cout, 1)]
            else:
                feats.append(nn.Conv2d(cin, cout, 3, padding=1))
            feats += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        if pools > 2:
            raise ValueError(
                f"VGG for 28x28 takes at most 2 pools (the map must stay >= 7x7); got {pools}"
            )
        side = 28 // 2**pools
        self.features = nn.Sequential(*feats)  # (N, cin, side, side)
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, cin * side * side)
            nn.Dropout(dropout),
            nn.Linear(cin * side * side, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Linear(fc, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
