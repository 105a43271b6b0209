"""Property tests of the batched augmentations on real Fashion-MNIST images: targets, boxes, mirrors, per-image draws, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from fmnist import augment, data
from fmnist.augment import batched

N = 64


@pytest.fixture(scope="module")
def batch(prepared_small):
    """64 real training images in [0, 1] (N, 1, 28, 28) with their labels, in a fixed shuffled order."""
    arrays, _ = data.load_prepared(prepared_small)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(arrays["train_labels"]), generator=g)[:N]
    x = torch.from_numpy(arrays["train_images"]).unsqueeze(1)[idx].float() / 255.0
    y = torch.from_numpy(arrays["train_labels"]).long()[idx]
    return x, y


def run(kind, x, y, seed=0, **params):
    torch.manual_seed(seed)
    return augment.build_augmentation(kind, params)(x, y)


def test_every_kind_has_a_description_and_an_implementation():
    assert set(augment.KINDS) == set(augment.DESCRIPTIONS) == set(batched.REGISTRY)
    assert {"none", "flip", "flip_affine", "cutmix", "mixup", "cutmix_mixup", "randaugment",
            "random_erasing"} <= set(augment.KINDS)


@pytest.mark.parametrize("kind", sorted(augment.KINDS))
def test_outputs_are_images_in_range_with_valid_targets(kind, batch):
    x, y = batch
    out, target = run(kind, x, y)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    aug = augment.build_augmentation(kind)
    if aug.mixes_labels:
        assert target.shape == (N, 10)
        torch.testing.assert_close(target.sum(1), torch.ones(N))
    else:
        assert torch.equal(target, y)


@pytest.mark.parametrize("kind", sorted(set(augment.KINDS) - {"none"}))
def test_same_seed_same_batch_other_seed_other_batch(kind, batch):
    x, y = batch
    a1, t1 = run(kind, x, y, seed=5)
    a2, t2 = run(kind, x, y, seed=5)
    assert torch.equal(a1, a2) and torch.equal(t1, t2)
    b, _ = run(kind, x, y, seed=6)
    assert not torch.equal(a1, b)
    assert not torch.equal(a1, x)  # it did augment


def test_mixup_targets_are_lambda_weighted_one_hots(batch):
    x, y = batch
    out, t = run("mixup", x, y, alpha=0.4)
    x2, y2 = x.roll(1, 0), y.roll(1, 0)
    torch.testing.assert_close(t.sum(1), torch.ones(N))
    differ = y != y2
    assert differ.sum() > N // 2
    lam = t[torch.arange(N), y]
    # Where the partner has another class the target holds exactly lam and 1 - lam ...
    torch.testing.assert_close(t[differ, y2[differ]], 1 - lam[differ])
    assert ((t > 0).sum(1)[differ] <= 2).all()
    # ... and the image is the same lam-weighted blend.
    torch.testing.assert_close(out[differ], lam[differ].view(-1, 1, 1, 1) * x[differ]
                               + (1 - lam[differ]).view(-1, 1, 1, 1) * x2[differ])
    assert len(torch.unique(lam[differ])) == int(differ.sum())  # a lambda per image


def test_cutmix_target_weight_is_the_pasted_area_of_each_image(batch):
    x, y = batch
    out, t = run("cutmix", x, y, seed=3)
    # Replaying the same draws on images of distinct constant values reveals each pasted region.
    marks = (torch.arange(N, dtype=torch.float32) + 1).div(N + 1).view(N, 1, 1, 1).expand_as(x).contiguous()
    out_marks, _ = run("cutmix", marks, y, seed=3)
    pasted = out_marks == marks.roll(1, 0)  # (N, 1, 28, 28)
    assert (pasted | (out_marks == marks)).all()
    frac = pasted.float().mean((1, 2, 3))
    assert (frac > 0).sum() > N // 2 and len(torch.unique(frac)) > N // 4  # a box per image
    x2, y2 = x.roll(1, 0), y.roll(1, 0)
    torch.testing.assert_close(out, torch.where(pasted, x2, x), rtol=0, atol=0)
    expected = (1 - frac).view(N, 1) * torch.nn.functional.one_hot(y, 10) \
        + frac.view(N, 1) * torch.nn.functional.one_hot(y2, 10)
    torch.testing.assert_close(t, expected)
    for m in pasted[:, 0]:  # each pasted region is one axis-aligned rectangle
        rows, cols = m.any(1), m.any(0)
        assert torch.equal(m, rows[:, None] & cols[None, :])


def test_flip_gives_exact_mirrors_per_image(batch):
    x, y = batch
    out, _ = run("flip", x, y, seed=1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (mirrored | same).all()
    asymmetric = ~(x == x.flip(-1)).flatten(1).all(1)
    n_flipped = int((mirrored & asymmetric).sum())
    assert 16 <= n_flipped <= 48  # p = 0.5, drawn per image
    assert torch.equal(run("flip", x, y, p=1.0)[0], x.flip(-1))
    assert torch.equal(run("flip", x, y, p=0.0)[0], x)


@pytest.mark.parametrize("kind", ["randaugment", "flip_affine", "random_erasing"])
def test_each_image_of_a_batch_draws_its_own_transform(kind, batch):
    x, y = batch
    same = x[:1].expand(N, -1, -1, -1).contiguous()  # one real image, 64 times
    out, _ = run(kind, same, y, seed=2, **({"p": 1.0} if kind == "random_erasing" else {}))
    distinct = len(torch.unique(out.flatten(1), dim=0))
    assert distinct >= N // 2, f"{kind}: only {distinct} distinct results for {N} copies of one image"


def test_randaugment_ops_differ_within_a_batch_and_paths_agree(batch):
    x, y = batch
    aug = augment.build_augmentation("randaugment", {"num_ops": 1})
    torch.manual_seed(4)
    grouped, _ = aug(x, y, grouped=True)
    torch.manual_seed(4)
    masked, _ = aug(x, y, grouped=False)
    torch.testing.assert_close(grouped, masked)
    # Replay the op draw: with one op per image, images that drew identity are unchanged, the rest mostly not.
    torch.manual_seed(4)
    op = torch.randint(0, len(aug.ops), (N,))
    assert len(torch.unique(op)) >= 8
    unchanged = (grouped == x).flatten(1).all(1)
    assert torch.equal(unchanged[op == aug.ops.index("identity")], torch.ones(int((op == 0).sum()), dtype=torch.bool))
    assert (~unchanged).sum() >= N // 2


def test_randaugment_draws_from_torchvisions_fourteen_ops(batch):
    """Our op space is torchvision's, name for name and in its order, "Color" included: leaving the
    grayscale no-op out would draw every other op 1/13 of the time instead of 1/14."""
    import re

    from torchvision.transforms import v2

    theirs = [re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().replace("auto_contrast", "autocontrast")
              for name in v2.RandAugment._AUGMENTATION_SPACE]
    assert theirs == augment.RANDAUGMENT_OPS and len(theirs) == 14
    aug = augment.build_augmentation("randaugment", {"num_ops": 1})
    assert aug.ops == theirs
    # each image draws one op uniformly from 14; "color" and "identity" leave a gray image as it is
    x, y = batch
    torch.manual_seed(5)
    out, _ = aug(x.repeat(8, 1, 1, 1), y.repeat(8))
    torch.manual_seed(5)
    op = torch.randint(0, 14, (8 * N,))
    unchanged = (out == x.repeat(8, 1, 1, 1)).flatten(1).all(1)
    idle = (op == theirs.index("identity")) | (op == theirs.index("color"))
    assert unchanged[idle].all()
    assert torch.equal(aug.apply_op("color", x, torch.ones(N)), x)
    rgb = x.expand(-1, 3, -1, -1)
    from torchvision.transforms.v2 import functional as TF

    torch.testing.assert_close(aug.apply_op("color", rgb, torch.ones(N)), TF.adjust_saturation(rgb, 1.27))


def test_randaugment_single_ops_match_torchvision(batch):
    """Pixel ops at a fixed magnitude equal torchvision's functional ops on the same image."""
    from torchvision.transforms.v2 import functional as TF

    x, y = batch
    aug = augment.build_augmentation("randaugment", {"magnitude": 9})
    plus = torch.ones(N)
    torch.testing.assert_close(aug.apply_op("brightness", x, plus), TF.adjust_brightness(x, 1.27))
    torch.testing.assert_close(aug.apply_op("contrast", x, plus), TF.adjust_contrast(x, 1.27))
    torch.testing.assert_close(aug.apply_op("sharpness", x, -plus), TF.adjust_sharpness(x, 0.73))
    torch.testing.assert_close(aug.apply_op("solarize", x, plus), TF.solarize(x, 0.7))
    torch.testing.assert_close(aug.apply_op("posterize", x, plus), TF.posterize(x, 7))
    # Geometric ops: whole-pixel shifts (int(150/331 * 0.3 * 28) = 3 pixels) and nearest sampling, as
    # torchvision's RandAugment. Its F.rotate turns counter-clockwise, F.affine clockwise: sign is random.
    nearest, no_shear = TF.InterpolationMode.NEAREST, [0.0, 0.0]
    for op, shift in (("translate_x", [3, 0]), ("translate_y", [0, 3])):
        ref = TF.affine(x, angle=0.0, translate=shift, scale=1.0, shear=no_shear, interpolation=nearest, fill=0)
        torch.testing.assert_close(aug.apply_op(op, x, plus), ref, rtol=0, atol=0)
    torch.testing.assert_close(aug.apply_op("rotate", x, plus), TF.rotate(x, -9.0, interpolation=nearest, fill=0),
                               rtol=0, atol=0)
    shear = math.degrees(math.atan(0.09))  # torchvision: about the top-left corner, its sign the other way
    for op, shears in (("shear_x", [-shear, 0.0]), ("shear_y", [0.0, -shear])):
        ref = TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=shears, interpolation=nearest, fill=0,
                        center=[0, 0])
        torch.testing.assert_close(aug.apply_op(op, x, plus), ref, rtol=0, atol=0)


def test_flip_affine_matches_torchvision_random_affine_on_pil_images(batch):
    """Report D's train_aug on PIL images: RandomHorizontalFlip, then RandomAffine (nearest, whole pixels)."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF1

    x, _ = batch
    g = torch.Generator().manual_seed(0)
    angle = torch.empty(N).uniform_(-10, 10, generator=g)
    pixels = torch.randint(-3, 4, (N, 2), generator=g)
    flip = torch.rand(N, generator=g) < 0.5
    refs = []
    for i in range(N):
        image = Image.fromarray((x[i, 0] * 255).round().to(torch.uint8).numpy())
        image = TF1.hflip(image) if flip[i] else image
        image = TF1.affine(image, angle=float(angle[i]), translate=pixels[i].tolist(), scale=1.0, shear=[0.0, 0.0],
                           interpolation=InterpolationMode.NEAREST, fill=0)
        refs.append(torch.from_numpy(np.asarray(image).copy()).float() / 255.0)
    ref = torch.stack(refs).unsqueeze(1)
    same = {mode: (batched.affine(x, angle, pixels / 28.0, flip, mode=mode) == ref).float().mean().item()
            for mode in ("nearest", "bilinear")}
    assert same["nearest"] > 0.9999, same  # all but ties in rounding a source position
    assert same["bilinear"] < 0.9, same  # blending is another image: the check can tell them apart


def test_flip_affine_shifts_whole_pixels_within_translate(batch):
    x, y = batch
    out, _ = run("flip_affine", x, y, seed=3, flip_p=0.0, degrees=0.0, translate=0.1)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    shifts = []
    for i in range(N):  # each output is its input moved by whole pixels, at most round(2.8) = 3
        found = [(dx, dy) for dx in range(-3, 4) for dy in range(-3, 4)
                 if torch.equal(out[i], padded[i, :, 3 - dy:31 - dy, 3 - dx:31 - dx])]
        assert found, f"image {i} is not a whole-pixel shift of its input"
        shifts.append(found[0])
    assert len(set(shifts)) > N // 4


def test_random_erasing_rectangles_per_image(batch):
    x, y = batch
    out, _ = run("random_erasing", x + 0.0, y, seed=7, p=1.0, value=0.5)
    erased = out == 0.5
    assert (erased.flatten(1).any(1)).all()
    torch.testing.assert_close(out[~erased], x[~erased], rtol=0, atol=0)
    areas = erased.float().mean((1, 2, 3))
    assert len(torch.unique(areas)) > N // 4
    out_p0, _ = run("random_erasing", x, y, p=0.0)
    assert torch.equal(out_p0, x)


def test_cutmix_mixup_switches_per_batch(batch):
    x, y = batch
    # switch_prob 1 is CutMix with the same draws; 0 is MixUp (a blend: no pixel exactly from one image).
    cm, tcm = run("cutmix_mixup", x, y, seed=9, switch_prob=1.0)
    c, tc = run("cutmix", x, y, seed=9, alpha=1.0)
    assert torch.equal(cm, c) and torch.equal(tcm, tc)
    mu, tmu = run("cutmix_mixup", x, y, seed=9, switch_prob=0.0)
    m, tm = run("mixup", x, y, seed=9, alpha=0.2)
    assert not torch.equal(mu, c)
    modes = []
    for seed in range(12):
        out, _ = run("cutmix_mixup", x, y, seed=seed)
        c, _ = run("cutmix", x, y, seed=seed)
        modes.append(torch.equal(out, c))
    assert 0 < sum(modes) < len(modes)  # both arms are taken over batches


def test_bad_parameters_name_the_problem():
    with pytest.raises(ValueError, match="takes no parameter 'alpah'.*alpha"):
        augment.resolve("mixup", {"alpah": 1.0})
    with pytest.raises(ValueError, match=r"switch_prob=1.5 must be a number in \[0, 1\]"):
        augment.resolve("cutmix_mixup", {"switch_prob": 1.5})
    with pytest.raises(ValueError, match="randaugment: ops .*'blur'.*choose from"):
        augment.resolve("randaugment", {"ops": ["rotate", "blur"]})
    with pytest.raises(ValueError, match="magnitude 40 exceeds num_magnitude_bins - 1 = 30"):
        augment.resolve("randaugment", {"magnitude": 40})
    with pytest.raises(ValueError, match="interpolation='cubic' must be one of nearest, bilinear"):
        augment.resolve("flip_affine", {"interpolation": "cubic"})
    with pytest.raises(ValueError, match="value='noise' must be a pixel value"):
        augment.resolve("random_erasing", {"value": "noise"})


def test_tile_puts_each_image_in_its_cell_with_fill_between():
    import numpy as np

    from fmnist.plots import tile

    grid = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    out = tile(grid, pad=2, fill=-1.0)
    assert out.shape == (2 * 4 + 2, 3 * 5 + 2 * 2)
    for r in range(2):
        for c in range(3):
            np.testing.assert_array_equal(out[r * 6: r * 6 + 4, c * 7: c * 7 + 5], grid[r, c])
    assert (out[4:6] == -1).all() and (out[:, 5:7] == -1).all() and (out[:, 12:14] == -1).all()
    assert (out == -1).sum() == out.size - grid.size
    assert tile(grid[:1, :1], pad=3).shape == (4, 5)  # one image: no padding around it


def test_gallery_draws_one_row_per_augmentation(prepared_small, tmp_path):
    import matplotlib.image as mpimg

    from fmnist.gallery import gallery

    two = gallery(prepared_small, tmp_path / "two.png", kinds=["flip", "cutmix"], n=4)
    every = gallery(prepared_small, tmp_path / "all.png",
                    kinds={"mix_strong": {"kind": "mixup", "alpha": 1.0}, **{k: {"kind": k} for k in augment.KINDS}})
    h_two, h_all = mpimg.imread(two).shape[0], mpimg.imread(every).shape[0]
    assert h_all > 2 * h_two  # 10 rows against 3
    with pytest.raises(augment.UnknownAugmentationError, match="unknown augmentation kind 'flop'"):
        gallery(prepared_small, tmp_path / "bad.png", kinds=["flop"])
