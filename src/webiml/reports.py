"""What the inference and evaluation verbs write for people: per-image score tables (``scores.csv`` /
``scores.json``) and HTML reports (jinja2 templates, matplotlib figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webiml.io import atomic_write_json, atomic_write_text

SCORE_FIELDS = ["path", "name", "width", "height", "image_score", "manipulated", "manipulated_area"]


def write_scores(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """``scores.csv`` (one row per image, ``SCORE_FIELDS``) and ``scores.json`` (``summary`` + ``images``), atomic;
    the files of ``webiml localize`` and ``webiml predict``."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SCORE_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "scores.csv", buf.getvalue())
    atomic_write_json(out / "scores.json", {**summary, "images": rows})
