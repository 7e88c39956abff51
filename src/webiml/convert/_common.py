"""What every converter shares: safe checkpoint reading, state-dict checks, strict load + save."""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["ConversionError", "check_state_dict", "few_keys", "infer_preset", "load_checkpoint", "load_strict_and_save"]


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says why."""


def few_keys(keys: list[str] | set[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# -- reading ---------------------------------------------------------------------------------------


def _safe_numpy_globals() -> list[Any]:
    """Classes a checkpoint may hold besides tensors and containers, all of them plain data.

    numpy scalar/dtype reconstructors (mmcv stores metrics in ``meta`` as numpy scalars): they rebuild plain
    numbers and dtypes only (no arrays, no arbitrary callables). ``argparse.Namespace``: MAE-style training
    scripts (IML-ViT, IMDL-BenCo's Mesorch) save their command-line ``args`` next to the weights; the
    weights-only unpickler rebuilds it as an attribute bag of plain values.
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency of torch's pickles anyway
        return [argparse.Namespace]
    multiarray = getattr(np, "_core", None)
    multiarray = getattr(multiarray, "multiarray", None) or np.core.multiarray
    found: list[Any] = [argparse.Namespace, multiarray.scalar, np.dtype]
    found += [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", object)) if n.endswith("DType")]
    return found


def load_checkpoint(path: str | Path, extra_safe_globals: list[Any] | None = None) -> dict[str, Tensor]:
    """Read a checkpoint safely and return its model state dict (``module.`` prefixes removed).

    Accepts an mmcv / Lightning-style dict with a ``state_dict`` (or ``model``) entry, or a bare state
    dict. Raises :class:`ConversionError` for unreadable files, files that need full unpickling, and
    objects that are not a mapping from names to tensors. ``extra_safe_globals`` are further classes a
    family's files are known to hold outside the weights (e.g. ``argparse.Namespace`` for the training
    arguments), allowed besides tensors, containers and numpy scalars; pass only plain data containers.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([*_safe_numpy_globals(), *(extra_safe_globals or [])]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if m := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
            raise ConversionError(
                f"{path} cannot be read with torch.load(weights_only=True): it contains pickled Python objects beyond "
                f"tensors and plain containers (it needs {m[1]}), and webiml never unpickles those. If you trust the "
                "file, extract the weights yourself: torch.save(torch.load(p, weights_only=False)['state_dict'], 'clean.pth')"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", text)
        raise ConversionError(
            f"{path} is not a readable PyTorch checkpoint under torch.load(weights_only=True) (corrupt, or it needs full "
            f"unpickling, which webiml refuses): {detail[1] if detail else text.splitlines()[0][:200]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint: {err}") from None
    state = obj
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "module", "network"):
            if key in obj and isinstance(obj[key], Mapping):
                state = obj[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping from parameter names to tensors)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ConversionError(f"{path} is not a state dict: entries that are not named tensors: {few_keys([str(k) for k in bad])}")
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module.") :]
        out[k] = v
    return out


def check_state_dict(model: torch.nn.Module, state: Mapping[str, Tensor], what: str = "checkpoint") -> None:
    """Raise :class:`ConversionError` listing missing / unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {few_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {few_keys(unexpected)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} vs expected {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
    if problems:
        raise ConversionError(f"the {what} does not fit {type(model).__name__}: " + " | ".join(problems))


def infer_preset(build: Callable[[str], torch.nn.Module], presets: Sequence[str], state: Mapping[str, Tensor],
                 family: str) -> str:
    """The first of ``presets`` whose model (``build(name)``, built on the meta device) has exactly the keys and
    shapes of ``state``; else :class:`ConversionError` with the mismatch against the first preset."""
    first = None
    for name in presets:
        with torch.device("meta"):
            model = build(name)
        try:
            check_state_dict(model, state, what="checkpoint")
            return name
        except ConversionError as err:
            first = first or err
    if first is None:
        raise ValueError(f"infer_preset: no {family} presets given")
    raise ConversionError(f"the checkpoint matches no {family} configuration ({', '.join(presets)}); against "
                          f"{presets[0]!r}: {first}")


def build_model(cls: Callable[..., torch.nn.Module], config: Mapping[str, Any]) -> Any:
    """``cls(**config)``; a configuration the class refuses (an unknown or bad argument, e.g. from ``--option``) is
    one :class:`ConversionError` line."""
    try:
        return cls(**config)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"cannot build {getattr(cls, '__name__', cls)}({dict(config)}): {err}") from None


def load_strict_and_save(model: torch.nn.Module, state: Mapping[str, Tensor], checkpoint: str | Path, out_dir: str | Path) -> None:
    """Check ``state`` against ``model`` (:func:`check_state_dict`), load it strictly, and ``save_pretrained`` into ``out_dir``."""
    check_state_dict(model, state, what=f"checkpoint {Path(checkpoint).name}")
    model.load_state_dict(state, strict=True)
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # type: ignore[attr-defined]
