"""Sample transforms that keep image and mask aligned, evaluation policies, and batch-level GPU augmentation.

A *sample* is a dict ``{"image": uint8 (3, H, W), "mask": float32 (1, H, W), ...}`` where the mask
follows :mod:`webiml.data.masks` (0 authentic, 1 manipulated, :data:`~webiml.data.masks.IGNORE` unsupervised).
``"mask"`` may be absent (inference); every other key is passed through untouched. Transforms return a new
dict and never modify their input in place.

Randomness comes from torch's global RNG (``torch.rand`` / ``torch.randint``), so DataLoader worker seeding
applies and ``torch.manual_seed`` makes a pipeline reproducible.

Geometric rules:

- the image is resampled bilinearly with antialiasing; the mask only ever with ``NEAREST_EXACT`` (the nearest
  source pixel under the same half-pixel convention as bilinear, so both stay aligned and IGNORE survives exactly);
- padding is always bottom/right, image filled with 0 and mask with IGNORE, so padding is never supervised.

Photometric degradations (JPEG, blur, noise, down-up resizing) touch the image only. Their deterministic
functional versions (:func:`jpeg`, :func:`gaussian_blur`, :func:`gaussian_noise`, :func:`resize_down_up`,
:func:`degrade`) serve robustness protocols.

The package is split along these seams: :mod:`~webiml.data.transforms.sample` (geometric sample transforms,
:func:`make_train_transform`), :mod:`~webiml.data.transforms.degradations`,
:mod:`~webiml.data.transforms.evaluation` (eval policies, :func:`restore_prediction`) and
:mod:`~webiml.data.transforms.batch` (:func:`collate_iml`, :class:`GpuAugment`); every public name is
importable from ``webiml.data.transforms`` (configs name ``webiml.data.transforms.GpuAugment``).
"""

from __future__ import annotations

from webiml.data.transforms._base import Compose, Sample, SizeLike
from webiml.data.transforms.batch import GpuAugment, collate_iml
from webiml.data.transforms.degradations import (
    Degrade,
    RandomGaussianBlur,
    RandomJpeg,
    RandomResize,
    degrade,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    resize_down_up,
)
from webiml.data.transforms.evaluation import (
    MIMLOfficialResize,
    NativeRescale,
    PadToMultiple,
    RecordOriginal,
    make_eval_transform,
    miml_official_size,
    native_size,
    restore_logits,
    restore_prediction,
)
from webiml.data.transforms.jpeg_dct import AttachJpegDCT
from webiml.data.transforms.sample import (
    BySource,
    RandomAbsoluteResize,
    RandomCropPad,
    RandomFlip,
    RandomRGBShift,
    RandomRot90,
    RandomScale,
    Resize,
    make_train_transform,
)

__all__ = [
    "AttachJpegDCT",
    "BySource",
    "Compose",
    "Degrade",
    "GpuAugment",
    "MIMLOfficialResize",
    "NativeRescale",
    "PadToMultiple",
    "RandomAbsoluteResize",
    "RandomCropPad",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomJpeg",
    "RandomRGBShift",
    "RandomResize",
    "RandomRot90",
    "RandomScale",
    "RecordOriginal",
    "Resize",
    "Sample",
    "SizeLike",
    "collate_iml",
    "degrade",
    "gaussian_blur",
    "gaussian_noise",
    "jpeg",
    "make_eval_transform",
    "make_train_transform",
    "miml_official_size",
    "native_size",
    "resize_down_up",
    "restore_logits",
    "restore_prediction",
]
