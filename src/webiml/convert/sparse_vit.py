"""SparseViT (``webiml convert sparse-vit checkpoint.pth OUT_DIR``): scu-zjz/SparseViT's trained weights.

The authors' README links one checkpoint (Google Drive, placed as ``checkpoint/checkpoint.pth``), which their
``main_test.py`` reads as ``torch.load(path)['model']``; their ``utils/misc.py save_model`` writes
``{"model", "optimizer", "epoch", "scaler", "args"}``, ``args`` being the training ``argparse.Namespace``. The
``model`` entry is the state dict of their ``SparseViT_Mul`` (``encoder_net.*`` backbone, ``lmu.*`` LFF head),
whose keys :class:`~webiml.models.sparse_vit.SparseViT` keeps unchanged. The converter reads the file with
``torch.load(weights_only=True)``, allowing ``argparse.Namespace`` (a plain attribute container) besides
tensors and containers, checks every key and shape against a preset (``size="base"`` is the authors' model) and
saves the model.
"""

from __future__ import annotations

import argparse
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
from webiml.models.sparse_vit import SPARSE_VIT_PRESETS, SparseViT


def sparse_vit_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The authors' ``SparseViT_Mul`` keys are webiml's: a copy, after checking it is that model."""
    if "lmu.conv_last.weight" not in state or "encoder_net.patch_embed1.proj.weight" not in state:
        raise ConversionError("not a SparseViT checkpoint: it lacks lmu.conv_last.weight / encoder_net.patch_embed1.proj.weight "
                              f"(keys: {few_keys(list(state))})")
    return dict(state)


def infer_sparse_vit_size(state: Mapping[str, Tensor]) -> str:
    """The :data:`SPARSE_VIT_PRESETS` size whose keys and shapes are exactly those of ``state``."""
    return infer_preset(lambda size: SparseViT(size=size), list(SPARSE_VIT_PRESETS), state, "SparseViT")


def convert_sparse_vit(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> SparseViT:
    """Convert the authors' ``checkpoint.pth`` into a webiml :class:`SparseViT` directory and return the model.
    ``overrides`` are :class:`SparseViT` arguments (``size`` is read from the weights)."""
    state = sparse_vit_official_to_webiml(load_checkpoint(checkpoint, extra_safe_globals=[argparse.Namespace]))
    config = {"size": infer_sparse_vit_size(state), **overrides}
    model = build_model(SparseViT, config)
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model


__all__ = ["convert_sparse_vit", "infer_sparse_vit_size", "sparse_vit_official_to_webiml"]
