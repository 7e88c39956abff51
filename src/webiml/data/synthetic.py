"""Random synthetic forgeries with exact masks, and folders of them.

Everything here is deterministic given a :class:`numpy.random.Generator` and needs only numpy, PIL and
scipy. The forgeries feed the tests, the CPU quickstart and (with natural photos) real training.

- :func:`synthesize`: one random forgery (splice, copy-move or removal, see :mod:`webiml.data.forgeries`)
  of a photo from a :class:`~webiml.data.photo_pool.PhotoPool`, with optional JPEG double compression.
- :func:`write_synthetic_dataset`: a folder of images, masks and a manifest.

The building blocks live in their own modules: :mod:`webiml.data.procedural` (photos made from nothing),
:mod:`webiml.data.regions` (random blob masks), :mod:`webiml.data.forgeries` (the edits and
:class:`~webiml.data.forgeries.Forgery`), :mod:`webiml.data.photo_pool`. The names this module had before
the split (``Forgery``, ``PhotoPool``, ``jpeg_compress``, ``procedural_scene``, ``random_blob_mask``) are
still importable from here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from webiml.data.arrays import resize_bool, resize_rgb
from webiml.data.forgeries import Forgery, make_copy_move, make_removal, make_splice, random_scale
from webiml.data.generated import params_unchanged, write_params
from webiml.data.manifest import ManifestRecord, read_manifest, write_manifest
from webiml.data.photo_pool import PhotoPool
from webiml.data.procedural import GENERATOR_VERSION, procedural_scene
from webiml.data.regions import random_blob_mask
from webiml.io import jpeg_compress, save_image

__all__ = [
    "KINDS",
    "Forgery",  # re-exported (webiml.data.forgeries)
    "PhotoPool",  # re-exported (webiml.data.photo_pool)
    "fit_photo",
    "jpeg_compress",  # re-exported (webiml.io)
    "procedural_scene",  # re-exported (webiml.data.procedural)
    "random_blob_mask",  # re-exported (webiml.data.regions)
    "synthesize",
    "write_synthetic_dataset",
]

KINDS: tuple[str, ...] = ("splice", "copy_move", "removal")


def fit_photo(image: np.ndarray, regions: list[np.ndarray], size: tuple[int, int]
         ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize (bilinear; masks nearest) so the photo covers ``size``, then center-crop to it."""
    th, tw = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return image, regions
    f = max(th / h, tw / w)
    nh, nw = max(th, int(math.ceil(h * f - 1e-6))), max(tw, int(math.ceil(w * f - 1e-6)))
    image = resize_rgb(image, nh, nw)
    regions = [resize_bool(r, nh, nw) for r in regions]
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
            photo, regions = fit_photo(photo, regions, size)
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
                s = base * random_scale(None, rng, 0.5, (0.5, 1.5))
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
    params = {"version": GENERATOR_VERSION, "n": int(n), "seed": int(seed), "size": None if size is None else list(size),
              "p_authentic": float(p_authentic), "source": source, "image_format": image_format,
              "kinds": list(kinds), "p_jpeg": float(p_jpeg), "pool": pool.signature}
    manifest = out / "manifest.jsonl"
    params_path = out / "params.json"
    if not overwrite and manifest.is_file() and params_unchanged(
            params_path, params, lambda: all(Path(r.image).is_file() and (r.mask is None or Path(r.mask).is_file())
                                             for r in read_manifest(manifest))):
        return manifest
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
    write_params(params_path, params)
    return manifest

