"""Tests for webiml.metrics: hand-computed cases, agreement with scikit-learn, DDP-style state merging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, jaccard_score, roc_auc_score

from webiml.data.masks import IGNORE
from webiml.metrics import ImageMetrics, PixelMetrics, _bin_index, flatten_results


def _random_pair(gen: torch.Generator, h: int, w: int, *, authentic: bool = False, ignore: bool = True):
    """A random probability map correlated with a rectangular (or empty) target, with some IGNORE pixels."""
    target = torch.zeros(h, w)
    if not authentic:
        y0, x0 = int(torch.randint(0, h // 2, (1,), generator=gen)), int(torch.randint(0, w // 2, (1,), generator=gen))
        target[y0 : y0 + h // 3 + 1, x0 : x0 + w // 3 + 1] = 1.0
    probs = (0.6 * target + 0.7 * torch.rand(h, w, generator=gen)).clamp(0, 1)
    if ignore:
        target[torch.rand(h, w, generator=gen) < 0.1] = IGNORE
    return probs, target


def _dataset(seed: int = 0, n: int = 8):
    gen = torch.Generator().manual_seed(seed)
    sizes = [(17, 23), (32, 32), (9, 40), (25, 11), (30, 19), (12, 12), (40, 8), (21, 33)]
    return [_random_pair(gen, h, w, authentic=(i % 4 == 3)) for i, (h, w) in enumerate(sizes[:n])]


def _valid_np(p: torch.Tensor, t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    valid = t >= 0
    return p[valid].numpy().astype(np.float64), t[valid].numpy().astype(int)


# ---------------------------------------------------------------------------------------------- hand-computed cases


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    # positives: the top-left 2x2 block (4 px). Predicted: 3 of them + 2 negatives -> TP=3, FP=2, FN=1.
    target = torch.zeros(4, 4)
    target[:2, :2] = 1
    probs = torch.full((4, 4), 0.1)
    probs[0, 0] = probs[0, 1] = probs[1, 0] = 0.9
    probs[1, 1] = 0.2
    probs[3, 3] = probs[3, 2] = 0.7
    return probs, target


def test_hand_computed_f1_iou() -> None:
    probs, target = _hand_case()
    m = PixelMetrics()
    m.update([probs], [target])
    out = m.compute()
    assert out["f1"].item() == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert out["iou"].item() == pytest.approx(3 / (3 + 2 + 1))
    assert int(out["n_manipulated"]) == 1 and int(out["n_images"]) == 1
    # best edge threshold in (0.7, 0.9]: TP=3, FP=0, FN=1 -> F1 = 6/7, IoU = 3/4 (0.2 >= t > 0.1 gives only 8/10)
    assert out["f1_best"].item() == pytest.approx(6 / 7)
    assert out["iou_best"].item() == pytest.approx(3 / 4)
    # AUC: positives {0.9,0.9,0.9,0.2}, negatives {0.7,0.7, 0.1 x10}: pairs won = 3*12 + 1*10 = 46 of 48
    assert out["auc"].item() == pytest.approx(46 / 48)
    assert out["auc_global"].item() == pytest.approx(46 / 48)


def test_threshold_is_inclusive() -> None:
    target = torch.tensor([[1.0, 0.0]])
    probs = torch.tensor([[0.5, 0.0]])
    m = PixelMetrics(threshold=0.5)
    m.update([probs], [target])
    assert m.compute()["f1"].item() == 1.0


def test_authentic_image_excluded_from_averages() -> None:
    probs, target = _hand_case()
    m = PixelMetrics()
    m.update([probs, torch.full((5, 6), 0.9)], [target, torch.zeros(5, 6)])  # authentic image, all false positives
    out = m.compute()
    assert out["f1"].item() == pytest.approx(2 / 3)
    assert int(out["n_images"]) == 2 and int(out["n_manipulated"]) == 1 and int(out["n_auc"]) == 1
    # ... but its pixels count in the global AUC
    assert out["auc_global"].item() < out["auc"].item()


def test_ignore_pixels_excluded() -> None:
    probs, target = _hand_case()
    target[3, 3] = target[3, 2] = IGNORE  # the two false positives are now unscored
    target[1, 1] = IGNORE  # and the missed positive
    m = PixelMetrics()
    m.update([probs], [target])
    out = m.compute()
    assert out["f1"].item() == 1.0 and out["iou"].item() == 1.0 and out["auc"].item() == 1.0


def test_only_ignore_or_empty_image() -> None:
    m = PixelMetrics()
    m.update([torch.rand(3, 3)], [torch.full((3, 3), IGNORE)])
    out = m.compute()
    assert int(out["n_images"]) == 1 and int(out["n_manipulated"]) == 0
    for key in ("f1", "iou", "f1_best", "iou_best", "f1_permuted", "iou_permuted", "auc", "auc_global"):
        assert math.isnan(out[key].item()), key


@pytest.mark.filterwarnings("ignore:.*called before the ``update`` method")
def test_empty_metric_is_nan() -> None:
    out = PixelMetrics().compute()
    assert math.isnan(out["f1"].item()) and math.isnan(out["auc_global"].item())
    assert int(out["n_images"]) == 0
    img = ImageMetrics().compute()
    assert math.isnan(img["auc"].item()) and math.isnan(img["balanced_acc"].item()) and int(img["n_images"]) == 0


def test_permuted_picks_inverted_map() -> None:
    target = torch.zeros(6, 6)
    target[1:4, 2:5] = 1
    probs = 1.0 - 0.8 * target  # prediction is inverted: high on authentic pixels
    m = PixelMetrics()
    m.update([probs], [target])
    out = m.compute()
    assert out["f1"].item() == 0.0 and out["iou"].item() == 0.0
    assert out["f1_permuted"].item() == 1.0 and out["iou_permuted"].item() == 1.0
    # a correct map keeps its own score
    m2 = PixelMetrics()
    m2.update([target * 0.9], [target])
    assert m2.compute()["f1_permuted"].item() == 1.0


def test_no_predicted_positive_gives_zero_f1() -> None:
    target = torch.zeros(4, 4)
    target[0] = 1
    m = PixelMetrics()
    m.update([torch.zeros(4, 4)], [target])
    out = m.compute()
    assert out["f1"].item() == 0.0 and out["iou"].item() == 0.0


def test_best_threshold_at_least_fixed() -> None:
    m = PixelMetrics()
    for p, t in _dataset(1):
        m.update([p], [t])
    out = m.compute()
    assert out["f1_best"] >= out["f1"] and out["iou_best"] >= out["iou"]
    assert out["f1_permuted"] >= out["f1"] and out["iou_permuted"] >= out["iou"]


# ---------------------------------------------------------------------------------------------- against sklearn


def test_pixel_metrics_match_sklearn() -> None:
    data = _dataset(2)
    m = PixelMetrics(threshold=0.5, num_bins=1000)
    m.update([p for p, _ in data], [t for _, t in data])
    out = m.compute()
    f1s, ious, f1p, aucs = [], [], [], []
    for p, t in data:
        pv, tv = _valid_np(p, t)
        if tv.sum() == 0:
            continue
        pred = (pv >= 0.5).astype(int)
        f1s.append(f1_score(tv, pred, zero_division=0))
        ious.append(jaccard_score(tv, pred, zero_division=0))
        f1p.append(max(f1s[-1], f1_score(tv, (1 - pv >= 0.5).astype(int), zero_division=0)))
        aucs.append(roc_auc_score(tv, pv))
    assert int(out["n_manipulated"]) == len(f1s)
    assert out["f1"].item() == pytest.approx(np.mean(f1s), abs=1e-6)
    assert out["iou"].item() == pytest.approx(np.mean(ious), abs=1e-6)
    assert out["f1_permuted"].item() == pytest.approx(np.mean(f1p), abs=1e-6)
    assert out["auc"].item() == pytest.approx(np.mean(aucs), abs=1e-2)
    all_p, all_t = zip(*(_valid_np(p, t) for p, t in data), strict=True)
    assert out["auc_global"].item() == pytest.approx(
        roc_auc_score(np.concatenate(all_t), np.concatenate(all_p)), abs=1e-2
    )


def test_pixel_auc_exact_on_bin_edges() -> None:
    # scores that sit exactly on bin edges are binned without loss, so the AUC equals sklearn's (ties included)
    n = 50
    edges = torch.arange(n + 1) / n
    gen = torch.Generator().manual_seed(3)
    target = (torch.rand(30, 20, generator=gen) < 0.3).float()
    probs = edges[(torch.randint(0, n + 1, (30, 20), generator=gen) + (target * 10).long()).clamp(max=n)]
    m = PixelMetrics(num_bins=n)
    m.update(probs[None], target[None])
    out = m.compute()
    expected = roc_auc_score(target.flatten().numpy(), probs.flatten().numpy())
    assert out["auc"].item() == pytest.approx(expected, abs=1e-6)
    assert out["auc_global"].item() == pytest.approx(expected, abs=1e-6)
    # the best bin-edge F1 is the best over all distinct score values here
    pv, tv = probs.flatten().numpy(), target.flatten().numpy().astype(int)
    best = max(f1_score(tv, (pv >= e).astype(int), zero_division=0) for e in np.unique(pv))
    assert out["f1_best"].item() == pytest.approx(best, abs=1e-6)


def test_image_metrics_match_sklearn() -> None:
    gen = torch.Generator().manual_seed(4)
    labels = (torch.rand(200, generator=gen) < 0.4).long()
    scores = ((0.3 * labels + torch.rand(200, generator=gen)) * 10).round().clamp(0, 10) / 10  # many ties
    m = ImageMetrics(threshold=0.5)
    m.update(scores[:120], labels[:120])
    m.update(scores[120:], labels[120:])
    out = m.compute()
    y, s = labels.numpy(), scores.numpy().astype(np.float64)
    pred = (s >= 0.5).astype(int)
    assert out["auc"].item() == pytest.approx(roc_auc_score(y, s), abs=1e-7)
    assert out["balanced_acc"].item() == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-7)
    assert out["acc"].item() == pytest.approx((pred == y).mean(), abs=1e-7)
    assert out["tpr"].item() == pytest.approx(pred[y == 1].mean(), abs=1e-7)
    assert out["tnr"].item() == pytest.approx(1 - pred[y == 0].mean(), abs=1e-7)
    assert int(out["n_images"]) == 200


def test_image_metrics_single_class() -> None:
    m = ImageMetrics()
    m.update(torch.tensor([0.2, 0.7, 0.9]), torch.ones(3))
    out = m.compute()
    assert math.isnan(out["auc"].item()) and math.isnan(out["tnr"].item())
    with pytest.warns(UserWarning):  # sklearn warns about the absent class
        expected = balanced_accuracy_score([1, 1, 1], [0, 1, 1])
    assert out["balanced_acc"].item() == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------- inputs


def test_batch_tensor_equals_list() -> None:
    gen = torch.Generator().manual_seed(5)
    pairs = [_random_pair(gen, 16, 24) for _ in range(4)]
    probs = torch.stack([p for p, _ in pairs])
    target = torch.stack([t for _, t in pairs])
    a, b, c = PixelMetrics(), PixelMetrics(), PixelMetrics()
    a.update(probs[:, None], target[:, None])  # (B,1,H,W)
    b.update(probs, target)  # (B,H,W)
    c.update([p[None] for p in probs], list(target))  # list of (1,H,W) and (H,W)
    ra, rb, rc = a.compute(), b.compute(), c.compute()
    for key in ra:
        torch.testing.assert_close(ra[key], rb[key], equal_nan=True)
        torch.testing.assert_close(ra[key], rc[key], equal_nan=True)


def test_shape_validation() -> None:
    m = PixelMetrics()
    with pytest.raises(ValueError, match="probs shape"):
        m.update([torch.rand(4, 5)], [torch.zeros(5, 4)])
    with pytest.raises(ValueError, match="2 probability maps but 1 targets"):
        m.update([torch.rand(4, 5), torch.rand(4, 5)], [torch.zeros(4, 5)])
    with pytest.raises(ValueError, match="one channel"):
        m.update(torch.rand(2, 3, 4, 5), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\(1,H,W\) or \(H,W\)"):
        m.update([torch.rand(2, 4, 5)], [torch.zeros(2, 4, 5)])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        m.update([torch.randn(4, 5) * 5], [torch.zeros(4, 5)])
    with pytest.raises(ValueError, match="target values"):
        m.update([torch.rand(4, 5)], [torch.full((4, 5), 0.5)])
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        ImageMetrics().update(torch.rand(4), torch.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        ImageMetrics().update(torch.rand(3), torch.tensor([0, 2, 1]))


def test_bin_index_matches_bucketize() -> None:
    for n in (1, 7, 10, 1000, 4096):
        edges = torch.arange(n + 1) / n
        up, down = torch.nextafter(edges, torch.tensor(2.0)), torch.nextafter(edges, torch.tensor(-1.0))
        p = torch.cat([torch.rand(20000, generator=torch.Generator().manual_seed(n)), edges, up, down]).clamp(0, 1)
        expected = torch.bucketize(p, edges, right=True) - 1
        assert torch.equal(_bin_index(p, n), expected.int()), n


def test_large_map_bounded() -> None:
    h, w = 3000, 4000
    target = torch.zeros(h, w)
    target[1000:2000, 1500:2500] = 1
    probs = torch.rand(h, w, generator=torch.Generator().manual_seed(6))
    m = PixelMetrics()
    m.update([probs], [target])
    out = m.compute()
    assert int(m.hist_neg.sum() + m.hist_pos.sum()) == h * w
    assert int(m.hist_pos.sum()) == 1000 * 1000
    assert abs(out["auc"].item() - 0.5) < 0.01


# ---------------------------------------------------------------------------------------------- DDP equivalence


def test_merge_state_equals_single_process() -> None:
    data = _dataset(7)
    gen = torch.Generator().manual_seed(8)
    scores, labels = torch.rand(40, generator=gen), (torch.rand(40, generator=gen) < 0.5).long()

    full_px, full_img = PixelMetrics(), ImageMetrics()
    full_px.update([p for p, _ in data], [t for _, t in data])
    full_img.update(scores, labels)

    ranks = [(PixelMetrics(), ImageMetrics()) for _ in range(2)]
    for r, (px, img) in enumerate(ranks):
        shard = data[r::2]
        px.update([p for p, _ in shard], [t for _, t in shard])
        img.update(scores[r::2], labels[r::2])
    (px0, img0), (px1, img1) = ranks
    px0.merge_state(px1)
    img0.merge_state(img1)

    for merged, full in ((px0.compute(), full_px.compute()), (img0.compute(), full_img.compute())):
        assert merged.keys() == full.keys()
        for key in full:
            torch.testing.assert_close(merged[key], full[key], equal_nan=True, rtol=1e-6, atol=1e-7, msg=key)
    assert torch.equal(px0.hist_pos, full_px.hist_pos) and torch.equal(px0.counts, full_px.counts)


# ---------------------------------------------------------------------------------------------- flatten


def test_flatten_results_keys() -> None:
    px, img = PixelMetrics(), ImageMetrics()
    p, t = _hand_case()
    px.update([p], [t])
    img.update(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]))
    flat = flatten_results(px.compute(), img.compute(), prefix="val/")
    assert flat["val/pixel_f1"] == pytest.approx(2 / 3)
    assert flat["val/image_auc"] == 1.0 and flat["val/image_balanced_acc"] == 1.0
    assert "val/pixel_auc" in flat and "val/pixel_n_manipulated" in flat
    assert all(isinstance(v, float) for v in flat.values())
    assert flatten_results(None, img.compute()).keys() == {f"image_{k}" for k in img.compute()}
