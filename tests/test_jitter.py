"""Object Jitter: exact masks, enlargement, blur kernels, rejection, second object, determinism; COCO
polygon/RLE decoding; jitter datasets; QES weights for web supervision. Generated data only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webiml.data.coco import CocoInstances, annotation_to_mask, decode_rle, encode_rle, polygons_to_mask
from webiml.data.jitter import _gaussian_taps, blur_kernel_size, object_jitter
from webiml.data.jitter_dataset import main, write_jitter_dataset
from webiml.data.manifest import read_manifest
from webiml.io import read_image, read_mask, save_image


def _photo(h: int = 128, w: int = 128, seed: int = 0) -> np.ndarray:
    """A textured image (smooth gradient + noise) so that resampling changes pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([yy * 1.5, xx * 1.5, (yy + xx) * 0.7], -1) % 200
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0


def _window_mask(shape: tuple[int, int], window: list[int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    y0, y1, x0, x1 = window
    m[y0:y1, x0:x1] = True
    return m


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


# --------------------------------------------------------------------------------------------------
# the augmentation


@pytest.mark.parametrize("p_blur", [0.0, 1.0])
def test_mask_is_alpha_above_half_and_outside_is_untouched(p_blur: float) -> None:
    img = _photo()
    obj = _ellipse(128, 128, 60, 64, 30, 22)
    f = object_jitter(img, [obj], np.random.default_rng(0), p_blur=p_blur, p_second=0)
    assert f is not None and f.kind == "jitter" and f.label == 1
    assert f.mask.dtype == np.uint8 and set(np.unique(f.mask)) <= {0, 255}
    np.testing.assert_array_equal(f.mask, (f.alpha > 0.5).astype(np.uint8) * 255)
    (o,) = f.info["objects"]
    inside = _window_mask(img.shape[:2], o["window"])
    assert not f.alpha[~inside].any() and not f.mask[~inside].any()
    np.testing.assert_array_equal(f.image[~inside], img[~inside])
    np.testing.assert_array_equal(f.image[f.alpha == 0], img[f.alpha == 0])  # alpha 0: untouched too
    np.testing.assert_array_equal(f.source, img)
    changed = np.abs(f.image.astype(int) - img).max(-1) > 0
    assert changed[f.mask > 0].mean() > 0.5  # the enlarged object really replaced the pixels
    if p_blur:
        assert o["blur_kernel"] == blur_kernel_size(min(o["box"][1] - o["box"][0], o["box"][3] - o["box"][2])) == 5
        soft = ((f.alpha > 0) & (f.alpha < 1)).sum()
        sharp = object_jitter(img, [obj], np.random.default_rng(0), p_blur=0, p_second=0)
        assert soft > 2 * ((sharp.alpha > 0) & (sharp.alpha < 1)).sum()


def test_enlargement_about_one_eighth_centred_on_the_box() -> None:
    img = _photo()
    # a rectangle 32 x 64: pads round(32/16) = 2 and round(64/16) = 4 on each side
    f = object_jitter(img, [_rect(128, 128, 40, 72, 30, 94)], np.random.default_rng(1), p_blur=0, p_second=0)
    (o,) = f.info["objects"]
    assert o["box"] == [40, 72, 30, 94] and o["pad"] == [2, 4] and o["window"] == [38, 74, 26, 98]
    assert _tight_box(f.mask > 0) == (38, 74, 26, 98)  # a rectangle fills its whole enlarged box
    # an ellipse: the pasted mask's tight box is the enlarged box (to a pixel), ~12.5% larger
    obj = _ellipse(128, 128, 64, 64, 40, 24)
    f = object_jitter(img, [obj], np.random.default_rng(2), p_blur=0, p_second=0)
    (o,) = f.info["objects"]
    box, got = _tight_box(obj), _tight_box(f.mask > 0)
    assert np.abs(np.subtract(got, o["window"])).max() <= 1
    for a, b in ((0, 1), (2, 3)):
        ratio = (got[b] - got[a]) / (box[b] - box[a])
        assert 1.09 <= ratio <= 1.16, ratio
        assert abs((got[a] + got[b]) - (box[a] + box[b])) <= 1  # centred
    assert (f.mask > 0)[obj].mean() > 0.99  # the enlarged object covers the original


def test_window_is_clipped_at_the_border() -> None:
    img = _photo(64, 96)
    obj = _rect(64, 96, 0, 40, 70, 96)
    f = object_jitter(img, [obj], np.random.default_rng(0), p_blur=1.0, p_second=0)
    (o,) = f.info["objects"]
    assert o["window"] == [0, 42, 68, 96]
    np.testing.assert_array_equal(f.mask, (f.alpha > 0.5).astype(np.uint8) * 255)
    assert _tight_box(f.mask > 0) == (0, 42, 68, 96)


def test_rejection_rules() -> None:
    img, rng = _photo(), np.random.default_rng(0)
    assert object_jitter(img, [], rng) is None
    assert object_jitter(img, [np.zeros((128, 128), bool)], rng) is None  # empty instance
    assert object_jitter(img, np.zeros((128, 128), np.int32), rng) is None  # empty label map
    assert object_jitter(img, [_rect(128, 128, 10, 17, 10, 80)], rng) is None  # 7 px side: too small
    assert object_jitter(img, [_rect(128, 128, 10, 22, 10, 30)], rng) is None  # 12 x 20 = 240 px^2 < 256
    big = _rect(128, 128, 8, 120, 8, 120)  # enlarged to 126 x 126 = 97% of the image
    assert object_jitter(img, [big], rng, p_second=0) is None
    f = object_jitter(img, [big], rng, p_second=0, max_area=0.99)
    assert f is not None and f.info["area"] > 0.75
    with pytest.raises(ValueError, match="shape"):
        object_jitter(img, [np.ones((10, 10), bool)], rng)


@pytest.mark.parametrize(("size", "k"), [(0, 1), (15, 1), (16, 3), (31, 3), (32, 5), (63, 5), (64, 7), (127, 7),
                                         (128, 9), (255, 9), (256, 11), (2000, 11)])
def test_blur_kernel_size(size: int, k: int) -> None:
    assert blur_kernel_size(size) == k


def test_blur_kernel_follows_the_object_size_and_opencv_taps() -> None:
    np.testing.assert_allclose(_gaussian_taps(3), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(_gaussian_taps(5), [0.0625, 0.25, 0.375, 0.25, 0.0625])
    t9 = _gaussian_taps(9)
    assert t9.sum() == pytest.approx(1.0) and t9.argmax() == 4
    img = _photo(160, 160)
    for (h, w), k in {(12, 30): 1, (20, 40): 3, (40, 40): 5, (100, 70): 7}.items():
        f = object_jitter(img, [_rect(160, 160, 30, 30 + h, 30, 30 + w)], np.random.default_rng(0), p_blur=1.0, p_second=0)
        assert f.info["objects"][0]["blur_kernel"] == k, (h, w)
        np.testing.assert_array_equal(f.mask, (f.alpha > 0.5).astype(np.uint8) * 255)


def test_second_object() -> None:
    img = _photo(128, 160)
    objs = [_rect(128, 160, 10, 40, 10, 40), _rect(128, 160, 10, 40, 100, 140), _rect(128, 160, 80, 120, 50, 110)]
    f = object_jitter(img, objs, np.random.default_rng(3), p_blur=0, p_second=1.0, second_min_candidates=1)
    assert len(f.info["objects"]) == 2
    a, b = f.info["objects"]
    assert a["instance"] != b["instance"]
    ya0, ya1, xa0, xa1 = a["window"]
    yb0, yb1, xb0, xb1 = b["box"]
    assert not (max(ya0, yb0) < min(ya1, yb1) and max(xa0, xb0) < min(xa1, xb1))  # not overlapping the first
    np.testing.assert_array_equal(f.mask, (f.alpha > 0.5).astype(np.uint8) * 255)
    union = _window_mask(img.shape[:2], a["window"]) | _window_mask(img.shape[:2], b["window"])
    np.testing.assert_array_equal(f.mask > 0, union)  # rectangles fill their enlarged boxes
    np.testing.assert_array_equal(f.image[~union], img[~union])
    # the authors' rule: a second object only when at least 8 other candidates are left
    f = object_jitter(img, objs, np.random.default_rng(3), p_blur=0, p_second=1.0)
    assert len(f.info["objects"]) == 1
    # candidates overlapping the first window are never chosen
    near = [_rect(128, 160, 40, 80, 40, 80), _rect(128, 160, 60, 100, 60, 100)]
    f = object_jitter(img, near, np.random.default_rng(0), p_blur=0, p_second=1.0, second_min_candidates=1)
    assert len(f.info["objects"]) == 1


def test_deterministic_from_the_seed_and_label_maps_work() -> None:
    img = _photo(96, 96, seed=4)
    labels = np.zeros((96, 96), np.int32)
    labels[5:35, 5:45] = 3
    labels[50:90, 20:60] = 7
    labels[40:80, 65:92] = 9
    masks = [labels == v for v in (3, 7, 9)]
    runs = [object_jitter(img, labels, np.random.default_rng(s), p_blur=0.5, p_second=0.5, second_min_candidates=1)
            for s in (11, 11)]
    np.testing.assert_array_equal(runs[0].image, runs[1].image)
    np.testing.assert_array_equal(runs[0].mask, runs[1].mask)
    assert runs[0].info == runs[1].info
    same = object_jitter(img, masks, np.random.default_rng(11), p_blur=0.5, p_second=0.5, second_min_candidates=1)
    np.testing.assert_array_equal(same.image, runs[0].image)
    stacked = object_jitter(img, np.stack(masks), np.random.default_rng(11), p_blur=0.5, p_second=0.5,
                            second_min_candidates=1)
    np.testing.assert_array_equal(stacked.mask, runs[0].mask)
    outs = {object_jitter(img, labels, np.random.default_rng(s), second_min_candidates=1).mask.tobytes()
            for s in range(12)}
    assert len(outs) > 2


# --------------------------------------------------------------------------------------------------
# COCO annotations


def test_rle_decoding_hand_made() -> None:
    # 4 x 3 mask; column-major runs: col0 = 0000, col1 = 1100, col2 = 0001 -> counts [4, 2, 5, 1]
    expected = np.zeros((4, 3), bool)
    expected[0:2, 1] = True
    expected[3, 2] = True
    np.testing.assert_array_equal(decode_rle({"size": [4, 3], "counts": [4, 2, 5, 1]}), expected)
    # compressed: '4', '2', '5', then 1 - 2 = -1 -> 31 + 48 = 'O'
    np.testing.assert_array_equal(decode_rle({"size": [4, 3], "counts": "425O"}), expected)
    np.testing.assert_array_equal(decode_rle({"size": [4, 3], "counts": b"425O"}), expected)
    assert encode_rle(expected) == {"size": [4, 3], "counts": "425O"}
    assert encode_rle(expected, compressed=False)["counts"] == [4, 2, 5, 1]
    # a run of 70 takes two characters: 70 = 6 + 2 * 32 -> chr(6 + 32 + 48) 'V', chr(2 + 48) '2'
    np.testing.assert_array_equal(decode_rle({"size": [10, 7], "counts": "0V2"}), np.ones((10, 7), bool))
    assert encode_rle(np.ones((10, 7), bool))["counts"] == "0V2"
    with pytest.raises(ValueError, match="sum"):
        decode_rle({"size": [4, 3], "counts": [4, 2]})


def test_rle_round_trip_random_masks() -> None:
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (5, 9), (37, 23), (64, 80)):
        for density in (0.0, 0.05, 0.5, 1.0):
            m = rng.random(shape) < density
            if density == 0.5:
                m = np.repeat(m[:, : max(1, shape[1] // 4)], 4, axis=1)[:, : shape[1]] if shape[1] >= 4 else m
            for compressed in (True, False):
                np.testing.assert_array_equal(decode_rle(encode_rle(m, compressed=compressed)), m)


def test_polygon_decoding_hand_made() -> None:
    m = polygons_to_mask([[5, 5, 15, 5, 15, 12, 5, 12]], 20, 30)
    assert m.shape == (20, 30)
    assert m[5:13, 5:16].all() and m.sum() == 8 * 11
    two = annotation_to_mask([[0, 0, 3, 0, 3, 3, 0, 3], [20, 10, 25, 10, 25, 15]], 20, 30)
    assert two[0:4, 0:4].all() and two[10, 20:26].all() and two[15, 25] and not two[15, 20]
    assert not polygons_to_mask([[1, 1, 2, 2]], 5, 5).any()  # degenerate polygons are skipped
    with pytest.raises(ValueError, match="size"):
        annotation_to_mask({"size": [4, 4], "counts": [16]}, 5, 5)


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    save_image(root / "images" / "a.png", _photo(64, 80, seed=1))
    save_image(root / "images" / "b.png", _photo(48, 48, seed=2))
    crowd = np.zeros((64, 80), bool)
    crowd[30:60, 50:75] = True
    meta = {
        "images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 80},
                   {"id": 2, "file_name": "b.png", "height": 48, "width": 48},
                   {"id": 3, "file_name": "missing.png", "height": 10, "width": 10}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 600,
             "segmentation": [[5, 5, 45, 5, 45, 25, 5, 25]]},
            {"id": 11, "image_id": 1, "category_id": 2, "iscrowd": 1, "area": 750,
             "segmentation": encode_rle(crowd, compressed=False)},
            {"id": 12, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 300,
             "segmentation": encode_rle(_rect(64, 80, 40, 60, 5, 20))},
            {"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 400,
             "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
            {"id": 30, "image_id": 3, "category_id": 1, "iscrowd": 0, "area": 4,
             "segmentation": [[1, 1, 3, 1, 3, 3]]},
        ],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
    }
    (root / "instances.json").write_text(json.dumps(meta))
    return root


def test_coco_instances_reader(coco_root: Path) -> None:
    coco = CocoInstances(coco_root)
    assert len(coco) == 2 and coco.images_dir == coco_root / "images"  # the image without a file is skipped
    image, masks = coco.load(0)
    assert image.shape == (64, 80, 3) and len(masks) == 2  # crowd left out
    assert masks[0][5:26, 5:46].all() and masks[0].sum() == 21 * 41
    np.testing.assert_array_equal(masks[1], _rect(64, 80, 40, 60, 5, 20))
    with_crowd = CocoInstances(coco_root / "instances.json", coco_root / "images", include_crowd=True)
    assert len(with_crowd.load(0)[1]) == 3 and with_crowd.load(0)[1][1][30:60, 50:75].all()
    assert len(CocoInstances(coco_root, category_ids=[2]).load(0)[1]) == 1
    img, ms = coco.sample(np.random.default_rng(0))
    f = object_jitter(img, ms, np.random.default_rng(0), second_min_candidates=1)
    assert f is not None and f.mask.shape == img.shape[:2]


def test_write_jitter_dataset_from_coco(coco_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "jitter-coco"
    path = write_jitter_dataset(out, 3, seed=0, instances=CocoInstances(coco_root), size=None, source="coco-jitter",
                                manifest=tmp_path / "manifests" / "coco-jitter.jsonl")
    recs = read_manifest(path)
    assert path == tmp_path / "manifests" / "coco-jitter.jsonl" and len(recs) == 3
    for r in recs:
        assert r.source == "coco-jitter" and r.label == 1 and r.extra["kind"] == "jitter"
        assert read_image(r.image).shape[:2] == read_mask(r.mask).shape and read_mask(r.mask).any()
    # fixed size: resized to cover it (times a random zoom) and cropped at random before jittering
    path = write_jitter_dataset(tmp_path / "sized", 3, seed=1, instances=CocoInstances(coco_root), size=40,
                                zoom=(1.0, 1.5), second_min_candidates=1)
    for r in read_manifest(path):
        assert read_image(r.image).shape == (40, 40, 3) and read_mask(r.mask).shape == (40, 40)


# --------------------------------------------------------------------------------------------------
# jitter datasets


def test_write_jitter_dataset_procedural(tmp_path: Path) -> None:
    kw = dict(seed=3, size=(64, 64), source="jitter-train", second_min_candidates=1, p_jpeg=0.5)
    path = write_jitter_dataset(tmp_path / "a", 5, **kw)
    recs = read_manifest(path)
    assert [Path(r.image).name for r in recs] == [f"{i:06d}.png" for i in range(5)]
    for r in recs:
        assert r.label == 1 and r.source == "jitter-train" and r.extra["kind"] == "jitter" and r.extra["objects"] in (1, 2)
        mask = read_mask(r.mask)
        assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255} and (mask > 0).mean() <= 0.75
        assert read_image(r.image).shape == (64, 64, 3)
    params = json.loads((tmp_path / "a" / "params.json").read_text())
    assert params["n"] == 5 and params["instances"]["type"] == "procedural"
    # idempotent: same parameters -> nothing rewritten
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()}
    assert write_jitter_dataset(tmp_path / "a", 5, **kw) == path
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()} == stamp
    # deterministic: another folder gets byte-identical files, also when written by 2 processes
    other = write_jitter_dataset(tmp_path / "b", 5, num_workers=2, **kw)
    for r, s in zip(recs, read_manifest(other), strict=True):
        assert Path(r.image).read_bytes() == Path(s.image).read_bytes()
        assert Path(r.mask).read_bytes() == Path(s.mask).read_bytes()
    # other parameters regenerate
    write_jitter_dataset(tmp_path / "a", 2, **kw)
    assert len(read_manifest(path)) == 2


def test_cli_build(tmp_path: Path) -> None:
    assert main(["build", "--out", str(tmp_path / "j"), "--n", "2", "--procedural", "48",
                 "--second-min-candidates", "1"]) == 0
    assert len(read_manifest(tmp_path / "j" / "manifest.jsonl")) == 2


def test_mask_png_round_trip_of_a_jitter(tmp_path: Path) -> None:
    """The saved mask is the exact ground truth (0/255, no resampling on the way to disk)."""
    f = object_jitter(_photo(), [_ellipse(128, 128, 64, 64, 30, 30)], np.random.default_rng(0), p_blur=1, p_second=0)
    save_image(tmp_path / "m.png", f.mask)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")), f.mask)
