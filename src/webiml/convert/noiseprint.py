"""Converters of the GRIP noise-residual extractors.

**Noiseprint** (``webiml convert noiseprint NETS OUT_DIR``) -> :class:`~webiml.models.noiseprint.Noiseprint`,
all qualities found in one model directory. ``NETS`` is one of

- grip-unina/noiseprint's TF1 checkpoints: the ``noiseprint/nets`` folder (``net_jpg51`` .. ``net_jpg101``,
  each ``model.index`` + ``model.data-00000-of-00001``; the repository root works too), one ``net_jpgQQ``
  folder, or one ``.../net_jpgQQ/model.index``. Read by :mod:`webiml.convert.tf_bundle` (no TensorFlow).
  Variables ``level_L/conv/weights`` (HWIO, transposed to OIHW), ``level_L/bn/{gamma, moving_mean,
  moving_variance}``, ``level_L/bias/beta``; ``global_step``, ``corr_alpha`` and ``corr_beta`` are training
  scalars outside the network (upstream's ``Saver(net.variables_list)`` does not restore them) and are skipped.
- the PyTorch port RonyAbecidan/noiseprint-pytorch: its ``pretrained_weights`` folder (``model_qfQQ.pth``)
  or one such file; keys ``conv_layers.L.0.weight`` / ``.0.bias`` (first and last level),
  ``conv_layers.L.1.{gamma, moving_mean, moving_variance}`` and ``conv_layers.L.2.bias`` (the others).

Level ``L`` of 17 maps to :func:`~webiml.models.noiseprint.make_dncnn` indices: the convolution is
``0`` / ``3L - 1`` / ``47``, the BatchNorm ``3L`` (weight = gamma, bias = beta, as BatchNorm followed by
upstream's separate bias); the quality comes from the folder or file name (``net_jpgQQ``, ``model_qfQQ``).

**Noiseprint++** (``webiml convert noiseprint++ noiseprint++.th OUT_DIR``): grip-unina/TruFor's
``pretrained_models/noiseprint++/noiseprint++.th`` is ``{"network": <state dict>, "global_step": ...}``
with the keys of TruFor's ``make_net`` Sequential (``0.weight``, ``0.bias``, ``2.weight``, ``3.running_mean``,
..., ``47.bias``); they become ``dncnn.<key>`` of :class:`~webiml.models.noiseprint.NoiseprintPP`. TruFor's
full checkpoints (``dncnn.*`` among the other modules) are accepted too: only ``dncnn.*`` is taken.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from webiml.convert._common import ConversionError, build_model, few_keys, load_checkpoint, load_strict_and_save
from webiml.convert.tf_bundle import read_tensor_bundle
from webiml.models.noiseprint import Noiseprint, NoiseprintPP

_RE_DNCNN = re.compile(r"^(?:dncnn\.)?(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def noiseprint_pp_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename TruFor's Noiseprint++ keys (``N.param``, or ``dncnn.N.param`` inside a full TruFor checkpoint)
    to :class:`NoiseprintPP` keys (``dncnn.N.param``); other keys of a full TruFor checkpoint are dropped,
    anything else is a :class:`ConversionError`."""
    if any(k.startswith("dncnn.") for k in state):
        state = {k: v for k, v in state.items() if k.startswith("dncnn.")}
    out: dict[str, Tensor] = {}
    unknown = []
    for k, v in state.items():
        if m := _RE_DNCNN.match(k):
            out[f"dncnn.{m[1]}.{m[2]}"] = v
        else:
            unknown.append(k)
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not Noiseprint++ DnCNN layers (expected N.weight, N.bias, "
                              f"N.running_mean, ...): {few_keys(unknown)}")
    return out



def convert_noiseprint_pp(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> NoiseprintPP:
    """Convert TruFor's ``noiseprint++.th`` into a webiml :class:`NoiseprintPP` directory and return the model.

    ``overrides`` are :class:`NoiseprintPP` arguments (e.g. ``normalize_residual=False``).
    """
    state = noiseprint_pp_official_to_webiml(load_checkpoint(checkpoint))
    model = build_model(NoiseprintPP, overrides)
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model


# -- the original Noiseprint ------------------------------------------------------------------------------

LEVELS = 17
_RE_TF = re.compile(r"^level_(\d+)/(conv/weights|bias/beta|bn/gamma|bn/moving_mean|bn/moving_variance)$")
_TF_SKIPPED = {"global_step", "corr_alpha", "corr_beta"}
_RE_PORT = re.compile(r"^conv_layers\.(\d+)\.(0\.weight|0\.bias|1\.gamma|1\.moving_mean|1\.moving_variance|2\.bias)$")
_TF_PARAM = {"bn/gamma": "weight", "bn/moving_mean": "running_mean", "bn/moving_variance": "running_var"}
_PORT_PARAM = {"1.gamma": "weight", "1.moving_mean": "running_mean", "1.moving_variance": "running_var", "2.bias": "bias"}
_RE_TF_DIR = re.compile(r"^net_jpg(\d+)$")
_RE_PORT_FILE = re.compile(r"^model_qf(\d+)\.pth$")


def _conv_index(level: int) -> int:
    return 0 if level == 0 else 3 * level - 1


def _level(level: str, key: str) -> int:
    lv = int(level)
    if not 0 <= lv < LEVELS:
        raise ConversionError(f"{key}: level {lv} outside the 17 levels of Noiseprint's network")
    return lv


def noiseprint_tf_to_webiml(tensors: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """One network's TF variables (see the module docstring) -> :func:`make_dncnn` keys (``0.weight``, ...)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in tensors.items():
        if key in _TF_SKIPPED:
            continue
        m = _RE_TF.match(key)
        if m is None:
            unknown.append(key)
            continue
        if value.dtype != np.float32:
            raise ConversionError(f"{key} is {value.dtype}, expected float32")
        lv, what = _level(m[1], key), m[2]
        t = torch.from_numpy(np.ascontiguousarray(value))
        if what == "conv/weights":
            if t.ndim != 4:
                raise ConversionError(f"{key} has shape {tuple(t.shape)}, expected a 4-d HWIO kernel")
            out[f"{_conv_index(lv)}.weight"] = t.permute(3, 2, 0, 1).contiguous()
        elif what == "bias/beta":
            out[f"{_conv_index(lv) + (0 if lv in (0, LEVELS - 1) else 1)}.bias"] = t
        else:
            out[f"{_conv_index(lv) + 1}.{_TF_PARAM[what]}"] = t
    if unknown:
        raise ConversionError(f"{len(unknown)} variables are not Noiseprint network variables (level_L/conv/weights, "
                              f"level_L/bn/gamma, ...): {few_keys(unknown)}")
    return _with_batch_counts(out)


def noiseprint_port_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """One network of the PyTorch port (``conv_layers.L.*``, see the module docstring) -> :func:`make_dncnn` keys."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        m = _RE_PORT.match(key)
        if m is None:
            unknown.append(key)
            continue
        lv, what = _level(m[1], key), m[2]
        if what.startswith("0."):
            out[f"{_conv_index(lv)}.{what[2:]}"] = value
        else:
            out[f"{_conv_index(lv) + 1}.{_PORT_PARAM[what]}"] = value
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not noiseprint-pytorch FullConvNet keys (conv_layers.L.0.weight, "
                              f"conv_layers.L.1.gamma, ...): {few_keys(unknown)}")
    return _with_batch_counts(out)


def _with_batch_counts(state: dict[str, Tensor]) -> dict[str, Tensor]:
    for key in [k for k in state if k.endswith(".running_mean")]:
        state[key.replace("running_mean", "num_batches_tracked")] = torch.tensor(0, dtype=torch.long)
    return state


def find_noiseprint_networks(path: str | Path) -> dict[int, tuple[str, Path]]:
    """Quality -> (``"tf"`` | ``"torch"``, checkpoint) for the accepted inputs (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"not found: {p}")
    if p.is_file() or p.with_name(p.name + ".index").is_file():
        prefix = p.with_suffix("") if p.suffix == ".index" else p
        if (m := _RE_TF_DIR.match(prefix.parent.name)) and prefix.with_name(prefix.name + ".index").is_file():
            return {int(m[1]): ("tf", prefix)}
        if m := _RE_PORT_FILE.match(p.name):
            return {int(m[1]): ("torch", p)}
        raise ConversionError(f"{p}: expected .../net_jpgQQ/model.index (grip-unina/noiseprint) or model_qfQQ.pth "
                              "(noiseprint-pytorch); the quality QQ is read from that name")
    if (p / "noiseprint" / "nets").is_dir():
        p = p / "noiseprint" / "nets"
    if m := _RE_TF_DIR.match(p.name):
        return {int(m[1]): ("tf", p / "model")} if (p / "model.index").is_file() else {}
    found: dict[int, tuple[str, Path]] = {}
    for child in sorted(p.iterdir()):
        if (m := _RE_TF_DIR.match(child.name)) and (child / "model.index").is_file():
            found[int(m[1])] = ("tf", child / "model")
    if not found:
        for child in sorted(p.iterdir()):
            if m := _RE_PORT_FILE.match(child.name):
                found[int(m[1])] = ("torch", child)
    return found


def convert_noiseprint(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> Noiseprint:
    """Convert the authors' Noiseprint networks (TF1 checkpoints or the PyTorch port, see the module
    docstring) into one webiml :class:`Noiseprint` directory holding every quality found; return the model.

    ``overrides`` are :class:`Noiseprint` arguments (e.g. ``quality=90``; ``qualities`` is what was found).
    """
    found = find_noiseprint_networks(checkpoint)
    if not found:
        raise ConversionError(f"{checkpoint}: no Noiseprint networks found (expected net_jpgQQ/model.index folders of "
                              "grip-unina/noiseprint's noiseprint/nets, or model_qfQQ.pth files of noiseprint-pytorch)")
    state: dict[str, Tensor] = {}
    for quality, (kind, path) in sorted(found.items()):
        try:
            net = noiseprint_tf_to_webiml(read_tensor_bundle(path)) if kind == "tf" else noiseprint_port_to_webiml(load_checkpoint(path))
        except ConversionError as err:
            raise ConversionError(f"quality {quality} ({path}): {err}") from None
        state.update({f"nets.q{quality}.{k}": v for k, v in net.items()})
    model = build_model(Noiseprint, {**overrides, "qualities": sorted(found)})
    load_strict_and_save(model, state, checkpoint, out_dir)
    return model
