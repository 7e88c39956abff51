"""QES: the quality evaluation score of a soft auto-annotation (no ground truth needed).

MIML keeps an automatic annotation when its soft mask is *decisive*: most of the pixels it marks at
all are marked with confidence. With ``p`` the soft mask in [0, 1]::

    QES = |{p > 15/16}| / (|{p > 1/16}| + eps)

and an annotation is kept when ``QES > 0.5``. A mask with no pixel above ``1/16`` scores 0 (nothing was
found, nothing to keep). Both thresholds, the keep threshold and ``eps`` are configurable.

Inputs: one map ``(H, W)``, a batch ``(B, H, W)`` or ``(B, 1, H, W)`` (numpy or torch, computed in one
vectorised pass) or a list of maps of different sizes (one concatenated pass with segment sums).
``uint8`` maps are read on the 0..255 scale (``v / 255``); float maps must be probabilities in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["EPS", "HIGH", "KEEP_THRESHOLD", "LOW", "QESConfig", "keep", "qes"]

LOW: float = 1 / 16
"""Pixels above this probability count as marked at all."""
HIGH: float = 15 / 16
"""Pixels above this probability count as marked with confidence."""
KEEP_THRESHOLD: float = 0.5
"""An annotation is kept when its QES is strictly above this."""
EPS: float = 1e-8


@dataclass(frozen=True)
class QESConfig:
    """QES thresholds: ``low`` / ``high`` on the probability scale, ``threshold`` for keeping."""

    low: float = LOW
    high: float = HIGH
    threshold: float = KEEP_THRESHOLD
    eps: float = EPS

    def __post_init__(self) -> None:
        _check(self.low, self.high)

    def score(self, masks: Any) -> Any:
        return qes(masks, low=self.low, high=self.high, eps=self.eps)

    def keep(self, scores: Any) -> Any:
        return keep(scores, self.threshold)


def _check(low: float, high: float) -> None:
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"QES thresholds must satisfy 0 <= low < high <= 1, got low={low}, high={high}")


def _scaled(low: float, high: float, is_uint8: bool) -> tuple[float, float]:
    # uint8 maps are compared on their own scale: v > t * 255 is exactly v / 255 > t
    return (low * 255.0, high * 255.0) if is_uint8 else (low, high)


def _squeeze_channel(x: Any) -> Any:
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected (B, 1, H, W) masks, got shape {tuple(x.shape)}")
        return x[:, 0]
    return x


def _qes_tensor(x: torch.Tensor, low: float, high: float, eps: float) -> torch.Tensor:
    if x.dtype == torch.bool:
        x = x.to(torch.uint8) * 255
    lo, hi = _scaled(low, high, x.dtype == torch.uint8)
    flat = x.flatten(1)
    if flat.dtype == torch.uint8:
        flat = flat.to(torch.int16)  # comparisons with floats need a signed/float type on some backends
    n_hi = (flat > hi).sum(1, dtype=torch.float64)
    n_lo = (flat > lo).sum(1, dtype=torch.float64)
    return n_hi / (n_lo + eps)


def _qes_array(x: np.ndarray, low: float, high: float, eps: float) -> np.ndarray:
    lo, hi = _scaled(low, high, x.dtype == np.uint8)
    flat = x.reshape(x.shape[0], -1)
    n_hi = np.count_nonzero(flat > hi, axis=1).astype(np.float64)
    n_lo = np.count_nonzero(flat > lo, axis=1).astype(np.float64)
    return n_hi / (n_lo + eps)


def _qes_list(maps: Sequence[Any], low: float, high: float, eps: float) -> np.ndarray:
    """Maps of different sizes: one concatenated comparison, segment sums with ``np.add.reduceat``."""
    arrays = []
    for m in maps:
        a = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        a = a[0] if a.ndim == 3 and a.shape[0] == 1 else a
        if a.ndim != 2:
            raise ValueError(f"expected (H, W) maps in the list, got shape {a.shape}")
        # put every map on the probability scale so one comparison serves uint8 and float maps together
        arrays.append(a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32, copy=False))
    if not arrays:
        return np.zeros(0, dtype=np.float64)
    sizes = np.array([a.size for a in arrays], dtype=np.int64)
    out = np.zeros(len(arrays), dtype=np.float64)
    nonempty = sizes > 0
    if not nonempty.any():
        return out
    flat = np.concatenate([a.ravel() for a in arrays])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[nonempty]
    # float32 of v/255 and of the thresholds can disagree only at exact ties, which 1/16 and 15/16
    # of 255 cannot produce; compute the comparison in float64 all the same
    flat64 = flat.astype(np.float64)
    n_hi = np.add.reduceat((flat64 > high).astype(np.int64), starts).astype(np.float64)
    n_lo = np.add.reduceat((flat64 > low).astype(np.int64), starts).astype(np.float64)
    out[nonempty] = n_hi / (n_lo + eps)
    return out


def qes(masks: Any, *, low: float = LOW, high: float = HIGH, eps: float = EPS) -> Any:
    """Quality evaluation score(s) of soft masks.

    Args:
        masks: ``(H, W)`` map -> a Python ``float``; ``(B, H, W)`` / ``(B, 1, H, W)`` batch -> ``(B,)``
            scores of the same library (``float64``; a torch batch stays on its device); a list/tuple of
            maps (sizes may differ, numpy/torch/uint8/float mixed) -> ``np.ndarray`` ``(B,)`` ``float64``.
            ``uint8`` maps are on the 0..255 scale, float maps in [0, 1].
        low, high: probability thresholds (defaults 1/16 and 15/16).
        eps: added to the denominator (an empty mask scores 0, never NaN).
    """
    _check(low, high)
    if isinstance(masks, list | tuple):
        return _qes_list(masks, low, high, eps)
    if isinstance(masks, torch.Tensor):
        if masks.ndim == 2:
            return float(_qes_tensor(masks[None], low, high, eps)[0])
        if masks.ndim in (3, 4):
            return _qes_tensor(_squeeze_channel(masks), low, high, eps)
        raise ValueError(f"expected (H, W), (B, H, W) or (B, 1, H, W) masks, got shape {tuple(masks.shape)}")
    arr = np.asarray(masks)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        return float(_qes_array(arr[None], low, high, eps)[0])
    if arr.ndim in (3, 4):
        return _qes_array(_squeeze_channel(arr), low, high, eps)
    raise ValueError(f"expected (H, W), (B, H, W) or (B, 1, H, W) masks, got shape {arr.shape}")


def keep(scores: Any, threshold: float = KEEP_THRESHOLD) -> Any:
    """Whether annotations are kept: ``QES > threshold`` (a bool, or a bool array/tensor for many)."""
    if isinstance(scores, torch.Tensor):
        return scores > threshold
    if np.ndim(scores) == 0:
        return bool(float(scores) > threshold)
    return np.asarray(scores) > threshold
