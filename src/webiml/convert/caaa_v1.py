"""CAAA v1 (the MIML authors' CIML parts, ``models for CIML`` of qcf-568/MIML) -> webiml model directories.

- ``webiml convert caaa-v1-classifier convxl.pth OUT_DIR``: ``{"state_dict": ...}`` of their ConvNeXt-XL
  (DataParallel, keys ``module.downsample_layers.*``, ``module.stages.*``, ``module.norm.*``,
  ``module.fc.3.*``) -> :class:`~webiml.models.caaa_v1.CAAAv1Classifier` (timm ConvNeXt keys).
- ``webiml convert caaa-v1-dass DASS.pth OUT_DIR``: ``{"state_dict": ...}`` of their DASS (``module.backbone.*``
  VAN, ``module.decode_head.*``, ``module.auxiliary_head.*``) -> :class:`~webiml.models.caaa_v1.DASS`, whose
  module names are the authors' (no renaming).
- ``webiml convert caaa-v1-sacm SAFM.pth OUT_DIR``: a bare state dict of their SAFM (``module.models.*`` Siamese
  ConvNeXt-B + UPer, ``module.poolopt_on_corrmat.fc``, ``module.seg_out``, ``module.deeplab.*``) ->
  :class:`~webiml.models.caaa_v1.SACM`. ``models.decode_head.conv_seg`` and ``models.auxiliary_head`` are
  dropped: the authors' SAFM never calls them.

Every converter reads the file with ``torch.load(weights_only=True)`` (:func:`load_checkpoint`), renames,
reads the widths and depths off the tensor shapes (values equal to the authors' defaults are left out of
the config, so their files convert to ``{}``), checks every key and shape, loads strictly and writes
``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from webiml.convert._common import ConversionError, build_model, few_keys, load_checkpoint, load_strict_and_save
from webiml.models.caaa_v1 import DASS, SACM, CAAAv1Classifier

__all__ = [
    "caaa_v1_classifier_official_to_webiml",
    "caaa_v1_dass_official_to_webiml",
    "caaa_v1_sacm_official_to_webiml",
    "convert_caaa_v1_classifier",
    "convert_caaa_v1_dass",
    "convert_caaa_v1_sacm",
    "convnext_key_to_timm",
    "infer_classifier_config",
    "infer_dass_config",
    "infer_sacm_config",
    "timm_key_to_convnext",
    "webiml_to_caaa_v1_official",
]

# -- the authors' ConvNeXt (facebookresearch layout) <-> timm's ConvNeXt -------------------------------

_BLOCK = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
_BLOCK_BACK = {v: k for k, v in _BLOCK.items()}
_RE_DOWN = re.compile(r"^downsample_layers\.(\d+)\.([01])\.(weight|bias)$")
_RE_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(?:(gamma)|(dwconv|norm|pwconv1|pwconv2)\.(weight|bias))$")
_RE_STEM = re.compile(r"^stem\.([01])\.(weight|bias)$")
_RE_TDOWN = re.compile(r"^stages\.(\d+)\.downsample\.([01])\.(weight|bias)$")
_RE_TBLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(?:(gamma)|(conv_dw|norm|mlp\.fc1|mlp\.fc2)\.(weight|bias))$")


def convnext_key_to_timm(key: str) -> str | None:
    """timm name of an official ConvNeXt stem / stage key (``None`` for anything else)."""
    if m := _RE_DOWN.match(key):
        return f"stem.{m[2]}.{m[3]}" if m[1] == "0" else f"stages.{m[1]}.downsample.{m[2]}.{m[3]}"
    if m := _RE_BLOCK.match(key):
        return f"stages.{m[1]}.blocks.{m[2]}." + ("gamma" if m[3] else f"{_BLOCK[m[4]]}.{m[5]}")
    return None


def timm_key_to_convnext(key: str) -> str | None:
    """Official name of a timm ConvNeXt stem / stage key (the inverse of :func:`convnext_key_to_timm`)."""
    if m := _RE_STEM.match(key):
        return f"downsample_layers.0.{m[1]}.{m[2]}"
    if m := _RE_TDOWN.match(key):
        return f"downsample_layers.{m[1]}.{m[2]}.{m[3]}"
    if m := _RE_TBLOCK.match(key):
        return f"stages.{m[1]}.{m[2]}." + ("gamma" if m[3] else f"{_BLOCK_BACK[m[4]]}.{m[5]}")
    return None


# -- key mappings per part (official -> webiml; None: not part of the model) --------------------------

_SACM_UNUSED = ("models.decode_head.conv_seg.", "models.auxiliary_head.")


def _classifier_key(key: str) -> str | None:
    if key.startswith("norm."):
        return "backbone.norm_pre." + key[5:]
    if key.startswith("fc.3."):
        return "backbone.head.fc." + key[5:]
    new = convnext_key_to_timm(key)
    return None if new is None else "backbone." + new


def _dass_key(key: str) -> str | None:
    return key if key.startswith(("backbone.", "decode_head.", "auxiliary_head.")) else None


def _sacm_key(key: str) -> str | None:
    if key.startswith("models.backbone."):
        rest = key[len("models.backbone.") :]
        new = rest if re.match(r"^norm\d\.(weight|bias)$", rest) else convnext_key_to_timm(rest)
        return None if new is None else "backbone." + new
    if key.startswith("models.decode_head."):
        return key[len("models.") :]
    if key.startswith(("poolopt_on_corrmat.", "seg_out.", "deeplab.")):
        return key
    return None


def _rename(state: Mapping[str, Tensor], mapping: Callable[[str], str | None], drop: tuple[str, ...], what: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    unknown = []
    for k, v in state.items():
        if k.startswith(drop):
            continue
        new = mapping(k)
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not part of the authors' {what}: {few_keys(unknown)}")
    return out


def caaa_v1_classifier_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the authors' classifier state dict (``convxl.pth``, ``module.`` removed) to webiml's keys."""
    return _rename(state, _classifier_key, (), "ConvNeXt-XL pair classifier (downsample_layers.*, stages.*, norm.*, fc.3.*)")


def caaa_v1_dass_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The authors' DASS state dict (``DASS.pth``) in webiml's keys (the same names)."""
    return _rename(state, _dass_key, (), "DASS (backbone.*, decode_head.*, auxiliary_head.*)")


def caaa_v1_sacm_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the authors' SAFM state dict (``SAFM.pth``) to webiml's :class:`SACM` keys (unused heads dropped)."""
    return _rename(state, _sacm_key, _SACM_UNUSED, "SAFM (models.*, poolopt_on_corrmat.*, seg_out.*, deeplab.*)")


def webiml_to_caaa_v1_official(model: nn.Module) -> dict[str, Tensor]:
    """The official-format state dict (no ``module.`` prefix) of a webiml CAAA v1 part, for export and tests.
    The SACM heads the converter drops are not recreated."""
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if isinstance(model, DASS):
            out[key] = value
            continue
        if isinstance(model, CAAAv1Classifier):
            rest = key[len("backbone.") :]
            if rest.startswith("norm_pre."):
                out["norm." + rest[len("norm_pre.") :]] = value
            elif rest.startswith("head.fc."):
                out["fc.3." + rest[len("head.fc.") :]] = value
            else:
                out[_must(timm_key_to_convnext(rest), key)] = value
        elif isinstance(model, SACM):
            if key.startswith("backbone."):
                rest = key[len("backbone.") :]
                out["models.backbone." + (rest if rest.startswith("norm") else _must(timm_key_to_convnext(rest), key))] = value
            elif key.startswith("decode_head."):
                out["models." + key] = value
            else:
                out[key] = value
        else:
            raise TypeError(f"not a CAAA v1 part: {type(model).__name__}")
    return out


def _must(value: str | None, key: str) -> str:
    if value is None:
        raise KeyError(f"{key} has no official counterpart")
    return value


# -- architecture read off the shapes ------------------------------------------------------------------


def _need(state: Mapping[str, Tensor], key: str, what: str) -> Tensor:
    if key not in state:
        raise ConversionError(f"missing key {key!r}: not a {what} checkpoint, or an incomplete one")
    return state[key]


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    found = {int(m[1]) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _convnext_shape(state: Mapping[str, Tensor], prefix: str, what: str) -> dict[str, Any]:
    dims = [int(_need(state, f"{prefix}stem.0.weight", what).shape[0])]
    dims += [int(_need(state, f"{prefix}stages.{i}.downsample.1.weight", what).shape[0]) for i in (1, 2, 3)]
    depths = [_count(state, rf"^{re.escape(prefix)}stages\.{i}\.blocks\.(\d+)\.") for i in range(4)]
    return {"depths": depths, "dims": dims}


def _without_defaults(cls: type, found: dict[str, Any]) -> dict[str, Any]:
    """``found`` without the values equal to ``cls``'s defaults (the authors' architecture converts to ``{}``)."""
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}

    def same(a: Any, b: Any) -> bool:
        return list(a) == list(b) if isinstance(a, list | tuple) else bool(a == b)

    return {k: v for k, v in found.items() if not same(v, defaults[k])}


def infer_classifier_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    found = _convnext_shape(state, "backbone.", "CAAA v1 classifier")
    out = int(_need(state, "backbone.head.fc.weight", "CAAA v1 classifier").shape[0])
    if out != 8:
        raise ConversionError(f"the classifier head has {out} outputs; the authors' CAAA v1 classifier has 8")
    return _without_defaults(CAAAv1Classifier, found)


def infer_dass_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    what = "DASS"
    dims = [int(_need(state, f"backbone.patch_embed{i}.proj.weight", what).shape[0]) for i in (1, 2, 3, 4)]
    if int(state["backbone.patch_embed1.proj.weight"].shape[1]) != 9:
        raise ConversionError("DASS takes 9 input channels; this checkpoint's first convolution takes "
                              f"{int(state['backbone.patch_embed1.proj.weight'].shape[1])}")
    depths = [_count(state, rf"^backbone\.block{i}\.(\d+)\.") for i in (1, 2, 3, 4)]
    ratios = [int(_need(state, f"backbone.block{i}.0.mlp.fc1.weight", what).shape[0]) // d for i, d in zip((1, 2, 3, 4), dims, strict=True)]
    found = {
        "embed_dims": dims, "depths": depths, "mlp_ratios": ratios,
        "channels": int(_need(state, "decode_head.bottleneck.conv.weight", what).shape[0]),
        "aux_channels": int(_need(state, "auxiliary_head.convs.0.conv.weight", what).shape[0]),
        "low_proj": int(_need(state, "decode_head.deeplab.c1_bottleneck.conv.weight", what).shape[0]),
    }
    return _without_defaults(DASS, found)


def infer_sacm_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    what = "SACM (SAFM)"
    found = _convnext_shape(state, "backbone.", what)
    fc = _need(state, "poolopt_on_corrmat.fc.weight", what)
    grid = math.isqrt(int(fc.shape[1]))
    if grid * grid != int(fc.shape[1]):
        raise ConversionError(f"poolopt_on_corrmat.fc takes {int(fc.shape[1])} shifts, not a square grid")
    found |= {
        "channels": int(_need(state, "decode_head.bottleneck.conv.weight", what).shape[0]),
        "input_size": 8 * grid,
        "corr_features": int(fc.shape[0]),
        "low_proj": int(_need(state, "deeplab.c1_bottleneck.conv.weight", what).shape[0]),
        "decoder_widths": [int(_need(state, f"deeplab.conv_seg.{i}.weight", what).shape[0]) for i in (1, 5)],
    }
    return _without_defaults(SACM, found)


# -- the converters --------------------------------------------------------------------------------


def _convert(cls: type, rename: Callable[[Mapping[str, Tensor]], dict[str, Tensor]],
             infer: Callable[[Mapping[str, Tensor]], dict[str, Any]], checkpoint: str | Path, out_dir: str | Path,
             overrides: dict[str, Any]) -> Any:
    state = rename(load_checkpoint(checkpoint))
    config = {**infer(state), **overrides}
    model = build_model(cls, config)
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model


def convert_caaa_v1_classifier(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> CAAAv1Classifier:
    """Convert the authors' ``convxl.pth`` into a :class:`CAAAv1Classifier` directory and return the model
    (``overrides``: constructor arguments weights cannot tell, e.g. ``input_size``)."""
    return _convert(CAAAv1Classifier, caaa_v1_classifier_official_to_webiml, infer_classifier_config, checkpoint, out_dir, overrides)


def convert_caaa_v1_dass(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> DASS:
    """Convert the authors' ``DASS.pth`` into a :class:`DASS` directory and return the model."""
    return _convert(DASS, caaa_v1_dass_official_to_webiml, infer_dass_config, checkpoint, out_dir, overrides)


def convert_caaa_v1_sacm(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> SACM:
    """Convert the authors' ``SAFM.pth`` into a :class:`SACM` directory and return the model."""
    return _convert(SACM, caaa_v1_sacm_official_to_webiml, infer_sacm_config, checkpoint, out_dir, overrides)
