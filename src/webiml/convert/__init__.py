"""Converters from upstream checkpoints to webiml's ``config.json`` + ``model.safetensors`` layout.

Upstream checkpoints are PyTorch pickles. They are read with ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers and refuses anything that would run code on unpickling;
a checkpoint that needs more is rejected with :class:`ConversionError` instead of being trusted.

One module per upstream family (``webiml.convert.<family>``), each with a ``convert_*`` function
``(checkpoint, out_dir, **overrides) -> model`` and its key mapping; :data:`CONVERTERS` names them for
``webiml convert NAME CHECKPOINT OUT_DIR``. A converter's module is imported only when it is used, so
``webiml convert --help`` never imports every model family.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from webiml.convert._common import ConversionError, check_state_dict, few_keys, load_checkpoint, load_strict_and_save

CONVERTERS: dict[str, tuple[str, str]] = {
    "adaptive-cfa": ("Adaptive CFA (CVPR 2020) state dict from qbammey/adaptive_cfa_forensics src/models/*.pt",
                     "webiml.convert.adaptive_cfa:convert_adaptive_cfa"),
    "apsc-net": ("APSC-Net (CVPR 2024) mmcv checkpoint from qcf-568/MIML, e.g. APSC-Net.pth",
                 "webiml.convert.apsc_net:convert_apsc_net"),
    "noiseprint": ("Noiseprint (TIFS 2020), all qualities: grip-unina/noiseprint noiseprint/nets (TF1 net_jpgQQ checkpoints, read "
                   "without TensorFlow) or noiseprint-pytorch pretrained_weights (model_qfQQ.pth)",
                   "webiml.convert.noiseprint:convert_noiseprint"),
    "noiseprint++": ("TruFor's Noiseprint++ extractor, grip-unina/TruFor pretrained_models/noiseprint++/noiseprint++.th",
                     "webiml.convert.noiseprint:convert_noiseprint_pp"),
}
"""Converter name -> (description, ``"module:function"`` with signature ``(checkpoint, out_dir, **overrides)``)."""


def get_converter(name: str) -> Callable[..., Any]:
    """The conversion function registered under ``name`` (imports its module)."""
    try:
        target = CONVERTERS[name][1]
    except KeyError:
        raise ConversionError(f"unknown converter {name!r}; known: {', '.join(sorted(CONVERTERS))}") from None
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


_REEXPORTS: dict[str, str] = {
    "adaptive_cfa_official_to_webiml": "webiml.convert.adaptive_cfa",
    "convert_adaptive_cfa": "webiml.convert.adaptive_cfa",
    "apsc_key_to_webiml": "webiml.convert.apsc_net",
    "apsc_official_to_webiml": "webiml.convert.apsc_net",
    "convert_apsc_net": "webiml.convert.apsc_net",
    "infer_apsc_config": "webiml.convert.apsc_net",
    "webiml_key_to_apsc": "webiml.convert.apsc_net",
    "webiml_to_apsc_official": "webiml.convert.apsc_net",
    "convert_noiseprint": "webiml.convert.noiseprint",
    "convert_noiseprint_pp": "webiml.convert.noiseprint",
    "noiseprint_pp_official_to_webiml": "webiml.convert.noiseprint",
}
"""Names kept importable from ``webiml.convert`` itself (loaded from their family module on first use)."""


def __getattr__(name: str) -> Any:
    if name in _REEXPORTS:
        return getattr(importlib.import_module(_REEXPORTS[name]), name)
    raise AttributeError(f"module 'webiml.convert' has no attribute {name!r}")


__all__ = ["CONVERTERS", "ConversionError", "check_state_dict", "few_keys", "get_converter", "load_checkpoint",
           "load_strict_and_save", *_REEXPORTS]
