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


def _resize_target(target: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a target so IGNORE and labels survive exactly (MVSSLoss: the map's own size)."""
    if target.shape[-2:] == size:
        return target
    return F.interpolate(target, size=size, mode="nearest")


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


def edge_band(target: Tensor, width: int = 7) -> Tensor:
    """Pixels within ``width // 2`` (along a row or a column) of both a manipulated and an authentic pixel.

    IML-ViT's edge mask (the authors' ``EdgeGenerator``: dilations by a cross-shaped kernel of side ``width``
    of the mask and of its complement, kept where both are set): a band of about ``width`` pixels along the
    boundary of the manipulated region, empty on all-authentic and all-manipulated targets. :data:`IGNORE`
    pixels count as neither class. Returns a float map of ``target``'s shape.
    """
    if width < 1 or width % 2 == 0:
        raise ValueError(f"edge width must be a positive odd number, got {width}")
    r = width // 2

    def dilate(m: Tensor) -> Tensor:  # cross-shaped kernel = union of a row and a column of length `width`
        m = m.float()
        return torch.maximum(F.max_pool2d(m, (1, width), 1, (0, r)), F.max_pool2d(m, (width, 1), 1, (r, 0)))

    return dilate(target > 0.5) * dilate(valid_pixels(target) & (target <= 0.5))


def edge_bce(logits: Tensor, target: Tensor, width: int = 7) -> Tensor:
    """Per-sample BCE on :func:`edge_band` pixels, summed and divided by the number of supervised pixels, shape (B,).

    IML-ViT's edge loss (``F.binary_cross_entropy_with_logits(weight=edge_mask)``, mean over all pixels),
    except that the mean runs over the supervised pixels of the image (the authors also count the padding
    of their 1024 x 1024 square).
    """
    valid = valid_pixels(target).float()
    band = edge_band(target, width) * valid
    loss = F.binary_cross_entropy_with_logits(logits, target.clamp(min=0), reduction="none") * band
    return loss.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)


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
    """Pixel BCE (or OHEM BCE) + Dice (+ edge BCE) on the main mask, the same on auxiliary masks, BCE on the image logit.

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
        edge_weight: weight of the edge BCE term (:func:`edge_bce`; IML-ViT: 20 with ``dice_weight=0``); 0 = off.
        edge_width: side of the cross-shaped kernel that draws the edge band (IML-ViT: 7).

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
        edge_weight: float = 0.0,
        edge_width: int = 7,
    ) -> None:
        super().__init__()
        if edge_weight and (edge_width < 1 or edge_width % 2 == 0):
            raise ValueError(f"edge_width must be a positive odd number, got {edge_width}")
        self.pos_weight = pos_weight
        self.edge_weight, self.edge_width = edge_weight, edge_width
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
        if self.edge_weight:
            total = total + self.edge_weight * (edge_bce(logits, target, self.edge_width) * sample_weight).mean()
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


# -- the losses of published baselines (IMLTask(loss=...)) ---------------------------------------


def _labels_of(target: Tensor, label: Tensor | None) -> Tensor:
    """Image labels (B,) as floats: ``label`` if given, else whether the target has manipulated pixels."""
    if label is not None:
        return label.float().view(-1)
    return (target > 0.5).flatten(1).any(1).float()


def squared_dice(logits: Tensor, target: Tensor, sample_weight: Tensor | None = None, smooth: float = 1.0) -> Tensor:
    """Batch Dice loss with squared terms in the denominator (V-Net), MVSS-Net's pixel and edge loss:
    ``1 - (2 sum(p y) + s) / (sum(p^2) + sum(y^2) + s)`` over every supervised pixel of the batch (authentic
    images included), ``p = sigmoid(logits)``; ``sample_weight`` weighs each sample's pixels."""
    w = valid_pixels(target).float()
    if sample_weight is not None:
        w = w * sample_weight.view(-1, *([1] * (logits.ndim - 1)))
    p = logits.sigmoid()
    y = target.clamp(min=0)
    return 1.0 - (2.0 * (w * p * y).sum() + smooth) / ((w * p * p).sum() + (w * y * y).sum() + smooth)


def square_edge_band(target: Tensor, width: int = 7) -> Tensor:
    """Boundary band of a target's manipulated region: dilation minus erosion with a ``width`` x ``width``
    square (float 0 / 1, IGNORE pixels counted as authentic)."""
    pos = (target > 0.5).float()
    pad = width // 2
    dil = F.max_pool2d(pos, width, stride=1, padding=pad)
    ero = -F.max_pool2d(-pos, width, stride=1, padding=pad)
    return (dil - ero)[..., : pos.shape[-2], : pos.shape[-1]]


class MVSSLoss(nn.Module):
    """MVSS-Net's multi-scale supervision (Chen et al., ICCV 2021, Sec. 3.3):
    ``alpha * L_seg + beta * L_clf + (1 - alpha - beta) * L_edge`` with ``alpha = 0.16``, ``beta = 0.04``.

    - ``L_seg``: :func:`squared_dice` of the segmentation map against the mask (pixel scale);
    - ``L_edge``: :func:`squared_dice` of the edge branch's logits (``output.edge_logits``, stride 4, from
      :class:`webiml.models.mvss_net.MVSSNet`) against the mask's :func:`square_edge_band` (``edge_width`` pixels at
      the target's resolution), max-pooled onto the edge map's grid (a cell is an edge if any of its pixels is);
    - ``L_clf``: binary cross-entropy of the image score, the global max of the probability map (GMP), against
      the image label (derived from the mask when the batch has none).

    The authors' training code is not released; the weights and Dice form follow the paper (and the
    IMDL-BenCo re-implementation, whose 7-pixel edge band is the ``edge_width`` default). The authors'
    edge masks are precomputed files (``data/edge_mask.zip``); webiml derives them from the mask.
    """

    def __init__(self, seg_weight: float = 0.16, image_weight: float = 0.04, edge_weight: float | None = None,
                 edge_width: int = 7, smooth: float = 1.0) -> None:
        super().__init__()
        self.seg_weight, self.image_weight = float(seg_weight), float(image_weight)
        self.edge_weight = 1.0 - self.seg_weight - self.image_weight if edge_weight is None else float(edge_weight)
        self.edge_width, self.smooth = int(edge_width), float(smooth)

    @property
    def config(self) -> dict[str, float | int]:
        return {"seg_weight": self.seg_weight, "image_weight": self.image_weight, "edge_weight": self.edge_weight,
                "edge_width": self.edge_width, "smooth": self.smooth}

    def forward(self, output, target: Tensor, label: Tensor | None = None, sample_weight: Tensor | None = None) -> dict[str, Tensor]:
        """Return ``{"loss", "loss_mask", "loss_edge", "loss_image"}`` (each term already weighted)."""
        edge_logits = getattr(output, "edge_logits", None)
        if edge_logits is None:
            raise ValueError("MVSSLoss needs the edge map of MVSS-Net (output.edge_logits); use IMLLoss for other models")
        mask = _resize_target(target, tuple(output.mask_logits.shape[-2:]))
        parts = {"loss_mask": self.seg_weight * squared_dice(output.mask_logits, mask, sample_weight, self.smooth)}
        size = tuple(edge_logits.shape[-2:])
        edge = F.adaptive_max_pool2d(square_edge_band(target, self.edge_width), size)
        valid = F.adaptive_max_pool2d(valid_pixels(target).float(), size)
        edge_target = torch.where(valid > 0, edge, torch.full_like(edge, -1.0))
        parts["loss_edge"] = self.edge_weight * squared_dice(edge_logits, edge_target, sample_weight, self.smooth)
        if self.image_weight:
            score = output.image_logits if output.image_logits is not None else output.mask_logits.flatten(1).amax(1)
            bce = F.binary_cross_entropy_with_logits(score, _labels_of(target, label), reduction="none")
            sw = sample_weight if sample_weight is not None else torch.ones_like(bce)
            parts["loss_image"] = self.image_weight * (bce * sw).mean()
        parts["loss"] = sum(parts.values())
        return parts


def scale_target(target: Tensor, size: tuple[int, int]) -> Tensor:
    """A target at a coarser ``size``: a pixel is manipulated when more than half of its (supervised) area is,
    IGNORE when less than half of its area is supervised (PSCC-Net's coarse masks: resize, then > 0.5)."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    valid = valid_pixels(target).float()
    area_valid = F.adaptive_avg_pool2d(valid, size)
    area_pos = F.adaptive_avg_pool2d(target.clamp(min=0) * valid, size)
    pos = (area_pos > 0.5 * area_valid).float()
    return torch.where(area_valid >= 0.5, pos, torch.full_like(pos, -1.0))


def balanced_bce(logits: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
    """PSCC-Net's mask loss: BCE with the batch's class balance, each manipulated pixel weighing
    ``0.5 / (share of manipulated pixels)`` and each authentic one ``0.5 / (share of authentic pixels)`` (so
    ``0.5 * mean over manipulated + 0.5 * mean over authentic``); plain mean BCE when the batch has no
    manipulated pixel. Shares are over the batch's supervised pixels."""
    valid = valid_pixels(target)
    t = target.clamp(min=0)
    pos = valid & (t > 0.5)
    neg = valid & ~(t > 0.5)
    n = valid.sum().clamp(min=1).float()
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos > 0:
        w = pos.float() * (0.5 * n / n_pos) + neg.float() * (0.5 * n / n_neg.clamp(min=1))
    else:
        w = valid.float()
    if sample_weight is not None:
        w = w * sample_weight.view(-1, *([1] * (logits.ndim - 1)))
    return (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * w).sum() / n


class PSCCLoss(nn.Module):
    """PSCC-Net's training loss (the authors' ``train.py``): the sum over the progressive masks (full, 1/2, 1/4,
    1/8 of the crop size: ``output.aux_mask_logits`` of :class:`webiml.models.pscc_net.PSCCNet` in training) of
    :func:`balanced_bce` against the target at each mask's size (:func:`scale_target`), plus the detection
    head's class-weighted cross-entropy (weights ``1 / authentic_ratio`` for authentic and
    ``1 / (1 - authentic_ratio)`` for manipulated images, the authors' sampling ratio 0.25; a weighted mean as
    ``nn.CrossEntropyLoss(weight=...)``). Two-class CE on ``(z0, z1)`` is BCE on ``image_logits = z1 - z0``.

    Without auxiliary outputs (a model in eval mode) the main mask alone is supervised.
    """

    def __init__(self, scale_weights: float | list[float] = 1.0, image_weight: float = 1.0, authentic_ratio: float = 0.25) -> None:
        super().__init__()
        if not 0.0 < float(authentic_ratio) < 1.0:
            raise ValueError(f"authentic_ratio must be in (0, 1), got {authentic_ratio}")
        self.scale_weights = scale_weights
        self.image_weight, self.authentic_ratio = float(image_weight), float(authentic_ratio)

    @property
    def config(self) -> dict[str, object]:
        return {"scale_weights": self.scale_weights, "image_weight": self.image_weight, "authentic_ratio": self.authentic_ratio}

    def forward(self, output, target: Tensor, label: Tensor | None = None, sample_weight: Tensor | None = None) -> dict[str, Tensor]:
        """Return ``{"loss", "loss_mask" (finest mask), "loss_aux" (the coarser ones), "loss_image"}``."""
        masks = list(output.aux_mask_logits) or [output.mask_logits]
        weights = self.scale_weights if isinstance(self.scale_weights, list | tuple) else [self.scale_weights] * len(masks)
        if len(weights) != len(masks):
            raise ValueError(f"scale_weights has {len(weights)} entries but the model returned {len(masks)} masks")
        terms = [w * balanced_bce(m, scale_target(target, tuple(m.shape[-2:])), sample_weight) for w, m in zip(weights, masks, strict=True)]
        parts = {"loss_mask": terms[0]}
        if len(terms) > 1:
            parts["loss_aux"] = sum(terms[1:])
        if output.image_logits is not None and self.image_weight:
            y = _labels_of(target, label)
            w = torch.where(y > 0.5, 1.0 / (1.0 - self.authentic_ratio), 1.0 / self.authentic_ratio)
            if sample_weight is not None:
                w = w * sample_weight
            ce = F.binary_cross_entropy_with_logits(output.image_logits, y, reduction="none")
            parts["loss_image"] = self.image_weight * (ce * w).sum() / w.sum().clamp(min=1e-12)
        parts["loss"] = sum(parts.values())
        return parts
