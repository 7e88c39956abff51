"""Random region masks: a smooth irregular blob with a bounded area, the largest connected component."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from webiml.data.noise import fractal_noise

__all__ = ["largest_component", "random_blob_mask"]


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def random_blob_mask(height: int, width: int, rng: np.random.Generator, *,
                     min_area: float = 0.01, max_area: float = 0.25) -> np.ndarray:
    """A smooth irregular connected blob (bool (H, W)) whose area fraction lies in ``[min_area, max_area]``.

    A rotated elliptic bump plus smooth noise is thresholded at the quantile giving a log-uniform target
    area; the largest connected component is kept and its holes filled.
    """
    if not 0.0 < min_area <= max_area < 1.0:
        raise ValueError(f"need 0 < min_area <= max_area < 1, got {min_area}, {max_area}")
    n = height * width
    lo_px, hi_px = min_area * n, max_area * n
    if math.floor(hi_px) < math.ceil(lo_px):
        raise ValueError(f"no blob area in [{min_area}, {max_area}] fits a {height}x{width} image")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    mask = np.zeros((height, width), bool)
    for attempt in range(12):
        frac = math.exp(rng.uniform(math.log(min_area), math.log(max_area)))
        ratio = rng.uniform(0.35, 1.0)
        radius = math.sqrt(frac * n / math.pi)
        ry, rx = radius * math.sqrt(ratio), radius / math.sqrt(ratio)
        cy = rng.uniform(min(ry, height / 2), max(height - ry, height / 2))
        cx = rng.uniform(min(rx, width / 2), max(width - rx, width / 2))
        theta = rng.uniform(0, math.pi)
        c, s = math.cos(theta), math.sin(theta)
        u = ((xx - cx) * c + (yy - cy) * s) / rx
        v = (-(xx - cx) * s + (yy - cy) * c) / ry
        roughness = 0.0 if attempt >= 10 else rng.uniform(0.15, 0.6)
        cell = max(radius * rng.uniform(0.4, 1.0), 2.0)
        f = -(u * u + v * v) + roughness * fractal_noise(height, width, rng, cell, octaves=3)
        k = int(round(frac * n))
        k = min(max(k, math.ceil(lo_px)), math.floor(hi_px))
        thr = np.partition(f.ravel(), n - k)[n - k]
        mask = largest_component(f >= thr)
        mask = ndi.binary_fill_holes(mask)
        area = int(mask.sum())
        if lo_px <= area <= hi_px:
            return mask
    # fallback: a plain ellipse-ish threshold can still miss on tiny images; grow/shrink to the bounds
    area = int(mask.sum())
    order = np.argsort(((yy - height / 2) ** 2 + (xx - width / 2) ** 2).ravel(), kind="stable")
    k = min(max(area, math.ceil(lo_px)), math.floor(hi_px))
    out = np.zeros(n, bool)
    out[order[:k]] = True
    return out.reshape(height, width)
