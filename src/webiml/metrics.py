"""Evaluation metrics for image manipulation localization (IML) and image-level detection.

Three :class:`torchmetrics.Metric` classes, all DDP-correct:

* :class:`PixelMetrics` — localization metrics computed per image at its original resolution and averaged over
  *manipulated* images (the field's protocol), plus a dataset-level pixel AUC. All states are sums (bounded memory),
  so a DDP run reproduces the single-process numbers.
* :class:`ImageMetrics` — image-level detection metrics (AUC, balanced accuracy, ...) from one score per image.
* :class:`MIMLOfficialMetrics` — the APSC-Net authors' test scores (their ``*_infer.py`` scripts): per-image
  IoU / precision / recall / F1 at a per-image adaptive threshold from the image score, averaged over
  manipulated images.

Conventions (shared by both classes):

* a pixel / image is predicted *manipulated* when ``prob >= threshold`` (the same rule as ROC thresholds in
  scikit-learn, and as the bin edges used for the best-threshold and AUC computations);
* targets follow :mod:`webiml.data.masks`: 0.0 authentic, 1.0 manipulated, :data:`~webiml.data.masks.IGNORE`
  (-1.0) pixels are excluded from every count;
* F1 and IoU are ``2TP / (2TP + FP + FN)`` and ``TP / (TP + FP + FN)``; on a manipulated image the denominators are
  never zero, and an image with no predicted positives scores 0 (precision 0/0 is taken as 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

from webiml.data.masks import IGNORE

__all__ = ["ImageMetrics", "MIMLOfficialMetrics", "PixelMetrics", "flatten_results", "miml_adaptive_threshold"]

_AVERAGED = ("f1", "iou", "f1_best", "iou_best", "f1_permuted", "iou_permuted")
"""Per-image metrics averaged over manipulated images, in the order of ``PixelMetrics.sums``."""

MapInput = Tensor | Sequence[Tensor]


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def _check_unit_range(x: Tensor, name: str) -> None:
    # ``min``/``max`` propagate NaN, so NaN values fail the check too.
    if x.numel() and not (bool(x.min() >= 0) and bool(x.max() <= 1)):
        raise ValueError(f"{name} must lie in [0, 1] (probabilities, not logits)")


def _as_image_list(x: MapInput, name: str) -> list[Tensor]:
    """Split a batch (B,1,H,W)/(B,H,W) or a sequence of (1,H,W)/(H,W) maps into a list of (H,W) maps."""
    if isinstance(x, Tensor):
        if x.ndim == 4:
            if x.shape[1] != 1:
                raise ValueError(f"{name} batch must have one channel (B,1,H,W), got shape {tuple(x.shape)}")
            x = x[:, 0]
        elif x.ndim != 3:
            raise ValueError(f"{name} batch must have shape (B,1,H,W) or (B,H,W), got shape {tuple(x.shape)}")
        return list(x.unbind(0))
    out = []
    for i, m in enumerate(x):
        if not isinstance(m, Tensor):
            raise ValueError(f"{name}[{i}] must be a tensor, got {type(m).__name__}")
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2:
            raise ValueError(f"{name}[{i}] must have shape (1,H,W) or (H,W), got shape {tuple(m.shape)}")
        out.append(m)
    return out


def _auc_from_hist(neg: Tensor, pos: Tensor) -> Tensor:
    """ROC AUC (trapezoid rule) of scores summarised by per-bin negative/positive counts.

    Lowering the threshold past bin ``j`` adds ``neg[j]`` false and ``pos[j]`` true positives; the trapezoid over
    that step is ``neg[j] * (TP_before + TP_after) / 2``. Scores inside one bin count as ties, which is exactly how
    scikit-learn treats equal scores. NaN when either class is empty.
    """
    neg = neg.double()
    pos = pos.double()
    tp_after = pos.flip(0).cumsum(0).flip(0)  # TP when predicting bins >= j
    tp_before = tp_after - pos  # TP when predicting bins >= j + 1
    area = (neg * (tp_after + tp_before)).sum() / 2
    return area / (neg.sum() * pos.sum())


def _bin_index(p: Tensor, num_bins: int) -> Tensor:
    """int32 bin ``k`` with ``k/n <= p < (k+1)/n`` (``k = n`` for ``p == 1``) for ``p`` in [0, 1], ``n = num_bins``.

    Edges are the float32 values ``float32(k) / float32(n)`` (correctly rounded, as ``torch.arange(n + 1) / n``), so
    bin ``>= k`` is exactly ``p >= k / n`` for float32 ``p``. Same result as ``torch.bucketize(p, edges, right=True)
    - 1`` but several times faster on CPU: ``floor(p * n)`` is off by at most one where float rounding crosses an
    edge, which one comparison on each side corrects.
    """
    k = (p * num_bins).floor_().clamp_(0, num_bins)
    k -= (p < k / num_bins).float()
    k += ((p >= (k + 1) / num_bins) & (k < num_bins)).float()
    return k.to(torch.int32)


def _f1_iou(tp: Tensor, fp: Tensor, n_pos: Tensor) -> tuple[Tensor, Tensor]:
    """F1 and IoU from counts (FN = n_pos - TP); 0 where the denominator is 0 (no positives at all)."""
    tp = tp.double()
    union = (fp.double() + n_pos.double()).clamp(min=1)  # TP + FP + FN
    return 2 * tp / (union + tp), tp / union


def pixel_f1_iou(probs: Any, target: Any, threshold: float = 0.5) -> tuple[float, float]:
    """One image's F1 and IoU of ``probs >= threshold`` against a 0/1 target (numpy arrays; pixels with
    target < 0 are ignored), by the definition :class:`PixelMetrics` averages: 2TP / (2TP + FP + FN) and
    TP / (TP + FP + FN), 1.0 when there is nothing to find and nothing found."""
    import numpy as np

    valid = target >= 0
    pred = (probs >= threshold) & valid
    truth = (target > 0.5) & valid
    tp = float(np.count_nonzero(pred & truth))
    fp = float(np.count_nonzero(pred & ~truth))
    fn = float(np.count_nonzero(~pred & truth))
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 1.0
    iou = tp / (tp + fp + fn) if (tp + fp + fn) > 0 else 1.0
    return f1, iou


class PixelMetrics(Metric):
    """Pixel-level localization metrics, per image at original resolution, averaged over manipulated images.

    ``compute()`` returns a dict of scalar tensors:

    * ``f1``, ``iou`` — at the fixed ``threshold`` (``prob >= threshold``), exact pixel counts;
    * ``f1_best``, ``iou_best`` — each image at its own best threshold among the bin edges ``k / num_bins``,
      ``k = 0..num_bins`` (``prob >= edge``, exact). When ``threshold * num_bins`` is an integer the fixed
      threshold is one of the edges, so ``f1_best >= f1`` and ``iou_best >= iou``;
    * ``f1_permuted``, ``iou_permuted`` — per image the larger of the metric on the map and on the inverted map
      ``1 - prob`` at the fixed threshold, exact (maximised separately for F1 and IoU);
    * ``auc`` — per-image pixel ROC AUC from the histograms, averaged over manipulated images that also have
      authentic pixels (scores within a bin count as ties, error ``O(1 / num_bins)``);
    * ``auc_global`` — pixel ROC AUC over all valid pixels of all images (from global histograms);
    * ``n_images`` (images seen), ``n_manipulated`` (images with at least one valid positive pixel), ``n_auc``
      (manipulated images with authentic pixels too).

    Histograms have ``num_bins`` bins ``[k/n, (k+1)/n)`` plus one for ``prob == 1`` exactly, so scores lying on
    bin edges are scored without any binning error. Averages are NaN when no image qualifies. An *authentic*
    image (no positive pixel) contributes only to ``n_images`` and ``auc_global``.

    States are sums only (float64 sums of per-image values, int64 counts and ``2 * (num_bins + 1)`` histogram
    counts), so memory is independent of the dataset size and DDP reduction gives the single-process result.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    sums: Tensor
    counts: Tensor
    hist_neg: Tensor
    hist_pos: Tensor

    def __init__(self, threshold: float = 0.5, num_bins: int = 1000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self.threshold = _check_threshold(threshold)
        self.num_bins = int(num_bins)
        # sums of per-image values: the _AVERAGED metrics, then the per-image AUC
        self.add_state("sums", torch.zeros(len(_AVERAGED) + 1, dtype=torch.float64), dist_reduce_fx="sum")
        # n_images, n_manipulated, n_auc
        self.add_state("counts", torch.zeros(3, dtype=torch.int64), dist_reduce_fx="sum")
        # num_bins bins [k/n, (k+1)/n) plus one bin for p == 1 (saturated sigmoids), so that every edge
        # threshold k/n, k = 0..n, is exact.
        self.add_state("hist_neg", torch.zeros(self.num_bins + 1, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("hist_pos", torch.zeros(self.num_bins + 1, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, probs: MapInput, target: MapInput) -> None:
        """Add a batch of probability maps and targets (tensors or lists of per-image maps of any size)."""
        prob_list = _as_image_list(probs, "probs")
        target_list = _as_image_list(target, "target")
        if len(prob_list) != len(target_list):
            raise ValueError(f"got {len(prob_list)} probability maps but {len(target_list)} targets")
        if not prob_list:
            return
        batch_sums = torch.zeros_like(self.sums)
        batch_counts = torch.zeros_like(self.counts)
        nb = self.num_bins + 1
        batch_hist = torch.zeros(2 * nb, dtype=torch.int64, device=self.sums.device)
        for i, (p, t) in enumerate(zip(prob_list, target_list, strict=True)):
            if p.shape != t.shape:
                raise ValueError(f"image {i}: probs shape {tuple(p.shape)} != target shape {tuple(t.shape)}")
            image_sums, image_counts, hist = self._image_stats(p, t, i)
            batch_sums += image_sums
            batch_counts += image_counts
            batch_hist += hist
        self.sums += batch_sums
        self.counts += batch_counts
        self.hist_neg += batch_hist[:nb]
        self.hist_pos += batch_hist[nb:]

    def _image_stats(self, p: Tensor, t: Tensor, i: int) -> tuple[Tensor, Tensor, Tensor]:
        """Per-image contributions to ``sums``, ``counts`` and the concatenated (negative, positive) histogram."""
        if not p.is_floating_point():
            raise ValueError(f"image {i}: probs must be floating point, got {p.dtype}")
        device = self.sums.device
        p = p.to(device=device, dtype=torch.float32)
        t = t.to(device=device)
        # Masks instead of boolean indexing (p[valid] costs more than the rest together on a 12 Mpx map).
        pos = t == 1
        neg = t == 0
        ignored = ~(pos | neg)
        # One host sync per image for validation; the metric arithmetic below has no Python branches.
        bad_probs = ~((p >= 0) & (p <= 1))  # also catches NaN
        bad_target = ignored & (t != IGNORE)
        if bool(bad_probs.any() | bad_target.any()):
            if bool(bad_probs.any()):
                raise ValueError(f"image {i}: probs must lie in [0, 1] (probabilities, not logits)")
            raise ValueError(f"image {i}: target values must be 0, 1 or IGNORE ({IGNORE})")
        del bad_probs, bad_target
        n_pos = pos.count_nonzero()
        n_neg = neg.count_nonzero()

        # Exact counts at the fixed threshold, for the map and the inverted map.
        pred = p >= self.threshold
        tp, fp = (pred & pos).count_nonzero(), (pred & neg).count_nonzero()
        pred = (1 - p) >= self.threshold
        tp_inv, fp_inv = (pred & pos).count_nonzero(), (pred & neg).count_nonzero()
        del pred
        f1, iou = _f1_iou(tp, fp, n_pos)
        f1_inv, iou_inv = _f1_iou(tp_inv, fp_inv, n_pos)

        # Histogram: bin k holds k/n <= p < (k+1)/n, bin n holds p == 1. One bincount over
        # ``bin + (n + 1) * class`` (class 0 negative, 1 positive, 2 ignored) gives both histograms; int32 indices
        # keep the temporaries of a 12 Mpx map at ~50 MB each.
        nb = self.num_bins + 1
        idx = _bin_index(p.reshape(-1), self.num_bins)
        idx.add_(pos.reshape(-1), alpha=nb).add_(ignored.reshape(-1), alpha=2 * nb)
        hist = torch.bincount(idx, minlength=3 * nb)[: 2 * nb]
        del idx
        hist_neg, hist_pos = hist[:nb], hist[nb:]

        # TP/FP for every edge threshold k = 0..n (predict bins >= k, i.e. p >= k/n) and k = n+1 (predict nothing).
        zero = hist.new_zeros(1)
        tp_k = torch.cat([hist_pos.flip(0).cumsum(0).flip(0), zero])
        fp_k = torch.cat([hist_neg.flip(0).cumsum(0).flip(0), zero])
        f1_k, iou_k = _f1_iou(tp_k, fp_k, n_pos)
        auc = torch.nan_to_num(_auc_from_hist(hist_neg, hist_pos), nan=0.0)

        manipulated = n_pos > 0
        has_auc = manipulated & (n_neg > 0)
        f1_perm, iou_perm = torch.maximum(f1, f1_inv), torch.maximum(iou, iou_inv)
        values = torch.stack([f1, iou, f1_k.max(), iou_k.max(), f1_perm, iou_perm])
        sums = torch.cat([values * manipulated, (auc * has_auc).reshape(1)])
        counts = torch.stack([torch.ones_like(n_pos), manipulated.long(), has_auc.long()])
        return sums, counts, hist

    def compute(self) -> dict[str, Tensor]:
        """Averages over manipulated images (NaN if none), global AUC and image counts."""
        n_images, n_manipulated, n_auc = self.counts
        nan = torch.tensor(math.nan, dtype=torch.float64, device=self.sums.device)
        averages = torch.where(n_manipulated > 0, self.sums[: len(_AVERAGED)] / n_manipulated.clamp(min=1), nan)
        out = {name: averages[j].float() for j, name in enumerate(_AVERAGED)}
        out["auc"] = torch.where(n_auc > 0, self.sums[-1] / n_auc.clamp(min=1), nan).float()
        out["auc_global"] = _auc_from_hist(self.hist_neg, self.hist_pos).float()
        out["n_images"] = n_images
        out["n_manipulated"] = n_manipulated
        out["n_auc"] = n_auc
        return out


class ImageMetrics(Metric):
    """Image-level detection metrics from one manipulation probability per image.

    ``compute()`` returns ``auc`` (exact ROC AUC, ties handled like ``sklearn.metrics.roc_auc_score``; NaN unless
    both classes are present), ``acc``, ``tpr`` (recall on manipulated images), ``tnr`` (recall on authentic
    images), ``balanced_acc`` (mean of the defined ones among ``tpr``/``tnr``, as
    ``sklearn.metrics.balanced_accuracy_score``) and ``n_images``. An image is predicted manipulated when
    ``score >= threshold``.

    The exact AUC needs every score, so states are concatenated lists (one float per image).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    scores: list[Tensor] | Tensor
    labels: list[Tensor] | Tensor

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = _check_threshold(threshold)
        self.add_state("scores", [], dist_reduce_fx="cat")
        self.add_state("labels", [], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor) -> None:
        """Add image probabilities ``scores`` (B,) in [0, 1] and labels (B,) in {0, 1} (1 = manipulated)."""
        if scores.ndim > 1 or labels.ndim > 1 or scores.shape != labels.shape:
            raise ValueError(
                f"scores and labels must both have shape (B,), got {tuple(scores.shape)} and {tuple(labels.shape)}"
            )
        if not scores.is_floating_point():
            raise ValueError(f"scores must be floating point, got {scores.dtype}")
        _check_unit_range(scores, "scores")
        if bool(((labels != 0) & (labels != 1)).any()):
            raise ValueError("labels must be 0 or 1")
        self.scores.append(scores.detach().reshape(-1).float())
        self.labels.append(labels.detach().reshape(-1).long())

    def compute(self) -> dict[str, Tensor]:
        """AUC, accuracy, TPR, TNR and balanced accuracy over all images seen (NaN where undefined)."""
        scores = _cat_or_empty(self.scores, torch.float32)
        labels = _cat_or_empty(self.labels, torch.int64)
        nan = torch.tensor(math.nan, device=scores.device)
        n_pos = labels.sum()
        n_neg = labels.numel() - n_pos
        if n_pos > 0 and n_neg > 0:
            # torchmetrics' exact (thresholds=None) curve handles ties like scikit-learn; float64 keeps it exact.
            auc = binary_auroc(scores.double(), labels, thresholds=None).float()
        else:
            auc = nan
        pred = scores >= self.threshold
        positive = labels == 1
        tp = (pred & positive).sum()
        tn = (~pred & ~positive).sum()
        tpr = tp / n_pos if n_pos > 0 else nan
        tnr = tn / n_neg if n_neg > 0 else nan
        rates = torch.stack([tpr.float(), tnr.float()])
        balanced = rates.nanmean() if bool(rates.isfinite().any()) else nan
        acc = (tp + tn) / labels.numel() if labels.numel() else nan
        return {
            "auc": auc,
            "balanced_acc": balanced.float(),
            "acc": acc.float(),
            "tpr": tpr.float(),
            "tnr": tnr.float(),
            "n_images": torch.tensor(labels.numel(), device=scores.device),
        }


def miml_adaptive_threshold(image_scores: Tensor | None, n: int, low: float = 0.3, high: float = 0.7,
                            fixed: float = 0.5) -> Tensor:
    """Per-image mask thresholds of the APSC-Net authors' segmentor (``VizEncoderDecoder.inference``):
    ``clamp(1 - image score, low, high)``, or ``fixed`` for every image when there is no image score."""
    if image_scores is None:
        return torch.full((n,), float(fixed))
    return (1.0 - image_scores.detach().float().reshape(-1)).clamp(low, high)


class MIMLOfficialMetrics(Metric):
    """Localization scores as the APSC-Net authors compute them (qcf-568/MIML ``models for IML/*_infer.py``).

    Per image, the prediction is ``prob > threshold`` (strictly) with the image's own threshold (the adaptive
    :func:`miml_adaptive_threshold` from the image score, or ``fixed_threshold`` for every image of a set that
    the authors score at a fixed threshold: IMD2020), and with TP the true positives, ``|pred|`` / ``|gt|``
    the predicted / true manipulated pixels::

        IoU = TP / (|pred| + |gt| - TP + 1e-6)    P = TP / (|pred| + 1e-6)    R = TP / (|gt| + 1e-6)
        F1  = 2 P R / (P + R + 1e-8)

    ``compute()`` returns the means of these over manipulated images (``iou``, ``precision``, ``recall``,
    ``f1``; NaN without one), the mean threshold used on them (``threshold``) and ``n_images`` (manipulated
    images scored). The authors average over every file of their test folders, which hold manipulated images
    only; IGNORE pixels (none in binary masks) are left out of every count.

    Args:
        fixed_threshold: score every image at this threshold (``None``: adaptive, from the image scores).
        low, high: clamp range of the adaptive threshold.
        default_threshold: the threshold when no image score is given (the authors' model without image head).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    sums: Tensor
    count: Tensor

    def __init__(self, fixed_threshold: float | None = None, low: float = 0.3, high: float = 0.7,
                 default_threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fixed_threshold = None if fixed_threshold is None else _check_threshold(fixed_threshold)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"need 0 <= low <= high <= 1, got {low}, {high}")
        self.low, self.high = float(low), float(high)
        self.default_threshold = _check_threshold(default_threshold)
        # iou, precision, recall, f1, threshold
        self.add_state("sums", torch.zeros(5, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def thresholds(self, image_scores: Tensor | None, n: int) -> Tensor:
        """The per-image thresholds this metric applies."""
        if self.fixed_threshold is not None:
            return torch.full((n,), self.fixed_threshold)
        return miml_adaptive_threshold(image_scores, n, self.low, self.high, self.default_threshold)

    def per_image(self, probs: MapInput, target: MapInput, image_scores: Tensor | None = None) -> list[dict[str, float]]:
        """The per-image values (``threshold``, ``iou``, ``precision``, ``recall``, ``f1``, ``manipulated``)
        without updating the state."""
        prob_list = _as_image_list(probs, "probs")
        target_list = _as_image_list(target, "target")
        if len(prob_list) != len(target_list):
            raise ValueError(f"got {len(prob_list)} probability maps but {len(target_list)} targets")
        thresholds = self.thresholds(image_scores, len(prob_list)).tolist()
        if len(thresholds) != len(prob_list):
            raise ValueError(f"got {len(thresholds)} image scores for {len(prob_list)} images")
        rows = []
        for i, (p, t, th) in enumerate(zip(prob_list, target_list, thresholds, strict=True)):
            if p.shape != t.shape:
                raise ValueError(f"image {i}: probs shape {tuple(p.shape)} != target shape {tuple(t.shape)}")
            t = t.to(p.device)
            valid = t >= 0
            pred = (p.float() > th) & valid
            truth = (t > 0.5) & valid
            tp = float((pred & truth).sum())
            n_pred, n_true = float(pred.sum()), float(truth.sum())
            prec, rec = tp / (n_pred + 1e-6), tp / (n_true + 1e-6)
            rows.append({"threshold": float(th), "iou": tp / (n_pred + n_true - tp + 1e-6), "precision": prec,
                         "recall": rec, "f1": 2 * prec * rec / (prec + rec + 1e-8), "manipulated": n_true > 0})
        return rows

    def update(self, probs: MapInput, target: MapInput, image_scores: Tensor | None = None) -> None:
        """Add probability maps and targets (as :meth:`PixelMetrics.update`) and the images' scores (B,)."""
        rows = [r for r in self.per_image(probs, target, image_scores) if r["manipulated"]]
        if not rows:
            return
        values = torch.tensor([[r["iou"], r["precision"], r["recall"], r["f1"], r["threshold"]] for r in rows],
                              dtype=torch.float64, device=self.sums.device)
        self.sums += values.sum(0)
        self.count += len(rows)

    def compute(self) -> dict[str, Tensor]:
        nan = torch.tensor(math.nan, dtype=torch.float64, device=self.sums.device)
        means = torch.where(self.count > 0, self.sums / self.count.clamp(min=1), nan).float()
        out = {name: means[j] for j, name in enumerate(("iou", "precision", "recall", "f1", "threshold"))}
        out["n_images"] = self.count
        return out


def _cat_or_empty(state: list[Tensor] | Tensor, dtype: torch.dtype) -> Tensor:
    if isinstance(state, list) and not state:
        return torch.zeros(0, dtype=dtype)
    return dim_zero_cat(state)


def flatten_results(
    pixel: Mapping[str, Tensor | float] | None, image: Mapping[str, Tensor | float] | None, prefix: str = ""
) -> dict[str, float]:
    """Merge the outputs of :meth:`PixelMetrics.compute` and :meth:`ImageMetrics.compute` into one flat dict of
    floats with keys ``f"{prefix}pixel_{name}"`` and ``f"{prefix}image_{name}"`` (e.g. ``val/pixel_f1``,
    ``val/image_auc`` with ``prefix="val/"``). Either input may be ``None``."""
    out: dict[str, float] = {}
    for group, results in (("pixel", pixel), ("image", image)):
        for name, value in (results or {}).items():
            out[f"{prefix}{group}_{name}"] = float(value)
    return out
