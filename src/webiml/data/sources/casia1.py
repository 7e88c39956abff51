"""CASIA v1.0 (and v1+), with the community ground truth (``_gt.png`` masks).

As distributed (the image archive + the separately released ground truth, merged under ROOT)::

    CASIA1/                                   ROOT
      Au/Au_ani_0001.jpg ...                  800 authentic images (CASIA v1+: Corel images instead,
                                              any names; the v1 ones overlap CASIA v2's authentic set)
      Tp/CM/Sp_S_CND_A_pla0016_pla0016_0196.jpg ...   459 copy-move (also "Modified Tp/Tp/CM/")
      Tp/Sp/Sp_D_CND_A_pla0005_pla0023_0281.jpg ...   461 splicing
      Gt/CM/Sp_S_CND_A_pla0016_pla0016_0196_gt.png    masks, 255 = tampered (also "CASIA 1.0 groundtruth/")
      Gt/Sp/...

``Tp/`` and ``Gt/`` may also be flat. Images and masks are paired by file stem (``<stem>_gt.png``), never
by sort order; tampered images without a mask are reported (``missing_mask``).

Options: ``authentic`` (default true: index ``Au/``). Source names ``casia1`` / ``casia1plus``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, find_dir, require_dir, scan_paired

TP = ("tp", "tampered", "modified tp")
GT = ("gt", "*groundtruth*", "*ground truth*", "*ground-truth*", "*ground_truth*", "mask", "masks")
AU = ("au", "authentic", "corel*")


class CASIA1Source(Source):
    name = "casia1"
    title = "CASIA v1.0: Tp/ (CM, Sp) + Gt/ *_gt.png, authentic Au/"
    options = {"authentic": "index the authentic images in Au/ (default true)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        tp = require_dir(root, "tampered (Tp)", *TP)
        gt = require_dir(root, "ground-truth (Gt)", *GT)
        au = find_dir(root, *AU) if self.flag("authentic", True) else None
        yield from scan_paired(self.name, tp, gt, au, report)


class CASIA1PlusSource(CASIA1Source):
    name = "casia1plus"
    title = "CASIA v1+: CASIA v1.0 tampered images, Corel authentic images in Au/"
