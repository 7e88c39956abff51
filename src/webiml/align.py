"""Alignment of a web pair: bring the original (source) photo onto the forgery's pixel grid.

The SPG segmenter of CAAAv2 compares ``[original, forged, |original - forged|]`` pixel by pixel, so the
original must first be put on the forgery's grid. Web pairs are rarely pixel-aligned: the forgery (or
the original) was resized, recompressed, colour-shifted or slightly cropped. :func:`align_pair` handles
that in three ways, tried in this order:

1. ``crop_box`` given (e.g. the pair classifier's box): the box of the original that the forgery shows
   is cropped and resized onto the forgery (``method="crop_box"``).
2. Feature matching (``method="features"``): DoG keypoints + SIFT descriptors (kornia's
   :class:`~kornia.feature.SIFTFeature`, no learned weights), mutual second-nearest-neighbour ratio
   matching, RANSAC homography (:class:`kornia.geometry.ransac.RANSAC`), then sanity checks on the
   homography (enough inliers, a plausible scale and shape, enough overlap).
3. When matching fails and both images have nearly the same aspect ratio and look alike once resized,
   a plain resize (``method="resize"``).

:func:`register_pair` does not trust any single one: it builds the candidate registrations (plain
resize, feature homography, a given crop box), scores each by how much of the forgery the registered
original explains (:func:`registration_agreement`) and keeps the best. The same score tells an SPG pair
(an edited copy: most of the forgery agrees with the original) from an SDG one (little of it does).

If all fail the original is simply resized onto the forgery's grid (``method="identity"``) and
``AlignResult.ok`` is ``False``: callers decide what to do with an unaligned pair.

Coordinates: a homography here maps *original* pixel coordinates to *forgery* pixel coordinates, with
pixel centres at integer positions (kornia's convention, ``align_corners=True``). A normalised crop box
``(x0, y0, x1, y1)`` is in ``[0, 1]`` of the original's width and height (pixel edges: ``(0, 0, 1, 1)``
is the whole image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from webiml.io import hwc_to_chw

__all__ = [
    "AlignResult",
    "Registration",
    "align_pair",
    "gaussian_blur_float",
    "photometric_match",
    "register_pair",
    "registration_agreement",
    "shrink_to_max_side",
    "box_homography",
    "estimate_homography",
    "homography_is_plausible",
    "resize_homography",
    "warp_original",
]

METHODS = ("crop_box", "features", "resize", "identity")


@dataclass
class AlignResult:
    """The original warped onto the forgery's grid.

    Attributes:
        original_warped: ``(3, H', W')`` in the dtype of the input original (``uint8`` or float); pixels
            outside ``valid`` are 0.
        valid: ``(H', W')`` bool: forgery pixels that have a counterpart in the original.
        homography: ``(3, 3)`` float64, original pixel coordinates -> forgery pixel coordinates.
        method: ``"crop_box"``, ``"features"``, ``"resize"`` or ``"identity"`` (failure fallback).
        ok: ``False`` when no alignment could be established (then ``method == "identity"``).
        num_matches, num_inliers: feature matches and RANSAC inliers (0 when matching did not run).
    """

    original_warped: Tensor
    valid: Tensor
    homography: Tensor
    method: str
    ok: bool = True
    num_matches: int = 0
    num_inliers: int = 0

    @property
    def valid_fraction(self) -> float:
        return float(self.valid.float().mean()) if self.valid.numel() else 0.0


# --------------------------------------------------------------------------------------------------
# helpers


def _as_chw(image: Tensor | np.ndarray) -> Tensor:
    """Accept ``(3, H, W)`` tensors or ``(H, W, 3)`` numpy arrays."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) array, got shape {image.shape}")
        return hwc_to_chw(image)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
    return image


def _to_float01(image: Tensor) -> Tensor:
    x = image.float()
    return x / 255.0 if image.dtype == torch.uint8 else x


def _from_float01(x: Tensor, like: Tensor) -> Tensor:
    if like.dtype == torch.uint8:
        return (x * 255.0).round().clamp(0, 255).to(torch.uint8)
    return x.to(like.dtype)


def shrink_to_max_side(x: Tensor, max_side: int) -> Tensor:
    """A float image ``(C, H, W)`` or batch ``(B, C, H, W)`` shrunk (bilinear, antialiased) so that its long
    side is at most ``max_side``; returned as is when it already is."""
    h, w = x.shape[-2:]
    f = max_side / max(h, w)
    if f >= 1.0:
        return x
    size = (max(1, round(h * f)), max(1, round(w * f)))
    batch = x if x.ndim == 4 else x[None]
    out = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out if x.ndim == 4 else out[0]


def _scale_matrix(sx: float, sy: float) -> Tensor:
    """Pixel-centre-consistent scaling: a pixel edge at 0 stays at 0 (``x' = s (x + 0.5) - 0.5``)."""
    return torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def resize_homography(orig_hw: tuple[int, int], forged_hw: tuple[int, int]) -> Tensor:
    """The homography of a plain resize of the whole original onto the forgery's grid."""
    return _scale_matrix(forged_hw[1] / orig_hw[1], forged_hw[0] / orig_hw[0])


def box_homography(box: tuple[float, float, float, float] | Tensor, orig_hw: tuple[int, int], forged_hw: tuple[int, int]) -> Tensor:
    """Homography mapping the normalised box ``(x0, y0, x1, y1)`` of the original onto the whole forgery."""
    x0, y0, x1, y1 = (float(v) for v in (box.tolist() if isinstance(box, Tensor) else box))
    h, w = orig_hw
    fh, fw = forged_hw
    bw, bh = (x1 - x0) * w, (y1 - y0) * h
    if bw <= 0 or bh <= 0:
        raise ValueError(f"degenerate crop box {(x0, y0, x1, y1)}")
    sx, sy = fw / bw, fh / bh
    # forged edge coordinate = s * (original edge coordinate - box origin); centres are edges - 0.5
    return torch.tensor(
        [[sx, 0.0, sx * (0.5 - x0 * w) - 0.5], [0.0, sy, sy * (0.5 - y0 * h) - 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64
    )


def warp_original(original: Tensor | np.ndarray, homography: Tensor, forged_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Warp ``original`` (3, H, W) onto a ``forged_hw`` grid with ``homography`` (original -> forgery).

    Returns ``(warped, valid)``: the warped image in the input dtype and a bool map of forgery pixels
    that fall inside the original (with a half-pixel margin so interpolated borders count as invalid).
    """
    import kornia

    original = _as_chw(original)
    x = _to_float01(original)[None]
    m = homography.to(torch.float32)[None].to(x.device)
    size = (int(forged_hw[0]), int(forged_hw[1]))
    # Antialias: when the warp shrinks the original a lot, blur first (bilinear sampling would alias).
    scale = _homography_scale(homography)
    if scale < 0.5:
        sigma = 0.5 / max(scale, 1e-3) * 0.6
        k = int(2 * math.ceil(3 * sigma) + 1)
        x = kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")
    warped = kornia.geometry.transform.warp_perspective(x, m, size, mode="bilinear", padding_mode="zeros", align_corners=True)
    ones = torch.ones_like(x[:, :1])
    coverage = kornia.geometry.transform.warp_perspective(ones, m, size, mode="bilinear", padding_mode="zeros", align_corners=True)
    valid = coverage[0, 0] > 0.999
    warped = warped[0] * valid
    return _from_float01(warped.clamp(0, 1), original), valid


def _homography_scale(h: Tensor) -> float:
    """Geometric-mean linear scale of the affine part of a homography."""
    hn = h.to(torch.float64) / h[2, 2].to(torch.float64)
    det = float(hn[0, 0] * hn[1, 1] - hn[0, 1] * hn[1, 0])
    return math.sqrt(abs(det))


def homography_is_plausible(
    h: Tensor,
    orig_hw: tuple[int, int],
    forged_hw: tuple[int, int],
    *,
    min_scale: float = 0.1,
    max_scale: float = 10.0,
    max_anisotropy: float = 4.0,
    max_perspective: float = 0.3,
    min_overlap: float = 0.2,
) -> bool:
    """Sanity checks of a homography from a web pair: finite, orientation-preserving, a plausible
    scale and aspect change, little perspective, and a warped original covering at least ``min_overlap``
    of the forgery."""
    if not torch.isfinite(h).all() or abs(float(h[2, 2])) < 1e-12:
        return False
    hn = h.to(torch.float64) / h[2, 2].to(torch.float64)
    a = hn[:2, :2]
    if float(torch.linalg.det(a)) <= 0:
        return False
    sv = torch.linalg.svdvals(a)
    smax, smin = float(sv[0]), float(sv[1])
    if smin < min_scale or smax > max_scale or smax / max(smin, 1e-12) > max_anisotropy:
        return False
    oh, ow = orig_hw
    # how much the projective terms change the scale across the original
    if float(hn[2, 0].abs() * ow + hn[2, 1].abs() * oh) > max_perspective:
        return False
    fh, fw = forged_hw
    # overlap on a coarse grid of the forgery: forged pixels whose pre-image lies inside the original
    try:
        inv = torch.linalg.inv(hn)
    except RuntimeError:
        return False
    ys, xs = torch.meshgrid(torch.linspace(0, fh - 1, 24, dtype=torch.float64), torch.linspace(0, fw - 1, 24, dtype=torch.float64), indexing="ij")
    pts = torch.stack([xs.flatten(), ys.flatten(), torch.ones(xs.numel(), dtype=torch.float64)])
    src = inv @ pts
    src = src[:2] / src[2:].clamp(min=1e-12)
    inside = (src[0] >= -0.5) & (src[0] <= ow - 0.5) & (src[1] >= -0.5) & (src[1] <= oh - 0.5)
    return float(inside.double().mean()) >= min_overlap


# --------------------------------------------------------------------------------------------------
# feature matching


@lru_cache(maxsize=4)
def _sift(num_features: int):
    import kornia.feature as KF

    # Upright SIFT: web pairs are resized and cropped, hardly ever rotated; skipping orientation
    # estimation is faster and more robust. The "pyramid" backend reuses the detector's scale space.
    return KF.SIFTFeature(num_features=num_features, upright=True, descriptor_backend="pyramid").eval()


def _gray_small(image: Tensor, max_side: int, min_side: int = 0) -> tuple[Tensor, float, float]:
    """Grayscale float (1, 1, h, w) with long side in ``[min_side, max_side]`` (small images are
    upsampled: more keypoints, as SIFT's classic image doubling) and the (sx, sy) scale used."""
    x = _to_float01(image)[None]
    h, w = x.shape[-2:]
    long = max(h, w)
    f = max_side / long if long > max_side else (min(min_side, max_side) / long if long < min_side else 1.0)
    nh, nw = max(8, round(h * f)), max(8, round(w * f))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=f < 1)
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).clamp(0, 1)
    # Per-image contrast normalisation makes the detector threshold insensitive to colour/brightness shifts.
    lo, hi = gray.quantile(0.01), gray.quantile(0.99)
    gray = ((gray - lo) / (hi - lo).clamp(min=1e-3)).clamp(0, 1)
    return gray, nw / w, nh / h


def estimate_homography(
    original: Tensor | np.ndarray,
    forged: Tensor | np.ndarray,
    *,
    max_side: int = 512,
    min_side: int = 256,
    num_features: int = 1024,
    ratio: float = 0.9,
    inlier_threshold: float = 2.5,
    ransac_iters: int = 200,
    min_inliers: int = 12,
    min_inlier_ratio: float = 0.2,
    seed: int = 0,
) -> tuple[Tensor | None, int, int]:
    """Homography original -> forgery (full-resolution pixel coordinates) from SIFT matches + RANSAC.

    Both images are matched at a long side of at most ``max_side`` pixels (images smaller than
    ``min_side`` are upsampled to it). Returns ``(H, num_matches,
    num_inliers)``; ``H`` is ``None`` when there are too few matches or inliers (``min_inliers``, and at
    least ``min_inlier_ratio`` of the matches). ``inlier_threshold`` is in pixels at the matching scale.
    """
    import kornia.feature as KF
    from kornia.geometry.ransac import RANSAC

    original, forged = _as_chw(original), _as_chw(forged)
    with torch.inference_mode():
        g1, sx1, sy1 = _gray_small(original, max_side, min_side)
        g2, sx2, sy2 = _gray_small(forged, max_side, min_side)
        sift = _sift(int(num_features))
        lafs1, _, desc1 = sift(g1)
        lafs2, _, desc2 = sift(g2)
        if desc1.shape[1] < 4 or desc2.shape[1] < 4:
            return None, 0, 0
        _, idx = KF.match_smnn(desc1[0], desc2[0], ratio)
        n_matches = int(idx.shape[0])
        if n_matches < max(min_inliers, 4):
            return None, n_matches, 0
        k1 = KF.get_laf_center(lafs1)[0][idx[:, 0]].float()
        k2 = KF.get_laf_center(lafs2)[0][idx[:, 1]].float()
        ransac = RANSAC("homography", inl_th=float(inlier_threshold), max_iter=int(ransac_iters), confidence=0.9999, seed=int(seed))
        h_small, inliers = ransac(k1, k2)
    n_inl = int(inliers.sum())
    if n_inl < min_inliers or n_inl < min_inlier_ratio * n_matches or not torch.isfinite(h_small).all() or float(h_small.abs().sum()) == 0:
        return None, n_matches, n_inl
    # compose: full original -> small original -> small forged -> full forged
    s1 = _scale_matrix(sx1, sy1)
    s2_inv = torch.linalg.inv(_scale_matrix(sx2, sy2))
    h = s2_inv @ h_small.to(torch.float64) @ s1
    return h / h[2, 2], n_matches, n_inl


def _looks_resized(original: Tensor, forged: Tensor, *, max_aspect_change: float = 0.02, min_corr: float = 0.9) -> bool:
    """Whether the forgery looks like a plain resize of the original (same aspect, correlated thumbnails)."""
    oh, ow = original.shape[-2:]
    fh, fw = forged.shape[-2:]
    if abs(math.log((ow / oh) / (fw / fh))) > max_aspect_change:
        return False
    a = F.interpolate(_to_float01(original)[None], size=(48, 48), mode="bilinear", antialias=True, align_corners=False).mean(1)
    b = F.interpolate(_to_float01(forged)[None], size=(48, 48), mode="bilinear", antialias=True, align_corners=False).mean(1)
    a = a - a.mean()
    b = b - b.mean()
    corr = float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-8))
    return corr >= min_corr


def align_pair(
    original: Tensor | np.ndarray,
    forged: Tensor | np.ndarray,
    crop_box: tuple[float, float, float, float] | Tensor | None = None,
    *,
    max_side: int = 512,
    min_side: int = 256,
    num_features: int = 1024,
    ratio: float = 0.9,
    inlier_threshold: float = 2.5,
    min_inliers: int = 12,
    min_inlier_ratio: float = 0.2,
    min_overlap: float = 0.2,
    allow_resize: bool = True,
    seed: int = 0,
) -> AlignResult:
    """Warp ``original`` onto ``forged``'s grid (see the module docstring for the strategy).

    Args:
        original, forged: ``(3, H, W)`` tensors (``uint8`` or float in [0, 1]) or ``(H, W, 3)`` arrays.
        crop_box: normalised ``(x0, y0, x1, y1)`` of the forgery's view inside the original; when given it
            is used directly (no matching).
        max_side, min_side, num_features, ratio, inlier_threshold, min_inliers, min_inlier_ratio: feature matching
            (see :func:`estimate_homography`).
        min_overlap: smallest fraction of the forgery the warped original must cover.
        allow_resize: fall back to a plain resize when matching fails but the images look alike.
        seed: RANSAC seed (results are deterministic for a given seed).
    """
    original, forged = _as_chw(original), _as_chw(forged)
    orig_hw = (int(original.shape[-2]), int(original.shape[-1]))
    forged_hw = (int(forged.shape[-2]), int(forged.shape[-1]))
    if crop_box is not None:
        h = box_homography(crop_box, orig_hw, forged_hw)
        warped, valid = warp_original(original, h, forged_hw)
        return AlignResult(warped, valid, h, "crop_box", True)
    h, n_matches, n_inl = estimate_homography(
        original, forged, max_side=max_side, min_side=min_side, num_features=num_features, ratio=ratio, inlier_threshold=inlier_threshold,
        min_inliers=min_inliers, min_inlier_ratio=min_inlier_ratio, seed=seed,
    )
    if h is not None and homography_is_plausible(h, orig_hw, forged_hw, min_overlap=min_overlap):
        warped, valid = warp_original(original, h, forged_hw)
        if valid.float().mean() >= min_overlap:
            return AlignResult(warped, valid, h, "features", True, n_matches, n_inl)
    h = resize_homography(orig_hw, forged_hw)
    warped, valid = warp_original(original, h, forged_hw)
    if allow_resize and _looks_resized(original, forged):
        return AlignResult(warped, valid, h, "resize", True, n_matches, n_inl)
    return AlignResult(warped, valid, h, "identity", False, n_matches, n_inl)


# --------------------------------------------------------------------------------------------------
# photometric matching and registration scoring


def gaussian_blur_float(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of a (C, H, W) float image with reflect padding, kernel radius ``ceil(3 sigma)``
    (``kornia.filters.gaussian_blur2d``; images no larger than the radius are returned as they are)."""
    import kornia

    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    if min(x.shape[-2:]) <= r:
        return x
    k = 2 * r + 1
    return kornia.filters.gaussian_blur2d(x[None], (k, k), (float(sigma), float(sigma)), border_type="reflect")[0]


def photometric_match(orig: Tensor, forged: Tensor, valid: Tensor, iters: int = 2, keep: float = 0.7,
                     max_samples: int = 40_000) -> Tensor:
    """Per-channel ``gain * orig + offset`` fitted to ``forged`` on valid pixels (robust: the worst
    residuals, where the edits are, are left out of the refit). Fitted on at most ``max_samples``
    evenly spaced pixels."""
    idx = torch.nonzero(valid.flatten()).flatten()
    if idx.numel() < 64:
        return orig
    idx = idx[:: max(1, idx.numel() // max_samples)].numpy()
    o = orig.reshape(3, -1).numpy()[:, idx].astype(np.float64)
    f = forged.reshape(3, -1).numpy()[:, idx].astype(np.float64)
    gains, offsets = np.ones(3), np.zeros(3)
    use = np.ones(o.shape[1], dtype=bool)
    for _ in range(iters):
        ou, fu = o[:, use], f[:, use]
        om, fm = ou.mean(1), fu.mean(1)
        var = ((ou - om[:, None]) ** 2).mean(1)
        cov = ((ou - om[:, None]) * (fu - fm[:, None])).mean(1)
        gains = np.where(var > 1e-6, np.clip(cov / np.maximum(var, 1e-6), 0.5, 2.0), 1.0)
        offsets = fm - gains * om
        res = np.abs(f - (gains[:, None] * o + offsets[:, None])).max(0)
        use = res <= np.quantile(res, keep)
        if use.sum() < 32:
            break
    g = torch.from_numpy(gains).to(orig.dtype).view(3, 1, 1)
    b = torch.from_numpy(offsets).to(orig.dtype).view(3, 1, 1)
    return (orig * g + b).clamp(0, 255)


def registration_agreement(
    original_on_forged: Tensor,
    forged: Tensor,
    valid: Tensor,
    *,
    threshold: float = 16.0,
    blur_sigma: float = 1.0,
    photometric: bool = True,
    max_side: int = 512,
) -> float:
    """Fraction of the forgery's pixels that a registered original explains.

    A pixel agrees when it has a counterpart in the original (``valid``) and, after a robust per-channel
    gain/offset match of the original (:func:`photometric_match`) and a light blur of both (JPEG noise,
    resampling), differs from it by at most ``threshold`` (0..255, max over channels). A well registered
    SPG pair agrees everywhere but on its edits; a wrong registration, or two different photos, agree on
    little more than flat areas. Computed at a long side of at most ``max_side``.

    Args:
        original_on_forged: ``(3, H, W)`` original on the forgery's grid (``uint8`` or float 0..255).
        forged: ``(3, H, W)`` forgery (``uint8`` or float 0..255).
        valid: ``(H, W)`` bool, forgery pixels with a counterpart in the original.
    """
    if original_on_forged.shape != forged.shape or valid.shape != forged.shape[-2:]:
        raise ValueError(f"shapes differ: original {tuple(original_on_forged.shape)}, forged {tuple(forged.shape)}, "
                         f"valid {tuple(valid.shape)}")
    o, f, v = shrink_to_max_side(original_on_forged.float(), max_side), shrink_to_max_side(forged.float(), max_side), valid.bool()
    if f.shape[-2:] != v.shape:
        v = F.interpolate(v[None, None].float(), size=f.shape[-2:], mode="bilinear", align_corners=False)[0, 0] > 0.999
    if not bool(v.any()):
        return 0.0
    if photometric:
        o = photometric_match(o, f, v)
    d = (gaussian_blur_float(f, blur_sigma) - gaussian_blur_float(o, blur_sigma)).abs().amax(0)
    return float(((d <= threshold) & v).float().mean())


@dataclass
class Registration:
    """The best registration of a pair (:func:`register_pair`).

    ``result`` is the chosen :class:`AlignResult` (``ok`` is ``False`` when no candidate reached
    ``min_agreement``); ``agreement`` its :func:`registration_agreement`; ``candidates`` the agreement of
    every candidate tried, by method.
    """

    result: AlignResult
    agreement: float
    candidates: dict[str, float]


def register_pair(
    original: Tensor | np.ndarray,
    forged: Tensor | np.ndarray,
    crop_box: tuple[float, float, float, float] | Tensor | None = None,
    *,
    use_features: bool = True,
    min_agreement: float = 0.3,
    margin: float = 0.01,
    agreement_kwargs: dict | None = None,
    **align_kwargs,
) -> Registration:
    """Register ``original`` onto ``forged`` by the best of several candidates.

    Candidates, in order of preference on ties: a plain resize of the whole original, the feature
    homography of :func:`align_pair` (when matching succeeds), and ``crop_box`` (e.g. the pair
    classifier's box) when given. Each is scored by :func:`registration_agreement`; a candidate replaces
    an earlier one only when it agrees by more than ``margin`` more (an exact resize is not traded for a
    homography that fits the JPEG noise a little better).

    Args:
        original, forged: ``(3, H, W)`` ``uint8`` tensors or ``(H, W, 3)`` arrays.
        crop_box: normalised ``(x0, y0, x1, y1)`` of the forgery's view inside the original, or ``None``.
        use_features: try feature matching.
        margin: agreement a later candidate needs over an earlier one to be chosen.
        min_agreement: below it the registration is reported as failed (``result.ok`` is ``False``).
        agreement_kwargs: keyword arguments of :func:`registration_agreement`.
        align_kwargs: keyword arguments of :func:`align_pair` for the feature candidate.
    """
    original, forged = _as_chw(original), _as_chw(forged)
    orig_hw = (int(original.shape[-2]), int(original.shape[-1]))
    forged_hw = (int(forged.shape[-2]), int(forged.shape[-1]))
    kw = dict(agreement_kwargs or {})
    candidates: list[AlignResult] = []
    h = resize_homography(orig_hw, forged_hw)
    candidates.append(AlignResult(*warp_original(original, h, forged_hw), h, "resize", True))
    if use_features:
        res = align_pair(original, forged, allow_resize=False, **align_kwargs)
        if res.ok:
            candidates.append(res)
    if crop_box is not None:
        try:
            candidates.append(align_pair(original, forged, crop_box=crop_box))
        except ValueError:  # a degenerate box: not a candidate
            pass
    scores = [registration_agreement(c.original_warped, forged, c.valid, **kw) for c in candidates]
    best = 0
    for i in range(1, len(candidates)):
        if scores[i] > scores[best] + margin:
            best = i
    chosen = candidates[best]
    if scores[best] < min_agreement:
        chosen = AlignResult(chosen.original_warped, chosen.valid, chosen.homography, chosen.method, False,
                             chosen.num_matches, chosen.num_inliers)
    return Registration(chosen, scores[best], {c.method: round(sc, 6) for c, sc in zip(candidates, scores, strict=True)})
