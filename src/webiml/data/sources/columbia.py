"""Columbia Uncompressed Image Splicing Detection Evaluation Dataset.

As distributed::

    Columbia/                                   ROOT ("4cam_auth" and "4cam_splc" may be one level deeper)
      4cam_auth/canong3_02_sub_01.tif ...       183 authentic TIFFs
        edgemask/...                            (edge maps of authentic images: not used)
      4cam_splc/canong3_canonxt_sub_01.tif ...  180 spliced TIFFs
        edgemask/canong3_canonxt_sub_01_edgemask.jpg   colour edge maps (JPEG)

The edge maps are colour images: the region that came from the second camera (the spliced region) is
bright green, the rest red, with the boundary drawn between them. The manipulated mask is the green
channel thresholded at 128 (JPEG-coded maps have ringing, so not ``> 0``); masks are converted to 0/255
PNGs in the cache folder. Pairing: ``<stem>_edgemask.*`` (``<stem>_edgemask_*`` accepted).

Options: ``authentic`` (default true).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import (
    MASK_SUFFIXES,
    Candidate,
    Reporter,
    Source,
    authentic_candidates,
    find_dir,
    list_files,
    pair_by_key,
    require_dir,
    tampered_candidates,
)


def edgemask_key(path: Path) -> str:
    stem = path.stem.lower()
    if "_edgemask" in stem:
        stem = stem.split("_edgemask")[0]
    return stem


class ColumbiaSource(Source):
    name = "columbia"
    title = "Columbia uncompressed: 4cam_splc/*.tif + edgemask/*_edgemask.jpg, 4cam_auth/"
    masks = "colour edge map -> green channel >= 128 (converted)"
    options = {"authentic": "index 4cam_auth/ (default true)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        splc = require_dir(root, "spliced (4cam_splc)", "4cam_splc")
        edges = find_dir(splc, "edgemask", depth=1)
        images = list_files(splc, recursive=False)
        masks = list_files(edges, MASK_SUFFIXES) if edges else []
        pairs = pair_by_key(images, masks, report, edgemask_key)
        yield from tampered_candidates(pairs, self.name, "green")
        if self.flag("authentic", True):
            auth = find_dir(root, "4cam_auth")
            if auth is not None:
                yield from authentic_candidates(list_files(auth, recursive=False), self.name)
