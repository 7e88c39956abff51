"""Blind localization on a noise residual: Splicebuster-style co-occurrence features + Gaussian-mixture EM.

webiml's own implementation (numpy / scipy) of the blind localization that the GRIP group applies to
Noiseprint residuals:

- D. Cozzolino, G. Poggi, L. Verdoliva, "Splicebuster: a new blind image splicing detector", WIFS 2015;
- D. Cozzolino, L. Verdoliva, "Noiseprint: a CNN-based camera model fingerprint", IEEE TIFS 2020;
- reference code: https://github.com/grip-unina/noiseprint (``noiseprint/noiseprint_blind.py``,
  ``noiseprint/post_em.py``, ``noiseprint/feat_spam/spam_np_opt.py``, ``noiseprint/utility/gaussianMixture.py``),
  read to learn the algorithm; no code was copied.

The steps, with the authors' constants:

1. **Weights.** Pixels are discarded where the residual is locally flat (5x5 variance < 0.005), on the
   one-pixel frame, and where the image is saturated (grey > 253/256, opened with a disk of radius 3);
   the discarded set is grown by a 35x35 maximum filter.
2. **Co-occurrences.** The residual is quantised to 4 levels (reproduction values -0.8, -0.28, 0.16,
   0.7; decision thresholds at their midpoints), and horizontal and vertical co-occurrences of 4
   consecutive samples (centred on the middle row / column of a 5x5 neighbourhood) give codes 0..255.
   Per 8x8 block, normalised histograms of the valid codes (2 x 256 features) and the valid fraction.
3. **Windows.** Histograms are averaged over 8x8 blocks (64x64 pixel windows, stride 8) weighted by
   the valid fraction; windows with less than 95% valid pixels are invalid; features are square-rooted
   and the outer two windows on each side dropped.
4. **EM.** The valid features are projected on their 32 principal components and whitened (the
   features are not centred before the projection, as upstream), then a one-component Gaussian with a
   full covariance plus a uniform outlier class (prior 0.01, fixed negative log-likelihood 42) is fitted
   by EM: 10 random starts from ``RandomState(0)`` (mean = one random valid sample, diagonal covariance
   = the sample variances), at most 100 iterations, relative tolerance 1e-5, the start with the highest
   mean log-likelihood kept. The map is the Mahalanobis distance of every window from the Gaussian.
5. **Back to pixels.** Invalid windows take the smallest valid value; the window grid is mapped to the
   pixels by nearest-neighbour interpolation of the window centres (extrapolated at the borders).

When fewer than 50 windows are valid the authors return no map; :func:`blind_localization` returns
``None`` then.

Deviations from the reference code: histograms are computed with one vectorised ``bincount`` instead of
a loop over blocks (same counts), the EM is written from the equations (float64, as upstream after the
PCA), and the per-pixel output is the *outlier posterior logit* of the fitted mixture,
``log(pi_out / pi_in) + nlogl_in(x) - 42`` (a monotone function of the Mahalanobis distance, so it
ranks pixels exactly as the authors' map does), which gives the map a model-defined 0.5 threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

QUANT_VALUES = np.asarray([-0.8, -0.28, 0.16, 0.7])
COOC_ORDER = 4
BLOCK = 8
WINDOW = 64
VALID_FRACTION = 0.95
VAR_WINDOW = 5
VAR_THRESHOLD = 0.005
GROW_WINDOW = 35
SATURATION = 253.0 / 256.0
SATURATION_RADIUS = 3
N_COMPONENTS = 32
OUTLIER_PROB = 0.01
OUTLIER_NLOGL = 42.0
MIN_VALID = 50


@dataclass
class BlindResult:
    """The window-level result and its mapping to pixels."""

    mahal: np.ndarray
    """(n0, n1) Mahalanobis distance of each window (the authors' ``map``)."""
    valid: np.ndarray
    """(n0, n1) bool: windows used to fit the mixture."""
    range0: np.ndarray
    """(n0,) row of each window centre in pixels."""
    range1: np.ndarray
    """(n1,) column of each window centre in pixels."""
    logit: np.ndarray
    """(n0, n1) outlier posterior logit of each window."""
    image_size: tuple[int, int]

    def pixel_map(self, which: str = "logit") -> np.ndarray:
        """``which`` ("logit" or "mahal") at pixel resolution, invalid windows set to the smallest valid value."""
        grid = np.array(self.logit if which == "logit" else self.mahal, dtype=np.float64)
        grid[~self.valid] = grid[self.valid].min()
        rows = _nearest_index(self.range0, self.image_size[0])
        cols = _nearest_index(self.range1, self.image_size[1])
        return grid[rows][:, cols]


def _nearest_index(centres: np.ndarray, n: int) -> np.ndarray:
    """Index of the nearest centre for every coordinate 0..n-1 (ties go to the lower centre)."""
    centres = np.asarray(centres, dtype=np.float64)
    mids = (centres[1:] + centres[:-1]) / 2.0
    return np.searchsorted(mids, np.arange(n, dtype=np.float64), side="left")


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y) <= radius * radius


def pixel_weights(residual: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """Pixels usable for the statistics (step 1). ``gray`` in [0, 1) (0.299 R + 0.587 G + 0.114 B) / 256."""
    mean = ndimage.uniform_filter(residual, (VAR_WINDOW, VAR_WINDOW))
    var = ndimage.uniform_filter(np.square(residual), (VAR_WINDOW, VAR_WINDOW)) - np.square(mean)
    bad = var < VAR_THRESHOLD
    bad[:1, :] = True
    bad[-1:, :] = True
    bad[:, :1] = True
    bad[:, -1:] = True
    disk = _disk(SATURATION_RADIUS)
    saturated = ndimage.binary_erosion(gray > SATURATION, structure=disk, border_value=1)
    saturated = ndimage.binary_dilation(saturated, structure=disk, border_value=0)
    bad = ndimage.maximum_filter(bad | saturated, (GROW_WINDOW, GROW_WINDOW))
    return ~bad


def cooccurrence_features(residual: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 2-3: window features (n0, n1, 512), valid-fraction (n0, n1) and window centres (rows, cols)."""
    thresholds = (QUANT_VALUES[1:] + QUANT_VALUES[:-1]) / 2
    q = np.zeros(residual.shape, dtype=np.int64)
    for t in thresholds:
        q += residual > t
    n = QUANT_VALUES.size
    dim = COOC_ORDER + 1 - (COOC_ORDER % 2)
    c = (dim - 1) // 2
    h, w = residual.shape[0] - dim + 1, residual.shape[1] - dim + 1
    code_h = np.zeros((h, w), dtype=np.int64)
    code_v = np.zeros((h, w), dtype=np.int64)
    for p in range(COOC_ORDER):
        code_h += q[c : c + h, p : p + w] * n**p
        code_v += q[p : p + h, c : c + w] * n**p
    n_codes = n**COOC_ORDER
    invalid = ~weights[c : c + h, c : c + w]
    code_h[invalid] = n_codes
    code_v[invalid] = n_codes
    n0, n1 = h // BLOCK, w // BLOCK
    block_id = (np.arange(n0)[:, None] * n1 + np.arange(n1)[None, :]).repeat(BLOCK, 0).repeat(BLOCK, 1)

    def hist(codes: np.ndarray) -> np.ndarray:
        flat = block_id.ravel() * (n_codes + 1) + codes[: n0 * BLOCK, : n1 * BLOCK].ravel()
        return np.bincount(flat, minlength=n0 * n1 * (n_codes + 1)).reshape(n0, n1, n_codes + 1).astype(np.float32)

    hist_h, hist_v = hist(code_h), hist(code_v)
    area = np.float32(BLOCK * BLOCK)
    valid_count = area - hist_h[:, :, -1]
    denom = np.maximum(valid_count[:, :, None], np.float32(1e-20))
    spam = np.concatenate([hist_h[:, :, :-1] / denom, hist_v[:, :, :-1] / denom], axis=2)
    valid_frac = valid_count / area
    range0 = np.arange(n0) * BLOCK + c + (BLOCK - 1.0) / 2.0
    range1 = np.arange(n1) * BLOCK + c + (BLOCK - 1.0) / 2.0

    k = WINDOW // BLOCK
    valid_frac = np.maximum(ndimage.uniform_filter(valid_frac, (k, k), mode="constant", cval=0.0), 0.0)
    spam = np.maximum(ndimage.uniform_filter(spam, (k, k, 1), mode="constant", cval=0.0), 0.0)
    spam = spam / np.maximum(valid_frac[:, :, None], np.float32(1e-20))
    lo, hi = (k - 1) // 2, k // 2  # floor, ceil of (k - 1) / 2
    range0 = (range0[lo:-hi] + range0[hi:-lo]) / 2.0
    range1 = (range1[lo:-hi] + range1[hi:-lo]) / 2.0
    valid_frac = valid_frac[hi:-lo, hi:-lo]
    spam = spam[hi:-lo, hi:-lo, :]
    valid = valid_frac >= VALID_FRACTION
    spam = np.sqrt(np.abs(spam))
    return spam[2:-2, 2:-2], valid[2:-2, 2:-2], range0[2:-2], range1[2:-2]


class _Gaussian:
    """One full-covariance Gaussian + a uniform outlier class with a fixed negative log-likelihood."""

    def __init__(self, x: np.ndarray, rng: np.random.RandomState) -> None:
        n = x.shape[0]
        self.prior = 1.0 - OUTLIER_PROB
        self.out_prior = OUTLIER_PROB
        self.mu = x[rng.randint(0, n, size=1)[0]].copy()
        var = np.var(x, axis=0)
        var = var + np.abs(np.spacing(np.max(var)))
        self.sigma = np.diag(var)

    def nlogl(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Negative log-likelihood of the Gaussian and the squared Mahalanobis distance of each row."""
        dim = x.shape[1]
        low = _cholesky(self.sigma)
        z = np.linalg.solve(low, (x - self.mu).T).T
        mahal = np.sum(z * z, axis=1)
        logdet = 2.0 * np.sum(np.log(np.diag(low)))
        return 0.5 * (mahal + logdet + dim * np.log(2 * np.pi)), mahal

    def log_joint(self, x: np.ndarray) -> np.ndarray:
        nll, _ = self.nlogl(x)
        return np.stack([np.log(self.prior) - nll, np.full_like(nll, np.log(self.out_prior) - OUTLIER_NLOGL)], axis=1)

    def expectation(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        logit = self.log_joint(x)
        top = logit.max(axis=1, keepdims=True)
        p = np.exp(logit - top)
        s = p.sum(axis=1, keepdims=True)
        return p / s, float(np.mean(np.log(s) + top))

    def maximization(self, x: np.ndarray, post: np.ndarray) -> None:
        w = post[:, 0]
        mass = w.sum()
        self.mu = (w @ x) / mass
        d = (x - self.mu) * np.sqrt(w)[:, None]
        sigma = d.T @ d / mass
        top = np.linalg.eigvalsh(sigma)[-1]
        self.sigma = sigma + np.abs(np.spacing(top)) * np.eye(x.shape[1])
        out = post[:, 1].sum()
        self.prior, self.out_prior = mass / (out + mass), out / (out + mass)

    def fit(self, x: np.ndarray, max_iter: int = 100, rel_tol: float = 1e-5) -> float:
        post, old = self.expectation(x)
        avr = old
        for _ in range(max_iter):
            self.maximization(x, post)
            post, avr = self.expectation(x)
            diff = avr - old
            if diff >= 0 and diff < rel_tol * abs(avr):
                break
            old = avr
        return avr


def _cholesky(sigma: np.ndarray) -> np.ndarray:
    for _ in range(3):
        try:
            return np.linalg.cholesky(sigma)
        except np.linalg.LinAlgError:
            w, v = np.linalg.eigh(np.real(sigma))
            w = np.maximum(w, np.spacing(np.max(w)))
            sigma = (v * w) @ v.T
    return np.linalg.cholesky(sigma)


def fit_blind_em(spam: np.ndarray, valid: np.ndarray, *, seed: int = 0, replicates: int = 10,
                 max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: (Mahalanobis distance, outlier posterior logit) of every window, each (n0, n1)."""
    feats = spam.reshape(-1, spam.shape[2])
    inliers = feats[valid.ravel()]
    cov = np.cov(inliers, rowvar=False, bias=True)
    eigval, eigvec = np.linalg.eigh(cov)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    proj = eigvec[:, :N_COMPONENTS] / np.sqrt(eigval[:N_COMPONENTS])
    feats = feats @ proj
    inliers = feats[valid.ravel()]
    rng = np.random.RandomState(seed)
    best, best_ll = None, -np.inf
    for _ in range(replicates):
        g = _Gaussian(inliers, rng)
        ll = g.fit(inliers, max_iter=max_iter)
        if best is None or ll > best_ll:
            best, best_ll = g, ll
    assert best is not None
    nll, mahal = best.nlogl(feats)
    logit = np.log(best.out_prior) - OUTLIER_NLOGL - (np.log(best.prior) - nll)
    return mahal.reshape(spam.shape[:2]), logit.reshape(spam.shape[:2])


def blind_localization(residual: np.ndarray, gray: np.ndarray, **em_kwargs: int) -> BlindResult | None:
    """The whole blind localization of one (H, W) residual; ``None`` when too few windows are valid."""
    residual = np.asarray(residual, dtype=np.float32)
    gray = np.asarray(gray, dtype=np.float32)
    if residual.shape != gray.shape or residual.ndim != 2:
        raise ValueError(f"residual {residual.shape} and grey image {gray.shape} must be the same (H, W)")
    if min(residual.shape) < COOC_ORDER + 12 * BLOCK:  # fewer windows than the border crops remove
        return None
    weights = pixel_weights(residual, gray)
    spam, valid, range0, range1 = cooccurrence_features(residual, weights)
    if spam.size == 0 or int(valid.sum()) < MIN_VALID:
        return None
    mahal, logit = fit_blind_em(spam, valid, **em_kwargs)
    return BlindResult(mahal=mahal, valid=valid, range0=range0, range1=range1, logit=logit,
                       image_size=(int(residual.shape[0]), int(residual.shape[1])))


__all__ = ["BlindResult", "blind_localization", "cooccurrence_features", "fit_blind_em", "pixel_weights"]
