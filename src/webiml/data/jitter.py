"""Object Jitter and COCO instance masks.

**Object Jitter** (MIMLv2 paper; the MIML authors' training code calls it ``COCO`` in their mmseg
pipelines) makes a real manipulation with an exact mask out of any photo with instance masks: one real
object is enlarged in place by about 12.5% and alpha-blended back, which leaves genuine resampling and
blending artifacts on a real object with real context. :func:`object_jitter` does it:

1. Candidates: instances whose tight box is at least ``min_side`` px on both sides and ``min_box_area``
   px in area (authors: 8 and 256). One is drawn uniformly.
2. Its tight box ``[y0, y1) x [x0, x1)`` (size ``h x w``) grows by ``dy = round(h * scale)`` and ``dx =
   round(w * scale)`` (at least 1 px) on each side (``scale = 1/16``, so ``h + 2 dy ~ 1.125 h``): the box
   patch of the image and of the instance mask are resized (bilinear) to the enlarged size and pasted
   back centred on the box, clipped at the image border. The resized instance mask is the alpha.
3. With probability ``p_blur`` the alpha is blurred (Gaussian, OpenCV's default sigma for the kernel)
   with a kernel chosen from the object's box size ``min(h, w)``: < 16 px none, < 32: 3, < 64: 5,
   < 128: 7, < 256: 9, otherwise 11 (:func:`blur_kernel_size`).
4. Ground truth: ``alpha > 0.5`` in the pasted window, exact with respect to the alpha that was used
   (:attr:`Forgery.alpha`). Pixels outside the window, and inside it where ``alpha == 0``, are untouched.
5. Optionally a second object (probability ``p_second``), drawn from the candidates whose box does not
   overlap the first pasted window, when at least ``second_min_candidates`` of them are left (the
   authors ask for more than 8 boxes including the first one, i.e. ``second_min_candidates=8``).
6. Rejection: the sample is ``None`` when no candidate exists or the mask is empty or covers more than
   ``max_area`` (0.75) of the image.

Every random choice comes from the caller's :class:`numpy.random.Generator`, so a seed gives the same
sample. webiml's differences from the authors' code: the tight box end is exclusive (the authors drop the
last row and column of the box), the enlargement is at least one pixel (the authors' ``np.round(8/16)``
is 0 for 8-15 px objects, which would label an unchanged object as manipulated), images are resized
with PIL instead of OpenCV.

**Inputs.** Any image with instance masks: a list of bool masks, an (N, H, W) array, or an integer label
map (0 = background, every other value one instance). :class:`CocoInstances` reads COCO instance
annotations (polygons via PIL ``ImageDraw``, RLE, compressed or not, with the small decoder below: no
pycocotools needed); :class:`~webiml.data.synthetic.PhotoPool` (procedural scenes, folders of label maps,
COCO panoptic) works as well.

**Datasets.** :func:`write_jitter_dataset` writes a "jitter set" (images, masks, manifest, params.json;
atomic, deterministic, idempotent, like :func:`~webiml.data.synthetic.write_synthetic_dataset`), so it is
just one more training source (``source: coco-jitter``) with its own repeat factor.

QES weights of auto-annotated web data (``qes_weight``, ``apply_qes_weights``) are in :mod:`webiml.annotate.qes`.

Command line::

    python -m webiml.data.jitter build --out data/jitter/coco --n 100000 --seed 0 \\
        --coco data/coco/annotations/instances_train2017.json --images data/coco/train2017 \\
        --size 512 --zoom 1 1.5 --source coco-jitter --manifest data/manifests/coco-jitter.jsonl
    python -m webiml.data.jitter build --out runs/jitter-data/train --n 256 --seed 0 --procedural 192
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from webiml.data.manifest import ManifestRecord, read_manifest, write_manifest
from webiml.data.synthetic import Forgery, PhotoPool, jpeg_compress
from webiml.io import atomic_write_text, read_image, save_image

__all__ = [
    "JITTER_KIND",
    "CocoInstances",
    "annotation_to_mask",
    "blur_kernel_size",
    "decode_rle",
    "encode_rle",
    "instance_masks",
    "object_jitter",
    "polygons_to_mask",
    "write_jitter_dataset",
]

JITTER_KIND = "jitter"
_JITTER_VERSION = 1  # bump when the output of object_jitter / write_jitter_dataset changes


# --------------------------------------------------------------------------------------------------
# the augmentation


def blur_kernel_size(size: float) -> int:
    """Gaussian kernel of the alpha-edge blur for an object whose box is ``size`` px (its smaller side):
    < 16: 1 (no blur), < 32: 3, < 64: 5, < 128: 7, < 256: 9, otherwise 11 (the authors' ``calk``)."""
    for limit, k in ((16, 1), (32, 3), (64, 5), (128, 7), (256, 9)):
        if size < limit:
            return k
    return 11


_SMALL_GAUSSIAN = {  # OpenCV's fixed tables for getGaussianKernel(k, sigma <= 0), k <= 7
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def _gaussian_taps(ksize: int) -> np.ndarray:
    """1-D taps of OpenCV's ``getGaussianKernel(ksize, 0)``, which ``cv2.GaussianBlur(a, (k, k), 0)`` uses:
    fixed tables up to 7, else a Gaussian with ``sigma = 0.3 ((k - 1) / 2 - 1) + 0.8``."""
    if ksize in _SMALL_GAUSSIAN:
        return np.array(_SMALL_GAUSSIAN[ksize], np.float32)
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    taps = np.exp(-(x * x) / (2 * sigma * sigma))
    return (taps / taps.sum()).astype(np.float32)


def _blur(alpha: np.ndarray, ksize: int) -> np.ndarray:
    """Separable Gaussian blur with OpenCV's default border (reflect-101 == scipy's ``mirror``)."""
    if ksize <= 1:
        return alpha
    taps = _gaussian_taps(ksize)
    out = ndi.convolve1d(alpha, taps, axis=0, mode="mirror")
    return ndi.convolve1d(out, taps, axis=1, mode="mirror")


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two half-open boxes (y0, y1, x0, x1) share a positive area."""
    return max(a[0], b[0]) < min(a[1], b[1]) and max(a[2], b[2]) < min(a[3], b[3])


def instance_masks(instances: Any, shape: tuple[int, int]) -> list[np.ndarray]:
    """Normalise instance masks into a list of bool (H, W) arrays.

    ``instances``: a sequence of masks, an (N, H, W) array, or an integer (H, W) label map (0 =
    background, every other value one instance; bool (H, W) arrays are one instance).
    """
    if isinstance(instances, np.ndarray):
        if instances.ndim == 2 and instances.dtype != bool:
            ids = np.unique(instances)
            masks = [instances == i for i in ids if i != 0]
        elif instances.ndim == 2:
            masks = [instances]
        elif instances.ndim == 3:
            masks = list(instances)
        else:
            raise ValueError(f"instance masks must be (H, W) or (N, H, W), got shape {instances.shape}")
    else:
        masks = list(instances)
    out = []
    for m in masks:
        m = np.asarray(m)
        if m.shape != tuple(shape):
            raise ValueError(f"an instance mask has shape {m.shape}, the image {tuple(shape)}")
        out.append(m > (127 if m.dtype == np.uint8 and m.max() > 1 else 0))
    return out


class _Paste(NamedTuple):
    window: tuple[int, int, int, int]  # (y0, y1, x0, x1) in the image, clipped
    patch: np.ndarray  # float32 (h, w, 3)
    alpha: np.ndarray  # float32 (h, w) in [0, 1]
    box: tuple[int, int, int, int]
    pad: tuple[int, int]
    blur_kernel: int


def _enlarge(image: np.ndarray, region: np.ndarray, box: tuple[int, int, int, int], scale: float,
             blur_kernel: int) -> _Paste:
    """The enlarged box patch of ``image`` and its alpha (the enlarged ``region``), clipped to the image."""
    y0, y1, x0, x1 = box
    bh, bw = y1 - y0, x1 - x0
    dy, dx = max(1, int(round(bh * scale))), max(1, int(round(bw * scale)))
    nh, nw = bh + 2 * dy, bw + 2 * dx
    patch = np.asarray(Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).resize(
        (nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
    src_alpha = np.ascontiguousarray(region[y0:y1, x0:x1], dtype=np.float32)
    alpha = np.asarray(Image.fromarray(src_alpha).resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
    # clip the enlarged box (y0 - dy .. y1 + dy) to the image
    h, w = region.shape
    wy0, wy1, wx0, wx1 = max(y0 - dy, 0), min(y1 + dy, h), max(x0 - dx, 0), min(x1 + dx, w)
    oy, ox = wy0 - (y0 - dy), wx0 - (x0 - dx)
    patch = patch[oy:oy + wy1 - wy0, ox:ox + wx1 - wx0]
    alpha = np.clip(alpha[oy:oy + wy1 - wy0, ox:ox + wx1 - wx0], 0.0, 1.0)
    alpha = _blur(alpha, blur_kernel)
    alpha[alpha < 1e-4] = 0.0  # keep the blended support compact: pixels with alpha 0 stay untouched
    return _Paste((wy0, wy1, wx0, wx1), patch, alpha, box, (dy, dx), blur_kernel)


def _blend(image: np.ndarray, paste: _Paste) -> None:
    """Alpha-blend ``paste`` into ``image`` in place (only where alpha > 0)."""
    y0, y1, x0, x1 = paste.window
    view = image[y0:y1, x0:x1]
    sel = paste.alpha > 0
    a = paste.alpha[sel][:, None]
    view[sel] = np.clip(np.rint(view[sel].astype(np.float32) * (1.0 - a) + paste.patch[sel] * a), 0, 255).astype(np.uint8)


def object_jitter(
    image: np.ndarray,
    instances: Any,
    rng: np.random.Generator,
    *,
    scale: float = 1 / 16,
    p_blur: float = 0.2,
    p_second: float = 0.5,
    second_min_candidates: int = 8,
    max_area: float = 0.75,
    min_side: int = 8,
    min_box_area: int = 256,
) -> Forgery | None:
    """Object Jitter on one image (see the module docstring); ``None`` when the sample is rejected.

    Args:
        image: RGB ``uint8`` (H, W, 3); not modified.
        instances: instance masks (list of bool masks, (N, H, W) array or an integer label map).
        rng: the only source of randomness.
        scale: enlargement per side as a fraction of the box size (1/16: the object grows ~12.5%).
        p_blur: probability of blurring an object's alpha edge (kernel from :func:`blur_kernel_size`).
        p_second: probability of jittering a second object (when enough candidates are left).
        second_min_candidates: candidates not overlapping the first pasted window needed for a second
            object (authors: 8; use 1 for images with few objects).
        max_area: reject samples whose mask covers more than this fraction of the image.
        min_side, min_box_area: smallest usable object box (authors: 8 px, 256 px^2).

    Returns:
        a :class:`~webiml.data.synthetic.Forgery` of kind ``"jitter"``: ``mask`` = ``alpha > 0.5`` (0/255),
        ``alpha`` the full-size alpha (the per-pixel max over the pasted objects), ``source`` the input
        image, ``info["objects"]`` one dict per pasted object (``instance``, ``box``, ``window``, ``pad``,
        ``blur_kernel``).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    masks = instance_masks(instances, (h, w))
    cands: list[tuple[int, tuple[int, int, int, int]]] = []
    for i, m in enumerate(masks):
        box = _bbox(m)
        if box is None:
            continue
        bh, bw = box[1] - box[0], box[3] - box[2]
        if bh >= min_side and bw >= min_side and bh * bw >= min_box_area:
            cands.append((i, box))
    if not cands:
        return None
    out = image.copy()
    alpha_full = np.zeros((h, w), np.float32)
    objects: list[dict[str, Any]] = []

    def paste(i: int, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        blur = bool(rng.random() < p_blur)
        k = blur_kernel_size(min(box[1] - box[0], box[3] - box[2])) if blur else 1
        p = _enlarge(out, masks[i], box, scale, k)
        _blend(out, p)
        y0, y1, x0, x1 = p.window
        np.maximum(alpha_full[y0:y1, x0:x1], p.alpha, out=alpha_full[y0:y1, x0:x1])
        objects.append({"instance": i, "box": list(box), "window": list(p.window), "pad": list(p.pad),
                        "blur_kernel": k})
        return p.window

    first, box = cands[int(rng.integers(len(cands)))]
    window = paste(first, box)
    if p_second > 0:
        others = [(i, b) for i, b in cands if i != first and not _overlaps(b, window)]
        if len(others) >= max(1, second_min_candidates) and rng.random() < p_second:
            paste(*others[int(rng.integers(len(others)))])
    region = alpha_full > 0.5
    frac = np.count_nonzero(region) / region.size
    if frac == 0 or frac > max_area:
        return None
    info = {"objects": objects, "scale": float(scale), "area": float(frac)}
    return Forgery(out, region.astype(np.uint8) * 255, JITTER_KIND, alpha_full, image, info)


# --------------------------------------------------------------------------------------------------
# COCO instance annotations


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


class InstanceSource(Protocol):
    """What :func:`write_jitter_dataset` samples from: ``sample(rng) -> (image, instance masks)``."""

    signature: dict[str, Any]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]: ...


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
    name (so an index is stable). :meth:`load` gives ``(image, masks)``; :meth:`sample` draws one with the
    caller's generator (the protocol :func:`write_jitter_dataset` uses).
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
        info = self.images[index]
        image = read_image(self.images_dir / info["file_name"])
        h, w = image.shape[:2]
        ah, aw = int(info.get("height", h)), int(info.get("width", w))
        masks = [annotation_to_mask(a["segmentation"], ah, aw) for a in self.annotations[index]]
        if (ah, aw) != (h, w):
            masks = [_resize_bool(m, h, w) for m in masks]
        if self.max_side is not None and max(h, w) > self.max_side:
            f = self.max_side / max(h, w)
            nh, nw = max(1, round(h * f)), max(1, round(w * f))
            image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
            masks = [_resize_bool(m, nh, nw) for m in masks]
        return image, masks

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.load(int(rng.integers(len(self))))


def _resize_bool(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(im) > 127


def _random_fit(image: np.ndarray, masks: list[np.ndarray], size: tuple[int, int], rng: np.random.Generator,
                zoom: tuple[float, float]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize (keeping the aspect) to cover ``size`` times a random zoom, then crop ``size`` at random
    (the authors: resize to 512-768, random 512 crop, then jitter)."""
    th, tw = size
    h, w = image.shape[:2]
    if (h, w) == (th, tw) and zoom == (1.0, 1.0):
        return image, masks
    f = max(th / h, tw / w) * float(rng.uniform(*zoom))
    nh, nw = max(th, math.ceil(h * f - 1e-6)), max(tw, math.ceil(w * f - 1e-6))
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
        masks = [_resize_bool(m, nh, nw) for m in masks]
    y0, x0 = int(rng.integers(nh - th + 1)), int(rng.integers(nw - tw + 1))
    return image[y0:y0 + th, x0:x0 + tw], [m[y0:y0 + th, x0:x0 + tw] for m in masks]


# --------------------------------------------------------------------------------------------------
# jitter datasets


_WORKER_JOB: dict[str, Any] = {}


def _init_worker(job: dict[str, Any]) -> None:
    _WORKER_JOB.clear()
    _WORKER_JOB.update(job)


def _write_in_worker(i: int) -> ManifestRecord:
    return _write_sample(_WORKER_JOB, i)


def _write_sample(job: dict[str, Any], i: int) -> ManifestRecord:
    """Draw, jitter and save sample ``i`` of a jitter dataset (depends only on the job and ``i``)."""
    out, fmt, (qlo, qhi) = job["out"], job["image_format"], job["jpeg_quality"]
    rng = np.random.default_rng([job["seed"], 7, i])
    for _ in range(job["max_tries"]):
        photo, masks = job["instances"].sample(rng)
        if job["size"] is not None:
            photo, masks = _random_fit(photo, masks, job["size"], rng, job["zoom"])
        use_jpeg = bool(rng.random() < job["p_jpeg"])
        q1, q2 = (int(rng.integers(qlo, qhi + 1)) for _ in range(2))
        if use_jpeg:
            photo = jpeg_compress(photo, q1)
        f = object_jitter(photo, masks, rng, **job["jitter"])
        if f is not None:
            break
    else:
        raise RuntimeError(f"sample {i}: no acceptable jitter in {job['max_tries']} photos (do they have instance masks?)")
    stem = f"{i:06d}"
    img_path = out / "images" / f"{stem}.{fmt}"
    (out / "images" / f"{stem}.{'png' if fmt == 'jpg' else 'jpg'}").unlink(missing_ok=True)
    if fmt == "jpg":
        save_image(img_path, f.image, quality=q2)
    else:
        save_image(img_path, jpeg_compress(f.image, q2) if use_jpeg else f.image, compress_level=1)
    mask_path = out / "masks" / f"{stem}.png"
    save_image(mask_path, f.mask)
    return ManifestRecord(str(img_path), str(mask_path), 1, job["source"],
                          extra={"kind": JITTER_KIND, "objects": len(f.info["objects"])})


def write_jitter_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    *,
    seed: int,
    instances: InstanceSource | None = None,
    size: tuple[int, int] | int | None = (256, 256),
    zoom: tuple[float, float] = (1.0, 1.0),
    source: str = "jitter",
    image_format: str = "png",
    p_jpeg: float = 0.0,
    jpeg_quality: tuple[int, int] = (70, 100),
    scale: float = 1 / 16,
    p_blur: float = 0.2,
    p_second: float = 0.5,
    second_min_candidates: int = 8,
    max_area: float = 0.75,
    manifest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    max_tries: int = 100,
    num_workers: int = 0,
) -> Path:
    """Write ``n`` Object Jitter samples to ``out_dir`` and return the manifest path.

    Layout: ``images/<i:06d>.<png|jpg>``, ``masks/<i:06d>.png``, ``params.json`` and the manifest
    (``out_dir/manifest.jsonl`` or ``manifest``; rows ``label`` 1, ``source``, extra ``kind: "jitter"``
    and ``objects``: how many objects were jittered). Sample ``i`` depends only on ``seed``, ``i`` and the
    instance source, so the same arguments give byte-identical files; if ``params.json`` records the same
    parameters and every file exists, nothing is regenerated (unless ``overwrite``).

    Args:
        instances: where photos and instance masks come from: :class:`CocoInstances`, a
            :class:`~webiml.data.synthetic.PhotoPool` (folder of label maps, COCO panoptic, ...) or anything
            with ``sample(rng) -> (image, masks)`` and a ``signature`` dict. Default: a bank of
            ``clamp(n // 2, 32, 4096)`` procedural scenes of ``size`` (their objects are the instances).
        size: output size ``(h, w)`` (or an int): photos are resized to cover it times a zoom drawn from
            ``zoom`` and cropped at random *before* jittering (the result is never resampled); ``None``
            keeps each photo's own size. The authors resize to 1-1.5x the crop size: ``zoom=(1.0, 1.5)``.
        p_jpeg, jpeg_quality: with probability ``p_jpeg`` the photo is JPEG-compressed before jittering and
            the result again after it (qualities drawn from ``jpeg_quality``); for photos without a JPEG
            history (procedural) so compression traces alone do not give the label away.
        image_format: ``"png"`` or ``"jpg"`` (saved at a quality from ``jpeg_quality``; blurs the traces).
        scale, p_blur, p_second, second_min_candidates, max_area: see :func:`object_jitter`.
        max_tries: photos drawn per sample before giving up (``RuntimeError``).
        num_workers: write with this many processes (the files do not depend on it).
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if isinstance(size, int):
        size = (size, size)
    out = Path(out_dir)
    if instances is None:
        bank = min(max(int(n) // 2, 32), 4096)
        instances = PhotoPool.procedural(size=tuple(size) if size is not None else (256, 256), seed=seed, n=bank,  # type: ignore[arg-type]
                                         min_region=0.0, max_region=max_area)
    params = {"version": _JITTER_VERSION, "n": int(n), "seed": int(seed), "size": None if size is None else list(size),
              "zoom": list(zoom), "source": source, "image_format": image_format, "p_jpeg": float(p_jpeg),
              "jpeg_quality": list(jpeg_quality), "scale": float(scale), "p_blur": float(p_blur),
              "p_second": float(p_second), "second_min_candidates": int(second_min_candidates),
              "max_area": float(max_area), "instances": getattr(instances, "signature", repr(instances))}
    manifest_path = Path(manifest) if manifest is not None else out / "manifest.jsonl"
    params_path = out / "params.json"
    if not overwrite and manifest_path.is_file() and params_path.is_file():
        try:
            same = json.loads(params_path.read_text(encoding="utf-8")) == json.loads(json.dumps(params))
            if same and all(Path(r.image).is_file() and r.mask is not None and Path(r.mask).is_file()
                            for r in read_manifest(manifest_path)):
                return manifest_path
        except (ValueError, OSError):
            pass
    params_path.unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    job = {"out": out, "instances": instances, "size": size, "zoom": tuple(zoom), "source": source,
           "image_format": image_format, "p_jpeg": p_jpeg, "jpeg_quality": tuple(jpeg_quality), "seed": int(seed),
           "max_tries": max_tries, "jitter": {"scale": scale, "p_blur": p_blur, "p_second": p_second,
                                             "second_min_candidates": second_min_candidates, "max_area": max_area}}
    if num_workers > 0 and n > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(num_workers, initializer=_init_worker, initargs=(job,)) as pool:
            records = list(pool.imap(_write_in_worker, range(int(n)), chunksize=8))
    else:
        records = [_write_sample(job, i) for i in range(int(n))]
    write_manifest(manifest_path, records)
    atomic_write_text(params_path, json.dumps(params, indent=1, sort_keys=True) + "\n")
    return manifest_path


# --------------------------------------------------------------------------------------------------
# command line


def _instances_from_args(args: argparse.Namespace) -> InstanceSource | None:
    if args.coco:
        return CocoInstances(args.coco, args.images, include_crowd=args.include_crowd, max_side=args.max_side)
    if args.folder:
        return PhotoPool.from_folder(args.folder, args.labels, max_side=args.max_side, min_region=0.0,
                                     max_region=args.max_area)
    if args.coco_panoptic:
        return PhotoPool.from_coco_panoptic(args.coco_panoptic, include_unannotated=False,
                                            max_side=args.max_side, min_region=0.0, max_region=args.max_area)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webiml.data.jitter", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write an Object Jitter dataset (images, masks, manifest)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--n", type=int, required=True, help="number of samples")
    b.add_argument("--seed", type=int, default=0)
    src = b.add_mutually_exclusive_group()
    src.add_argument("--coco", help="COCO instances JSON (or a folder holding instances.json)")
    src.add_argument("--folder", help="a folder of photos (with --labels: same-stem PNG instance label maps)")
    src.add_argument("--coco-panoptic", help="a COCO panoptic root (images/, panoptic/, panoptic.json)")
    src.add_argument("--procedural", type=int, metavar="SIZE", help="procedural scenes of SIZE px (default source)")
    b.add_argument("--images", help="images folder of --coco")
    b.add_argument("--labels", help="label maps folder of --folder")
    b.add_argument("--include-crowd", action="store_true")
    b.add_argument("--size", type=int, default=None, help="square output size (default: --procedural SIZE, else 512)")
    b.add_argument("--native", action="store_true", help="keep each photo's size (no resize/crop)")
    b.add_argument("--zoom", type=float, nargs=2, default=(1.0, 1.0), metavar=("LO", "HI"),
                   help="resize photos to cover SIZE times a zoom in [LO, HI] before the crop (authors: 1 1.5)")
    b.add_argument("--max-side", type=int, default=None, help="downscale larger photos first")
    b.add_argument("--source", default="jitter", help="manifest source name (e.g. coco-jitter)")
    b.add_argument("--manifest", default=None, help="manifest path (default OUT/manifest.jsonl)")
    b.add_argument("--format", default="png", choices=("png", "jpg"))
    b.add_argument("--p-jpeg", type=float, default=0.0)
    b.add_argument("--p-blur", type=float, default=0.2)
    b.add_argument("--p-second", type=float, default=0.5)
    b.add_argument("--second-min-candidates", type=int, default=8)
    b.add_argument("--max-area", type=float, default=0.75)
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--workers", type=int, default=0, help="parallel writer processes")
    args = parser.parse_args(list(argv) if argv is not None else None)
    side = args.size or args.procedural or 512
    size = None if args.native else (side, side)
    instances = _instances_from_args(args)
    if instances is None and args.native:
        parser.error("--native needs a photo source (--coco, --folder or --coco-panoptic)")
    path = write_jitter_dataset(args.out, args.n, seed=args.seed, instances=instances, size=size,
                                zoom=tuple(args.zoom), source=args.source, image_format=args.format, p_jpeg=args.p_jpeg,
                                p_blur=args.p_blur, p_second=args.p_second,
                                second_min_candidates=args.second_min_candidates, max_area=args.max_area,
                                manifest=args.manifest, overwrite=args.overwrite, num_workers=args.workers)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
