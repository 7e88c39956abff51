"""The ``params.json`` cache of generated datasets (synthetic forgeries, Object Jitter sets, synthetic pairs):
a writer records the parameters it was called with, and a later call with the same parameters whose files all
exist regenerates nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from webiml.io import atomic_write_text

__all__ = ["params_unchanged", "write_params"]


def params_unchanged(params_path: Path, params: Mapping[str, Any], outputs_exist: Callable[[], bool]) -> bool:
    """Whether ``params_path`` records ``params`` (compared as JSON values) and ``outputs_exist()`` holds;
    a missing or unreadable file (or one ``outputs_exist`` cannot read) counts as changed."""
    if not params_path.is_file():
        return False
    try:
        same = json.loads(params_path.read_text(encoding="utf-8")) == json.loads(json.dumps(params))
        return same and outputs_exist()
    except (ValueError, OSError):
        return False


def write_params(params_path: Path, params: Mapping[str, Any]) -> None:
    """Atomically record ``params`` (sorted keys) once every file of the dataset is written."""
    atomic_write_text(params_path, json.dumps(params, indent=1, sort_keys=True) + "\n")
