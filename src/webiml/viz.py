"""Heatmaps and overlays of IML predictions: a matplotlib colormap for probabilities, a red tint with the mask's
outline (scikit-image) for overlays. The HTML pages that show them are :mod:`webiml.reports`'s."""

from __future__ import annotations

import numpy as np

HEATMAP_CMAP = "viridis"
"""The heatmaps' matplotlib colormap: perceptually uniform, dark purple (probability 0) to yellow (1)."""
OVERLAY_TINT = (255, 40, 40)
"""Overlay: the colour blended into the image, weighted by the manipulation probability."""
OUTLINE_COLOUR = (255, 255, 0)
"""Overlay: the colour of the mask's outline at the pixel threshold."""


def colorize(prob: np.ndarray) -> np.ndarray:
    """Map a probability map (H, W) in [0, 1] to an RGB ``uint8`` heatmap (H, W, 3) with :data:`HEATMAP_CMAP`
    (values are clipped to [0, 1]; NaN counts as 0)."""
    from matplotlib import colormaps

    p = np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return np.ascontiguousarray(colormaps[HEATMAP_CMAP](p, bytes=True)[..., :3])


def overlay(image: np.ndarray, prob: np.ndarray, alpha: float = 0.6, threshold: float = 0.5) -> np.ndarray:
    """The image with manipulated regions highlighted: :data:`OVERLAY_TINT` weighted by probability, outline
    (:data:`OUTLINE_COLOUR`) of the mask at ``threshold``."""
    img = np.asarray(image, dtype=np.float32)
    p = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)[..., None]
    grey = img.mean(axis=2, keepdims=True).repeat(3, axis=2)
    base = 0.35 * img + 0.65 * grey  # desaturate so the highlight stands out
    red = np.array(OVERLAY_TINT, dtype=np.float32)
    out = base * (1 - alpha * p) + red * (alpha * p)
    edge = _outline(p[..., 0] >= threshold)
    out[edge] = OUTLINE_COLOUR
    return np.clip(out, 0, 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's inner boundary (its pixels with a 4-neighbour outside it; the image border is not a boundary)."""
    from skimage.segmentation import find_boundaries

    return find_boundaries(np.asarray(mask, dtype=bool), connectivity=1, mode="inner")
