"""Where ``webiml annotate`` reads pairs: discovery of a pair source and decoding in DataLoader workers.

Pair sources (:func:`discover_pairs`): a folder of pair folders (each holding ``original.*`` and
``forged.*``, or the MIML authors' ``0.*`` = original and ``1.*`` = forged; nested folders are searched),
a CSV with columns ``original,forged[,id]`` or a JSON Lines file with keys ``original``, ``forged`` and
optionally ``id`` (paths relative to the file). :class:`PairFolderDataset` decodes them (an unreadable
pair becomes an error item, reported and skipped, never fatal).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from webiml.io import IMAGE_SUFFIXES, ImageReadError, hwc_to_chw, read_image

__all__ = ["PairFolderDataset", "PairSourceError", "PairSpec", "collate_pairs", "discover_pairs"]

ORIGINAL_STEMS = ("original", "0")
FORGED_STEMS = ("forged", "1")


class PairSourceError(ValueError):
    """The pair source (folder, CSV, JSON Lines) cannot be read; the message says why."""


@dataclass(frozen=True)
class PairSpec:
    """One pair to annotate: a file-name-safe unique id and the two image paths (absolute)."""

    pair_id: str
    original: str
    forged: str


# --------------------------------------------------------------------------------------------------
# pair discovery


def _safe_id(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return s or "pair"


def _unique(ids: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for i in ids:
        cand, n = i, 1
        while cand in seen:
            cand = f"{i}-{n}"
            n += 1
        seen.add(cand)
        out.append(cand)
    return out


def _pair_files(folder: Path) -> tuple[Path | None, Path | None, bool]:
    """(original, forged, is_pair_folder) of a folder by file stem."""
    by_stem: dict[str, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return None, None, False
    for f in entries:
        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
            by_stem.setdefault(f.stem.lower(), f)
    orig = next((by_stem[s] for s in ORIGINAL_STEMS if s in by_stem), None)
    forged = next((by_stem[s] for s in FORGED_STEMS if s in by_stem), None)
    return orig, forged, orig is not None or forged is not None


def _missing(folder: Path, what: str) -> str:
    return str(folder / f"<missing {what}>")


def _from_folder(root: Path) -> list[PairSpec]:
    found: list[tuple[str, str, str]] = []
    orig, forged, is_pair = _pair_files(root)
    if is_pair:
        found.append((root.name, str(orig or _missing(root, "original")), str(forged or _missing(root, "forged"))))
    else:
        for dirpath, dirnames, _ in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            if here == root:
                continue
            orig, forged, is_pair = _pair_files(here)
            if is_pair:
                dirnames.clear()  # a pair folder is a leaf
                rel = here.relative_to(root).as_posix().replace("/", "__")
                found.append((rel, str(orig or _missing(here, "original")), str(forged or _missing(here, "forged"))))
    ids = _unique([_safe_id(f[0]) for f in found])
    return [PairSpec(i, o, f) for i, (_, o, f) in zip(ids, found, strict=True)]


def _rows_to_specs(rows: list[dict[str, Any]], base: Path, where: str) -> list[PairSpec]:
    raw = []
    for n, row in enumerate(rows, start=1):
        o, f = row.get("original"), row.get("forged")
        if not o or not f:
            raise PairSourceError(f"{where}: row {n} needs 'original' and 'forged' paths")
        o, f = str(o).strip(), str(f).strip()
        o = o if os.path.isabs(o) else str(base / o)
        f = f if os.path.isabs(f) else str(base / f)
        rid = row.get("id") or row.get("pair_id") or Path(f).stem
        raw.append((_safe_id(str(rid)), o, f))
    ids = _unique([r[0] for r in raw])
    return [PairSpec(i, o, f) for i, (_, o, f) in zip(ids, raw, strict=True)]


def discover_pairs(source: str | os.PathLike[str]) -> list[PairSpec]:
    """Pairs from a folder of pair folders, a CSV (``original,forged[,id]``) or a JSON Lines file.

    Ids are made file-name safe and unique (a suffix ``-1``, ``-2`` ... on collisions). A pair folder
    with only one of its two images is returned too (its missing file is named ``<missing ...>``), so
    it is reported as a failed pair.
    """
    src = Path(source).absolute()
    if src.is_dir():
        return _from_folder(src)
    if not src.is_file():
        raise PairSourceError(f"{src}: no such folder or file")
    suffix = src.suffix.lower()
    if suffix == ".csv":
        with src.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or ())
            if not {"original", "forged"} <= fields:
                raise PairSourceError(f"{src}: a pair CSV needs the columns original,forged[,id]; found {sorted(fields)}")
            rows = list(reader)
        return _rows_to_specs(rows, src.parent, str(src))
    if suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise PairSourceError(f"{src}:{n}: invalid JSON ({err.msg})") from None
        return _rows_to_specs(rows, src.parent, str(src))
    raise PairSourceError(f"{src}: expected a folder of pair folders, a .csv or a .jsonl file")


# --------------------------------------------------------------------------------------------------
# data


class PairFolderDataset(Dataset):
    """Decodes pairs (in DataLoader workers). Never raises on bad files: the item carries the error."""

    def __init__(self, specs: Sequence[PairSpec]) -> None:
        self.specs = list(specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        spec = self.specs[index]
        item: dict[str, Any] = {"index": index, "pair_id": spec.pair_id, "original": None, "forged": None, "error": None}
        try:
            item["original"] = hwc_to_chw(read_image(spec.original))
            item["forged"] = hwc_to_chw(read_image(spec.forged))
        except (ImageReadError, OSError, ValueError) as err:
            item["original"] = item["forged"] = None
            item["error"] = str(err)
        return item


def collate_pairs(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs have different sizes: a batch is the list of items."""
    return batch

