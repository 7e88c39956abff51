"""Korus "Realistic Tampering Dataset" (Korus & Huang, 2016/2017).

As distributed (the flat layout, or one such folder per camera: ``Canon_60D/``, ``Nikon_D90/``,
``Nikon_D7000/``, ``Sony_A57/``)::

    realistic-tampering-dataset/      ROOT
      tampered-realistic/*.TIF        220 forgeries, 1920x1080
      ground-truth/*.PNG              3-level maps: black = authentic, white = important semantic change,
                                      grey = "collateral damage" (pixels changed by blending or background
                                      adjustment that still show the same content)
      pristine/*.TIF                  220 originals

Mapping: white -> manipulated. The grey level is also a *changed* level, and by default it is treated as
manipulated too (every pixel that differs from the original is manipulated: ``collateral=manipulated``,
the usual choice of evaluation code); ``collateral=ignore`` leaves grey pixels unscored (value 128 with the
ignore band [127, 129]) and ``collateral=authentic`` scores them as authentic. Masks are converted.

Options: ``collateral`` (manipulated | ignore | authentic), ``authentic`` (default true).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import (
    Candidate,
    Reporter,
    Source,
    find_dirs,
    list_files,
    pair_by_key,
    tampered_candidates,
)


class KorusSource(Source):
    name = "korus"
    title = "Korus realistic tampering: tampered-realistic/*.TIF + ground-truth/*.PNG (3 levels)"
    masks = "3-level map: white (and by default grey) -> manipulated, converted"
    options = {"collateral": "grey 'collateral damage' level: manipulated (default), ignore or authentic",
               "authentic": "index pristine/ (default true)"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        collateral = str(self.option("collateral", "manipulated"))
        if collateral not in ("manipulated", "ignore", "authentic"):
            raise ValueError(f"korus: collateral must be manipulated, ignore or authentic, got {collateral!r}")
        band = (127, 129) if collateral == "ignore" else None
        tampered_dirs = find_dirs(root, "tampered-realistic", depth=2)
        if not tampered_dirs:
            raise FileNotFoundError(f"{root}: no tampered-realistic/ folder")
        for tp in tampered_dirs:
            gt = tp.parent / "ground-truth"
            masks = list_files(gt, recursive=False) if gt.is_dir() else []
            pairs = pair_by_key(list_files(tp, recursive=False), masks, report)
            yield from tampered_candidates(pairs, self.name, "levels3", decoder_args=(("collateral", collateral),),
                                           ignore_band=band)
            pristine = tp.parent / "pristine"
            if self.flag("authentic", True) and pristine.is_dir():
                for p in list_files(pristine, recursive=False):
                    yield Candidate(str(p), None, 0, self.name)
