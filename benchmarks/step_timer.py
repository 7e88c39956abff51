"""A Lightning callback for benchmarks/speed.py: the wall-clock times of every training step, as JSON.

``[[start, end], ...]`` (``time.perf_counter``) of each batch, written to ``out`` when fit ends; the time between
two starts is a whole step (data loading included), start -> end the step itself (forward, backward, optimiser).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class StepTimer(Callback):
    def __init__(self, out: str) -> None:
        self.out = out
        self.times: list[list[float]] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.times.append([time.perf_counter(), float("nan")])

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.times[-1][1] = time.perf_counter()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        Path(self.out).write_text(json.dumps(self.times))
