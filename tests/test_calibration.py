"""Verdict calibration: the threshold meets the target specificity on the calibration scores, variants are
real re-encodings, and the per-image evaluation / paired comparison compute what they say."""

from __future__ import annotations

import numpy as np
import pytest

from webiml.calibration import (
    VARIANTS,
    allowed_false_alarms,
    authentic_variant,
    image_auc,
    threshold_for_specificity,
    verdict_rates,
)
from webiml.evaluation import paired_comparison
from webiml.metrics import pixel_f1_iou


@pytest.mark.parametrize("spec", [0.5, 0.9, 0.95, 1.0])
def test_threshold_meets_the_specificity_and_is_the_lowest_that_does(spec: float) -> None:
    scores = np.random.default_rng(0).random(200)
    t = threshold_for_specificity(scores, spec)
    assert (scores < t).mean() >= spec
    below = np.sort(scores)[np.sort(scores) < t]
    # any lower threshold at or below the largest score called authentic would miss the target
    assert (scores < below[-1]).mean() < spec


@pytest.mark.parametrize("n", [13, 36, 159, 1000])
def test_confident_threshold_allows_the_false_alarms_an_exact_binomial_bound_allows(n: int) -> None:
    """x false alarms of n are allowed when the Clopper-Pearson 95 % upper bound of the false-alarm rate is at
    most 0.1, and x + 1 would exceed it; the threshold then calls n - x photos authentic."""
    from scipy.stats import beta

    x = allowed_false_alarms(n, 0.9, 0.95)
    assert x < allowed_false_alarms(n, 0.9) == int(0.1 * n)
    if x >= 0:
        assert beta.ppf(0.95, x + 1, n - x) <= 0.1
    assert beta.ppf(0.95, x + 2, n - x - 1) > 0.1
    scores = np.random.default_rng(n).random(n)
    assert int((scores >= threshold_for_specificity(scores, 0.9, 0.95)).sum()) == max(x, 0)
    assert allowed_false_alarms(159, 0.9, 0.95) == 9
    with pytest.raises(ValueError):
        allowed_false_alarms(10, 0.9, 1.0)


def test_threshold_with_ties_and_bad_input() -> None:
    t = threshold_for_specificity([0.3] * 10, 0.9)
    assert t > 0.3 and (np.array([0.3] * 10) < t).all()
    with pytest.raises(ValueError):
        threshold_for_specificity([], 0.9)
    with pytest.raises(ValueError):
        threshold_for_specificity([0.1], 0.0)
    assert threshold_for_specificity([0.2, float("nan"), 0.4], 0.5) == pytest.approx(0.3)


def test_verdict_rates_and_auc() -> None:
    r = verdict_rates([0.9, 0.8, 0.2, 0.1, 0.6], [1, 1, 0, 0, 0], 0.5)
    assert r["tpr"] == 1.0 and r["tnr"] == pytest.approx(2 / 3) and r["image_auc"] == 1.0
    assert image_auc(np.array([0.5]), np.array([0.5])) == 0.5
    assert verdict_rates([0.1], [0], 0.5)["tpr"] is None


def test_variants_change_pixels_but_not_size() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    for v in VARIANTS:
        out = authentic_variant(image, v)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, image) == (v == "original")
    with pytest.raises(ValueError):
        authentic_variant(image, "sharpen")


def test_pixel_f1_iou_ignores_unsupervised_pixels() -> None:
    probs = np.array([[0.9, 0.9, 0.1, 0.1]])
    target = np.array([[1.0, 0.0, 1.0, -1.0]])
    f1, iou = pixel_f1_iou(probs, target)
    assert f1 == pytest.approx(0.5) and iou == pytest.approx(1 / 3)
    assert pixel_f1_iou(np.zeros((2, 2)), np.zeros((2, 2))) == (1.0, 1.0)


def test_paired_comparison_counts_wins_and_brackets_the_mean() -> None:
    a = [0.1, 0.2, 0.3, 0.4]
    b = [0.2, 0.2, 0.5, 0.3]
    p = paired_comparison(a, b, n_boot=2000)
    assert (p["wins"], p["losses"], p["ties"]) == (2, 1, 1)
    assert p["mean_diff"] == pytest.approx(0.05)
    assert p["ci95"][0] <= p["mean_diff"] <= p["ci95"][1]
    with pytest.raises(ValueError):
        paired_comparison([0.1], [0.1, 0.2])
