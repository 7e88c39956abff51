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
    "cat-net": ("CAT-Net v1/v2 (WACV 2021 / IJCV 2022) from mjkwon2021/CAT-Net, e.g. CAT_full_v2.pth.tar",
                "webiml.convert.cat_net:convert_cat_net"),
    "iml-vit": ("IML-ViT (Ma et al. 2023) iml-vit_checkpoint.pth from SunnyHaze/IML-ViT (state dict or {'model': ...})",
                "webiml.convert.iml_vit:convert_iml_vit"),
    "mesorch": ("Mesorch (AAAI 2025) IMDL-BenCo checkpoint from scu-zjz/Mesorch, e.g. ckpt_mesorch/mesorch-98.pth",
                "webiml.convert.mesorch:convert_mesorch"),
    "caaa-v1-classifier": ("CAAA v1 pair classifier (CVPR 2024, ConvNeXt-XL) from qcf-568/MIML 'models for CIML', convxl.pth",
                           "webiml.convert.caaa_v1:convert_caaa_v1_classifier"),
    "caaa-v1-dass": ("CAAA v1 DASS (SPG segmenter, VAN + UPerLab) from qcf-568/MIML 'models for CIML', DASS.pth",
                     "webiml.convert.caaa_v1:convert_caaa_v1_dass"),
    "caaa-v1-sacm": ("CAAA v1 SACM (SDG segmenter, Siamese ConvNeXt-B correlation) from qcf-568/MIML 'models for CIML', SAFM.pth",
                     "webiml.convert.caaa_v1:convert_caaa_v1_sacm"),
    "apsc-net-ade20k": ("APSC-Net initial weights of the authors' recipe from mmseg's UperNet-ConvNeXt-B ADE20k "
                        "upernet_convnext_base_22k_640x640.pth (facebookresearch/ConvNeXt)",
                        "webiml.convert.apsc_net:convert_apsc_net_ade20k"),
    "noiseprint": ("Noiseprint (TIFS 2020), all qualities: grip-unina/noiseprint noiseprint/nets (TF1 net_jpgQQ checkpoints, read "
                   "without TensorFlow) or noiseprint-pytorch pretrained_weights (model_qfQQ.pth)",
                   "webiml.convert.noiseprint:convert_noiseprint"),
    "noiseprint++": ("TruFor's Noiseprint++ extractor, grip-unina/TruFor pretrained_models/noiseprint++/noiseprint++.th",
                     "webiml.convert.noiseprint:convert_noiseprint_pp"),
    "trufor": ("TruFor (CVPR 2023) trufor.pth.tar from grip-unina/TruFor's TruFor_weights.zip",
               "webiml.convert.trufor:convert_trufor"),
    "mvss-net": ("MVSS-Net (ICCV 2021) state dict from dong03/MVSS-Net, e.g. mvssnet_casia.pt",
                 "webiml.convert.mvss_net:convert_mvss_net"),
    "pscc-net": ("PSCC-Net (TCSVT 2022) from proteus1991/PSCC-Net: the checkpoint/ folder holding HRNet.pth, NLCDetection.pth, "
                 "DetectionHead.pth (or the three files, comma-separated)",
                 "webiml.convert.pscc_net:convert_pscc_net"),
    "sparse-vit": ("SparseViT (AAAI 2025) checkpoint from scu-zjz/SparseViT, e.g. checkpoint.pth ({'model': ...})",
                   "webiml.convert.sparse_vit:convert_sparse_vit"),
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
    "convert_apsc_net_ade20k": "webiml.convert.apsc_net",
    "infer_apsc_config": "webiml.convert.apsc_net",
    "webiml_key_to_apsc": "webiml.convert.apsc_net",
    "webiml_to_apsc_official": "webiml.convert.apsc_net",
    "cat_net_official_to_webiml": "webiml.convert.cat_net",
    "convert_cat_net": "webiml.convert.cat_net",
    "convert_noiseprint": "webiml.convert.noiseprint",
    "convert_noiseprint_pp": "webiml.convert.noiseprint",
    "noiseprint_pp_official_to_webiml": "webiml.convert.noiseprint",
    "convert_trufor": "webiml.convert.trufor",
    "infer_trufor_config": "webiml.convert.trufor",
    "trufor_official_to_webiml": "webiml.convert.trufor",
    "convert_sparse_vit": "webiml.convert.sparse_vit",
    "sparse_vit_official_to_webiml": "webiml.convert.sparse_vit",
}
"""Names kept importable from ``webiml.convert`` itself (loaded from their family module on first use)."""


def __getattr__(name: str) -> Any:
    if name in _REEXPORTS:
        return getattr(importlib.import_module(_REEXPORTS[name]), name)
    raise AttributeError(f"module 'webiml.convert' has no attribute {name!r}")


__all__ = ["CONVERTERS", "ConversionError", "check_state_dict", "few_keys", "get_converter", "load_checkpoint",
           "load_strict_and_save", *_REEXPORTS]
