"""DEFACTO (Mahfoudi et al., EUSIPCO 2019): automatic COCO-based forgeries, several subsets.

As distributed (one archive per subset, extracted side by side)::

    DEFACTO/                                       ROOT
      splicing_1_img/img/<name>.tif                splicing (parts 1..7)
      splicing_1_annotations/probe_mask/<name>.jpg masks of the probe (forged) images, 255 = manipulated
      copymove_img/img/, copymove_annotations/probe_mask/
      inpainting_img/img/, inpainting_annotations/probe_mask/
      face_swapping_img/img/, face_swapping_annotations/probe_mask/   (if present)

Other annotation folders (donor masks, graphs, JSON) are not used. Pairing by file stem within a subset.
Subsets become sources ``defacto-<kind>`` (``splicing_1``..``splicing_7`` -> ``defacto-splicing``).
DEFACTO contains no authentic images. Masks may be JPEG-coded: they are binarised at 128 as usual.

Options: ``subsets`` (comma-separated kinds, e.g. ``splicing,copymove``; default all found).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, find_dirs, scan_paired


class DefactoSource(Source):
    name = "defacto"
    title = "DEFACTO: <subset>_img/img/ + <subset>_annotations/probe_mask/"
    options = {"subsets": "kinds to index, e.g. 'splicing,copymove' (default: all found)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        wanted = self.listed("subsets", [])
        for folder in find_dirs(root, "*_img", depth=2):
            prefix = folder.name[: -len("_img")]
            kind = re.sub(r"_\d+$", "", prefix.lower()).replace("_", "-")
            if wanted and kind not in wanted and kind.replace("-", "_") not in wanted:
                continue
            images = folder / "img" if (folder / "img").is_dir() else folder
            masks = folder.parent / f"{prefix}_annotations" / "probe_mask"
            yield from scan_paired(f"defacto-{kind}", images, masks if masks.is_dir() else None, None, report)
