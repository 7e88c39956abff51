"""Geometric sample transforms that keep image and mask aligned, and the training pipeline."""

from __future__ import annotations

from collections.abc import Callable

from webiml.data.masks import IGNORE
from webiml.data.transforms._base import (
    Compose,
    Sample,
    _check_image,
    _coin,
    _pad_bottom_right,
    _pair,
    _randint,
    _Repr,
    _resize_pair,
    _scaled,
    _uniform,
)
from webiml.data.transforms.degradations import RandomGaussianBlur, RandomJpeg, RandomResize


class RandomScale(_Repr):
    """With probability ``p``, rescale image and mask by a factor drawn uniformly from ``[min_scale, max_scale]``."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 1.5, p: float = 1.0) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale, self.p = min_scale, max_scale, p

    def __call__(self, sample: Sample) -> Sample:
        if not _coin(self.p):
            return dict(sample)
        s = _uniform(self.min_scale, self.max_scale)
        h, w = sample["image"].shape[-2:]
        return _resize_pair(sample, (_scaled(h, s), _scaled(w, s)))


class RandomCropPad(_Repr):
    """Bring image and mask to exactly ``size`` (h, w): a random crop along each side that is too long,
    bottom/right padding along each side that is too short (image 0, mask IGNORE).

    With probability ``crop_bias``, and when the mask has manipulated pixels, the crop window is chosen to
    contain a manipulated pixel picked uniformly at random (helps small forgeries survive cropping).
    """

    def __init__(self, size: int | tuple[int, int], crop_bias: float = 0.0) -> None:
        self.size = _pair(size)
        self.crop_bias = crop_bias

    @staticmethod
    def _start(length: int, size: int, anchor: int | None) -> int:
        if length <= size:
            return 0
        lo, hi = 0, length - size
        if anchor is not None:
            lo, hi = max(lo, anchor - size + 1), min(hi, anchor)
        return _randint(lo, hi)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        image, mask = sample["image"], sample.get("mask")
        _check_image(image)
        th, tw = self.size
        h, w = image.shape[-2:]
        ay = ax = None
        if (h > th or w > tw) and mask is not None and _coin(self.crop_bias):
            positives = (mask[0] == 1).nonzero()
            if len(positives):
                ay, ax = (int(v) for v in positives[_randint(0, len(positives) - 1)])
        top, left = self._start(h, th, ay), self._start(w, tw, ax)
        image = image[..., top:top + th, left:left + tw]
        out["image"] = _pad_bottom_right(image, th - image.shape[-2], tw - image.shape[-1], 0)
        if mask is not None:
            mask = mask[..., top:top + th, left:left + tw]
            out["mask"] = _pad_bottom_right(mask, th - mask.shape[-2], tw - mask.shape[-1], IGNORE)
        return out


class RandomFlip(_Repr):
    """Flip image and mask left-right with probability ``horizontal`` and up-down with probability ``vertical``."""

    def __init__(self, horizontal: float = 0.5, vertical: float = 0.0) -> None:
        self.horizontal, self.vertical = horizontal, vertical

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        dims = [d for d, p in ((-1, self.horizontal), (-2, self.vertical)) if _coin(p)]
        if dims:
            out["image"] = out["image"].flip(dims)
            if out.get("mask") is not None:
                out["mask"] = out["mask"].flip(dims)
        return out


class Resize(_Repr):
    """Resize image (bilinear, antialias) and mask (nearest) to a fixed ``size``; an int means a square."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = _pair(size)

    def __call__(self, sample: Sample) -> Sample:
        return _resize_pair(sample, self.size)


def make_train_transform(
    crop_size: int | tuple[int, int] = 512,
    scale: tuple[float, float] = (0.5, 1.5),
    hflip: float = 0.5,
    jpeg_p: float = 0.3,
    jpeg_quality: tuple[int, int] = (50, 100),
    blur_p: float = 0.0,
    crop_bias: float = 0.5,
    resize_p: float = 0.0,
    vflip: float = 0.0,
) -> Compose:
    """Training pipeline: scale -> crop/pad to ``crop_size`` -> flip -> resize/blur degradations -> JPEG.

    JPEG comes last, as in a real re-upload (its 8x8 grid then matches the network input). Degradations
    with probability 0 are left out.
    """
    ts: list[Callable[[Sample], Sample]] = []
    if scale != (1.0, 1.0):
        ts.append(RandomScale(*scale))
    ts.append(RandomCropPad(crop_size, crop_bias=crop_bias))
    if hflip > 0 or vflip > 0:
        ts.append(RandomFlip(hflip, vflip))
    if resize_p > 0:
        ts.append(RandomResize(resize_p))
    if blur_p > 0:
        ts.append(RandomGaussianBlur(blur_p))
    if jpeg_p > 0:
        ts.append(RandomJpeg(jpeg_p, jpeg_quality))
    return Compose(ts)
