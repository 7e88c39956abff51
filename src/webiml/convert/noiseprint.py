"""Noiseprint++ (``webiml convert noiseprint++ noiseprint++.th OUT_DIR``): grip-unina/TruFor's
``pretrained_models/noiseprint++/noiseprint++.th`` is ``{"network": <state dict>, "global_step": ...}``
with the keys of TruFor's ``make_net`` Sequential (``0.weight``, ``0.bias``, ``2.weight``, ``3.running_mean``,
..., ``47.bias``); they become ``dncnn.<key>`` of :class:`~webiml.models.noiseprint.NoiseprintPP`. TruFor's
full checkpoints (``dncnn.*`` among the other modules) are accepted too: only ``dncnn.*`` is taken.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from webiml.convert._common import ConversionError, few_keys, load_checkpoint, load_strict_and_save
from webiml.models.noiseprint import NoiseprintPP

_RE_DNCNN = re.compile(r"^(?:dncnn\.)?(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def noiseprint_pp_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename TruFor's Noiseprint++ keys (``N.param``, or ``dncnn.N.param`` inside a full TruFor checkpoint)
    to :class:`NoiseprintPP` keys (``dncnn.N.param``); other keys of a full TruFor checkpoint are dropped,
    anything else is a :class:`ConversionError`."""
    if any(k.startswith("dncnn.") for k in state):
        state = {k: v for k, v in state.items() if k.startswith("dncnn.")}
    out: dict[str, Tensor] = {}
    unknown = []
    for k, v in state.items():
        if m := _RE_DNCNN.match(k):
            out[f"dncnn.{m[1]}.{m[2]}"] = v
        else:
            unknown.append(k)
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not Noiseprint++ DnCNN layers (expected N.weight, N.bias, "
                              f"N.running_mean, ...): {few_keys(unknown)}")
    return out



def convert_noiseprint_pp(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> NoiseprintPP:
    """Convert TruFor's ``noiseprint++.th`` into a webiml :class:`NoiseprintPP` directory and return the model.

    ``overrides`` are :class:`NoiseprintPP` arguments (e.g. ``normalize_residual=False``).
    """
    state = noiseprint_pp_official_to_webiml(load_checkpoint(checkpoint))
    model = NoiseprintPP(**overrides)
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model
