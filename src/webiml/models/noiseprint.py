"""The GRIP noise-residual models with the Noiseprint blind localization on top: the original Noiseprint
(one DnCNN per JPEG quality) and TruFor's Noiseprint++.

- D. Cozzolino, L. Verdoliva, "Noiseprint: a CNN-based camera model fingerprint", IEEE TIFS 2020; code and
  weights: https://github.com/grip-unina/noiseprint (``noiseprint/network.py`` FullConvNet,
  ``noiseprint/noiseprint.py`` genNoiseprint, ``noiseprint/noiseprint_blind.py``,
  ``noiseprint/utility/utilityRead.py`` imread2f / jpeg_qtableinv, TF1 checkpoints
  ``noiseprint/nets/net_jpg51 .. net_jpg101``); the blind localization is re-implemented in
  :mod:`webiml.models.noiseprint_blind`.
- F. Guillaro, D. Cozzolino, A. Sud, N. Dufour, L. Verdoliva, "TruFor: Leveraging all-round clues for
  trustworthy image forgery detection and localization", CVPR 2023; code and weights:
  https://github.com/grip-unina/TruFor (``TruFor_train_test/lib/models/DnCNN.py``, the ``dncnn`` built in
  ``lib/models/cmx/builder_np_conf.py``, weights ``pretrained_models/noiseprint++/noiseprint++.th``).

Both extractors are 17-layer DnCNNs (3x3 convolutions, 64 channels, BatchNorm on layers 2..16, ReLU, no
residual connection, zero padding) to one noise channel at full resolution, kept in the layer layout of
:func:`make_dncnn` (``0.weight``, ``0.bias``, ``2.weight``, ``3.weight`` (BN gamma), ``3.bias`` (BN beta),
``3.running_mean``, ...). ``forward`` runs the extractor on the device and the blind localization per image
on the CPU (numpy): the mask logits are the outlier posterior logits of the fitted Gaussian mixture (see
:mod:`webiml.models.noiseprint_blind`); there is no image-level score (``image_logits`` is ``None``). The
blind EM's grey image is GRIP's ``imread2f(channel=1)``: ``(0.299 R + 0.587 G + 0.114 B) / 256``.

**Noiseprint** (:class:`Noiseprint`). Input: that grey image (one channel). One network per JPEG quality
51..100 plus 101 for uncompressed images, all held by one model (``nets.q51`` .. ``nets.q101``; the
``qualities`` argument may hold fewer). The authors pick the network from the file: the quality estimated
from the JPEG luminance quantisation table (:func:`jpeg_quality`, their ``jpeg_qtableinv`` rule), 101 for
anything that is not a JPEG. A tensor carries no file, so :meth:`Noiseprint.forward` uses the model's
``quality`` (default 101: the authors' choice for PNG / TIFF / RAW input); :meth:`Noiseprint.predict_file`
reads the quality from the file as the authors do, and ``forward(x, quality=...)`` / :meth:`Noiseprint.noiseprint`
take it explicitly. The TF1 BatchNorm (``(x - mean) / sqrt(var + 1e-5) * gamma``, then the separate ``beta``
bias) is ``nn.BatchNorm2d`` with weight ``gamma`` and bias ``beta``; the converter
(:func:`webiml.convert.noiseprint.convert_noiseprint`) reads the TF checkpoints without TensorFlow.
Images over 1,050,000 pixels run in 1024-pixel tiles with a 34-pixel overlap as upstream (the same values
as one pass: the receptive field reaches 17 pixels).

Deviations (Noiseprint): quality estimates below 51 (tables coarser than the ones the authors trained for)
use the quality-51 network (upstream has no such network and fails); a quality the model does not hold
uses the nearest one it holds. An RGB image whose three channels are equal gives the luminance
``(0.299 + 0.587 + 0.114) * v``, within one float32 ulp of the ``v / 256`` the authors read from a
greyscale file.

**Noiseprint++** (:class:`NoiseprintPP`). Input: RGB in ``[0, 1)`` (``uint8 / 256`` as in TruFor's
loaders); the layout is TruFor's own Sequential under ``dncnn``, so the converter only adds a prefix
(:func:`webiml.convert.convert_noiseprint_pp`). :meth:`NoiseprintPP.noiseprint` returns the raw residual.

Deviations / webiml adaptations (Noiseprint++):

- **Residual normalisation before the blind EM.** The authors' EM has fixed constants (quantiser values
  -0.8..0.7, local-variance threshold 0.005) tuned for Noiseprint, whose residual is about 6x larger than
  Noiseprint++'s and centred differently (Noiseprint++ has a per-image mean of about -0.03 and a standard
  deviation of about 0.17 on CASIA photos; with the raw residual nearly every window is rejected). webiml
  standardises each residual (its own mean and standard deviation over the image) to the mean and
  standard deviation of the authors' reference Noiseprint, ``0.0346`` and ``0.6474``: the statistics of
  ``demo/outs/inpainting_np.mat`` shipped with grip-unina/noiseprint. The rule and the two numbers were
  fixed from that reference output alone, before any test set was scored; no mask was looked at.
  :class:`Noiseprint` feeds its residual to the EM unchanged, as the authors do.
- Large images run whole (TruFor runs whole).

Both: images whose blind EM has fewer than 50 valid windows (small or flat images; the authors return no
map) get a constant logit of ``-20`` everywhere.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from os import PathLike
from typing import IO, Any

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
    scale: ``(0.299 R + 0.587 G + 0.114 B) / 256`` (float32 for float32 or integer input), in the authors' order of operations (the
    Noiseprint input and the saturation test of the blind EM)."""
    p = pixels if pixels.is_floating_point() else pixels.float()
    return (0.299 * p[:, 0] + 0.587 * p[:, 1] + 0.114 * p[:, 2]) / 256.0


class Uint8Over256Input:
    """Mixin (before :class:`IMLModel`) for models fed like GRIP's loaders, ``uint8 / 256``: with the default
    statistics (mean 0, std 256/255) :meth:`normalize` turns ``uint8`` images into exactly ``uint8 / 256``
    (``x / 255`` then ``/ (256 / 255)`` is off by an ulp, which a DnCNN amplifies to ~1e-4); anything else
    goes through :meth:`IMLModel.normalize`."""

    def normalize(self, images: Tensor) -> Tensor:
        mean, std = self.input_mean, self.input_std  # type: ignore[attr-defined]
        if images.dtype == torch.uint8 and bool((mean == 0).all()) and bool((std == 256.0 / 255.0).all()):
            x = images.float() / 256.0
            return (x if x.ndim == 4 else x[None]).to(mean.device)
        return super().normalize(images)  # type: ignore[misc]


class BlindNoiseModel(Uint8Over256Input, IMLModel):
    """Shared part of the noise-residual models: blind localization of each residual into mask logits."""

    abstract = True
    tile_safe = False  # the blind EM fits one model to the whole residual (upstream tiles only for memory)
    size_divisor = 1
    card_summary = (
        "A camera-trace (noise residual) forensic model ported to [webiml]({repo_url}): the network extracts a\n"
        "noise residual and a blind Gaussian-mixture EM turns it into a per-pixel map of inconsistent regions.")

    def _grip_statistics(self) -> bool:
        """Whether the input statistics are the default ones that map ``uint8`` to ``uint8 / 256``."""
        return bool((self.input_mean == 0).all()) and bool((self.input_std == 256.0 / 255.0).all())

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


# -- the original Noiseprint ------------------------------------------------------------------------------

NOISEPRINT_QUALITIES = tuple(range(51, 102))
"""The qualities of the authors' networks: JPEG quality 51..100, and 101 for uncompressed images."""
UNCOMPRESSED = 101
LARGE_LIMIT = 1_050_000
"""Images with more pixels run tiled, as upstream (``largeLimit``)."""
TILE = 1024
TILE_OVERLAP = 34

IJG_LUMINANCE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.float64)
"""The JPEG standard's (Annex K) luminance table: IJG quality 50."""


def quality_from_table(table: np.ndarray | Sequence[int]) -> int:
    """The JPEG quality whose IJG-scaled luminance table best explains ``table`` (64 values, natural
    row-major order), by the rule of the authors' ``jpeg_qtableinv``: every entry ``h`` bounds the scale
    ``s / 100`` of the standard table ``t`` to ``[(2h - 1) / 2t, (2h + 1) / 2t]`` (IJG rounds ``t * s / 100``),
    entries equal to 1 give no upper bound; from the tightest bounds the quality follows as the IJG
    mapping inverted (``s = 5000 / q`` below 50, ``200 - 2q`` above). All-ones tables are quality 100. For
    libjpeg's tables this gives the saving quality from 50 to 100 and one more below 50 (IJG scales by the
    integer ``5000 // q``), as upstream; equal to upstream's ``jpeg_qtableinv`` on libjpeg's qualities 1..100."""
    h = np.asarray(table, dtype=np.float64).reshape(8, 8)
    if np.all(h <= 1):  # all ones (a table of zeros is not valid JPEG; upstream fails on it)
        return 100
    lower = ((2 * h - 1) / (2 * IJG_LUMINANCE))[h > 1].max()
    below = h < 32767
    upper = ((2 * h + 1) / (2 * IJG_LUMINANCE))[below].min() if below.any() else None
    if upper is None:
        return 1
    if lower > 1 and upper > 1:
        return int(math.ceil(50 / upper))
    if upper < 1:
        return int(math.ceil(50 * (2 - upper)))
    return 50


def jpeg_quality(source: str | PathLike[str] | IO[bytes]) -> int:
    """The quality the authors' Noiseprint code picks its network by: for a JPEG file, the quality
    estimated from its luminance quantisation table (:func:`quality_from_table`); for any other image
    file (PNG, TIFF, ...) :data:`UNCOMPRESSED` (101). Raises ``ValueError`` for a file PIL cannot open."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as im:
            tables = getattr(im, "quantization", None) if im.format in ("JPEG", "MPO") else None
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"cannot read {source}: {err}") from None
    if not tables or 0 not in tables:
        return UNCOMPRESSED
    return quality_from_table(list(tables[0]))  # Pillow >= 8.3 keeps the tables in natural order


class Noiseprint(BlindNoiseModel):
    """Noiseprint (Cozzolino & Verdoliva, TIFS 2020): one DnCNN per JPEG quality + the blind localization;
    see the module docstring.

    Args:
        qualities: the qualities whose networks the model holds (default all the authors released, 51..101).
        quality: the network ``forward`` uses when none is given (default 101, the authors' choice for
            uncompressed files); see :func:`jpeg_quality` and :meth:`predict_file` for JPEG files.
        mean, std: input normalisation; the default maps ``uint8`` to ``uint8 / 256`` as the GRIP loaders do.
    """

    def __init__(self, qualities: Sequence[int] = NOISEPRINT_QUALITIES, quality: int = UNCOMPRESSED,
                 mean: tuple[float, float, float] = (0.0, 0.0, 0.0), std: tuple[float, float, float] = UINT8_OVER_256) -> None:
        super().__init__(mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]
        held = sorted({int(q) for q in qualities})
        if not held or any(not 1 <= q <= UNCOMPRESSED for q in held):
            raise ValueError(f"qualities must be a non-empty list of integers in 1..{UNCOMPRESSED}, got {list(qualities)}")
        self.qualities = held
        self.nets = nn.ModuleDict({f"q{q}": make_dncnn(1, 1, depth=17, features=64) for q in held})
        self.quality = int(quality)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "quality": int(self.quality)}

    def network_quality(self, quality: float | None = None) -> int:
        """The quality of the network used for an estimated ``quality`` (default: the model's): above 100 is
        101, below 51 is 51 (see the module docstring), then the nearest quality the model holds."""
        q = self.quality if quality is None else quality
        q = UNCOMPRESSED if q > 100 else max(int(q), NOISEPRINT_QUALITIES[0])
        return min(self.qualities, key=lambda held: (abs(held - q), held))

    def noiseprint_gray(self, gray: Tensor, quality: float | None = None) -> Tensor:
        """The Noiseprint (B, 1, H, W) of a grey batch (B, 1, H, W) in GRIP's scale (luminance / 256);
        tiled above :data:`LARGE_LIMIT` pixels as upstream."""
        net = self.nets[f"q{self.network_quality(quality)}"]
        h, w = gray.shape[-2:]
        if h * w <= LARGE_LIMIT:
            return net(gray)
        out = torch.empty_like(gray)
        for top in range(0, h, TILE):
            for left in range(0, w, TILE):
                t0, l0 = max(top - TILE_OVERLAP, 0), max(left - TILE_OVERLAP, 0)
                tile = net(gray[..., t0 : min(top + TILE + TILE_OVERLAP, h), l0 : min(left + TILE + TILE_OVERLAP, w)])
                out[..., top : top + TILE, left : left + TILE] = tile[..., top - t0 : top - t0 + TILE, left - l0 : left - l0 + TILE]
        return out

    def noiseprint(self, x: Tensor, quality: float | None = None) -> Tensor:
        """The Noiseprint (B, 1, H, W) of a normalised RGB batch, with the network of ``quality``."""
        return self.noiseprint_gray(grip_gray(self.pixels_255(x))[:, None], quality)

    def residual(self, x: Tensor) -> Tensor:
        return self.noiseprint(x)

    @contextlib.contextmanager
    def using_quality(self, quality: float | None) -> Iterator[None]:
        """Run with the network of ``quality`` (``None``: unchanged), then restore the model's quality."""
        previous = self.quality
        if quality is not None:
            self.quality = self.network_quality(quality)
        try:
            yield
        finally:
            self.quality = previous

    def forward(self, x: Tensor, quality: float | None = None) -> IMLOutput:
        """:meth:`IMLModel.forward` with the network of ``quality`` (default: the model's ``quality``)."""
        with self.using_quality(quality):
            return super().forward(x)

    def predict_file(self, path: str | PathLike[str]) -> IMLOutput:
        """The authors' whole pipeline on an image file: the network picked by :func:`jpeg_quality` of the
        file, the pixels as stored (no EXIF rotation, as upstream), the blind localization."""
        from webiml.io import read_image

        with self.using_quality(jpeg_quality(path)):
            return self.predict(read_image(path, orient=False))


__all__ = ["BlindNoiseModel", "NOISEPRINT_QUALITIES", "Noiseprint", "NoiseprintPP", "UINT8_OVER_256", "Uint8Over256Input",
           "grip_gray", "jpeg_quality", "make_dncnn", "quality_from_table"]
