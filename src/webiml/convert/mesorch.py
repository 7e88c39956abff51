"""Mesorch (``webiml convert mesorch mesorch-98.pth OUT_DIR``).

The authors' release (``scu-zjz/Mesorch`` README: ``ckpt_mesorch/mesorch-98.pth``) is an IMDL-BenCo training
checkpoint ``{"model": state dict, "optimizer", "epoch", "scaler", "args"}``; a bare state dict is read too.
Keys of ``MesorchFull`` / IMDL-BenCo's ``Mesorch`` are :class:`~webiml.models.mesorch.Mesorch`'s, except the
ConvNeXt classifier head (``convnext.head.*``), which the official model builds but never uses: it is dropped.
Mesorch-P (``mesorch_p.py``, no gate, five scale maps) is a different network and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from webiml.convert._common import ConversionError, build_model, few_keys, load_checkpoint, load_strict_and_save
from webiml.models.mesorch import MESORCH_PRESETS, Mesorch

PARTS = ("convnext.", "segformer.", "upsample.", "inverse.", "gate.")
UNUSED = ("convnext.head.", "convnext.norm_pre.")
"""Official keys without a counterpart: the ConvNeXt classifier (and its pre-head norm, an identity there)."""


def mesorch_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keep the official Mesorch keys webiml uses (unchanged), drop the unused ConvNeXt head; anything else
    is a :class:`ConversionError`."""
    out: dict[str, Tensor] = {}
    unknown = []
    for k, v in state.items():
        if k.startswith(UNUSED):
            continue
        if k.startswith(PARTS):
            out[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not part of Mesorch (expected convnext.*, segformer.*, upsample.*, "
                              f"inverse.*, gate.*): {few_keys(unknown)}")
    if "gate.conv1.weight" not in out and "inverse.4.weight" in out:
        raise ConversionError("this is a Mesorch-P checkpoint (no gate); only Mesorch (MesorchFull) converts")
    return out


def infer_mesorch_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """:class:`Mesorch` arguments that reproduce the shapes of a (webiml-keyed) state dict.

    Depths and widths of both encoders, the MiT's spatial-reduction ratios and the gate's width are read off
    the tensors; the MiT's head counts are not stored in weights: every MiT variant uses 64-channel heads, so
    ``max(1, width // 64)`` heads per stage is assumed (override ``mit_heads`` otherwise). Values equal to the
    ``base`` preset are left out, so the authors' checkpoint converts to ``{"size": "base"}``.
    """

    def need(key: str) -> Tensor:
        if key not in state:
            raise ConversionError(f"missing key {key!r}: not a Mesorch checkpoint, or an incomplete one")
        return state[key]

    def count(pattern: str) -> int:
        found = {int(m[1]) for k in state if (m := re.match(pattern, k))}
        return max(found) + 1 if found else 0

    conv_dims = [int(need(f"convnext.stages.{i}.blocks.0.conv_dw.weight").shape[0]) for i in range(4)]
    conv_depths = [count(rf"^convnext\.stages\.{i}\.blocks\.(\d+)\.") for i in range(4)]
    mit_dims = [int(need(f"segformer.patch_embed{i + 1}.proj.weight").shape[0]) for i in range(4)]
    mit_depths = [count(rf"^segformer\.block{i + 1}\.(\d+)\.") for i in range(4)]
    mit_sr = [int(state[f"segformer.block{i + 1}.0.attn.sr.weight"].shape[-1]) if f"segformer.block{i + 1}.0.attn.sr.weight" in state else 1
              for i in range(4)]
    found: dict[str, Any] = dict(conv_depths=conv_depths, conv_dims=conv_dims, mit_depths=mit_depths, mit_dims=mit_dims,
                                 mit_heads=[max(1, d // 64) for d in mit_dims], mit_sr_ratios=mit_sr,
                                 gate_width=int(need("gate.conv1.weight").shape[0]))
    base = MESORCH_PRESETS["base"]
    cfg: dict[str, Any] = {"size": "base"}
    for k, v in found.items():
        if v != (list(base[k]) if isinstance(v, list) else base[k]):
            cfg[k] = v
    return cfg


def convert_mesorch(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> Mesorch:
    """Convert the authors' Mesorch checkpoint into a webiml model directory and return the model.

    ``overrides`` are :class:`Mesorch` arguments the weights cannot tell (e.g. ``input_size=None``, ``mit_heads``).
    """
    state = mesorch_official_to_webiml(load_checkpoint(checkpoint))
    config = {**infer_mesorch_config(state), **overrides}
    model = build_model(Mesorch, config)
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model
