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
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as TF
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms import InterpolationMode

from webiml.data.masks import IGNORE

Sample = dict[str, Any]
SizeLike = int | Sequence[int] | torch.Tensor

__all__ = [
    "Compose",
    "Degrade",
    "GpuAugment",
    "NativeRescale",
    "PadToMultiple",
    "RandomCropPad",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomJpeg",
    "RandomResize",
    "RandomScale",
    "RecordOriginal",
    "Resize",
    "collate_iml",
    "degrade",
    "gaussian_blur",
    "gaussian_noise",
    "jpeg",
    "make_eval_transform",
    "make_train_transform",
    "native_size",
    "resize_down_up",
    "restore_prediction",
]


# --------------------------------------------------------------------------------------------------------------
# helpers


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


# --------------------------------------------------------------------------------------------------------------
# deterministic degradations on uint8 (3, H, W) images


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


# --------------------------------------------------------------------------------------------------------------
# sample transforms


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


class Resize(_Repr):
    """Resize image (bilinear, antialias) and mask (nearest) to a fixed ``size``; an int means a square."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = _pair(size)

    def __call__(self, sample: Sample) -> Sample:
        return _resize_pair(sample, self.size)


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


# --------------------------------------------------------------------------------------------------------------
# pipelines


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


# --------------------------------------------------------------------------------------------------------------
# batching and on-device augmentation

_PAD_VALUE = {"image": 0.0, "mask": IGNORE}
_ALWAYS_LIST = {"mask_orig"}


def collate_iml(batch: list[Sample]) -> dict[str, Any]:
    """Collate samples into a batch.

    Same-shape tensors are stacked and numbers become tensors. ``image``/``mask`` of different sizes are padded
    bottom/right to the batch maximum (image 0, mask IGNORE) and stacked; ``valid_size`` is then added when the
    samples lack it. ``mask_orig``, other tensors whose shapes differ, strings and anything else stay lists.
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
