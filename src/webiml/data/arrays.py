"""Small numpy helpers on images and masks: resizing with PIL, OpenCV-exact resizing (numpy), a spatial
Gaussian blur, tight boxes.

Shared by the synthetic generators (:mod:`webiml.data.procedural`, :mod:`webiml.data.forgeries`,
:mod:`webiml.data.photo_pool`, :mod:`webiml.data.synthetic`) and Object Jitter (:mod:`webiml.data.jitter`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

__all__ = ["bbox", "gaussian2d", "resize_bool", "resize_float", "resize_labels", "resize_linear_cv", "resize_nearest_cv",
           "resize_rgb"]


def resize_float(arr: np.ndarray, height: int, width: int, resample: Image.Resampling = Image.Resampling.BILINEAR) -> np.ndarray:
    """Resize a 2-D float array with PIL (mode F)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32)).resize((width, height), resample))


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def resize_bool(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(im) > 127


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    if labels.shape == (height, width):
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST))


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty region")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def gaussian2d(arr: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the two spatial axes only."""
    if sigma <= 0:
        return arr
    s = (sigma, sigma) + (0,) * (arr.ndim - 2)
    return ndi.gaussian_filter(arr, s, mode="reflect")


# --------------------------------------------------------------------------------------------------
# OpenCV's cv2.resize in numpy (code written from OpenCV's documented algorithm, no OpenCV dependency)


def _linear_taps(src: int, dst: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR table for one axis: source indices and 11-bit fixed-point weights.

    ``f = float32((d + 0.5) * (src / dst) - 0.5)``, ``s = floor(f)``, weights ``rint((1 - frac) * 2048)`` and
    ``rint(frac * 2048)``; the horizontal axis clamps ``s`` (and the weight) to the image, the vertical one keeps
    the weights and clamps only the rows read, as OpenCV does.
    """
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp:
        edge = (s < 0) | (s >= src - 1)
        f[edge] = 0.0
        s = np.clip(s, 0, src - 1)
    w0 = np.rint((np.float32(1.0) - f) * np.float32(2048)).astype(np.int32)
    w1 = np.rint(f * np.float32(2048)).astype(np.int32)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def resize_linear_cv(image: np.ndarray, height: int, width: int,
                     crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``cv2.resize(image, (width, height))`` (INTER_LINEAR) of a uint8 (H, W) or (H, W, C) array, bit-exact;
    ``crop=(y0, y1, x0, x1)`` computes only that part of the result (``resize(...)[y0:y1, x0:x1]``).

    OpenCV resamples 8-bit images in fixed point: a horizontal pass with 11-bit weights into int32, then a
    vertical pass computed as ``(((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16) + 2) >> 2`` (its SIMD
    formula, which OpenCV applies to whole rows). Measured identical to opencv-python-headless 4.5.5, 4.8.1,
    4.10, 4.12 and 4.14 (x86-64 wheels) on 600 random images and 0/1 masks, up- and downscaling (other CPU
    builds not measured). No antialiasing on downscaling (as OpenCV).
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"resize_linear_cv needs uint8 (H, W[, C]), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    y0, y1, x0, x1 = (0, height, 0, width) if crop is None else crop
    if (h, w) == (height, width):
        return img[y0:y1, x0:x1].copy()
    plane = img if img.ndim == 3 else img[..., None]
    xs0, xs1, a0, a1 = (t[x0:x1] for t in _linear_taps(w, width, clamp=True))
    ys0, ys1, b0, b1 = (t[y0:y1] for t in _linear_taps(h, height, clamp=False))
    src = plane.astype(np.int32)  # every intermediate fits: 255 * 2048 * 2048 >> 4 < 2^31
    rows = src[:, xs0] * a0[None, :, None] + src[:, xs1] * a1[None, :, None]  # (h, width, C), scale 2^11
    top, bottom = rows[ys0] >> 4, rows[ys1] >> 4
    out = ((top * b0[:, None, None]) >> 16) + ((bottom * b1[:, None, None]) >> 16)
    out = np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)
    return out if img.ndim == 3 else out[..., 0]


def resize_nearest_cv(array: np.ndarray, height: int, width: int,
                      crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST)``: source pixel
    ``min(floor(d * src / dst), src - 1)`` on each axis (no half-pixel offset; any dtype); ``crop`` as in
    :func:`resize_linear_cv`."""
    a = np.asarray(array)
    h, w = a.shape[:2]
    y0, y1, x0, x1 = (0, height, 0, width) if crop is None else crop
    ys = np.minimum(np.floor(np.arange(y0, y1) * (1.0 / (height / h))).astype(np.int64), h - 1)
    xs = np.minimum(np.floor(np.arange(x0, x1) * (1.0 / (width / w))).astype(np.int64), w - 1)
    return a[ys[:, None], xs[None, :]]
