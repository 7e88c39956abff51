"""Evaluation policies (fixed size, native size padded, or the APSC-Net authors' area rule) and
:func:`restore_prediction` / :func:`restore_logits`, which map a prediction back to the original image."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as TF
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

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


MIML_LARGE_AREA = 1536 * 1536
"""Images of at least this many pixels are squashed to :data:`MIML_LARGE_SIZE` by the authors' test resize."""
MIML_LARGE_SIZE = 976
MIML_SMALL_AREA = 512 * 512
"""JPEG files of at most this many pixels are squashed to :data:`MIML_SMALL_SIZE` by the authors' test resize."""
MIML_SMALL_SIZE = 512


def imghdr_jpeg(header: bytes) -> bool:
    """Whether Python's ``imghdr.what`` calls a file with these first bytes ``'jpeg'`` (the test the APSC-Net
    authors' resize uses; ``imghdr`` left the standard library in Python 3.13): ``JFIF`` or ``Exif`` at
    bytes 6..9, or a file starting ``FF D8 FF DB``. A JPEG that starts with another marker (e.g. an Adobe or
    ICC APP segment first) is *not* a JPEG to this test."""
    return header[6:10] in (b"JFIF", b"Exif") or header[:4] == b"\xff\xd8\xff\xdb"


def file_is_imghdr_jpeg(path: str | os.PathLike[str] | None) -> bool:
    """:func:`imghdr_jpeg` of a file's first 32 bytes (``False`` without a path or for an unreadable file)."""
    if not path:
        return False
    try:
        with open(path, "rb") as f:
            return imghdr_jpeg(f.read(32))
    except OSError:
        return False


def miml_official_size(h: int, w: int, is_jpeg: bool) -> tuple[int, int]:
    """Test-time size of the APSC-Net authors' inference scripts (qcf-568/MIML ``models for IML``, the
    ``RESIZE`` step of ``test_pipeline`` with ``keep_ratio=False``), from the image area ``a = h * w``:

    - ``a >= 1536 * 1536``: squashed to 976 x 976 (aspect ratio not kept);
    - otherwise, a JPEG file (:func:`imghdr_jpeg`) with ``a <= 512 * 512``: squashed to 512 x 512;
    - otherwise the native size.
    """
    a = h * w
    if a >= MIML_LARGE_AREA:
        return MIML_LARGE_SIZE, MIML_LARGE_SIZE
    if is_jpeg and a <= MIML_SMALL_AREA:
        return MIML_SMALL_SIZE, MIML_SMALL_SIZE
    return h, w


class MIMLOfficialResize(_Repr):
    """Resize to :func:`miml_official_size`; whether the image is a JPEG is read from the header of
    ``sample["path"]`` (no path: not a JPEG). The image is resampled bilinearly without antialiasing (as
    OpenCV's ``INTER_LINEAR`` in ``mmcv.imresize``; values may differ from OpenCV's fixed-point arithmetic by
    one grey level), the mask with ``NEAREST_EXACT`` (scoring uses the untouched ``mask_orig``)."""

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        image = sample["image"]
        _check_image(image)
        h, w = image.shape[-2:]
        size = miml_official_size(h, w, file_is_imghdr_jpeg(sample.get("path")))
        if size == (h, w):
            return out
        out["image"] = F.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=False)
        if sample.get("mask") is not None:
            out["mask"] = F.resize(sample["mask"], list(size), interpolation=InterpolationMode.NEAREST_EXACT)
        return out


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
    - ``"miml_official"``: the APSC-Net authors' test resize (:class:`MIMLOfficialResize`, by area and file
      type), no padding (the model pads if it must; APSC-Net does not).

    Map predictions back with :func:`restore_prediction` (or :func:`restore_logits`).
    """
    if policy == "fixed":
        return Compose([RecordOriginal(), Resize(size), PadToMultiple(1)])
    if policy == "native":
        return Compose([RecordOriginal(), NativeRescale(max_side, min_side), PadToMultiple(32)])
    if policy == "miml_official":
        return Compose([RecordOriginal(), MIMLOfficialResize(), PadToMultiple(1)])
    raise ValueError(f"unknown evaluation policy {policy!r}; expected 'fixed', 'native' or 'miml_official'")


EVAL_POLICIES = ("fixed", "native", "miml_official")


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


def restore_logits(logits: torch.Tensor, valid_size: SizeLike, orig_size: SizeLike) -> torch.Tensor:
    """Map per-sample logits (…, h, w) back to the original image as the APSC-Net authors' segmentor does
    (``whole_inference`` with ``rescale=True``): crop to ``valid_size``, then plain bilinear resizing
    (``align_corners=False``, no antialiasing) of the *logits* to ``orig_size``; the probabilities are taken
    after that. Returns float."""
    vh, vw = _pair(valid_size)
    oh, ow = _pair(orig_size)
    lead = logits.shape[:-2]
    x = logits[..., :vh, :vw].float()
    if (vh, vw) == (oh, ow):
        return x
    x = TF.interpolate(x.reshape(1, -1, vh, vw), size=(oh, ow), mode="bilinear", align_corners=False)
    return x.reshape(*lead, oh, ow)
