"""CAT-Net (``webiml convert cat-net CAT_full_v2.pth.tar OUT_DIR``): mjkwon2021/CAT-Net's trained weights
(``output/splicing_dataset/CAT_full/CAT_full_v2.pth.tar``, also ``CAT_full_v1.pth.tar``) are
``{"epoch", "best_p_mIoU", "state_dict", "optimizer"}`` as written by the authors' ``tools/train.py``; the
``state_dict`` has the keys of their ``CAT_Net`` module, which :class:`~webiml.models.cat_net.CATNet` keeps
unchanged (``conv1.weight``, ``stage4.2.fuse_layers.3.0.2.1.running_var``, ``dc_layer0_dil.0.weight``,
``last_layer.3.bias``...). The converter checks every key and shape against a preset (the authors'
``CAT_full.yaml`` is ``size="full"``) and saves the model.

The DCT-only model (``CAT_DCT_only.yaml``, ``DCT_only_v2.pth.tar``, ``network_DCT.py``) is a different
network and is refused with a clear message.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from webiml.convert._common import (
    ConversionError,
    build_model,
    few_keys,
    infer_preset,
    load_checkpoint,
    load_strict_and_save,
)
from webiml.models.cat_net import CAT_PRESETS, CATNet


def cat_net_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The authors' ``CAT_Net`` keys are webiml's: a copy, after checking it is the full (RGB + DCT) model."""
    if "last_layer.3.weight" not in state or "dc_layer0_dil.0.weight" not in state:
        raise ConversionError("not a CAT-Net checkpoint: it lacks last_layer.3.weight / dc_layer0_dil.0.weight "
                              f"(keys: {few_keys(list(state))})")
    if "conv1.weight" not in state:
        raise ConversionError("this is CAT-Net's DCT-only stream (CAT_DCT_only.yaml, network_DCT.py), which webiml does "
                              "not implement; convert the full model CAT_full_v2.pth.tar (or CAT_full_v1.pth.tar)")
    return dict(state)


def infer_cat_net_size(state: Mapping[str, Tensor]) -> str:
    """The :data:`CAT_PRESETS` size whose keys and shapes are exactly those of ``state``."""
    return infer_preset(lambda size: CATNet(size=size), list(CAT_PRESETS), state, "CAT-Net")


def convert_cat_net(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> CATNet:
    """Convert the authors' ``CAT_full_v2.pth.tar`` (or v1) into a webiml :class:`CATNet` directory and return
    the model. ``overrides`` are :class:`CATNet` arguments (``size`` is read from the weights)."""
    state = cat_net_official_to_webiml(load_checkpoint(checkpoint))
    config = {"size": infer_cat_net_size(state), **overrides}
    model = build_model(CATNet, config)
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model


__all__ = ["cat_net_official_to_webiml", "convert_cat_net", "infer_cat_net_size"]
