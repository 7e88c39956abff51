"""CASIA v2.0 with the community ground truth.

As distributed::

    CASIA2/                                          ROOT
      Au/Au_ani_00001.jpg ...                        7,491 authentic (.jpg, a few .bmp)
      Tp/Tp_D_CNN_M_B_nat00056_nat00099_11105.jpg    5,123 tampered (.jpg and .tif)
      CASIA 2 Groundtruth/Tp_D_CNN_M_B_nat00056_nat00099_11105_gt.png   masks, 255 = tampered

Known quirks, reported per file and handled by the indexing policy: some tampered images have no mask
(``missing_mask``: skipped), a few masks differ in size from their image (``size_mismatch``: resized
nearest under ``fix``), some masks are empty. Pairing is by stem (``<stem>_gt.png``).

Options: ``authentic`` (default true).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, find_dir, require_dir, scan_paired

GT = ("casia 2 groundtruth", "casia2 groundtruth", "*groundtruth*", "*ground truth*", "gt", "mask", "masks")


class CASIA2Source(Source):
    name = "casia2"
    title = "CASIA v2.0: Tp/, Au/, 'CASIA 2 Groundtruth/' *_gt.png"
    options = {"authentic": "index the authentic images in Au/ (default true)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        tp = require_dir(root, "tampered (Tp)", "tp", "tampered")
        gt = require_dir(root, "ground truth", *GT)
        au = find_dir(root, "au", "authentic") if self.flag("authentic", True) else None
        yield from scan_paired(self.name, tp, gt, au, report)
