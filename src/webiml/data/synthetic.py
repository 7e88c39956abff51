"""Synthetic forgeries with exact masks: splicing, copy-move and object removal.

Everything here is deterministic given a :class:`numpy.random.Generator` and needs only numpy, PIL and
scipy. The forgeries feed the tests, the CPU quickstart and (with natural photos) real training.

Building blocks:

- :func:`procedural_scene` / :func:`procedural_photo`: photo-like images made from nothing (illumination,
  textured regions, shaded objects with shadows, lens blur, sensor noise) plus the masks of their objects.
- :func:`random_blob_mask`: a smooth irregular region with a bounded area.
- :func:`make_splice`, :func:`make_copy_move`, :func:`make_removal`: one edit each, returning a
  :class:`Forgery` whose mask is exact with respect to the edit that was made.
- :class:`PhotoPool`: photos with region masks (procedural, a folder, COCO panoptic, BSDS500).
- :func:`synthesize`: one random forgery from a pool, with optional JPEG double compression.
- :func:`write_synthetic_dataset`: a folder of images, masks and a manifest.

Mask conventions (as everywhere in webiml): 8-bit, 0 = authentic, 255 = manipulated.

- splice: the pasted pixels, i.e. ``alpha > 0.5`` of the alpha actually used for blending. With
  feathered edges, pixels with ``0 < alpha <= 0.5`` are slightly changed but not marked.
- copy-move: **only the pasted (target) region** is marked, not the source region it was copied from
  (the CASIA convention; NoSo marks both).
- removal: the filled region (the object's mask, slightly dilated).
- authentic: an all-zero mask.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from webiml.data.manifest import ManifestRecord, read_manifest, write_manifest
from webiml.io import atomic_write_text, read_image, save_image

__all__ = [
    "KINDS",
    "Forgery",
    "PhotoPool",
    "jpeg_compress",
    "make_copy_move",
    "make_removal",
    "make_splice",
    "procedural_photo",
    "procedural_scene",
    "random_blob_mask",
    "synthesize",
    "write_synthetic_dataset",
]

KINDS: tuple[str, ...] = ("splice", "copy_move", "removal")
_GENERATOR_VERSION = 1  # bump when the output of the generators changes (invalidates params.json caches)


@dataclass
class Forgery:
    """One synthetic sample.

    ``image`` (H, W, 3) uint8 and ``mask`` (H, W) uint8 in {0, 255} are the sample. The other fields are
    for inspection and tests: ``alpha`` is the float32 blending alpha actually used (``mask == (alpha >
    0.5) * 255``; the mask as float for removal; ``None`` for authentic), ``source`` the photo the edit
    was applied to (same size as ``image``, after the first JPEG compression if any), ``info`` the
    random choices made (scale, feather sigma, placement, JPEG qualities ``q1``/``q2``, ...). For splice
    and copy-move ``info["shift"] = (dy, dx)``: with ``scale == 1`` and no flip, the pixel pasted at
    ``(y, x)`` comes from ``(y - dy, x - dx)`` of the donor (splice) or of the same image (copy-move).
    """

    image: np.ndarray
    mask: np.ndarray
    kind: str
    alpha: np.ndarray | None = None
    source: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> int:
        return int(self.kind != "authentic")


# --------------------------------------------------------------------------------------------------
# small helpers


def _to_mask(region: np.ndarray) -> np.ndarray:
    return region.astype(np.uint8) * 255


def _resize_float(arr: np.ndarray, height: int, width: int, resample: Image.Resampling = Image.Resampling.BILINEAR) -> np.ndarray:
    """Resize a 2-D float array with PIL (mode F)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32)).resize((width, height), resample))


def _resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _resize_bool(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(im) > 127


def _resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    if labels.shape == (height, width):
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty region")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _gaussian2d(arr: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the two spatial axes only."""
    if sigma <= 0:
        return arr
    s = (sigma, sigma) + (0,) * (arr.ndim - 2)
    return ndi.gaussian_filter(arr, s, mode="reflect")


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode ``image`` as JPEG at ``quality`` (PIL/libjpeg, 4:2:0) and decode it again."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------------------------------
# noise fields and blobs


def _noise(height: int, width: int, rng: np.random.Generator, cell_y: float, cell_x: float | None = None) -> np.ndarray:
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


def _fbm(height: int, width: int, rng: np.random.Generator, cell: float, octaves: int = 4,
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
        acc += amp * _noise(sh, sw, rng, ratio, ratio)
        amp *= persistence
    if (sh, sw) != (height, width):
        acc = _resize_float(acc, height, width, Image.Resampling.BICUBIC)
    acc = acc - acc.mean()
    return acc / (acc.std() + 1e-6)


def _largest_component(mask: np.ndarray) -> np.ndarray:
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
        f = -(u * u + v * v) + roughness * _fbm(height, width, rng, cell, octaves=3)
        k = int(round(frac * n))
        k = min(max(k, math.ceil(lo_px)), math.floor(hi_px))
        thr = np.partition(f.ravel(), n - k)[n - k]
        mask = _largest_component(f >= thr)
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


# --------------------------------------------------------------------------------------------------
# procedural photos


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    h = rng.random()
    s = rng.beta(1.5, 2.5)
    v = rng.uniform(0.15, 0.92)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)


def _texture(height: int, width: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """A textured colour field (H, W, 3) in roughly [0, 1]."""
    colour = _random_colour(rng)
    kind = rng.choice(["fbm", "grain", "stripes", "smooth", "fbm"])
    amp = rng.uniform(0.04, 0.3)
    if kind == "fbm":
        lum = _fbm(height, width, rng, scale * rng.uniform(0.03, 0.3), octaves=int(rng.integers(3, 6)),
                   persistence=rng.uniform(0.45, 0.75))
    elif kind == "grain":
        aspect = rng.uniform(3, 10)
        if rng.random() < 0.5:
            lum = _fbm(height, width, rng, scale * rng.uniform(0.01, 0.05), octaves=3, aspect=aspect)
        else:
            lum = _fbm(height, width, rng, scale * rng.uniform(0.01, 0.05) * aspect, octaves=3, aspect=1 / aspect)
        lum = lum + 0.5 * _noise(height, width, rng, scale * 0.2)
    elif kind == "stripes":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        theta = rng.uniform(0, math.pi)
        period = scale * rng.uniform(0.02, 0.12)
        warp = _noise(height, width, rng, scale * 0.3) * rng.uniform(0, 2.0)
        lum = np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period + warp)
        lum = lum + 0.4 * _fbm(height, width, rng, scale * 0.05, octaves=3)
        amp *= 0.7
    else:  # smooth, e.g. a wall or the sky
        lum = _noise(height, width, rng, scale * rng.uniform(0.3, 1.0))
        amp *= 0.5
    tex = colour[None, None, :] * (1.0 + amp * lum[..., None])
    chroma_amp = rng.uniform(0.0, 0.08)
    if chroma_amp > 0.01:  # slow hue drift along a random chroma direction
        direction = rng.standard_normal(3).astype(np.float32)
        direction -= direction.mean()
        direction /= np.linalg.norm(direction) + 1e-6
        tex = tex + (chroma_amp * colour.mean()) * _noise(height, width, rng, scale * 0.25)[..., None] * direction
    return tex.astype(np.float32)


def _shape_mask(height: int, width: int, rng: np.random.Generator, frac: float) -> np.ndarray:
    """An object silhouette: rotated ellipse, star-shaped polygon or blob."""
    n = height * width
    kind = rng.choice(["ellipse", "polygon", "blob"])
    radius = math.sqrt(frac * n / math.pi)
    if kind == "blob":
        return random_blob_mask(height, width, rng, min_area=frac * 0.7, max_area=min(frac * 1.3, 0.9))
    ratio = rng.uniform(0.3, 1.0)
    ry, rx = radius * math.sqrt(ratio), radius / math.sqrt(ratio)
    cy = rng.uniform(0.1 * height, 0.9 * height)
    cx = rng.uniform(0.1 * width, 0.9 * width)
    theta = rng.uniform(0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    if kind == "ellipse":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        u = ((xx - cx) * c + (yy - cy) * s) / rx
        v = (-(xx - cx) * s + (yy - cy) * c) / ry
        return u * u + v * v <= 1.0
    k = int(rng.integers(3, 10))
    angles = np.sort(rng.uniform(0, 2 * math.pi, k))
    radii = rng.uniform(0.6, 1.3, k)
    pts = []
    for a, r in zip(angles, radii, strict=True):
        px, py = r * rx * math.cos(a), r * ry * math.sin(a)
        pts.append((cx + px * c - py * s, cy + px * s + py * c))
    im = Image.new("L", (width, height), 0)
    ImageDraw.Draw(im).polygon(pts, fill=255)
    mask = np.asarray(im) > 127
    if rng.random() < 0.5:  # round the corners
        mask = _gaussian2d(mask.astype(np.float32), radius * 0.15) > 0.5
    return mask


def _shade(mask: np.ndarray, light: np.ndarray, bulge: float, shininess: float, ks: float) -> tuple[np.ndarray, np.ndarray]:
    """Lambert + Blinn-Phong shading of a height field built from the distance transform of ``mask``."""
    d = ndi.distance_transform_edt(mask).astype(np.float32)
    dmax = max(float(d.max()), 1.0)
    height = np.sqrt(d / dmax) * dmax * bulge
    height = _gaussian2d(height, 1.0)
    gy, gx = np.gradient(height)
    nz = np.ones_like(gx)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny, nz = -gx / norm, -gy / norm, nz / norm
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0.0, 1.0)
    half = light + np.array([0.0, 0.0, 1.0], np.float32)
    half = half / np.linalg.norm(half)
    spec = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0.0, 1.0) ** shininess * ks
    return lambert, spec


def procedural_scene(height: int, width: int, rng: np.random.Generator, *,
                     n_objects: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """A photo-like RGB uint8 image and the bool masks of the visible parts of its objects.

    Background: 2-5 textured regions (bands or patches, soft or sharp borders) under a smooth
    illumination field and vignetting. Foreground: ``n_objects`` (default 1-4) shaded objects (ellipses,
    polygons, blobs) with cast shadows and specular highlights. Then lens blur, a tone curve and
    signal-dependent sensor noise. Object masks exclude what later objects occlude. For speed the
    scene is rendered at half resolution (images of 128 px and more) and upsampled before the noise.
    """
    h, w = int(height), int(width)
    rs = 0.5 if min(h, w) >= 128 else 1.0
    rh, rw = max(1, int(math.ceil(h * rs))), max(1, int(math.ceil(w * rs)))
    scale = float(min(rh, rw))
    yn = (np.arange(rh, dtype=np.float32) / max(rh - 1, 1) - 0.5)[:, None]
    xn = (np.arange(rw, dtype=np.float32) / max(rw - 1, 1) - 0.5)[None, :]

    # background regions ordered along a direction (landscape bands) or free patches
    k = int(rng.integers(2, 6))
    theta = rng.normal(math.pi / 2, 0.35) if rng.random() < 0.6 else rng.uniform(0, 2 * math.pi)
    ramp = xn * math.cos(theta) + yn * math.sin(theta)
    strength = rng.uniform(0.0, 8.0)
    slopes = np.sort(rng.uniform(-1, 1, k)).tolist()
    fields = np.stack([_noise(rh, rw, rng, scale * rng.uniform(0.15, 0.6)) + (2 * strength * slopes[i]) * ramp
                       for i in range(k)])
    temp = rng.uniform(6.0, 40.0)
    weights = np.exp(temp * (fields - fields.max(axis=0, keepdims=True)))
    weights /= weights.sum(axis=0, keepdims=True)
    img = np.zeros((rh, rw, 3), np.float32)
    for i in range(k):
        img += weights[i][..., None] * _texture(rh, rw, rng, scale)

    # illumination: linear gradient, large-scale variation, vignetting
    phi = rng.uniform(0, 2 * math.pi)
    gain = 1.0 + rng.uniform(0.0, 0.5) * (xn * math.cos(phi) + yn * math.sin(phi))
    gain = gain + rng.uniform(0.0, 0.15) * _noise(rh, rw, rng, scale * 0.6)
    gain = gain * (1.0 - rng.uniform(0.0, 0.35) * (xn * xn + yn * yn) * 2)

    # objects
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.2), 0.0], np.float32)
    light[2] = math.sqrt(max(0.15, 1.0 - light[0] ** 2 - light[1] ** 2))
    light /= np.linalg.norm(light)
    n_obj = int(rng.integers(1, 5)) if n_objects is None else int(n_objects)
    alphas: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
    for _ in range(n_obj):
        frac = math.exp(rng.uniform(math.log(0.01), math.log(0.12)))
        shape = _shape_mask(rh, rw, rng, frac)
        if shape.sum() < 4:
            continue
        y0, y1, x0, x1 = _bbox(shape)
        pad = max(4, int(0.3 * max(y1 - y0, x1 - x0)))
        y0, y1, x0, x1 = max(0, y0 - pad), min(rh, y1 + pad), max(0, x0 - pad), min(rw, x1 + pad)
        sub = shape[y0:y1, x0:x1]
        r = math.sqrt(sub.sum() / math.pi)
        # cast shadow on what is already there
        off_y, off_x = -light[1] * r * rng.uniform(0.1, 0.4), -light[0] * r * rng.uniform(0.1, 0.4)
        shadow = ndi.shift(sub.astype(np.float32), (off_y, off_x), order=1, mode="constant")
        shadow = _gaussian2d(shadow, max(1.0, r * rng.uniform(0.05, 0.2))) * rng.uniform(0.2, 0.6)
        img[y0:y1, x0:x1] *= 1.0 - shadow[..., None]
        # the object: texture, shading, highlight, anti-aliased edge
        tex = _texture(y1 - y0, x1 - x0, rng, scale * rng.uniform(0.3, 0.8))
        lambert, spec = _shade(sub, light, rng.uniform(0.3, 1.5), rng.uniform(5, 60), rng.uniform(0.0, 0.5))
        ambient = rng.uniform(0.25, 0.55)
        obj = tex * (ambient + (1 - ambient) * lambert[..., None] * 1.2) + spec[..., None]
        alpha = _gaussian2d(sub.astype(np.float32), rng.uniform(0.3, 0.6))
        region = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = region * (1.0 - alpha[..., None]) + obj * alpha[..., None]
        alphas.append((alpha, (y0, y1, x0, x1)))

    img *= gain[..., None]
    # camera: lens blur, exposure, tone curve, white balance
    img = _gaussian2d(img, rng.uniform(0.2, 0.6))
    img = np.clip(img * rng.uniform(0.9, 1.15), 0.0, 1.5) ** rng.uniform(0.8, 1.2)
    img = np.clip(img * np.array([rng.uniform(0.92, 1.08) for _ in range(3)], np.float32), 0.0, 1.0)
    if (rh, rw) != (h, w):
        img = np.stack([_resize_float(img[..., c], h, w) for c in range(3)], axis=-1)
        # fine full-resolution detail (what the half-resolution render cannot hold)
        img *= 1.0 + rng.uniform(0.0, 0.05) * _noise(h, w, rng, rng.uniform(1.2, 2.5))[..., None]
    # sensor noise (signal dependent, triangular approximation of a Gaussian), quantisation
    read, shot = rng.uniform(0.5, 3.0) / 255.0, rng.uniform(0.0, 0.015)
    noise = rng.random((h, w, 3), dtype=np.float32) + rng.random((h, w, 3), dtype=np.float32) - 1.0
    noise *= math.sqrt(6.0)
    if rng.random() < 0.5:  # demosaicing-like correlation
        noise = (noise + np.roll(noise, 1, axis=1)) * math.sqrt(0.5)
    img += noise * np.sqrt(read * read + (shot * shot) * img)
    out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    masks: list[np.ndarray] = []
    for alpha, (y0, y1, x0, x1) in alphas:
        full = np.zeros((rh, rw), np.float32)
        full[y0:y1, x0:x1] = alpha
        if (rh, rw) != (h, w):
            full = _resize_float(full, h, w)
        visible = full > 0.5
        masks = [m & ~visible for m in masks]
        masks.append(visible)
    min_px = max(4, int(0.002 * h * w))
    return out, [m for m in masks if m.sum() >= min_px]


def procedural_photo(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A photo-like RGB uint8 image (see :func:`procedural_scene`, which also returns object masks)."""
    return procedural_scene(height, width, rng)[0]


# --------------------------------------------------------------------------------------------------
# edits


def _random_feather(feather: float | None, rng: np.random.Generator, p_feather: float,
                    sigma_range: tuple[float, float]) -> float:
    if feather is not None:
        return max(0.0, float(feather))
    return float(rng.uniform(*sigma_range)) if rng.random() < p_feather else 0.0


def _random_scale(scale: float | None, rng: np.random.Generator, p_rescale: float,
                  scale_range: tuple[float, float]) -> float:
    if scale is not None:
        return float(scale)
    if rng.random() < p_rescale:
        lo, hi = scale_range
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return 1.0


def _extract_patch(src: np.ndarray, region: np.ndarray, scale: float, sigma: float, flip: bool,
                   fit_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float, tuple[int, int]]:
    """Cut ``region`` (with a margin) out of ``src``, rescale and flip it, and build its alpha.

    The scale is reduced if needed so that the non-zero alpha fits into ``fit_hw``. Returns the patch
    (float32 (ph, pw, 3)), its alpha (float32 (ph, pw); exactly 0 in the margin border), the scale used
    and the crop's top-left corner in ``src`` (so with scale 1 and no flip, patch pixel (i, j) is
    ``src[i + oy, j + ox]``).
    """
    y0, y1, x0, x1 = _bbox(region)
    rh, rw = y1 - y0, x1 - x0
    pad = int(4.0 * sigma + 0.5) + 2 if sigma > 0 else 1
    fh, fw = fit_hw
    s_fit = min((fh - 2 * pad - 2) / rh, (fw - 2 * pad - 2) / rw)
    scale = min(scale, s_fit)
    if scale * min(rh, rw) < 1.0 or scale <= 0:
        raise ValueError("region does not fit into the target")
    m = int(math.ceil((pad + 2) / scale)) + 1
    sh, sw = region.shape
    cy0, cy1, cx0, cx1 = y0 - m, y1 + m, x0 - m, x1 + m
    iy0, iy1, ix0, ix1 = max(cy0, 0), min(cy1, sh), max(cx0, 0), min(cx1, sw)
    pads = ((iy0 - cy0, cy1 - iy1), (ix0 - cx0, cx1 - ix1))
    img = np.pad(src[iy0:iy1, ix0:ix1], (*pads, (0, 0)), mode="symmetric")
    reg = np.pad(region[iy0:iy1, ix0:ix1], pads, mode="constant")
    if scale != 1.0:
        nh, nw = max(1, int(round(img.shape[0] * scale))), max(1, int(round(img.shape[1] * scale)))
        img = _resize_rgb(img, nh, nw)
        reg = _resize_float(reg.astype(np.float32), nh, nw) >= 0.5
    if flip:
        img, reg = img[:, ::-1], reg[:, ::-1]
    alpha = reg.astype(np.float32)
    if sigma > 0:
        alpha = ndi.gaussian_filter(alpha, sigma, mode="constant", truncate=4.0)
        alpha[alpha < 1e-4] = 0.0  # keep the support compact
        alpha[alpha > 1 - 1e-4] = 1.0
    if not (alpha > 0.5).any():
        raise ValueError("region vanished after rescaling/feathering")
    return img.astype(np.float32), alpha, scale, (cy0, cx0)


def _placement_range(alpha: np.ndarray, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Range of top-left positions [lo, hi] (inclusive) that keep the non-zero alpha inside ``hw``."""
    ay0, ay1, ax0, ax1 = _bbox(alpha > 0)
    h, w = hw
    lo_y, hi_y, lo_x, hi_x = -ay0, h - ay1, -ax0, w - ax1
    if hi_y < lo_y or hi_x < lo_x:
        raise ValueError("patch does not fit into the target")
    return lo_y, hi_y, lo_x, hi_x


def _place(alpha: np.ndarray, patch: np.ndarray | None, hw: tuple[int, int], ty: int, tx: int
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Put ``alpha`` (and ``patch``) on an (H, W) canvas with its top-left corner at (ty, tx)."""
    h, w = hw
    ph, pw = alpha.shape
    y0, y1, x0, x1 = max(ty, 0), min(ty + ph, h), max(tx, 0), min(tx + pw, w)
    a_full = np.zeros((h, w), np.float32)
    a_full[y0:y1, x0:x1] = alpha[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
    p_full = None
    if patch is not None:
        p_full = np.zeros((h, w, 3), np.float32)
        p_full[y0:y1, x0:x1] = patch[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
    return a_full, p_full


def _composite(target: np.ndarray, patch_full: np.ndarray, alpha_full: np.ndarray) -> np.ndarray:
    out = target.copy()
    sel = alpha_full > 0
    a = alpha_full[sel][:, None]
    blended = target[sel].astype(np.float32) * (1.0 - a) + patch_full[sel] * a
    out[sel] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def _colour_match(patch: np.ndarray, inside: np.ndarray, target: np.ndarray, window: tuple[int, int, int, int],
                  strength: float) -> np.ndarray:
    """Move the patch's per-channel mean/std (inside its region) towards the target's in ``window``."""
    y0, y1, x0, x1 = window
    ref = target[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)
    src = patch[inside]
    if ref.shape[0] < 4 or src.shape[0] < 4:
        return patch
    mu_t, sd_t = ref.mean(0), ref.std(0) + 1.0
    mu_p, sd_p = src.mean(0), src.std(0) + 1.0
    ratio = np.clip(sd_t / sd_p, 0.5, 2.0) ** strength
    out = (patch - mu_p) * ratio + mu_p + strength * (mu_t - mu_p)
    return np.clip(out, 0.0, 255.0)


def make_splice(target: np.ndarray, donor: np.ndarray, donor_region: np.ndarray, rng: np.random.Generator, *,
                scale: float | None = None, scale_range: tuple[float, float] = (0.5, 1.5), p_rescale: float = 0.5,
                color_match: float | None = None, p_color_match: float = 0.5,
                feather: float | None = None, p_feather: float = 0.5,
                feather_sigma_range: tuple[float, float] = (0.7, 3.0), flip: bool | None = None,
                p_flip: float = 0.3) -> Forgery:
    """Paste ``donor_region`` (bool mask over ``donor``, which may have any size) into ``target``.

    ``scale``/``color_match``/``feather``/``flip`` given explicitly are used as is (``feather`` is the
    Gaussian sigma of the alpha, 0 = hard edges; ``color_match`` a strength in [0, 1], 0 = none); left
    ``None`` they are drawn at random with the ``p_*`` probabilities. The scale is reduced when the region
    would not fit. The patch lands at a random position fully inside the target.
    Raises ``ValueError`` when the region is empty or cannot be placed.
    """
    target = np.asarray(target, np.uint8)
    donor = np.asarray(donor, np.uint8)
    donor_region = np.asarray(donor_region, bool)
    if donor_region.shape != donor.shape[:2]:
        raise ValueError(f"donor_region shape {donor_region.shape} != donor shape {donor.shape[:2]}")
    hw = target.shape[:2]
    s = _random_scale(scale, rng, p_rescale, scale_range)
    sigma = _random_feather(feather, rng, p_feather, feather_sigma_range)
    do_flip = bool(rng.random() < p_flip) if flip is None else bool(flip)
    cm = (float(rng.uniform(0.3, 1.0)) if rng.random() < p_color_match else 0.0) if color_match is None \
        else float(color_match)
    patch, alpha, s, (oy, ox) = _extract_patch(donor, donor_region, s, sigma, do_flip, hw)
    lo_y, hi_y, lo_x, hi_x = _placement_range(alpha, hw)
    ty, tx = int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1))
    if cm > 0:
        ph, pw = alpha.shape
        my, mx = ph // 2, pw // 2
        window = (max(ty - my, 0), min(ty + ph + my, hw[0]), max(tx - mx, 0), min(tx + pw + mx, hw[1]))
        patch = _colour_match(patch, alpha > 0.5, target, window, cm)
    alpha_full, patch_full = _place(alpha, patch, hw, ty, tx)
    image = _composite(target, patch_full, alpha_full)  # type: ignore[arg-type]
    mask = _to_mask(alpha_full > 0.5)
    info = {"scale": s, "feather": sigma, "flip": do_flip, "color_match": cm, "placement": (ty, tx),
            "shift": (ty - oy, tx - ox)}
    return Forgery(image, mask, "splice", alpha_full, target, info)


def make_copy_move(image: np.ndarray, region: np.ndarray, rng: np.random.Generator, *,
                   scale: float | None = None, scale_range: tuple[float, float] = (0.8, 1.25), p_rescale: float = 0.5,
                   feather: float | None = None, p_feather: float = 0.5,
                   feather_sigma_range: tuple[float, float] = (0.7, 2.5), flip: bool | None = None,
                   p_flip: float = 0.2, max_overlap: float = 0.1, max_tries: int = 64) -> Forgery:
    """Copy ``region`` of ``image`` to another place of the same image.

    The mask marks **only the pasted (target) region** (``alpha > 0.5``), as in CASIA; the source region
    stays unmarked. At most ``max_overlap`` of the pasted area may cover the source region. Options as
    in :func:`make_splice` (small scale change, feathering, mirroring, no rotation). Raises
    ``ValueError`` when no placement is found.
    """
    image = np.asarray(image, np.uint8)
    region = np.asarray(region, bool)
    hw = image.shape[:2]
    if region.shape != hw:
        raise ValueError(f"region shape {region.shape} != image shape {hw}")
    s = _random_scale(scale, rng, p_rescale, scale_range)
    sigma = _random_feather(feather, rng, p_feather, feather_sigma_range)
    do_flip = bool(rng.random() < p_flip) if flip is None else bool(flip)
    patch, alpha, s, (oy, ox) = _extract_patch(image, region, s, sigma, do_flip, hw)
    lo_y, hi_y, lo_x, hi_x = _placement_range(alpha, hw)
    inside = alpha > 0.5
    area = int(inside.sum())
    ph, pw = alpha.shape
    for _ in range(max_tries):
        ty, tx = int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1))
        y0, y1, x0, x1 = max(ty, 0), min(ty + ph, hw[0]), max(tx, 0), min(tx + pw, hw[1])
        overlap = np.count_nonzero(inside[y0 - ty:y1 - ty, x0 - tx:x1 - tx] & region[y0:y1, x0:x1])
        if overlap <= max_overlap * area:
            break
    else:
        raise ValueError("no place for the copy that does not overlap its source")
    alpha_full, patch_full = _place(alpha, patch, hw, ty, tx)
    out = _composite(image, patch_full, alpha_full)  # type: ignore[arg-type]
    info = {"scale": s, "feather": sigma, "flip": do_flip, "placement": (ty, tx), "shift": (ty - oy, tx - ox),
            "overlap": float(overlap / max(area, 1))}
    return Forgery(out, _to_mask(alpha_full > 0.5), "copy_move", alpha_full, image, info)


def _pushpull(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill unknown pixels of ``values`` (h, w, c) smoothly from the known ones (push-pull pyramid)."""
    w = known.astype(np.float32)
    if w.sum() == 0:
        raise ValueError("nothing known to fill from")
    v = values.astype(np.float32) * w[..., None]
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    while True:
        avg = v / np.maximum(w, 1e-8)[..., None]
        levels.append((avg, np.clip(w, 0.0, 1.0)))
        if w.min() >= 1.0 or max(w.shape) <= 1:
            break
        ph, pw = w.shape[0] % 2, w.shape[1] % 2
        if ph or pw:
            v = np.pad(v, ((0, ph), (0, pw), (0, 0)))
            w = np.pad(w, ((0, ph), (0, pw)))
        v = v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2]
        w = w[0::2, 0::2] + w[1::2, 0::2] + w[0::2, 1::2] + w[1::2, 1::2]
    est = levels[-1][0]
    for avg, conf in reversed(levels[:-1]):
        fh, fw = conf.shape
        ch, cw = est.shape[:2]
        up = ndi.zoom(est, (fh / ch, fw / cw, 1), order=1, mode="nearest", grid_mode=True)
        up = up[:fh, :fw]
        est = conf[..., None] * avg + (1.0 - conf[..., None]) * up
    return est


def make_removal(image: np.ndarray, region: np.ndarray, rng: np.random.Generator, *,
                 dilate: int | None = None, method: str | None = None) -> Forgery:
    """Remove what is in ``region`` by inpainting it from its surroundings; the mask is the filled region.

    The region is dilated by ``dilate`` pixels (default 1-3) to take the object's edge with it. Methods:
    ``"patch"`` copies a nearby patch and corrects it with a membrane (smooth interpolation of the
    boundary mismatch, like seamless cloning); ``"diffusion"`` fills smoothly from the border (push-pull)
    and adds the high-frequency texture of a nearby patch (or noise matched to the surroundings).
    Default: random. Raises ``ValueError`` for an empty region or one that leaves nothing to fill from.
    """
    image = np.asarray(image, np.uint8)
    region = np.asarray(region, bool)
    h, w = image.shape[:2]
    if region.shape != (h, w):
        raise ValueError(f"region shape {region.shape} != image shape {(h, w)}")
    d = int(rng.integers(1, 4)) if dilate is None else int(dilate)
    filled = ndi.binary_dilation(region, ndi.generate_binary_structure(2, 1), iterations=d) if d > 0 else region
    y0, y1, x0, x1 = _bbox(filled)
    rh, rw = y1 - y0, x1 - x0
    mg = max(8, int(0.5 * max(rh, rw)))
    cy0, cy1, cx0, cx1 = max(y0 - mg, 0), min(y1 + mg, h), max(x0 - mg, 0), min(x1 + mg, w)
    crop = image[cy0:cy1, cx0:cx1].astype(np.float32)
    hole = filled[cy0:cy1, cx0:cx1]
    known = ~hole
    if not known.any():
        raise ValueError("the region covers its whole neighbourhood")
    ch, cw = hole.shape

    # a nearby source patch: the crop rectangle shifted by (dy, dx), inside the image, mostly off the hole
    offset = None
    for _ in range(40):
        ang = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(0.7, 1.6) * max(rh, rw) + 2
        dy, dx = int(round(dist * math.sin(ang))), int(round(dist * math.cos(ang)))
        if not (0 <= cy0 + dy and cy1 + dy <= h and 0 <= cx0 + dx and cx1 + dx <= w):
            continue
        src_hole = filled[cy0 + dy:cy1 + dy, cx0 + dx:cx1 + dx]
        if np.count_nonzero(src_hole & hole) <= 0.05 * np.count_nonzero(hole):
            offset = (dy, dx)
            break
    chosen = method or ("patch" if rng.random() < 0.5 else "diffusion")
    if chosen not in ("patch", "diffusion"):
        raise ValueError(f"unknown removal method {method!r}")
    if offset is None:
        chosen = "diffusion"

    if offset is not None:
        dy, dx = offset
        src = image[cy0 + dy:cy1 + dy, cx0 + dx:cx1 + dx].astype(np.float32)
        src_ok = ~filled[cy0 + dy:cy1 + dy, cx0 + dx:cx1 + dx]
    if chosen == "patch":
        membrane = _pushpull(crop - src, known & src_ok)
        fill = src + membrane
    else:
        fill = _pushpull(crop, known)
        fill = _gaussian2d(fill, 1.5)
        if offset is not None:
            high = src - _gaussian2d(src, 2.0)
            fill = fill + high * rng.uniform(0.6, 1.0)
        else:
            resid = crop - _gaussian2d(crop, 2.0)
            sd = float(np.median(np.abs(resid[known])) * 1.4826) if known.any() else 2.0
            fill = fill + _gaussian2d(rng.standard_normal((ch, cw, 3), dtype=np.float32), 0.6) * sd * 2.0
    out = image.copy()
    patch = np.clip(np.rint(fill), 0, 255).astype(np.uint8)
    out[cy0:cy1, cx0:cx1][hole] = patch[hole]
    info = {"method": chosen, "dilate": d, "offset": offset}
    return Forgery(out, _to_mask(filled), "removal", filled.astype(np.float32), image, info)


# --------------------------------------------------------------------------------------------------
# photo pools


def _limit_side(image: np.ndarray, labels: np.ndarray | None, max_side: int | None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, labels
    f = max_side / max(h, w)
    nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    image = _resize_rgb(image, nh, nw)
    if labels is not None:
        labels = _resize_labels(labels, nh, nw)
    return image, labels


def _read_labels(path: Path) -> np.ndarray:
    """A label map as int32: L/P/I images as is, RGB as ``R + 256 G + 65536 B`` (COCO panoptic)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGB", "RGBA"):
            a = np.asarray(im.convert("RGB")).astype(np.int32)
            return a[..., 0] + 256 * a[..., 1] + 65536 * a[..., 2]
        if im.mode in ("L", "P", "1"):
            return np.asarray(im).astype(np.int32)
        return np.asarray(im.convert("I")).astype(np.int32)


@dataclass(frozen=True)
class _Entry:
    image: Path
    labels: Path | None = None
    allowed: frozenset[int] | None = None  # segment ids to use; None = every non-zero label


_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class PhotoPool:
    """A source of photos with region masks, sampled with a caller-provided generator.

    Construct with :meth:`procedural`, :meth:`from_folder`, :meth:`from_coco_panoptic` or :meth:`from_bsds`.
    :meth:`sample` returns ``(photo, regions)``: an RGB uint8 photo (long side at most ``max_side``) and
    bool region masks whose area fraction lies in ``[min_region, max_region]`` (at most ``max_regions`` of
    them, possibly none). Photos without label maps get ``n_blobs`` random blob regions.
    """

    def __init__(self, entries: Sequence[_Entry] | None = None, *, max_side: int | None = 512,
                 min_region: float = 0.005, max_region: float = 0.5, max_regions: int = 16, n_blobs: int = 3,
                 cache_size: int = 32, procedural_size: tuple[int, int] | None = None, seed: int = 0,
                 n_procedural: int | None = None, signature: dict[str, Any] | None = None) -> None:
        self.entries = list(entries or [])
        self.max_side = max_side
        self.min_region, self.max_region = float(min_region), float(max_region)
        self.max_regions, self.n_blobs = int(max_regions), int(n_blobs)
        self.procedural_size = procedural_size
        self.seed = int(seed)
        self.n_procedural = n_procedural
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._cache_size = int(cache_size)
        if procedural_size is None and not self.entries:
            raise ValueError("an empty photo pool")
        self.signature = dict(signature or {}) | {"max_side": max_side, "min_region": min_region,
                                                  "max_region": max_region, "max_regions": max_regions,
                                                  "n_blobs": n_blobs}

    def __len__(self) -> int:
        if self.procedural_size is not None:
            return self.n_procedural or 0
        return len(self.entries)

    def __repr__(self) -> str:
        return f"PhotoPool({self.signature})"

    # -- constructors

    @classmethod
    def procedural(cls, size: tuple[int, int] = (256, 256), seed: int = 0, *, n: int | None = None,
                   **kwargs: Any) -> PhotoPool:
        """Procedural photos of ``size`` (see :func:`procedural_scene`), object masks as regions.

        ``n=None``: a fresh photo on every draw (derived from the caller's generator and ``seed``);
        ``n=k``: a fixed bank of ``k`` photos (photo ``i`` depends only on ``seed`` and ``i``; cached).
        """
        kwargs.setdefault("max_side", None)
        kwargs.setdefault("cache_size", n or 0)
        sig = {"type": "procedural", "size": list(size), "seed": seed, "n": n, "version": _GENERATOR_VERSION}
        return cls(None, procedural_size=(int(size[0]), int(size[1])), seed=seed, n_procedural=n,
                   signature=sig, **kwargs)

    @classmethod
    def from_folder(cls, images_dir: str | os.PathLike[str], masks_dir: str | os.PathLike[str] | None = None,
                    **kwargs: Any) -> PhotoPool:
        """Photos in ``images_dir``; optional same-stem PNG label maps in ``masks_dir`` (0 = background,
        every other value one region; RGB maps are decoded as ``R + 256 G + 65536 B``)."""
        images_dir = Path(images_dir)
        paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS and p.is_file())
        entries = []
        for p in paths:
            lab = Path(masks_dir) / f"{p.stem}.png" if masks_dir is not None else None
            entries.append(_Entry(p, lab if lab is not None and lab.is_file() else None))
        if not entries:
            raise ValueError(f"no images in {images_dir}")
        sig = {"type": "folder", "images_dir": str(images_dir.resolve()),
               "masks_dir": None if masks_dir is None else str(Path(masks_dir).resolve()), "n": len(entries)}
        return cls(entries, signature=sig, **kwargs)

    @classmethod
    def from_bsds(cls, root: str | os.PathLike[str], **kwargs: Any) -> PhotoPool:
        """BSDS500 as laid out in ``shared/data/natural/bsds500``: ``images/<stem>.jpg`` + ``regions/<stem>.png``."""
        root = Path(root)
        pool = cls.from_folder(root / "images", root / "regions", **kwargs)
        pool.signature["type"] = "bsds"
        return pool

    @classmethod
    def from_coco_panoptic(cls, root: str | os.PathLike[str], *, things_only: bool = True,
                           include_unannotated: bool = True, **kwargs: Any) -> PhotoPool:
        """COCO panoptic as laid out in ``shared/data/natural/coco128``: ``images/``, ``panoptic/<id>.png``
        (RGB-encoded segment ids) and ``panoptic.json``. Regions are the non-crowd "thing" segments
        (``things_only=False``: every segment). Images without panoptic annotation are kept as plain photos
        (with blob regions) unless ``include_unannotated=False``."""
        root = Path(root)
        meta = json.loads((root / "panoptic.json").read_text(encoding="utf-8"))
        is_thing = {c["id"]: bool(c.get("isthing", 0)) for c in meta.get("categories", [])}
        files = {img["id"]: img["file_name"] for img in meta.get("images", [])}
        entries: list[_Entry] = []
        annotated: set[str] = set()
        for ann in sorted(meta.get("annotations", []), key=lambda a: a["file_name"]):
            fname = files.get(ann["image_id"])
            if fname is None or not (root / "images" / fname).is_file():
                continue
            allowed = frozenset(int(s["id"]) for s in ann.get("segments_info", [])
                                if not s.get("iscrowd", 0) and (not things_only or is_thing.get(s["category_id"], False)))
            entries.append(_Entry(root / "images" / fname, root / "panoptic" / ann["file_name"], allowed))
            annotated.add(fname)
        if include_unannotated:
            for p in sorted((root / "images").iterdir()):
                if p.suffix.lower() in _IMAGE_EXTS and p.name not in annotated:
                    entries.append(_Entry(p))
        if not entries:
            raise ValueError(f"no usable images under {root}")
        sig = {"type": "coco_panoptic", "root": str(root.resolve()), "things_only": things_only,
               "include_unannotated": include_unannotated, "n": len(entries)}
        return cls(entries, signature=sig, **kwargs)

    # -- sampling

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        entry = self.entries[index]
        image = read_image(entry.image)
        labels = _read_labels(entry.labels) if entry.labels is not None else None
        if labels is not None and labels.shape != image.shape[:2]:
            labels = _resize_labels(labels, *image.shape[:2])
        if labels is not None and entry.allowed is not None:
            labels = np.where(np.isin(labels, np.fromiter(entry.allowed, np.int64, len(entry.allowed))), labels, 0)
        image, labels = _limit_side(image, labels, self.max_side)
        if self._cache_size > 0:
            self._cache[index] = (image, labels)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return image, labels

    def _procedural(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        h, w = self.procedural_size  # type: ignore[misc]
        if self.n_procedural:
            i = int(rng.integers(self.n_procedural))
            if i not in self._cache:
                photo, masks = procedural_scene(h, w, np.random.default_rng([self.seed, 1, i]))
                labels = np.zeros((h, w), np.int32)
                for j, m in enumerate(masks, start=1):
                    labels[m] = j
                self._cache[i] = (photo, labels)
                while self._cache_size and len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            photo, labels = self._cache[i]
            return photo.copy(), self._regions(labels, rng)
        sub = np.random.default_rng([self.seed, 2, int(rng.integers(2**63))])
        photo, masks = procedural_scene(h, w, sub)
        n = photo.shape[0] * photo.shape[1]
        masks = [m for m in masks if self.min_region * n <= m.sum() <= self.max_region * n]
        return photo, masks[: self.max_regions]

    def _regions(self, labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        n = labels.size
        ids, counts = np.unique(labels, return_counts=True)
        keep = [int(i) for i, c in zip(ids, counts, strict=True)
                if i != 0 and self.min_region * n <= c <= self.max_region * n]
        if len(keep) > self.max_regions:
            keep = sorted(rng.choice(keep, self.max_regions, replace=False).tolist())
        return [labels == i for i in keep]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        """One random photo and its region masks (bool, same size as the photo)."""
        if self.procedural_size is not None:
            return self._procedural(rng)
        image, labels = self._load(int(rng.integers(len(self.entries))))
        image = image.copy()  # the cached array stays untouched whatever the caller does
        if labels is None:
            h, w = image.shape[:2]
            hi = min(0.2, self.max_region)
            lo = min(max(0.01, self.min_region), hi)
            return image, [random_blob_mask(h, w, rng, min_area=lo, max_area=hi) for _ in range(self.n_blobs)]
        return image, self._regions(labels, rng)


# --------------------------------------------------------------------------------------------------
# random forgeries and datasets


def _fit(image: np.ndarray, regions: list[np.ndarray], size: tuple[int, int]
         ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize (bilinear; masks nearest) so the photo covers ``size``, then center-crop to it."""
    th, tw = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return image, regions
    f = max(th / h, tw / w)
    nh, nw = max(th, int(math.ceil(h * f - 1e-6))), max(tw, int(math.ceil(w * f - 1e-6)))
    image = _resize_rgb(image, nh, nw)
    regions = [_resize_bool(r, nh, nw) for r in regions]
    y0, x0 = (nh - th) // 2, (nw - tw) // 2
    return image[y0:y0 + th, x0:x0 + tw], [r[y0:y0 + th, x0:x0 + tw] for r in regions]


def _pick_region(regions: list[np.ndarray], shape: tuple[int, int], rng: np.random.Generator,
                 lo: float, hi: float) -> np.ndarray:
    n = shape[0] * shape[1]
    ok = [r for r in regions if lo * n <= np.count_nonzero(r) <= hi * n]
    if ok:
        return ok[int(rng.integers(len(ok)))]
    return random_blob_mask(shape[0], shape[1], rng, min_area=max(lo, 0.01), max_area=min(hi, 0.2))


def synthesize(pool: PhotoPool, rng: np.random.Generator, *, kinds: Sequence[str] = KINDS,
               p_authentic: float = 0.0, size: tuple[int, int] | None = None, p_jpeg: float = 0.5,
               q1_range: tuple[int, int] = (60, 95), q2_range: tuple[int, int] = (70, 100),
               final_jpeg: bool = True, max_mask_area: float = 0.75, region_area: tuple[float, float] = (0.005, 0.5),
               max_tries: int = 50) -> Forgery:
    """One random forgery (or, with probability ``p_authentic``, an untouched photo with an all-zero mask).

    With ``size=(h, w)`` the *source photo* is fitted to that size (resized to cover it, bilinear; masks
    nearest; then center-cropped) *before* editing, so the result has that size, the edit is never
    resampled and the mask stays exact. With probability ``p_jpeg`` the photo (and any splice donor) is
    JPEG-compressed at a quality from ``q1_range`` before editing and the result at ``q2`` from
    ``q2_range`` (double compression; also for authentic photos so JPEG traces alone do not give the label
    away). ``final_jpeg=False`` leaves the second compression to the caller: ``info["q2"]`` says the
    quality to save with. Results whose mask is empty or covers more than ``max_mask_area`` are
    rejected and redrawn (``RuntimeError`` after ``max_tries``).
    """
    kinds = tuple(kinds)
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown forgery kind {k!r}; expected some of {KINDS}")
    if not kinds and p_authentic < 1.0:
        raise ValueError("no kinds to draw from")
    for _ in range(max_tries):
        kind = "authentic" if (not kinds or rng.random() < p_authentic) else kinds[int(rng.integers(len(kinds)))]
        photo, regions = pool.sample(rng)
        if size is not None:
            photo, regions = _fit(photo, regions, size)
        use_jpeg = bool(rng.random() < p_jpeg)
        q1 = int(rng.integers(q1_range[0], q1_range[1] + 1))
        q2 = int(rng.integers(q2_range[0], q2_range[1] + 1))
        if use_jpeg:
            photo = jpeg_compress(photo, q1)
        lo, hi = region_area
        try:
            if kind == "authentic":
                forgery = Forgery(photo, np.zeros(photo.shape[:2], np.uint8), "authentic", None, photo, {})
            elif kind == "splice":
                donor, donor_regions = pool.sample(rng)
                region = _pick_region(donor_regions, donor.shape[:2], rng, lo, hi)
                if use_jpeg:
                    donor = jpeg_compress(donor, int(rng.integers(q1_range[0], q1_range[1] + 1)))
                # keep object sizes comparable when donor and target photos differ in resolution
                base = math.sqrt(photo.shape[0] * photo.shape[1] / (donor.shape[0] * donor.shape[1]))
                s = base * _random_scale(None, rng, 0.5, (0.5, 1.5))
                forgery = make_splice(photo, donor, region, rng, scale=s)
            elif kind == "copy_move":
                region = _pick_region(regions, photo.shape[:2], rng, lo, min(hi, 0.3))
                forgery = make_copy_move(photo, region, rng)
            else:
                region = _pick_region(regions, photo.shape[:2], rng, lo, min(hi, 0.3))
                forgery = make_removal(photo, region, rng)
        except ValueError:
            continue
        frac = np.count_nonzero(forgery.mask) / forgery.mask.size
        if kind != "authentic" and (frac == 0 or frac > max_mask_area):
            continue
        forgery.info.update({"q1": q1 if use_jpeg else None, "q2": q2 if use_jpeg else None,
                             "final_jpeg_applied": bool(use_jpeg and final_jpeg)})
        if use_jpeg and final_jpeg:
            forgery.image = jpeg_compress(forgery.image, q2)
        return forgery
    raise RuntimeError(f"no acceptable forgery in {max_tries} tries (max_mask_area={max_mask_area}, kinds={kinds})")


def write_synthetic_dataset(out_dir: str | os.PathLike[str], n: int, *, seed: int, pool: PhotoPool | None = None,
                            size: tuple[int, int] | None = (256, 256), p_authentic: float = 0.1,
                            source: str = "synthetic", image_format: str = "png",
                            kinds: Sequence[str] = KINDS, p_jpeg: float = 0.5, overwrite: bool = False) -> Path:
    """Write ``n`` random forgeries to ``out_dir`` and return the manifest path.

    Layout: ``images/<i:06d>.<png|jpg>``, ``masks/<i:06d>.png`` (manipulated samples only),
    ``manifest.jsonl`` (authentic: ``mask`` null, ``label`` 0; an extra ``kind`` key per row) and
    ``params.json``. Sample ``i`` depends only on ``seed`` and ``i`` (and the pool), so the same arguments
    give byte-identical files. ``image_format``: ``"png"``, ``"jpg"`` (saved at the second JPEG quality
    of the double compression, or a random one) or ``"mixed"`` (per sample). If ``params.json`` records
    the same parameters and every file of the manifest exists, nothing is regenerated (unless ``overwrite``).
    ``pool`` defaults to a bank of ``clamp(n // 4, 64, 4096)`` procedural photos
    (``PhotoPool.procedural(size, seed, n=...)``; every photo is used for several forgeries, which keeps
    generation fast); pass ``PhotoPool.procedural(size, seed)`` for a fresh photo on every draw.
    """
    if image_format not in ("png", "jpg", "mixed"):
        raise ValueError(f"image_format must be 'png', 'jpg' or 'mixed', got {image_format!r}")
    out = Path(out_dir)
    if pool is None:
        bank = min(max(int(n) // 4, 64), 4096)
        pool = PhotoPool.procedural(size=tuple(size) if size is not None else (256, 256), seed=seed, n=bank)  # type: ignore[arg-type]
    params = {"version": _GENERATOR_VERSION, "n": int(n), "seed": int(seed), "size": None if size is None else list(size),
              "p_authentic": float(p_authentic), "source": source, "image_format": image_format,
              "kinds": list(kinds), "p_jpeg": float(p_jpeg), "pool": pool.signature}
    manifest = out / "manifest.jsonl"
    params_path = out / "params.json"
    if not overwrite and manifest.is_file() and params_path.is_file():
        try:
            same = json.loads(params_path.read_text(encoding="utf-8")) == json.loads(json.dumps(params))
            if same and all(Path(r.image).is_file() and (r.mask is None or Path(r.mask).is_file())
                            for r in read_manifest(manifest)):
                return manifest
        except (ValueError, OSError):
            pass
    params_path.unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rng = np.random.default_rng([int(seed), 0, i])
        fmt = image_format if image_format != "mixed" else ("jpg" if rng.random() < 0.5 else "png")
        f = synthesize(pool, rng, kinds=kinds, p_authentic=p_authentic, size=size, p_jpeg=p_jpeg,
                       final_jpeg=fmt == "png")
        stem = f"{i:06d}"
        img_path = out / "images" / f"{stem}.{fmt}"
        (out / "images" / f"{stem}.{'png' if fmt == 'jpg' else 'jpg'}").unlink(missing_ok=True)
        if fmt == "jpg":
            q = f.info.get("q2") or int(rng.integers(75, 101))
            save_image(img_path, f.image, quality=int(q))
        else:
            save_image(img_path, f.image, compress_level=1)
        mask_path = out / "masks" / f"{stem}.png"
        if f.label:
            save_image(mask_path, f.mask)
        else:
            mask_path.unlink(missing_ok=True)
        records.append(ManifestRecord(str(img_path), str(mask_path) if f.label else None, f.label, source,
                                      extra={"kind": f.kind}))
    write_manifest(manifest, records)
    atomic_write_text(params_path, json.dumps(params, indent=1, sort_keys=True) + "\n")
    return manifest
