"""TruFor (``webiml convert trufor trufor.pth.tar OUT_DIR``): grip-unina/TruFor's released ``trufor.pth.tar``
(in ``TruFor_weights.zip``) is ``{"epoch", "state_dict", ...}`` (the authors' ``train.py`` also stores
``best_value``, ``best_key``, ``optimizer``); a bare state dict is accepted too. The keys (``dncnn.*``,
``backbone.*``, ``decode_head.*``, ``decode_head_conf.*``, ``detection.*``) are those of
:class:`~webiml.models.trufor.TruFor` unchanged, possibly prefixed ``module.``. The backbone size (the
official ``mit_b0`` .. ``mit_b5``), the decoder width and which heads exist (a phase-2 checkpoint has no
confidence and detection heads) are read off the keys and shapes; every tensor is checked and loaded strictly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from webiml.convert._common import ConversionError, build_model, few_keys, load_checkpoint, load_strict_and_save
from webiml.models.trufor import MODULES, TRUFOR_PRESETS, TruFor

_RE_BLOCK = re.compile(r"^backbone\.block([1-4])\.(\d+)\.")


def trufor_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The official TruFor state dict with webiml's names: the same keys; anything outside TruFor's five
    parts is a :class:`ConversionError`."""
    if not any(k.startswith("backbone.patch_embed1.") for k in state):
        hint = " (a Noiseprint++ file: use `webiml convert noiseprint++`)" if any(k.startswith(("0.", "dncnn.0.")) for k in state) else ""
        raise ConversionError(f"not a TruFor checkpoint: no backbone.patch_embed1.* keys{hint}; keys: {few_keys(list(state))}")
    unknown = [k for k in state if k.split(".", 1)[0] not in MODULES]
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not part of TruFor ({', '.join(MODULES)}): {few_keys(unknown)}")
    return dict(state)


def infer_trufor_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """:class:`TruFor` arguments that fit ``state``: the preset whose widths and depths match (or explicit
    ``embed_dims`` / ``depths``), the decoder width, and ``confidence_head`` / ``detection_head``."""
    try:
        dims = tuple(int(state[f"backbone.patch_embed{i}.proj.weight"].shape[0]) for i in range(1, 5))
        decoder_dim = int(state["decode_head.linear_c4.proj.weight"].shape[0])
    except KeyError as err:
        raise ConversionError(f"not a TruFor checkpoint: no {err.args[0]}") from None
    depths = [0, 0, 0, 0]
    for k in state:
        if m := _RE_BLOCK.match(k):
            depths[int(m[1]) - 1] = max(depths[int(m[1]) - 1], int(m[2]) + 1)
    cfg: dict[str, Any] = {"confidence_head": any(k.startswith("decode_head_conf.") for k in state),
                           "detection_head": any(k.startswith("detection.") for k in state)}
    size = next((name for name, p in TRUFOR_PRESETS.items()
                 if tuple(p["embed_dims"]) == dims and tuple(p["depths"]) == tuple(depths)), None)
    if size is None:
        size = "b2"
        cfg.update(embed_dims=list(dims), depths=depths)
    cfg["size"] = size
    if decoder_dim != TRUFOR_PRESETS[size]["decoder_dim"]:
        cfg["decoder_dim"] = decoder_dim
    return cfg


def convert_trufor(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> TruFor:
    """Convert TruFor's ``trufor.pth.tar`` (or a phase-2 ``best.pth.tar``, or a bare state dict) into a webiml
    :class:`TruFor` directory and return the model. ``overrides`` are :class:`TruFor` arguments (e.g.
    ``conf_head_bn_eps=1e-5``, the authors' inference container)."""
    state = trufor_official_to_webiml(load_checkpoint(checkpoint))
    model = build_model(TruFor, {**infer_trufor_config(state), **overrides})
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model
