"""The forgery operations: splicing, copy-move and object removal, one edit each, returning a
:class:`Forgery` whose mask is exact with respect to the edit that was made.

Mask conventions (as everywhere in webiml): 8-bit, 0 = authentic, 255 = manipulated.

- splice: the pasted pixels, i.e. ``alpha > 0.5`` of the alpha actually used for blending. With
  feathered edges, pixels with ``0 < alpha <= 0.5`` are slightly changed but not marked.
- copy-move: **only the pasted (target) region** is marked, not the source region it was copied from
  (the CASIA convention; NoSo marks both).
- removal: the filled region (the object's mask, slightly dilated).
- authentic: an all-zero mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from webiml.data.arrays import bbox, gaussian2d, resize_float, resize_rgb

__all__ = ["Forgery", "make_copy_move", "make_removal", "make_splice", "random_scale"]


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


def _to_mask(region: np.ndarray) -> np.ndarray:
    return region.astype(np.uint8) * 255


def _random_feather(feather: float | None, rng: np.random.Generator, p_feather: float,
                    sigma_range: tuple[float, float]) -> float:
    if feather is not None:
        return max(0.0, float(feather))
    return float(rng.uniform(*sigma_range)) if rng.random() < p_feather else 0.0


def random_scale(scale: float | None, rng: np.random.Generator, p_rescale: float,
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
    y0, y1, x0, x1 = bbox(region)
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
        img = resize_rgb(img, nh, nw)
        reg = resize_float(reg.astype(np.float32), nh, nw) >= 0.5
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
    ay0, ay1, ax0, ax1 = bbox(alpha > 0)
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
    s = random_scale(scale, rng, p_rescale, scale_range)
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
    s = random_scale(scale, rng, p_rescale, scale_range)
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
    y0, y1, x0, x1 = bbox(filled)
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
        fill = gaussian2d(fill, 1.5)
        if offset is not None:
            high = src - gaussian2d(src, 2.0)
            fill = fill + high * rng.uniform(0.6, 1.0)
        else:
            resid = crop - gaussian2d(crop, 2.0)
            sd = float(np.median(np.abs(resid[known])) * 1.4826) if known.any() else 2.0
            fill = fill + gaussian2d(rng.standard_normal((ch, cw, 3), dtype=np.float32), 0.6) * sd * 2.0
    out = image.copy()
    patch = np.clip(np.rint(fill), 0, 255).astype(np.uint8)
    out[cy0:cy1, cx0:cx1][hole] = patch[hole]
    info = {"method": chosen, "dilate": d, "offset": offset}
    return Forgery(out, _to_mask(filled), "removal", filled.astype(np.float32), image, info)
