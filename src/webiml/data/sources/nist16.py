"""NIST Nimble 2016 (NC2016_Test0613), manipulation task.

As distributed::

    NC2016_Test0613/                               ROOT
      probe/NC2016_0048.jpg ...                    probe images
      world/ ...                                   donor images (not used)
      reference/manipulation/NC2016-manipulation-ref.csv
      reference/manipulation/mask/NC2016_0048.png  masks, INVERTED: 0 (black) = manipulated, 255 = untouched
      reference/{splice,removal,clone}/...         other tasks (option ``task``)

The reference CSV is pipe-separated (``|``) with a header; the columns used are ``ProbeFileName``,
``ProbeMaskFileName`` (paths relative to ROOT) and ``IsTarget`` (``Y`` manipulated, ``N`` authentic).
Masks are inverted into the project convention (converted PNGs in the cache folder). A probe listed twice
is indexed once.

Options: ``task`` (manipulation | splice | removal | clone), ``csv`` (explicit reference CSV).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source


class NIST16Source(Source):
    name = "nist16"
    title = "NIST16 (NC2016): reference CSV (|-separated), inverted masks"
    masks = "inverted (0 = manipulated on disk), converted"
    options = {"task": "reference task: manipulation (default), splice, removal, clone",
               "csv": "explicit path of the reference CSV"}

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        task = str(self.option("task", "manipulation"))
        ref = Path(self.option("csv")) if self.option("csv") else root / "reference" / task / f"NC2016-{task}-ref.csv"
        if not ref.is_file():
            found = sorted(root.glob(f"**/*{task}-ref.csv"))
            if not found:
                raise FileNotFoundError(f"{root}: reference CSV {ref.relative_to(root) if ref.is_relative_to(root) else ref} not found")
            ref = found[0]
        base = ref.parents[2] if ref.parent.parent.name == "reference" else root
        seen: set[str] = set()
        with ref.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="|")
            missing = {"ProbeFileName", "IsTarget"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{ref}: missing column(s) {sorted(missing)}; header is {reader.fieldnames}")
            for row in reader:
                probe = (row.get("ProbeFileName") or "").strip()
                if not probe or probe in seen:
                    continue
                seen.add(probe)
                target = (row.get("IsTarget") or "").strip().upper() in ("Y", "YES", "1", "TRUE")
                mask = (row.get("ProbeMaskFileName") or "").strip()
                image = str(base / probe)
                if target:
                    yield Candidate(image, str(base / mask) if mask else None, 1, self.name, "inverted")
                else:
                    yield Candidate(image, None, 0, self.name)
