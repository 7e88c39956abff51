"""Inference on images of any size: native resolution, tiled when large, results at the original size.

Images whose long side fits in one tile run whole (padded to the model's size divisor). Larger images
are cut into overlapping tiles that run in batches; tile probabilities are blended with a smooth
window, so memory is bounded by the tile size and the batch, not by the image. Nothing is squashed:
every map comes back at the image's own resolution.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from webiml.models.base import IMLModel

log = logging.getLogger(__name__)

K = TypeVar("K")


def _as_chw_uint8(image: np.ndarray | Tensor) -> Tensor:
    if isinstance(image, Tensor):
        t = image
    else:
        arr = np.asarray(image)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # decoded PIL images are read-only
    if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    if t.ndim != 3 or t.shape[0] != 3 or t.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 RGB image (H, W, 3) or (3, H, W), got {tuple(t.shape)} {t.dtype}")
    return t.contiguous()


@dataclass
class Localization:
    """Result for one image: the manipulation probability map at the original size and the image score."""

    mask_probs: np.ndarray  # (H, W) float32 in [0, 1]
    image_score: float

    def binary_mask(self, threshold: float = 0.5) -> np.ndarray:
        return self.mask_probs >= threshold


def _windows(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def _blend_window(h: int, w: int, margin: int) -> Tensor:
    """Weights rising linearly over ``margin`` pixels at tile borders, so seams do not show."""
    def ramp(n: int) -> Tensor:
        r = torch.ones(n)
        m = min(margin, n // 2)
        if m > 0:
            edge = torch.linspace(1.0 / (m + 1), 1.0, m)
            r[:m] = edge
            r[n - m:] = edge.flip(0)
        return r

    return ramp(h)[:, None] * ramp(w)[None, :]


class Localizer:
    """Run an IML model on uint8 images of any size.

    Args:
        model: an :class:`IMLModel` (moved to ``device`` and put in eval mode).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        tile: tile side for large images; images whose long side is at most ``tile`` run whole.
        overlap: overlap between neighbouring tiles.
        batch_size: tiles per forward pass.
        amp: use bfloat16 autocast on CUDA.
    """

    def __init__(self, model: IMLModel, device: str | torch.device | None = None, tile: int = 1024,
                 overlap: int = 128, batch_size: int = 4, amp: bool = True) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        d = model.size_divisor
        self.tile = max(d, tile // d * d)
        self.overlap = min(overlap, self.tile // 2)
        self.batch_size = batch_size
        self.amp = amp and self.device.type == "cuda"

    @torch.inference_mode()
    def _forward(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        x = self.model.normalize(batch.to(self.device, non_blocking=True))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(x)
        return out.mask_logits.float().sigmoid()[:, 0].cpu(), out.image_probs().float().cpu()

    def localize(self, image: np.ndarray | Tensor) -> Localization:
        """Localize one image given as ``uint8`` (H, W, 3) array or (3, H, W) tensor."""
        return self._localize_one(_as_chw_uint8(image))

    def localize_many(self, images: Iterable[np.ndarray | Tensor]) -> Iterator[Localization]:
        """Localize images in order: consecutive small images of the same size run as one batch, the tiles
        of a large image run in batches."""
        for _, result in self.localize_stream(enumerate(images)):
            yield result

    def localize_stream(self, items: Iterable[tuple[K, np.ndarray | Tensor]]) -> Iterator[tuple[K, Localization]]:
        """Like :meth:`localize_many` for ``(key, image)`` pairs; yields ``(key, result)`` in input order."""
        pending: list[tuple[K, Tensor]] = []
        for key, image in items:
            t = _as_chw_uint8(image)
            if max(t.shape[-2:]) > self.tile:
                yield from self._flush(pending)
                yield key, self._localize_one(t)
                continue
            if pending and (pending[0][1].shape != t.shape or len(pending) == self.batch_size):
                yield from self._flush(pending)
            pending.append((key, t))
        yield from self._flush(pending)

    def _flush(self, pending: list[tuple[K, Tensor]]) -> Iterator[tuple[K, Localization]]:
        if not pending:
            return
        probs, scores = self._forward(torch.stack([t for _, t in pending]))
        for (key, _), p, s in zip(pending, probs, scores, strict=True):
            yield key, Localization(p.numpy(), float(s))
        pending.clear()

    def _localize_one(self, image: Tensor) -> Localization:
        _, h, w = image.shape
        if max(h, w) <= self.tile:
            probs, score = self._forward(image[None])
            return Localization(probs[0].numpy(), float(score[0]))
        th, tw = min(self.tile, h), min(self.tile, w)
        boxes = [(y, x) for y in _windows(h, th, self.overlap) for x in _windows(w, tw, self.overlap)]
        acc = torch.zeros(h, w)
        weight = torch.zeros(h, w)
        window = _blend_window(th, tw, self.overlap // 2)
        scores: list[float] = []
        for i in range(0, len(boxes), self.batch_size):
            chunk = boxes[i:i + self.batch_size]
            batch = torch.stack([image[:, y:y + th, x:x + tw] for y, x in chunk])
            probs, s = self._forward(batch)
            scores += s.tolist()
            for (y, x), p in zip(chunk, probs, strict=True):
                acc[y:y + th, x:x + tw] += p * window
                weight[y:y + th, x:x + tw] += window
        log.debug("tiled %dx%d image into %d tiles of %dx%d", w, h, len(boxes), tw, th)
        # An image is as manipulated as its most manipulated tile.
        return Localization((acc / weight.clamp(min=1e-6)).numpy(), float(max(scores)) if scores else math.nan)
