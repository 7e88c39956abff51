"""tampCOCO (CAT-Net): synthetic forgeries made from COCO, in four subsets.

As distributed::

    tampCOCO/                                    ROOT
      sp_images/<id>_<coco>.jpg_<coco>.jpg[_RT.._RS..].jpg       splicing
      sp_masks/<id>_<coco>.png_<coco>.png[_RT.._RS..].png
      cm_images/, cm_masks/                       copy-move
      bcm_images/, bcm_masks/                     copy-move with blurred boundaries
      bcmc_images/, bcmc_masks/                   bcm + JPEG compression

Mask names repeat the image name with ``.png`` where the image has ``.jpg`` (also inside the name), so
pairing removes every ``.jpg``/``.png`` token before comparing stems. Masks are 0/255 (0/1 masks are scaled,
i.e. converted). Each subset is its own source: ``tampcoco-sp``, ``tampcoco-cm``, ``tampcoco-bcm``,
``tampcoco-bcmc`` (so they can be balanced or repeated separately).

Options: ``subsets`` (default ``sp,cm,bcm,bcmc``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, find_dir, scan_paired, stem_key

SUBSETS = ("sp", "cm", "bcm", "bcmc")


def tampcoco_key(path: Path) -> str:
    return stem_key(re.sub(r"\.(jpe?g|png|tiff?)", "", path.name.lower(), flags=re.IGNORECASE) + ".x")


class TampCOCOSource(Source):
    name = "tampcoco"
    title = "tampCOCO: {sp,cm,bcm,bcmc}_images/ + _masks/ (CAT-Net)"
    options = {"subsets": "subsets to index, e.g. 'sp,cm' (default sp,cm,bcm,bcmc)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        subsets = self.listed("subsets", SUBSETS)
        bad = set(subsets) - set(SUBSETS)
        if bad:
            raise ValueError(f"tampcoco: unknown subset(s) {sorted(bad)}; known: {', '.join(SUBSETS)}")
        for sub in subsets:
            images = find_dir(root, f"{sub}_images", depth=2)
            if images is None:
                continue
            masks = images.parent / f"{sub}_masks"
            yield from scan_paired(f"tampcoco-{sub}", images, masks if masks.is_dir() else None, None, report,
                                   key=tampcoco_key)
