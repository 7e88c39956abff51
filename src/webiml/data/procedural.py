"""Procedural photos: photo-like images made from nothing (illumination, textured regions, shaded objects
with shadows, lens blur, sensor noise) plus the masks of their objects. Deterministic given a
:class:`numpy.random.Generator`."""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from webiml.data.arrays import bbox, gaussian2d, resize_float
from webiml.data.noise import fractal_noise, smooth_noise
from webiml.data.regions import random_blob_mask

__all__ = ["GENERATOR_VERSION", "procedural_photo", "procedural_scene"]

GENERATOR_VERSION = 1  # bump when the output of the synthetic generators changes (invalidates params.json caches)


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
        lum = fractal_noise(height, width, rng, scale * rng.uniform(0.03, 0.3), octaves=int(rng.integers(3, 6)),
                   persistence=rng.uniform(0.45, 0.75))
    elif kind == "grain":
        aspect = rng.uniform(3, 10)
        if rng.random() < 0.5:
            lum = fractal_noise(height, width, rng, scale * rng.uniform(0.01, 0.05), octaves=3, aspect=aspect)
        else:
            lum = fractal_noise(height, width, rng, scale * rng.uniform(0.01, 0.05) * aspect, octaves=3, aspect=1 / aspect)
        lum = lum + 0.5 * smooth_noise(height, width, rng, scale * 0.2)
    elif kind == "stripes":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        theta = rng.uniform(0, math.pi)
        period = scale * rng.uniform(0.02, 0.12)
        warp = smooth_noise(height, width, rng, scale * 0.3) * rng.uniform(0, 2.0)
        lum = np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period + warp)
        lum = lum + 0.4 * fractal_noise(height, width, rng, scale * 0.05, octaves=3)
        amp *= 0.7
    else:  # smooth, e.g. a wall or the sky
        lum = smooth_noise(height, width, rng, scale * rng.uniform(0.3, 1.0))
        amp *= 0.5
    tex = colour[None, None, :] * (1.0 + amp * lum[..., None])
    chroma_amp = rng.uniform(0.0, 0.08)
    if chroma_amp > 0.01:  # slow hue drift along a random chroma direction
        direction = rng.standard_normal(3).astype(np.float32)
        direction -= direction.mean()
        direction /= np.linalg.norm(direction) + 1e-6
        tex = tex + (chroma_amp * colour.mean()) * smooth_noise(height, width, rng, scale * 0.25)[..., None] * direction
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
        mask = gaussian2d(mask.astype(np.float32), radius * 0.15) > 0.5
    return mask


def _shade(mask: np.ndarray, light: np.ndarray, bulge: float, shininess: float, ks: float) -> tuple[np.ndarray, np.ndarray]:
    """Lambert + Blinn-Phong shading of a height field built from the distance transform of ``mask``."""
    d = ndi.distance_transform_edt(mask).astype(np.float32)
    dmax = max(float(d.max()), 1.0)
    height = np.sqrt(d / dmax) * dmax * bulge
    height = gaussian2d(height, 1.0)
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
    fields = np.stack([smooth_noise(rh, rw, rng, scale * rng.uniform(0.15, 0.6)) + (2 * strength * slopes[i]) * ramp
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
    gain = gain + rng.uniform(0.0, 0.15) * smooth_noise(rh, rw, rng, scale * 0.6)
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
        y0, y1, x0, x1 = bbox(shape)
        pad = max(4, int(0.3 * max(y1 - y0, x1 - x0)))
        y0, y1, x0, x1 = max(0, y0 - pad), min(rh, y1 + pad), max(0, x0 - pad), min(rw, x1 + pad)
        sub = shape[y0:y1, x0:x1]
        r = math.sqrt(sub.sum() / math.pi)
        # cast shadow on what is already there
        off_y, off_x = -light[1] * r * rng.uniform(0.1, 0.4), -light[0] * r * rng.uniform(0.1, 0.4)
        shadow = ndi.shift(sub.astype(np.float32), (off_y, off_x), order=1, mode="constant")
        shadow = gaussian2d(shadow, max(1.0, r * rng.uniform(0.05, 0.2))) * rng.uniform(0.2, 0.6)
        img[y0:y1, x0:x1] *= 1.0 - shadow[..., None]
        # the object: texture, shading, highlight, anti-aliased edge
        tex = _texture(y1 - y0, x1 - x0, rng, scale * rng.uniform(0.3, 0.8))
        lambert, spec = _shade(sub, light, rng.uniform(0.3, 1.5), rng.uniform(5, 60), rng.uniform(0.0, 0.5))
        ambient = rng.uniform(0.25, 0.55)
        obj = tex * (ambient + (1 - ambient) * lambert[..., None] * 1.2) + spec[..., None]
        alpha = gaussian2d(sub.astype(np.float32), rng.uniform(0.3, 0.6))
        region = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = region * (1.0 - alpha[..., None]) + obj * alpha[..., None]
        alphas.append((alpha, (y0, y1, x0, x1)))

    img *= gain[..., None]
    # camera: lens blur, exposure, tone curve, white balance
    img = gaussian2d(img, rng.uniform(0.2, 0.6))
    img = np.clip(img * rng.uniform(0.9, 1.15), 0.0, 1.5) ** rng.uniform(0.8, 1.2)
    img = np.clip(img * np.array([rng.uniform(0.92, 1.08) for _ in range(3)], np.float32), 0.0, 1.0)
    if (rh, rw) != (h, w):
        img = np.stack([resize_float(img[..., c], h, w) for c in range(3)], axis=-1)
        # fine full-resolution detail (what the half-resolution render cannot hold)
        img *= 1.0 + rng.uniform(0.0, 0.05) * smooth_noise(h, w, rng, rng.uniform(1.2, 2.5))[..., None]
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
            full = resize_float(full, h, w)
        visible = full > 0.5
        masks = [m & ~visible for m in masks]
        masks.append(visible)
    min_px = max(4, int(0.002 * h * w))
    return out, [m for m in masks if m.sum() >= min_px]


def procedural_photo(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A photo-like RGB uint8 image (see :func:`procedural_scene`, which also returns object masks)."""
    return procedural_scene(height, width, rng)[0]
