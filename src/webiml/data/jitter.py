"""Object Jitter: a real object of a photo enlarged in place, an exact mask of the change.

**Object Jitter** (named in the MIMLv2 paper, "Webly-supervised Image Manipulation Localization",
arXiv 2508.20987; the authors' training code, https://github.com/qcf-568/MIML, calls it ``COCO``: class
``COCO`` in ``models for IML/mmseg/datasets/pipelines/transforms.py``, the ``coco`` set of
``models for IML/apscnet_train.py``, from "Towards Modern Image Manipulation Localization: A Large-Scale
Dataset and Novel Methods", CVPR 2024) makes a real manipulation with an exact mask out of any photo with
instance masks: one real object is enlarged in place by about 12.5 % and pasted back over itself, which
leaves genuine resampling traces on a real object in its real context. :func:`object_jitter` follows the authors' code (constants cited from
``COCO.__call__`` / ``COCO.edgefunc`` / ``COCO.calk``):

1. Candidates: instances whose box is at least ``min_side`` px on both sides and ``min_box_area`` px^2
   (``boxw>=8``, ``boxh>=8``, ``boxw*boxh>=256``). The authors test their annotation boxes, scaled and clipped
   to the crop (``boxes=``); without boxes the tight pixel box of each mask is used (its width is the number
   of columns the mask spans, like a COCO box). Boxes that lie outside the image are dropped first.
2. One candidate is drawn uniformly (``np.random.randint(0, lenb)``). Its tight box is taken as the authors
   do: rows ``r0 = min, r1 = max`` of the mask (``xmin``/``xmax``), ``h = r1 - r0`` (the last row and column
   are *not* part of the box), likewise the columns. The box patch of the image and of the 0/1 mask are
   resized (OpenCV ``INTER_LINEAR``, reproduced bit-exactly by
   :func:`~webiml.data.arrays.resize_linear_cv`) to ``(h + 2 dy, w + 2 dx)`` with ``dy = round(h / 16)``,
   ``dx = round(w / 16)`` (``np.round``: half to even, so 0 for h <= 8) and pasted centred on the box,
   i.e. at rows ``[r0 - dy, r1 + dy)``, clipped at the image border.
3. The alpha is the resized uint8 0/1 mask, so it is **hard** (only 0 and 1: OpenCV rounds the bilinear
   value of a 0/1 image to 0 or 1). With probability ``p_blur`` (``random.uniform(0, 1) > 0.8``) it is
   blurred by ``cv2.GaussianBlur(alpha, (k, k), 0)`` with ``k`` from the candidate box's smaller side
   (:func:`blur_kernel_size`, the authors' ``calk``: < 16: none, < 32: 3, < 64: 5, < 128: 7, < 256: 9,
   else 11; OpenCV's kernel tables and, for 11, its float32 arithmetic: :func:`_blur`). The blur sees only
   the pasted window (reflected at its border), so the alpha of a mask that fills its box stays all ones.
   Blending: ``uint8(patch * alpha + image * (1 - alpha))`` (float32, truncated as numpy's assignment into
   the uint8 image does).
4. Ground truth: ``alpha > 0.5`` in the pasted window (``new_area > 0.5``), the union over pasted objects.
5. Second object: the first candidate's box becomes its pasted window, every candidate box whose
   intersection with the window has a positive area is dropped (the first one is kept); when more than 8
   boxes are left (``lenb > 8``: at least ``second_min_candidates`` = 8 besides the first) and
   ``random.uniform(0, 1) < 0.5`` (``p_second``), an index ``t`` is drawn among the kept boxes and, if
   ``t`` differs from the first object's index *in the list before the filtering* (the authors compare
   indices of two different lists), kept box ``t`` is jittered too, on the already jittered image. That box
   can be the first object again (jittered twice) and the draw can give no second object at all; this is
   ``second_pick="official"``. ``"distinct"`` draws among the kept boxes other than the first (webiml's
   former behaviour).
6. Rejection (``None``; the authors' ``assert False``, after which their dataset loads another image):
   no usable box, a first object whose mask is empty in the image, a mask of one row or column (OpenCV
   cannot resize an empty patch: an exception, also rejected), or a final mask that is empty or covers more
   than ``max_area`` (0.75) of the image.

No other jitter of the object is applied: no shift, rotation, colour change (the authors' ``colorfunc``
gamma edit sits behind ``if False``) or JPEG (commented out); their ``prob``, ``maxb``, ``q1``, ``q2``,
``rgbshift`` and ``exp`` arguments are unused. Every random choice comes from the caller's
:class:`numpy.random.Generator` (in the authors' order: object, blur, second-object coin, second index,
its blur), so a seed gives the same sample. Run side by side with the authors' class (their code, OpenCV
4.12 and 4.14, numpy's generator driving both) on 2,150 generated scenes and 252 coco128 crops, the images
and masks were identical in every case, rejections included.

**Inputs.** Any image with instance masks: a list of bool masks, an (N, H, W) array, or an integer label
map (0 = background, every other value one instance). :class:`~webiml.data.coco.CocoInstances` reads COCO
instance annotations (and their boxes); :class:`~webiml.data.photo_pool.PhotoPool` (procedural scenes,
folders of label maps, COCO panoptic) works as well.

**Online use.** :class:`~webiml.data.jitter_dataset.ObjectJitterDataset` runs the authors' whole ``coco``
pipeline (resize, crop, jitter, another image on rejection) in DataLoader workers, re-drawn every epoch;
:class:`~webiml.data.online.OnlineSyntheticDataset` uses :class:`ObjectJitter` for its ``jitter`` kind.
:func:`~webiml.data.jitter_dataset.write_jitter_dataset` writes a fixed set from the same dataset for
manifest-based training (``python -m webiml.data.jitter build``, :func:`webiml.data.jitter_dataset.main`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage as ndi

from webiml.data.arrays import resize_linear_cv
from webiml.data.coco import CocoInstances
from webiml.data.forgeries import Forgery

__all__ = [
    "JITTER_KIND",
    "SECOND_PICKS",
    "CocoInstances",  # re-exported (webiml.data.coco)
    "ObjectJitter",
    "blur_kernel_size",
    "candidate_boxes",
    "instance_masks",
    "object_jitter",
]

JITTER_KIND = "jitter"
SECOND_PICKS = ("official", "distinct")


# --------------------------------------------------------------------------------------------------
# alpha blur (OpenCV's GaussianBlur with sigma 0)


def blur_kernel_size(size: float) -> int:
    """Gaussian kernel of the alpha blur for an object whose box is ``size`` px (its smaller side):
    < 16: 1 (no blur), < 32: 3, < 64: 5, < 128: 7, < 256: 9, otherwise 11 (the authors' ``calk``)."""
    for limit, k in ((16, 1), (32, 3), (64, 5), (128, 7), (256, 9)):
        if size < limit:
            return k
    return 11


_SMALL_GAUSSIAN = {  # OpenCV 4.x's fixed tables for getGaussianKernel(k, sigma <= 0), k <= 9
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
    9: (0.015625, 0.05078125, 0.1171875, 0.19921875, 0.234375, 0.19921875, 0.1171875, 0.05078125, 0.015625),
}


def _gaussian_taps(ksize: int) -> np.ndarray:
    """1-D taps of OpenCV's ``getGaussianKernel(ksize, 0)``, which ``cv2.GaussianBlur(a, (k, k), 0)`` uses:
    fixed tables up to 9 (OpenCV 4.5-4.14; older releases computed k = 9), else a Gaussian with
    ``sigma = 0.3 ((k - 1) / 2 - 1) + 0.8``."""
    if ksize in _SMALL_GAUSSIAN:
        return np.array(_SMALL_GAUSSIAN[ksize], np.float32)
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    taps = np.exp(-(x * x) / (2 * sigma * sigma))
    return (taps / taps.sum()).astype(np.float32)


def _fma(a: np.ndarray, b: float, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` rounded once (the product of two float32 is exact in float64)."""
    return (a.astype(np.float64) * float(b) + c).astype(np.float32)


def _sep_blur_cv(alpha: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """OpenCV's float32 separable filter with a symmetric kernel, border reflect-101, as opencv-python 4.5-4.12
    computes it on x86-64 with AVX2/FMA: rows ``s = fma(x_k, t_k, s)`` for k = 0..K-1 from ``s = 0``; columns
    ``s = t_c x_c`` then ``s = fma(x_{c+k} + x_{c-k}, t_{c+k}, s)`` for k = 1..K/2."""
    r = len(taps) // 2
    h, w = alpha.shape
    p = np.pad(np.asarray(alpha, np.float32), ((0, 0), (r, r)), mode="reflect")
    rows = np.zeros((h, w), np.float32)
    for k in range(len(taps)):
        rows = _fma(p[:, k:k + w], taps[k], rows)
    p = np.pad(rows, ((r, r), (0, 0)), mode="reflect")
    out = (p[r:r + h] * taps[r]).astype(np.float32)
    for k in range(1, r + 1):
        out = _fma((p[r + k:r + k + h] + p[r - k:r - k + h]).astype(np.float32), taps[r + k], out)
    return out


def _blur(alpha: np.ndarray, ksize: int) -> np.ndarray:
    """``cv2.GaussianBlur(alpha, (ksize, ksize), 0)`` of a float32 alpha, border reflect-101.

    With OpenCV's fixed tables (k <= 9) every partial sum of a 0/1 alpha is exact in float32, so any order
    gives OpenCV's result. The computed 11-tap kernel is not exact: its float32 sums follow the order and the
    fused multiply-adds of opencv-python 4.5-4.12 on x86-64 with AVX2/FMA (:func:`_sep_blur_cv`; measured
    identical). OpenCV's own result depends on its build and the CPU: 4.14 does not fuse the last columns
    of a row that are not a multiple of 8 (about 1.5 % of the values differ by one float32 step).
    """
    if ksize <= 1:
        return alpha
    taps = _gaussian_taps(ksize)
    if ksize in _SMALL_GAUSSIAN:
        out = ndi.convolve1d(alpha, taps, axis=0, mode="mirror")
        return ndi.convolve1d(out, taps, axis=1, mode="mirror")
    return _sep_blur_cv(alpha, taps)


# --------------------------------------------------------------------------------------------------
# instances and candidate boxes


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


def _mask_boxes(masks: list[np.ndarray]) -> np.ndarray:
    """xyxy pixel boxes of the masks (end exclusive: the width is the number of columns spanned);
    an empty mask gets an empty box (0, 0, 0, 0)."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size:
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def candidate_boxes(masks: list[np.ndarray], boxes: Any, shape: tuple[int, int], *, min_side: float = 8,
                    min_box_area: float = 256) -> list[tuple[int, np.ndarray]]:
    """``(instance index, xyxy box)`` of the instances Object Jitter may pick, in instance order.

    ``boxes``: the instances' (N, 4) xyxy boxes in image pixels (the authors' annotation boxes after
    resize and crop), or ``None`` for the masks' tight boxes. Boxes are clipped to the image; those left
    without overlap (``x1 >= W``, ``y1 >= H``, ``x2 <= 0`` or ``y2 <= 0``) are dropped, then those under
    ``min_side`` on a side or ``min_box_area`` in area (the authors: 8 and 256).
    """
    h, w = shape
    b = _mask_boxes(masks) if boxes is None else np.array(boxes, np.float32).reshape(-1, 4)
    if len(b) != len(masks):
        raise ValueError(f"{len(b)} boxes for {len(masks)} instance masks")
    b[:, 0::2] = b[:, 0::2].clip(0, w)
    b[:, 1::2] = b[:, 1::2].clip(0, h)
    inside = (b[:, 0] < w) & (b[:, 1] < h) & (b[:, 2] > 0) & (b[:, 3] > 0)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    ok = inside & (bw >= min_side) & (bh >= min_side) & (bw * bh >= min_box_area)
    return [(int(i), b[i]) for i in np.flatnonzero(ok)]


# --------------------------------------------------------------------------------------------------
# one pasted object


class _Paste(NamedTuple):
    window: tuple[int, int, int, int]  # (y0, y1, x0, x1) in the image, clipped
    tight: tuple[int, int, int, int]  # (r0, r1, c0, c1): the authors' box (max row/column excluded)
    pad: tuple[int, int]  # (dy, dx)
    alpha: np.ndarray  # float32 (window h, window w)
    blur_kernel: int  # 1: not blurred


def _jitter_one(image: np.ndarray, mask: np.ndarray, box: np.ndarray, rng: np.random.Generator, scale: float,
                p_blur: float) -> _Paste | None:
    """The authors' ``edgefunc`` on ``image`` in place; ``None`` (image untouched) for a degenerate box.
    Draws the blur coin from ``rng`` (when the mask is not empty)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    bh, bw = r1 - r0, c1 - c0
    blur = bool(rng.random() > 1.0 - p_blur)  # the authors: random.uniform(0, 1) > 0.8
    if bh == 0 or bw == 0:
        return None  # the authors' cv2.resize of an empty patch raises: the sample is dropped
    dy, dx = int(np.round(bh * scale)), int(np.round(bw * scale))
    nh, nw = bh + 2 * dy, bw + 2 * dx
    patch = resize_linear_cv(image[r0:r1, c0:c1], nh, nw)
    alpha = resize_linear_cv(mask[r0:r1, c0:c1].astype(np.uint8), nh, nw).astype(np.float32)
    H, W = mask.shape
    y0, y1, x0, x1 = max(r0 - dy, 0), min(r1 + dy, H), max(c0 - dx, 0), min(c1 + dx, W)
    oy, ox = y0 - (r0 - dy), x0 - (c0 - dx)
    patch, alpha = patch[oy:oy + y1 - y0, ox:ox + x1 - x0], alpha[oy:oy + y1 - y0, ox:ox + x1 - x0]
    k = blur_kernel_size(float(min(box[2] - box[0], box[3] - box[1]))) if blur else 1
    alpha = _blur(alpha, k)
    a = alpha[..., None]
    blended = patch * a + image[y0:y1, x0:x1] * (np.float32(1.0) - a)  # float32, as the authors' numpy code
    image[y0:y1, x0:x1] = np.clip(blended, 0, 255).astype(np.uint8)  # truncates, like their assignment
    return _Paste((y0, y1, x0, x1), (r0, r1, c0, c1), (dy, dx), alpha, k)


def _intersection(window: tuple[int, int, int, int], boxes: np.ndarray) -> np.ndarray:
    """Intersection areas of a (y0, y1, x0, x1) window with xyxy boxes (0 when they only touch)."""
    y0, y1, x0, x1 = window
    iw = (np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0)).clip(min=0)
    ih = (np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0)).clip(min=0)
    return iw * ih


# --------------------------------------------------------------------------------------------------
# the augmentation


def object_jitter(
    image: np.ndarray,
    instances: Any,
    rng: np.random.Generator,
    *,
    boxes: Any = None,
    scale: float = 1 / 16,
    p_blur: float = 0.2,
    p_second: float = 0.5,
    second_min_candidates: int = 8,
    second_pick: str = "official",
    max_area: float = 0.75,
    min_side: float = 8,
    min_box_area: float = 256,
) -> Forgery | None:
    """Object Jitter on one image as the MIML authors run it (see the module docstring); ``None`` when the
    sample is rejected.

    Args:
        image: RGB ``uint8`` (H, W, 3); not modified.
        instances: instance masks (list of bool masks, (N, H, W) array or an integer label map).
        rng: the only source of randomness.
        boxes: (N, 4) xyxy boxes of the instances in image pixels (the authors' annotation boxes); default
            the masks' tight boxes. They decide the candidates, the blur kernel and the second-object overlap.
        scale: growth per side as a fraction of the box size (authors: ``round(h / 16)``).
        p_blur: probability of blurring an object's alpha (kernel from :func:`blur_kernel_size`; authors 0.2).
        p_second: probability of the second-object draw when enough boxes are left (authors 0.5).
        second_min_candidates: boxes besides the first that must be left (authors: ``lenb > 8``, i.e. 8).
        second_pick: ``"official"`` (the authors' index draw, see step 5) or ``"distinct"`` (always another
            object).
        max_area: reject samples whose mask covers more than this fraction (authors 0.75).
        min_side, min_box_area: smallest usable box (authors: 8 px, 256 px^2).

    Returns:
        a :class:`~webiml.data.forgeries.Forgery` of kind ``"jitter"``: ``mask`` = union of ``alpha > 0.5``
        (0/255), ``alpha`` the per-pixel max of the pasted alphas, ``source`` the input image,
        ``info["objects"]`` one dict per paste (``instance``, ``box`` = the candidate's xyxy box, ``tight`` =
        the authors' ``(r0, r1, c0, c1)``, ``window`` = ``(y0, y1, x0, x1)``, ``pad`` = ``(dy, dx)``,
        ``blur_kernel``).
    """
    if second_pick not in SECOND_PICKS:
        raise ValueError(f"second_pick must be one of {SECOND_PICKS}, got {second_pick!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    masks = instance_masks(instances, (h, w))
    cands = candidate_boxes(masks, boxes, (h, w), min_side=min_side, min_box_area=min_box_area)
    if not cands:
        return None
    out = image.copy()
    region = np.zeros((h, w), bool)
    alpha_full = np.zeros((h, w), np.float32)
    objects: list[dict[str, Any]] = []

    def paste(j: int) -> _Paste | None:
        i, box = cands[j]
        p = _jitter_one(out, masks[i], box, rng, scale, p_blur)
        if p is not None:
            y0, y1, x0, x1 = p.window
            region[y0:y1, x0:x1] |= p.alpha > 0.5
            np.maximum(alpha_full[y0:y1, x0:x1], p.alpha, out=alpha_full[y0:y1, x0:x1])
            objects.append({"instance": i, "box": [float(v) for v in box], "tight": list(p.tight),
                            "window": list(p.window), "pad": list(p.pad), "blur_kernel": p.blur_kernel})
        return p

    first = int(rng.integers(len(cands)))
    if not masks[cands[first][0]].any():
        return None  # the authors skip the paste: the mask stays empty and the sample is rejected
    p = paste(first)
    if p is None:
        return None
    boxes_left = np.stack([b for _, b in cands])
    y0, y1, x0, x1 = p.window
    boxes_left[first] = (x0, y0, x1, y1)
    inter = _intersection(p.window, boxes_left)
    inter[first] = 0
    kept = np.flatnonzero(inter == 0).tolist()  # candidate positions, the first included
    if len(kept) - 1 >= second_min_candidates and rng.random() < p_second:
        if second_pick == "official":
            t = int(rng.integers(len(kept)))
            second = kept[t] if t != first else None  # t indexes the kept list, `first` the full one
        else:
            others = [j for j in kept if j != first]
            second = others[int(rng.integers(len(others)))] if others else None
        if second is not None and masks[cands[second][0]].any() and paste(second) is None:
            return None
    frac = np.count_nonzero(region) / region.size
    if frac == 0 or frac > max_area:
        return None
    info = {"objects": objects, "scale": float(scale), "area": float(frac)}
    return Forgery(out, region.astype(np.uint8) * 255, JITTER_KIND, alpha_full, image, info)


@dataclass(frozen=True)
class ObjectJitter:
    """:func:`object_jitter` with its settings bound (defaults: the authors'), for datasets and configs:
    ``ObjectJitter()(image, instances, rng, boxes=None)``."""

    scale: float = 1 / 16
    p_blur: float = 0.2
    p_second: float = 0.5
    second_min_candidates: int = 8
    second_pick: str = "official"
    max_area: float = 0.75
    min_side: float = 8
    min_box_area: float = 256

    def __post_init__(self) -> None:
        if self.second_pick not in SECOND_PICKS:
            raise ValueError(f"second_pick must be one of {SECOND_PICKS}, got {self.second_pick!r}")

    def __call__(self, image: np.ndarray, instances: Any, rng: np.random.Generator, boxes: Any = None) -> Forgery | None:
        return object_jitter(image, instances, rng, boxes=boxes, **asdict(self))

    def params(self) -> dict[str, Any]:
        return asdict(self)


def __getattr__(name: str) -> Any:
    if name in ("write_jitter_dataset", "ObjectJitterDataset"):
        from webiml.data import jitter_dataset

        return getattr(jitter_dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from webiml.data.jitter_dataset import main

    raise SystemExit(main())
