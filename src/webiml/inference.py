"""Inference on images of any size: native resolution, tiled when large, results at the original size.

Images whose long side fits in one tile run whole (padded to the model's size divisor). Larger images
are cut into overlapping tiles that run in batches; tile probabilities are blended with a smooth
window, so memory is bounded by the tile size and the batch, not by the image. Nothing is squashed:
every map comes back at the image's own resolution.

Models that read the JPEG's DCT coefficients besides the pixels (``model.uses_jpeg_dct``, e.g. CAT-Net) take a
:class:`webiml.jpeg.JpegDCT` with each image (:meth:`Localizer.localize`'s ``dct``, or ``(key, image, dct)``
items in :meth:`Localizer.localize_stream`; :func:`webiml.jpeg.load_with_dct` reads both from a file). Without
one, the image is treated as a non-JPEG image, as the CAT-Net authors do: re-compressed at quality 100 (4:4:4),
and the model sees that JPEG's pixels and coefficients (:func:`webiml.jpeg.recompress`). Their tiles start on
the 8x8 JPEG grid (the last tile of a row or column may be up to 7 pixels shorter) and carry their part of the
coefficient grid.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from webiml.models.base import IMLModel

if TYPE_CHECKING:
    from webiml.jpeg import JpegDCT

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


def _windows(length: int, tile: int, overlap: int, grid: int = 1) -> list[tuple[int, int]]:
    """``(start, size)`` of the tiles along one axis: starts are multiples of ``grid``; every tile is ``tile``
    long except, when ``grid > 1``, the last one, which ends at ``length`` (up to ``grid - 1`` shorter)."""
    if length <= tile:
        return [(0, length)]
    step = max(grid, (tile - overlap) // grid * grid)
    last = -(-(length - tile) // grid) * grid
    starts = sorted(set(range(0, length - tile, step)) | {last})
    return [(s, min(tile, length - s)) for s in starts]


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
        tile: tile side for large images; images whose long side is at most ``tile`` run whole. Models with
            ``tile_safe = False`` (global statistics, whole-image resize or pooling) always run whole.
        overlap: overlap between neighbouring tiles.
        batch_size: tiles per forward pass.
        amp: use bfloat16 autocast on CUDA.
    """

    def __init__(self, model: IMLModel, device: str | torch.device | None = None, tile: int = 1024,
                 overlap: int = 128, batch_size: int = 4, amp: bool = True) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        d = model.size_divisor
        self.tile = max(d, tile // d * d) if getattr(model, "tile_safe", True) else sys.maxsize
        self.overlap = min(overlap, self.tile // 2)
        self.batch_size = batch_size
        self.amp = amp and self.device.type == "cuda"

    @property
    def uses_jpeg_dct(self) -> bool:
        """Whether the model reads JPEG DCT coefficients besides the pixels (CAT-Net)."""
        return bool(getattr(self.model, "uses_jpeg_dct", False))

    @torch.inference_mode()
    def _forward(self, batch: Tensor, dct: list[JpegDCT] | None = None) -> tuple[Tensor, Tensor]:
        x = self.model.normalize(batch.to(self.device, non_blocking=True))
        extra: dict[str, Any] = {}
        if dct is not None:
            extra["dct"] = torch.from_numpy(np.stack([d.coef for d in dct])).to(self.device)
            extra["qtable"] = torch.from_numpy(np.stack([d.qtable for d in dct])).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(x, **extra)
        return out.mask_logits.float().sigmoid()[:, 0].cpu(), out.image_probs().float().cpu()

    def _with_dct(self, image: Tensor, dct: JpegDCT | None) -> tuple[Tensor, JpegDCT | None]:
        """For a DCT model: the image and its coefficients cropped to the image's 8x8 grid (re-compressed at
        quality 100 when none are given); other models get ``(image, None)``."""
        if not self.uses_jpeg_dct:
            return image, None
        from webiml.jpeg import JpegDCT, recompress

        if dct is None:
            rgb, dct = recompress(image.permute(1, 2, 0).numpy())
            image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        h, w = image.shape[-2:]
        h8, w8 = -(-h // 8) * 8, -(-w // 8) * 8
        if not dct.covers(h8, w8):
            raise ValueError(f"the DCT grid {dct.coef.shape} does not cover the {h}x{w} image")
        return image, JpegDCT(dct.coef[:h8, :w8], dct.qtable, dct.recompressed)

    def localize(self, image: np.ndarray | Tensor, dct: JpegDCT | None = None) -> Localization:
        """Localize one image given as ``uint8`` (H, W, 3) array or (3, H, W) tensor; ``dct``: its JPEG
        coefficients, for models that use them (see the module docstring)."""
        return self._localize_one(*self._with_dct(_as_chw_uint8(image), dct))

    def localize_many(self, images: Iterable[np.ndarray | Tensor]) -> Iterator[Localization]:
        """Localize images in order: consecutive small images of the same size run as one batch, the tiles
        of a large image run in batches."""
        for _, result in self.localize_stream(enumerate(images)):
            yield result

    def localize_stream(self, items: Iterable[tuple[K, np.ndarray | Tensor] | tuple[K, np.ndarray | Tensor, JpegDCT | None]]
                        ) -> Iterator[tuple[K, Localization]]:
        """Like :meth:`localize_many` for ``(key, image)`` pairs, or ``(key, image, dct)`` triples (``dct``: a
        :class:`webiml.jpeg.JpegDCT` or ``None``, for DCT models); yields ``(key, result)`` in input order."""
        pending: list[tuple[K, Tensor, JpegDCT | None]] = []
        for key, image, *rest in items:
            t, dct = self._with_dct(_as_chw_uint8(image), rest[0] if rest else None)
            if max(t.shape[-2:]) > self.tile:
                yield from self._flush(pending)
                yield key, self._localize_one(t, dct)
                continue
            if pending and (pending[0][1].shape != t.shape or len(pending) == self.batch_size):
                yield from self._flush(pending)
            pending.append((key, t, dct))
        yield from self._flush(pending)

    def _flush(self, pending: list[tuple[K, Tensor, JpegDCT | None]]) -> Iterator[tuple[K, Localization]]:
        if not pending:
            return
        dct = [d for _, _, d in pending if d is not None]
        probs, scores = self._forward(torch.stack([t for _, t, _ in pending]), dct if dct else None)
        for (key, _, _), p, s in zip(pending, probs, scores, strict=True):
            yield key, Localization(p.numpy(), float(s))
        pending.clear()

    def _localize_one(self, image: Tensor, dct: JpegDCT | None = None) -> Localization:
        _, h, w = image.shape
        if max(h, w) <= self.tile:
            probs, score = self._forward(image[None], None if dct is None else [dct])
            return Localization(probs[0].numpy(), float(score[0]))
        grid = 8 if dct is not None else 1
        th, tw = min(self.tile, h), min(self.tile, w)
        boxes = [(y, x, hh, ww) for y, hh in _windows(h, th, self.overlap, grid) for x, ww in _windows(w, tw, self.overlap, grid)]
        acc = torch.zeros(h, w)
        weight = torch.zeros(h, w)
        scores: list[float] = []
        by_size: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
        for box in boxes:  # tiles of one size run in batches (only a DCT model's last row / column differ)
            by_size.setdefault(box[2:], []).append(box)
        for (hh, ww), group in by_size.items():
            window = _blend_window(hh, ww, self.overlap // 2)
            for i in range(0, len(group), self.batch_size):
                chunk = group[i:i + self.batch_size]
                batch = torch.stack([image[:, y:y + hh, x:x + ww] for y, x, _, _ in chunk])
                tiles_dct = None if dct is None else [_crop_dct(dct, y, x, hh, ww) for y, x, _, _ in chunk]
                probs, s = self._forward(batch, tiles_dct)
                scores += s.tolist()
                for (y, x, _, _), p in zip(chunk, probs, strict=True):
                    acc[y:y + hh, x:x + ww] += p * window
                    weight[y:y + hh, x:x + ww] += window
        log.debug("tiled %dx%d image into %d tiles of %dx%d", w, h, len(boxes), tw, th)
        # An image is as manipulated as its most manipulated tile.
        return Localization((acc / weight.clamp(min=1e-6)).numpy(), float(max(scores)) if scores else math.nan)


def _crop_dct(dct: JpegDCT, y: int, x: int, h: int, w: int) -> JpegDCT:
    """The coefficients of the tile at ``(y, x)`` (multiples of 8) of size ``h`` x ``w``, on the tile's 8x8 grid."""
    from webiml.jpeg import JpegDCT

    return JpegDCT(dct.coef[y:y + -(-h // 8) * 8, x:x + -(-w // 8) * 8], dct.qtable, dct.recompressed)
