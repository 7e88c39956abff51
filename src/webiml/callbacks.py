"""Lightning callbacks shipped with webiml."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from webiml.io import atomic_write_json


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
