"""The output folder of ``webiml annotate``: the per-pair writer, the shards, resume and the final merge.

:class:`AnnotationWriter` (a ``BasePredictionWriter``) writes, per pair, the soft mask PNG (atomic), its
contact-sheet thumbnails (atomic), then appends the pair's record to its rank's shard
``shards/shard-<rank>.jsonl`` (:class:`ShardFile`: flushed and fsync'ed, a partial last line cut off on
open). The record is written last, so a record in a shard means the pair's files are complete.
:func:`load_done` reads the shards back (resume); :func:`finalize` merges them into ``annotations.jsonl``,
``manifest.jsonl``, ``summary.json`` and the contact sheet ``index.html``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from webiml.annotate.pair_sources import PairSpec
from webiml.annotate.qes import QESConfig
from webiml.io import ImageReadError, atomic_write_text, read_image, save_image

log = logging.getLogger("webiml.annotate")

__all__ = ["AnnotationSummary", "AnnotationWriter", "ShardFile", "finalize", "load_done", "read_shards", "thumb_paths", "write_thumbs"]

THUMB_SIDE = 256


def _thumb(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    f = min(1.0, side / max(h, w))
    if f >= 1.0:
        return image
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def thumb_paths(pair_id: str) -> dict[str, str]:
    return {k: f"thumbs/{pair_id}.{k}.jpg" for k in ("original", "forged", "mask")}


def write_thumbs(out: Path, pair_id: str, original: np.ndarray, forged: np.ndarray, mask8: np.ndarray) -> None:
    from webiml.viz import colorize

    paths = thumb_paths(pair_id)
    save_image(out / paths["original"], _thumb(original), quality=85)
    save_image(out / paths["forged"], _thumb(forged), quality=85)
    save_image(out / paths["mask"], colorize(_thumb(mask8).astype(np.float32) / 255.0), quality=90)


class ShardFile:
    """An append-only JSON Lines file: each record is flushed and fsync'ed; on open, a partial last
    line left by a killed writer is cut off."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._cut_partial_line(path)
        self._fh = path.open("ab")

    @staticmethod
    def _cut_partial_line(path: Path, chunk: int = 1 << 16) -> None:
        with path.open("r+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            if end == 0:
                return
            fh.seek(end - 1)
            if fh.read(1) == b"\n":
                return
            pos = end
            while pos > 0:  # scan back for the last complete line
                start = max(0, pos - chunk)
                fh.seek(start)
                i = fh.read(pos - start).rfind(b"\n")
                if i >= 0:
                    pos = start + i + 1
                    break
                pos = start
            fh.truncate(pos)
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, record: dict[str, Any]) -> None:
        self._fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class AnnotationWriter(BasePredictionWriter):
    """Writes each pair as soon as it is annotated: mask PNG, thumbnails, then its shard record.

    Args:
        out: output folder.
        specs: the pairs of the prediction dataset (indexed by the items' ``index``).
        report_ids: pairs that get contact-sheet thumbnails.
        log_every_s: seconds between throughput log lines.
    """

    def __init__(self, out: str | os.PathLike[str], specs: Sequence[PairSpec], report_ids: set[str] | None = None,
                 log_every_s: float = 30.0) -> None:
        super().__init__(write_interval="batch")
        self.out = Path(out)
        self.specs = list(specs)
        self.report_ids = set(report_ids or ())
        self.log_every_s = float(log_every_s)
        self.shard: ShardFile | None = None
        self.counts: Counter[str] = Counter()
        self._start = self._last_log = 0.0

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.shard = ShardFile(self.out / "shards" / f"shard-{trainer.global_rank}.jsonl")
        self._start = self._last_log = time.perf_counter()

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        assert self.shard is not None
        items = {int(b["index"]): b for b in batch}
        for res in prediction:
            spec = self.specs[res["index"]]
            record: dict[str, Any] = {"pair_id": spec.pair_id, "original": spec.original, "forged": spec.forged,
                                      "status": res["status"]}
            if res["status"] == "ok":
                mask_rel = f"masks/{spec.pair_id}.png"
                save_image(self.out / mask_rel, res["mask"])
                if spec.pair_id in self.report_ids:
                    item = items[res["index"]]
                    try:
                        write_thumbs(self.out, spec.pair_id, item["original"].permute(1, 2, 0).cpu().numpy(),
                                     item["forged"].permute(1, 2, 0).cpu().numpy(), res["mask"])
                    except (OSError, ValueError) as err:
                        log.warning("%s: could not write thumbnails: %s", spec.pair_id, err)
                record.update({
                    "mask": mask_rel, "qes": float(res["qes"]), "category": res["category"],
                    "class_prob": round(float(res["class_prob"]), 6), "aligned": res["aligned"],
                    "align_method": res["align_method"], "height": res["height"], "width": res["width"],
                    "agreement": None if res.get("agreement") is None else round(float(res["agreement"]), 6),
                    "category_source": res.get("category_source"),
                })
                self.counts["ok"] += 1
            else:
                record["error"] = res["error"]
                self.counts["failed"] += 1
                log.warning("skipped pair %s: %s", spec.pair_id, res["error"])
            self.shard.append(record)
        now = time.perf_counter()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            done = self.counts["ok"] + self.counts["failed"]
            log.info("rank %d: %d pairs annotated, %.2f pairs/s", trainer.global_rank, done, done / max(now - self._start, 1e-9))

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        if self.shard is not None:
            self.shard.close()
        el = time.perf_counter() - self._start
        done = self.counts["ok"] + self.counts["failed"]
        log.info("rank %d: %d pairs annotated (%d failed) in %.1fs, %.2f pairs/s", trainer.global_rank, done,
                 self.counts["failed"], el, done / max(el, 1e-9))



# --------------------------------------------------------------------------------------------------
# resume and merge


def read_shards(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of ``OUT/shards/shard-*.jsonl`` in file order (unparsable lines, e.g. a partial last
    line of a killed writer, are skipped)."""
    records = []
    for shard in sorted((Path(out) / "shards").glob("shard-*.jsonl")):
        with shard.open("rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    continue  # a partial line: its pair was not finished
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(rec, dict) and "pair_id" in rec:
                    records.append(rec)
    return records


def load_done(
    out: str | os.PathLike[str], specs: Sequence[PairSpec] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``(done, failed)``: the latest successful record of every pair whose mask exists, and the latest
    failure of pairs never annotated successfully. With ``specs``, records whose image paths differ
    from the pair of the same id (the input changed) are ignored."""
    out = Path(out)
    wanted = None if specs is None else {s.pair_id: (s.original, s.forged) for s in specs}
    done: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for rec in read_shards(out):
        pid = rec["pair_id"]
        if wanted is not None and wanted.get(pid) != (rec.get("original"), rec.get("forged")):
            continue
        if rec.get("status") == "ok" and rec.get("mask") and (out / rec["mask"]).is_file():
            done[pid] = rec
            failed.pop(pid, None)
        elif rec.get("status") != "ok" and pid not in done:
            failed[pid] = rec
    return done, failed


@dataclass
class AnnotationSummary:
    """What a run produced (also written to ``summary.json``)."""

    out: str
    pairs: int
    annotated: int
    kept: int
    dropped: int
    failed: int
    new: int
    resumed: int
    seconds: float
    qes_threshold: float
    categories: dict[str, int] = field(default_factory=dict)
    kept_categories: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def pairs_per_second(self) -> float:
        return self.new / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["pairs_per_second"] = round(self.pairs_per_second, 4)
        d["seconds"] = round(self.seconds, 3)
        return d

    def text(self) -> str:
        cats = ", ".join(f"{k} {v}" for k, v in sorted(self.categories.items())) or "none"
        kcats = ", ".join(f"{k} {v}" for k, v in sorted(self.kept_categories.items())) or "none"
        lines = [
            f"annotated {self.annotated}/{self.pairs} pairs ({self.new} this run, {self.resumed} resumed) in {self.seconds:.1f}s"
            f" = {self.pairs_per_second:.2f} pairs/s",
            f"kept {self.kept}, dropped {self.dropped} (QES <= {self.qes_threshold:g}); categories: {cats}; kept: {kcats}",
            f"failed {self.failed}" + ("" if not self.failures else ":"),
        ]
        lines += [f"  {f['pair_id']}: {f['error']}" for f in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more (annotations.jsonl)")
        lines.append(f"results in {self.out}/ (manifest.jsonl, annotations.jsonl, masks/, index.html)")
        return "\n".join(lines)


def finalize(
    out: str | os.PathLike[str],
    specs: Sequence[PairSpec],
    qes_config: QESConfig | None = None,
    *,
    ignore_band: tuple[int, int] = (7, 193),
    qes_weight: bool = False,
    source: str = "annotated",
    report_limit: int = 200,
    new: int = 0,
    seconds: float = 0.0,
) -> AnnotationSummary:
    """Merge the shards of ``out`` into ``annotations.jsonl``, ``manifest.jsonl``, ``summary.json`` and
    ``index.html`` (atomically). Deterministic: the outputs depend only on the records, in input order."""
    from webiml.data.manifest import ManifestRecord, write_manifest
    from webiml.data.masks import IgnoreBand

    out = Path(out)
    qes_config = qes_config or QESConfig()
    done, failed = load_done(out, specs)
    for folder in ("masks", "thumbs"):  # temporary files of writers killed mid-write
        for tmp in (out / folder).glob(".*.tmp") if (out / folder).is_dir() else ():
            tmp.unlink(missing_ok=True)
    band = IgnoreBand(int(ignore_band[0]), int(ignore_band[1]))
    rows, manifest, failures = [], [], []
    cats: Counter[str] = Counter()
    kept_cats: Counter[str] = Counter()
    n_kept = 0
    for spec in specs:
        rec = done.get(spec.pair_id)
        if rec is not None:
            q = float(rec["qes"])
            kept = bool(q > qes_config.threshold)
            row = {"pair_id": spec.pair_id, "original": spec.original, "forged": spec.forged, "status": "ok",
                   "mask": rec["mask"], "category": rec.get("category"), "class_prob": rec.get("class_prob"),
                   "aligned": rec.get("aligned"), "align_method": rec.get("align_method"), "agreement": rec.get("agreement"),
                   "category_source": rec.get("category_source"), "qes": q, "kept": kept,
                   "height": rec.get("height"), "width": rec.get("width")}
            cats[str(rec.get("category"))] += 1
            if kept:
                n_kept += 1
                kept_cats[str(rec.get("category"))] += 1
                manifest.append(ManifestRecord(
                    image=spec.forged, mask=str(out / rec["mask"]), label=1, source=source,
                    weight=q if qes_weight else 1.0, ignore_band=band,
                    extra={"category": rec.get("category"), "qes": q, "pair_id": spec.pair_id},
                ))
        else:
            err = failed.get(spec.pair_id, {}).get("error", "not annotated (the run did not reach this pair)")
            row = {"pair_id": spec.pair_id, "original": spec.original, "forged": spec.forged, "status": "failed", "error": err}
            failures.append({"pair_id": spec.pair_id, "error": err})
        rows.append(row)
    atomic_write_text(out / "annotations.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_manifest(out / "manifest.jsonl", manifest)
    annotated = len(rows) - len(failures)
    summary = AnnotationSummary(
        out=str(out), pairs=len(specs), annotated=annotated, kept=n_kept, dropped=annotated - n_kept,
        failed=len(failures), new=int(new), resumed=max(0, annotated - int(new)), seconds=float(seconds),
        qes_threshold=qes_config.threshold, categories=dict(sorted(cats.items())),
        kept_categories=dict(sorted(kept_cats.items())), failures=failures,
    )
    atomic_write_text(out / "summary.json", json.dumps(summary.to_json(), indent=2))
    if report_limit > 0:
        _write_contact_sheet(out, rows[:report_limit], summary)
    return summary


_CONTACT_SHEET = """{% extends "base.html" %}
{% block style %}table.sheet td{text-align:center;vertical-align:top}table.sheet td.f{text-align:left;white-space:nowrap;font-size:0.9em}
table.sheet img{max-width:256px;max-height:256px;border:1px solid #ccc}{% endblock %}
{% block body %}
<p class="thresholds">{{ summary.pairs }} pairs: {{ summary.kept }} kept, {{ summary.dropped }} dropped
(QES threshold <b>{{ "%g"|format(summary.qes_threshold) }}</b>: kept when the QES is above it), {{ summary.failed }} failed.
Showing the first {{ rows|length }}.</p>
<p>Mask colours (soft mask values):<br><img class="colour-bar" src="{{ colour_bar }}" alt="colour bar"></p>
<table class="sheet">
{% for row in rows %}<tr><td class="f"><b>{{ row.pair_id }}</b><br>{% for key, value in row.fields %}{{ key }}: {{ value }}<br>{% endfor %}</td>
{% for caption, src in row.images %}<td><img src="{{ src }}" alt="{{ caption }}"><br>{{ caption }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endblock %}
"""


def _write_contact_sheet(out: Path, rows: list[dict[str, Any]], summary: AnnotationSummary) -> None:
    """``index.html``: per pair its thumbnails (original, forgery, coloured mask) and QES / kept / category /
    alignment / size, or the error of a failed pair (jinja2, autoescaped, :mod:`webiml.reports`' page frame)."""
    from webiml.io import read_mask
    from webiml.reports import colour_bar_figure, render_page

    sheet = []
    for row in rows:
        pid = row["pair_id"]
        if row["status"] != "ok":
            sheet.append({"pair_id": pid, "images": [], "fields": [("status", "failed"), ("error", str(row.get("error", ""))[:200])]})
            continue
        paths = thumb_paths(pid)
        if not all((out / p).is_file() for p in paths.values()):
            try:  # e.g. the report limit grew between runs: make the missing thumbnails from the files
                write_thumbs(out, pid, read_image(row["original"]), read_image(row["forged"]), read_mask(out / row["mask"]))
            except (ImageReadError, OSError, ValueError) as err:
                log.warning("%s: no thumbnails: %s", pid, err)
        sheet.append({"pair_id": pid, "images": [("original", paths["original"]), ("forgery", paths["forged"]), ("mask", paths["mask"])],
                      "fields": [
            ("QES", f"{row['qes']:.3f}"), ("kept", "yes" if row["kept"] else "no"),
            ("category", str(row["category"]) + (f" (by {row['category_source']})" if row.get("category_source") else "")),
            ("alignment", str(row.get("align_method"))
             + (f", agreement {row['agreement']:.2f}" if row.get("agreement") is not None else "")),
            ("size", f"{row['width']}x{row['height']}")]})
    colour_bar = colour_bar_figure(out / "colour_bar.png", label="mask value (0 authentic, 1 manipulated)")
    render_page(out / "index.html", _CONTACT_SHEET, title="webiml annotate: contact sheet", rows=sheet, summary=summary,
                colour_bar=colour_bar)
