"""The IMDL-BenCo JSON list format, for interoperability.

Layout: ROOT is a JSON file holding a list of ``[image_path, mask_path]`` pairs; ``mask_path`` is the
string ``"Negative"`` for an authentic image::

    [
      ["/data/CASIA1/Tp/Sp_D_xxx.jpg", "/data/CASIA1/Gt/Sp_D_xxx_gt.png"],
      ["/data/CASIA1/Au/Au_ani_0001.jpg", "Negative"]
    ]

Relative paths are resolved against the JSON file's folder. Masks are plain (255 = manipulated). The
source name defaults to the JSON file's stem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from webiml.data.sources.base import Candidate, Reporter, Source, sanitize_name


class BenCoJSONSource(Source):
    name = "benco"
    title = "IMDL-BenCo JSON list [[image, mask | 'Negative'], ...]"

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        if root.is_dir():
            raise ValueError(f"{root}: the benco source reads a JSON file, not a folder")
        try:
            data = json.loads(root.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{root}: invalid JSON ({err})") from None
        if not isinstance(data, list):
            raise ValueError(f"{root}: expected a list of [image, mask] pairs, got {type(data).__name__}")
        name = sanitize_name(root.stem)

        def resolve(p: str) -> str:
            return p if os.path.isabs(p) else str(root.parent / p)

        for i, item in enumerate(data):
            if not (isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(v, str) for v in item)):
                report("bad_entry", f"{root}[{i}]", f"expected [image, mask], got {item!r:.80}")
                continue
            image, mask = item
            if mask.strip().lower() == "negative":
                yield Candidate(resolve(image), None, 0, name)
            else:
                yield Candidate(resolve(image), resolve(mask), 1, name)
