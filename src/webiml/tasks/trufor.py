"""TruFor's training phases as a webiml task: :class:`TruForLoss` (the authors' criteria on webiml outputs) and
:class:`TruForTask` (:class:`~webiml.tasks.iml.IMLTask` with that loss, the phase's frozen parts and,
optionally, the authors' SGD + poly schedule).

The authors (grip-unina/TruFor ``TruFor_train_test``: ``lib/core/criterion*.py``, ``lib/config/trufor_ph*.yaml``)
train in three phases:

1. **Noiseprint++** alone, self-supervised on pristine photos (no code released; webiml converts the
   released extractor, ``webiml convert noiseprint++``, and keeps it frozen).
2. **Localization** (``trufor_ph2.yaml``): encoder + localization head, Noiseprint++ frozen; loss
   ``0.3 * CE + 0.7 * Dice`` (``dice_entropy``): cross-entropy with class weights 0.5 (pristine) / 2.5
   (forged), averaged over all supervised pixels of the batch with those weights, and the Dice loss
   ``1 - mean_b (2 sum p t) / (sum p^2 + sum t^2 + 1e-5)`` of the forged-class probability per image
   (``LOSS.SMOOTH = 0``: an image without forged pixels always contributes 1 and no gradient).
3. **Confidence and detection** (``trufor_ph3.yaml``): only the confidence and detection heads train;
   loss ``1.0 * MSE(conf, TCP) + 0.5 * BCE(det)``. TCP, the true-class probability, is the localization
   probability of the forged class inside the ground truth eroded by 15x15 and of the pristine class
   outside it dilated by 11x11; the MSE covers those pixels only (the boundary band is left out). The
   detection target is "forged" when more than 3 pixels are forged; its BCE weighs forged images 0.5/0.7
   and pristine ones 0.5/0.3 (mean over the batch).

Both officially run SGD (lr 0.005, momentum 0.9, weight decay 5e-4 on weights, not on biases and norms) with
a poly schedule (power 0.9) over 100 epochs of 512x512 crops, batch 18 (``optimizer="sgd"`` here).

webiml's masks carry :data:`webiml.data.masks.IGNORE` (-1) like the authors' ``IGNORE_LABEL = -1``; forged
means ``mask > 0.5``. Per-sample weights of webiml datasets multiply each sample's terms (all 1: the
authors' losses). The authors' 2-class logits ``(z0, z1)`` appear as ``z1 - z0`` (``mask_logits``):
softmax cross-entropy on the pair is binary cross-entropy on the difference, ``softmax(z)[1] = sigmoid(z1 - z0)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webiml.data.transforms import GpuAugment
from webiml.models.trufor import TruFor
from webiml.tasks.iml import IMLTask
from webiml.tasks.optim import ScaledLambdaLR, lr_lambda, param_groups

__all__ = ["PHASE_FROZEN", "TruForLoss", "TruForTask", "tcp_targets"]

PHASE_FROZEN: dict[int, tuple[str, ...]] = {
    2: ("dncnn", "decode_head_conf", "detection"),
    3: ("dncnn", "backbone", "decode_head"),
}
"""The parts of :class:`TruFor` kept fixed in each phase (the authors' ``FIX_MODULES``; in phase 2 their model
has no confidence / detection heads at all, webiml's keeps them untouched)."""


def tcp_targets(forged: Tensor, erode: int = 15, dilate: int = 11) -> tuple[Tensor, Tensor]:
    """``(pristine, forged)`` regions of the confidence target: outside the forged mask dilated by
    ``dilate`` x ``dilate``, inside it eroded by ``erode`` x ``erode`` (``forged``: (B, 1, H, W) in {0, 1})."""
    inside = 1 - F.max_pool2d(1 - forged, erode, stride=1, padding=(erode - 1) // 2)
    outside = 1 - F.max_pool2d(forged, dilate, stride=1, padding=(dilate - 1) // 2)
    return outside, inside


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


class TruForLoss(nn.Module):
    """The authors' phase-2 (localization) or phase-3 (confidence + detection) loss; see the module docstring.

    ``forward(output, target, label, sample_weight)`` returns ``{"loss": ..., "loss_ce", "loss_dice"}``
    (phase 2) or ``{"loss": ..., "loss_conf", "loss_det"}`` (phase 3). ``label`` is not used: the detection
    target comes from the mask, as in the authors' code.
    """

    def __init__(self, phase: int = 2, ce_weight: float = 0.3, dice_weight: float = 0.7,
                 class_weights: Sequence[float] = (0.5, 2.5), dice_smooth: float = 0.0, dice_exponent: float = 2.0,
                 conf_weight: float = 1.0, det_weight: float = 0.5, erode: int = 15, dilate: int = 11,
                 min_forged_pixels: int = 3) -> None:
        super().__init__()
        if phase not in PHASE_FROZEN:
            raise ValueError(f"TruFor's trainable phases are {sorted(PHASE_FROZEN)} (phase 1, Noiseprint++, is not "
                             f"trained by webiml), got {phase!r}")
        self.phase = phase
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.class_weights = (float(class_weights[0]), float(class_weights[1]))
        self.dice_smooth, self.dice_exponent = dice_smooth, dice_exponent
        self.conf_weight, self.det_weight = conf_weight, det_weight
        self.erode, self.dilate, self.min_forged_pixels = erode, dilate, min_forged_pixels

    def localization(self, logits: Tensor, target: Tensor, sample_weight: Tensor) -> dict[str, Tensor]:
        """Weighted cross-entropy and Dice (exponent 2) of the forged class."""
        valid = (target >= 0).to(logits.dtype)
        forged = (target > 0.5).to(logits.dtype)
        sw = sample_weight.view(-1, 1, 1, 1)
        w0, w1 = self.class_weights
        ce = _weighted_mean(F.binary_cross_entropy_with_logits(logits, forged, reduction="none"), (w0 + (w1 - w0) * forged) * valid * sw)
        p = logits.sigmoid()
        e = self.dice_exponent
        num = 2 * (p * forged * valid).flatten(1).sum(1) + self.dice_smooth
        den = ((p.pow(e) + forged.pow(e)) * valid).flatten(1).sum(1) + max(self.dice_smooth, 1e-5)
        dice = 1 - _weighted_mean(num / den, sample_weight) if self.dice_weight else logits.new_zeros(())
        return {"loss_ce": ce, "loss_dice": dice, "loss": self.ce_weight * ce + self.dice_weight * dice}

    def confidence(self, logits: Tensor, conf_logits: Tensor, det_logits: Tensor | None, target: Tensor,
                   sample_weight: Tensor) -> dict[str, Tensor]:
        """MSE of the confidence against the (detached) true-class probability, weighted BCE of detection."""
        forged = ((target > 0.5) & (target >= 0)).to(logits.dtype)
        outside, inside = tcp_targets(forged, self.erode, self.dilate)
        p = logits.detach().sigmoid()
        tcp = p * inside + (1 - p) * outside
        supervised = ((target >= 0) & ((inside > 0) | (outside > 0))).to(logits.dtype) * sample_weight.view(-1, 1, 1, 1)
        conf = _weighted_mean((conf_logits.sigmoid() - tcp) ** 2, supervised)
        parts = {"loss_conf": conf}
        total = self.conf_weight * conf
        if det_logits is not None:
            y = (forged.flatten(1).sum(1) > self.min_forged_pixels).to(det_logits.dtype)
            w = y * 0.5 / 0.7 + (1 - y) * 0.5 / 0.3
            det = F.binary_cross_entropy_with_logits(det_logits, y, weight=w * sample_weight)
            parts["loss_det"] = det
            total = total + self.det_weight * det
        parts["loss"] = total
        return parts

    def forward(self, output: Any, target: Tensor, label: Tensor | None = None,
                sample_weight: Tensor | None = None) -> dict[str, Tensor]:
        logits = output.mask_logits
        if target.shape[-2:] != logits.shape[-2:]:  # as the authors: the prediction is resized to the label
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        if sample_weight is None:
            sample_weight = target.new_ones(target.shape[0])
        if self.phase == 2:
            return self.localization(logits, target, sample_weight)
        conf_logits = getattr(output, "confidence_logits", None)
        if conf_logits is None:
            raise ValueError("TruFor phase 3 needs a model with a confidence head (confidence_logits)")
        if conf_logits.shape[-2:] != target.shape[-2:]:
            conf_logits = F.interpolate(conf_logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        return self.confidence(logits, conf_logits, output.image_logits, target, sample_weight)


class TruForTask(IMLTask):
    """:class:`~webiml.tasks.iml.IMLTask` for :class:`TruFor` with the authors' phase loss and frozen parts.

    Args:
        net: the TruFor model (phase 2: Noiseprint++ loaded, e.g. ``noiseprint_weights``, and ImageNet MiT
            weights, ``backbone_weights``; phase 3: start from the phase-2 result with ``init_weights``).
        phase: 2 (localization) or 3 (confidence + detection); sets the loss and :data:`PHASE_FROZEN`.
        optimizer: ``"sgd"`` (the authors: momentum 0.9, weight decay on weights only) or ``"adamw"`` (webiml's).
        lr, weight_decay, schedule, poly_power, warmup_steps, min_lr_ratio: as :class:`IMLTask`; the defaults
            are the authors' (0.005, 5e-4, poly 0.9, no warmup).
        ce_weight, dice_weight, class_weights, conf_weight, det_weight: the loss weights (:class:`TruForLoss`).
        gpu_augment, threshold, init_weights, on_nonfinite: as :class:`IMLTask`.
    """

    def __init__(
        self,
        net: TruFor | None = None,
        phase: int = 2,
        optimizer: str = "sgd",
        lr: float = 0.005,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        schedule: str = "poly",
        poly_power: float = 0.9,
        warmup_steps: float = 0,
        min_lr_ratio: float = 0.0,
        ce_weight: float = 0.3,
        dice_weight: float = 0.7,
        class_weights: tuple[float, float] = (0.5, 2.5),
        conf_weight: float = 1.0,
        det_weight: float = 0.5,
        gpu_augment: GpuAugment | None = None,
        threshold: float = 0.5,
        init_weights: str | None = None,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__(net=net, lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_steps=warmup_steps,
                         min_lr_ratio=min_lr_ratio, poly_power=poly_power, gpu_augment=gpu_augment, threshold=threshold,
                         init_weights=init_weights, on_nonfinite=on_nonfinite)
        if not isinstance(self.net, TruFor):
            raise TypeError(f"TruForTask trains a TruFor model, got {type(self.net).__name__}")
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        self.criterion = TruForLoss(phase, ce_weight, dice_weight, class_weights, conf_weight=conf_weight, det_weight=det_weight)
        if phase == 3 and self.net.decode_head_conf is None:
            raise ValueError("TruFor phase 3 trains the confidence head: build the net with confidence_head=True")
        self.net.set_frozen(PHASE_FROZEN[phase])

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        if hp.optimizer == "adamw":
            return super().configure_optimizers()
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        optimizer = torch.optim.SGD(param_groups(self.net, hp.weight_decay), lr=hp.lr, momentum=hp.momentum)
        warmup = int(hp.warmup_steps * total) if 0 < hp.warmup_steps < 1 else int(hp.warmup_steps)
        scheduler = ScaledLambdaLR(optimizer, lr_lambda(hp.schedule, total, warmup, hp.min_lr_ratio, hp.poly_power))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
