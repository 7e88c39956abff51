"""Optimiser parameter groups (weight decay, layer-wise lr decay) and warmup + cosine/poly schedules.

Kept instead of ``timm.optim.param_groups_layer_decay`` + ``timm.scheduler`` (measured with timm 1.0, see
``tests/test_samplers_optim.py::test_timm_layer_decay_and_schedulers_differ_from_ours_which_is_why_we_keep_ours``):
timm's layer decay needs a ``group_matcher()``, which our IML models and their timm ``features_only`` encoders
lack, so on SmpIML / Web-IML / APSC-Net it puts every parameter in one layer (no decay; ours: stem 0.43 ..
decoder 1.0 on web_iml_tiny at 0.9); timm's warmup spends step 0 at lr 0 where ours starts at ``lr / warmup``
(after warmup timm's cosine with ``warmup_prefix=True`` equals ours).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

# "stages.2", "blocks.2" (timm), "stages_2" (timm features_only), "layer2" (torchvision ResNet), ...
_STAGE = re.compile(r"(?:^|\.)(?:stages|blocks|layers|layer|stage|features)[._]?(\d+)(?:\.|$)")
# MiT / UniFormer name their stages from 1: "patch_embed2", "block2" / "blocks2", "norm2" are all stage 2.
_NUMBERED_STAGE = re.compile(r"(?:^|\.)(?:patch_embed|blocks?|norm)(\d+)(?:\.|$)")
ENCODER_NAMES = ("encoder", "backbone")


def encoder_layer_id(name: str, num_layers: int) -> int:
    """Depth index of an encoder parameter: 0 for the stem, ``k + 1`` for stage/block ``k``."""
    m = _STAGE.search(name)
    if m is None:
        return 0
    return min(int(m.group(1)) + 1, num_layers - 1)


def declared_encoder_scales(named: list[tuple[str, nn.Parameter]], encoders: tuple[str, ...], layer_decay: float,
                            num_stages: int = 4) -> dict[str, float]:
    """Layer decay over the encoders a model names in ``encoder_names`` (e.g. Mesorch's ConvNeXt and SegFormer,
    SparseViT's ``encoder_net``): stage ``k`` of ``num_stages`` (``stages.{k-1}`` in timm's naming, or
    ``patch_embed{k}`` / ``block{k}`` / ``blocks{k}`` / ``norm{k}`` in MiT / UniFormer's) gets
    ``decay ** (num_stages + 1 - k)``, stem parameters ``decay ** (num_stages + 1)``, the rest of the model 1."""
    scales = {}
    for name, _ in named:
        encoder = next((e for e in encoders if name.startswith(e + ".")), None)
        if encoder is None:
            continue
        rest = name[len(encoder) + 1:]
        # a number glued to the name ("blocks2") counts from 1; one after a separator ("stages.1") from 0
        one_based, zero_based = _NUMBERED_STAGE.search(rest), _STAGE.search(rest)
        stage = int(one_based.group(1)) if one_based else int(zero_based.group(1)) + 1 if zero_based else 0
        scales[name] = layer_decay ** (num_stages + 1 - min(stage, num_stages))
    return scales


def _encoder_scales(named: list[tuple[str, nn.Parameter]], enc: str, layer_decay: float) -> dict[str, float]:
    """Generic layer decay over the encoder: depth ``i`` of ``L`` gets ``decay ** (L - i)``. Encoder
    parameters without a stage index are the stem (depth 0) when they come before the first staged one,
    and top-level parts (output norms, e.g. ``norm0..3`` of APSC-Net's backbone) with ``lr_scale = 1``
    when they come after it, as mmseg's ConvNeXt rule treats the backbone's output norms."""
    enc_params = [n for n, _ in named if n.startswith(enc)]
    staged = [n for n in enc_params if _STAGE.search(n[len(enc):]) is not None]
    if not staged:
        return {}
    depth = max(encoder_layer_id(n[len(enc):], 10_000) for n in staged) + 1
    first = enc_params.index(staged[0])
    scales = {}
    for i, n in enumerate(enc_params):
        if _STAGE.search(n[len(enc):]) is None and i > first:
            scales[n] = 1.0
        else:
            scales[n] = layer_decay ** (depth - encoder_layer_id(n[len(enc):], depth))
    return scales


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float | None = None,
    encoder_names: tuple[str, ...] = ENCODER_NAMES,
) -> list[dict]:
    """Parameter groups for AdamW.

    No weight decay on biases and normalisation weights (1-D tensors), as mmcv's optimizer constructors.
    With ``layer_decay`` (e.g. 0.9):

    - a model with a ``layer_decay_ids()`` method (APSC-Net: the official stage-wise ConvNeXt ids) gives
      each parameter name a layer id ``i`` of ``L`` layers: ``lr_scale = decay ** (L - 1 - i)``;
    - a model that names its encoders (``encoder_names``, e.g. ``("convnext", "segformer")``) gets
      :func:`declared_encoder_scales`;
    - otherwise encoder parameters at depth ``i`` of ``L`` get ``lr_scale = decay ** (L - i)``
      (see :func:`_encoder_scales`) and everything outside the encoder (decoder, heads) keeps
      ``lr_scale = 1``. The encoder is the first submodule whose own name is one of ``encoder_names``
      (``encoder`` for smp / Web-IML, ``backbone`` for APSC-Net-like models).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scales: dict[str, float] = {}
    hook = getattr(model, "layer_decay_ids", None)
    if layer_decay is not None and callable(hook):
        ids, num_layers = hook()
        scales = {n: layer_decay ** (num_layers - 1 - ids[n]) for n, _ in named}
    elif layer_decay is not None and getattr(model, "encoder_names", ()):
        scales = declared_encoder_scales(named, tuple(model.encoder_names), layer_decay)
    elif layer_decay is not None:
        enc_names = [n for n, _ in model.named_modules() if n.split(".")[-1] in encoder_names]
        if enc_names:
            scales = _encoder_scales(named, enc_names[0] + ".", layer_decay)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in named:
        wd = 0.0 if p.ndim <= 1 or name.endswith(".bias") else weight_decay
        groups.setdefault((wd, scales.get(name, 1.0)), []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr_scale": s} for (wd, s), ps in groups.items()]


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0, poly_power: float = 1.0):
    """Multiplicative lr factor per step: linear warmup, then ``cosine``, ``poly`` or ``constant``."""
    if schedule not in ("cosine", "poly", "constant"):
        raise ValueError(f"unknown schedule {schedule!r}; choose cosine, poly or constant")
    total = max(total_steps, 1)

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(max(step - warmup_steps, 0) / max(total - warmup_steps, 1), 1.0)
        if schedule == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            decay = (1.0 - progress) ** poly_power
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay

    return factor


class ScaledLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR that also honours each group's ``lr_scale`` (layer-wise lr decay)."""

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [
            base * lmbda(self.last_epoch) * group.get("lr_scale", 1.0)
            for base, lmbda, group in zip(self.base_lrs, self.lr_lambdas, self.optimizer.param_groups, strict=True)
        ]


def adamw_with_schedule(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    total_steps: int,
    layer_decay: float | None = None,
    schedule: str = "cosine",
    warmup_steps: float = 0,
    min_lr_ratio: float = 0.0,
    poly_power: float = 1.0,
) -> dict:
    """Lightning ``configure_optimizers`` result: AdamW over :func:`param_groups`, stepped every optimiser
    step by warmup + schedule. ``warmup_steps`` below 1 is a fraction of ``total_steps``."""
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay, layer_decay), lr=lr)
    warmup = int(warmup_steps * total_steps) if 0 < warmup_steps < 1 else int(warmup_steps)
    scheduler = ScaledLambdaLR(optimizer, lr_lambda(schedule, total_steps, warmup, min_lr_ratio, poly_power))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
