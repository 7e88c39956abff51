"""Lightning callbacks shipped with webiml."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from webiml.io import atomic_write_json
from webiml.reports import write_scores


class MetricsSummary(L.Callback):
    """At the end of ``fit``, print the last validation metrics as a table and save them as JSON
    (``<log_dir>/val_metrics.json``, written atomically, undefined metrics as ``null``), so a training run ends with its numbers in plain sight."""

    def __init__(self, prefix: str = "val/") -> None:
        self.prefix = prefix

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefix)}
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if not metrics or not trainer.is_global_zero:
            return
        width = max(len(k) for k in metrics)
        lines = [f"final validation metrics (epoch {trainer.current_epoch}, step {trainer.global_step}):"]
        lines += [f"  {k:<{width}}  {'nan' if math.isnan(v) else f'{v:.4f}'}" for k, v in sorted(metrics.items())]
        rank_zero_info("\n".join(lines))
        if log_dir:
            atomic_write_json(Path(log_dir) / "val_metrics.json", metrics, sort_keys=True)  # NaN -> null


class PredictionWriter(BasePredictionWriter):
    """``webiml predict``'s output, as ``webiml localize`` writes it: per image ``<name>_prob.png`` (probability
    0-255) and ``<name>_mask.png`` (binary at the pixel threshold), and ``scores.csv`` / ``scores.json`` with the
    image scores and verdicts. Under DDP every rank writes its images and a shard of rows
    (``scores.rank<R>.jsonl``); after a barrier rank 0 merges the shards in input order.

    ``output_dir`` defaults to ``<log_dir>/predictions``; thresholds default to the net's ``pixel_threshold`` /
    ``image_threshold`` (0.5 when it has none). Predictions of other shapes (not dicts with ``mask_probs``) are
    passed over."""

    def __init__(self, output_dir: str | None = None, pixel_threshold: float | None = None,
                 image_threshold: float | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.pixel_threshold = pixel_threshold
        self.image_threshold = image_threshold
        self._out: Path | None = None
        self._names: dict[str, str] = {}
        self._order: dict[str, int] = {}

    def _threshold(self, pl_module: L.LightningModule, name: str, given: float | None) -> float:
        if given is not None:
            return float(given)
        return float(getattr(getattr(pl_module, "net", pl_module), name, 0.5))

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from webiml.commands.localize import _unique_names

        log_dir = trainer.log_dir  # collective under DDP: every rank
        self._out = Path(self.output_dir) if self.output_dir else Path(log_dir or ".") / "predictions"
        self._out.mkdir(parents=True, exist_ok=True)
        paths: list[str] = []
        for loader in trainer.predict_dataloaders if isinstance(trainer.predict_dataloaders, list) else [trainer.predict_dataloaders]:
            records = getattr(getattr(loader, "dataset", None), "records", None) or []
            paths += [str(r.image) for r in records]
        self._names = dict(zip(paths, _unique_names(paths), strict=True))
        self._order = {p: i for i, p in enumerate(paths)}
        self._shard = self._out / f"scores.rank{trainer.global_rank}.jsonl"
        self._shard.write_text("")
        self.pixel = self._threshold(pl_module, "pixel_threshold", self.pixel_threshold)
        self.image = self._threshold(pl_module, "image_threshold", self.image_threshold)

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        import json

        import numpy as np

        from webiml.io import save_image

        if not isinstance(prediction, list) or self._out is None:
            return
        lines = []
        for item in prediction:
            if not isinstance(item, dict) or "mask_probs" not in item:
                continue
            probs = np.asarray(item["mask_probs"], dtype=np.float32).reshape(item["mask_probs"].shape[-2:])
            path = str(item.get("path"))
            name = self._names.get(path) or Path(path).stem
            mask = probs >= self.pixel
            save_image(self._out / f"{name}_prob.png", np.round(probs * 255).astype(np.uint8))
            save_image(self._out / f"{name}_mask.png", mask.astype(np.uint8) * 255)
            score = float(item["image_score"])
            lines.append(json.dumps({"path": path, "name": name, "width": int(probs.shape[1]), "height": int(probs.shape[0]),
                                     "image_score": round(score, 6), "manipulated": int(score >= self.image),
                                     "manipulated_area": round(float(mask.mean()), 6)}))
        with open(self._shard, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json

        trainer.strategy.barrier()
        if not trainer.is_global_zero or self._out is None:
            return
        rows = []
        for shard in sorted(self._out.glob("scores.rank*.jsonl")):
            rows += [json.loads(line) for line in shard.read_text().splitlines() if line.strip()]
        rows.sort(key=lambda r: self._order.get(r["path"], len(self._order)))
        write_scores(self._out, rows, {"pixel_threshold": self.pixel, "image_threshold": self.image})
        for shard in self._out.glob("scores.rank*.jsonl"):
            shard.unlink()
        rank_zero_info(f"predictions of {len(rows)} image(s) written to {self._out}/ (scores.csv, *_prob.png, *_mask.png)")
