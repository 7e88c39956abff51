"""Tests for webiml.data.synthetic: exact masks, area bounds, determinism, datasets, JPEG path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webiml.data.forgeries import Forgery, make_copy_move, make_removal, make_splice
from webiml.data.manifest import read_manifest
from webiml.data.photo_pool import PhotoPool
from webiml.data.procedural import procedural_photo, procedural_scene
from webiml.data.regions import random_blob_mask
from webiml.data.synthetic import synthesize, write_synthetic_dataset
from webiml.io import jpeg_compress, read_image, read_mask

H, W = 96, 128
SHARED_NATURAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "natural"


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def photos() -> list[tuple[np.ndarray, list[np.ndarray]]]:
    return [procedural_scene(H, W, rng(s)) for s in range(4)]


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def check_mask(f: Forgery) -> None:
    assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
    assert f.mask.dtype == np.uint8 and f.mask.shape == f.image.shape[:2]
    assert set(np.unique(f.mask).tolist()) <= {0, 255}


# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bounds", [(0.01, 0.25), (0.1, 0.12), (0.002, 0.5)])
def test_blob_area_bounds(seed: int, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    m = random_blob_mask(H, W, rng(seed), min_area=lo, max_area=hi)
    assert m.dtype == bool and m.shape == (H, W)
    frac = m.mean()
    assert lo <= frac <= hi
    from scipy import ndimage

    assert ndimage.label(m)[1] == 1  # one connected blob


def test_blob_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        random_blob_mask(H, W, rng(0), min_area=0.3, max_area=0.2)


def test_procedural_scene(photos: list[tuple[np.ndarray, list[np.ndarray]]]) -> None:
    for img, masks in photos:
        assert img.shape == (H, W, 3) and img.dtype == np.uint8
        assert img.std() > 5  # not flat
        for m in masks:
            assert m.dtype == bool and m.shape == (H, W) and m.any()
        if len(masks) > 1:
            assert not np.any(np.sum(masks, axis=0) > 1)  # visible parts do not overlap
    a, b = procedural_photo(H, W, rng(7)), procedural_photo(H, W, rng(7))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, procedural_photo(H, W, rng(8)))
    assert procedural_photo(40, 50, rng(1)).shape == (40, 50, 3)  # small sizes render at full resolution


# ---------------------------------------------------------------- exact masks of the edits


@pytest.mark.parametrize("donor_shape", [(H, W), (150, 70)])
def test_splice_hard_edges_exact(photos, donor_shape: tuple[int, int]) -> None:
    target = photos[0][0]
    donor = procedural_photo(*donor_shape, rng(11))
    region = ellipse(*donor_shape, donor_shape[0] / 2, donor_shape[1] / 2, 14, 20)
    f = make_splice(target, donor, region, rng(3), scale=1.0, feather=0, color_match=0, flip=False)
    check_mask(f)
    assert f.kind == "splice" and f.label == 1
    m = f.mask > 0
    assert m.sum() == region.sum()  # the whole region fits and is pasted unchanged
    assert np.array_equal(f.image[~m], target[~m])  # untouched outside the mask
    assert np.array_equal(f.alpha > 0.5, m) and set(np.unique(f.alpha).tolist()) <= {0.0, 1.0}
    dy, dx = f.info["shift"]
    ys, xs = np.nonzero(m)
    assert np.array_equal(f.image[ys, xs], donor[ys - dy, xs - dx])  # inside: the donor's pixels
    assert np.array_equal(region[ys - dy, xs - dx], np.ones(len(ys), bool))
    differs = np.any(donor[ys - dy, xs - dx] != target[ys, xs], axis=1)
    assert np.all(np.any(f.image[ys, xs] != target[ys, xs], axis=1) == differs)


@pytest.mark.parametrize("seed", range(4))
def test_splice_feathered_mask_is_alpha(photos, seed: int) -> None:
    target, (donor, regions) = photos[1][0], photos[2]
    region = regions[0] if regions else random_blob_mask(H, W, rng(seed))
    f = make_splice(target, donor, region, rng(seed), feather=2.0, scale=None, color_match=None)
    check_mask(f)
    assert f.alpha is not None and f.alpha.shape == (H, W)
    assert 0.0 <= f.alpha.min() and f.alpha.max() <= 1.0
    assert np.array_equal(f.mask > 0, f.alpha > 0.5)
    assert ((f.alpha > 0) & (f.alpha < 1)).any()  # really feathered
    assert np.array_equal(f.image[f.alpha == 0], target[f.alpha == 0])
    assert np.array_equal(f.source, target)


def test_splice_big_region_is_shrunk_to_fit(photos) -> None:
    target = photos[0][0]
    donor = procedural_photo(300, 300, rng(5))
    region = ellipse(300, 300, 150, 150, 140, 140)
    f = make_splice(target, donor, region, rng(0), scale=1.5, feather=1.0)
    assert f.info["scale"] < 1.0
    ys, xs = np.nonzero(f.alpha > 0)
    assert ys.size and ys.min() >= 0 and xs.max() < W  # fully inside the target


@pytest.mark.parametrize("seed", range(4))
def test_copy_move_exact_target_only(photos, seed: int) -> None:
    img = photos[seed][0]
    region = random_blob_mask(H, W, rng(seed), min_area=0.02, max_area=0.08)
    f = make_copy_move(img, region, rng(seed), scale=1.0, feather=0, flip=False, max_overlap=0.0)
    check_mask(f)
    assert f.kind == "copy_move"
    m = f.mask > 0
    assert m.sum() == region.sum()
    assert not (m & region).any()  # only the pasted target is marked, not the source
    assert np.array_equal(f.image[~m], img[~m])
    dy, dx = f.info["shift"]
    ys, xs = np.nonzero(m)
    assert np.array_equal(f.image[ys, xs], img[ys - dy, xs - dx])
    assert region[ys - dy, xs - dx].all()


def test_copy_move_feathered_and_scaled(photos) -> None:
    img = photos[1][0]
    region = random_blob_mask(H, W, rng(1), min_area=0.03, max_area=0.06)
    f = make_copy_move(img, region, rng(2), scale=1.2, feather=1.5, flip=True)
    check_mask(f)
    assert np.array_equal(f.mask > 0, f.alpha > 0.5)
    assert np.array_equal(f.image[f.alpha == 0], img[f.alpha == 0])
    assert ((f.mask > 0) & region).sum() <= 0.1 * (f.mask > 0).sum()


def test_copy_move_without_room_raises(photos) -> None:
    img = photos[0][0]
    region = ellipse(H, W, H / 2, W / 2, H * 0.45, W * 0.45)
    with pytest.raises(ValueError):
        make_copy_move(img, region, rng(0), scale=1.0, feather=0, max_overlap=0.0, max_tries=20)


@pytest.mark.parametrize("method", ["patch", "diffusion"])
def test_removal_fills_region_exactly(photos, method: str) -> None:
    img, masks = photos[2]
    region = masks[0] if masks else random_blob_mask(H, W, rng(0), min_area=0.03, max_area=0.1)
    f = make_removal(img, region, rng(4), method=method, dilate=2)
    check_mask(f)
    assert f.kind == "removal"
    m = f.mask > 0
    assert (m | ~region).all() and m.sum() > region.sum()  # region plus a dilation ring
    assert np.array_equal(f.image[~m], img[~m])
    assert np.any(f.image[m] != img[m])
    assert f.image[m].astype(float).std() > 1.0  # textured, not flat
    assert np.array_equal(f.alpha > 0.5, m)


# ---------------------------------------------------------------- synthesize


@pytest.fixture(scope="module")
def pool() -> PhotoPool:
    return PhotoPool.procedural((H, W), seed=0, n=6)


@pytest.mark.parametrize("kind", ["splice", "copy_move", "removal"])
def test_synthesize_each_kind(pool: PhotoPool, kind: str) -> None:
    for seed in range(4):
        f = synthesize(pool, rng(seed), kinds=(kind,), p_jpeg=0.0)
        check_mask(f)
        assert f.kind == kind
        frac = (f.mask > 0).mean()
        assert 0 < frac <= 0.75
        if f.alpha is not None:
            assert np.array_equal(f.mask > 0, f.alpha > 0.5)
        outside = f.alpha == 0
        assert np.array_equal(f.image[outside], f.source[outside])


def test_synthesize_authentic(pool: PhotoPool) -> None:
    f = synthesize(pool, rng(0), p_authentic=1.0, p_jpeg=1.0)
    assert f.kind == "authentic" and f.label == 0
    assert f.mask.shape == f.image.shape[:2] and not f.mask.any()


def test_synthesize_rejects_large_masks(pool: PhotoPool) -> None:
    for seed in range(3):
        f = synthesize(pool, rng(seed), max_mask_area=0.03, p_jpeg=0.0)
        assert 0 < (f.mask > 0).mean() <= 0.03
    with pytest.raises(RuntimeError):
        synthesize(pool, rng(0), max_mask_area=1e-6, max_tries=5)


def test_synthesize_deterministic(pool: PhotoPool) -> None:
    a = synthesize(pool, rng(42), p_authentic=0.2)
    b = synthesize(PhotoPool.procedural((H, W), seed=0, n=6), rng(42), p_authentic=0.2)
    assert a.kind == b.kind
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    c = synthesize(pool, rng(43), p_authentic=0.2)
    assert not np.array_equal(a.image, c.image)
    fresh = PhotoPool.procedural((H, W), seed=1)  # a fresh photo per draw is deterministic too
    assert np.array_equal(synthesize(fresh, rng(1)).image, synthesize(fresh, rng(1)).image)


def test_synthesize_size(pool: PhotoPool) -> None:
    for seed in range(3):
        f = synthesize(pool, rng(seed), size=(64, 80))
        check_mask(f)
        assert f.image.shape == (64, 80, 3)
        if f.alpha is not None:
            assert np.array_equal(f.mask > 0, f.alpha > 0.5)


def test_double_jpeg_keeps_mask_exact(pool: PhotoPool) -> None:
    for seed in range(4):
        deferred = synthesize(pool, rng(seed), p_jpeg=1.0, final_jpeg=False, kinds=("splice", "copy_move"))
        q1, q2 = deferred.info["q1"], deferred.info["q2"]
        assert 60 <= q1 <= 95 and 70 <= q2 <= 100 and not deferred.info["final_jpeg_applied"]
        outside = deferred.alpha == 0
        assert np.array_equal(deferred.image[outside], deferred.source[outside])  # the source is q1-compressed
        assert np.array_equal(deferred.mask > 0, deferred.alpha > 0.5)
        final = synthesize(pool, rng(seed), p_jpeg=1.0, kinds=("splice", "copy_move"))
        assert final.info["final_jpeg_applied"]
        assert np.array_equal(final.mask, deferred.mask)
        assert np.array_equal(final.image, jpeg_compress(deferred.image, q2))
        assert not np.array_equal(final.image, deferred.image)


def test_jpeg_compress_roundtrip() -> None:
    img = procedural_photo(H, W, rng(0))
    out = jpeg_compress(img, 75)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert 0 < np.abs(out.astype(int) - img.astype(int)).mean() < 10


# ---------------------------------------------------------------- pools


def test_pool_from_folder(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i in range(3):
        Image.fromarray(procedural_photo(120, 200, rng(i))).save(tmp_path / "img" / f"p{i}.png")
    labels = np.zeros((120, 200), np.uint8)
    labels[10:50, 20:80] = 1
    labels[60:100, 120:190] = 7
    labels[0:2, 0:2] = 9  # too small to be a region
    Image.fromarray(labels).save(tmp_path / "lab" / "p0.png")
    Image.fromarray(labels).save(tmp_path / "lab" / "p1.png")  # p2 has no label map: blob regions
    pool = PhotoPool.from_folder(tmp_path / "img", tmp_path / "lab", max_side=100)
    assert len(pool) == 3
    seen_labelled = seen_blobs = False
    for seed in range(12):
        img, regions = pool.sample(rng(seed))
        assert img.shape == (60, 100, 3)
        assert all(r.dtype == bool and r.shape == (60, 100) for r in regions)
        if len(regions) == 2:
            seen_labelled = True
            assert {int(r.sum()) for r in regions} == {20 * 30, 20 * 35}
        else:
            seen_blobs = True
            assert len(regions) == 3
    assert seen_labelled and seen_blobs
    f = synthesize(pool, rng(0), size=(64, 64))
    check_mask(f)
    assert f.image.shape == (64, 64, 3)


# ---------------------------------------------------------------- datasets


def test_write_synthetic_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    manifest = write_synthetic_dataset(out, 10, seed=3, size=(48, 64), p_authentic=0.3, image_format="mixed")
    assert manifest == out / "manifest.jsonl"
    records = read_manifest(manifest)
    assert len(records) == 10
    assert {r.source for r in records} == {"synthetic"}
    assert any(r.label == 0 for r in records) and any(r.label == 1 for r in records)
    for r in records:
        img = read_image(r.image)
        assert img.shape == (48, 64, 3)
        if r.label == 0:
            assert r.mask is None and r.extra["kind"] == "authentic"
        else:
            mask = read_mask(r.mask)
            assert mask.shape == img.shape[:2]
            assert set(np.unique(mask).tolist()) <= {0, 255} and mask.any()
    assert {Path(r.image).suffix for r in records} <= {".png", ".jpg"}
    params = json.loads((out / "params.json").read_text())
    assert params["n"] == 10 and params["seed"] == 3

    # idempotent: same parameters -> nothing rewritten
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert write_synthetic_dataset(out, 10, seed=3, size=(48, 64), p_authentic=0.3, image_format="mixed") == manifest
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    # deterministic: same seed -> byte-identical files, different seed -> different files
    other = write_synthetic_dataset(tmp_path / "ds2", 10, seed=3, size=(48, 64), p_authentic=0.3,
                                    image_format="mixed")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other.parent) for p in other.parent.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (other.parent / rel).read_bytes(), rel
    third = write_synthetic_dataset(tmp_path / "ds3", 10, seed=4, size=(48, 64), p_authentic=0.3,
                                    image_format="mixed")
    assert [read_image(r.image).tobytes() for r in read_manifest(third)] != [
        read_image(r.image).tobytes() for r in records]


def test_write_synthetic_dataset_regenerates_on_new_params(tmp_path: Path) -> None:
    m = write_synthetic_dataset(tmp_path, 4, seed=0, size=(32, 32), p_authentic=0.0, image_format="jpg")
    assert all(Path(r.image).suffix == ".jpg" and r.label == 1 for r in read_manifest(m))
    m = write_synthetic_dataset(tmp_path, 6, seed=0, size=(32, 32), p_authentic=0.0, image_format="png")
    records = read_manifest(m)
    assert len(records) == 6 and all(Path(r.image).suffix == ".png" for r in records)
    assert not list((tmp_path / "images").glob("*.jpg"))  # the old format of the same index is gone


# ---------------------------------------------------------------- natural photos (optional)


def test_natural_pools_if_available() -> None:
    bsds, coco = SHARED_NATURAL / "bsds500", SHARED_NATURAL / "coco128"
    if not (bsds / "images").is_dir() or not (coco / "panoptic.json").is_file():
        pytest.skip("shared/data/natural not available")
    for pool in (PhotoPool.from_bsds(bsds, max_side=256), PhotoPool.from_coco_panoptic(coco, max_side=256)):
        assert len(pool) > 0
        img, regions = pool.sample(rng(0))
        assert max(img.shape[:2]) <= 256
        assert all(r.shape == img.shape[:2] for r in regions)
        for seed in range(3):
            f = synthesize(pool, rng(seed), size=(128, 128))
            check_mask(f)
            assert f.image.shape == (128, 128, 3) and 0 < (f.mask > 0).mean() <= 0.75
