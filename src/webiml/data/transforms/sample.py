"""Geometric sample transforms that keep image and mask aligned, and the training pipeline."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from webiml.data.masks import IGNORE
from webiml.data.transforms._base import (
    Compose,
    Sample,
    _check_image,
    _check_uint8,
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


class RandomAbsoluteResize(_Repr):
    """Resize image and mask to ``(h, w)`` with ``h`` and ``w`` drawn independently and uniformly from the
    integers ``[min_size, max_size]``: the aspect ratio is not kept.

    This is the APSC-Net authors' training resize (mmseg ``Resize(img_scale=[(512, 512), (768, 768)],
    multiscale_mode='range', keep_ratio=False)``: a long edge and a short edge drawn independently from
    512..768, used as width and height). The image is resampled bilinearly *without* antialiasing, as
    OpenCV's ``INTER_LINEAR`` there; the mask with ``NEAREST_EXACT`` (half-pixel centres, aligned with the
    bilinear image; OpenCV's ``INTER_NEAREST`` floors, up to one pixel off).
    """

    def __init__(self, min_size: int = 512, max_size: int = 768) -> None:
        if not 0 < min_size <= max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size = int(min_size), int(max_size)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        _check_image(sample["image"])
        size = [_randint(self.min_size, self.max_size), _randint(self.min_size, self.max_size)]
        out["image"] = F.resize(sample["image"], size, interpolation=InterpolationMode.BILINEAR, antialias=False)
        if sample.get("mask") is not None:
            out["mask"] = F.resize(sample["mask"], size, interpolation=InterpolationMode.NEAREST_EXACT)
        return out


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


class RandomRot90(_Repr):
    """With probability ``p``, rotate image and mask by ``k`` quarter turns, ``k`` uniform in {0, 1, 2, 3}
    (albumentations' ``RandomRotate90``, as the APSC-Net authors use it: ``k = 0`` is possible, so a
    rotation other than none happens with probability ``0.75 p``)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        if not _coin(self.p):
            return out
        k = _randint(0, 3)
        if k:
            out["image"] = torch.rot90(sample["image"], k, dims=(-2, -1)).contiguous()
            if sample.get("mask") is not None:
                out["mask"] = torch.rot90(sample["mask"], k, dims=(-2, -1)).contiguous()
        return out


class RandomRGBShift(_Repr):
    """With probability ``p``, add to each channel a shift drawn uniformly from ``[-limit, limit]`` (0..255
    units), clip to 0..255 and truncate to ``uint8``: albumentations' ``RGBShift`` (default limits 20), as
    the APSC-Net authors use it. The mask is untouched."""

    def __init__(self, p: float = 0.3, limit: float = 20.0) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.p, self.limit = p, float(limit)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        if not _coin(self.p):
            return out
        image = sample["image"]
        _check_uint8(image)
        shift = (torch.rand(image.shape[0], 1, 1) * 2 - 1) * self.limit
        out["image"] = (image.float() + shift.to(image.device)).clamp_(0, 255).to(torch.uint8)
        return out


class BySource(_Repr):
    """Apply ``transforms[sample["source"]]`` when the sample's source has its own pipeline, else
    ``default`` (e.g. the Object Jitter set without the photometric augmentation of the others)."""

    def __init__(self, default: Callable[[Sample], Sample], transforms: Mapping[str, Callable[[Sample], Sample]]) -> None:
        self.default, self.transforms = default, dict(transforms)

    def __call__(self, sample: Sample) -> Sample:
        return self.transforms.get(sample.get("source"), self.default)(sample)


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
    resize_range: tuple[int, int] | None = None,
    rot90_p: float = 0.0,
    rgb_shift_p: float = 0.0,
    rgb_shift_limit: float = 20.0,
    geometry_only: bool = False,
) -> Compose:
    """Training pipeline: resize -> crop/pad to ``crop_size`` -> flips -> rot90 -> resize/blur degradations
    -> JPEG -> RGB shift.

    The resize is relative (:class:`RandomScale` by a factor from ``scale``) or, with ``resize_range``,
    absolute (:class:`RandomAbsoluteResize`: each side to a random size in that range, aspect not kept, the
    APSC-Net authors' resize). JPEG comes after the geometric steps, as in a real re-upload (its 8x8 grid then
    matches the network input); the RGB shift after it, as in the authors' albumentations list
    (``RandomRotate90``, ``ImageCompression``, ``RGBShift``). Steps with probability 0 are left out.
    ``geometry_only``: only the resize and the crop (the authors' pipeline of their Object Jitter set).
    """
    ts: list[Callable[[Sample], Sample]] = []
    if resize_range is not None:
        ts.append(RandomAbsoluteResize(*resize_range))
    elif scale != (1.0, 1.0):
        ts.append(RandomScale(*scale))
    ts.append(RandomCropPad(crop_size, crop_bias=crop_bias))
    if geometry_only:
        return Compose(ts)
    if hflip > 0 or vflip > 0:
        ts.append(RandomFlip(hflip, vflip))
    if rot90_p > 0:
        ts.append(RandomRot90(rot90_p))
    if resize_p > 0:
        ts.append(RandomResize(resize_p))
    if blur_p > 0:
        ts.append(RandomGaussianBlur(blur_p))
    if jpeg_p > 0:
        ts.append(RandomJpeg(jpeg_p, jpeg_quality))
    if rgb_shift_p > 0:
        ts.append(RandomRGBShift(rgb_shift_p, rgb_shift_limit))
    return Compose(ts)
