"""Object Jitter: a real object of a photo enlarged in place, an exact mask of the change.

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
map (0 = background, every other value one instance). :class:`~webiml.data.coco.CocoInstances` reads COCO instance
annotations (polygons, RLE; :mod:`webiml.data.coco`); :class:`~webiml.data.photo_pool.PhotoPool` (procedural scenes, folders of label maps,
COCO panoptic) works as well.

**Datasets.** :func:`~webiml.data.jitter_dataset.write_jitter_dataset` writes a "jitter set" (images, masks, manifest, params.json;
atomic, deterministic, idempotent, like :func:`~webiml.data.synthetic.write_synthetic_dataset`), so it is
just one more training source (``source: coco-jitter``) with its own repeat factor.

``CocoInstances`` and ``write_jitter_dataset`` are still importable from here; the command line below is
:func:`webiml.data.jitter_dataset.main`. QES weights of auto-annotated web data (``qes_weight``,
``apply_qes_weights``) are in :mod:`webiml.annotate.qes`.

Command line::

    python -m webiml.data.jitter build --out data/jitter/coco --n 100000 --seed 0 \\
        --coco data/coco/annotations/instances_train2017.json --images data/coco/train2017 \\
        --size 512 --zoom 1 1.5 --source coco-jitter --manifest data/manifests/coco-jitter.jsonl
    python -m webiml.data.jitter build --out runs/jitter-data/train --n 256 --seed 0 --procedural 192
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from webiml.data.arrays import bbox
from webiml.data.coco import CocoInstances
from webiml.data.forgeries import Forgery

__all__ = [
    "JITTER_KIND",
    "CocoInstances",  # re-exported (webiml.data.coco)
    "blur_kernel_size",
    "instance_masks",
    "object_jitter",
]

JITTER_KIND = "jitter"


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
        if not m.any():
            continue
        box = bbox(m)
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



def __getattr__(name: str) -> Any:
    if name == "write_jitter_dataset":
        from webiml.data.jitter_dataset import write_jitter_dataset

        return write_jitter_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from webiml.data.jitter_dataset import main

    raise SystemExit(main())
