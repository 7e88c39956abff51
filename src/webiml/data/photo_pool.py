"""PhotoPool: photos with region masks (procedural scenes, a folder with label maps, COCO panoptic, BSDS500),
sampled with a caller-provided generator; :func:`make_photo_pool`, the one builder of pools from photo source
specs (with the train / val / test hash split of photo-backed pools)."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from webiml.data.arrays import resize_labels, resize_rgb
from webiml.data.procedural import GENERATOR_VERSION, procedural_scene
from webiml.data.regions import random_blob_mask
from webiml.io import IMAGE_SUFFIXES, check_pixels, read_image

__all__ = ["SPLIT_SHARES", "PhotoPool", "make_photo_pool", "split_photo_pool"]


def _limit_side(image: np.ndarray, labels: np.ndarray | None, max_side: int | None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, labels
    f = max_side / max(h, w)
    nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    image = resize_rgb(image, nh, nw)
    if labels is not None:
        labels = resize_labels(labels, nh, nw)
    return image, labels


def _read_labels(path: Path) -> np.ndarray:
    """A label map as int32: L/P/I images as is, RGB as ``R + 256 G + 65536 B`` (COCO panoptic)."""
    with Image.open(path) as im:
        check_pixels(path, im.size)
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
        sig = {"type": "procedural", "size": list(size), "seed": seed, "n": n, "version": GENERATOR_VERSION}
        return cls(None, procedural_size=(int(size[0]), int(size[1])), seed=seed, n_procedural=n,
                   signature=sig, **kwargs)

    @classmethod
    def from_folder(cls, images_dir: str | os.PathLike[str], masks_dir: str | os.PathLike[str] | None = None,
                    **kwargs: Any) -> PhotoPool:
        """Photos in ``images_dir``; optional same-stem PNG label maps in ``masks_dir`` (0 = background,
        every other value one region; RGB maps are decoded as ``R + 256 G + 65536 B``)."""
        images_dir = Path(images_dir)
        paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
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
                if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in annotated:
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
            labels = resize_labels(labels, *image.shape[:2])
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


# -- building pools from specs


SPLIT_SHARES = {"train": (0, 80), "val": (80, 90), "test": (90, 100)}
"""Hash buckets (of 100) of each split of a photo-backed pool."""

PoolSpec = str | os.PathLike[str] | PhotoPool | None


def make_photo_pool(spec: PoolSpec | Sequence[PoolSpec], split: str | None = "train", seed: int = 0,
                    size: int | tuple[int, int] = 256, max_side: int | None = None) -> PhotoPool:
    """A :class:`PhotoPool` from a photo source spec, restricted to one split (the one builder of pools).

    ``spec``: ``"procedural"`` (or ``None``), a folder, ``"folder:PATH"``, ``"coco-panoptic:PATH"``,
    ``"bsds:PATH"``, a :class:`PhotoPool`, or a list of specs (one pool over all of them; ``"procedural"``
    cannot be mixed with photos). A bare folder is read as a COCO-panoptic tree when it holds
    ``panoptic.json``, as a BSDS-like tree when it holds ``images/`` and ``regions/``, else as a plain folder
    of photos. Photo-backed pools are split 80/10/10 into train/val/test by a hash of the file name
    (:func:`split_photo_pool`), so generated validation and test forgeries never reuse a training photo;
    ``split=None`` keeps every photo. Procedural photos (of ``size``) differ by ``seed`` and are not split.
    ``max_side``: photos are reduced to this long side on load (default: twice the long side of ``size``, at
    least 256).
    """
    if spec is not None and not isinstance(spec, str | os.PathLike | PhotoPool):
        return _merged([make_photo_pool(s, split, seed, size, max_side) for s in spec])
    if isinstance(spec, PhotoPool):
        return spec if split is None or spec.procedural_size is not None else split_photo_pool(spec, split)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if spec is None or str(spec) == "procedural":
        return PhotoPool.procedural(size=(h, w), seed=seed)
    spec = str(spec)
    kind, _, path = spec.partition(":") if ":" in spec and not Path(spec).exists() else ("", "", spec)
    builders = {"folder": PhotoPool.from_folder, "coco-panoptic": PhotoPool.from_coco_panoptic, "bsds": PhotoPool.from_bsds}
    if kind and kind not in builders:
        raise ValueError(f"unknown photo source {spec!r}: use 'procedural', a folder, 'coco-panoptic:PATH' or 'bsds:PATH'")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"photo source {spec!r}: {path} is not a folder")
    if not kind:
        kind = ("coco-panoptic" if (root / "panoptic.json").is_file()
                else "bsds" if (root / "images").is_dir() and (root / "regions").is_dir() else "folder")
    pool = builders[kind](root, max_side=max(max(h, w) * 2, 256) if max_side is None else max_side)
    return pool if split is None else split_photo_pool(pool, split, spec)


def _merged(pools: list[PhotoPool]) -> PhotoPool:
    """One pool over the photos of ``pools`` (the first one, extended)."""
    if not pools:
        raise ValueError("no photo source given")
    if len(pools) == 1:
        return pools[0]
    if any(p.procedural_size is not None for p in pools):
        raise ValueError("'procedural' photos cannot be mixed with photo folders")
    merged = pools[0]
    for other in pools[1:]:
        merged.entries += other.entries
    merged.signature = {"type": "merged", "sources": [p.signature for p in pools], "n": len(merged.entries)}
    return merged


def split_photo_pool(pool: PhotoPool, split: str, spec: str = "") -> PhotoPool:
    """Keep the photos of ``pool`` (a photo-backed :class:`PhotoPool`) that fall in ``split``: train 80 /
    val 10 / test 10 by a hash of the file name (the same photo, the same split)."""
    import hashlib

    lo, hi = SPLIT_SHARES[split]

    def bucket(p: Path) -> int:
        return int(hashlib.sha1(Path(p).name.encode()).hexdigest(), 16) % 100

    pool.entries = [e for e in pool.entries if lo <= bucket(e.image) < hi]
    if not pool.entries:
        raise ValueError(f"photo source {spec or pool.signature!r} has no photos in the {split} split")
    pool.signature["split"] = split
    pool.signature["n"] = len(pool.entries)
    return pool
