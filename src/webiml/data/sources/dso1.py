"""DSO-1 (Carvalho et al., IEEE TIFS 2013), part of the "tifs-database".

As distributed::

    tifs-database/                          ROOT (or its parent)
      DSO-1/normal-01.png ...               100 authentic
      DSO-1/splicing-01.png ...             100 spliced
      DSO-1-Fake-Images-Masks/splicing-01.png   masks, INVERTED: black = spliced, white = authentic
      DSI-1/ ...                            (other sets of the database: not indexed)

Masks are inverted into the project convention (converted PNGs). Pairing by file stem.

Options: ``authentic`` (default true).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import (
    Candidate,
    Reporter,
    Source,
    list_files,
    pair_by_key,
    require_dir,
    tampered_candidates,
)


class DSO1Source(Source):
    name = "dso1"
    title = "DSO-1: DSO-1/{normal,splicing}-NN.png + DSO-1-Fake-Images-Masks/ (inverted)"
    masks = "inverted (black = spliced on disk), converted"
    options = {"authentic": "index normal-*.png (default true)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        images = list_files(require_dir(root, "DSO-1", "dso-1"), recursive=False)
        masks = list_files(require_dir(root, "DSO-1 masks", "dso-1-fake-images-masks", "dso-1*mask*"), recursive=False)
        spliced = [p for p in images if p.stem.lower().startswith("splicing")]
        yield from tampered_candidates(pair_by_key(spliced, masks, report), self.name, "inverted")
        if self.flag("authentic", True):
            for p in images:
                if p.stem.lower().startswith("normal"):
                    yield Candidate(str(p), None, 0, self.name)
