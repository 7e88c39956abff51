"""Annotation of (original, forged) pairs at scale: pairs in, soft masks + QES + a training manifest out.

:func:`annotate_pairs` (``webiml annotate``) runs any annotator with the interface of
:meth:`webiml.annotate.caaa.CAAAv2Annotator.annotate` (CAAAv2, or the naive
:class:`~webiml.annotate.baseline.DifferenceAnnotator`) through Lightning prediction:

- :class:`PairFolderDataset` decodes pairs in DataLoader workers (an unreadable pair becomes an error
  item, reported and skipped, never fatal);
- :class:`AnnotationTask` (a small LightningModule) annotates each pair and scores its soft mask with QES;
- :class:`AnnotationWriter` (a ``BasePredictionWriter``) writes, per pair, the soft mask PNG (atomic), its
  contact-sheet thumbnails (atomic), then appends the pair's record to its rank's shard
  ``shards/shard-<rank>.jsonl`` (flushed and fsync'ed). The record is written last, so a record in a
  shard means the pair's files are complete.

``Trainer(strategy="ddp", devices=N, num_nodes=M)`` spreads the pairs over ranks (Lightning's
unrepeated distributed sampler); every rank writes only its own shard. At the end global rank 0 merges
the shards into ``annotations.jsonl`` (every pair, kept, dropped or failed, in input order),
``manifest.jsonl`` (the kept pairs, ready for ``webiml fit``), ``summary.json`` and the contact sheet
``index.html``; all written atomically.

Resume: a run restarted with the same command reads the shards first and skips every pair whose record
and mask exist; a partial last line (a kill during an append) is ignored and cut off. Failed pairs are
retried. ``run.json`` records the settings that change the masks (annotator, weights, QES thresholds):
a restart with other settings is refused. The keep threshold only acts at the merge, so re-running with
another ``--qes-threshold`` re-merges without annotating anything.

Output folder::

    OUT/masks/<pair_id>.png          soft mask, 8-bit (0 authentic .. 255 manipulated), forgery's size
    OUT/thumbs/<pair_id>.*.jpg       thumbnails of the first ``report_limit`` pairs
    OUT/shards/shard-<rank>.jsonl    per-rank append-only records
    OUT/annotations.jsonl            all pairs: category, QES, kept, status, error
    OUT/manifest.jsonl               kept pairs as a webiml manifest
    OUT/summary.json, OUT/run.json, OUT/index.html

Pair sources (:func:`discover_pairs`): a folder of pair folders (each holding ``original.*`` and
``forged.*``, or the MIML authors' ``0.*`` = original and ``1.*`` = forged; nested folders are searched),
a CSV with columns ``original,forged[,id]`` or a JSON Lines file with keys ``original``, ``forged`` and
optionally ``id`` (paths relative to the file).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, Dataset

from webiml.annotate.qes import QESConfig, qes
from webiml.io import ImageReadError, atomic_write_text, read_image, save_image

log = logging.getLogger("webiml.annotate")

__all__ = [
    "AnnotationSummary",
    "AnnotationTask",
    "AnnotationWriter",
    "PairFolderDataset",
    "PairSourceError",
    "PairSpec",
    "annotate_pairs",
    "build_annotator",
    "discover_pairs",
    "finalize",
    "load_done",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
ORIGINAL_STEMS = ("original", "0")
FORGED_STEMS = ("forged", "1")
THUMB_SIDE = 256


class PairSourceError(ValueError):
    """The pair source (folder, CSV, JSON Lines) cannot be read; the message says why."""


@dataclass(frozen=True)
class PairSpec:
    """One pair to annotate: a file-name-safe unique id and the two image paths (absolute)."""

    pair_id: str
    original: str
    forged: str


# --------------------------------------------------------------------------------------------------
# pair discovery


def _safe_id(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return s or "pair"


def _unique(ids: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for i in ids:
        cand, n = i, 1
        while cand in seen:
            cand = f"{i}-{n}"
            n += 1
        seen.add(cand)
        out.append(cand)
    return out


def _pair_files(folder: Path) -> tuple[Path | None, Path | None, bool]:
    """(original, forged, is_pair_folder) of a folder by file stem."""
    by_stem: dict[str, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return None, None, False
    for f in entries:
        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
            by_stem.setdefault(f.stem.lower(), f)
    orig = next((by_stem[s] for s in ORIGINAL_STEMS if s in by_stem), None)
    forged = next((by_stem[s] for s in FORGED_STEMS if s in by_stem), None)
    return orig, forged, orig is not None or forged is not None


def _missing(folder: Path, what: str) -> str:
    return str(folder / f"<missing {what}>")


def _from_folder(root: Path) -> list[PairSpec]:
    found: list[tuple[str, str, str]] = []
    orig, forged, is_pair = _pair_files(root)
    if is_pair:
        found.append((root.name, str(orig or _missing(root, "original")), str(forged or _missing(root, "forged"))))
    else:
        for dirpath, dirnames, _ in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            if here == root:
                continue
            orig, forged, is_pair = _pair_files(here)
            if is_pair:
                dirnames.clear()  # a pair folder is a leaf
                rel = here.relative_to(root).as_posix().replace("/", "__")
                found.append((rel, str(orig or _missing(here, "original")), str(forged or _missing(here, "forged"))))
    ids = _unique([_safe_id(f[0]) for f in found])
    return [PairSpec(i, o, f) for i, (_, o, f) in zip(ids, found, strict=True)]


def _rows_to_specs(rows: list[dict[str, Any]], base: Path, where: str) -> list[PairSpec]:
    raw = []
    for n, row in enumerate(rows, start=1):
        o, f = row.get("original"), row.get("forged")
        if not o or not f:
            raise PairSourceError(f"{where}: row {n} needs 'original' and 'forged' paths")
        o, f = str(o).strip(), str(f).strip()
        o = o if os.path.isabs(o) else str(base / o)
        f = f if os.path.isabs(f) else str(base / f)
        rid = row.get("id") or row.get("pair_id") or Path(f).stem
        raw.append((_safe_id(str(rid)), o, f))
    ids = _unique([r[0] for r in raw])
    return [PairSpec(i, o, f) for i, (_, o, f) in zip(ids, raw, strict=True)]


def discover_pairs(source: str | os.PathLike[str]) -> list[PairSpec]:
    """Pairs from a folder of pair folders, a CSV (``original,forged[,id]``) or a JSON Lines file.

    Ids are made file-name safe and unique (a suffix ``-1``, ``-2`` ... on collisions). A pair folder
    with only one of its two images is returned too (its missing file is named ``<missing ...>``), so
    it is reported as a failed pair.
    """
    src = Path(source).absolute()
    if src.is_dir():
        return _from_folder(src)
    if not src.is_file():
        raise PairSourceError(f"{src}: no such folder or file")
    suffix = src.suffix.lower()
    if suffix == ".csv":
        with src.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or ())
            if not {"original", "forged"} <= fields:
                raise PairSourceError(f"{src}: a pair CSV needs the columns original,forged[,id]; found {sorted(fields)}")
            rows = list(reader)
        return _rows_to_specs(rows, src.parent, str(src))
    if suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise PairSourceError(f"{src}:{n}: invalid JSON ({err.msg})") from None
        return _rows_to_specs(rows, src.parent, str(src))
    raise PairSourceError(f"{src}: expected a folder of pair folders, a .csv or a .jsonl file")


# --------------------------------------------------------------------------------------------------
# data


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous()


class PairFolderDataset(Dataset):
    """Decodes pairs (in DataLoader workers). Never raises on bad files: the item carries the error."""

    def __init__(self, specs: Sequence[PairSpec]) -> None:
        self.specs = list(specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        spec = self.specs[index]
        item: dict[str, Any] = {"index": index, "pair_id": spec.pair_id, "original": None, "forged": None, "error": None}
        try:
            item["original"] = _chw(read_image(spec.original))
            item["forged"] = _chw(read_image(spec.forged))
        except (ImageReadError, OSError, ValueError) as err:
            item["original"] = item["forged"] = None
            item["error"] = str(err)
        return item


def collate_pairs(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs have different sizes: a batch is the list of items."""
    return batch


# --------------------------------------------------------------------------------------------------
# annotators


def build_annotator(name: str, checkpoint: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """An annotator by name: ``"baseline"`` (:class:`~webiml.annotate.baseline.DifferenceAnnotator`, ``kwargs``
    to its constructor) or ``"caaa"`` (:class:`~webiml.annotate.caaa.CAAAv2Annotator` from a checkpoint folder
    of saved parts, see :func:`~webiml.annotate.caaa.find_parts`; random weights with a warning when ``checkpoint`` is None)."""
    name = name.lower()
    if name == "baseline":
        from webiml.annotate.baseline import DifferenceAnnotator

        return DifferenceAnnotator(**kwargs)
    if name == "caaa":
        from webiml.annotate.caaa import CAAAv2Annotator
        from webiml.models.caaa import PairClassifier, SDGSegmenter, SPGSegmenter

        if checkpoint is not None:
            return CAAAv2Annotator.from_pretrained(checkpoint, **kwargs)
        warnings.warn("CAAAv2 annotator with RANDOM weights (no --checkpoint given): the masks are meaningless; "
                      "use it only to test the pipeline", stacklevel=2)
        return CAAAv2Annotator(PairClassifier(), SPGSegmenter(), SDGSegmenter(), **kwargs)
    raise ValueError(f"unknown annotator {name!r}; expected 'caaa' or 'baseline'")


def _annotator_config(annotator: nn.Module) -> Any:
    cfg = getattr(annotator, "config", None)
    if isinstance(cfg, dict):
        return cfg
    keys = ("spg_size", "sdg_size", "tta", "photometric", "verify_category", "spg_agreement", "sdg_agreement", "align_kwargs", "agreement_kwargs")
    return {k: getattr(annotator, k) for k in keys if hasattr(annotator, k)}


# --------------------------------------------------------------------------------------------------
# Lightning pieces


class AnnotationTask(L.LightningModule):
    """Wraps an annotator for ``Trainer.predict``: a batch (list of decoded pairs) -> result dicts
    with the ``uint8`` soft mask and its QES (computed on the 8-bit mask as written)."""

    def __init__(self, annotator: nn.Module, qes_config: QESConfig | None = None) -> None:
        super().__init__()
        self.annotator = annotator
        self.qes_config = qes_config or QESConfig()

    def forward(self, original: torch.Tensor, forged: torch.Tensor) -> Any:
        return self.annotator.annotate(original, forged)

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        out = []
        for item in batch:
            res: dict[str, Any] = {"index": int(item["index"]), "pair_id": item["pair_id"]}
            if item["error"] is not None:
                out.append({**res, "status": "failed", "error": item["error"]})
                continue
            try:
                ann = self(item["original"], item["forged"])
                soft = ann.soft_mask.detach().float()
                if soft.ndim == 3:
                    soft = soft[0]
                if tuple(soft.shape) != tuple(item["forged"].shape[-2:]):
                    raise ValueError(f"annotator returned a {tuple(soft.shape)} mask for a {tuple(item['forged'].shape[-2:])} forgery")
                mask8 = (soft.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            except Exception as err:  # an annotation failure is reported, never fatal
                out.append({**res, "status": "failed", "error": f"annotation failed: {type(err).__name__}: {err}"})
                continue
            cfg = self.qes_config
            out.append({
                **res, "status": "ok", "mask": mask8, "qes": qes(mask8, low=cfg.low, high=cfg.high, eps=cfg.eps),
                "category": str(ann.category), "class_prob": float(ann.class_prob), "aligned": bool(ann.aligned),
                "align_method": getattr(ann, "align_method", None), "height": int(mask8.shape[0]), "width": int(mask8.shape[1]),
                "agreement": getattr(ann, "agreement", None), "category_source": getattr(ann, "category_source", None),
            })
        return out


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


def _write_contact_sheet(out: Path, rows: list[dict[str, Any]], summary: AnnotationSummary) -> None:
    from webiml.io import read_mask
    from webiml.viz import ReportRow, write_report

    report = []
    for row in rows:
        pid = row["pair_id"]
        if row["status"] != "ok":
            report.append(ReportRow(pid, [], [("status", "failed"), ("error", str(row.get("error", ""))[:200])]))
            continue
        paths = thumb_paths(pid)
        if not all((out / p).is_file() for p in paths.values()):
            try:  # e.g. the report limit grew between runs: make the missing thumbnails from the files
                write_thumbs(out, pid, read_image(row["original"]), read_image(row["forged"]), read_mask(out / row["mask"]))
            except (ImageReadError, OSError, ValueError) as err:
                log.warning("%s: no thumbnails: %s", pid, err)
        report.append(ReportRow(
            pid,
            [("original", paths["original"]), ("forgery", paths["forged"]), ("mask", paths["mask"])],
            [("QES", f"{row['qes']:.3f}"), ("kept", "yes" if row["kept"] else "no"),
             ("category", str(row["category"]) + (f" (by {row['category_source']})" if row.get("category_source") else "")),
             ("alignment", str(row.get("align_method"))
              + (f", agreement {row['agreement']:.2f}" if row.get("agreement") is not None else "")),
             ("size", f"{row['width']}x{row['height']}")],
        ))
    intro = (f"{summary.pairs} pairs: {summary.kept} kept, {summary.dropped} dropped (QES &le; {summary.qes_threshold:g}), "
             f"{summary.failed} failed. Showing the first {len(rows)}.")
    write_report(out / "index.html", "webiml annotate: contact sheet", report, intro=intro)


# --------------------------------------------------------------------------------------------------
# the run


def _check_run_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / "run.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
        if old is not None and old != settings and (out / "shards").is_dir() and any((out / "shards").glob("shard-*.jsonl")):
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"{out} holds annotations made with other settings ({', '.join(diff)} differ); "
                "use another output folder, or delete this one to start again"
            )
    atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True))


def annotate_pairs(
    pairs: str | os.PathLike[str] | Sequence[PairSpec],
    out: str | os.PathLike[str],
    *,
    annotator: str | nn.Module = "baseline",
    checkpoint: str | os.PathLike[str] | None = None,
    annotator_kwargs: dict[str, Any] | None = None,
    qes_config: QESConfig | None = None,
    ignore_band: tuple[int, int] = (7, 193),
    qes_weight: bool = False,
    source: str = "annotated",
    report_limit: int = 200,
    limit: int | None = None,
    batch_size: int = 1,
    num_workers: int = 2,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
    strategy: str = "auto",
    progress: bool = True,
    log_every_s: float = 30.0,
) -> AnnotationSummary | None:
    """Annotate pairs (see the module docstring). Returns the summary on global rank 0, ``None`` on the others.

    Args:
        pairs: a pair source for :func:`discover_pairs` or a list of :class:`PairSpec`.
        out: output folder (created; an existing one is resumed).
        annotator: ``"baseline"``, ``"caaa"`` or an annotator module (anything with ``annotate``).
        checkpoint: CAAAv2 checkpoint folder (``annotator="caaa"``).
        annotator_kwargs: constructor arguments of a named annotator.
        qes_config: QES thresholds; pairs with ``QES > qes_config.threshold`` go into the manifest.
        ignore_band: soft-label band of the manifest records.
        qes_weight: use the QES as the manifest's per-sample weight.
        source: the manifest's ``source`` name.
        report_limit: pairs in the contact sheet (0: no ``index.html``).
        limit: annotate only the first ``limit`` pairs.
        batch_size, num_workers: the pair DataLoader.
        accelerator, devices, num_nodes, strategy: the Lightning Trainer (e.g. ``strategy="ddp"``).
        progress: show a progress bar.
    """
    qes_config = qes_config or QESConfig()
    out = Path(out)
    specs = list(pairs) if isinstance(pairs, Sequence) and not isinstance(pairs, str) else discover_pairs(pairs)  # type: ignore[arg-type]
    if limit is not None:
        specs = specs[: int(limit)]
    if isinstance(annotator, str):
        name = annotator
        module = build_annotator(annotator, checkpoint, **(annotator_kwargs or {}))
    else:
        name, module = type(annotator).__name__, annotator
    settings = {"annotator": name, "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
                "annotator_config": json.loads(json.dumps(_annotator_config(module), default=str)),
                "qes_low": qes_config.low, "qes_high": qes_config.high, "eps": qes_config.eps}
    out.mkdir(parents=True, exist_ok=True)
    _check_run_settings(out, settings)
    # The to-do list is computed before Trainer.predict, i.e. before any rank can write (ranks join the
    # process group inside predict), so every rank shards the same list.
    done, _ = load_done(out, specs)
    todo = [s for s in specs if s.pair_id not in done]
    n_done = len(specs) - len(todo)
    if n_done:
        log.info("resuming: %d of %d pairs already annotated in %s, %d to do", n_done, len(specs), out, len(todo))
    else:
        log.info("annotating %d pairs into %s", len(specs), out)
    start = time.perf_counter()
    global_zero = rank_zero_only.rank == 0  # from the launcher's environment (RANK, SLURM_PROCID, ...)
    if todo:
        report_ids = {s.pair_id for s in specs[:report_limit]}
        writer = AnnotationWriter(out, todo, report_ids, log_every_s=log_every_s)
        task = AnnotationTask(module, qes_config)
        loader = DataLoader(
            PairFolderDataset(todo), batch_size=int(batch_size), shuffle=False, num_workers=int(num_workers),
            collate_fn=collate_pairs,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
            trainer = L.Trainer(
                accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy, logger=False,
                enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                callbacks=[writer], inference_mode=True,
            )
            trainer.predict(task, dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier("webiml-annotate-merge")
        global_zero = trainer.is_global_zero
    if not global_zero:
        return None
    seconds = time.perf_counter() - start
    new_done, _ = load_done(out, specs)
    new = sum(1 for s in todo if s.pair_id in new_done)
    return finalize(out, specs, qes_config, ignore_band=ignore_band, qes_weight=qes_weight, source=source,
                    report_limit=report_limit, new=new, seconds=seconds)
