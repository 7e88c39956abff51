"""Tests for webiml.data.transforms: alignment, IGNORE handling, degradations, eval policies, collate, GPU aug."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from webiml.data.masks import IGNORE
from webiml.data.transforms import (
    Compose,
    Degrade,
    GpuAugment,
    NativeRescale,
    PadToMultiple,
    RandomCropPad,
    RandomFlip,
    RandomGaussianBlur,
    RandomJpeg,
    RandomResize,
    RandomScale,
    Resize,
    collate_iml,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    make_eval_transform,
    make_train_transform,
    native_size,
    resize_down_up,
    restore_prediction,
)

# --------------------------------------------------------------------------------------------------------------
# a sample whose image encodes its mask: red = manipulated, blue = IGNORE, green = smooth ramp


def encoded_sample(h: int = 90, w: int = 130) -> dict:
    mask = torch.zeros(1, h, w)
    ys = torch.arange(h)[:, None].float()
    xs = torch.arange(w)[None, :].float()
    # an L shape in the upper left and a triangle on the right: no symmetry
    lshape = ((ys >= 10) & (ys < 50) & (xs >= 12) & (xs < 24)) | ((ys >= 38) & (ys < 50) & (xs >= 12) & (xs < 50))
    triangle = (ys >= 15) & (ys < 70) & (xs >= 80) & (xs - 80 < (ys - 15) * 0.8)
    ignore = (ys >= 60) & (ys < 75) & (xs >= 20) & (xs < 55)  # interior, away from the borders
    mask[0][lshape | triangle] = 1.0
    mask[0][ignore] = IGNORE
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[0][mask[0] == 1] = 255
    image[2][mask[0] == IGNORE] = 255
    image[1] = (xs * 200 / w).to(torch.uint8).expand(h, w)
    return {"image": image, "mask": mask, "label": 1, "path": "x.png"}


def edge_band(m: torch.Tensor, band: int) -> torch.Tensor:
    """Pixels within ``band`` (Chebyshev) of a change of mask value."""
    if band == 0:
        return torch.zeros_like(m, dtype=torch.bool)
    x = m[None, None]
    k = 2 * band + 1
    hi = TF.max_pool2d(x, k, stride=1, padding=band)
    lo = -TF.max_pool2d(-x, k, stride=1, padding=band)
    return (hi != lo)[0, 0]


def assert_aligned(sample: dict, band: int, pad_tol: int = 0, confident: bool = True) -> None:
    """mask==1 <=> red, blue => IGNORE, padding => black, away from a ``band`` around mask edges.

    With ``confident``, additionally, and with no band: wherever resampling left the red channel clearly
    high (> 80 %) or low (< 20 %), the mask must agree. Nearest-exact for the mask guarantees this under
    bilinear image resampling; a mask resampled with another convention (e.g. legacy NEAREST) breaks it.
    """
    image, mask = sample["image"], sample["mask"]
    assert image.dtype == torch.uint8 and mask.dtype == torch.float32
    assert image.shape[-2:] == mask.shape[-2:] and image.shape[0] == 3 and mask.shape[0] == 1
    m = mask[0]
    assert set(m.unique().tolist()) <= {0.0, 1.0, IGNORE}
    ok = ~edge_band(m, band)
    red, blue = image[0] > 127, image[2] > 127
    pos, ign = m == 1, m == IGNORE
    assert torch.equal(pos[ok], red[ok]), "mask==1 must coincide with red pixels"
    if confident:
        sure = (image[0] > 204) | (image[0] < 51)
        assert torch.equal(pos[sure], red[sure]), "mask misaligned where the image is unambiguous"
    assert not (blue & ~ign)[ok].any(), "blue (ignored) pixels must stay IGNORE"
    padding = ign & ~blue & ok
    if padding.any():
        assert image[:, padding].max() <= pad_tol, "image padding must be 0"


# --------------------------------------------------------------------------------------------------------------
# alignment


@pytest.mark.parametrize(
    ("transform", "band"),
    [
        pytest.param(RandomScale(0.5, 1.5), 1, id="scale"),
        pytest.param(RandomCropPad((64, 160)), 0, id="crop-h-pad-w"),
        pytest.param(RandomCropPad(48, crop_bias=1.0), 0, id="crop-biased"),
        pytest.param(RandomCropPad((120, 150)), 0, id="pad-both"),
        pytest.param(RandomFlip(0.5, 0.5), 0, id="flip"),
        pytest.param(Resize(77), 1, id="resize-square"),
        pytest.param(Resize((200, 45)), 1, id="resize-rect"),
        pytest.param(NativeRescale(max_side=100, min_side=50), 1, id="native-down"),
        pytest.param(NativeRescale(max_side=1000, min_side=200), 1, id="native-up"),
        pytest.param(PadToMultiple(32), 0, id="pad32"),
        pytest.param(make_train_transform(crop_size=96, jpeg_p=0.0), 1, id="train"),
        pytest.param(
            make_train_transform(crop_size=(64, 128), scale=(0.7, 1.3), hflip=0.5, vflip=0.5, jpeg_p=0.0), 1,
            id="train-rect-vflip",
        ),
        pytest.param(make_eval_transform("native", min_side=128, max_side=512), 1, id="eval-native"),
        pytest.param(make_eval_transform("fixed", size=100), 1, id="eval-fixed"),
    ],
)
def test_alignment(transform, band):
    src = encoded_sample()
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in src.items()}
    for seed in range(15):
        torch.manual_seed(seed)
        out = transform(src)
        assert_aligned(out, band)
        assert out["label"] == 1 and out["path"] == "x.png"  # other keys pass through
    for k, v in before.items():  # input untouched
        assert torch.equal(src[k], v) if isinstance(v, torch.Tensor) else src[k] == v


def test_alignment_train_pipeline_with_jpeg():
    src = encoded_sample()
    t = make_train_transform(crop_size=96, jpeg_p=1.0, jpeg_quality=(50, 100))
    for seed in range(10):
        torch.manual_seed(seed)
        out = t(src)
        assert_aligned(out, band=3, pad_tol=24, confident=False)


def test_flip_and_crop_are_exact_copies():
    src = encoded_sample()
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        out = RandomFlip(0.5, 0.5)(src)
        for dims in ([], [-1], [-2], [-2, -1]):
            if torch.equal(out["image"], src["image"].flip(dims) if dims else src["image"]):
                assert torch.equal(out["mask"], src["mask"].flip(dims) if dims else src["mask"])
                seen.add(tuple(dims))
    assert len(seen) == 4
    out = RandomCropPad((50, 60))(src)
    img, msk = src["image"], src["mask"]
    hits = [
        (top, left) for top in range(img.shape[1] - 49) for left in range(img.shape[2] - 59)
        if torch.equal(out["image"], img[:, top:top + 50, left:left + 60])
    ]
    assert hits and all(torch.equal(out["mask"], msk[:, t:t + 50, x:x + 60]) for t, x in hits)


def test_crop_bias_keeps_small_forgeries():
    h = w = 400
    mask = torch.zeros(1, h, w)
    mask[0, 300:306, 350:356] = 1.0
    sample = {"image": torch.zeros(3, h, w, dtype=torch.uint8), "mask": mask}
    torch.manual_seed(0)
    biased = sum(bool((RandomCropPad(64, crop_bias=1.0)(sample)["mask"] == 1).any()) for _ in range(30))
    unbiased = sum(bool((RandomCropPad(64, crop_bias=0.0)(sample)["mask"] == 1).any()) for _ in range(30))
    assert biased == 30
    assert unbiased < 10
    # no positives: falls back to a plain random crop
    empty = {"image": sample["image"], "mask": torch.zeros(1, h, w)}
    assert RandomCropPad(64, crop_bias=1.0)(empty)["mask"].shape == (1, 64, 64)


# --------------------------------------------------------------------------------------------------------------
# IGNORE and padding


def test_ignore_survives_scaling_and_values_stay_exact():
    mask = torch.zeros(1, 40, 40)
    mask[0, 10:30, 5:20] = IGNORE
    mask[0, 10:30, 20:35] = 1.0
    sample = {"image": torch.zeros(3, 40, 40, dtype=torch.uint8), "mask": mask}
    for seed in range(10):
        torch.manual_seed(seed)
        out = RandomScale(0.5, 1.5)(sample)
        assert set(out["mask"].unique().tolist()) == {0.0, 1.0, IGNORE}
    # the mask is never interpolated: between 1 and IGNORE no 0 (or anything else) may appear
    stripes = torch.full((1, 40, 40), IGNORE)
    stripes[0, :, ::4] = 1.0
    stripes[0, :, 1::4] = 1.0
    for size in (17, 33, 61, (13, 90)):
        out = Resize(size)({"image": sample["image"], "mask": stripes})
        assert set(out["mask"].unique().tolist()) == {1.0, IGNORE}
    for size in (17, 33, 61):
        out = Resize(size)(sample)
        assert set(out["mask"].unique().tolist()) == {0.0, 1.0, IGNORE}
        frac = (out["mask"] == IGNORE).float().mean().item()
        assert abs(frac - (mask == IGNORE).float().mean().item()) < 0.08


def test_padding_is_ignore_and_zero():
    image = torch.full((3, 20, 30), 200, dtype=torch.uint8)
    sample = {"image": image, "mask": torch.ones(1, 20, 30)}
    out = RandomCropPad((50, 40))(sample)
    assert out["image"].shape == (3, 50, 40) and out["mask"].shape == (1, 50, 40)
    assert torch.equal(out["image"][:, :20, :30], image)
    assert (out["image"][:, 20:] == 0).all() and (out["image"][:, :, 30:] == 0).all()
    assert (out["mask"][:, :20, :30] == 1).all()
    assert (out["mask"][:, 20:] == IGNORE).all() and (out["mask"][:, :, 30:] == IGNORE).all()

    out = PadToMultiple(32)(sample)
    assert out["image"].shape == (3, 32, 32)
    assert out["valid_size"].dtype == torch.long and out["valid_size"].tolist() == [20, 30]
    assert (out["mask"][:, 20:] == IGNORE).all() and (out["image"][:, :, 30:] == 0).all()


def test_missing_mask_is_fine():
    sample = {"image": torch.zeros(3, 50, 70, dtype=torch.uint8)}
    torch.manual_seed(0)
    out = make_train_transform(crop_size=64)(sample)
    assert out["image"].shape == (3, 64, 64) and "mask" not in out
    out = make_eval_transform("native", min_side=64)(sample)
    assert "mask_orig" not in out and out["orig_size"].tolist() == [50, 70]


# --------------------------------------------------------------------------------------------------------------
# degradations


def smooth_image(h: int = 64, w: int = 80) -> torch.Tensor:
    ys = torch.linspace(0, 1, h)[:, None]
    xs = torch.linspace(0, 1, w)[None, :]
    chans = [(ys * 0.7 + xs * 0.3), (torch.sin(xs * 6) * 0.5 + 0.5) * 0.8, (ys * xs)]
    return (torch.stack([c.expand(h, w) for c in chans]) * 255).round().to(torch.uint8)


def test_random_jpeg_compresses_and_keeps_mask():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
    mask = (torch.rand(1, 64, 64, generator=g) > 0.5).float()
    mask[0, :5] = IGNORE
    out = RandomJpeg(p=1.0, quality=(50, 60))({"image": image, "mask": mask})
    assert out["image"].dtype == torch.uint8 and out["image"].shape == image.shape
    assert (out["image"].float() - image.float()).abs().mean() > 10  # noise does not survive JPEG 50
    assert torch.equal(out["mask"], mask)
    assert out["mask"] is mask or torch.equal(out["mask"], mask)
    # p=0 leaves the image alone
    assert torch.equal(RandomJpeg(p=0.0)({"image": image, "mask": mask})["image"], image)


def test_jpeg_quality_100_is_close_and_really_is_jpeg():
    img = smooth_image()
    q100 = jpeg(img, 100)
    assert (q100.float() - img.float()).abs().mean() < 1.5
    q10 = jpeg(img, 10)
    assert (q10.float() - img.float()).abs().mean() > (q100.float() - img.float()).abs().mean()
    assert torch.equal(jpeg(img, 70), jpeg(img, 70))  # deterministic
    with pytest.raises(ValueError):
        jpeg(img, 0)
    with pytest.raises(TypeError):
        jpeg(img.float(), 90)


def test_functional_degradations():
    img = smooth_image()
    img[:, 20:40, 30:50] = 255 - img[:, 20:40, 30:50]  # some edges to blur
    assert torch.equal(gaussian_blur(img, 0.0), img)
    blurred = gaussian_blur(img, 2.0)
    assert blurred.shape == img.shape and blurred.dtype == torch.uint8 and not torch.equal(blurred, img)

    a = gaussian_noise(img, 8.0, torch.Generator().manual_seed(3))
    b = gaussian_noise(img, 8.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.uint8
    assert 4 < (a.float() - img.float()).abs().mean() < 9
    assert torch.equal(gaussian_noise(img, 0.0), img)

    r = resize_down_up(img, 0.5)
    assert r.shape == img.shape and r.dtype == torch.uint8 and not torch.equal(r, img)
    assert torch.equal(resize_down_up(img, 1.0), img)

    sample = {"image": img, "mask": torch.zeros(1, 64, 80)}
    for kind, level in (("jpeg", 50), ("blur", 1.0), ("noise", 5.0), ("resize", 0.5)):
        d1, d2 = Degrade(kind, level)(sample), Degrade(kind, level)(sample)
        assert torch.equal(d1["image"], d2["image"]) and not torch.equal(d1["image"], img)
        assert d1["mask"] is sample["mask"]
    assert torch.equal(Degrade("none", 0)(sample)["image"], img)
    with pytest.raises(ValueError):
        Degrade("rotate", 1)


def test_random_blur_and_resize_keep_mask_and_geometry():
    sample = encoded_sample()
    torch.manual_seed(0)
    for t in (RandomGaussianBlur(p=1.0, sigma=(0.5, 1.5)), RandomResize(p=1.0, scale=(0.5, 0.8))):
        out = t(sample)
        assert out["image"].shape == sample["image"].shape and not torch.equal(out["image"], sample["image"])
        assert out["mask"] is sample["mask"]
        assert_aligned(out, band=4, confident=False)


# --------------------------------------------------------------------------------------------------------------
# evaluation policies


def test_native_policy_pads_to_32():
    image = torch.randint(0, 256, (3, 400, 300), dtype=torch.uint8)
    mask = (torch.rand(1, 400, 300) > 0.5).float()
    out = make_eval_transform("native")({"image": image, "mask": mask, "path": "p"})
    assert out["image"].shape == (3, 416, 320) and out["mask"].shape == (1, 416, 320)
    assert out["valid_size"].tolist() == [400, 300] and out["valid_size"].dtype == torch.long
    assert out["orig_size"].tolist() == [400, 300] and out["orig_size"].dtype == torch.long
    assert torch.equal(out["image"][:, :400, :300], image)  # no resampling inside the limits
    assert torch.equal(out["mask_orig"], mask) and out["path"] == "p"


@pytest.mark.parametrize(("h", "w"), [(3000, 200), (200, 3000)])
def test_native_policy_extreme_aspect(h, w):
    # the long side is capped at max_side; the short side then stays below min_side (the cap wins)
    expect = (2048, 137) if h > w else (137, 2048)
    assert native_size(h, w) == expect
    sample = {"image": torch.zeros(3, h, w, dtype=torch.uint8), "mask": torch.zeros(1, h, w)}
    out = make_eval_transform("native")(sample)
    assert out["valid_size"].tolist() == list(expect)
    assert out["image"].shape[-2:] == tuple(-(-s // 32) * 32 for s in expect)
    assert out["orig_size"].tolist() == [h, w] and out["mask_orig"].shape == (1, h, w)


def test_native_size_rules():
    assert native_size(500, 700) == (500, 700)
    assert native_size(4096, 1024) == (2048, 512)
    assert native_size(100, 200) == (256, 512)  # upscale short side to min_side
    assert native_size(100, 1000, max_side=2048, min_side=256) == (205, 2048)  # capped by max_side
    assert native_size(1, 1) == (256, 256)


def blocky_mask(h: int, w: int, block: int = 16) -> torch.Tensor:
    yy = torch.arange(h)[:, None] // block
    xx = torch.arange(w)[None, :] // block
    return ((yy * 7 + xx * 3) % 5 < 2).float()[None]


@pytest.mark.parametrize("policy", ["fixed", "native"])
@pytest.mark.parametrize(("h", "w"), [(300, 200), (150, 500), (2500, 700)])
def test_restore_prediction_inverts_policy(policy, h, w):
    mask = blocky_mask(h, w, block=max(16, max(h, w) // 20))
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    out = make_eval_transform(policy, size=256)({"image": image, "mask": mask})
    if policy == "fixed":
        assert out["image"].shape == (3, 256, 256) and out["valid_size"].tolist() == [256, 256]
    # a "perfect" prediction: the transformed mask, with garbage in the padding
    pred = out["mask"].clone()
    pred[pred == IGNORE] = 7.0
    restored = restore_prediction(pred, out["valid_size"], out["orig_size"])
    assert restored.shape == (1, h, w) and restored.dtype == torch.float32
    agreement = ((restored > 0.5) == (mask > 0.5)).float().mean().item()
    assert agreement > 0.97
    assert restored.max() <= 1.0 + 1e-5  # padding was cropped away
    const = torch.full_like(out["mask"], 0.25)
    const_restored = restore_prediction(const, tuple(out["valid_size"].tolist()), out["orig_size"])
    torch.testing.assert_close(const_restored, torch.full((1, h, w), 0.25))


def test_restore_prediction_crop_only_is_exact():
    pred = torch.rand(1, 64, 96)
    assert torch.equal(restore_prediction(pred, (50, 70), (50, 70)), pred[:, :50, :70])
    assert restore_prediction(torch.rand(2, 1, 64, 64), [60, 60], [120, 30]).shape == (2, 1, 120, 30)


def test_bad_policy():
    with pytest.raises(ValueError):
        make_eval_transform("stretch")


# --------------------------------------------------------------------------------------------------------------
# collate and GPU augmentation


def test_collate_same_size():
    t = make_eval_transform("fixed", size=64)
    batch = [
        t({"image": torch.zeros(3, 40 + i, 50, dtype=torch.uint8), "mask": torch.zeros(1, 40 + i, 50),
           "label": i % 2, "weight": 0.5, "index": i, "path": f"{i}.png", "source": "s"})
        for i in range(3)
    ]
    out = collate_iml(batch)
    assert out["image"].shape == (3, 3, 64, 64) and out["image"].dtype == torch.uint8
    assert out["mask"].shape == (3, 1, 64, 64)
    assert out["label"].tolist() == [0, 1, 0] and out["label"].dtype == torch.long
    assert out["weight"].dtype == torch.float32 and out["index"].tolist() == [0, 1, 2]
    assert out["valid_size"].shape == (3, 2) and out["orig_size"].tolist() == [[40, 50], [41, 50], [42, 50]]
    assert isinstance(out["mask_orig"], list) and [m.shape[1] for m in out["mask_orig"]] == [40, 41, 42]
    assert out["path"] == ["0.png", "1.png", "2.png"] and out["source"] == ["s"] * 3


def test_collate_mixed_sizes_pads_to_batch_max():
    t = make_eval_transform("native", min_side=32)
    a = t({"image": torch.full((3, 64, 96), 9, dtype=torch.uint8), "mask": torch.ones(1, 64, 96), "label": 1})
    b = t({"image": torch.full((3, 100, 40), 9, dtype=torch.uint8), "mask": torch.zeros(1, 100, 40), "label": 0})
    out = collate_iml([a, b])
    assert out["image"].shape == (2, 3, 128, 96) and out["mask"].shape == (2, 1, 128, 96)
    assert out["valid_size"].tolist() == [[64, 96], [100, 40]]
    assert (out["image"][0, :, 64:] == 0).all() and (out["mask"][0, :, 64:] == IGNORE).all()
    assert (out["image"][1, :, :, 64:] == 0).all() and (out["mask"][1, :, :, 64:] == IGNORE).all()
    assert (out["image"][1, :, :100, :40] == 9).all() and (out["mask"][1, :, :100, :40] == 0).all()
    assert isinstance(out["mask_orig"], list)
    for i in range(2):  # each prediction maps back to its own original size
        restored = restore_prediction(out["mask"][i], out["valid_size"][i], out["orig_size"][i])
        assert torch.equal(restored, [a, b][i]["mask_orig"])

    # without valid_size: added from each image's own size; odd tensors with different shapes stay lists
    raw = [{"image": torch.zeros(3, 10, 12, dtype=torch.uint8), "extra": torch.zeros(5)},
           {"image": torch.zeros(3, 14, 8, dtype=torch.uint8), "extra": torch.zeros(6)}]
    out = collate_iml(raw)
    assert out["image"].shape == (2, 3, 14, 12) and out["valid_size"].tolist() == [[10, 12], [14, 8]]
    assert isinstance(out["extra"], list)


def test_gpu_augment_train_and_eval():
    torch.manual_seed(0)
    x = torch.randint(30, 220, (4, 3, 32, 32), dtype=torch.uint8)
    aug = GpuAugment(jitter_p=1.0, blur_p=1.0, noise_p=1.0)
    aug.train()
    y = aug(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert 0.0 <= y.min() and y.max() <= 1.0
    assert not torch.allclose(y, x.float() / 255)
    aug.eval()
    torch.testing.assert_close(aug(x), x.float() / 255)
    xf = torch.rand(2, 3, 16, 16)
    assert torch.equal(aug(xf), xf)
    aug.train()
    torch.manual_seed(1)
    y1 = aug(xf)
    torch.manual_seed(1)
    torch.testing.assert_close(aug(xf), y1)
    assert torch.equal(GpuAugment(jitter_p=0, blur_p=0, noise_p=0).train()(xf), xf)
    with pytest.raises(ValueError):
        aug(xf[0])


# --------------------------------------------------------------------------------------------------------------
# determinism


def test_train_pipeline_is_deterministic_under_seed():
    src = encoded_sample()
    t = make_train_transform(crop_size=64, jpeg_p=0.5, blur_p=0.5, resize_p=0.5)

    def run(seed):
        torch.manual_seed(seed)
        return [t(src) for _ in range(5)]

    a, b, c = run(0), run(0), run(1)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
    assert any(not torch.equal(x["image"], z["image"]) for x, z in zip(a, c, strict=True))


def test_compose_repr_and_order():
    calls = []
    t = Compose([lambda s: calls.append(1) or s, lambda s: calls.append(2) or s])
    t({"image": torch.zeros(3, 2, 2, dtype=torch.uint8)})
    assert calls == [1, 2]
    assert "RandomCropPad" in repr(make_train_transform())


def test_blur_and_degrade_work_on_tiny_images() -> None:
    from webiml.data.transforms import Degrade, gaussian_blur

    tiny = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    assert gaussian_blur(tiny, 4.0).shape == tiny.shape
    Degrade("blur", 3.0)  # validated on an 8x8 image at construction
