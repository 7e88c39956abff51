"""Pair synthesis (exact masks, determinism, manifest) and pair alignment (crop box, features, failure)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from webiml.align import (
    align_pair,
    box_homography,
    register_pair,
    registration_agreement,
    resize_homography,
    warp_original,
)
from webiml.data.pair_synthesis import (
    make_pool,
    make_sdg_pair,
    make_spg_pair,
    make_unrelated_pair,
    synthesize_pair,
    write_pair_dataset,
)
from webiml.data.pairs import FULL_BOX, PairManifestError, read_pair_manifest
from webiml.data.procedural import procedural_photo


@pytest.fixture(scope="module")
def pool():
    return make_pool("procedural", (96, 96), seed=0)


# --------------------------------------------------------------------------------------------------
# synthesis


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aligned_spg_pair_is_exact_outside_the_mask(pool, seed: int) -> None:
    p = make_spg_pair(pool, np.random.default_rng(seed), size=(96, 96), aligned=True, degrade=False)
    assert p.category == "SPG" and p.aligned and p.crop_box == FULL_BOX
    assert p.original.shape == p.forged.shape == (96, 96, 3)
    keep = p.mask == 0
    assert 0 < (~keep).mean() <= 0.6
    np.testing.assert_array_equal(p.forged[keep], p.original[keep])
    # every changed pixel is marked
    assert not (p.forged != p.original).any(-1)[keep].any()
    assert set(np.unique(p.mask)) <= {0, 255}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_tolerance_drops_only_faint_changes(pool, seed: int) -> None:
    exact = make_spg_pair(pool, np.random.default_rng(seed), size=(96, 96), aligned=True, degrade=False)
    tol = make_spg_pair(pool, np.random.default_rng(seed), size=(96, 96), aligned=True, degrade=False, label_tolerance=8)
    np.testing.assert_array_equal(exact.forged, tol.forged)  # same edits, only the label differs
    assert tol.mask.any() and not (tol.mask > exact.mask).any()
    diff = np.abs(tol.forged.astype(int) - tol.original.astype(int)).max(-1)
    assert diff[tol.mask == 0].max() <= 8
    assert (diff[(exact.mask > 0) & (tol.mask == 0)] <= 8).all()


def test_cropped_spg_pair_records_its_box(pool) -> None:
    p = make_spg_pair(pool, np.random.default_rng(5), size=(96, 96), aligned=False, degrade=False)
    x0, y0, x1, y1 = p.info["crop_px"]
    assert not p.aligned and (x0, y0, x1, y1) != (0, 0, 96, 96)
    assert p.forged.shape[:2] == (y1 - y0, x1 - x0) == p.mask.shape
    np.testing.assert_allclose(np.array(p.crop_box) * 96, [x0, y0, x1, y1])
    np.testing.assert_array_equal(p.reference, p.original[y0:y1, x0:x1])
    keep = p.mask == 0
    np.testing.assert_array_equal(p.forged[keep], p.original[y0:y1, x0:x1][keep])


def test_degraded_spg_pair_keeps_an_exact_reference(pool) -> None:
    rng = np.random.default_rng(7)
    p = make_spg_pair(pool, rng, size=(96, 96), aligned=False, degrade=True, resize_p=1.0, colour_p=1.0, forged_jpeg_p=0.0)
    keep = p.mask == 0
    np.testing.assert_array_equal(p.forged[keep], p.reference[keep])
    assert p.original.shape != (96, 96, 3)  # resized
    assert "colour" in p.info["original_degradation"]


def test_sdg_mask_marks_the_pasted_object(pool) -> None:
    p = make_sdg_pair(pool, np.random.default_rng(3), size=(96, 96), degrade=False)
    assert p.category == "SDG" and not p.aligned
    pasted = p.mask > 0
    assert 0 < pasted.mean() < 0.6
    keep = ~pasted
    np.testing.assert_array_equal(p.forged[keep], p.reference[keep])  # the target photo is untouched elsewhere
    assert (p.forged != p.reference).any(-1)[pasted].mean() > 0.5  # the marked pixels did change
    assert p.source_mask is not None and p.source_mask.shape == p.original.shape[:2]
    src = p.source_mask > 0
    ratio = pasted.sum() / src.sum()
    assert 0.2 < ratio < 4.0  # the pasted object is the donated region, rescaled by 0.6-1.5


def test_unrelated_pair_has_empty_masks(pool) -> None:
    p = make_unrelated_pair(pool, np.random.default_rng(0), size=(96, 96))
    assert p.category == "unrelated" and p.mask.max() == 0 and p.source_mask.max() == 0


def test_synthesis_is_deterministic(pool) -> None:
    a = synthesize_pair(pool, np.random.default_rng([4, 1]), size=(96, 96))
    b = synthesize_pair(make_pool("procedural", (96, 96), seed=0), np.random.default_rng([4, 1]), size=(96, 96))
    c = synthesize_pair(pool, np.random.default_rng([4, 2]), size=(96, 96))
    for x, y in [(a.original, b.original), (a.forged, b.forged), (a.mask, b.mask)]:
        np.testing.assert_array_equal(x, y)
    assert a.category == b.category and a.crop_box == b.crop_box
    assert a.forged.shape != c.forged.shape or not np.array_equal(a.forged, c.forged)


def test_pair_dataset_writer_is_deterministic_cached_and_readable(tmp_path) -> None:
    m1 = write_pair_dataset(tmp_path / "a", 6, seed=3, size=(64, 64))
    m2 = write_pair_dataset(tmp_path / "b", 6, seed=3, size=(64, 64))
    assert m1.read_text() == m2.read_text()
    for sub in ("original", "forged", "mask"):
        for f in sorted((tmp_path / "a" / sub).iterdir()):
            assert f.read_bytes() == (tmp_path / "b" / sub / f.name).read_bytes()
    mtime = m1.stat().st_mtime_ns
    assert write_pair_dataset(tmp_path / "a", 6, seed=3, size=(64, 64)) == m1
    assert m1.stat().st_mtime_ns == mtime  # cached: not regenerated
    records = read_pair_manifest(m1)
    assert len(records) == 6
    for r in records:
        assert r.category in ("SPG", "SDG", "unrelated")
        assert all(0.0 <= v <= 1.0 for v in r.crop_box)
        assert r.aligned == (r.category == "SPG" and r.crop_box == FULL_BOX)
        assert Image.open(r.forged).size == Image.open(r.mask).size
    row = json.loads(m1.read_text().splitlines()[0])
    assert set(row) >= {"original", "forged", "mask", "category", "aligned", "crop_box"}
    assert not row["original"].startswith("/")  # relative to the manifest


def test_pairs_from_a_folder_of_photos(tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(procedural_photo(90, 120, np.random.default_rng(i))).save(photos / f"p{i}.jpg", quality=92)
    manifest = write_pair_dataset(tmp_path / "out", 4, seed=0, pool=str(photos), size=(64, 80), categories={"SPG": 1.0, "SDG": 1.0})
    records = read_pair_manifest(manifest)
    assert len(records) == 4 and {r.category for r in records} <= {"SPG", "SDG"}
    assert json.loads((tmp_path / "out" / "params.json").read_text())["pool"]["type"] == "folder"


def test_bad_pair_manifest_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"original": "a.png", "forged": "b.png", "category": "SPG"}\n{"original": "a.png", "category": "XYZ"}\n')
    with pytest.raises(PairManifestError, match=r"pairs.jsonl:2"):
        read_pair_manifest(path)


# --------------------------------------------------------------------------------------------------
# alignment


def _corners(h: torch.Tensor, w: int, hgt: int) -> torch.Tensor:
    pts = torch.tensor([[0, 0, 1], [w - 1, 0, 1], [0, hgt - 1, 1], [w - 1, hgt - 1, 1]], dtype=torch.float64).T
    p = h.to(torch.float64) @ pts
    return (p[:2] / p[2]).T


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return procedural_photo(192, 256, np.random.default_rng(11))


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR))


def _jpeg(a: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


def test_crop_box_alignment_is_pixel_exact(photo) -> None:
    x0, y0, x1, y1 = 20, 12, 220, 172
    forged = photo[y0:y1, x0:x1]
    box = (x0 / 256, y0 / 192, x1 / 256, y1 / 192)
    res = align_pair(photo, forged, crop_box=box)
    assert res.method == "crop_box" and res.ok and bool(res.valid.all())
    got = res.original_warped.permute(1, 2, 0).numpy().astype(int)
    assert np.abs(got - forged.astype(int)).max() <= 1


def test_feature_alignment_recovers_crop_and_scale_under_degradation(photo) -> None:
    h, w = photo.shape[:2]
    x0, y0 = 26, 19
    cw, ch = int(0.8 * w), int(0.8 * h)
    forged = _resize(photo[y0 : y0 + ch, x0 : x0 + cw], 180, 135)
    # the original as found on the web: colour-shifted and recompressed
    original = _jpeg(np.clip(photo * np.array([1.08, 0.95, 0.9]) + 8, 0, 255).astype(np.uint8), 70)
    truth = box_homography((x0 / w, y0 / h, (x0 + cw) / w, (y0 + ch) / h), (h, w), (135, 180))
    res = align_pair(original, forged, max_side=256, num_features=512)
    assert res.method == "features" and res.ok, (res.num_matches, res.num_inliers)
    err = (_corners(res.homography, w, h) - _corners(truth, w, h)).abs().max()
    assert err < 3.0, err
    assert res.original_warped.shape == (3, 135, 180) and res.valid_fraction > 0.95


def test_feature_alignment_recovers_translation_and_scale(photo) -> None:
    big = _resize(photo, 320, 240)  # x1.25
    forged = big[30:210, 40:290]  # then shifted
    res = align_pair(photo, forged, max_side=256, num_features=512)
    truth = torch.tensor([[1.25, 0, 0.125 - 40], [0, 1.25, 0.125 - 30], [0, 0, 1]], dtype=torch.float64)
    assert res.method == "features" and res.ok
    h, w = photo.shape[:2]
    assert (_corners(res.homography, w, h) - _corners(truth, w, h)).abs().max() < 3.0


def test_unrelated_images_fail_gracefully(photo) -> None:
    other = procedural_photo(150, 200, np.random.default_rng(99))
    res = align_pair(photo, other, max_side=256, num_features=512)
    assert res.method == "identity" and not res.ok
    assert torch.allclose(res.homography, resize_homography(photo.shape[:2], other.shape[:2]))
    assert res.original_warped.shape == (3, 150, 200) and res.original_warped.dtype == torch.uint8


def test_warp_of_a_plain_resize_covers_everything(photo) -> None:
    warped, valid = warp_original(torch.from_numpy(photo.copy()).permute(2, 0, 1), resize_homography((192, 256), (96, 128)), (96, 128))
    assert warped.shape == (3, 96, 128) and valid.float().mean() > 0.97
    ref = torch.from_numpy(_resize(photo, 128, 96).copy()).permute(2, 0, 1).float()
    assert (warped.float() - ref)[:, valid].abs().mean() < 4.0


# --------------------------------------------------------------------------------------------------
# registration by agreement


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)


def _edited(photo: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    out = photo.copy()
    out[y0:y1, x0:x1] = 255 - out[y0:y1, x0:x1]  # an edit that differs everywhere it lies
    return out


def test_agreement_is_the_unedited_fraction_under_colour_shift_and_jpeg(photo) -> None:
    forged = _edited(photo, 40, 100, 60, 140)  # 60 x 80 of 192 x 256: 9.8 % edited
    original = _jpeg(np.clip(photo * np.array([1.1, 0.95, 0.9]) + 10, 0, 255).astype(np.uint8), 75)
    valid = torch.ones(photo.shape[:2], dtype=torch.bool)
    score = registration_agreement(_chw(original), _chw(forged), valid)
    assert 0.85 <= score <= 0.91, score
    # without the photometric match the colour shift alone breaks the agreement
    assert registration_agreement(_chw(original), _chw(forged), valid, photometric=False) < score - 0.1
    # pixels without a counterpart never agree
    half = valid.clone()
    half[:, 128:] = False
    assert registration_agreement(_chw(original), _chw(forged), half) <= 0.5 + 1e-6
    with pytest.raises(ValueError, match="shapes differ"):
        registration_agreement(_chw(original), _chw(forged[:100]), valid)


def test_register_pair_keeps_an_exact_resize_and_finds_a_crop(photo) -> None:
    forged = _edited(photo, 40, 100, 60, 140)
    reg = register_pair(photo, forged)
    assert reg.result.method == "resize" and reg.result.ok and reg.agreement > 0.88
    # a cropped, rescaled view: the plain resize explains little, the homography (or the box) most of it
    h, w = photo.shape[:2]
    x0, y0, cw, ch = 26, 19, int(0.8 * w), int(0.8 * h)
    view = _resize(forged[y0 : y0 + ch, x0 : x0 + cw], 180, 135)
    reg = register_pair(photo, view, max_side=256, num_features=512)
    assert reg.result.method == "features" and reg.agreement > 0.8, reg.candidates
    assert reg.candidates["resize"] < 0.5
    box = (x0 / w, y0 / h, (x0 + cw) / w, (y0 + ch) / h)
    reg = register_pair(photo, view, crop_box=box, use_features=False)
    assert reg.result.method == "crop_box" and reg.agreement > 0.8, reg.candidates


def test_register_pair_reports_unrelated_photos_as_unregistered(photo) -> None:
    other = procedural_photo(150, 200, np.random.default_rng(99))
    reg = register_pair(photo, other, max_side=256, num_features=512)
    assert not reg.result.ok and reg.agreement < 0.3
    assert reg.result.original_warped.shape == (3, 150, 200)


def test_gaussian_blur_float_is_the_separable_reflect_blur_it_replaced() -> None:
    """align.gaussian_blur_float now calls kornia: equal (to float rounding) to the hand-written separable
    reflect-padded blur it replaced, whose code is kept here as the reference."""
    import math

    import torch.nn.functional as F

    from webiml.align import gaussian_blur_float

    def reference(x: torch.Tensor, sigma: float) -> torch.Tensor:
        r = max(1, int(math.ceil(3 * sigma)))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        c = x.shape[0]
        y = F.conv2d(F.pad(x[None], (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
        return y[0]

    g = torch.Generator().manual_seed(0)
    for sigma, hw in [(0.5, (9, 12)), (0.8, (40, 50)), (1.5, (64, 64)), (3.0, (30, 100))]:
        x = torch.rand(3, *hw, generator=g)
        assert torch.allclose(gaussian_blur_float(x, sigma), reference(x, sigma), atol=1e-6), sigma
    x = torch.rand(3, 4, 4, generator=g)
    assert gaussian_blur_float(x, 2.0) is x and gaussian_blur_float(x, 0.0) is x  # too small / no blur: unchanged
