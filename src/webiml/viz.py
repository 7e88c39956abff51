"""Heatmaps, overlays and HTML report pages for IML predictions."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from webiml.io import atomic_write_text

# A perceptually ordered colormap (dark blue -> yellow), sampled at 5 anchors and interpolated; written
# out here so heatmaps need no plotting library.
_ANCHORS = np.array([[48, 18, 59], [40, 130, 229], [36, 214, 160], [233, 214, 57], [250, 250, 110]], dtype=np.float32)


def colorize(prob: np.ndarray) -> np.ndarray:
    """Map a probability map (H, W) in [0, 1] to an RGB ``uint8`` heatmap (H, W, 3)."""
    p = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(p).astype(np.int64)
    hi = np.minimum(lo + 1, len(_ANCHORS) - 1)
    t = (p - lo)[..., None]
    return (_ANCHORS[lo] * (1 - t) + _ANCHORS[hi] * t).astype(np.uint8)


def overlay(image: np.ndarray, prob: np.ndarray, alpha: float = 0.6, threshold: float = 0.5) -> np.ndarray:
    """The image with manipulated regions highlighted: red tint weighted by probability, outline at ``threshold``."""
    img = np.asarray(image, dtype=np.float32)
    p = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)[..., None]
    grey = img.mean(axis=2, keepdims=True).repeat(3, axis=2)
    base = 0.35 * img + 0.65 * grey  # desaturate so the highlight stands out
    red = np.array([255.0, 40.0, 40.0], dtype=np.float32)
    out = base * (1 - alpha * p) + red * (alpha * p)
    edge = _outline(p[..., 0] >= threshold)
    out[edge] = (255.0, 255.0, 0.0)
    return np.clip(out, 0, 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


@dataclass
class ReportRow:
    """One row of an HTML report: image files (relative to the page) and text fields."""

    title: str
    images: Sequence[tuple[str, str]]  # (caption, relative path)
    fields: Sequence[tuple[str, str]] = ()


def write_report(path: str | os.PathLike[str], title: str, rows: Sequence[ReportRow], intro: str = "") -> Path:
    """Write a self-contained HTML page (images referenced by relative path) atomically."""
    path = Path(path)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa}"
        "table{border-collapse:collapse}td{padding:6px;vertical-align:top;text-align:center}"
        "img{max-width:280px;max-height:280px;border:1px solid #ccc}"
        "tr{border-bottom:1px solid #ddd}.f{text-align:left;font-size:0.9em;white-space:nowrap}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{intro}</p>" if intro else "",
        "<table>",
    ]
    for row in rows:
        cells = [f"<td class='f'><b>{html.escape(row.title)}</b><br>"
                 + "<br>".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in row.fields) + "</td>"]
        for caption, src in row.images:
            cells.append(f"<td><img src='{html.escape(src)}' alt='{html.escape(caption)}'><br>{html.escape(caption)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    atomic_write_text(path, "\n".join(parts))
    return path
