"""Per-image scores of a model on a manifest, and paired comparisons of two models on the same images.

The Lightning ``webiml test`` path aggregates metrics over a set; small real sets (tens of images) need
the per-image numbers too: to compare two models image by image (wins, a bootstrap interval of the mean
difference) rather than by two means whose difference may be noise. The definitions match
:class:`webiml.metrics.PixelMetrics`: each manipulated image's map is scored at its original resolution,
binarised with ``prob >= threshold``; F1 = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from webiml.data.manifest import read_manifest
from webiml.data.masks import target_from_mask
from webiml.inference import Localizer
from webiml.io import read_image, read_mask
from webiml.metrics import pixel_f1_iou
from webiml.models.base import IMLModel


@dataclass
class ImageScore:
    """One image of a manifest: its label, image score and (manipulated images only) pixel F1 / IoU."""

    image: str
    label: int
    image_score: float
    f1: float | None = None
    iou: float | None = None


def score_manifest(model: IMLModel | Localizer, manifest: str | Path, threshold: float = 0.5) -> list[ImageScore]:
    """Run ``model`` on every image of ``manifest`` at native resolution and score each one."""
    localizer = model if isinstance(model, Localizer) else Localizer(model)
    results: list[ImageScore] = []
    for record in read_manifest(manifest):
        out = localizer.localize(read_image(record.image))
        score = ImageScore(record.image, int(record.label), float(out.image_score))
        if record.label and record.mask is not None:
            target = target_from_mask(read_mask(record.mask), record.band).numpy()
            score.f1, score.iou = pixel_f1_iou(out.mask_probs, target, threshold)
        results.append(score)
    return results


def summarize(scores: Sequence[ImageScore]) -> dict[str, Any]:
    """Mean per-image F1 / IoU over manipulated images and the image AUC (authentic vs manipulated)."""
    from webiml.calibration import image_auc

    f1 = [s.f1 for s in scores if s.f1 is not None]
    iou = [s.iou for s in scores if s.iou is not None]
    pos = np.array([s.image_score for s in scores if s.label])
    neg = np.array([s.image_score for s in scores if not s.label])
    return {"n_manipulated": len(f1), "n_authentic": int(neg.size), "f1": float(np.mean(f1)) if f1 else None,
            "iou": float(np.mean(iou)) if iou else None, "image_auc": image_auc(pos, neg)}


def paired_comparison(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """``b`` vs ``a`` on the same images: mean difference, a 95 % bootstrap interval of it, wins / losses / ties."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"paired comparison needs two equally long non-empty lists, got {x.size} and {y.size}")
    d = y - x
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, (n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {"n": int(d.size), "mean_a": float(x.mean()), "mean_b": float(y.mean()), "mean_diff": float(d.mean()),
            "ci95": [float(lo), float(hi)], "wins": int((d > 1e-9).sum()), "losses": int((d < -1e-9).sum()),
            "ties": int((np.abs(d) <= 1e-9).sum())}


def scores_to_rows(scores: Sequence[ImageScore]) -> list[dict[str, Any]]:
    return [asdict(s) for s in scores]
