"""COCO instance annotations: RLE (compressed or not) and polygons to bool masks, and
:class:`CocoInstances` (photos with their instance masks from a COCO instances JSON).

The RLE codec is webiml's own (about 40 lines): pycocotools decodes malformed RLE silently into garbage,
while :func:`decode_rle` checks that the runs cover the image and says what is wrong. Polygons are
rasterised with PIL ``ImageDraw``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from webiml.data.arrays import resize_bool, resize_rgb
from webiml.io import read_image

__all__ = ["CocoInstances", "annotation_to_mask", "decode_rle", "encode_rle", "polygons_to_mask"]


def _rle_counts_from_string(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string (LEB128-like, 5 bits per char, deltas from the count two back)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("truncated compressed RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _rle_string_from_counts(counts: Sequence[int]) -> str:
    chars: list[str] = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            chars.append(chr(ch + 48))
    return "".join(chars)


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (``{"size": [h, w], "counts": str | bytes | list[int]}``) into a bool (h, w) mask.

    Counts alternate background/foreground runs, starting with background, over the pixels in column-major
    (Fortran) order; a string is COCO's compressed form.
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"not a COCO RLE: {str(rle)[:100]}") from None
    runs = _rle_counts_from_string(counts) if isinstance(counts, str | bytes) else [int(c) for c in counts]
    if any(r < 0 for r in runs) or sum(runs) != h * w:
        raise ValueError(f"RLE counts sum to {sum(runs)} (negative runs: {any(r < 0 for r in runs)}), expected {h * w}")
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape((w, h)).T.copy()


def encode_rle(mask: np.ndarray, *, compressed: bool = True) -> dict[str, Any]:
    """Encode a bool (h, w) mask as a COCO RLE (compressed string counts, or a list with ``compressed=False``)."""
    m = np.asarray(mask, bool)
    flat = m.T.ravel()  # column-major
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    counts: Any = _rle_string_from_counts(runs) if compressed else runs
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": counts}


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (``[[x1, y1, x2, y2, ...], ...]``) into a bool (height, width) mask (PIL)."""
    im = Image.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(im)
    for poly in polygons:
        pts = [float(v) for v in poly]
        if len(pts) >= 6:
            draw.polygon(list(zip(pts[0::2], pts[1::2], strict=False)), fill=255, outline=255)
    return np.asarray(im) > 0


def annotation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The bool mask of a COCO ``segmentation`` field: polygons, uncompressed RLE or compressed RLE."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        m = decode_rle(segmentation)
        if m.shape != (height, width):
            raise ValueError(f"RLE size {m.shape} != image size {(height, width)}")
        return m
    raise ValueError(f"unknown COCO segmentation type {type(segmentation).__name__}")


class CocoInstances:
    """Photos with their COCO instance masks, from a COCO instances JSON (e.g. ``instances_train2017.json``).

    Args:
        root_or_json: the JSON file, or a folder holding ``instances.json`` (the layout of
            ``shared/data/natural/coco128``) or ``annotations/instances_*.json`` (exactly one).
        images_dir: the images' folder. Default: ``<folder>/images`` if it exists; for
            ``<root>/annotations/instances_<split>.json``, ``<root>/<split>``.
        include_crowd: also use ``iscrowd=1`` annotations (crowd regions: off by default).
        category_ids: only these categories (default: all).
        min_area: skip annotations whose ``area`` is smaller.
        max_side: downscale larger photos (and masks, nearest) to this long side.

    Only images that have at least one usable annotation and whose file exists are kept, sorted by file
    name (so an index is stable). :meth:`load` gives ``(image, masks)``, :meth:`load_with_boxes` adds the
    annotation boxes (what the authors' Object Jitter tests); :meth:`sample` draws one with the caller's
    generator. :class:`~webiml.data.jitter_dataset.ObjectJitterDataset` reads it by index.
    """

    def __init__(
        self,
        root_or_json: str | os.PathLike[str],
        images_dir: str | os.PathLike[str] | None = None,
        *,
        include_crowd: bool = False,
        category_ids: Iterable[int] | None = None,
        min_area: float = 0.0,
        max_side: int | None = None,
    ) -> None:
        path = Path(root_or_json)
        if path.is_dir():
            found = [path / "instances.json"] if (path / "instances.json").is_file() else \
                sorted((path / "annotations").glob("instances_*.json"))
            if len(found) != 1:
                raise FileNotFoundError(f"{path}: expected instances.json or one annotations/instances_*.json, "
                                        f"found {[str(f) for f in found]}")
            json_path = found[0]
        else:
            json_path = path
        if not json_path.is_file():
            raise FileNotFoundError(f"COCO instances JSON not found: {json_path}")
        if images_dir is None:
            split = json_path.stem.removeprefix("instances_")
            options = [json_path.parent / "images", json_path.parent.parent / split, json_path.parent / split]
            images_dir = next((o for o in options if o.is_dir()), None)
            if images_dir is None:
                raise FileNotFoundError(f"cannot find the images of {json_path}: pass images_dir (tried {[str(o) for o in options]})")
        self.json_path, self.images_dir = json_path, Path(images_dir)
        self.max_side = max_side
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        cats = None if category_ids is None else {int(c) for c in category_ids}
        anns: dict[int, list[dict[str, Any]]] = {}
        for a in meta.get("annotations", []):
            if (a.get("iscrowd", 0) and not include_crowd) or float(a.get("area", 0.0)) < min_area:
                continue
            if cats is not None and int(a.get("category_id", -1)) not in cats:
                continue
            if not a.get("segmentation"):
                continue
            anns.setdefault(int(a["image_id"]), []).append(a)
        self.images: list[dict[str, Any]] = []
        self.annotations: list[list[dict[str, Any]]] = []
        for img in sorted(meta.get("images", []), key=lambda im: im["file_name"]):
            ids = anns.get(int(img["id"]))
            if ids and (self.images_dir / img["file_name"]).is_file():
                self.images.append(img)
                self.annotations.append(sorted(ids, key=lambda a: a.get("id", 0)))
        if not self.images:
            raise ValueError(f"{json_path}: no image with usable instance annotations under {self.images_dir}")
        self.signature = {"type": "coco_instances", "json": str(json_path.resolve()),
                          "images_dir": str(self.images_dir.resolve()), "n": len(self.images),
                          "include_crowd": include_crowd, "category_ids": None if cats is None else sorted(cats),
                          "min_area": min_area, "max_side": max_side}

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"CocoInstances({self.json_path}, {len(self)} images)"

    def load(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Image ``index`` as RGB uint8 and the bool masks of its annotations (in annotation-id order)."""
        image, masks, _ = self.load_with_boxes(index)
        return image, masks

    def load_with_boxes(self, index: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """:meth:`load` plus the annotations' ``bbox`` as an (N, 4) float32 xyxy array in the pixels of the
        returned image (scaled like the masks; the mask's tight box where an annotation has no ``bbox``)."""
        info = self.images[index]
        image = read_image(self.images_dir / info["file_name"])
        h, w = image.shape[:2]
        ah, aw = int(info.get("height", h)), int(info.get("width", w))
        anns = self.annotations[index]
        masks = [annotation_to_mask(a["segmentation"], ah, aw) for a in anns]
        boxes = np.zeros((len(anns), 4), np.float32)
        for i, (a, m) in enumerate(zip(anns, masks, strict=True)):
            if a.get("bbox") is not None and len(a["bbox"]) == 4:
                x, y, bw, bh = (float(v) for v in a["bbox"])
                boxes[i] = (x, y, x + bw, y + bh)
            elif m.any():
                rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
                boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        if (ah, aw) != (h, w):
            masks = [resize_bool(m, h, w) for m in masks]
            boxes *= np.array([w / aw, h / ah, w / aw, h / ah], np.float32)
        if self.max_side is not None and max(h, w) > self.max_side:
            f = self.max_side / max(h, w)
            nh, nw = max(1, round(h * f)), max(1, round(w * f))
            image = resize_rgb(image, nh, nw)
            masks = [resize_bool(m, nh, nw) for m in masks]
            boxes *= np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
        return image, masks, boxes

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.load(int(rng.integers(len(self))))
