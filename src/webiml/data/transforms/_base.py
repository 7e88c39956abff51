"""Shared pieces of the sample transforms: the sample type, random draws from torch's global RNG, checks,
aligned resizing and bottom/right padding, :class:`Compose`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as TF
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

Sample = dict[str, Any]
SizeLike = int | Sequence[int] | torch.Tensor


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(()).item()


def _randint(lo: int, hi: int) -> int:
    """Uniform integer in ``[lo, hi]`` (both inclusive)."""
    return int(torch.randint(lo, hi + 1, ()).item())


def _coin(p: float) -> bool:
    return p > 0 and (p >= 1 or torch.rand(()).item() < p)


def _pair(size: SizeLike) -> tuple[int, int]:
    if isinstance(size, torch.Tensor):
        size = size.tolist()
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return h, w


def _range(value: float | Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else value
    if lo > hi:
        raise ValueError(f"{name}: expected (low, high) with low <= high, got {value!r}")
    return float(lo), float(hi)


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise TypeError(f"expected an image tensor (C, H, W), got {type(image).__name__} "
                        f"{tuple(getattr(image, 'shape', ()))}")


def _check_uint8(image: torch.Tensor) -> None:
    _check_image(image)
    if image.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image (3, H, W), got dtype {image.dtype}")


def _resize_pair(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize image (bilinear, antialias) and mask (nearest-exact) of ``sample`` to ``size``."""
    out = dict(sample)
    image = sample["image"]
    _check_image(image)
    if tuple(image.shape[-2:]) == size:
        return out
    out["image"] = F.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    if sample.get("mask") is not None:
        out["mask"] = F.resize(sample["mask"], list(size), interpolation=InterpolationMode.NEAREST_EXACT)
    return out


def _pad_bottom_right(t: torch.Tensor, ph: int, pw: int, value: float) -> torch.Tensor:
    if ph == 0 and pw == 0:
        return t
    return TF.pad(t, (0, pw, 0, ph), mode="constant", value=value)


def _scaled(n: int, s: float) -> int:
    return max(1, int(round(n * s)))


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        inner = ",\n".join(f"    {t!r}" for t in self.transforms)
        return f"{type(self).__name__}([\n{inner}\n])"


class _Repr:
    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"
