"""IMD2020 (real-life manipulated images).

As distributed::

    IMD2020/                              ROOT
      1a1ogs/                             one folder per original photo
        1a1ogs_orig.jpg                   the authentic original
        c8tf5mq_0.png                     manipulated versions (.jpg or .png)
        c8tf5mq_0_mask.png                their masks, 255 = manipulated
      z28/00065_orig.jpg, 00065_fake.jpg, 00065_fake_mask.png
      ...

Every image whose stem ends in ``_orig`` is authentic; every other image (not ``*_mask``) is
manipulated and paired with ``<stem>_mask.*`` in the same folder.

Options: ``authentic`` (default true).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, list_files


class IMD2020Source(Source):
    name = "imd2020"
    title = "IMD2020: <dir>/<name>.jpg + <name>_mask.png, <dir>/*_orig.jpg authentic"
    options = {"authentic": "index *_orig images (default true)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        files = list_files(root)
        masks = {(f.parent, f.stem.lower()[: -len("_mask")]): f for f in files if f.stem.lower().endswith("_mask")}
        used = set()
        for f in files:
            stem = f.stem.lower()
            if stem.endswith("_mask"):
                continue
            if stem.endswith("_orig"):
                if self.flag("authentic", True):
                    yield Candidate(str(f), None, 0, self.name)
                continue
            mask = masks.get((f.parent, stem))
            used.add((f.parent, stem))
            yield Candidate(str(f), None if mask is None else str(mask), 1, self.name)
        for k in sorted(set(masks) - used):
            report("orphan_mask", str(masks[k]), "mask without an image (ignored)")
