"""Losses: ignore handling, OHEM selection and sample weights on hand-made cases."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from webiml.data.masks import IGNORE
from webiml.models.base import IMLOutput
from webiml.tasks.losses import IMLLoss, masked_bce, ohem_bce, soft_dice


def test_masked_bce_ignores_ignore_pixels() -> None:
    logits = torch.tensor([[[[2.0, -1.0], [100.0, -100.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [IGNORE, IGNORE]]]])
    expected = (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(-1.0))) / 2
    assert torch.allclose(masked_bce(logits, target), expected.view(1))


def test_all_ignored_sample_gives_zero_not_nan() -> None:
    logits = torch.randn(1, 1, 4, 4)
    target = torch.full((1, 1, 4, 4), IGNORE)
    assert masked_bce(logits, target).item() == 0.0
    assert torch.isfinite(soft_dice(logits, target)).all()


def test_dice_perfect_and_wrong() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    good = (target * 2 - 1) * 50
    assert soft_dice(good, target).item() < 1e-3
    assert soft_dice(-good, target).item() > 0.8


def test_ohem_keeps_only_hard_pixels() -> None:
    # Four pixels, all labelled positive; probabilities 0.95, 0.9, 0.6, 0.2 of the true class.
    probs = torch.tensor([0.95, 0.9, 0.6, 0.2])
    logits = torch.log(probs / (1 - probs)).view(1, 1, 2, 2)
    target = torch.ones(1, 1, 2, 2)
    loss = ohem_bce(logits, target, thresh=0.7, min_kept=1)
    expected = (-math.log(0.6) - math.log(0.2)) / 2
    assert abs(loss.item() - expected) < 1e-5


def test_ohem_min_kept_raises_threshold() -> None:
    probs = torch.tensor([0.95, 0.9, 0.6, 0.2])
    logits = torch.log(probs / (1 - probs)).view(1, 1, 2, 2)
    target = torch.ones(1, 1, 2, 2)
    loss = ohem_bce(logits, target, thresh=0.7, min_kept=3)
    expected = (-math.log(0.9) - math.log(0.6) - math.log(0.2)) / 3
    assert abs(loss.item() - expected) < 1e-5


def test_ohem_negative_class_and_ignore() -> None:
    # Negative pixel with p=0.8 (true-class prob 0.2) is hard; ignored pixel never counts.
    logits = torch.tensor([math.log(0.8 / 0.2), -10.0, 10.0]).view(1, 1, 1, 3)
    target = torch.tensor([0.0, 0.0, IGNORE]).view(1, 1, 1, 3)
    loss = ohem_bce(logits, target, thresh=0.7, min_kept=1)
    assert abs(loss.item() + math.log(0.2)) < 1e-5


def test_sample_weights_scale_loss() -> None:
    crit = IMLLoss(dice_weight=0.0, image_weight=0.0)
    out = IMLOutput(mask_logits=torch.zeros(2, 1, 4, 4))
    target = torch.zeros(2, 1, 4, 4)
    base = crit(out, target)["loss"]
    weighted = crit(out, target, sample_weight=torch.tensor([0.0, 0.0]))["loss"]
    assert base.item() > 0 and weighted.item() == 0.0


def test_aux_and_image_terms() -> None:
    crit = IMLLoss(aux_weights=[0.5, 0.25])
    out = IMLOutput(
        mask_logits=torch.zeros(2, 1, 8, 8, requires_grad=True),
        image_logits=torch.zeros(2, requires_grad=True),
        aux_mask_logits=[torch.zeros(2, 1, 4, 4, requires_grad=True), torch.zeros(2, 1, 2, 2, requires_grad=True)],
    )
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, :4] = 1
    parts = crit(out, target, label=torch.tensor([1.0, 0.0]))
    assert set(parts) == {"loss", "loss_mask", "loss_aux", "loss_image"}
    assert torch.allclose(parts["loss"], parts["loss_mask"] + parts["loss_aux"] + parts["loss_image"])
    parts["loss"].backward()
    assert all(a.grad is not None for a in out.aux_mask_logits)


def test_dice_skips_authentic_samples() -> None:
    """Dice only counts samples with manipulated pixels; authentic samples are left to BCE."""
    crit = IMLLoss(bce_weight=0.0, dice_weight=1.0, image_weight=0.0)
    target = torch.zeros(2, 1, 4, 4)
    target[0, :, :2] = 1
    logits = (target * 2 - 1) * 50
    logits[1] = 5.0  # the authentic sample predicts "manipulated" everywhere: not Dice's business
    assert crit(IMLOutput(mask_logits=logits), target)["loss"].item() < 1e-3
    all_authentic = torch.zeros(2, 1, 4, 4)
    assert crit(IMLOutput(mask_logits=logits), all_authentic)["loss"].item() == 0.0


def test_pos_weight_scales_positive_pixels_only() -> None:
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]]])
    base = masked_bce(logits, target)
    weighted = masked_bce(logits, target, pos_weight=3.0)
    assert torch.allclose(weighted, base * 2)  # (3*ln2 + ln2) / 2 == 2 * (ln2 + ln2) / 2
