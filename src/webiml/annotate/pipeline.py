"""Annotation of (original, forged) pairs at scale: pairs in, soft masks + QES + a training manifest out.

:func:`annotate_pairs` (``webiml annotate``) runs any annotator with the interface of
:meth:`webiml.annotate.caaa.CAAAv2Annotator.annotate` (webiml's CAAAv2 reconstruction, the MIML authors' CAAA v1
:class:`~webiml.annotate.caaa_v1.CAAAv1Annotator`, or the naive
:class:`~webiml.annotate.baseline.DifferenceAnnotator`) through Lightning prediction:

- :class:`~webiml.annotate.pair_sources.PairFolderDataset` decodes pairs in DataLoader workers (an unreadable pair becomes an error
  item, reported and skipped, never fatal);
- :class:`AnnotationTask` (a small LightningModule) annotates each pair and scores its soft mask with QES;
- :class:`~webiml.annotate.output.AnnotationWriter` (a ``BasePredictionWriter``) writes, per pair, the soft mask PNG (atomic), its
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

Pair sources: see :func:`webiml.annotate.pair_sources.discover_pairs`; resume and merge:
:func:`webiml.annotate.output.load_done` and :func:`webiml.annotate.output.finalize`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader

from webiml.annotate.output import AnnotationSummary, AnnotationWriter, finalize, load_done
from webiml.annotate.pair_sources import PairFolderDataset, PairSpec, collate_pairs, discover_pairs
from webiml.annotate.qes import QESConfig, qes
from webiml.io import atomic_write_text

log = logging.getLogger("webiml.annotate")

__all__ = ["DEFAULT_CAAA_PARTS", "AnnotationTask", "annotate_pairs", "build_annotator"]

DEFAULT_CAAA_PARTS: dict[str, str] = {
    "classifier": "caaa-v2-lite0-classifier", "spg": "caaa-v2-lite0-spg", "sdg": "caaa-v2-lite0-sdg"}
"""The CAAAv2 parts ``webiml annotate`` uses without ``--checkpoint``: catalogue names of the weights shipped in
the package (better than the naive baseline on held-out synthetic pairs, equal on CASIA: see checkpoints.yaml)."""

# --------------------------------------------------------------------------------------------------
# annotators


def build_annotator(name: str, checkpoint: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """An annotator by name: ``"baseline"`` (:class:`~webiml.annotate.baseline.DifferenceAnnotator`, ``kwargs``
    to its constructor), ``"caaa"`` (webiml's reconstruction of CAAAv2, :class:`~webiml.annotate.caaa.CAAAv2Annotator`,
    from a checkpoint folder of saved parts, see :func:`~webiml.annotate.caaa.find_parts`; the shipped parts
    :data:`DEFAULT_CAAA_PARTS` when ``checkpoint`` is None; random weights with a warning for ``"random"``) or ``"caaa-v1"`` (the MIML authors' CAAA with their converted weights,
    :class:`~webiml.annotate.caaa_v1.CAAAv1Annotator`; ``checkpoint`` is required)."""
    name = name.lower()
    if name == "baseline":
        from webiml.annotate.baseline import DifferenceAnnotator

        return DifferenceAnnotator(**kwargs)
    if name == "caaa-v1":
        from webiml.annotate.caaa_v1 import CAAAv1Annotator

        if checkpoint is None:
            raise ValueError("--annotator caaa-v1 needs --checkpoint DIR: a folder with classifier/, dass/ and sacm/ converted "
                             "from the authors' weights (webiml convert caaa-v1-classifier convxl.pth DIR/classifier, "
                             "caaa-v1-dass DASS.pth DIR/dass, caaa-v1-sacm SAFM.pth DIR/sacm)")
        return CAAAv1Annotator.from_pretrained(checkpoint, **kwargs)
    if name == "caaa":
        from webiml.annotate.caaa import CAAAv2Annotator
        from webiml.models.caaa import PairClassifier, SDGSegmenter, SPGSegmenter

        if checkpoint is None:
            return CAAAv2Annotator.from_pretrained_parts(**DEFAULT_CAAA_PARTS, **kwargs)
        if str(checkpoint) == "random":
            warnings.warn("CAAAv2 annotator with RANDOM weights (--checkpoint random): the masks are meaningless; "
                          "use it only to test the pipeline", stacklevel=2)
            return CAAAv2Annotator(PairClassifier(), SPGSegmenter(), SDGSegmenter(), **kwargs)
        return CAAAv2Annotator.from_pretrained(checkpoint, **kwargs)
    raise ValueError(f"unknown annotator {name!r}; expected 'caaa', 'caaa-v1' or 'baseline'")


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
        annotator: ``"baseline"``, ``"caaa"`` (webiml's CAAAv2), ``"caaa-v1"`` (the authors' CAAA) or an
            annotator module (anything with ``annotate``).
        checkpoint: parts folder of ``"caaa"`` / ``"caaa-v1"``.
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
