"""A generic folder source: manipulated images, masks paired by FILE STEM, optional authentic images.

Layout::

    ROOT/
      Tp/<stem>.<ext>            manipulated images (also: tampered/, tamper/, fake/, forged/, manipulated/)
      Gt/<stem>[_gt|_mask].png   masks, 255 = manipulated (also: mask/, masks/, groundtruth/, gt/)
      Au/<name>.<ext>            optional authentic images (also: authentic/, original/, real/, pristine/)

Masks are paired with images by stem, ignoring case and the suffixes ``_gt``, ``-gt``, ``_mask``,
``-mask``, ``_groundtruth`` (so ``a.jpg`` pairs with ``a_gt.png``); never by sort order. Sub-folders are
scanned recursively. This reads the shared real sets (``casia1-samples``, ``noso``: ``tampered/``,
``mask/``, ``original/``) and the IMDL-BenCo ``Tp/`` + ``Gt/`` folder format.

The source name defaults to the ROOT folder's name (``--name`` overrides it).

Options: ``tampered``, ``masks``, ``authentic`` (folder names relative to ROOT; ``authentic=none`` skips
authentic images), ``invert`` (masks are inverted on disk, default false).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, find_dir, require_dir, sanitize_name, scan_paired

TAMPERED = ("tp", "tampered", "tamper", "fake", "forged", "manipulated", "tampered_images")
MASKS = ("gt", "mask", "masks", "groundtruth", "ground_truth", "ground-truth", "gts")
AUTHENTIC = ("au", "authentic", "original", "originals", "real", "pristine")


class FolderSource(Source):
    name = "folder"
    title = "generic Tp/ + Gt/ (+ Au/) folders paired by file stem"
    options = {"tampered": "folder of manipulated images (default: Tp/, tampered/, ...)",
               "masks": "folder of masks (default: Gt/, mask/, ...)",
               "authentic": "folder of authentic images (default: Au/, original/, ...; 'none' to skip)",
               "invert": "masks are inverted on disk (0 = manipulated), default false"}

    def _dir(self, root: Path, key: str, names: tuple[str, ...], required: bool) -> Path | None:
        value = self.option(key)
        if value is not None:
            if str(value).lower() == "none":
                return None
            path = root / str(value)
            if not path.is_dir():
                raise FileNotFoundError(f"{path}: no such folder (option {key})")
            return path
        if required:
            return require_dir(root, key, *names, depth=1)
        return find_dir(root, *names, depth=1)

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        name = sanitize_name(root.name)
        tampered = self._dir(root, "tampered", TAMPERED, True)
        masks = self._dir(root, "masks", MASKS, True)
        authentic = self._dir(root, "authentic", AUTHENTIC, False)
        decoder = "inverted" if self.flag("invert", False) else "plain"
        yield from scan_paired(name, tampered, masks, authentic, report, decoder=decoder)  # type: ignore[arg-type]
