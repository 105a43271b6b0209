"""Transfer learning from torchvision's ImageNet models: a new 10-class head, chosen layers trained,
and an input adapter that turns the trainer's normalised 1x28x28 batch into the 3x224x224 ImageNet
input on the training device (no per-image PIL work)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fmnist import models as registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAINABLE = ("head", "last_1", "last_2", "last_3", "last_4", "all")
FROZEN_NORMS = ("eval", "train")


class InputAdapter(nn.Module):
    """(N, 1, 28, 28) normalised with the trainer's mean/std -> (N, 3, S, S) normalised for ImageNet.

    resize "plain": bilinear resize to S in train and eval. resize "report_d" (report D's torchvision
    transforms, batched): in training each image gets its own RandomResizedCrop (area 8-100%, aspect
    3/4-4/3, like torchvision's defaults, sampled with grid_sample); in eval, Resize(S*256/224) then
    CenterCrop(S).
    """

    def __init__(self, image_size: int = 224, resize: str = "plain", input_mean: float = 0.2860,
                 input_std: float = 0.3530) -> None:
        super().__init__()
        if resize not in ("plain", "report_d"):
            raise ValueError(f"resize must be 'plain' or 'report_d', not {resize!r}")
        self.image_size, self.resize = image_size, resize
        self.input_mean, self.input_std = input_mean, input_std
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        n, s = len(x), self.image_size
        # Per image: crop area fraction and aspect ratio; 10 tries as torchvision, whole image if none fits.
        area = torch.empty(n, 10, device=x.device).uniform_(0.08, 1.0)
        ratio = torch.exp(torch.empty(n, 10, device=x.device).uniform_(math.log(3 / 4), math.log(4 / 3)))
        w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)  # fractions of the side
        fits = (w <= 1) & (h <= 1)
        first = fits.float().argmax(dim=1, keepdim=True)
        ok = fits.any(dim=1)
        w = torch.where(ok, w.gather(1, first).squeeze(1), torch.ones(n, device=x.device))
        h = torch.where(ok, h.gather(1, first).squeeze(1), torch.ones(n, device=x.device))
        cx = (torch.rand(n, device=x.device) * (1 - w) + w / 2) * 2 - 1  # crop centre in [-1, 1]
        cy = (torch.rand(n, device=x.device) * (1 - h) + h / 2) * 2 - 1
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
        grid = F.affine_grid(theta, [n, 1, s, s], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.input_std + self.input_mean  # back to [0, 1] pixels, (N, 1, 28, 28)
        s = self.image_size
        if self.resize == "report_d" and self.training:
            x = self.random_resized_crop(x)  # (N, 1, S, S)
        elif self.resize == "report_d":
            big = round(s * 256 / 224)
            x = F.interpolate(x, size=(big, big), mode="bilinear", align_corners=False, antialias=True)
            top = (big - s) // 2
            x = x[:, :, top:top + s, top:top + s]  # (N, 1, S, S)
        else:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std  # (N, 3, S, S)


class TransferNet(nn.Module):
    """A torchvision ImageNet classifier with a new `num_classes` head behind an InputAdapter.

    pretrained: load the ImageNet weights (torchvision's weights API, from torch hub's cache dir;
      nothing is downloaded here: a missing file is an error naming it, before training starts).
    weights_path: a local checkpoint of the torchvision model (ImageNet head included) used instead.
    trainable: "head" (only the new FC), "last_k" (the last k of the four stages + head), or "all".
    Frozen parameters get requires_grad False. frozen_norms: what frozen BatchNorm layers do in
      training. "eval" (ours, the default): they stay in eval mode, so a frozen part is a fixed
      feature extractor (its running statistics do not drift to Fashion-MNIST). "train": they follow
      model.train() like every other layer, as the usual transfer code does (`requires_grad=False`
      on the backbone, then `model.train()`): their ImageNet running statistics are replaced, batch
      by batch, by Fashion-MNIST's, while their scale and shift stay frozen. Reports A and C show no
      code; config/full.yaml reads theirs as "train" (docs/fidelity.md).
    input_mean/input_std: the normalisation the trainer applied (its config `normalize`), undone by
    the adapter before ImageNet normalisation.
    """

    arch = ""  # the torchvision builder and registry name

    def __init__(
        self,
        num_classes: int = 10,
        pretrained: bool = True,
        weights_path: str | None = None,
        trainable: str = "all",
        resize: str = "plain",
        image_size: int = 224,
        input_mean: float = 0.2860,
        input_std: float = 0.3530,
        frozen_norms: str = "eval",
    ) -> None:
        super().__init__()
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}; got {trainable!r}")
        if frozen_norms not in FROZEN_NORMS:
            raise ValueError(f"frozen_norms must be one of {', '.join(FROZEN_NORMS)}; got {frozen_norms!r}")
        self.frozen_norms = frozen_norms
        self.adapter = InputAdapter(image_size, resize, input_mean, input_std)
        self.net = self._load(pretrained, weights_path)
        self._replace_head(num_classes)
        self._frozen_norms: list[nn.Module] = []
        if trainable != "all":
            self._freeze(0 if trainable == "head" else int(trainable.split("_")[1]))

    def _load(self, pretrained: bool, weights_path: str | None) -> nn.Module:
        builder = getattr(torchvision.models, self.arch)
        if not pretrained and not weights_path:
            return builder(weights=None)
        path = registry.check_weights(self.arch, {"pretrained": pretrained, "weights_path": weights_path},
                                      hub_dir=Path(torch.hub.get_dir()))
        if weights_path:
            model = builder(weights=None)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model
        enum_name, member = registry.TRANSFER_WEIGHTS[self.arch][0].split(".")
        return builder(weights=getattr(getattr(torchvision.models, enum_name), member))

    def _replace_head(self, num_classes: int) -> None:
        raise NotImplementedError

    def parts(self) -> tuple[nn.Module, list[nn.Module], nn.Module]:
        """(stem, four stages from input to output, head)."""
        raise NotImplementedError

    def _freeze(self, last_k: int) -> None:
        _, stages, head = self.parts()
        self.net.requires_grad_(False)
        for m in [*stages[len(stages) - last_k:], head] if last_k else [head]:
            m.requires_grad_(True)
        self._frozen_norms = [
            m for m in self.net.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters())
        ]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_norms == "eval":
            for m in self._frozen_norms:
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapter(x))  # (N, 1, 28, 28) -> (N, 3, 224, 224) -> (N, classes)


class ResNet18Transfer(TransferNet):
    """ResNet18 (reports C and D). Stages: layer1..layer4; head: fc 512 -> 10."""

    arch = "resnet18"

    def _replace_head(self, num_classes: int) -> None:
        self.net.fc = nn.Linear(self.net.fc.in_features, num_classes)

    def parts(self):
        n = self.net
        return nn.ModuleList([n.conv1, n.bn1]), [n.layer1, n.layer2, n.layer3, n.layer4], n.fc


class MobileNetV3SmallTransfer(TransferNet):
    """MobileNetV3-small (report A). Stages by resolution: features[1] (56x56), features[2:4] (28x28),
    features[4:9] (14x14), features[9:13] + the 576 -> 1024 pre-logits Linear (7x7); head: the final
    Linear 1024 -> 10 (report A's "only FC": the pre-logits Linear stays frozen with `head`)."""

    arch = "mobilenet_v3_small"

    def _replace_head(self, num_classes: int) -> None:
        self.net.classifier[3] = nn.Linear(self.net.classifier[3].in_features, num_classes)

    def parts(self):
        f = self.net.features
        stages = [f[1], f[2:4], f[4:9], nn.ModuleList([f[9:], self.net.classifier[0]])]
        return f[0], stages, self.net.classifier[3]


class ShuffleNetV2Transfer(TransferNet):
    """ShuffleNetV2 x0.5 (report A). Stages: stage2, stage3, stage4, conv5 (the final 1x1 conv);
    head: fc 1024 -> 10."""

    arch = "shufflenet_v2_x0_5"

    def _replace_head(self, num_classes: int) -> None:
        self.net.fc = nn.Linear(self.net.fc.in_features, num_classes)

    def parts(self):
        n = self.net
        return n.conv1, [n.stage2, n.stage3, n.stage4, n.conv5], n.fc
