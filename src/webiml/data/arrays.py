"""Small numpy helpers on images and masks: resizing with PIL, a spatial Gaussian blur, tight boxes.

Shared by the synthetic generators (:mod:`webiml.data.procedural`, :mod:`webiml.data.forgeries`,
:mod:`webiml.data.photo_pool`, :mod:`webiml.data.synthetic`) and Object Jitter (:mod:`webiml.data.jitter`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

__all__ = ["bbox", "gaussian2d", "resize_bool", "resize_float", "resize_labels", "resize_rgb"]


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
