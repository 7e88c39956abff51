"""Loading and saving pretrained models: the zoo catalogue, the Hugging Face Hub, local folders and files.

``from_pretrained(name_or_path)`` accepts

- a catalogue name from ``checkpoints.yaml`` (``webiml zoo list``): weights embedded in the package or on
  the Hub at a pinned revision, verified against the catalogue's sha256;
- a Hub repo id ``org/name`` (downloaded through huggingface_hub's cache; ``HF_HUB_OFFLINE=1`` reads
  the cache only);
- a local folder with ``config.json`` + ``model.safetensors`` (what :func:`save_pretrained` writes);
- a single ``.safetensors`` file written by webiml (its config travels in the file's metadata, or in a
  ``config.json`` beside it).

``SomeModel.from_pretrained(x)`` is the same function with a class check. Saving and pushing are
:class:`huggingface_hub.PyTorchModelHubMixin`'s ``save_pretrained`` / ``push_to_hub`` on
:class:`~webiml.models.base.HubModel` (IML models and CAAAv2 pair parts), whose hooks here write the files atomically
(:func:`write_pretrained`) with a model card built from the catalogue (:func:`build_model_card`).

Weights are only ever read with safetensors: pickled checkpoints (``.pth``, ``.ckpt``, ``.bin``) are
refused with a pointer to ``webiml export`` / ``webiml convert``. Loading is strict by default.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from webiml.catalogue import STATUSES, CatalogueEntry, catalogue_path, hub_license, load_catalogue
from webiml.catalogue import validate_catalogue as _validate_catalogue
from webiml.io import atomic_write_bytes, atomic_write_text, sha256_file
from webiml.models import registry
from webiml.models.base import HubModel, IMLModel
from webiml.models.registry import create_model, list_models

__all__ = [
    "STATUSES",
    "CatalogueEntry",
    "CheckpointError",
    "catalogue_path",
    "create_model",
    "from_pretrained",
    "list_models",
    "load_catalogue",
    "build_model_card",
    "save_pretrained",
    "sha256_of",
    "validate_catalogue",
]

CONFIG_NAME = "config.json"
THRESHOLDS_KEY = "thresholds"
"""Key of ``config.json`` (and of a catalogue entry) holding the model's decision thresholds, not a constructor argument."""
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message says which file and what is wrong."""


def validate_catalogue(data: Any, where: str = "checkpoints.yaml") -> list[CatalogueEntry]:
    """:func:`webiml.catalogue.validate_catalogue` that also checks every loadable entry's architecture is
    a registered model class (imports the models)."""
    registry._ensure_builtin()
    return _validate_catalogue(data, where, architectures=[n for n in registry.list_models() if registry.is_architecture(n)])


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
sha256_of = sha256_file
"""The SHA-256 hex digest of a file (:func:`webiml.io.sha256_file`, kept under this name for callers of the hub API)."""


MAX_PARAMETERS = 4_000_000_000
"""A config building more parameters (and buffers) than this is refused before anything is allocated."""

FETCHING_MARKERS = ("hf-hub:", "hf_hub:", "local-dir:", "http://", "https://", "file:", "s3://", "gs://")
"""Prefixes by which timm / smp names fetch weights or configs from elsewhere: never followed from a checkpoint."""


def neutral_init_overrides(cls: type[HubModel]) -> dict[str, Any]:
    """``cls.pretrained_init_overrides`` limited to its constructor's parameters: the arguments that would
    fetch initial weights (``encoder_weights``, ``backbone_weights``...), set to fetch nothing."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in cls.pretrained_init_overrides.items() if k in params}


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _guilty_key(config: dict[str, Any], err: BaseException) -> str:
    """`` (key 'arch')`` when the error message names a config value (e.g. an unknown smp architecture)."""
    text = str(err)
    for key, value in config.items():
        if isinstance(value, str) and value and value in text:
            return f" (key {key!r} = {value!r})"
    return ""


def _refuse_fetching(value: Any, where: str, key: str = "") -> None:
    """Refuse a config whose strings would make timm / smp fetch anything (a Hub repo, a URL, a local folder):
    a checkpoint holds its own weights, and its config may not cause network access or reads elsewhere."""
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_fetching(v, where, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _refuse_fetching(v, where, f"{key}[{i}]")
    elif isinstance(value, str) and any(m in value.lower() for m in FETCHING_MARKERS):
        raise CheckpointError(f"{where}: key {key!r} = {value!r} names something to fetch (a Hub repo, URL or folder); "
                              "a checkpoint's config may only name built-in encoders")


def build_model(architecture: str, config: dict[str, Any], where: str = "<config>",
                model_class: type[HubModel] = HubModel) -> HubModel:
    """Instantiate a registered architecture from its saved constructor config (no pretrained downloads).

    Only classes of :mod:`webiml.models.registry` may be named (IML models and the CAAAv2 pair models),
    and the class must be ``model_class`` or a subclass of it. Every argument that fetches initial weights
    is neutralised (:func:`neutral_init_overrides`), names that would fetch anything (``hf-hub:``, URLs,
    ``local-dir:``) are refused, and the model is first built on the meta device, so that bad or absurd
    sizes are one :class:`CheckpointError` naming ``where`` and, where it can tell, the key."""
    if not isinstance(architecture, str):
        raise CheckpointError(f"{where}: 'architecture' must be a class name (a string), got {type(architecture).__name__}")
    try:
        cls = registry.model_class(architecture)
    except KeyError as err:
        raise CheckpointError(f"{where}: {err.args[0]}") from None
    if not issubclass(cls, model_class):
        raise CheckpointError(f"{where}: the model is a {cls.__name__}, not a {model_class.__name__} (or a subclass); "
                              f"load it with webiml.from_pretrained or {cls.__name__}.from_pretrained")
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: the model config must be a JSON object, got {type(config).__name__}")
    config = dict(config)
    thresholds = config.pop(THRESHOLDS_KEY, None)
    _refuse_fetching(config, where)
    cfg = {**config, **neutral_init_overrides(cls)}
    try:
        with torch.device("meta"):  # sizes are checked on the meta device: nothing is allocated yet
            probe = cls(**cfg)
        params = sum(p.numel() for p in probe.parameters()) + sum(b.numel() for b in probe.buffers())
        del probe
    except Exception as err:  # unknown names, negative sizes, wrong types: whatever the constructor raises
        raise CheckpointError(f"{where}: config does not build a {cls.__name__}{_guilty_key(config, err)}: "
                              f"{type(err).__name__}: {_one_line(err)}") from None
    if params > MAX_PARAMETERS:
        raise CheckpointError(f"{where}: config builds a {cls.__name__} of {params / 1e9:.1f} billion parameters, over "
                              f"webiml's limit of {MAX_PARAMETERS / 1e9:g} billion: absurd sizes in the config")
    try:
        model = cls(**cfg)
    except Exception as err:
        raise CheckpointError(f"{where}: config does not build a {cls.__name__}{_guilty_key(config, err)}: "
                              f"{type(err).__name__}: {_one_line(err)}") from None
    if thresholds is not None:
        if not isinstance(model, IMLModel):
            raise CheckpointError(f"{where}: '{THRESHOLDS_KEY}' given, but a {cls.__name__} has no decision thresholds")
        if not isinstance(thresholds, dict) or set(thresholds) - {"pixel", "image"}:
            raise CheckpointError(f"{where}: '{THRESHOLDS_KEY}' must be a mapping with keys 'pixel' and/or 'image', got {thresholds!r}")
        try:
            model.set_thresholds(thresholds.get("pixel"), thresholds.get("image"))
        except ValueError as err:
            raise CheckpointError(f"{where}: {err}") from None
    return model


def load_safetensors_into(model: HubModel, path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
                          strict: bool = True) -> HubModel:
    """Load a safetensors file into ``model``; in strict mode missing or unexpected keys are a clear error."""
    path = Path(path)
    _refuse_pickle(path)
    try:
        state = load_file(str(path), device=str(map_location))
    except Exception as err:  # safetensors raises several error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path}: weights do not match {type(model).__name__}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]} (pass strict=False to load what matches)"
        )
    check_finite(state, str(path), CheckpointError)
    wrong = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if wrong:
        k = sorted(wrong)[0]
        raise CheckpointError(f"{path}: {len(wrong)} tensors have the wrong shape, e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}, strict=strict)
    return model.to(map_location).eval()


def check_finite(state: dict[str, torch.Tensor], where: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming ``where`` and the first tensor with NaN / Inf values (a diverged run's weights)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        k = sorted(bad)[0]
        n = int((~torch.isfinite(state[k])).sum())
        raise error(f"{where}: {len(bad)} tensor(s) hold NaN/Inf values, e.g. {k} ({n} of {state[k].numel()}); "
                    "the weights are broken (a diverged training run?)")


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: webiml never unpickles checkpoints. Export a Lightning checkpoint with "
            f"`webiml export {path} OUT_DIR`, or convert an upstream checkpoint with `webiml convert ARCH {path} OUT_DIR`."
        )


def resolve_file(model_id: str, filename: str, *, revision: str | None = None, cache_dir: Any = None,
                 force_download: bool = False, local_files_only: bool = False, token: Any = None) -> Path:
    """A file of a local folder or of a Hub repo (downloaded into, or read from, the huggingface_hub cache)."""
    if os.path.isdir(model_id):
        path = Path(model_id) / filename
        if not path.is_file():
            raise CheckpointError(f"{model_id}: no {filename} in this folder")
        return path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(model_id, filename, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                    local_files_only=local_files_only, token=token))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{model_id}: {filename} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"(offline: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). Download it once with network access, "
            "or pass a local folder."
        ) from None
    except (EntryNotFoundError, RepositoryNotFoundError) as err:
        raise CheckpointError(f"{model_id}: {filename} not found on the Hub ({type(err).__name__})") from None


def _read_config(path: Path, model_class: type[HubModel] = HubModel) -> tuple[str, dict[str, Any]]:
    """Architecture and constructor config of a ``config.json``. A config without ``architecture`` (written
    by huggingface_hub's plain mixin, as CAAAv2 parts were before they used webiml's hooks) is read as
    ``model_class`` when that is a registered architecture (``SPGSegmenter.from_pretrained(old_folder)``)."""
    try:
        with path.open(encoding="utf-8") as f:
            cfg = json.load(f)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"{path}: not valid JSON ({_one_line(err)})") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, got {type(cfg).__name__}")
    arch = cfg.pop("architecture", None)
    cfg.pop("webiml_version", None)
    if not arch and registry.is_architecture(model_class.__name__) and registry.model_class(model_class.__name__) is model_class:
        arch = model_class.__name__
    if not arch:
        raise CheckpointError(f"{path}: no 'architecture' key; not a webiml config.json")
    return arch, cfg


def _config_from_safetensors(path: Path) -> tuple[str, dict[str, Any]] | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if "webiml_architecture" not in meta:
        return None
    try:
        config = json.loads(meta.get("webiml_config", "{}"))
        if "webiml_thresholds" in meta:
            config[THRESHOLDS_KEY] = json.loads(meta["webiml_thresholds"])
    except (ValueError, TypeError, RecursionError) as err:
        raise CheckpointError(f"{path}: invalid JSON in the file's webiml metadata ({_one_line(err)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the file's webiml_config metadata is not a JSON object")
    return meta["webiml_architecture"], config


def _load_local_file(path: Path, map_location: Any, strict: bool, model_class: type[HubModel]) -> HubModel:
    _refuse_pickle(path)
    found = _config_from_safetensors(path)
    if found is None and (path.parent / CONFIG_NAME).is_file():
        found = _read_config(path.parent / CONFIG_NAME, model_class)
    if found is None:
        raise CheckpointError(f"{path}: no webiml config in the file's metadata and no config.json beside it")
    model = build_model(*found, where=str(path), model_class=model_class)
    return load_safetensors_into(model, path, map_location=map_location, strict=strict)


def _embedded_path(relative: str) -> Path:
    return Path(str(resources.files("webiml") / relative))


def from_pretrained(name_or_path: str | os.PathLike[str], *, revision: str | None = None,
                    map_location: str | torch.device = "cpu", strict: bool = True,
                    catalogue: str | os.PathLike[str] | None = None, model_class: type[HubModel] = HubModel,
                    **hub_kwargs: Any) -> HubModel:
    """Load a pretrained model (catalogue name, Hub repo id, local folder or ``.safetensors`` file): an IML
    model, or a CAAAv2 pair part (``webiml export`` of a pair task, ``classifier/`` of a parts folder).

    The model is returned in eval mode on ``map_location``. ``model_class``: the loaded architecture must
    be this class or a subclass (``SmpIML.from_pretrained(x)`` passes ``SmpIML``). ``hub_kwargs``
    (``cache_dir``, ``force_download``, ``local_files_only``, ``token``) go to ``hf_hub_download``.
    """
    unknown = set(hub_kwargs) - {"cache_dir", "force_download", "local_files_only", "token"}
    if unknown:
        raise TypeError(f"from_pretrained got unexpected keyword arguments {sorted(unknown)}")
    target = str(name_or_path)
    path = Path(target).expanduser()
    if path.exists():
        if path.is_dir():
            if not (path / CONFIG_NAME).is_file():
                raise CheckpointError(f"{path}: a pretrained folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
            model = build_model(*_read_config(path / CONFIG_NAME, model_class), where=str(path / CONFIG_NAME), model_class=model_class)
            return load_safetensors_into(model, resolve_file(str(path), WEIGHTS_NAME), map_location=map_location, strict=strict)
        return _load_local_file(path, map_location, strict, model_class)
    _refuse_pickle(path)

    entries = load_catalogue(catalogue)
    if target in entries:
        return _load_catalogue_entry(entries[target], revision, map_location, strict, model_class, hub_kwargs)
    if target.count("/") == 1 and not target.startswith((".", "/")):
        folder = Path(resolve_file(target, CONFIG_NAME, revision=revision, **hub_kwargs)).parent
        model = build_model(*_read_config(folder / CONFIG_NAME, model_class), where=f"{target}/{CONFIG_NAME}", model_class=model_class)
        weights = resolve_file(target, WEIGHTS_NAME, revision=revision, **hub_kwargs)
        return load_safetensors_into(model, weights, map_location=map_location, strict=strict)
    close = fnmatch.filter(entries, f"*{target}*")[:5]
    raise CheckpointError(
        f"{target!r} is not a file, a folder, a catalogue name or a Hub repo id (org/name)."
        + (f" Did you mean {close}?" if close else " See `webiml zoo list`.")
    )


def _load_catalogue_entry(entry: CatalogueEntry, revision: str | None, map_location: Any, strict: bool,
                          model_class: type[HubModel], hub_kwargs: dict[str, Any]) -> HubModel:
    if not entry.loadable:
        how = entry.weights.get("url") or entry.weights.get("upstream") or "no public weights"
        raise CheckpointError(f"{entry.name}: status '{entry.status}', not loadable ({how}). {entry.notes}".strip())
    where = f"checkpoints.yaml:{entry.name}"
    config = {**entry.config, **({THRESHOLDS_KEY: entry.thresholds} if entry.thresholds else {})}
    model = build_model(entry.architecture, config, where=where, model_class=model_class)
    if entry.weights.get("embedded"):
        weights = _embedded_path(entry.weights["embedded"])
    else:
        hub = entry.weights["hub"]
        weights = resolve_file(hub["repo_id"], hub.get("filename", WEIGHTS_NAME), revision=revision or hub["revision"], **hub_kwargs)
    if entry.sha256:
        actual = sha256_of(weights)
        if actual != entry.sha256:
            raise CheckpointError(f"{weights}: sha256 mismatch for {entry.name}: expected {entry.sha256}, got {actual}; "
                                  "the file is corrupt or was replaced")
    return load_safetensors_into(model, weights, map_location=map_location, strict=strict)


# ---------------------------------------------------------------------------------------------
# Saving (HubModel.save_pretrained / push_to_hub are huggingface_hub's, with these two hooks)
# ---------------------------------------------------------------------------------------------
CARD_KEYS = frozenset({"catalogue_entry", "model_name", "training_data", "metrics", "license", "limitations", "notes",
                       "load_name", "intended_use"})
"""Keywords of ``save_pretrained`` that fill the model card."""

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}
{% if description %}
{{ description }}
{% endif %}
- Architecture: `{{ architecture }}` ({{ num_params }} parameters), config `{{ config }}`
- Input: RGB, normalised with mean {{ mean }} and std {{ std }} (applied by `model.normalize`)

## Usage
```python
{{ usage }}
```

## Licence
{{ license_text }}

## Training data
{{ training_data }}

## Metrics
{{ metrics }}

## Intended use
{{ intended_use }}

## Limitations
{{ limitations }}
{% if paper %}
## Reference
{{ paper }}
{% endif %}
{{ notes }}
"""

INTENDED_USE = ("Research on image forensics: localizing spliced, copy-moved, removed or retouched regions in photos, "
                "as a tool for human analysts. Scores are evidence, not proof: never use a single model's output alone "
                "to accuse anyone of manipulating an image.")
LIMITATIONS = ("Detectors trained on one kind of manipulation generalise poorly to others; heavy re-compression, "
               "resizing and screenshots destroy many traces; generative edits may go unnoticed.")
METRIC_NAMES = {"pixel_f1": "pixel F1", "pixel_iou": "pixel IoU", "pixel_f1_best": "pixel F1 (best threshold)",
                "pixel_iou_best": "pixel IoU (best threshold)", "pixel_auc": "pixel AUC", "image_auc": "image AUC",
                "image_balanced_acc": "image balanced accuracy"}


def _metric_rows(metrics: Any) -> tuple[str, list[Any]]:
    """Markdown and ``EvalResult`` s (model-index) from catalogue metrics rows (``dataset``, values, ``command``)."""
    from huggingface_hub import EvalResult

    if not metrics:
        return "Not measured yet.", []
    if isinstance(metrics, str):
        return metrics, []
    lines, results = [], []
    for row in metrics:
        values = {k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        lines.append(f"- {row.get('dataset', '?')}: " + ", ".join(f"{METRIC_NAMES.get(k, k)} {v:.3f}" for k, v in values.items())
                     + (f" (`{row['command']}`)" if row.get("command") else ""))
        results += [EvalResult(task_type="image-segmentation", task_name="Image manipulation localization",
                               dataset_type="custom", dataset_name=str(row.get("dataset", "unnamed")), metric_type=k,
                               metric_name=METRIC_NAMES.get(k, k), metric_value=float(v)) for k, v in values.items()]
    return "\n".join(lines), results


def build_model_card(model: HubModel, **kwargs: Any) -> Any:
    """A :class:`huggingface_hub.ModelCard` for ``model`` (``ModelCardData`` metadata + the card text).

    ``catalogue_entry`` (a :class:`CatalogueEntry` or a catalogue name) fills everything from the zoo
    catalogue: licence of the *weights*, training data, metrics (as ``model-index``), name, paper. Single
    keywords (:data:`CARD_KEYS`) override it. Without a licence the card says ``other`` / unspecified: a
    model's licence follows its training data, which only its author knows.
    """
    from huggingface_hub import ModelCard, ModelCardData

    unknown = set(kwargs) - CARD_KEYS
    if unknown:
        raise TypeError(f"unknown model card keywords {sorted(unknown)}; known: {sorted(CARD_KEYS)}")
    entry = kwargs.get("catalogue_entry")
    if isinstance(entry, str):
        entry = load_catalogue()[entry]
    info: dict[str, Any] = {}
    if entry is not None:
        training = "; ".join(f"{k}: {v}" for k, v in entry.training.items() if k != "command")
        info = {"model_name": entry.name, "load_name": entry.name, "license": entry.license, "training_data": training,
                "metrics": entry.metrics, "notes": entry.notes, "description": entry.description, "paper": entry.paper}
    info.update({k: v for k, v in kwargs.items() if v is not None and k != "catalogue_entry"})
    license_text = info.get("license") or "Not specified by the model's author (check the training data's terms)."
    license_id, license_name = hub_license(info.get("license") or "")
    metrics_text, eval_results = _metric_rows(info.get("metrics"))
    name = info.get("model_name") or f"webiml {type(model).__name__}"
    mixin = model._hub_mixin_info.model_card_data
    data = ModelCardData(
        library_name=mixin.library_name, pipeline_tag=mixin.pipeline_tag, tags=list(mixin.tags or []),
        license=license_id, license_name=license_name, model_name=name if eval_results else None,
        eval_results=eval_results or None,
    )
    notes = getattr(sys.modules.get(type(model).__module__), "MODEL_CARD_NOTES", "")
    repo_url = model._hub_mixin_info.repo_url
    load_name = info.get("load_name") or "path/to/this/folder"
    return ModelCard.from_template(
        data, template_str=MODEL_CARD_TEMPLATE, repo_url=repo_url, model_name=name,
        summary=model.card_summary.format(repo_url=repo_url), usage=model.card_usage.format(load_name=load_name),
        description=info.get("description", ""), architecture=type(model).__name__,
        num_params=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M",
        config=json.dumps(model.config, sort_keys=True),
        mean=[round(float(v), 4) for v in model.input_mean.flatten()],
        std=[round(float(v), 4) for v in model.input_std.flatten()],
        license_text=license_text,
        training_data=info.get("training_data") or "Not recorded.", metrics=metrics_text,
        intended_use=info.get("intended_use") or INTENDED_USE, limitations=info.get("limitations") or LIMITATIONS,
        paper=info.get("paper") or "", notes="\n\n".join(n for n in (info.get("notes"), notes) if n),
    )


def write_pretrained(model: HubModel, save_directory: str | os.PathLike[str], *, dtype: torch.dtype | str | None = None,
                     card: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` (config in its metadata), ``config.json`` and ``README.md``, each atomically
    (temporary file + rename, usual permissions). The hook behind :meth:`HubModel.save_pretrained`; the
    decision thresholds are saved for :class:`IMLModel` s (pair models have none)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    out = Path(save_directory)
    thresholds = model.thresholds if isinstance(model, IMLModel) else None
    config = {"architecture": type(model).__name__, **model.config, **({THRESHOLDS_KEY: thresholds} if thresholds else {})}
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    check_finite(state, f"{type(model).__name__} saved to {out}")  # before anything is written
    meta = {"webiml_architecture": config["architecture"], "webiml_config": json.dumps(model.config, sort_keys=True),
            **({"webiml_thresholds": json.dumps(thresholds, sort_keys=True)} if thresholds else {}), "format": "pt"}
    atomic_write_bytes(out / WEIGHTS_NAME, safetensors_bytes(state, metadata=meta))
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "README.md", str(build_model_card(model, **(card or {}))))


def save_pretrained(model: HubModel, save_directory: str | os.PathLike[str], **kwargs: Any) -> Any:
    """``model.save_pretrained(save_directory, **kwargs)``: see :meth:`HubModel.save_pretrained`."""
    return model.save_pretrained(save_directory, **kwargs)
