"""Head-only transfer on cached backbone features: the frozen network runs once per feature set, not every epoch.

A run that trains only the new head of a frozen ImageNet backbone, with nothing random on the backbone's
input (no augmentation, the plain resize), computes the same features in every epoch. The workflow's
`features` rule computes them once per feature set (backbone and its weights, input adapter,
normalisation, data split) for the train, val and test splits; every run on that set (the batch-size
sweeps of reports A and C) trains its head on them. The head starts from the same random draws as in an
uncached run (the full model is built the same way), and the dropout before MobileNetV3's head is part
of the cached head, so results equal the uncached run's up to floating-point order (tests/test_features.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fmnist import amp, models

FEATURE_DIR = "results/features"
HEAD_IMAGES_PER_S = 200_000.0
"""A linear head on 512-1024 features trains at several 100,000 images/s on one CPU core (cost plan)."""


def cacheable(run: dict) -> bool:
    """Whether `run` can train on cached features: a head-only transfer model whose backbone input is the
    same every epoch (augmentation none, plain resize), whose backbone computes the same function in
    training as in evaluation (frozen BatchNorm layers in eval mode: with `frozen_norms: train` they
    normalise each training batch by its own statistics and move their running averages, which no
    feature computed once in eval mode can reproduce), and no EMA of the whole model. bf16 qualifies:
    the features are computed under the run's autocast (its `amp` is part of the feature set), as `auto`
    always did on CUDA; now that `auto` is bf16 on some CPUs too, excluding it would drop the cache there."""
    m, t = run["model"], run["train"]
    return (
        m["arch"] in models.TRANSFER_WEIGHTS
        and m["args"].get("trainable") == "head"
        and m["args"].get("resize") == "plain"
        and m["args"].get("frozen_norms", "eval") == "eval"
        and run["augmentation"]["kind"] == "none"
        and not t["ema"]["enabled"]
    )


def run_features_file(run: dict, feature_cache: bool) -> str | None:
    """The cached features file (under FEATURE_DIR) that `run` trains its head on when the config's
    `feature_cache` is on and the run is `cacheable`; None: it trains on images."""
    if feature_cache and cacheable(run):
        return f"{FEATURE_DIR}/{feature_key(run)}.pt"
    return None


def feature_spec(run: dict) -> dict[str, Any]:
    """What the features depend on: the backbone (arch and its arguments) and the trainer's normalisation.
    The head's own settings (batch size, optimizer, epochs) are not part of it, nor is the seed when the
    backbone's weights come from a file; a backbone without weights is the seed's random init."""
    args = run["model"]["args"]
    spec = {"arch": run["model"]["arch"], "args": args,
            "normalize": run["train"]["normalize"], "amp": run["train"]["amp"],
            "channels_last": run["train"]["channels_last"]}
    if not args.get("pretrained") and not args.get("weights_path"):
        spec["seed"] = run["seed"]
    return spec


def feature_key(run: dict) -> str:
    spec = json.dumps(feature_spec(run), sort_keys=True, separators=(",", ":"))
    return f"{run['model']['arch']}.{hashlib.sha256(spec.encode()).hexdigest()[:10]}"


def head_chain(model):
    """(module whose input is the cached feature, the modules from there to the logits) of a TransferNet:
    its new head, preceded by the Dropout that feeds it, if any (MobileNetV3's classifier)."""
    from torch import nn

    _, _, head = model.parts()
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent)
            if any(c is head for c in children):
                i = next(j for j, c in enumerate(children) if c is head)
                start = i
                while start > 0 and isinstance(children[start - 1], nn.Dropout):
                    start -= 1
                return children[start], nn.Sequential(*children[start:i + 1])
    return head, nn.Sequential(head)


def compute(spec: dict, data_path: Path | str, out: Path | str, device: str = "auto",
            threads: int | None = None, batch_size: int = 200, log=print) -> None:
    """Backbone features of the train, val and test splits (float32, (N, D)) with their labels, saved to `out`."""
    import torch

    from fmnist import data, runtime

    if threads:
        torch.set_num_threads(int(threads))
    dev = runtime.select_device(device)
    arrays, meta = data.load_prepared(data_path)
    torch.manual_seed(spec.get("seed", 0))  # as train_run does: a backbone without weights is this init
    model = models.build_model(spec["arch"], spec["args"], num_classes=len(meta["classes"])).to(dev).eval()
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    normalize = runtime.Normalizer(spec["normalize"]["mean"], spec["normalize"]["std"], spec["channels_last"])
    use_bf16 = amp.resolve_amp(spec["amp"], dev.type) == "bf16"
    point, _ = head_chain(model)
    captured: list[torch.Tensor] = []
    hook = point.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0].float().cpu()))
    result: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for split in ("train", "val", "test"):
            images = torch.from_numpy(arrays[f"{split}_images"]).unsqueeze(1).to(dev)
            for start in range(0, len(images), batch_size):
                x = normalize(runtime.to_unit(images[start:start + batch_size]))
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                    model(x)
            result[f"{split}_features"] = torch.cat(captured) if captured else torch.zeros(0)
            result[f"{split}_labels"] = torch.from_numpy(arrays[f"{split}_labels"].astype("int64"))
            captured.clear()
            log(f"[features] {split}: {tuple(result[f'{split}_features'].shape)}")
    hook.remove()
    result["spec"] = spec
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runtime.atomic_torch_save(result, out)


class FeatureBatches:
    """A split of cached features held on the device, shaped like runtime.Batches (`images`, `labels`)."""

    def __init__(self, feats, labels, device) -> None:
        self.images = feats.to(device)
        self.labels = labels.to(device)

    def __len__(self) -> int:
        return len(self.labels)


FEATURE_KEYS = tuple(f"{split}_{part}" for split in ("train", "val", "test") for part in ("features", "labels"))


def load(path: Path | str, device, keep=None) -> dict[str, FeatureBatches]:
    """The cached splits; `keep` selects training rows (a run's train_fraction subset), as for images.

    The file is a results file: whoever can write to a shared results directory could plant one. So it
    is loaded with weights_only=True (tensors, numbers, strings, lists and dicts, never code), and a file
    that does not load or does not hold the six tensors `compute` writes raises DamagedFileError naming
    it and the fix (remove it; the next workflow run computes it again and trains its runs on it).
    """
    import torch

    path = Path(path)
    d = _load_checked(path)
    train_x, train_y = d["train_features"], d["train_labels"]
    if keep is not None:
        idx = torch.as_tensor(keep, dtype=torch.int64)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(train_y)):
            raise _damaged(path, f"holds {len(train_y)} training rows, fewer than the run's subset needs")
        train_x, train_y = train_x[idx], train_y[idx]
    return {"train": FeatureBatches(train_x, train_y, device),
            "val": FeatureBatches(d["val_features"], d["val_labels"], device),
            "test": FeatureBatches(d["test_features"], d["test_labels"], device)}


def _damaged(path: Path, problem: str):
    from fmnist.errors import damaged

    return damaged(path, problem, "computes the features again and trains the runs that use them")


def _load_checked(path: Path) -> dict:
    """The feature file's contents, each split a float (N, D) feature matrix and N int64 labels."""
    import pickle
    import zipfile

    import torch

    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise _damaged(path, "it is missing") from None
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError,
            AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _damaged(path, f"not a loadable feature file ({first[:200]})") from None
    if not isinstance(d, dict):
        raise _damaged(path, "does not hold a dict of feature tensors")
    missing = [k for k in FEATURE_KEYS if not isinstance(d.get(k), torch.Tensor)]
    if missing:
        raise _damaged(path, f"lacks the tensor(s) {', '.join(missing)}")
    for split in ("train", "val", "test"):
        x, y = d[f"{split}_features"], d[f"{split}_labels"]
        if x.dim() != 2 or not x.is_floating_point() or y.dim() != 1 or y.dtype != torch.int64 or len(x) != len(y):
            raise _damaged(path, f"its {split} split is not an (N, D) float feature matrix with N int64 labels")
    return d


def attach_head(loop) -> None:
    """Make a StepLoop train and evaluate only the head chain (its parameters are the full model's,
    so the optimizer and the full model's state_dict see every update)."""
    from fmnist.runtime import Normalizer

    _, chain = head_chain(loop.model)
    loop.model = loop.step_model = chain
    loop.normalize = Normalizer(0.0, 1.0, False)  # features arrive ready; no image normalisation


def feature_images_per_second(run: dict, device, seconds: float = 2.0, batch_size: int = 200) -> float:
    """Images/s of the backbone's inference pass that `compute` makes (for the cost plan)."""
    import time

    import torch

    args = {**run["model"]["args"], "pretrained": False, "weights_path": None}
    model = models.build_model(run["model"]["arch"], args).to(device).eval()
    x = torch.randn(batch_size, 1, 28, 28, device=device)
    with torch.inference_mode():
        model(x)  # warm-up
        steps, t0 = 0, time.perf_counter()
        while steps < 2 or time.perf_counter() - t0 < seconds:
            model(x)
            steps += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return steps * batch_size / (time.perf_counter() - t0)
