"""Adaptive CFA (``webiml convert adaptive-cfa pretrained.pt OUT_DIR``): qbammey/adaptive_cfa_forensics'
``src/models/*.pt`` are bare state dicts of ``FullNet``; ``spatial.*``, ``pixelwise.*`` and ``blockwise.*``
keep their names, ``auxiliary.2.*`` (the auxiliary head) becomes ``auxiliary_head.*``, and ``auxiliary.0.*`` /
``auxiliary.1.*`` (the same modules as ``spatial`` / ``pixelwise``, saved twice) must equal them and are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from webiml.convert._common import ConversionError, build_model, few_keys, load_checkpoint, load_strict_and_save
from webiml.models.adaptive_cfa import AdaptiveCFA

_CFA_SHARED = {"auxiliary.0.": "spatial.", "auxiliary.1.": "pixelwise."}


def adaptive_cfa_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official adaptive-CFA ``FullNet`` state dict to :class:`AdaptiveCFA` keys (see the module
    docstring); a shared copy that differs from its module, or an unknown key, is a :class:`ConversionError`."""
    out: dict[str, Tensor] = {}
    unknown, differ = [], []
    for k, v in state.items():
        if k.startswith(("spatial.", "pixelwise.", "blockwise.")):
            out[k] = v
        elif k.startswith("auxiliary.2."):
            out["auxiliary_head." + k[len("auxiliary.2."):]] = v
        elif shared := next((p for p in _CFA_SHARED if k.startswith(p)), None):
            twin = _CFA_SHARED[shared] + k[len(shared):]
            if twin not in state or not torch.equal(state[twin], v):
                differ.append(k)
        else:
            unknown.append(k)
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not part of the adaptive-CFA FullNet: {few_keys(unknown)}")
    if differ:
        raise ConversionError(f"{len(differ)} auxiliary.0/1 entries differ from (or lack) their spatial/pixelwise twin: {few_keys(differ)}")
    return out


def convert_adaptive_cfa(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> AdaptiveCFA:
    """Convert an adaptive-CFA ``.pt`` (``pretrained.pt``, ``adapted_to_*.pt``) into a webiml :class:`AdaptiveCFA`
    directory and return the model. ``overrides`` are :class:`AdaptiveCFA` arguments (``block_size``)."""
    state = adaptive_cfa_official_to_webiml(load_checkpoint(checkpoint))
    model = build_model(AdaptiveCFA, overrides)
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model
