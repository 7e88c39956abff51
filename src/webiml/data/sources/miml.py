"""MIML (v1): web forgeries auto-annotated by CAAA, in two parts.

As distributed::

    MIML/                     ROOT (or pass one part folder directly)
      MIML_Part1/             SPG subset: the forgery is an edited copy of a web original
        imgs/1.jpg, 2.jpg, ...
        masks/1.png, 2.png, ...   8-bit, 0..255, 255 = manipulated
      MIML_Part2/             SDG subset: the original donated an object pasted into another photo
        imgs/N.jpg
        masks/N.png

Masks are soft auto-annotations: values 8..192 are uncertain and are ignored in training, as in the
authors' code, so records carry ``ignore_band: [7, 193]`` (0-7 authentic, 193-255 manipulated). Masks are
kept as they are (no conversion). Images and masks are paired by file stem.

Records: ``source`` ``miml-part1`` / ``miml-part2``, extra ``category`` ``SPG`` / ``SDG``.

Options: ``parts`` (default ``1,2``), ``band`` (``low,high``, or ``none`` for plain binarisation).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.masks import WEB_LABELS
from webiml.data.sources.base import Candidate, Reporter, Source, find_dir, list_files, pair_by_key, tampered_candidates

CATEGORY = {"1": "SPG", "2": "SDG"}


def parse_band(value: object, default: tuple[int, int] | None) -> tuple[int, int] | None:
    if value is None:
        return default
    if isinstance(value, str):
        if value.strip().lower() in ("none", "", "binary"):
            return None
        low, high = (int(v) for v in value.replace(";", ",").split(","))
        return low, high
    low, high = value  # type: ignore[misc]
    return int(low), int(high)


def part_dirs(root: Path, prefix: str) -> dict[str, Path]:
    """``{part number: folder}`` for folders named ``<prefix>_Part<N>`` (root itself may be one)."""
    out: dict[str, Path] = {}
    for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        name = d.name.lower()
        if name.startswith(prefix.lower() + "_part"):
            out[name.rsplit("part", 1)[1]] = d
    return out


def scan_imgs_masks(folder: Path, source: str, report: Reporter, **kwargs: object) -> Iterator[Candidate]:
    imgs = find_dir(folder, "imgs", "images", "img", depth=1)
    masks = find_dir(folder, "masks", "mask", "gt", depth=1)
    if imgs is None:
        raise FileNotFoundError(f"{folder}: no imgs/ folder")
    pairs = pair_by_key(list_files(imgs), list_files(masks) if masks else [], report)
    yield from tampered_candidates(pairs, source, **kwargs)  # type: ignore[arg-type]


class MIMLSource(Source):
    name = "miml"
    title = "MIML v1 (MIML_Part1 = SPG, MIML_Part2 = SDG), soft web labels"
    masks = "soft 0..255 kept as is; ignore band [7, 193]"
    options = {"parts": "parts to index, e.g. '1' or '1,2' (default both)",
               "band": "ignore band 'low,high' (default 7,193) or 'none'"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        band = parse_band(self.option("band"), tuple(WEB_LABELS))
        parts = part_dirs(root, "MIML")
        if not parts and find_dir(root, "imgs", depth=1) is not None:
            parts = {"1": root}  # a bare imgs/ + masks/ folder: treated as part 1
        wanted = self.listed("parts", ["1", "2"])
        for n in sorted(parts):
            if n in wanted:
                yield from scan_imgs_masks(parts[n], f"miml-part{n}", report, ignore_band=band,
                                           extra={"category": CATEGORY.get(n, f"part{n}")})
