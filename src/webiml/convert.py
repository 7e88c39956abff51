"""Converters from upstream checkpoints to webiml's ``config.json`` + ``model.safetensors`` layout.

Upstream checkpoints are PyTorch pickles. They are read with ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers and refuses anything that would run code on unpickling;
a checkpoint that needs more is rejected with :class:`ConversionError` instead of being trusted.

APSC-Net (``webiml convert apsc-net APSC-Net.pth OUT_DIR``): the authors' mmcv checkpoint holds
``{"state_dict": {...}, "meta": {...}, ...}`` with keys ``backbone.*`` (official ConvNeXt naming) and
``decode_head.*`` (kept as is by :class:`~webiml.models.apsc_net.APSCNet`), possibly prefixed
``module.`` (saved from a DataParallel / DDP wrapper). The backbone keys are renamed onto timm's
ConvNeXt (one to one), the architecture widths are read off the tensor shapes, every tensor's shape is
checked, and the weights are loaded strictly before ``save_pretrained`` writes the output directory.

Noiseprint++ (``webiml convert noiseprint++ noiseprint++.th OUT_DIR``): grip-unina/TruFor's
``pretrained_models/noiseprint++/noiseprint++.th`` is ``{"network": <state dict>, "global_step": ...}``
with the keys of TruFor's ``make_net`` Sequential (``0.weight``, ``0.bias``, ``2.weight``, ``3.running_mean``,
..., ``47.bias``); they become ``dncnn.<key>`` of :class:`~webiml.models.noiseprint.NoiseprintPP`. TruFor's
full checkpoints (``dncnn.*`` among the other modules) are accepted too: only ``dncnn.*`` is taken.

Adaptive CFA (``webiml convert adaptive-cfa pretrained.pt OUT_DIR``): qbammey/adaptive_cfa_forensics'
``src/models/*.pt`` are bare state dicts of ``FullNet``; ``spatial.*``, ``pixelwise.*`` and ``blockwise.*``
keep their names, ``auxiliary.2.*`` (the auxiliary head) becomes ``auxiliary_head.*``, and ``auxiliary.0.*`` /
``auxiliary.1.*`` (the same modules as ``spatial`` / ``pixelwise``, saved twice) must equal them and are dropped.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from webiml.models.adaptive_cfa import AdaptiveCFA
from webiml.models.apsc_net import APSC_PRESETS, APSCNet
from webiml.models.noiseprint import NoiseprintPP


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says why."""


def _few(keys: list[str] | set[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# -- reading ---------------------------------------------------------------------------------------


def _safe_numpy_globals() -> list[Any]:
    """numpy scalar/dtype reconstructors: mmcv stores metrics in ``meta`` as numpy scalars.

    They rebuild plain numbers and dtypes only (no arrays, no arbitrary callables).
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency of torch's pickles anyway
        return []
    multiarray = getattr(np, "_core", None)
    multiarray = getattr(multiarray, "multiarray", None) or np.core.multiarray
    found: list[Any] = [multiarray.scalar, np.dtype]
    found += [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", object)) if n.endswith("DType")]
    return found


def load_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint safely and return its model state dict (``module.`` prefixes removed).

    Accepts an mmcv / Lightning-style dict with a ``state_dict`` (or ``model``) entry, or a bare state
    dict. Raises :class:`ConversionError` for unreadable files, files that need full unpickling, and
    objects that are not a mapping from names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_safe_numpy_globals()):
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
        raise ConversionError(f"{path} is not a state dict: entries that are not named tensors: {_few([str(k) for k in bad])}")
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module.") :]
        out[k] = v
    return out


# -- APSC-Net key mapping --------------------------------------------------------------------------

_BLOCK_OFFICIAL_TO_TIMM = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
_BLOCK_TIMM_TO_OFFICIAL = {v: k for k, v in _BLOCK_OFFICIAL_TO_TIMM.items()}
_RE_DOWN = re.compile(r"^backbone\.downsample_layers\.(\d+)\.([01])\.(weight|bias)$")
_RE_BLOCK = re.compile(r"^backbone\.stages\.(\d+)\.(\d+)\.(?:(gamma)|(dwconv|norm|pwconv1|pwconv2)\.(weight|bias))$")
_RE_OUTNORM = re.compile(r"^backbone\.norm[0-3]\.(weight|bias)$")
_RE_STEM = re.compile(r"^backbone\.stem\.([01])\.(weight|bias)$")
_RE_TDOWN = re.compile(r"^backbone\.stages\.(\d+)\.downsample\.([01])\.(weight|bias)$")
_RE_TBLOCK = re.compile(r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.(?:(gamma)|(conv_dw|norm|mlp\.fc1|mlp\.fc2)\.(weight|bias))$")


def apsc_key_to_webiml(key: str) -> str | None:
    """webiml name of an official APSC-Net key, or ``None`` if the key is not part of APSC-Net."""
    if key.startswith("decode_head.") or _RE_OUTNORM.match(key):
        return key
    if m := _RE_DOWN.match(key):
        stage, idx, kind = int(m[1]), m[2], m[3]
        return f"backbone.stem.{idx}.{kind}" if stage == 0 else f"backbone.stages.{stage}.downsample.{idx}.{kind}"
    if m := _RE_BLOCK.match(key):
        stage, block = m[1], m[2]
        tail = "gamma" if m[3] else f"{_BLOCK_OFFICIAL_TO_TIMM[m[4]]}.{m[5]}"
        return f"backbone.stages.{stage}.blocks.{block}.{tail}"
    return None


def webiml_key_to_apsc(key: str) -> str:
    """Official APSC-Net name of a webiml :class:`APSCNet` key (the inverse of :func:`apsc_key_to_webiml`)."""
    if key.startswith("decode_head.") or _RE_OUTNORM.match(key):
        return key
    if m := _RE_STEM.match(key):
        return f"backbone.downsample_layers.0.{m[1]}.{m[2]}"
    if m := _RE_TDOWN.match(key):
        return f"backbone.downsample_layers.{m[1]}.{m[2]}.{m[3]}"
    if m := _RE_TBLOCK.match(key):
        tail = "gamma" if m[3] else f"{_BLOCK_TIMM_TO_OFFICIAL[m[4]]}.{m[5]}"
        return f"backbone.stages.{m[1]}.{m[2]}.{tail}"
    raise KeyError(f"{key} has no official APSC-Net counterpart")


def apsc_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official APSC-Net state dict to webiml's keys; unknown keys are a :class:`ConversionError`."""
    out: dict[str, Tensor] = {}
    unknown = []
    for k, v in state.items():
        new = apsc_key_to_webiml(k)
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise ConversionError(
            f"{len(unknown)} keys are not part of APSC-Net (expected backbone.* in the official ConvNeXt naming and "
            f"decode_head.*): {_few(unknown)}"
        )
    return out


def webiml_to_apsc_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a webiml :class:`APSCNet` state dict to the official keys (for export and tests)."""
    return {webiml_key_to_apsc(k): v for k, v in state.items()}


def infer_apsc_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """:class:`APSCNet` constructor arguments that reproduce the shapes of a (webiml-keyed) state dict.

    Widths and depths are read off the tensors; values equal to the ``base`` preset are left out so the
    authors' checkpoint converts to ``{"size": "base"}``. Dilations, pool scales and dropout are not
    recorded in weights and keep the authors' values.
    """

    def need(key: str) -> Tensor:
        if key not in state:
            raise ConversionError(f"missing key {key!r}: not an APSC-Net checkpoint, or an incomplete one")
        return state[key]

    dims = [int(need(f"backbone.norm{i}.weight").shape[0]) for i in range(4)]
    depths = []
    for i in range(4):
        blocks = {int(m[1]) for k in state if (m := re.match(rf"^backbone\.stages\.{i}\.blocks\.(\d+)\.", k))}
        depths.append(max(blocks) + 1 if blocks else 0)
    channels = int(need("decode_head.conv_seg.weight").shape[1])
    low_proj = int(need("decode_head.MSDEC.c1_bottleneck.conv.weight").shape[0])
    convs = sorted(
        (int(m[1]), int(v.shape[0]))
        for k, v in state.items()
        if (m := re.match(r"^decode_head\.ha\.kg\.(\d+)\.conv\.weight$", k))
    )
    attn_widths = [w for _, w in convs]
    n_kernel = int(need(f"decode_head.ha.kg.{len(convs) + 4}.weight").shape[0])
    attn_kernel = int(round(n_kernel**0.5))
    if attn_kernel * attn_kernel != n_kernel:
        raise ConversionError(f"decode_head.ha: the kernel generator outputs {n_kernel} values, not a square kernel")
    image_head = any(k.startswith("decode_head.cls_head.") for k in state)
    base = APSC_PRESETS["base"]
    found = dict(depths=depths, dims=dims, channels=channels, low_proj=low_proj, attn_widths=attn_widths)
    cfg: dict[str, Any] = {"size": "base"}
    for k, v in found.items():
        if v != (list(base[k]) if isinstance(v, list) else base[k]):
            cfg[k] = v
    if attn_kernel != 31:
        cfg["attn_kernel"] = attn_kernel
    if not image_head:
        cfg["image_head"] = False
    return cfg


def check_state_dict(model: torch.nn.Module, state: Mapping[str, Tensor], what: str = "checkpoint") -> None:
    """Raise :class:`ConversionError` listing missing / unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} vs expected {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
    if problems:
        raise ConversionError(f"the {what} does not fit {type(model).__name__}: " + " | ".join(problems))


def convert_apsc_net(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> APSCNet:
    """Convert the authors' APSC-Net checkpoint into a webiml model directory and return the model.

    ``overrides`` are extra :class:`APSCNet` arguments that weights cannot tell (e.g. ``refine_steps``).
    """
    official = load_checkpoint(checkpoint)
    state = apsc_official_to_webiml(official)
    config = {**infer_apsc_config(state), **overrides}
    try:
        model = APSCNet(**config)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"cannot build APSCNet({config}): {err}") from None
    check_state_dict(model, state, what=f"checkpoint {Path(checkpoint).name}")
    # Tensors are copied into the model's own dtype (the checkpoint may be half precision).
    model.load_state_dict(state, strict=True)
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    return model


# -- Noiseprint++ -----------------------------------------------------------------------------------

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
                              f"N.running_mean, ...): {_few(unknown)}")
    return out


def _convert_strict(model: torch.nn.Module, state: Mapping[str, Tensor], checkpoint: str | Path, out_dir: str | Path) -> None:
    check_state_dict(model, state, what=f"checkpoint {Path(checkpoint).name}")
    model.load_state_dict(state, strict=True)
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # type: ignore[attr-defined]


def convert_noiseprint_pp(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> NoiseprintPP:
    """Convert TruFor's ``noiseprint++.th`` into a webiml :class:`NoiseprintPP` directory and return the model.

    ``overrides`` are :class:`NoiseprintPP` arguments (e.g. ``normalize_residual=False``).
    """
    state = noiseprint_pp_official_to_webiml(load_checkpoint(checkpoint))
    model = NoiseprintPP(**overrides)
    _convert_strict(model, state, checkpoint, out_dir)
    return model


# -- Adaptive CFA ----------------------------------------------------------------------------------

_CFA_SHARED = {"auxiliary.0.": "spatial.", "auxiliary.1.": "pixelwise."}


def adaptive_cfa_official_to_webiml(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official adaptive-CFA ``FullNet`` state dict to :class:`AdaptiveCFA` keys (see the module
    docstring); a shared copy that differs from its module, or an unknown key, is a :class:`ConversionError`."""
    out: dict[str, Tensor] = {}
    unknown, differ = [], []
    for k, v in state.items():
        if k.startswith(("spatial.", "pixelwise.", "blockwise.")):
            out[k] = v
        elif k.startswith("auxiliary.2."):
            out["auxiliary_head." + k[len("auxiliary.2."):]] = v
        elif shared := next((p for p in _CFA_SHARED if k.startswith(p)), None):
            twin = _CFA_SHARED[shared] + k[len(shared):]
            if twin not in state or not torch.equal(state[twin], v):
                differ.append(k)
        else:
            unknown.append(k)
    if unknown:
        raise ConversionError(f"{len(unknown)} keys are not part of the adaptive-CFA FullNet: {_few(unknown)}")
    if differ:
        raise ConversionError(f"{len(differ)} auxiliary.0/1 entries differ from (or lack) their spatial/pixelwise twin: {_few(differ)}")
    return out


def convert_adaptive_cfa(checkpoint: str | Path, out_dir: str | Path, **overrides: Any) -> AdaptiveCFA:
    """Convert an adaptive-CFA ``.pt`` (``pretrained.pt``, ``adapted_to_*.pt``) into a webiml :class:`AdaptiveCFA`
    directory and return the model. ``overrides`` are :class:`AdaptiveCFA` arguments (``block_size``)."""
    state = adaptive_cfa_official_to_webiml(load_checkpoint(checkpoint))
    model = AdaptiveCFA(**overrides)
    _convert_strict(model, state, checkpoint, out_dir)
    return model


CONVERTERS: dict[str, tuple[str, Callable[..., torch.nn.Module]]] = {
    "adaptive-cfa": ("Adaptive CFA (CVPR 2020) state dict from qbammey/adaptive_cfa_forensics src/models/*.pt", convert_adaptive_cfa),
    "apsc-net": ("APSC-Net (CVPR 2024) mmcv checkpoint from qcf-568/MIML, e.g. APSC-Net.pth", convert_apsc_net),
    "noiseprint++": ("TruFor's Noiseprint++ extractor, grip-unina/TruFor pretrained_models/noiseprint++/noiseprint++.th",
                     convert_noiseprint_pp),
}
"""Converter name -> (description, function(checkpoint, out_dir, **overrides))."""


__all__ = [
    "CONVERTERS",
    "adaptive_cfa_official_to_webiml",
    "convert_adaptive_cfa",
    "ConversionError",
    "apsc_key_to_webiml",
    "apsc_official_to_webiml",
    "check_state_dict",
    "convert_apsc_net",
    "convert_noiseprint_pp",
    "infer_apsc_config",
    "load_checkpoint",
    "noiseprint_pp_official_to_webiml",
    "webiml_key_to_apsc",
    "webiml_to_apsc_official",
]
