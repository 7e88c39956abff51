"""Smooth random noise fields (bicubic-upsampled Gaussian grids and their fractal sums), the raw material
of procedural textures (:mod:`webiml.data.procedural`) and random blobs (:mod:`webiml.data.regions`)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from webiml.data.arrays import resize_float

__all__ = ["fractal_noise", "smooth_noise"]


def smooth_noise(height: int, width: int, rng: np.random.Generator, cell_y: float, cell_x: float | None = None) -> np.ndarray:
    """Smooth zero-mean unit-std noise with features about ``cell`` pixels large (bicubic-upsampled grid)."""
    cell_x = cell_y if cell_x is None else cell_x
    cell_y, cell_x = max(float(cell_y), 1.0), max(float(cell_x), 1.0)
    if cell_y == 1.0 and cell_x == 1.0:
        return rng.standard_normal((height, width), dtype=np.float32)
    bh, bw = height / cell_y, width / cell_x  # the output's extent in grid units
    gh, gw = int(math.ceil(bh)) + 4, int(math.ceil(bw)) + 4
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    oy, ox = rng.uniform(2.0, gh - 2.0 - bh), rng.uniform(2.0, gw - 2.0 - bw)
    out = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC,
                                                 box=(ox, oy, ox + bw, oy + bh)))
    out = out - out.mean()
    return out / (out.std() + 1e-6)


def fractal_noise(height: int, width: int, rng: np.random.Generator, cell: float, octaves: int = 4,
         persistence: float = 0.5, aspect: float = 1.0) -> np.ndarray:
    """Fractal (multi-octave) noise, unit std. The octaves are summed at the finest octave's grid
    resolution and upsampled once."""
    cells = [cell / 2**k for k in range(octaves) if cell / 2**k >= 1.0] or [1.0]
    fine_y, fine_x = cells[-1], max(cells[-1] * aspect, 1.0)
    sh, sw = max(2, int(math.ceil(height / fine_y))), max(2, int(math.ceil(width / fine_x)))
    acc = np.zeros((sh, sw), np.float32)
    amp = 1.0
    for c in cells:
        ratio = c / cells[-1]
        acc += amp * smooth_noise(sh, sw, rng, ratio, ratio)
        amp *= persistence
    if (sh, sw) != (height, width):
        acc = resize_float(acc, height, width, Image.Resampling.BICUBIC)
    acc = acc - acc.mean()
    return acc / (acc.std() + 1e-6)
