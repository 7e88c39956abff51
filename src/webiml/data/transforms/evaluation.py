"""Evaluation policies (fixed size or native size, padded) and :func:`restore_prediction`, which maps a
prediction back to the original image."""

from __future__ import annotations

import torch
import torch.nn.functional as TF

from webiml.data.masks import IGNORE
from webiml.data.transforms._base import (
    Compose,
    Sample,
    SizeLike,
    _check_image,
    _pad_bottom_right,
    _pair,
    _Repr,
    _resize_pair,
    _scaled,
)
from webiml.data.transforms.sample import Resize


def native_size(h: int, w: int, max_side: int = 2048, min_side: int = 256) -> tuple[int, int]:
    """Size under the "native" policy, aspect ratio kept: a long side above ``max_side`` is brought down to
    ``max_side``; otherwise a short side below ``min_side`` is brought up to ``min_side``, but never so far that
    the long side exceeds ``max_side`` (the memory cap wins over the minimum)."""
    long, short = max(h, w), min(h, w)
    if long > max_side:
        s = max_side / long
    elif short < min_side:
        s = min(min_side / short, max_side / long)
    else:
        return h, w
    return _scaled(h, s), _scaled(w, s)


class NativeRescale(_Repr):
    """Rescale image (bilinear) and mask (nearest) to :func:`native_size`."""

    def __init__(self, max_side: int = 2048, min_side: int = 256) -> None:
        if not 0 < min_side <= max_side:
            raise ValueError(f"need 0 < min_side <= max_side, got {min_side}, {max_side}")
        self.max_side, self.min_side = max_side, min_side

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["image"].shape[-2:]
        return _resize_pair(sample, native_size(h, w, self.max_side, self.min_side))


class PadToMultiple(_Repr):
    """Pad bottom/right to multiples of ``divisor`` (image 0, mask IGNORE) and set ``sample["valid_size"]``
    to the size before padding (LongTensor [h, w]). ``divisor=1`` only records the size."""

    def __init__(self, divisor: int = 32) -> None:
        if divisor < 1:
            raise ValueError(f"divisor must be >= 1, got {divisor}")
        self.divisor = divisor

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        image = sample["image"]
        _check_image(image)
        h, w = image.shape[-2:]
        ph, pw = (-h) % self.divisor, (-w) % self.divisor
        out["image"] = _pad_bottom_right(image, ph, pw, 0)
        if sample.get("mask") is not None:
            out["mask"] = _pad_bottom_right(sample["mask"], ph, pw, IGNORE)
        out["valid_size"] = torch.tensor([h, w], dtype=torch.long)
        return out


class RecordOriginal(_Repr):
    """Record ``sample["orig_size"]`` (LongTensor [H, W]) and keep the untouched target as
    ``sample["mask_orig"]`` (when there is a mask), for scoring at the original resolution."""

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        _check_image(sample["image"])
        out["orig_size"] = torch.tensor(list(sample["image"].shape[-2:]), dtype=torch.long)
        if sample.get("mask") is not None:
            out["mask_orig"] = sample["mask"]
        return out


def make_eval_transform(policy: str, size: int = 512, max_side: int = 2048, min_side: int = 256) -> Compose:
    """Evaluation pipeline. Every policy records ``orig_size``/``mask_orig`` first and sets ``valid_size``.

    - ``"fixed"``: resize to (``size``, ``size``).
    - ``"native"``: keep the native size within [``min_side``, ``max_side``] (:func:`native_size`), then pad
      bottom/right to multiples of 32.

    Map predictions back with :func:`restore_prediction`.
    """
    if policy == "fixed":
        return Compose([RecordOriginal(), Resize(size), PadToMultiple(1)])
    if policy == "native":
        return Compose([RecordOriginal(), NativeRescale(max_side, min_side), PadToMultiple(32)])
    raise ValueError(f"unknown evaluation policy {policy!r}; expected 'fixed' or 'native'")


def restore_prediction(pred: torch.Tensor, valid_size: SizeLike, orig_size: SizeLike) -> torch.Tensor:
    """Map a per-sample prediction (…, h, w), e.g. (1, h, w), back to the original image: crop to
    ``valid_size`` then resize bilinearly (antialias when shrinking) to ``orig_size``. Returns float."""
    vh, vw = _pair(valid_size)
    oh, ow = _pair(orig_size)
    lead = pred.shape[:-2]
    x = pred[..., :vh, :vw]
    if not x.is_floating_point():
        x = x.float()
    if (vh, vw) == (oh, ow):
        return x
    x = x.reshape(1, -1, vh, vw)
    x = TF.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False, antialias=(oh < vh or ow < vw))
    return x.reshape(*lead, oh, ow)
