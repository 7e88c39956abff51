"""IML-ViT (``webiml convert iml-vit iml-vit_checkpoint.pth OUT_DIR``).

The authors' release (``SunnyHaze/IML-ViT``, ``checkpoints/ckpt_download_page.md``) is
``iml-vit_checkpoint.pth``; their demo loads it either as a bare state dict or as ``{"model": state dict, ...}``
(what their training script saves, with ``optimizer``, ``epoch``, ``scaler`` and the argparse ``args``). Both
are read (see :func:`webiml.convert._common.load_checkpoint`). Keys of ``iml_vit_model`` map onto
:class:`~webiml.models.iml_vit.IMLViT` by prefix: ``encoder_net.`` -> ``backbone.``,
``featurePyramid_net.`` -> ``neck.``, ``predict_head.`` -> ``head.``; the rest of each key is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from webiml.convert._common import ConversionError, build_model, few_keys, load_checkpoint, load_strict_and_save
from webiml.models.iml_vit import IMLVIT_PRESETS, IMLViT

PREFIXES: tuple[tuple[str, str], ...] = (("encoder_net.", "backbone."), ("featurePyramid_net.", "neck."), ("predict_head.", "head."))
"""(official prefix, webiml prefix) of :class:`IMLViT`'s three parts."""


def iml_vit_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official IML-ViT state dict to :class:`IMLViT` keys; other keys are a :class:`ConversionError`."""
    out: dict[str, Tensor] = {}
    unknown = []
    for k, v in state.items():
        for old, new in PREFIXES:
            if k.startswith(old):
                out[new + k[len(old):]] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not part of IML-ViT (expected encoder_net.*, featurePyramid_net.*, "
                              f"predict_head.*): {few_keys(unknown)}")
    return out


def webiml_to_iml_vit_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an :class:`IMLViT` state dict to the official keys (for export and tests)."""
    out = {}
    for k, v in state.items():
        for old, new in PREFIXES:
            if k.startswith(new):
                out[old + k[len(new):]] = v
                break
        else:
            raise KeyError(f"{k} has no official IML-ViT counterpart")
    return out


def infer_iml_vit_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """:class:`IMLViT` arguments that reproduce the shapes of a (webiml-keyed) state dict.

    Widths, depth, patch size, window size, input size and which blocks attend globally are read off the
    tensors (the relative position tables of global blocks span the whole token grid, those of window blocks
    one window); values equal to the ``base`` preset are left out, so the authors' checkpoint converts to
    ``{"size": "base"}``. BatchNorm and InstanceNorm (with running statistics) heads have the same tensors:
    such a head converts as ``"BN"`` (the released model); pass ``head_norm="IN"`` for an InstanceNorm one.
    """

    def need(key: str) -> Tensor:
        if key not in state:
            raise ConversionError(f"missing key {key!r}: not an IML-ViT checkpoint, or an incomplete one")
        return state[key]

    pos = need("backbone.pos_embed")
    patch = need("backbone.patch_embed.proj.weight")
    embed_dim, patch_size = int(pos.shape[-1]), int(patch.shape[-1])
    blocks = sorted({int(m[1]) for k in state if (m := re.match(r"^backbone\.blocks\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise ConversionError(f"backbone.blocks are not numbered 0..N-1: {blocks[:20]}")
    tables = [int(need(f"backbone.blocks.{i}.attn.rel_pos_h").shape[0]) for i in blocks]
    head_dim = int(need("backbone.blocks.0.attn.rel_pos_h").shape[1])
    lengths = sorted(set(tables))
    if len(lengths) != 2:
        raise ConversionError(f"expected window and global attention blocks (two relative-position table lengths), got lengths {lengths}")
    window, tokens = (lengths[0] + 1) // 2, (lengths[1] + 1) // 2
    n_pos = int(pos.shape[1])
    grid = int(round((n_pos - 1) ** 0.5))
    if grid * grid != n_pos - 1:
        raise ConversionError(f"backbone.pos_embed has {n_pos} positions, not a square grid plus a class token")
    norm_keys = {k.rsplit(".", 1)[1] for k in state if k.startswith("head.norm.")}
    found: dict[str, Any] = dict(
        embed_dim=embed_dim,
        depth=len(blocks),
        num_heads=embed_dim // head_dim,
        global_blocks=[i for i, t in zip(blocks, tables, strict=True) if t == lengths[1]],
        window_size=window,
        input_size=tokens * patch_size,
        fpn_channels=int(need("head.linear_fuse.weight").shape[0]),
    )
    base = IMLVIT_PRESETS["base"]
    cfg: dict[str, Any] = {"size": "base"}
    for k, v in found.items():
        if v != (list(base[k]) if isinstance(v, list) else base[k]):
            cfg[k] = v
    if patch_size != 16:
        cfg["patch_size"] = patch_size
    if grid * patch_size != 224:
        cfg["pretrain_img_size"] = grid * patch_size
    if "running_mean" not in norm_keys:
        cfg["head_norm"] = "LN"
    return cfg


def convert_iml_vit(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> IMLViT:
    """Convert the authors' IML-ViT checkpoint into a webiml model directory and return the model.

    ``overrides`` are :class:`IMLViT` arguments the weights cannot tell (e.g. ``head_norm="IN"``).
    """
    state = iml_vit_official_to_webiml(load_checkpoint(checkpoint))
    config = {**infer_iml_vit_config(state), **overrides}
    model = build_model(IMLViT, config)
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model
