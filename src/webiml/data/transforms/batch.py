"""Batching (:func:`collate_iml`) and batch-level photometric augmentation on the device (:class:`GpuAugment`)."""

from __future__ import annotations

import math
from typing import Any

import kornia.augmentation as K
import numpy as np
import torch

from webiml.data.masks import IGNORE
from webiml.data.transforms._base import Sample, _pad_bottom_right, _range

_PAD_VALUE = {"image": 0.0, "mask": IGNORE}
_ALWAYS_LIST = {"mask_orig"}
_PAD_TO_LARGEST = {"dct": 0}  # JPEG coefficients on each padded image's 8x8 grid (AttachJpegDCT)


def collate_iml(batch: list[Sample]) -> dict[str, Any]:
    """Collate samples into a batch.

    Same-shape tensors are stacked and numbers become tensors. ``image``/``mask`` of different sizes are padded
    bottom/right to the batch maximum (image 0, mask IGNORE) and stacked; ``valid_size`` is then added when the
    samples lack it. JPEG coefficients (``dct``) are padded with zeros to the largest grid. ``mask_orig``, other tensors whose shapes differ, strings and anything else stay lists.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    images = [s.get("image") for s in batch]
    padded = False
    if all(isinstance(im, torch.Tensor) for im in images) and len({tuple(im.shape) for im in images}) > 1:
        padded = True
        hmax = max(im.shape[-2] for im in images)
        wmax = max(im.shape[-1] for im in images)
    for key in batch[0]:
        values = [s.get(key) for s in batch]
        if key in _ALWAYS_LIST:
            out[key] = values
        elif padded and key in _PAD_VALUE and all(isinstance(v, torch.Tensor) for v in values):
            out[key] = torch.stack([
                _pad_bottom_right(v, hmax - v.shape[-2], wmax - v.shape[-1], _PAD_VALUE[key]) for v in values
            ])
        elif key in _PAD_TO_LARGEST and all(isinstance(v, torch.Tensor) for v in values):
            gh, gw = max(v.shape[-2] for v in values), max(v.shape[-1] for v in values)
            out[key] = torch.stack([_pad_bottom_right(v, gh - v.shape[-2], gw - v.shape[-1], _PAD_TO_LARGEST[key]) for v in values])
        elif all(isinstance(v, torch.Tensor) for v in values):
            same = len({(tuple(v.shape), v.dtype) for v in values}) == 1
            out[key] = torch.stack(values) if same else values
        elif all(isinstance(v, np.ndarray) for v in values) and len({v.shape for v in values}) == 1:
            out[key] = torch.stack([torch.as_tensor(v) for v in values])
        elif all(isinstance(v, (bool, int, float, np.number, np.bool_)) for v in values):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    if padded and "valid_size" not in out:
        out["valid_size"] = torch.tensor([list(im.shape[-2:]) for im in images], dtype=torch.long)
    return out


def _to_float01(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"expected uint8 or float images, got {images.dtype}")
    return images


class GpuAugment(torch.nn.Module):
    """Batch-level photometric augmentation on the device, image only (masks stay as they are).

    Colour jitter (brightness/contrast/saturation/hue, with probability ``jitter_p``), Gaussian blur (sigma
    drawn from ``blur_sigma``, probability ``blur_p``) and Gaussian noise (std ``noise_std`` on the [0, 1]
    scale, probability ``noise_p``), each decided per image, via :mod:`kornia.augmentation`.

    Input (B, 3, H, W) uint8 or float in [0, 1]; output float in [0, 1]. In eval mode only the conversion to
    float is done.
    """

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
        jitter_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 1.5),
        blur_p: float = 0.2,
        noise_std: float = 0.02,
        noise_p: float = 0.2,
    ) -> None:
        super().__init__()
        augs: list[torch.nn.Module] = []
        if jitter_p > 0 and any(v > 0 for v in (brightness, contrast, saturation, hue)):
            augs.append(K.ColorJitter(brightness, contrast, saturation, hue, p=jitter_p))
        if blur_p > 0:
            lo, hi = _range(blur_sigma, "blur_sigma")
            k = 2 * math.ceil(3 * hi) + 1
            augs.append(K.RandomGaussianBlur((k, k), (lo, hi), p=blur_p))
        if noise_p > 0 and noise_std > 0:
            augs.append(K.RandomGaussianNoise(std=noise_std, p=noise_p))
        self.augs = torch.nn.Sequential(*augs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(images.shape)}")
        x = _to_float01(images)
        if not self.training or len(self.augs) == 0:
            return x
        return self.augs(x).clamp_(0.0, 1.0)
