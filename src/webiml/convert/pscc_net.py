"""PSCC-Net (``webiml convert pscc-net CHECKPOINT_DIR OUT_DIR``): the authors release three state dicts, one per
network of their ``train.py`` / ``test.py``, saved from ``nn.DataParallel`` wrappers (every key ``module.``-prefixed):

- ``checkpoint/HRNet_checkpoint/HRNet.pth``: the feature extractor (``conv1``, ``layer1``, ``transition*``,
  ``stage2..4``) -> ``encoder.*`` of :class:`~webiml.models.pscc_net.PSCCNet`;
- ``checkpoint/NLCDetection_checkpoint/NLCDetection.pth``: the localization head (``getmask1..4``)
  -> ``localization_head.*``;
- ``checkpoint/DetectionHead_checkpoint/DetectionHead.pth``: the detection head (``incre_modules``,
  ``downsamp_modules``, ``final_layer``, ``classifier``) -> ``detection_head.*``.

``CHECKPOINT_DIR`` is a folder holding the three files under these names (anywhere below it: the repository's
``checkpoint/`` folder works as is), or the three files themselves, comma-separated, in any order and under any
names (each is recognised by its keys; ``train.py``'s per-epoch ``{"model": ..., "optimizer": ...}`` files work
too). The HRNet widths are read off the tensors; ``crop_size`` (256) is not stored in the weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from webiml.convert._common import ConversionError, build_model, few_keys, load_checkpoint, load_strict_and_save
from webiml.models.pscc_net import PSCCNet

PARTS: dict[str, str] = {"HRNet": "encoder", "NLCDetection": "localization_head", "DetectionHead": "detection_head"}
"""Official file stem -> webiml prefix."""
_SIGNATURE = {
    "HRNet": re.compile(r"^(?:conv1|bn1|conv2|bn2|layer1|transition[1-3]|stage[2-4])\."),
    "NLCDetection": re.compile(r"^getmask[1-4]\."),
    "DetectionHead": re.compile(r"^(?:incre_modules|downsamp_modules|final_layer|classifier)\."),
}


def _part_of(state: Mapping[str, Tensor]) -> str | None:
    """Which official network a (``module.``-stripped) state dict belongs to, by its keys."""
    for part, pattern in _SIGNATURE.items():
        if state and all(pattern.match(k) for k in state):
            return part
    return None


def find_pscc_files(source: str | Path) -> dict[str, Path]:
    """The three official files of ``source`` (a folder, or three comma-separated files) by part name."""
    text = str(source)
    if "," in text:
        files = [Path(p.strip()) for p in text.split(",") if p.strip()]
        if len(files) != 3:
            raise ConversionError(f"pscc-net takes a folder or three comma-separated files, got {len(files)} files")
        found: dict[str, Path] = {}
        for f in files:
            part = _part_of(load_checkpoint(f))
            if part is None:
                raise ConversionError(f"{f} is not one of PSCC-Net's HRNet / NLCDetection / DetectionHead state dicts")
            if part in found:
                raise ConversionError(f"{found[part]} and {f} are both PSCC-Net {part} weights")
            found[part] = f
        return found
    folder = Path(source)
    if not folder.is_dir():
        hint = " (PSCC-Net's weights are three files: give their folder)" if folder.is_file() else ""
        raise ConversionError(f"checkpoint folder not found: {folder}{hint}")
    found = {}
    for part in PARTS:
        hits = sorted(folder.rglob(f"{part}.pth"))
        if len(hits) != 1:
            what = "no" if not hits else f"{len(hits)}"
            raise ConversionError(f"{folder} has {what} {part}.pth (PSCC-Net needs HRNet.pth, NLCDetection.pth and "
                                  "DetectionHead.pth; or pass the three files comma-separated)")
        found[part] = hits[0]
    return found


def pscc_official_to_webiml(parts: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """One webiml :class:`PSCCNet` state dict from the three official ones (``module.`` already removed)."""
    out: dict[str, Tensor] = {}
    for part, prefix in PARTS.items():
        state = parts[part]
        bad = [k for k in state if not _SIGNATURE[part].match(k)]
        if bad:
            raise ConversionError(f"{len(bad)} keys of the {part} weights are not part of PSCC-Net's {part}: {few_keys(bad)}")
        out.update({f"{prefix}.{k}": v for k, v in state.items()})
    return out


def webiml_to_pscc_official(state: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Split a webiml :class:`PSCCNet` state dict into the three official ones (keys without ``module.``)."""
    out: dict[str, dict[str, Tensor]] = {part: {} for part in PARTS}
    for k, v in state.items():
        prefix, rest = k.split(".", 1)
        part = next(p for p, pre in PARTS.items() if pre == prefix)
        out[part][rest] = v
    return out


def infer_pscc_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """:class:`PSCCNet` arguments reproducing a (webiml-keyed) state dict's shapes; the authors' widths are left out."""
    keys = [f"encoder.stage4.0.branches.{i}.0.conv1.weight" for i in range(4)] + ["encoder.conv1.weight"]
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConversionError(f"the HRNet weights lack {few_keys(missing)}: not PSCC-Net's HRNet.pth, or an incomplete one")
    channels = [int(state[k].shape[0]) for k in keys[:4]]
    stem = int(state[keys[4]].shape[0])
    cfg: dict[str, Any] = {}
    if channels != [18, 36, 72, 144]:
        cfg["channels"] = channels
    if stem != 64:
        cfg["stem_width"] = stem
    return cfg


def convert_pscc_net(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> PSCCNet:
    """Convert the authors' three PSCC-Net files (a folder, or the files comma-separated) into a webiml
    :class:`PSCCNet` directory and return the model. ``overrides``: e.g. ``crop_size``."""
    files = find_pscc_files(checkpoint)
    state = pscc_official_to_webiml({part: load_checkpoint(path) for part, path in files.items()})
    config = {**infer_pscc_config(state), **overrides}
    model = build_model(PSCCNet, config)
    load_strict_and_save(model, state, checkpoint if "," not in str(checkpoint) else "HRNet/NLCDetection/DetectionHead", out_dir)
    return model
