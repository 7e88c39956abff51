"""Constrained-IML pairs ``(original, forged)``: the pair categories, one record per pair, the pair manifest.

The pair manifest (JSON Lines), one pair per line::

    {"original": "original/000000.png", "forged": "forged/000000.png", "mask": "mask/000000.png",
     "category": "SPG", "aligned": false, "crop_box": [0.05, 0.02, 0.97, 0.9],
     "source_mask": null, "source": "synthetic-pairs"}

Paths are absolute or relative to the manifest's folder; ``mask`` may be ``null`` (no edit visible:
an all-zero mask); ``category`` is ``"SPG"``, ``"SDG"`` or ``"unrelated"``; ``crop_box`` is
``[0, 0, 1, 1]`` for aligned SPG pairs and for the other categories; other keys are kept in ``extra``.

Synthetic pairs with exact masks are made by :mod:`webiml.data.pair_synthesis`; :mod:`webiml.data.pair_datamodule`
turns manifests into training batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from webiml.io import atomic_write_text

__all__ = [
    "CATEGORIES",
    "FULL_BOX",
    "PairCategory",
    "PairManifestError",
    "PairRecord",
    "read_pair_manifest",
    "write_pair_manifest",
]


class PairCategory(str, Enum):
    """How the forgery of a pair relates to its original. The short names are the MIML authors' (CAAA).

    - ``SPG`` ("same photo"): the forgery is an edited copy of (a view of) the original photo, possibly
      cropped, resized, recompressed or colour-shifted. Once the original is registered onto the forgery,
      the edit is where they differ (CAAAv2's difference-aware SPG segmenter).
    - ``SDG`` ("different photo", the original is the donor): an object or region of the original was
      pasted into another photo. Nothing but the pasted object is shared, so it is found by feature
      correlation (CAAAv2's SDG segmenter); the donated region of the original is the ``source_mask``.
    - ``UNRELATED``: two different photos, nothing of the original is in the forgery (an all-zero mask);
      negatives of the pair classifier and the SDG segmenter.

    Members are strings (``PairCategory.SPG == "SPG"``), so manifests and JSON records hold the plain value.
    """

    SPG = "SPG"
    SDG = "SDG"
    UNRELATED = "unrelated"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> PairCategory:
        """The category named ``text`` (case-insensitive); ``ValueError`` names the valid ones."""
        for member in cls:
            if member.value.lower() == str(text).lower():
                return member
        raise ValueError(f"category must be one of {CATEGORIES}, got {text!r}")


CATEGORIES: tuple[str, ...] = tuple(c.value for c in PairCategory)
FULL_BOX: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


class PairManifestError(ValueError):
    """A pair manifest or one of its rows is malformed; the message names the file and line."""


_KNOWN = ("original", "forged", "mask", "category", "aligned", "crop_box", "source_mask", "source", "weight")


@dataclass(frozen=True)
class PairRecord:
    """One row of a pair manifest. Paths are stored as given; :meth:`resolve` makes them absolute."""

    original: str
    forged: str
    mask: str | None = None
    category: PairCategory = PairCategory.SPG
    aligned: bool = False
    crop_box: tuple[float, float, float, float] = FULL_BOX
    source_mask: str | None = None
    source: str = "default"
    weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def resolve(self, root: str | os.PathLike[str]) -> PairRecord:
        root = Path(root)

        def absolute(p: str | None) -> str | None:
            return None if p is None else (p if os.path.isabs(p) else str(root / p))

        return PairRecord(
            absolute(self.original), absolute(self.forged), absolute(self.mask), self.category, self.aligned,  # type: ignore[arg-type]
            self.crop_box, absolute(self.source_mask), self.source, self.weight, dict(self.extra),
        )

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "original": self.original, "forged": self.forged, "mask": self.mask, "category": self.category,
            "aligned": self.aligned, "crop_box": [round(float(v), 6) for v in self.crop_box], "source_mask": self.source_mask,
            "source": self.source,
        }
        if self.weight != 1.0:
            row["weight"] = self.weight
        row.update(self.extra)
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> PairRecord:
        for key in ("original", "forged"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ValueError(f"{key!r} must be a non-empty path")
        category = PairCategory.parse(str(row.get("category", "SPG")))
        box = row.get("crop_box") or FULL_BOX
        if len(box) != 4:
            raise ValueError(f"crop_box must have 4 numbers, got {box!r}")
        box_t = tuple(float(v) for v in box)
        if not (0 <= box_t[0] < box_t[2] <= 1 + 1e-6 and 0 <= box_t[1] < box_t[3] <= 1 + 1e-6):
            raise ValueError(f"crop_box must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {box_t}")
        extra = {k: v for k, v in row.items() if k not in _KNOWN}
        return cls(
            original=row["original"], forged=row["forged"], mask=row.get("mask") or None, category=category,
            aligned=bool(row.get("aligned", False)), crop_box=box_t, source_mask=row.get("source_mask") or None,  # type: ignore[arg-type]
            source=str(row.get("source", "default")), weight=float(row.get("weight", 1.0)), extra=extra,
        )


def read_pair_manifest(path: str | os.PathLike[str], resolve: bool = True) -> list[PairRecord]:
    """Read a pair manifest (``.jsonl``); relative paths are made absolute against its folder."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise PairManifestError(f"{path}: pair manifest not found") from None
    records = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = PairRecord.from_json(json.loads(line))
        except (ValueError, TypeError) as err:
            raise PairManifestError(f"{path}:{i}: {err}") from None
        records.append(rec.resolve(path.parent) if resolve else rec)
    return records


def write_pair_manifest(path: str | os.PathLike[str], records: Iterable[PairRecord]) -> None:
    """Write a pair manifest atomically (JSON Lines)."""
    text = "".join(json.dumps(r.to_json(), sort_keys=False) + "\n" for r in records)
    atomic_write_text(path, text)


