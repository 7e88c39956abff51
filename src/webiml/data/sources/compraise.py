"""compRAISE (CAT-Net): authentic RAISE photos JPEG-compressed at random qualities (authentic only).

As distributed::

    compRAISE/                ROOT
      r000da54ft_Q67.jpg ...  authentic JPEGs (also "_aligned_Q..", "_resize_.._Q..", "_crop_..._Q..")
                              (sub-folders are scanned too)

Every image is authentic (label 0, no mask). Source name ``compraise``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, authentic_candidates, list_files


class CompRAISESource(Source):
    name = "compraise"
    title = "compRAISE: authentic JPEGs only"

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        yield from authentic_candidates(list_files(root), self.name)
