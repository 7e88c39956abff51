"""MIMLv2: the web-scale auto-annotated set (246,212 images) produced by CAAAv2 + QES.

Assumed layout (same convention as MIML v1; one folder or several parts)::

    MIMLv2/                   ROOT
      imgs/<name>.jpg         (or MIMLv2_Part<N>/imgs/..., or any sub-folders holding imgs/ + masks/)
      masks/<name>.png        soft 8-bit masks, 255 = manipulated, 8..192 uncertain
      qes.csv                 optional: columns ``image`` (or ``name``/``file``) and ``qes``
                              (``qes.json`` {name: qes} and ``*.jsonl`` rows are read too)

Masks are kept as they are, with ``ignore_band: [7, 193]``. When a QES file is present, every record gets
an extra ``qes`` key; ``min_qes`` drops annotations at or below a score (the authors keep QES > 0.5 and
train on the kept ones alike). Option ``qes_weight`` (webiml's own, default off) also sets ``weight = qes``
clipped to [0, 1], so that better-annotated samples weigh more in the loss.

Options: ``band``, ``qes_weight`` (true/false), ``min_qes`` (float), ``qes_file`` (explicit path).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from webiml.data.masks import WEB_LABELS
from webiml.data.sources.base import Candidate, Reporter, Source, find_dirs, stem_key
from webiml.data.sources.miml import parse_band, scan_imgs_masks


def read_qes(path: Path) -> dict[str, float]:
    """``{stem key: qes}`` from a CSV (comma, semicolon, tab or pipe), a JSON object/list, or JSON lines."""
    text = path.read_text(encoding="utf-8")
    rows: list[dict] = []
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return {stem_key(k): float(v) for k, v in data.items()}
        rows = list(data)
    elif path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
        rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    out: dict[str, float] = {}
    for row in rows:
        low = {str(k).strip().lower(): v for k, v in row.items()}
        name = next((low[k] for k in ("image", "name", "file", "filename", "img") if low.get(k)), None)
        score = low.get("qes", low.get("score"))
        if name is None or score in (None, ""):
            continue
        out[stem_key(str(name))] = float(score)
    return out


class MIMLv2Source(Source):
    name = "mimlv2"
    title = "MIMLv2 (web-scale CAAAv2 annotations), soft labels + optional QES weights"
    masks = "soft 0..255 kept as is; ignore band [7, 193]; weight from QES only with qes_weight=true (webiml's option)"
    options = {"band": "ignore band 'low,high' (default 7,193) or 'none'",
               "qes_weight": "webiml's option: weight = QES when a QES file exists (default false: every kept sample weighs 1, as the authors)",
               "min_qes": "drop annotations with QES <= this value",
               "qes_file": "path of the QES file (default: qes.csv/qes.json/*qes*.jsonl under ROOT)"}

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.notes: list[str] = []

    def _qes_file(self, root: Path) -> Path | None:
        if self.option("qes_file"):
            return Path(self.option("qes_file"))
        files = sorted(p for p in root.iterdir() if p.is_file() and "qes" in p.name.lower()
                       and p.suffix.lower() in (".csv", ".json", ".jsonl", ".tsv", ".txt"))
        return files[0] if files else None

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        self.notes = []
        band = parse_band(self.option("band"), tuple(WEB_LABELS))
        folders = list(dict.fromkeys(d.parent for d in find_dirs(root, "imgs", "images", depth=3)))
        if not folders:
            raise FileNotFoundError(f"{root}: no imgs/ folder")
        qes_path = self._qes_file(root)
        qes = read_qes(qes_path) if qes_path else {}
        use_weight = self.flag("qes_weight", False)
        min_qes = float(self.option("min_qes")) if self.option("min_qes") not in (None, "") else None
        dropped = 0
        for folder in folders:
            for c in scan_imgs_masks(folder, "mimlv2", report, ignore_band=band):
                score = qes.get(stem_key(c.image))
                if score is None:
                    yield c
                    continue
                if min_qes is not None and score <= min_qes:
                    dropped += 1
                    continue
                weight = min(1.0, max(0.0, score)) if use_weight else 1.0
                yield replace(c, weight=weight, extra={**c.extra, "qes": score})
        if qes_path:
            self.notes.append(f"QES from {qes_path.name}: {len(qes)} scores" + (f", {dropped} annotations with QES <= {min_qes} dropped" if min_qes is not None else ""))
