"""Synthetic constrained-IML pairs ``(original, forged)`` with exact masks (categories: :class:`~webiml.data.pairs.PairCategory`).

Synthesis (deterministic from a :class:`numpy.random.Generator`; photos from a
:class:`~webiml.data.synthetic.PhotoPool`: procedural scenes, a folder, BSDS500, COCO panoptic):

- **SPG** (:func:`make_spg_pair`): a photo ``P`` and an edited copy of (a view of) it. The forgery is
  the box ``crop_box`` of ``P`` (the whole photo when ``aligned``; a small crop otherwise) with 1-3 edits:
  blobs/objects pasted from a third photo (the self-supervised scheme the MIML authors train their pair
  classifier with), copy-moves or removals. The original handed out is ``P`` after web-style
  degradation: colour shift, resize, JPEG recompression; the forgery may be JPEG-recompressed too.
  ``crop_box`` is the normalised ``(x0, y0, x1, y1)`` of the forgery's view inside the original.
- **SDG** (:func:`make_sdg_pair`): an object (or region) of the original pasted into another photo; the
  mask marks the pasted object in the forgery and ``source_mask`` the donated region in the original.
- **unrelated** (:func:`make_unrelated_pair`): two different photos (negatives for the pair classifier;
  an all-zero mask for the SDG segmenter).

Mask rule: a pair mask marks **every pixel of the forgery that its edits changed** (``forged !=
reference`` before the forgery's own JPEG compression) together with each edit's own mask (alpha > 0.5,
or the filled region of a removal). With ``label_tolerance`` t > 0, changes of at most t levels outside
an edit's own mask are left out (then ``|forged - reference| <= t`` where the mask is 0). So ``forged[mask == 0] == reference[mask == 0]`` holds exactly, where
``reference`` is the forgery's unedited content (``Pair.reference``); for an aligned SPG pair without
degradation the reference *is* the original.

:func:`write_pair_dataset` writes ``n`` pairs and their manifest (:mod:`webiml.data.pairs`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from webiml.data.forgeries import make_copy_move, make_removal, make_splice
from webiml.data.generated import params_unchanged, write_params
from webiml.data.pairs import CATEGORIES, FULL_BOX, PairCategory, PairRecord, read_pair_manifest, write_pair_manifest
from webiml.data.photo_pool import PhotoPool, make_photo_pool
from webiml.data.regions import random_blob_mask
from webiml.io import jpeg_compress, save_image

__all__ = [
    "EDIT_KINDS",
    "Pair",
    "make_pool",
    "make_sdg_pair",
    "make_spg_pair",
    "make_unrelated_pair",
    "synthesize_pair",
    "write_pair_dataset",
]

EDIT_KINDS: tuple[str, ...] = ("splice", "copy_move", "removal")
_PAIR_GENERATOR_VERSION = 1  # bump when the output of the generators changes (invalidates params.json caches)


@dataclass
class Pair:
    """One synthetic pair.

    ``original`` (H, W, 3) and ``forged`` (H', W', 3) are ``uint8``; ``mask`` (H', W') ``uint8`` in
    {0, 255} marks the edited pixels of the forgery; ``source_mask`` (H, W) marks, for SDG pairs, the
    donated region in the original (``None`` otherwise). ``reference`` is the forgery's unedited
    content (same grid as ``forged``), ``info`` the random choices made.
    """

    original: np.ndarray
    forged: np.ndarray
    mask: np.ndarray
    category: PairCategory
    aligned: bool = False
    crop_box: tuple[float, float, float, float] = FULL_BOX
    source_mask: np.ndarray | None = None
    reference: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# photo pools and small image helpers


def make_pool(photos: str | os.PathLike[str] | PhotoPool | None = "procedural", size: tuple[int, int] = (256, 256), seed: int = 0) -> PhotoPool:
    """The pair generator's photo pool: :func:`~webiml.data.photo_pool.make_photo_pool` of a spec (a
    :class:`PhotoPool`, ``"procedural"`` or ``None``, or a folder: a COCO-panoptic tree, a BSDS-like tree or
    a plain folder of photos) with every photo (no split) kept up to 512 pixels."""
    return make_photo_pool(photos, None, seed=seed, size=size, max_side=512)


def _resize_rgb(image: np.ndarray, h: int, w: int) -> np.ndarray:
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None))


def _resize_bool(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    if mask.shape == (h, w):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 127


def _fit(photo: np.ndarray, regions: list[np.ndarray], size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize (cover) and randomly crop the photo and its regions to ``size``."""
    th, tw = int(size[0]), int(size[1])
    h, w = photo.shape[:2]
    if (h, w) != (th, tw):
        f = max(th / h, tw / w)
        nh, nw = max(th, math.ceil(h * f - 1e-6)), max(tw, math.ceil(w * f - 1e-6))
        photo = _resize_rgb(photo, nh, nw)
        regions = [_resize_bool(r, nh, nw) for r in regions]
        y0, x0 = int(rng.integers(0, nh - th + 1)), int(rng.integers(0, nw - tw + 1))
        photo = photo[y0 : y0 + th, x0 : x0 + tw]
        regions = [r[y0 : y0 + th, x0 : x0 + tw] for r in regions]
    return np.ascontiguousarray(photo), regions


def _sample(pool: PhotoPool, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    photo, regions = pool.sample(rng)
    return _fit(photo, regions, size, rng)


def _pick_region(regions: list[np.ndarray], shape: tuple[int, int], rng: np.random.Generator, area: tuple[float, float]) -> np.ndarray:
    n = shape[0] * shape[1]
    lo, hi = area
    ok = [r for r in regions if r.shape == shape and lo * n <= np.count_nonzero(r) <= hi * n]
    if ok:
        return ok[int(rng.integers(len(ok)))]
    return random_blob_mask(shape[0], shape[1], rng, min_area=max(lo, 0.005), max_area=min(max(hi, lo), 0.5))


def _colour_shift(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-channel gain and offset and a global gamma (a web colour edit of the whole photo)."""
    gain = rng.uniform(0.85, 1.15, size=3)
    bias = rng.uniform(-15, 15, size=3)
    gamma = float(math.exp(rng.uniform(math.log(0.8), math.log(1.25))))
    x = image.astype(np.float32) / 255.0
    x = np.clip(x, 0, 1) ** gamma
    x = x * 255.0 * gain + bias
    out = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return out, {"gain": [round(float(g), 4) for g in gain], "bias": [round(float(b), 3) for b in bias], "gamma": round(gamma, 4)}


@dataclass(frozen=True)
class _WebDegradation:
    """The web's copies of a pair: colour shift, resize and JPEG recompression of the original (each with its
    probability), JPEG recompression of the forgery with probability ``forged_jpeg_p``."""

    colour_p: float
    resize_p: float
    scale_range: tuple[float, float]
    jpeg_p: float
    jpeg_quality: tuple[int, int]
    forged_jpeg_p: float = 0.0

    def original(self, image: np.ndarray, rng: np.random.Generator, min_side: int = 32) -> tuple[np.ndarray, dict[str, Any]]:
        """The degraded original and what was done to it."""
        info: dict[str, Any] = {}
        do_colour, do_resize, do_jpeg = rng.random() < self.colour_p, rng.random() < self.resize_p, rng.random() < self.jpeg_p
        s = float(math.exp(rng.uniform(math.log(self.scale_range[0]), math.log(self.scale_range[1]))))
        q = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        if do_colour:
            image, info["colour"] = _colour_shift(image, rng)
        if do_resize:
            h, w = image.shape[:2]
            nh, nw = max(min_side, round(h * s)), max(min_side, round(w * s))
            image = _resize_rgb(image, nh, nw)
            info["resize"] = [nh, nw]
        if do_jpeg:
            image = jpeg_compress(image, q)
            info["jpeg"] = q
        return image, info

    def pair(self, original: np.ndarray, forged: np.ndarray, rng: np.random.Generator,
             info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Both copies (:meth:`original`, then the forgery's JPEG); the choices are recorded in ``info``."""
        original, info["original_degradation"] = self.original(original, rng)
        q = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        if rng.random() < self.forged_jpeg_p:
            forged = jpeg_compress(forged, q)
            info["forged_jpeg"] = q
        return original, forged


def _changed(before: np.ndarray, after: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Pixels whose value changed by more than ``tolerance`` levels (max over channels)."""
    if tolerance <= 0:
        return (before != after).any(axis=-1)
    return (np.abs(before.astype(np.int16) - after.astype(np.int16)).max(axis=-1) > tolerance)


def _edit(
    image: np.ndarray,
    regions: list[np.ndarray],
    kind: str,
    pool: PhotoPool,
    rng: np.random.Generator,
    region_area: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """One edit of ``image``; returns the edited image and the edit's own mask (bool)."""
    hw = image.shape[:2]
    if kind == "splice":
        donor, donor_regions = pool.sample(rng)
        region = _pick_region(donor_regions, donor.shape[:2], rng, region_area)
        # keep object sizes comparable when the donor and the target differ in resolution
        base = math.sqrt(hw[0] * hw[1] / (donor.shape[0] * donor.shape[1]))
        scale = base * float(math.exp(rng.uniform(math.log(0.6), math.log(1.4))))
        f = make_splice(image, donor, region, rng, scale=scale)
    elif kind == "copy_move":
        f = make_copy_move(image, _pick_region(regions, hw, rng, (region_area[0], min(region_area[1], 0.2))), rng)
    elif kind == "removal":
        f = make_removal(image, _pick_region(regions, hw, rng, (region_area[0], min(region_area[1], 0.2))), rng)
    else:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")
    return f.image, f.mask > 127


# --------------------------------------------------------------------------------------------------
# pair generators


def _crop_box(h: int, w: int, rng: np.random.Generator, crop_range: tuple[float, float], p_large_crop: float, min_side: int = 16) -> tuple[int, int, int, int]:
    """Integer pixel box (x0, y0, x1, y1) of a random crop: small margins, or (``p_large_crop``) a view
    of 40-80 % of the area anywhere in the photo."""
    large, u = rng.random() < p_large_crop, rng.uniform(size=6)
    if large:
        area = 0.4 + 0.4 * u[0]
        aspect = math.exp((u[1] - 0.5) * 0.6)
        cw = min(w, max(min_side, round(w * math.sqrt(area * aspect))))
        ch = min(h, max(min_side, round(h * math.sqrt(area / aspect))))
        x0 = int(round(u[2] * (w - cw)))
        y0 = int(round(u[3] * (h - ch)))
        return x0, y0, x0 + cw, y0 + ch
    lo, hi = crop_range
    m = lo + (hi - lo) * rng.uniform(size=4)
    x0, y0 = int(round(m[0] * w)), int(round(m[1] * h))
    x1, y1 = w - int(round(m[2] * w)), h - int(round(m[3] * h))
    if x1 - x0 < min_side or y1 - y0 < min_side:
        return 0, 0, w, h
    if (x0, y0, x1, y1) == (0, 0, w, h):  # margins rounded to nothing: crop at least one pixel
        x0 = 1
    return x0, y0, x1, y1


def _apply_edits(
    view: np.ndarray,
    regions: list[np.ndarray],
    pool: PhotoPool,
    rng: np.random.Generator,
    *,
    n_edits: tuple[int, int],
    edit_kinds: Sequence[str],
    edit_weights: Sequence[float] | None,
    region_area: tuple[float, float],
    max_mask_area: float,
    label_tolerance: int = 0,
    max_tries: int = 12,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    kinds = list(edit_kinds)
    for k in kinds:
        if k not in EDIT_KINDS:
            raise ValueError(f"unknown edit kind {k!r}; expected some of {EDIT_KINDS}")
    p = None
    if edit_weights is not None:
        w = np.asarray(edit_weights, np.float64)
        p = w / w.sum()
    want = int(rng.integers(n_edits[0], n_edits[1] + 1))
    forged, mask, done = view, np.zeros(view.shape[:2], bool), []
    for _ in range(max_tries):
        if len(done) >= want:
            break
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        try:
            out, own = _edit(forged, regions, kind, pool, rng, region_area)
        except ValueError:
            continue
        new_mask = mask | own | _changed(forged, out, label_tolerance)
        if not new_mask.any() or new_mask.mean() > max_mask_area:
            continue
        forged, mask = out, new_mask
        done.append(kind)
    if not done:
        raise ValueError("no edit could be made")
    return forged, mask, done


def make_spg_pair(
    pool: PhotoPool,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (256, 256),
    aligned: bool | None = None,
    p_aligned: float = 0.4,
    n_edits: tuple[int, int] = (1, 3),
    edit_kinds: Sequence[str] = EDIT_KINDS,
    edit_weights: Sequence[float] | None = (0.6, 0.2, 0.2),
    region_area: tuple[float, float] = (0.005, 0.15),
    max_mask_area: float = 0.6,
    crop_range: tuple[float, float] = (0.02, 0.15),
    p_large_crop: float = 0.2,
    degrade: bool = True,
    colour_p: float = 0.4,
    resize_p: float = 0.6,
    scale_range: tuple[float, float] = (0.6, 1.5),
    jpeg_p: float = 0.6,
    jpeg_quality: tuple[int, int] = (60, 95),
    forged_jpeg_p: float = 0.3,
    label_tolerance: int = 0,
    max_tries: int = 20,
) -> Pair:
    """An SPG pair: the forgery is an edited copy of (a view of) the original.

    ``aligned=None`` draws it with probability ``p_aligned``. Not aligned: the forgery shows the box
    ``crop_box`` of the photo (margins from ``crop_range``, or with ``p_large_crop`` a 40-80 % view).
    ``degrade=False`` switches off every degradation (original and forgery), so for an aligned pair
    ``forged[mask == 0] == original[mask == 0]`` exactly. ``label_tolerance`` > 0 leaves out of the mask
    the pixels an edit changed by at most that many levels (the faint fringe of a feathered paste, which
    no annotator can see after JPEG) unless they belong to the edit's own region.
    """
    for _ in range(max_tries):
        photo, regions = _sample(pool, size, rng)
        h, w = photo.shape[:2]
        is_aligned = bool(rng.random() < p_aligned) if aligned is None else bool(aligned)
        x0, y0, x1, y1 = (0, 0, w, h) if is_aligned else _crop_box(h, w, rng, crop_range, p_large_crop)
        view = np.ascontiguousarray(photo[y0:y1, x0:x1])
        view_regions = [r[y0:y1, x0:x1] for r in regions]
        try:
            forged, mask, done = _apply_edits(
                view, view_regions, pool, rng, n_edits=n_edits, edit_kinds=edit_kinds, edit_weights=edit_weights,
                region_area=region_area, max_mask_area=max_mask_area, label_tolerance=label_tolerance,
            )
        except ValueError:
            continue
        info: dict[str, Any] = {"edits": done, "crop_px": [x0, y0, x1, y1]}
        original = photo
        if degrade:
            web = _WebDegradation(colour_p, resize_p, scale_range, jpeg_p, jpeg_quality, forged_jpeg_p)
            original, forged = web.pair(photo, forged, rng, info)
        box = (x0 / w, y0 / h, x1 / w, y1 / h)
        return Pair(original, forged, mask.astype(np.uint8) * 255, PairCategory.SPG, is_aligned, box, None, view, info)
    raise RuntimeError(f"no SPG pair in {max_tries} tries")


def make_sdg_pair(
    pool: PhotoPool,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (256, 256),
    region_area: tuple[float, float] = (0.01, 0.25),
    scale_range: tuple[float, float] = (0.6, 1.5),
    max_mask_area: float = 0.6,
    degrade: bool = True,
    colour_p: float = 0.4,
    resize_p: float = 0.6,
    degrade_scale_range: tuple[float, float] = (0.6, 1.5),
    jpeg_p: float = 0.6,
    jpeg_quality: tuple[int, int] = (60, 95),
    forged_jpeg_p: float = 0.3,
    label_tolerance: int = 0,
    max_tries: int = 20,
) -> Pair:
    """An SDG pair: an object (or region) of the original pasted into another photo.

    ``mask`` marks the pasted object in the forgery, ``source_mask`` the donated region in the
    original (resized with the original when it is degraded, nearest neighbour). ``label_tolerance``
    as in :func:`make_spg_pair`.
    """
    for _ in range(max_tries):
        donor, donor_regions = _sample(pool, size, rng)
        target, _ = _sample(pool, size, rng)
        region = _pick_region(donor_regions, donor.shape[:2], rng, region_area)
        scale = float(math.exp(rng.uniform(math.log(scale_range[0]), math.log(scale_range[1]))))
        try:
            f = make_splice(target, donor, region, rng, scale=scale)
        except ValueError:
            continue
        mask = (f.mask > 127) | _changed(target, f.image, label_tolerance)
        if not mask.any() or mask.mean() > max_mask_area:
            continue
        forged, original, source = f.image, donor, region
        info: dict[str, Any] = {"scale": f.info.get("scale"), "flip": f.info.get("flip")}
        if degrade:
            web = _WebDegradation(colour_p, resize_p, degrade_scale_range, jpeg_p, jpeg_quality, forged_jpeg_p)
            original, forged = web.pair(donor, forged, rng, info)
            source = _resize_bool(region, *original.shape[:2])
        return Pair(original, forged, mask.astype(np.uint8) * 255, PairCategory.SDG, False, FULL_BOX, source.astype(np.uint8) * 255, target, info)
    raise RuntimeError(f"no SDG pair in {max_tries} tries")


def make_unrelated_pair(
    pool: PhotoPool,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (256, 256),
    degrade: bool = True,
    colour_p: float = 0.4,
    resize_p: float = 0.6,
    scale_range: tuple[float, float] = (0.6, 1.5),
    jpeg_p: float = 0.6,
    jpeg_quality: tuple[int, int] = (60, 95),
) -> Pair:
    """Two different photos: nothing of the original is in the forgery (all-zero masks)."""
    original, _ = _sample(pool, size, rng)
    forged, _ = _sample(pool, size, rng)
    info: dict[str, Any] = {}
    if degrade:
        web = _WebDegradation(colour_p, resize_p, scale_range, jpeg_p, jpeg_quality)
        original, info["original_degradation"] = web.original(original, rng)
    zeros = np.zeros(forged.shape[:2], np.uint8)
    return Pair(original, forged, zeros, PairCategory.UNRELATED, False, FULL_BOX, np.zeros(original.shape[:2], np.uint8), forged, info)


def _category_probs(categories: Mapping[str, float] | Sequence[str]) -> tuple[list[str], np.ndarray]:
    if isinstance(categories, Mapping):
        names, weights = list(categories), np.asarray([float(v) for v in categories.values()], np.float64)
    else:
        names, weights = list(categories), np.ones(len(categories), np.float64)
    for c in names:
        if c not in CATEGORIES:
            raise ValueError(f"unknown pair category {c!r}; expected some of {CATEGORIES}")
    if not names or weights.sum() <= 0 or (weights < 0).any():
        raise ValueError(f"invalid category weights {categories!r}")
    return names, weights / weights.sum()


def synthesize_pair(
    pool: PhotoPool,
    rng: np.random.Generator,
    *,
    categories: Mapping[str, float] | Sequence[str] = (("SPG", 0.45), ("SDG", 0.45), ("unrelated", 0.1)),  # type: ignore[assignment]
    size: tuple[int, int] = (256, 256),
    degrade: bool = True,
    p_aligned: float = 0.4,
    label_tolerance: int = 0,
) -> Pair:
    """One random pair; ``categories`` maps category -> probability (or lists the categories, equally
    likely). A sequence of ``(name, weight)`` tuples is accepted as a mapping. ``label_tolerance``: see
    :func:`make_spg_pair`."""
    if not isinstance(categories, Mapping) and categories and isinstance(next(iter(categories)), tuple | list):
        categories = dict(categories)  # type: ignore[arg-type]
    names, probs = _category_probs(categories)
    cat = names[int(rng.choice(len(names), p=probs))]
    if cat == PairCategory.SPG:
        return make_spg_pair(pool, rng, size=size, degrade=degrade, p_aligned=p_aligned, label_tolerance=label_tolerance)
    if cat == PairCategory.SDG:
        return make_sdg_pair(pool, rng, size=size, degrade=degrade, label_tolerance=label_tolerance)
    return make_unrelated_pair(pool, rng, size=size, degrade=degrade)


def _pairs_exist(manifest: Path, n: int) -> bool:
    """Whether ``manifest`` lists ``n`` pairs whose files all exist."""
    recs = read_pair_manifest(manifest)
    paths = [p for r in recs for p in (r.original, r.forged, r.mask, r.source_mask) if p is not None]
    return len(recs) == n and all(Path(p).is_file() for p in paths)


def write_pair_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    *,
    seed: int,
    pool: PhotoPool | str | os.PathLike[str] | None = None,
    size: tuple[int, int] = (256, 256),
    categories: Mapping[str, float] | Sequence[str] = (("SPG", 0.45), ("SDG", 0.45), ("unrelated", 0.1)),  # type: ignore[assignment]
    degrade: bool = True,
    p_aligned: float = 0.4,
    source: str = "synthetic-pairs",
    label_tolerance: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``n`` synthetic pairs to ``out_dir`` and return the manifest path (``pairs.jsonl``).

    Layout: ``original/<i:06d>.png``, ``forged/<i:06d>.png``, ``mask/<i:06d>.png``,
    ``source_mask/<i:06d>.png`` (SDG and unrelated pairs), ``pairs.jsonl`` and ``params.json``. Pair ``i``
    depends only on ``seed`` and ``i`` (and the pool), so the same arguments give identical files; if
    ``params.json`` records the same parameters and every file exists, nothing is regenerated.
    """
    out = Path(out_dir)
    pool = make_pool(pool, size, seed)
    if not isinstance(categories, Mapping) and categories and isinstance(next(iter(categories)), tuple | list):
        categories = dict(categories)  # type: ignore[arg-type]
    names, probs = _category_probs(categories)
    params = {
        "version": _PAIR_GENERATOR_VERSION, "n": int(n), "seed": int(seed), "size": [int(size[0]), int(size[1])],
        "categories": dict(zip(names, [float(p) for p in probs], strict=True)), "degrade": bool(degrade),
        "p_aligned": float(p_aligned), "source": source, "pool": pool.signature,
    }
    manifest = out / "pairs.jsonl"
    params_path = out / "params.json"
    if label_tolerance:  # recorded only when used, so caches written before the option stay valid
        params["label_tolerance"] = int(label_tolerance)
    if not overwrite and manifest.is_file() and params_unchanged(params_path, params, lambda: _pairs_exist(manifest, n)):
        return manifest
    records = []
    cats = dict(zip(names, probs.tolist(), strict=True))
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), i])
        pair = synthesize_pair(pool, rng, categories=cats, size=size, degrade=degrade, p_aligned=p_aligned,
                               label_tolerance=label_tolerance)
        stem = f"{i:06d}.png"
        save_image(out / "original" / stem, pair.original)
        save_image(out / "forged" / stem, pair.forged)
        save_image(out / "mask" / stem, pair.mask)
        src = None
        if pair.source_mask is not None:
            save_image(out / "source_mask" / stem, pair.source_mask)
            src = f"source_mask/{stem}"
        records.append(PairRecord(
            f"original/{stem}", f"forged/{stem}", f"mask/{stem}", pair.category, pair.aligned, pair.crop_box, src, source,
            extra={"info": _jsonable(pair.info)},
        ))
    write_pair_manifest(manifest, records)
    write_params(params_path, params)
    return manifest


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return str(obj)
