"""Photometric degradations of the image (the mask is untouched): deterministic functional versions
(:func:`jpeg`, :func:`gaussian_blur`, :func:`gaussian_noise`, :func:`resize_down_up`, :func:`degrade`) for
robustness protocols, and their random sample transforms for training."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.io import decode_jpeg, encode_jpeg

from webiml.data.transforms._base import Sample, _check_uint8, _coin, _randint, _range, _Repr, _scaled, _uniform


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG re-compression of a uint8 (3, H, W) image at ``quality`` (1..100).

    Uses torchvision's libjpeg codec on CPU (PIL if that is unavailable); the result is on ``image``'s device.
    """
    _check_uint8(image)
    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    cpu = image.detach().cpu().contiguous()
    try:
        out = decode_jpeg(encode_jpeg(cpu, quality=quality))
    except (RuntimeError, TypeError):  # torchvision built without libjpeg
        buf = io.BytesIO()
        Image.fromarray(cpu.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            out = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    return out.to(image.device)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` (pixels); kernel size ``2 * ceil(3 sigma) + 1``.
    ``sigma <= 0`` returns the image unchanged."""
    _check_uint8(image)
    if sigma <= 0:
        return image
    k = 2 * math.ceil(3 * sigma) + 1
    # Reflect padding needs the half-kernel to be smaller than the image: truncate the kernel on tiny images.
    k = min(k, 2 * min(image.shape[-2:]) - 1)
    return F.gaussian_blur(image, [k, k], [float(sigma), float(sigma)])


def gaussian_noise(image: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add i.i.d. Gaussian noise with standard deviation ``std`` in 0..255 pixel units, round and clip.

    Pass a seeded ``generator`` (on CPU) for a reproducible degradation; without one the global RNG is used.
    """
    _check_uint8(image)
    if std <= 0:
        return image
    noise = torch.randn(image.shape, generator=generator, dtype=torch.float32) * float(std)
    return (image.float() + noise.to(image.device)).round_().clamp_(0, 255).to(torch.uint8)


def resize_down_up(image: torch.Tensor, scale: float) -> torch.Tensor:
    """Resample to ``scale`` times the size (bilinear, antialias) and back to the original size:
    the resolution loss of a web re-upload, at unchanged geometry."""
    _check_uint8(image)
    if scale <= 0:
        raise ValueError(f"resize scale must be positive, got {scale}")
    h, w = image.shape[-2:]
    small = F.resize(image, [_scaled(h, scale), _scaled(w, scale)], antialias=True)
    return F.resize(small, [h, w], antialias=True)


def degrade(image: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply one named degradation: ``"jpeg"`` (level = quality), ``"blur"`` (sigma), ``"noise"``
    (std in 0..255), ``"resize"`` (down-up scale) or ``"none"``."""
    if kind == "none":
        return image
    if kind == "jpeg":
        return jpeg(image, int(level))
    if kind == "blur":
        return gaussian_blur(image, float(level))
    if kind == "noise":
        return gaussian_noise(image, float(level), generator)
    if kind == "resize":
        return resize_down_up(image, float(level))
    raise ValueError(f"unknown degradation {kind!r}; expected none, jpeg, blur, noise or resize")


class RandomJpeg(_Repr):
    """With probability ``p``, re-compress the image as JPEG at a quality drawn uniformly (inclusive) from
    ``quality``. The mask is untouched."""

    def __init__(self, p: float = 0.3, quality: tuple[int, int] = (50, 100)) -> None:
        lo, hi = (int(q) for q in quality)
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"JPEG quality range must satisfy 1 <= low <= high <= 100, got {quality}")
        self.p, self.quality = p, (lo, hi)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        if _coin(self.p):
            out["image"] = jpeg(sample["image"], _randint(*self.quality))
        return out


class RandomGaussianBlur(_Repr):
    """With probability ``p``, blur the image with sigma drawn uniformly from ``sigma``. The mask is untouched."""

    def __init__(self, p: float = 0.2, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.p, self.sigma = p, _range(sigma, "sigma")

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        if _coin(self.p):
            out["image"] = gaussian_blur(sample["image"], _uniform(*self.sigma))
        return out


class RandomResize(_Repr):
    """With probability ``p``, resample the image down to a scale drawn from ``scale`` and back up to its
    size (resolution loss; geometry and mask unchanged)."""

    def __init__(self, p: float = 0.2, scale: tuple[float, float] = (0.5, 1.0)) -> None:
        self.p, self.scale = p, _range(scale, "scale")
        if self.scale[0] <= 0:
            raise ValueError(f"scale must be positive, got {scale}")

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        if _coin(self.p):
            out["image"] = resize_down_up(sample["image"], _uniform(*self.scale))
        return out


class Degrade(_Repr):
    """Deterministic test-time degradation of the image (see :func:`degrade`); the mask is untouched.
    Noise uses a generator seeded with ``seed`` for every sample, so results are reproducible.
    Put it first, before an evaluation policy."""

    def __init__(self, kind: str, level: float, seed: int = 0) -> None:
        degrade(torch.zeros(3, 8, 8, dtype=torch.uint8), kind, level)  # validate kind and level early
        self.kind, self.level, self.seed = kind, level, seed

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        gen = torch.Generator().manual_seed(self.seed) if self.kind == "noise" else None
        out["image"] = degrade(sample["image"], self.kind, self.level, gen)
        return out
