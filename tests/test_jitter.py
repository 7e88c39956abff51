"""Object Jitter as the MIML authors run it (class ``COCO`` of their mmseg pipelines), rule by rule on hand-made
instance masks: box filter, growth by round(h / 16) centred on the box, hard alpha, blur coin and kernel table,
label alpha > 0.5, the second-object rule (with the authors' index comparison), rejection; OpenCV-exact
resizing and blur against stored OpenCV outputs; COCO polygon/RLE decoding and boxes. Generated data only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from jitter_builders import Scripted, coco_tree, ellipse, rect, textured, window_mask
from webiml.data.arrays import resize_linear_cv, resize_nearest_cv
from webiml.data.coco import CocoInstances, annotation_to_mask, decode_rle, encode_rle, polygons_to_mask
from webiml.data.jitter import ObjectJitter, _blur, blur_kernel_size, candidate_boxes, object_jitter

FIXTURE = Path(__file__).parent / "fixtures" / "opencv_resize_blur.json"


def _tight(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


# --------------------------------------------------------------------------------------------------
# candidates


def test_box_filter_thresholds_on_mask_boxes() -> None:
    h, w = 96, 96
    masks = [rect(h, w, 0, 8, 0, 32),      # 8 x 32: the smallest side allowed, area 256
             rect(h, w, 20, 27, 0, 40),    # 7 px high: too thin
             rect(h, w, 40, 55, 0, 16),    # 15 x 16 = 240 px^2 < 256
             rect(h, w, 60, 76, 0, 16),    # 16 x 16 = 256 px^2: in
             np.zeros((h, w), bool)]       # empty: no box
    got = candidate_boxes(masks, None, (h, w))
    assert [i for i, _ in got] == [0, 3]
    np.testing.assert_array_equal(got[0][1], [0, 0, 32, 8])  # xyxy, the end exclusive (a COCO-like width)
    assert candidate_boxes(masks, None, (h, w), min_side=7, min_box_area=240)[1][0] == 1
    img = textured(h, w)
    assert object_jitter(img, [masks[1]], np.random.default_rng(0)) is None
    assert object_jitter(img, [masks[2]], np.random.default_rng(0)) is None
    assert object_jitter(img, [masks[0]], np.random.default_rng(0)) is not None


def test_box_filter_on_given_boxes_clips_to_the_image() -> None:
    h, w = 64, 64
    masks = [rect(h, w, 10, 40, 0, 12)] * 4
    boxes = [[-10, 10, 10, 40],    # clipped to x 0..10: 10 x 30, in
             [-10, 10, 5, 40],     # clipped to 5 px wide: out
             [64, 10, 90, 40],     # entirely right of the image: out
             [50, 50, 80, 80]]     # clipped to 14 x 14 = 196 px^2: out
    got = candidate_boxes(masks, boxes, (h, w))
    assert [i for i, _ in got] == [0]
    np.testing.assert_array_equal(got[0][1], [0, 10, 10, 40])
    with pytest.raises(ValueError, match="boxes"):
        candidate_boxes(masks, boxes[:2], (h, w))


# --------------------------------------------------------------------------------------------------
# one object: growth, centring, hard alpha


@pytest.mark.parametrize(("extent", "dy"), [(9, 0), (25, 2), (32, 2), (41, 2), (57, 4)])
def test_growth_is_round_half_even_of_h_over_16_and_centred(extent: int, dy: int) -> None:
    # the authors' h is max row - min row (extent - 1) and np.round rounds halves to even: 8/16 -> 0,
    # 24/16 -> 2, 40/16 -> 2, 56/16 -> 4; 40 columns: w = 39, dx = round(2.4375) = 2
    img = textured(128, 128)
    f = object_jitter(img, [rect(128, 128, 20, 20 + extent, 40, 80)], np.random.default_rng(0), p_blur=0)
    (o,) = f.info["objects"]
    assert o["tight"] == [20, 20 + extent - 1, 40, 79] and o["pad"] == [dy, 2]
    assert o["window"] == [20 - dy, 20 + extent - 1 + dy, 38, 81]  # the tight box grown equally on each side
    np.testing.assert_array_equal(f.mask > 0, window_mask((128, 128), o["window"]))  # a rectangle fills it
    if dy == 0:  # the object's last row is not part of the authors' box: untouched and unlabelled
        np.testing.assert_array_equal(f.image[28], img[28])


def test_centring_on_an_ellipse() -> None:
    img = textured(128, 128)
    obj = ellipse(128, 128, 64, 60, 40, 24)
    f = object_jitter(img, [obj], np.random.default_rng(2), p_blur=0)
    (o,) = f.info["objects"]
    r0, r1, c0, c1 = o["tight"]
    y0, y1, x0, x1 = o["window"]
    assert (y0 + y1, x0 + x1) == (r0 + r1, c0 + c1)  # centred on the box
    got = _tight(f.mask > 0)
    assert np.abs(np.subtract(got, o["window"])).max() <= 1
    assert 1.15 < (f.mask > 0).sum() / obj.sum() < 1.40  # ~1.125^2 larger
    assert (f.mask > 0)[obj].mean() > 0.97  # the enlarged object covers the original


def test_alpha_is_hard_without_blur_and_pixels_are_the_resized_patch() -> None:
    img = textured(96, 96, seed=3)
    obj = ellipse(96, 96, 50, 44, 26, 20) & (np.random.default_rng(1).random((96, 96)) < 0.85)  # ragged
    f = object_jitter(img, [obj], np.random.default_rng(0), p_blur=0)
    assert set(np.unique(f.alpha)) <= {0.0, 1.0}
    np.testing.assert_array_equal(f.mask > 0, f.alpha == 1.0)
    (o,) = f.info["objects"]
    r0, r1, c0, c1 = o["tight"]
    dy, dx = o["pad"]
    patch = resize_linear_cv(img[r0:r1, c0:c1], r1 - r0 + 2 * dy, c1 - c0 + 2 * dx)
    y0, y1, x0, x1 = o["window"]
    oy, ox = y0 - (r0 - dy), x0 - (c0 - dx)
    inside = f.alpha[y0:y1, x0:x1] == 1
    np.testing.assert_array_equal(f.image[y0:y1, x0:x1][inside], patch[oy:oy + y1 - y0, ox:ox + x1 - x0][inside])
    np.testing.assert_array_equal(f.image[f.alpha == 0], img[f.alpha == 0])  # everything else untouched
    np.testing.assert_array_equal(f.source, img)


def test_window_is_clipped_at_the_border() -> None:
    img = textured(64, 96)
    f = object_jitter(img, [rect(64, 96, 0, 40, 70, 96)], np.random.default_rng(0), p_blur=0)
    (o,) = f.info["objects"]
    # tight rows 0..39 (h 39, dy 2), columns 70..95 (w 25, dx 2): rows -2..41 and columns 68..97, clipped
    assert o["tight"] == [0, 39, 70, 95] and o["window"] == [0, 41, 68, 96]
    np.testing.assert_array_equal(f.mask > 0, window_mask((64, 96), o["window"]))


# --------------------------------------------------------------------------------------------------
# blur and label


def test_blur_coin_is_uniform_above_0_8() -> None:
    img, obj = textured(48, 48), rect(48, 48, 10, 30, 10, 30)  # box 20 px: kernel 3
    blurred = object_jitter(img, [obj], Scripted([0], [0.81]))
    sharp = object_jitter(img, [obj], Scripted([0], [0.8]))  # the authors: uniform(0, 1) > 0.8
    assert blurred.info["objects"][0]["blur_kernel"] == 3 and sharp.info["objects"][0]["blur_kernel"] == 1
    ks = [object_jitter(img, [obj], np.random.default_rng(s)).info["objects"][0]["blur_kernel"] for s in range(400)]
    assert 0.15 < np.mean(np.equal(ks, 3)) < 0.25 and set(ks) == {1, 3}


@pytest.mark.parametrize(("box_hw", "k"), [((15, 40), 1), ((16, 16), 3), ((40, 60), 5), ((70, 70), 7),
                                           ((130, 140), 9), ((260, 270), 11)])
def test_blur_kernel_comes_from_the_box_size(box_hw: tuple[int, int], k: int) -> None:
    img = textured(300, 300)
    # the mask is the same every time, the (annotation) box decides; an ellipse, since the blur only sees the
    # pasted window (reflected at its border), so a mask filling its box stays all ones
    obj = ellipse(300, 300, 112, 112, 12, 12)
    bh, bw = box_hw
    f = object_jitter(img, [obj], np.random.default_rng(0), boxes=[[10, 10, 10 + bw, 10 + bh]], p_blur=1.0)
    (o,) = f.info["objects"]
    assert o["blur_kernel"] == k == blur_kernel_size(min(bh, bw))
    soft = (f.alpha > 0) & (f.alpha < 1)
    assert soft.any() == (k > 1)
    np.testing.assert_array_equal(f.mask, (f.alpha > 0.5).astype(np.uint8) * 255)


@pytest.mark.parametrize(("size", "k"), [(0, 1), (15, 1), (16, 3), (31, 3), (32, 5), (63, 5), (64, 7), (127, 7),
                                         (128, 9), (255, 9), (256, 11), (2000, 11)])
def test_blur_kernel_table(size: int, k: int) -> None:
    assert blur_kernel_size(size) == k


def test_label_is_alpha_strictly_above_half() -> None:
    img = textured(64, 64)
    obj = rect(64, 64, 10, 30, 10, 26)
    obj[:, 12:26:2] = False  # 1 px stripes: the 3-tap blur leaves exactly 0.5 on them
    f = object_jitter(img, [obj], np.random.default_rng(0), p_blur=1.0)
    assert f.info["objects"][0]["blur_kernel"] == 3
    half = f.alpha == 0.5
    assert half.any() and not f.mask[half].any()
    np.testing.assert_array_equal(f.mask, (f.alpha > 0.5).astype(np.uint8) * 255)


# --------------------------------------------------------------------------------------------------
# the second object


def _row_of_squares(drop: tuple[int, ...] = ()) -> tuple[np.ndarray, list[np.ndarray]]:
    """11 squares of 16 px: #4 overlaps the pasted window of #5 by one column, #6 only touches it."""
    spots = [(10, 10), (10, 40), (10, 70), (10, 100), (50, 104), (50, 120), (50, 136), (90, 10), (90, 40), (90, 70),
             (90, 100)]
    masks = [rect(128, 192, y, y + 16, x, x + 16) for i, (y, x) in enumerate(spots) if i not in drop]
    return textured(128, 192), masks


def test_second_object_rule_as_the_authors_index_it() -> None:
    img, masks = _row_of_squares()
    # first = #5 (window rows 49..65, columns 119..135); kept: #0-3, #5 (the first), #6-10: 10 boxes > 8
    kept = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
    for t, expect in ((5, [5]), (4, [5, 5]), (0, [5, 0]), (9, [5, 10])):
        rng = Scripted([5, t], [0.0, 0.0, 0.0])  # no blur, second-object coin < 0.5, no blur
        f = object_jitter(img, masks, rng)
        assert [o["instance"] for o in f.info["objects"]] == expect, t
        assert rng.asked == [11, len(kept)]
    # t == 5 equals the first's index in the full list (no second object) although kept[5] is #6; t == 4 is
    # the first object itself (jittered twice, as the authors' code does)
    f = object_jitter(img, masks, Scripted([5, 0], [0.0, 0.0, 0.0]))
    union = window_mask((128, 192), f.info["objects"][0]["window"]) | window_mask((128, 192), f.info["objects"][1]["window"])
    np.testing.assert_array_equal(f.mask > 0, union)
    np.testing.assert_array_equal(f.image[~union], img[~union])
    # "distinct": always another kept object (never #4, which overlaps the first window)
    rng = Scripted([5, 4], [0.0, 0.0, 0.0])
    f = object_jitter(img, masks, rng, second_pick="distinct")
    assert [o["instance"] for o in f.info["objects"]] == [5, 6] and rng.asked == [11, 9]
    # the coin: >= 0.5 means no second object
    f = object_jitter(img, masks, Scripted([5], [0.0, 0.5]))
    assert len(f.info["objects"]) == 1


def test_second_object_needs_more_than_8_boxes_left() -> None:
    img, masks = _row_of_squares(drop=(9, 10))  # 9 candidates; 8 kept after the first (#5) is pasted
    rng = Scripted([5], [0.0])
    f = object_jitter(img, masks, rng)
    assert len(f.info["objects"]) == 1 and rng.coins == 1  # no coin drawn: lenb = 8 is not > 8
    rng = Scripted([5, 0], [0.0, 0.0, 0.0])
    f = object_jitter(img, masks, rng, second_min_candidates=7)
    assert [o["instance"] for o in f.info["objects"]] == [5, 0]
    runs = [object_jitter(img, _row_of_squares()[1], np.random.default_rng(s)) for s in range(60)]
    assert 0 < sum(len(r.info["objects"]) == 2 for r in runs) < 45  # about 0.5 * (9/11 .. 10/11) when #5 etc.


# --------------------------------------------------------------------------------------------------
# rejection and determinism


def test_rejection_rules() -> None:
    img, rng = textured(), np.random.default_rng(0)
    assert object_jitter(img, [], rng) is None
    assert object_jitter(img, [np.zeros((128, 128), bool)], rng) is None  # empty instance
    assert object_jitter(img, np.zeros((128, 128), np.int32), rng) is None  # empty label map
    big = rect(128, 128, 8, 120, 8, 120)  # enlarged to 118 x 118 = 85 % of the image
    assert object_jitter(img, [big], rng) is None
    f = object_jitter(img, [big], rng, max_area=0.99)
    assert f is not None and f.info["area"] > 0.75
    # a valid (annotation) box whose mask is empty in the image: the authors skip the paste -> empty -> reject
    assert object_jitter(img, [np.zeros((128, 128), bool)], rng, boxes=[[10, 10, 60, 60]]) is None
    # a one-row mask under a valid box: OpenCV cannot resize the empty patch -> the sample is dropped
    assert object_jitter(img, [rect(128, 128, 30, 31, 10, 60)], rng, boxes=[[10, 20, 60, 50]]) is None
    with pytest.raises(ValueError, match="shape"):
        object_jitter(img, [np.ones((10, 10), bool)], rng)
    with pytest.raises(ValueError, match="second_pick"):
        object_jitter(img, [big], rng, second_pick="other")


def test_deterministic_from_the_seed_and_label_maps_work() -> None:
    img = textured(96, 96, seed=4)
    labels = np.zeros((96, 96), np.int32)
    labels[5:35, 5:45] = 3
    labels[50:90, 20:60] = 7
    labels[40:80, 65:92] = 9
    masks = [labels == v for v in (3, 7, 9)]
    jitter = ObjectJitter(p_blur=0.5, second_min_candidates=1)
    runs = [jitter(img, labels, np.random.default_rng(s)) for s in (11, 11)]
    np.testing.assert_array_equal(runs[0].image, runs[1].image)
    np.testing.assert_array_equal(runs[0].mask, runs[1].mask)
    assert runs[0].info == runs[1].info
    np.testing.assert_array_equal(jitter(img, masks, np.random.default_rng(11)).image, runs[0].image)
    np.testing.assert_array_equal(jitter(img, np.stack(masks), np.random.default_rng(11)).mask, runs[0].mask)
    assert len({jitter(img, labels, np.random.default_rng(s)).mask.tobytes() for s in range(12)}) > 2
    assert ObjectJitter().params()["second_min_candidates"] == 8
    with pytest.raises(ValueError, match="second_pick"):
        ObjectJitter(second_pick="nope")


# --------------------------------------------------------------------------------------------------
# OpenCV-exact resizing and blur (digests of OpenCV's own outputs, tests/fixtures/opencv_resize_blur.json)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_resize_and_blur_match_stored_opencv_outputs() -> None:
    fx = json.loads(FIXTURE.read_text())
    small = np.array(fx["small"]["input"], np.uint8)
    np.testing.assert_array_equal(resize_linear_cv(small, 4, 5), fx["small"]["linear_4x5"])
    for case in fx["resize"]:
        rng = np.random.default_rng(case["seed"])
        shape = tuple(case["shape"])
        a = (rng.random(shape) < 0.5).astype(np.uint8) if case["binary"] else rng.integers(0, 256, shape, dtype=np.uint8)
        nh, nw = case["out"]
        assert _digest(resize_linear_cv(a, nh, nw)) == case["linear_sha256"], case
        assert _digest(resize_nearest_cv(a, nh, nw)) == case["nearest_sha256"], case
        crop = (1, nh - 2, 2, nw - 1)  # computing a crop only gives the crop of the whole result
        np.testing.assert_array_equal(resize_linear_cv(a, nh, nw, crop), resize_linear_cv(a, nh, nw)[1:nh - 2, 2:nw - 1])
        np.testing.assert_array_equal(resize_nearest_cv(a, nh, nw, crop), resize_nearest_cv(a, nh, nw)[1:nh - 2, 2:nw - 1])
    for case in fx["gaussian_blur"]:
        a = (np.random.default_rng(case["seed"]).random(tuple(case["shape"])) < 0.5).astype(np.uint8).astype(np.float32)
        assert _digest(_blur(a, case["ksize"])) == case["sha256"], case


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


def test_coco_instances_reader_and_boxes(tmp_path: Path) -> None:
    root = coco_tree(tmp_path / "coco")
    coco = CocoInstances(root)
    assert len(coco) == 2 and coco.images_dir == root / "images"  # the image without a file is skipped
    image, masks, boxes = coco.load_with_boxes(0)
    assert image.shape == (64, 80, 3) and len(masks) == 2  # crowd left out
    assert masks[0][5:26, 5:46].all() and masks[0].sum() == 21 * 41
    np.testing.assert_array_equal(masks[1], rect(64, 80, 40, 60, 5, 20))
    np.testing.assert_array_equal(boxes, [[5, 5, 45, 25], [5, 40, 20, 60]])  # bbox; the mask's box without one
    assert all(np.array_equal(a, b) for a, b in zip(coco.load(0)[1], masks, strict=True))
    _, _, half = CocoInstances(root, max_side=40).load_with_boxes(0)
    np.testing.assert_allclose(half, [[2.5, 2.5, 22.5, 12.5], [2.5, 20, 10, 30]])
    with_crowd = CocoInstances(root / "instances.json", root / "images", include_crowd=True)
    assert len(with_crowd.load(0)[1]) == 3 and with_crowd.load(0)[1][1][30:60, 50:75].all()
    assert len(CocoInstances(root, category_ids=[2]).load(0)[1]) == 1
    img, ms = coco.sample(np.random.default_rng(0))
    f = object_jitter(img, ms, np.random.default_rng(0))
    assert f is not None and f.mask.shape == img.shape[:2]
