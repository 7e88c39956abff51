"""Calibrating the image-level verdict: a threshold that keeps false accusations rare.

A model's image score ranks images; the verdict "manipulated" is ``score >= image_threshold``. The
threshold is chosen on *authentic* photos the model never saw in training (and their JPEG and resized
variants, since real photos arrive re-compressed and rescaled) so that at least a target fraction of
them (the specificity, e.g. 0.9) is called authentic. Forgeries play no part in the choice; their true
positive rate is reported afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from webiml.io import jpeg_compress

VARIANTS: tuple[str, ...] = ("original", "jpeg90", "jpeg75", "resize0.5")
"""Versions of each authentic photo scored during calibration (re-compressed and down-up resized copies)."""


def authentic_variant(image: np.ndarray, variant: str) -> np.ndarray:
    """One of :data:`VARIANTS` of an RGB ``uint8`` (H, W, 3) photo (deterministic)."""
    if variant == "original":
        return image
    if variant.startswith("jpeg"):
        return jpeg_compress(image, int(variant[4:]))
    if variant.startswith("resize"):
        scale = float(variant[6:])
        h, w = image.shape[:2]
        small = Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
        return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def allowed_false_alarms(n: int, specificity: float, confidence: float | None = None) -> int:
    """How many of ``n`` calibration photos may score above the threshold.

    Without ``confidence``: ``floor((1 - specificity) n)``, the point estimate. With it: the largest ``x``
    such that a false-alarm rate of ``1 - specificity`` would give ``x`` or fewer false alarms with
    probability at most ``1 - confidence`` (exact one-sided binomial test, the Clopper-Pearson bound): the
    threshold then holds the specificity on *new* photos of the same kind with that confidence, not only on
    the calibration sample (e.g. 159 photos, 0.9, 0.95 -> 9 false alarms allowed instead of 15). ``-1`` when
    even zero false alarms are not enough evidence (too few photos).
    """
    if not 0.0 < specificity <= 1.0:
        raise ValueError(f"specificity must be in (0, 1], got {specificity}")
    if confidence is None:
        return math.floor((1.0 - specificity) * n + 1e-9)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    p, alpha, cdf, allowed = 1.0 - specificity, 1.0 - confidence, 0.0, -1
    for x in range(n + 1):
        cdf += math.comb(n, x) * p**x * (1.0 - p) ** (n - x)
        if cdf > alpha:
            break
        allowed = x
    return allowed


def threshold_for_specificity(authentic_scores: Sequence[float] | np.ndarray, specificity: float = 0.9,
                              confidence: float | None = None) -> float:
    """The lowest threshold ``t`` such that at least ``specificity`` of the scores are ``< t`` (with
    ``confidence``: such that at most :func:`allowed_false_alarms` of them are ``>= t``).

    The verdict rule is ``score >= t``. ``t`` lies halfway between the ``k``-th and ``k+1``-th smallest
    scores (``k = n - allowed false alarms``), so small score perturbations do not flip the calibration set's
    verdicts; with ``k == n`` it lies just above the largest score.
    """
    if not 0.0 < specificity <= 1.0:
        raise ValueError(f"specificity must be in (0, 1], got {specificity}")
    s = np.sort(np.asarray(authentic_scores, dtype=np.float64))
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no finite authentic scores to calibrate on")
    k = s.size - max(0, allowed_false_alarms(s.size, specificity, confidence))
    if k >= s.size:
        return float(min(1.0, np.nextafter(s[-1], np.inf)))
    lo, hi = s[k - 1] if k > 0 else s[0] - 1e-6, s[k]
    return float(np.nextafter(lo, np.inf)) if hi <= lo else float((lo + hi) / 2)


def verdict_rates(scores: Sequence[float], labels: Sequence[int], threshold: float) -> dict[str, float | int | None]:
    """TPR (manipulated images called manipulated), TNR (authentic called authentic) and image AUC."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    return {
        "n_manipulated": int(pos.size), "n_authentic": int(neg.size),
        "tpr": float((pos >= threshold).mean()) if pos.size else None,
        "tnr": float((neg < threshold).mean()) if neg.size else None,
        "image_auc": image_auc(pos, neg),
    }


def image_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """Probability that a manipulated image outscores an authentic one (ties count half); ``None`` if a class is empty.

    The same exact ROC AUC as :class:`webiml.metrics.ImageMetrics` (torchmetrics, float64)."""
    if pos.size == 0 or neg.size == 0:
        return None
    import torch
    from torchmetrics.functional.classification import binary_auroc

    scores = torch.from_numpy(np.concatenate([pos, neg]).astype(np.float64))
    labels = torch.cat([torch.ones(pos.size, dtype=torch.long), torch.zeros(neg.size, dtype=torch.long)])
    return float(binary_auroc(scores, labels, thresholds=None))
