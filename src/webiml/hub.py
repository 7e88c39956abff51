"""Loading and saving pretrained models: the zoo catalogue, the Hugging Face Hub, local folders and files.

``from_pretrained(name_or_path)`` accepts

- a catalogue name from ``checkpoints.yaml`` (``webiml zoo list``): weights embedded in the package or on
  the Hub at a pinned revision, verified against the catalogue's sha256;
- a Hub repo id ``org/name`` (downloaded through huggingface_hub's cache; ``HF_HUB_OFFLINE=1`` reads
  the cache only);
- a local folder with ``config.json`` + ``model.safetensors`` (what :func:`save_pretrained` writes);
- a single ``.safetensors`` file written by webiml (its config travels in the file's metadata, or in a
  ``config.json`` beside it).

Weights are only ever read with safetensors: pickled checkpoints (``.pth``, ``.ckpt``, ``.bin``) are
refused with a pointer to ``webiml export`` / ``webiml convert``. Loading is strict by default.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from webiml.catalogue import STATUSES, CatalogueEntry, catalogue_path, list_models, load_catalogue
from webiml.catalogue import validate_catalogue as _validate_catalogue
from webiml.io import _default_mode, atomic_write_text
from webiml.models.base import MODEL_CLASSES, IMLModel

__all__ = [
    "STATUSES",
    "CatalogueEntry",
    "CheckpointError",
    "catalogue_path",
    "create_model",
    "from_pretrained",
    "list_models",
    "load_catalogue",
    "push_to_hub",
    "save_pretrained",
    "sha256_of",
    "validate_catalogue",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message says which file and what is wrong."""


def validate_catalogue(data: Any, where: str = "checkpoints.yaml") -> list[CatalogueEntry]:
    """:func:`webiml.catalogue.validate_catalogue` that also checks every loadable entry's architecture is
    a registered :class:`IMLModel` class (imports the models)."""
    return _validate_catalogue(data, where, architectures=MODEL_CLASSES)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_class(name: str, where: str) -> type[IMLModel]:
    # Importing the model package registers every built-in architecture.
    import webiml.models  # noqa: F401

    cls = MODEL_CLASSES.get(name.rsplit(".", 1)[-1])
    if cls is None:
        raise CheckpointError(f"{where}: unknown architecture {name!r}; known: {sorted(MODEL_CLASSES)}")
    return cls


def build_model(architecture: str, config: dict[str, Any], where: str = "<config>") -> IMLModel:
    """Instantiate a registered architecture from its saved constructor config (no pretrained downloads)."""
    cls = _model_class(architecture, where)
    cfg = {**config, **{k: v for k, v in cls.pretrained_init_overrides.items() if k in config}}
    try:
        return cls(**cfg)
    except TypeError as err:
        raise CheckpointError(f"{where}: config does not fit {cls.__name__}: {err}") from None


def load_safetensors_into(model: IMLModel, path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
                          strict: bool = True) -> IMLModel:
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
    wrong = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if wrong:
        k = sorted(wrong)[0]
        raise CheckpointError(f"{path}: {len(wrong)} tensors have the wrong shape, e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}, strict=strict)
    return model.to(map_location).eval()


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


def _read_config(path: Path) -> tuple[str, dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        cfg = json.load(f)
    arch = cfg.pop("architecture", None)
    cfg.pop("webiml_version", None)
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
    return meta["webiml_architecture"], json.loads(meta.get("webiml_config", "{}"))


def _load_local_file(path: Path, map_location: Any, strict: bool) -> IMLModel:
    _refuse_pickle(path)
    found = _config_from_safetensors(path)
    if found is None and (path.parent / CONFIG_NAME).is_file():
        found = _read_config(path.parent / CONFIG_NAME)
    if found is None:
        raise CheckpointError(f"{path}: no webiml config in the file's metadata and no config.json beside it")
    model = build_model(*found, where=str(path))
    return load_safetensors_into(model, path, map_location=map_location, strict=strict)


def _embedded_path(relative: str) -> Path:
    return Path(str(resources.files("webiml") / relative))


def from_pretrained(name_or_path: str | os.PathLike[str], *, revision: str | None = None,
                    map_location: str | torch.device = "cpu", strict: bool = True,
                    catalogue: str | os.PathLike[str] | None = None) -> IMLModel:
    """Load a pretrained IML model (catalogue name, Hub repo id, local folder or ``.safetensors`` file).

    The model is returned in eval mode on ``map_location``.
    """
    target = str(name_or_path)
    path = Path(target).expanduser()
    if path.exists():
        if path.is_dir():
            if not (path / CONFIG_NAME).is_file():
                raise CheckpointError(f"{path}: a pretrained folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
            model = build_model(*_read_config(path / CONFIG_NAME), where=str(path / CONFIG_NAME))
            return load_safetensors_into(model, resolve_file(str(path), WEIGHTS_NAME), map_location=map_location, strict=strict)
        return _load_local_file(path, map_location, strict)
    _refuse_pickle(path)

    entries = load_catalogue(catalogue)
    if target in entries:
        return _load_catalogue_entry(entries[target], revision, map_location, strict)
    if target.count("/") == 1 and not target.startswith((".", "/")):
        folder = Path(resolve_file(target, CONFIG_NAME, revision=revision)).parent
        model = build_model(*_read_config(folder / CONFIG_NAME), where=f"{target}/{CONFIG_NAME}")
        weights = resolve_file(target, WEIGHTS_NAME, revision=revision)
        return load_safetensors_into(model, weights, map_location=map_location, strict=strict)
    close = fnmatch.filter(entries, f"*{target}*")[:5]
    raise CheckpointError(
        f"{target!r} is not a file, a folder, a catalogue name or a Hub repo id (org/name)."
        + (f" Did you mean {close}?" if close else " See `webiml zoo list`.")
    )


def _load_catalogue_entry(entry: CatalogueEntry, revision: str | None, map_location: Any, strict: bool) -> IMLModel:
    if not entry.loadable:
        how = entry.weights.get("url") or entry.weights.get("upstream") or "no public weights"
        raise CheckpointError(f"{entry.name}: status '{entry.status}', not loadable ({how}). {entry.notes}".strip())
    if entry.weights.get("embedded"):
        weights = _embedded_path(entry.weights["embedded"])
    else:
        hub = entry.weights["hub"]
        weights = resolve_file(hub["repo_id"], hub.get("filename", WEIGHTS_NAME), revision=revision or hub["revision"])
    if entry.sha256:
        actual = sha256_of(weights)
        if actual != entry.sha256:
            raise CheckpointError(f"{weights}: sha256 mismatch for {entry.name}: expected {entry.sha256}, got {actual}; "
                                  "the file is corrupt or was replaced")
    model = build_model(entry.architecture, entry.config, where=f"checkpoints.yaml:{entry.name}")
    return load_safetensors_into(model, weights, map_location=map_location, strict=strict)


def create_model(name: str, *, pretrained: bool = False, **overrides: Any) -> IMLModel:
    """Build a catalogue model by name; with ``pretrained=True`` its weights are loaded (see :func:`from_pretrained`)."""
    if pretrained:
        if overrides:
            raise ValueError("constructor overrides cannot be combined with pretrained=True")
        return from_pretrained(name)
    entries = load_catalogue()
    if name not in entries:
        close = fnmatch.filter(entries, f"*{name}*")[:5]
        raise KeyError(f"unknown model {name!r}" + (f"; did you mean {close}?" if close else "; see webiml.list_models()"))
    entry = entries[name]
    return build_model(entry.architecture, {**entry.config, **overrides}, where=f"checkpoints.yaml:{name}")


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------
def _card_kwargs(model: IMLModel, extra: dict[str, Any]) -> dict[str, Any]:
    mean = [round(float(v), 4) for v in model.input_mean.flatten()]
    std = [round(float(v), 4) for v in model.input_std.flatten()]
    n = sum(p.numel() for p in model.parameters())
    # A model module may document its provenance (paper / upstream code / own choices) for the card.
    notes = getattr(sys.modules.get(type(model).__module__), "MODEL_CARD_NOTES", "")
    return {"architecture": type(model).__name__, "num_params": f"{n / 1e6:.1f}M", "mean": mean, "std": std,
            "notes": notes, **extra}


def save_pretrained(model: IMLModel, save_directory: str | os.PathLike[str], *, push_to_hub: bool = False,
                    repo_id: str | None = None, dtype: torch.dtype | str | None = None, **kwargs: Any) -> Any:
    """Write ``config.json`` + ``model.safetensors`` + ``README.md`` (model card) atomically into a folder.

    ``kwargs`` fill the model card (``model_name``, ``training_data``, ``metrics``, ``limitations``,
    ``notes``); with ``push_to_hub=True`` the folder is then uploaded to ``repo_id``. ``dtype`` (e.g.
    ``"float16"``) stores floating-point tensors in that precision to halve the file; loading casts them
    back to the model's dtype.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    card_keys = {"model_name", "training_data", "metrics", "limitations", "notes", "load_name"}
    card = {k: kwargs.pop(k) for k in list(kwargs) if k in card_keys}
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {"architecture": type(model).__name__, **model.config}
    # Weights go to a temporary file first and are renamed into place: a crash never leaves half a file.
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".safetensors.tmp", dir=out)
    os.close(fd)
    os.chmod(tmp, _default_mode())
    try:
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
                 for k, v in model.state_dict().items()}
        meta = {"webiml_architecture": config["architecture"], "webiml_config": json.dumps(model.config, sort_keys=True),
                "format": "pt"}
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, out / WEIGHTS_NAME)
    finally:
        Path(tmp).unlink(missing_ok=True)
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    card_text = str(model.generate_model_card(**_card_kwargs(model, card)))
    atomic_write_text(out / "README.md", card_text)
    if push_to_hub:
        return push_folder_to_hub(out, repo_id or out.name, **kwargs)
    return None


def push_folder_to_hub(folder: str | os.PathLike[str], repo_id: str, *, private: bool | None = None, token: Any = None,
                       commit_message: str = "Upload webiml model", revision: str | None = None) -> Any:
    """Create ``repo_id`` if needed and upload a folder written by :func:`save_pretrained`."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, revision=revision)


def push_to_hub(model: IMLModel, repo_id: str, **kwargs: Any) -> Any:
    """Save ``model`` to a temporary folder and upload it to the Hub repo ``repo_id``."""
    hub_keys = {"private", "token", "commit_message", "revision"}
    hub_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in hub_keys}
    tmp = Path(tempfile.mkdtemp(prefix="webiml-push-"))
    try:
        save_pretrained(model, tmp, **kwargs)
        return push_folder_to_hub(tmp, repo_id, **hub_kwargs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
