"""Hand-made photos, instance masks and a tiny COCO instances tree for the Object Jitter tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from webiml.data.coco import encode_rle
from webiml.io import save_image


def textured(h: int = 128, w: int = 128, seed: int = 0) -> np.ndarray:
    """A textured image (gradients + noise) so that resampling changes pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([yy * 1.5, xx * 1.5, (yy + xx) * 0.7], -1) % 200
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0


def window_mask(shape: tuple[int, int], window: list[int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    y0, y1, x0, x1 = window
    m[y0:y1, x0:x1] = True
    return m


class Scripted:
    """A stand-in for ``numpy.random.Generator`` that returns scripted draws and records what was asked."""

    def __init__(self, ints: list[int] | None = None, floats: list[float] | None = None) -> None:
        self.ints, self.floats = list(ints or []), list(floats or [])
        self.asked: list[int | tuple[int, int]] = []  # n of integers(n), (lo, hi) of integers(lo, hi)
        self.coins = 0  # random() calls

    def integers(self, lo: int, hi: int | None = None) -> int:
        self.asked.append(int(lo) if hi is None else (int(lo), int(hi)))
        lo, hi = (0, int(lo)) if hi is None else (int(lo), int(hi))
        v = self.ints.pop(0)
        assert lo <= v < hi, (v, lo, hi)
        return v

    def random(self) -> float:
        self.coins += 1
        return self.floats.pop(0)


def coco_tree(root: Path) -> Path:
    """``root/images/{a,b}.png`` and ``root/instances.json``: image a (64 x 80) with a polygon, a crowd RLE and
    an RLE instance; image b (48 x 48) with one polygon; an entry whose file is missing."""
    (root / "images").mkdir(parents=True)
    save_image(root / "images" / "a.png", textured(64, 80, seed=1))
    save_image(root / "images" / "b.png", textured(48, 48, seed=2))
    crowd = rect(64, 80, 30, 60, 50, 75)
    meta = {
        "images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 80},
                   {"id": 2, "file_name": "b.png", "height": 48, "width": 48},
                   {"id": 3, "file_name": "missing.png", "height": 10, "width": 10}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 600, "bbox": [5, 5, 40, 20],
             "segmentation": [[5, 5, 45, 5, 45, 25, 5, 25]]},
            {"id": 11, "image_id": 1, "category_id": 2, "iscrowd": 1, "area": 750, "bbox": [50, 30, 25, 30],
             "segmentation": encode_rle(crowd, compressed=False)},
            {"id": 12, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 300,
             "segmentation": encode_rle(rect(64, 80, 40, 60, 5, 20))},
            {"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 400, "bbox": [10, 10, 20, 20],
             "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
            {"id": 30, "image_id": 3, "category_id": 1, "iscrowd": 0, "area": 4,
             "segmentation": [[1, 1, 3, 1, 3, 3]]},
        ],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
    }
    (root / "instances.json").write_text(json.dumps(meta))
    return root
