"""MVSS-Net (``webiml convert mvss-net mvssnet_casia.pt OUT_DIR``): the authors' released files
(``mvssnet_casia.pt``, ``mvssnet_defacto.pt``, Google Drive / Baidu links in dong03/MVSS-Net's README) are bare
state dicts of ``get_mvss(backbone='resnet50', nclass=1, sobel=True, constrain=True)``, loaded strictly by
their ``inference.py``; a ``module.`` prefix (DataParallel) is removed.

Renaming (:func:`mvss_key_to_webiml`): the RGB ResNet ``model.*`` -> ``encoder.*``, the noise ResNet
``noise_extractor.model.*`` -> ``noise_encoder.*`` (timm's ResNet has the same parameter names below these
prefixes); ``erb_db_*``, ``erb_trans_*``, ``sobel_x*``, ``sobel_y*``, ``constrain_conv.kernel`` and ``head.*``
keep their names. The two ResNets' ImageNet classifiers (``model.fc.*``, ``noise_extractor.model.fc.*``),
which the authors' forward never uses, are dropped. Stage depths and widths are read off the tensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from webiml.convert._common import ConversionError, build_model, few_keys, load_checkpoint, load_strict_and_save
from webiml.models.mvss_net import MVSSNet

_KEPT = re.compile(r"^(?:erb_db_[1-4]|erb_trans_[1-3]|sobel_[xy][1-4]|head)\.|^constrain_conv\.kernel$")
_PREFIXES = (("noise_extractor.model.", "noise_encoder."), ("model.", "encoder."))
_UNUSED = re.compile(r"^(?:noise_extractor\.)?model\.fc\.(?:weight|bias)$")
_DEFAULT_LAYERS = [3, 4, 6, 3]
_DEFAULT_CHANNELS = [64, 128, 256, 512]


def mvss_key_to_webiml(key: str) -> str | None:
    """webiml name of an official MVSS-Net key; ``""`` for the unused classifiers (dropped); ``None`` if the
    key is not part of MVSS-Net."""
    if _UNUSED.match(key):
        return ""
    if _KEPT.match(key):
        return key
    for official, ours in _PREFIXES:
        if key.startswith(official):
            return ours + key[len(official):]
    return None


def webiml_key_to_mvss(key: str) -> str:
    """Official name of a webiml :class:`MVSSNet` key (the inverse of :func:`mvss_key_to_webiml`)."""
    if _KEPT.match(key):
        return key
    for official, ours in _PREFIXES:
        if key.startswith(ours):
            return official + key[len(ours):]
    raise KeyError(f"{key} has no official MVSS-Net counterpart")


def mvss_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official MVSS-Net state dict to webiml's keys; unknown keys are a :class:`ConversionError`."""
    out: dict[str, Tensor] = {}
    unknown = []
    for k, v in state.items():
        new = mvss_key_to_webiml(k)
        if new is None:
            unknown.append(k)
        elif new:
            out[new] = v
    if unknown:
        raise ConversionError(
            f"{len(unknown)} keys are not part of MVSS-Net (expected model.*, noise_extractor.model.*, erb_*, sobel_*, "
            f"constrain_conv.kernel, head.*): {few_keys(unknown)}")
    return out


def webiml_to_mvss_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a webiml :class:`MVSSNet` state dict to the official keys (without the unused classifiers)."""
    return {webiml_key_to_mvss(k): v for k, v in state.items()}


def infer_mvss_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """:class:`MVSSNet` arguments reproducing the shapes of a (webiml-keyed) state dict; the authors'
    ResNet-50 depths / widths are left out (they are the defaults)."""
    layers, channels = [], []
    for i in range(1, 5):
        blocks = {int(m[1]) for k in state if (m := re.match(rf"^encoder\.layer{i}\.(\d+)\.conv1\.weight$", k))}
        key = f"encoder.layer{i}.0.conv1.weight"
        if not blocks or key not in state:
            raise ConversionError(f"missing {webiml_key_to_mvss(key)!r}: not an MVSS-Net checkpoint, or an incomplete one")
        layers.append(max(blocks) + 1)
        channels.append(int(state[key].shape[0]))
    cfg: dict[str, Any] = {}
    if layers != _DEFAULT_LAYERS:
        cfg["layers"] = layers
    if channels != _DEFAULT_CHANNELS:
        cfg["channels"] = channels
    return cfg


def convert_mvss_net(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> MVSSNet:
    """Convert the authors' MVSS-Net state dict into a webiml :class:`MVSSNet` directory and return the model.

    ``overrides`` are :class:`MVSSNet` arguments weights cannot tell (``input_size``: 512 as the authors'
    inference, ``None`` for native resolution).
    """
    state = mvss_official_to_webiml(load_checkpoint(checkpoint))
    config = {**infer_mvss_config(state), **overrides}
    model = build_model(MVSSNet, config)
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model
