"""APSC-Net (``webiml convert apsc-net APSC-Net.pth OUT_DIR``): the authors' mmcv checkpoint holds
``{"state_dict": {...}, "meta": {...}, ...}`` with keys ``backbone.*`` (official ConvNeXt naming) and
``decode_head.*`` (kept as is by :class:`~webiml.models.apsc_net.APSCNet`), possibly prefixed
``module.`` (saved from a DataParallel / DDP wrapper). The backbone keys are renamed onto timm's
ConvNeXt (one to one), the architecture widths are read off the tensor shapes, every tensor's shape is
checked, and the weights are loaded strictly before ``save_pretrained`` writes the output directory.

``webiml convert apsc-net-ade20k upernet_convnext_base_22k_640x640.pth OUT_DIR`` builds the *initial*
weights of the authors' training recipe instead (:func:`convert_apsc_net_ade20k`): their ``load_from`` is
the UperNet-ConvNeXt-B ADE20k checkpoint of facebookresearch/ConvNeXt (``semantic_segmentation``, MIT
licence) with ``conv_seg`` cut to 2 classes (their ``cvt_conv.py``), loaded non-strictly, so the backbone and
the UPer parts APSC-Net shares with UperNet (``psp_modules``, ``bottleneck``, ``lateral_convs``,
``fpn_convs``, ``conv_seg``) start from ADE20k and the rest from random initialisation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from webiml.convert._common import ConversionError, build_model, few_keys, load_checkpoint, load_strict_and_save
from webiml.models.apsc_net import APSC_PRESETS, APSCNet

_BLOCK_OFFICIAL_TO_TIMM = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
_BLOCK_TIMM_TO_OFFICIAL = {v: k for k, v in _BLOCK_OFFICIAL_TO_TIMM.items()}
_RE_DOWN = re.compile(r"^backbone\.downsample_layers\.(\d+)\.([01])\.(weight|bias)$")
_RE_BLOCK = re.compile(r"^backbone\.stages\.(\d+)\.(\d+)\.(?:(gamma)|(dwconv|norm|pwconv1|pwconv2)\.(weight|bias))$")
_RE_OUTNORM = re.compile(r"^backbone\.norm[0-3]\.(weight|bias)$")
_RE_STEM = re.compile(r"^backbone\.stem\.([01])\.(weight|bias)$")
_RE_TDOWN = re.compile(r"^backbone\.stages\.(\d+)\.downsample\.([01])\.(weight|bias)$")
_RE_TBLOCK = re.compile(r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.(?:(gamma)|(conv_dw|norm|mlp\.fc1|mlp\.fc2)\.(weight|bias))$")


def apsc_key_to_webiml(key: str) -> str | None:
    """webiml name of an official APSC-Net key, or ``None`` if the key is not part of APSC-Net."""
    if key.startswith("decode_head.") or _RE_OUTNORM.match(key):
        return key
    if m := _RE_DOWN.match(key):
        stage, idx, kind = int(m[1]), m[2], m[3]
        return f"backbone.stem.{idx}.{kind}" if stage == 0 else f"backbone.stages.{stage}.downsample.{idx}.{kind}"
    if m := _RE_BLOCK.match(key):
        stage, block = m[1], m[2]
        tail = "gamma" if m[3] else f"{_BLOCK_OFFICIAL_TO_TIMM[m[4]]}.{m[5]}"
        return f"backbone.stages.{stage}.blocks.{block}.{tail}"
    return None


def webiml_key_to_apsc(key: str) -> str:
    """Official APSC-Net name of a webiml :class:`APSCNet` key (the inverse of :func:`apsc_key_to_webiml`)."""
    if key.startswith("decode_head.") or _RE_OUTNORM.match(key):
        return key
    if m := _RE_STEM.match(key):
        return f"backbone.downsample_layers.0.{m[1]}.{m[2]}"
    if m := _RE_TDOWN.match(key):
        return f"backbone.downsample_layers.{m[1]}.{m[2]}.{m[3]}"
    if m := _RE_TBLOCK.match(key):
        tail = "gamma" if m[3] else f"{_BLOCK_TIMM_TO_OFFICIAL[m[4]]}.{m[5]}"
        return f"backbone.stages.{m[1]}.{m[2]}.{tail}"
    raise KeyError(f"{key} has no official APSC-Net counterpart")


def apsc_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official APSC-Net state dict to webiml's keys; unknown keys are a :class:`ConversionError`."""
    out: dict[str, Tensor] = {}
    unknown = []
    for k, v in state.items():
        new = apsc_key_to_webiml(k)
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise ConversionError(
            f"{len(unknown)} keys are not part of APSC-Net (expected backbone.* in the official ConvNeXt naming and "
            f"decode_head.*): {few_keys(unknown)}"
        )
    return out


def webiml_to_apsc_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a webiml :class:`APSCNet` state dict to the official keys (for export and tests)."""
    return {webiml_key_to_apsc(k): v for k, v in state.items()}


def infer_apsc_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """:class:`APSCNet` constructor arguments that reproduce the shapes of a (webiml-keyed) state dict.

    Widths and depths are read off the tensors; values equal to the ``base`` preset are left out so the
    authors' checkpoint converts to ``{"size": "base"}``. Dilations, pool scales and dropout are not
    recorded in weights and keep the authors' values.
    """

    def need(key: str) -> Tensor:
        if key not in state:
            raise ConversionError(f"missing key {key!r}: not an APSC-Net checkpoint, or an incomplete one")
        return state[key]

    dims = [int(need(f"backbone.norm{i}.weight").shape[0]) for i in range(4)]
    depths = []
    for i in range(4):
        blocks = {int(m[1]) for k in state if (m := re.match(rf"^backbone\.stages\.{i}\.blocks\.(\d+)\.", k))}
        depths.append(max(blocks) + 1 if blocks else 0)
    channels = int(need("decode_head.conv_seg.weight").shape[1])
    low_proj = int(need("decode_head.MSDEC.c1_bottleneck.conv.weight").shape[0])
    convs = sorted(
        (int(m[1]), int(v.shape[0]))
        for k, v in state.items()
        if (m := re.match(r"^decode_head\.ha\.kg\.(\d+)\.conv\.weight$", k))
    )
    attn_widths = [w for _, w in convs]
    n_kernel = int(need(f"decode_head.ha.kg.{len(convs) + 4}.weight").shape[0])
    attn_kernel = int(round(n_kernel**0.5))
    if attn_kernel * attn_kernel != n_kernel:
        raise ConversionError(f"decode_head.ha: the kernel generator outputs {n_kernel} values, not a square kernel")
    image_head = any(k.startswith("decode_head.cls_head.") for k in state)
    base = APSC_PRESETS["base"]
    found = dict(depths=depths, dims=dims, channels=channels, low_proj=low_proj, attn_widths=attn_widths)
    cfg: dict[str, Any] = {"size": "base"}
    for k, v in found.items():
        if v != (list(base[k]) if isinstance(v, list) else base[k]):
            cfg[k] = v
    if attn_kernel != 31:
        cfg["attn_kernel"] = attn_kernel
    if not image_head:
        cfg["image_head"] = False
    return cfg



def convert_apsc_net(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> APSCNet:
    """Convert the authors' APSC-Net checkpoint into a webiml model directory and return the model.

    ``overrides`` are extra :class:`APSCNet` arguments that weights cannot tell (e.g. ``refine_steps``).
    """
    official = load_checkpoint(checkpoint)
    state = apsc_official_to_webiml(official)
    config = {**infer_apsc_config(state), **overrides}
    model = build_model(APSCNet, config)
    load_strict_and_save(model, state, checkpoint, out_dir)  # copies into the model's dtype (checkpoints may be half)
    return model


ADE20K_SHARED = ("backbone.", "decode_head.psp_modules.", "decode_head.bottleneck.", "decode_head.lateral_convs.",
                 "decode_head.fpn_convs.", "decode_head.conv_seg.")
"""webiml APSC-Net keys that the UperNet-ConvNeXt ADE20k checkpoint initialises (same names, same shapes)."""
ADE20K_UNUSED = ("auxiliary_head.", "decode_head.fpn_bottleneck.")
"""UperNet parts APSC-Net has no counterpart for (left out, as ``load_from`` leaves them out)."""


def convert_apsc_net_ade20k(checkpoint: str | Path, out_dir: str | Path, seed: int = 0, **overrides: Any) -> APSCNet:
    """Initial APSC-Net weights of the authors' recipe from mmseg's UperNet-ConvNeXt ADE20k checkpoint.

    The backbone and the UPer parts (:data:`ADE20K_SHARED`) come from the checkpoint, ``conv_seg`` cut to its
    first 2 classes as the authors' ``cvt_conv.py`` does; :data:`ADE20K_UNUSED` keys are dropped; every
    other APSC-Net module keeps the random initialisation of ``APSCNet(size="base")`` under
    ``torch.manual_seed(seed)`` (the authors' mmcv initialisers are not reproduced). Every shared key must be
    in the checkpoint with the right shape (BatchNorm's ``num_batches_tracked`` may be absent). Use the
    result as ``init_weights`` of the recipe (``configs/miml/apscnet_miml_recipe.yaml``).
    """
    official = load_checkpoint(checkpoint)
    state: dict[str, Tensor] = {}
    unknown = []
    for k, v in official.items():
        if k.startswith(ADE20K_UNUSED):
            continue
        if k.startswith("decode_head.conv_seg.") and v.shape[0] > 2:
            v = v[:2]
        new = apsc_key_to_webiml(k)
        if new is None or not new.startswith(ADE20K_SHARED):
            unknown.append(k)
        else:
            state[new] = v
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not part of UperNet-ConvNeXt: {few_keys(unknown)}")
    torch.manual_seed(seed)
    model = build_model(APSCNet, {"size": "base", **overrides})
    own = model.state_dict()
    shared = [k for k in own if k.startswith(ADE20K_SHARED)]
    missing = [k for k in shared if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConversionError(f"the checkpoint lacks {len(missing)} UperNet-ConvNeXt keys APSC-Net needs: {few_keys(missing)} "
                              "(expected mmseg's upernet_convnext_base_22k_640x640.pth or convnext_ade.pth)")
    load_strict_and_save(model, {**own, **state}, checkpoint, out_dir)
    return model
