"""In-the-Wild (Huh et al., "Fighting Fake News", ECCV 2018): 201 web forgeries with manual masks.

As distributed::

    label_in_wild/            ROOT
      images/<name>.jpg       all manipulated
      masks/<name>.png        255 = manipulated (0/1 masks are scaled to 0/255)

Pairing by file stem (``_mask`` suffixes accepted).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, require_dir, scan_paired


class InTheWildSource(Source):
    name = "in-the-wild"
    title = "In-the-Wild: images/ + masks/ (all manipulated)"

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        images = require_dir(root, "images", "images", "imgs", "img")
        masks = require_dir(root, "masks", "masks", "mask", "gt", "labels")
        yield from scan_paired(self.name, images, masks, None, report)
