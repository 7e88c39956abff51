"""CocoGlide (TruFor, CVPR 2023): COCO val2017 images locally inpainted by GLIDE.

As distributed::

    CocoGlide/                ROOT
      fake/<name>.png         512 manipulated images
      mask/<name>.png         masks, 255 = manipulated (``<name>_mask.png`` accepted)
      real/<name>.png         512 authentic images

Pairing by file stem.

Options: ``authentic`` (default true).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, find_dir, require_dir, scan_paired


class CocoGlideSource(Source):
    name = "cocoglide"
    title = "CocoGlide: fake/ + mask/, authentic real/"
    options = {"authentic": "index real/ (default true)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        fake = require_dir(root, "fake", "fake", "fakes", "tampered")
        mask = require_dir(root, "mask", "mask", "masks")
        real = find_dir(root, "real", "authentic") if self.flag("authentic", True) else None
        yield from scan_paired(self.name, fake, mask, real, report)
