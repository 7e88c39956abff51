"""Losses for IML training, all aware of :data:`webiml.data.masks.IGNORE` pixels and per-sample weights.

Mask logits are single-channel (manipulated vs authentic). Binary cross-entropy on one logit equals
two-class softmax cross-entropy on the logit difference, so the APSC-Net authors' 2-class OHEM
cross-entropy (``OhemCrossEntropy`` of qcf-568/MIML, from PIDNet) maps onto :func:`ohem_bce` exactly.

Every mask output is compared with the target at the target's resolution: logits of a lower resolution
(auxiliary outputs at stride 4) are upsampled bilinearly to the label size first, as mmseg's decode heads
do (``BaseDecodeHead.losses``), so every labelled pixel is supervised, IGNORE pixels stay exact and OHEM
selects among all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webiml.data.masks import valid_pixels


def _resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (``align_corners=False``) of mask logits to the label size (mmseg's ``resize`` in
    ``BaseDecodeHead.losses``); logits already at that size are returned as they are."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def masked_bce(logits: Tensor, target: Tensor, pos_weight: float = 1.0) -> Tensor:
    """Per-sample mean BCE over supervised pixels, shape (B,). Samples without valid pixels give 0.

    ``pos_weight`` > 1 weighs manipulated pixels more, countering that they are a small minority.
    """
    valid = valid_pixels(target).float()
    pw = logits.new_tensor(pos_weight) if pos_weight != 1.0 else None
    loss = F.binary_cross_entropy_with_logits(logits, target.clamp(min=0), reduction="none", pos_weight=pw) * valid
    return loss.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)


def soft_dice(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Per-sample soft Dice loss of the manipulated class over supervised pixels, shape (B,).

    On a sample without any manipulated pixel the loss is ``1 - 1 / (1 + predicted area)``: it punishes
    a handful of positive pixels as much as a whole wrong mask, so :class:`IMLLoss` applies Dice only to
    samples that contain manipulated pixels and leaves authentic ones to the BCE term.

    Not ``segmentation_models_pytorch.losses.DiceLoss("binary")``: smp sums over the whole batch (one Dice,
    not one per sample, so it cannot be restricted to samples with manipulated pixels nor weighted per
    sample) and clamps its denominator; measured on random (4, 1, 32, 32) logits it gives 0.6256 where the
    mean of this per-sample loss is 0.6252 (0.6221 / 0.6217 with IGNORE pixels and ``ignore_index=-1``).
    """
    valid = valid_pixels(target).float()
    probs = logits.sigmoid() * valid
    t = target.clamp(min=0) * valid
    inter = (probs * t).flatten(1).sum(1)
    denom = probs.flatten(1).sum(1) + t.flatten(1).sum(1)
    return 1.0 - (2.0 * inter + smooth) / (denom + smooth)


def ohem_bce(logits: Tensor, target: Tensor, thresh: float = 0.7, min_kept: int = 100_000, sample_weight: Tensor | None = None) -> Tensor:
    """Online hard example mining BCE over the batch, with the selection rule of the authors'
    ``OhemCrossEntropy`` (qcf-568/MIML ``mmseg/models/losses/ohem_ce.py``).

    The supervised pixels of the whole batch are sorted by the probability of their true class ``p``; the
    cut is ``max(p_sorted[min(min_kept, n - 1)], thresh)`` (0-based index) and the pixels with ``p < cut``
    are kept: those below ``thresh``, or the ``min_kept`` least confident ones if fewer than ``min_kept``
    are below it. Returns the mean loss over kept pixels (weighted by ``sample_weight`` if given; the
    authors have no sample weights).
    """
    valid = valid_pixels(target)
    t = target.clamp(min=0)
    with torch.no_grad():
        p = logits.detach().float().sigmoid()
        p_true = torch.where(t > 0.5, p, 1.0 - p)
        p_valid = p_true[valid]
        n = p_valid.numel()
        if n == 0:
            return logits.sum() * 0.0
        # p_sorted[min(min_kept, n - 1)] (0-based) is the (that + 1)-th smallest value
        kth = p_valid.kthvalue(min(int(min_kept), n - 1) + 1).values
        cut = torch.maximum(kth, p_valid.new_tensor(thresh))
        keep = valid & (p_true < cut)
    loss = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    w = keep.to(loss.dtype)
    if sample_weight is not None:
        w = w * sample_weight.view(-1, *([1] * (logits.ndim - 1)))
    return (loss * w).sum() / keep.sum().clamp(min=1)


class IMLLoss(nn.Module):
    """Pixel BCE (or OHEM BCE) + Dice on the main mask, the same on auxiliary masks, BCE on the image logit.

    Args:
        bce_weight: weight of the pixel BCE term.
        dice_weight: weight of the Dice term.
        ohem_thresh: if set, the BCE term uses OHEM with this probability threshold (APSC-Net's
            authors: 0.7).
        ohem_min_kept: OHEM's minimum number of kept pixels per batch (the authors: 100000).
        image_weight: weight of the image-level BCE (ignored when the model has no image head).
        aux_weights: weight of each auxiliary output relative to the main one (a single float applies to
            all; the APSC-Net authors: 1.0, every output weighted alike).
        pos_weight: weight of manipulated pixels in the (non-OHEM) BCE term.

    The total is ``M(main) + sum_k aux_k * M(aux k) + image_weight * BCE(image)`` with
    ``M = bce_weight * BCE + dice_weight * Dice``: auxiliary weights are relative to the main term. The
    APSC-Net authors' decode head halves every term, the main one included (``BaseDecodeHead.losses``
    divides each loss by 2.0), and has no Dice or image term: that is ``bce_weight=0.5, aux_weights=1.0,
    dice_weight=0, image_weight=0`` here.
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 100_000,
        image_weight: float = 0.5,
        aux_weights: float | list[float] = 0.4,
        pos_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.pos_weight = pos_weight
        self.bce_weight, self.dice_weight = bce_weight, dice_weight
        self.ohem_thresh, self.ohem_min_kept = ohem_thresh, ohem_min_kept
        self.image_weight, self.aux_weights = image_weight, aux_weights

    def mask_loss(self, logits: Tensor, target: Tensor, sample_weight: Tensor) -> Tensor:
        logits = _resize_logits(logits, tuple(target.shape[-2:]))
        total = logits.new_zeros(())
        if self.bce_weight:
            if self.ohem_thresh is not None:
                bce = ohem_bce(logits, target, self.ohem_thresh, self.ohem_min_kept, sample_weight)
            else:
                bce = (masked_bce(logits, target, self.pos_weight) * sample_weight).mean()
            total = total + self.bce_weight * bce
        if self.dice_weight:
            has_positive = ((target > 0.5).flatten(1).any(1)).float() * sample_weight
            dice = (soft_dice(logits, target) * has_positive).sum() / has_positive.sum().clamp(min=1e-6)
            total = total + self.dice_weight * dice
        return total

    def forward(self, output, target: Tensor, label: Tensor | None = None, sample_weight: Tensor | None = None) -> dict[str, Tensor]:
        """Return ``{"loss": total, "loss_mask": ..., "loss_aux": ..., "loss_image": ...}``."""
        if sample_weight is None:
            sample_weight = target.new_ones(target.shape[0])
        parts = {"loss_mask": self.mask_loss(output.mask_logits, target, sample_weight)}
        if output.aux_mask_logits:
            n = len(output.aux_mask_logits)
            weights = self.aux_weights if isinstance(self.aux_weights, list | tuple) else [self.aux_weights] * n
            if len(weights) != n:
                raise ValueError(f"aux_weights has {len(weights)} entries but the model returned {n} auxiliary outputs")
            parts["loss_aux"] = sum(w * self.mask_loss(a, target, sample_weight) for w, a in zip(weights, output.aux_mask_logits, strict=True))
        if output.image_logits is not None and label is not None and self.image_weight:
            img = F.binary_cross_entropy_with_logits(output.image_logits, label.float(), reduction="none")
            parts["loss_image"] = self.image_weight * (img * sample_weight).mean()
        parts["loss"] = sum(parts.values())
        return parts
