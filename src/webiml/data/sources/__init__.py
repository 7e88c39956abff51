"""Dataset sources: one module per benchmark layout, all converging on the manifest format.

Each module's docstring shows the dataset's directory tree as distributed and how its masks are read.
``webiml data index SOURCE ROOT -o manifest.jsonl`` (or :func:`index_source`) scans ROOT with a source,
checks every file and writes a manifest; masks that need conversion (inverted, colour edge maps, 3-level,
``.npz``, 0/1, size fixes) are written as 0/255 PNGs into ``<manifest stem>_masks/`` next to the manifest.

>>> from webiml.data.sources import get_source, index_source
>>> result = index_source("casia2", "/data/CASIA2", "data/manifests/casia2.jsonl", workers=8)  # doctest: +SKIP
>>> print(result.summary())  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from webiml.data.sources.base import DECODERS, Candidate, Source
from webiml.data.sources.benco import BenCoJSONSource
from webiml.data.sources.casia1 import CASIA1PlusSource, CASIA1Source
from webiml.data.sources.casia2 import CASIA2Source
from webiml.data.sources.cocoglide import CocoGlideSource
from webiml.data.sources.columbia import ColumbiaSource
from webiml.data.sources.compraise import CompRAISESource
from webiml.data.sources.coverage import CoverageSource
from webiml.data.sources.defacto import DefactoSource
from webiml.data.sources.dso1 import DSO1Source
from webiml.data.sources.fantastic_reality import FantasticRealitySource
from webiml.data.sources.folder import FolderSource
from webiml.data.sources.imd2020 import IMD2020Source
from webiml.data.sources.in_the_wild import InTheWildSource
from webiml.data.sources.indexing import IndexingFailed, IndexResult, Problem, index_source
from webiml.data.sources.korus import KorusSource
from webiml.data.sources.miml import MIMLSource
from webiml.data.sources.mimlv2 import MIMLv2Source
from webiml.data.sources.nist16 import NIST16Source
from webiml.data.sources.tampcoco import TampCOCOSource

SOURCES: dict[str, Source] = {
    cls.name: cls()
    for cls in (
        MIMLSource, MIMLv2Source, CASIA1Source, CASIA1PlusSource, CASIA2Source, ColumbiaSource, CoverageSource,
        NIST16Source, IMD2020Source, DSO1Source, KorusSource, InTheWildSource, CocoGlideSource, TampCOCOSource,
        CompRAISESource, FantasticRealitySource, DefactoSource, FolderSource, BenCoJSONSource,
    )
}
"""Every source by name, default-configured. :func:`get_source` makes configured ones."""

ALIASES = {"casia-v1": "casia1", "casiav1": "casia1", "casia-v2": "casia2", "casiav2": "casia2", "imd20": "imd2020",
           "nist": "nist16", "dso-1": "dso1", "carvalho": "dso1", "realistic-tampering": "korus", "fr": "fantasticreality",
           "tp-gt": "folder", "generic": "folder", "imdl-benco": "benco", "wild": "in-the-wild", "miml-v2": "mimlv2"}


def get_source(name: str, **options: Any) -> Source:
    """The source called ``name`` (aliases accepted), configured with ``options`` (see its ``options``)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in SOURCES:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(sorted(SOURCES))}")
    source = SOURCES[key]
    return type(source)(**options) if options else type(source)()


__all__ = ["DECODERS", "SOURCES", "Candidate", "IndexResult", "IndexingFailed", "Problem", "Source", "get_source",
           "index_source"]
