"""The manifest: the one format every dataset source converts to.

A manifest is a JSON Lines file (``.jsonl``), one sample per line::

    {"image": "imgs/1.jpg", "mask": "masks/1.png", "label": 1, "source": "miml-part1",
     "weight": 1.0, "ignore_band": [7, 193]}

- ``image``: path to the image, absolute or relative to the manifest's folder.
- ``mask``: path to an 8-bit mask in the project convention (0 authentic, 255 manipulated,
  soft values in between), or ``null`` for an authentic image (an all-zero target).
- ``label``: image-level label, 1 = manipulated, 0 = authentic.
- ``source``: name of the dataset the sample came from (used for balanced sampling and per-set metrics).
- ``weight`` (optional, default 1.0): per-sample loss weight (e.g. a QES-derived weight); finite, >= 0
  (NaN / Infinity are refused when the manifest is read).
- ``ignore_band`` (optional): ``[low, high]`` thresholds for soft masks (see :mod:`webiml.data.masks`);
  absent means plain binarisation at 128.
- any other keys are kept in ``extra`` and written back unchanged.

CSV files with the same column names are read too (``ignore_band`` as ``"low,high"``).
Writing is atomic (write to a temporary file, then rename) so a manifest is never half-written.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webiml.data.masks import BINARY, IgnoreBand
from webiml.io import atomic_write_text

_KNOWN = ("image", "mask", "label", "source", "weight", "ignore_band")


class ManifestError(ValueError):
    """A manifest file or one of its rows is malformed; the message names the file and line."""


@dataclass(frozen=True)
class ManifestRecord:
    """One sample of a manifest. Paths are stored as given; :meth:`resolve` makes them absolute."""

    image: str
    mask: str | None = None
    label: int = 0
    source: str = "default"
    weight: float = 1.0
    ignore_band: IgnoreBand | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def band(self) -> IgnoreBand:
        return self.ignore_band or BINARY

    def resolve(self, root: str | os.PathLike[str]) -> ManifestRecord:
        """Return a copy whose relative paths are made absolute against ``root``."""
        root = Path(root)

        def absolute(p: str | None) -> str | None:
            if p is None:
                return None
            return p if os.path.isabs(p) else str(root / p)

        return ManifestRecord(
            absolute(self.image), absolute(self.mask), self.label, self.source,  # type: ignore[arg-type]
            self.weight, self.ignore_band, dict(self.extra),
        )

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"image": self.image, "mask": self.mask, "label": self.label, "source": self.source}
        if self.weight != 1.0:
            row["weight"] = self.weight
        if self.ignore_band is not None:
            row["ignore_band"] = list(self.ignore_band)
        row.update(self.extra)
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any], where: str = "<row>") -> ManifestRecord:
        if not isinstance(row, dict):
            raise ManifestError(f"{where}: expected an object, got {type(row).__name__}")
        if not row.get("image"):
            raise ManifestError(f"{where}: missing 'image'")
        mask = row.get("mask") or None
        for key, value in (("image", row["image"]), ("mask", mask)):
            if value is not None and not isinstance(value, str):
                raise ManifestError(f"{where}: '{key}' must be a path (a string), got {type(value).__name__}")
        try:
            raw_label = row.get("label")
            label = int(mask is not None) if raw_label in (None, "") else float(raw_label)
            weight = float(row["weight"]) if row.get("weight") not in (None, "") else 1.0
        except (TypeError, ValueError, OverflowError) as err:
            raise ManifestError(f"{where}: bad 'label' or 'weight': {err}") from None
        if label not in (0, 1):
            raise ManifestError(f"{where}: 'label' must be 0 or 1, got {raw_label!r}")
        label = int(label)
        if not math.isfinite(weight) or weight < 0:
            raise ManifestError(f"{where}: 'weight' must be a finite number >= 0, got {row.get('weight')!r}")
        band = row.get("ignore_band")
        if isinstance(band, str):
            band = [b for b in band.replace(";", ",").split(",") if b.strip()] or None
        if band is not None:
            try:
                low, high = (int(b) for b in band)
            except (TypeError, ValueError, OverflowError):
                raise ManifestError(f"{where}: 'ignore_band' must be [low, high], got {band!r}") from None
            if not 0 <= low < high <= 255:
                raise ManifestError(f"{where}: 'ignore_band' must satisfy 0 <= low < high <= 255, got {band!r}")
            band = IgnoreBand(low, high)
        extra = {k: v for k, v in row.items() if k not in _KNOWN}
        return cls(str(row["image"]), None if mask is None else str(mask), label,
                   str(row.get("source") or "default"), weight, band, extra)


def read_manifest(path: str | os.PathLike[str], *, resolve: bool = True) -> list[ManifestRecord]:
    """Read a ``.jsonl`` or ``.csv`` manifest; relative paths are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    records: list[ManifestRecord] = []
    i = 0
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                for i, row in enumerate(csv.DictReader(f), start=2):
                    records.append(ManifestRecord.from_json(row, f"{path}:{i}"))
        else:
            with path.open(encoding="utf-8") as f:
                for i, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ManifestError(f"{path}:{i}: invalid JSON ({err.msg})") from None
                    except RecursionError:
                        raise ManifestError(f"{path}:{i}: invalid JSON (nested too deeply)") from None
                    records.append(ManifestRecord.from_json(row, f"{path}:{i}"))
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start} after line {i})") from None
    except csv.Error as err:
        raise ManifestError(f"{path}:{i + 1}: malformed CSV ({err})") from None
    if resolve:
        records = [r.resolve(path.parent) for r in records]
    return records


def iter_json_lines(records: Iterable[ManifestRecord]) -> Iterator[str]:
    for r in records:
        yield json.dumps(r.to_json(), ensure_ascii=False) + "\n"


def write_manifest(path: str | os.PathLike[str], records: Iterable[ManifestRecord], *, relative_to_manifest: bool = True) -> Path:
    """Write records atomically as JSON Lines.

    Record paths are absolute or relative to the working directory. With ``relative_to_manifest`` those under the
    manifest's folder are stored relative to it and the others absolute, so :func:`read_manifest` (which resolves
    relative paths against the manifest's folder) finds every file from any working directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = os.path.abspath(path.parent)

    def rel(p: str | None) -> str | None:
        # abspath/relpath are pure string operations: no per-file system calls on manifests of millions.
        if p is None or not relative_to_manifest:
            return p
        absolute = os.path.abspath(p)
        if os.path.commonpath([absolute, root]) != root:
            return absolute
        return os.path.relpath(absolute, root)

    rows = (ManifestRecord(rel(r.image), rel(r.mask), r.label, r.source, r.weight, r.ignore_band, r.extra)  # type: ignore[arg-type]
            for r in records)
    atomic_write_text(path, "".join(iter_json_lines(rows)))
    return path
