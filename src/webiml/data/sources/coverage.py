"""COVERAGE (copy-move with similar-but-genuine objects).

As distributed::

    COVERAGE/                 ROOT
      image/1.tif ... 100.tif         authentic
      image/1t.tif ... 100t.tif       tampered
      mask/1forged.tif ...            forged region (copied + pasted), 255 = manipulated
      mask/1copy.tif, 1paste.tif      the source and the pasted region alone
      label/...                       (.mat tags: not used)

By default the ``forged`` mask is used (the field's usual choice); option ``mask=paste`` uses the pasted
region only. Masks are read as they are (plain).

Options: ``mask`` (forged | paste | copy), ``authentic`` (default true).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, list_files, require_dir


class CoverageSource(Source):
    name = "coverage"
    title = "COVERAGE: image/Nt.tif + mask/Nforged.tif, authentic image/N.tif"
    options = {"mask": "which mask: forged (default), paste or copy", "authentic": "index image/N.tif (default true)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        kind = str(self.option("mask", "forged")).lower()
        if kind not in ("forged", "paste", "copy"):
            raise ValueError(f"coverage: mask must be forged, paste or copy, got {kind!r}")
        images = list_files(require_dir(root, "image", "image", "images"), recursive=False)
        mask_dir = require_dir(root, "mask", "mask", "masks")
        masks = {}
        for m in list_files(mask_dir, (".tif", ".tiff", ".png", ".bmp"), recursive=False):
            match = re.fullmatch(r"(\d+)(forged|paste|copy)", m.stem.lower())
            if match and match.group(2) == kind:
                masks[match.group(1)] = m
        used = set()
        for img in images:
            match = re.fullmatch(r"(\d+)(t?)", img.stem.lower())
            if match is None:
                report("unrecognised_file", str(img), "not N.tif or Nt.tif (ignored)")
                continue
            n, tampered = match.groups()
            if tampered:
                mask = masks.get(n)
                used.add(n)
                yield Candidate(str(img), None if mask is None else str(mask), 1, self.name)
            elif self.flag("authentic", True):
                yield Candidate(str(img), None, 0, self.name)
        for n in sorted(set(masks) - used):
            report("orphan_mask", str(masks[n]), "mask without a tampered image (ignored)")
