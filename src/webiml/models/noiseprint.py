"""Noiseprint++ (TruFor's learned noise extractor) with the Noiseprint blind localization on top.

- F. Guillaro, D. Cozzolino, A. Sud, N. Dufour, L. Verdoliva, "TruFor: Leveraging all-round clues for
  trustworthy image forgery detection and localization", CVPR 2023; code and weights:
  https://github.com/grip-unina/TruFor (``TruFor_train_test/lib/models/DnCNN.py``, the ``dncnn`` built in
  ``lib/models/cmx/builder_np_conf.py``, weights ``pretrained_models/noiseprint++/noiseprint++.th``).
- D. Cozzolino, L. Verdoliva, "Noiseprint: a CNN-based camera model fingerprint", IEEE TIFS 2020; the blind
  localization of https://github.com/grip-unina/noiseprint, re-implemented in
  :mod:`webiml.models.noiseprint_blind`.

The extractor is a 17-layer DnCNN (3x3 convolutions, 64 channels, BatchNorm on layers 2..16, ReLU, no
residual connection, zero padding) from RGB in ``[0, 1)`` (``uint8 / 256`` as in TruFor's loaders) to one
noise channel at full resolution. :class:`NoiseprintPP` keeps the official layer layout as an
``nn.Sequential`` under ``dncnn`` (``dncnn.0.weight``, ``dncnn.3.running_mean``, ...), so the converter only
adds a prefix (:func:`webiml.convert.convert_noiseprint_pp`).

``forward`` runs the extractor on the device and the blind localization per image on the CPU (numpy):
the mask logits are the outlier posterior logits of the fitted Gaussian mixture (see
:mod:`webiml.models.noiseprint_blind`); there is no image-level score (``image_logits`` is ``None``).
:meth:`NoiseprintPP.noiseprint` returns the raw residual.

Deviations / webiml adaptations:

- **Residual normalisation before the blind EM.** The authors' EM has fixed constants (quantiser values
  -0.8..0.7, local-variance threshold 0.005) tuned for Noiseprint, whose residual is about 6x larger than
  Noiseprint++'s and centred differently (Noiseprint++ has a per-image mean of about -0.03 and a standard
  deviation of about 0.17 on CASIA photos; with the raw residual nearly every window is rejected). webiml
  standardises each residual (its own mean and standard deviation over the image) to the mean and
  standard deviation of the authors' reference Noiseprint, ``0.0346`` and ``0.6474``: the statistics of
  ``demo/outs/inpainting_np.mat`` shipped with grip-unina/noiseprint. The rule and the two numbers were
  fixed from that reference output alone, before any test set was scored; no mask was looked at.
- Images whose blind EM has fewer than 50 valid windows (small or flat images; the authors return no map)
  get a constant logit of ``-20`` everywhere.
- Large images run whole (the authors' Noiseprint code tiles above about 1 Mpixel; TruFor runs whole).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from webiml.models.base import IMLModel, IMLOutput
from webiml.models.noiseprint_blind import blind_localization

NOISEPRINT_REF_MEAN = 0.0346
NOISEPRINT_REF_STD = 0.6474
"""Mean / std of the authors' reference Noiseprint (grip-unina/noiseprint demo/outs/inpainting_np.mat)."""
NO_MAP_LOGIT = -20.0
"""Logit of every pixel when the blind EM has too few valid windows to give a map."""
UINT8_OVER_256 = (256.0 / 255.0,) * 3
"""``std`` that turns webiml's ``x / 255`` into the GRIP loaders' ``x / 256`` (mean 0)."""


def make_dncnn(in_channels: int = 3, out_channels: int = 1, depth: int = 17, features: int = 64) -> nn.Sequential:
    """The DnCNN of TruFor / Noiseprint in the official layer order: conv(+bias), ReLU, then ``depth - 2``
    x (conv without bias, BatchNorm, ReLU), then conv(+bias). Indices of the Sequential match the
    official state dict keys."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, features, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(features, out_channels, 3, padding=1, bias=True))
    return nn.Sequential(*layers)


def grip_gray(pixels: Tensor) -> Tensor:
    """(B, H, W) grey image of GRIP's ``imread2f(channel=1)`` from (B, 3, H, W) pixel values on the 0..255
    scale: ``(0.299 R + 0.587 G + 0.114 B) / 256`` in float32, in the authors' order of operations (the
    Noiseprint input and the saturation test of the blind EM)."""
    p = pixels.float()
    return (0.299 * p[:, 0] + 0.587 * p[:, 1] + 0.114 * p[:, 2]) / 256.0


class BlindNoiseModel(IMLModel):
    """Shared part of the noise-residual models: blind localization of each residual into mask logits."""

    abstract = True
    size_divisor = 1
    card_summary = (
        "A camera-trace (noise residual) forensic model ported to [webiml]({repo_url}): the network extracts a\n"
        "noise residual and a blind Gaussian-mixture EM turns it into a per-pixel map of inconsistent regions.")

    def _grip_statistics(self) -> bool:
        """Whether the input statistics are the default ones that map ``uint8`` to ``uint8 / 256``."""
        return bool((self.input_mean == 0).all()) and bool((self.input_std == 256.0 / 255.0).all())

    def normalize(self, images: Tensor) -> Tensor:
        """As :meth:`IMLModel.normalize`, but ``uint8`` images with the default statistics become exactly
        ``uint8 / 256`` (the GRIP loaders): the DnCNNs amplify a one-ulp input difference to ~1e-4."""
        if images.dtype == torch.uint8 and self._grip_statistics():
            x = images.float() / 256.0
            return (x if x.ndim == 4 else x[None]).to(self.input_mean.device)
        return super().normalize(images)

    def pixels_255(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) pixel values on the 0..255 scale of a normalised batch (exactly the ``uint8`` values for
        ``uint8`` input under the default statistics)."""
        if self._grip_statistics():
            return x * 256.0
        return (x * self.input_std.to(x.device) + self.input_mean.to(x.device)) * 255.0

    def residual(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """(B, 1, H, W) noise residual of a normalised batch."""
        raise NotImplementedError

    def blind_input(self, res: Tensor) -> Tensor:
        """The residual as the blind EM should see it (identity unless a subclass adapts it)."""
        return res

    def forward_padded(self, x: Tensor) -> IMLOutput:
        res = self.blind_input(self.residual(x))
        gray = grip_gray(self.pixels_255(x))
        res_np = res[:, 0].detach().float().cpu().numpy()
        gray_np = gray.detach().float().cpu().numpy()
        maps = []
        for r, g in zip(res_np, gray_np, strict=True):
            out = blind_localization(r, g)
            maps.append(np.full(r.shape, NO_MAP_LOGIT, dtype=np.float32) if out is None else out.pixel_map("logit").astype(np.float32))
        logits = torch.from_numpy(np.stack(maps)[:, None]).to(device=x.device, dtype=x.dtype)
        return IMLOutput(mask_logits=logits, image_logits=None)


class NoiseprintPP(BlindNoiseModel):
    """Noiseprint++ (TruFor, CVPR 2023) + the Noiseprint blind localization; see the module docstring.

    Args:
        normalize_residual: standardise each residual to the reference Noiseprint statistics before the
            blind EM (webiml's adaptation; ``False`` runs the EM on the raw residual, as for Noiseprint).
        residual_mean, residual_std: the target statistics of that standardisation.
        mean, std: input normalisation; the default maps ``uint8`` to ``uint8 / 256`` as TruFor's loaders do.
    """

    def __init__(self, normalize_residual: bool = True, residual_mean: float = NOISEPRINT_REF_MEAN,
                 residual_std: float = NOISEPRINT_REF_STD, mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 std: tuple[float, float, float] = UINT8_OVER_256) -> None:
        super().__init__(mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]
        self.normalize_residual = bool(normalize_residual)
        self.residual_mean = float(residual_mean)
        self.residual_std = float(residual_std)
        self.dncnn = make_dncnn(3, 1, depth=17, features=64)

    def residual(self, x: Tensor) -> Tensor:
        return self.dncnn(x)

    def noiseprint(self, x: Tensor) -> Tensor:
        """The raw Noiseprint++ residual (B, 1, H, W) of a normalised batch (what TruFor feeds its encoder)."""
        return self.dncnn(x)

    def blind_input(self, res: Tensor) -> Tensor:
        if not self.normalize_residual:
            return res
        flat = res.flatten(1).double()
        mu = flat.mean(dim=1).view(-1, 1, 1, 1)
        sd = flat.std(dim=1, unbiased=False).clamp_min(1e-12).view(-1, 1, 1, 1)
        return ((res.double() - mu) / sd * self.residual_std + self.residual_mean).to(res.dtype)


__all__ = ["BlindNoiseModel", "NoiseprintPP", "grip_gray", "make_dncnn"]
