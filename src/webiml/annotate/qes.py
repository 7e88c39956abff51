"""QES: the quality evaluation score of a soft auto-annotation (no ground truth needed).

MIML keeps an automatic annotation when its soft mask is *decisive*: most of the pixels it marks at
all are marked with confidence. With ``p`` the soft mask in [0, 1]::

    QES = |{p > 15/16}| / (|{p > 1/16}| + eps)

and an annotation is kept when ``QES > 0.5``. A mask with no pixel above ``1/16`` scores 0 (nothing was
found, nothing to keep). Both thresholds, the keep threshold and ``eps`` are configurable.

Inputs: one map ``(H, W)``, a batch ``(B, H, W)`` or ``(B, 1, H, W)`` (numpy or torch, computed in one
vectorised pass) or a list of maps of different sizes (one concatenated pass with segment sums).
``uint8`` maps are read on the 0..255 scale (``v / 255``); float maps must be probabilities in [0, 1].

The score and the keep rule follow the authors (qcf-568/MIML ``other scripts for the dataset's
construction/QES.py``; the MIML papers keep annotations with QES > 0.5). Using QES as a per-sample *loss
weight* is webiml's own option, off by default: :func:`qes_weight` maps QES to a weight and
:func:`apply_qes_weights` turns an auto-annotated manifest into training data (QES filter, the web ignore
band, and weights only with ``floor < 1``). Command line::

    python -m webiml.annotate.qes data/manifests/mimlv2.jsonl data/manifests/mimlv2-qes.jsonl
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from webiml.data.manifest import ManifestRecord, read_manifest, write_manifest
from webiml.data.masks import WEB_LABELS, IgnoreBand
from webiml.io import read_mask

__all__ = ["EPS", "HIGH", "KEEP_THRESHOLD", "LOW", "QESConfig", "QESReport", "apply_qes_weights", "keep", "qes", "qes_weight"]

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


# --------------------------------------------------------------------------------------------------
# weak web supervision: QES -> loss weights of auto-annotated manifests


def qes_weight(score: float | np.ndarray, *, threshold: float = KEEP_THRESHOLD, floor: float = 0.5,
               power: float = 1.0) -> float | np.ndarray:
    """Map QES to a per-sample loss weight (webiml's option): 0 at or below ``threshold`` (the annotation is
    dropped), then rising from ``floor`` just above the threshold to 1 at QES = 1 (``power`` shapes the ramp).

    ``floor=1`` gives the authors' plain filter (keep with weight 1 above the threshold).
    """
    if not 0.0 <= threshold < 1.0 or not 0.0 <= floor <= 1.0 or power <= 0:
        raise ValueError(f"need 0 <= threshold < 1, 0 <= floor <= 1, power > 0; got {threshold}, {floor}, {power}")
    q = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    ramp = ((q - threshold) / (1.0 - threshold)).clip(0.0, 1.0) ** power
    w = np.where(q > threshold, floor + (1.0 - floor) * ramp, 0.0)
    return float(w) if w.ndim == 0 else w


class QESReport(NamedTuple):
    manifest: Path
    kept: int
    dropped: int
    computed: int
    mean_weight: float


def apply_qes_weights(
    manifest_in: str | os.PathLike[str],
    manifest_out: str | os.PathLike[str],
    *,
    key: str = "qes",
    threshold: float | None = KEEP_THRESHOLD,
    floor: float = 1.0,
    power: float = 1.0,
    band: IgnoreBand | tuple[int, int] | None = WEB_LABELS,
    override_band: bool = False,
    compute_missing: bool = True,
) -> QESReport:
    """Turn an auto-annotated manifest into weakly supervised training data.

    For every manipulated row (with a mask): QES from ``extra[key]`` (or computed from the soft mask with
    :func:`qes` when ``compute_missing``, and stored under ``key``); rows with QES at or below
    ``threshold`` are dropped, the others get ``weight = qes_weight(qes, ...)``: 1 with the default ``floor=1``
    (the authors' plain filter), a QES ramp with ``floor < 1`` (webiml's option; it *replaces* the row's
    weight: ``webiml data index mimlv2 --opt qes_weight=true`` writes ``weight = qes``, which must not count twice) and the ignore band
    ``band`` (the web default 0-7 authentic, 193-255 manipulated, in between ignored) unless they already
    have one (``override_band`` replaces it). ``threshold=None`` skips QES entirely and only sets the band
    (for sets the authors already filtered, e.g. MIML Part1/Part2). Authentic rows pass unchanged. The
    output is written atomically; paths stay valid (relative to the new manifest when under its folder,
    else absolute).
    """
    records = read_manifest(manifest_in)
    band_t = None if band is None else IgnoreBand(*band)
    kept: list[ManifestRecord] = []
    dropped = computed = 0
    weights: list[float] = []
    for r in records:
        if r.mask is None:
            kept.append(r)
            continue
        rec_band = r.ignore_band if (r.ignore_band is not None and not override_band) else band_t
        if threshold is None:
            kept.append(ManifestRecord(r.image, r.mask, r.label, r.source, r.weight, rec_band, dict(r.extra)))
            weights.append(r.weight)
            continue
        q = r.extra.get(key)
        if q is None:
            if not compute_missing:
                raise ValueError(f"{manifest_in}: row {r.image} has no {key!r} and compute_missing=False")
            q = qes(read_mask(r.mask))
            computed += 1
        w = float(qes_weight(float(q), threshold=threshold, floor=floor, power=power))
        if w <= 0.0:
            dropped += 1
            continue
        extra = dict(r.extra) | {key: round(float(q), 6)}
        kept.append(ManifestRecord(r.image, r.mask, r.label, r.source, w, rec_band, extra))
        weights.append(w)
    path = write_manifest(manifest_out, kept)
    return QESReport(path, len(kept), dropped, computed, float(np.mean(weights)) if weights else float("nan"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webiml.annotate.qes",
                                     description="QES filter (+ optional QES weights) + web ignore band on an auto-annotated manifest")
    parser.add_argument("manifest_in")
    parser.add_argument("manifest_out")
    parser.add_argument("--key", default="qes")
    parser.add_argument("--threshold", type=float, default=KEEP_THRESHOLD)
    parser.add_argument("--band-only", action="store_true", help="no QES filter or weights: only set the ignore band")
    parser.add_argument("--floor", type=float, default=1.0,
                        help="weight just above the threshold; 1 (default) = the authors' plain filter, every kept "
                             "sample weighs 1; below 1 = webiml's QES weights, rising to 1 at QES 1")
    parser.add_argument("--power", type=float, default=1.0)
    parser.add_argument("--band", type=int, nargs=2, default=list(WEB_LABELS), metavar=("LOW", "HIGH"))
    parser.add_argument("--override-band", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    rep = apply_qes_weights(args.manifest_in, args.manifest_out, key=args.key,
                            threshold=None if args.band_only else args.threshold,
                            floor=args.floor, power=args.power, band=tuple(args.band),
                            override_band=args.override_band)
    print(f"{rep.manifest}: kept {rep.kept}, dropped {rep.dropped} (QES <= {args.threshold}), "
          f"computed {rep.computed} scores, mean weight {rep.mean_weight:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
