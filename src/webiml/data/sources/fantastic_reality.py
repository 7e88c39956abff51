"""FantasticReality (Kniaz et al., NeurIPS 2019): spliced images with segmentation masks as ``.npz``.

As distributed::

    FantasticReality_v1/                  ROOT
      dataset/ColorFakeImages/<name>.jpg  spliced images
      dataset/ColorRealImages/<name>.jpg  authentic images
      dataset/SegmentationFake/<name>.npz masks: one array (``arr_0``), > 0 = spliced object
      (dataset/masks/ is accepted for the masks too)

``.npz`` masks are decoded (``> 0`` manipulated) and converted to 0/255 PNGs in the cache folder.
Pairing by file stem. Source name ``fantasticreality``.

Options: ``authentic`` (default true).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, find_dir, require_dir, scan_paired


class FantasticRealitySource(Source):
    name = "fantasticreality"
    title = "FantasticReality: ColorFakeImages/ + SegmentationFake/*.npz, ColorRealImages/"
    masks = ".npz arrays, > 0 manipulated (converted)"
    options = {"authentic": "index ColorRealImages/ (default true)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        fake = require_dir(root, "ColorFakeImages", "colorfakeimages")
        masks = require_dir(root, "SegmentationFake", "segmentationfake", "masks")
        real = find_dir(root, "colorrealimages") if self.flag("authentic", True) else None
        yield from scan_paired(self.name, fake, masks, real, report, decoder="npz")
