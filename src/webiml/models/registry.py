"""The one registry of IML models, after timm's ``@register_model``.

Two kinds of names live in one table:

- **architectures**: every concrete :class:`~webiml.models.base.HubModel` subclass registers itself under
  its class name when it is defined: the IML models (``SmpIML``, ``WebIML``, ``APSCNet``) and the CAAAv2
  pair parts (``PairClassifier``, ``SPGSegmenter``, ``SDGSegmenter``). These are the only classes a saved
  or downloaded ``config.json`` may name: loading never imports anything a file asks for.
- **variants**: builder functions decorated with :func:`register_model` (``web_iml_tiny``, ``apsc_net``),
  named by the function, returning an instance of a registered architecture.

Catalogue names (``checkpoints.yaml``, pretrained weights) complete the namespace of
:func:`create_model` / :func:`list_models`: ``create_model("web_iml_tiny")``,
``create_model("SmpIML", arch="FPN", encoder="tu-resnet18")`` and
``create_model("iml-unet-lite0-synthetic", pretrained=True)`` all work.

The built-in names are imported lazily: :data:`BUILTIN_MODULES` says which module defines each one, a
look-up imports only that module (``webiml localize`` with an SmpIML checkpoint never imports APSC-Net's
timm / torchvision stack), and :func:`list_models` lists them without importing any.
"""

from __future__ import annotations

import fnmatch
import importlib
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from webiml.models.base import HubModel

__all__ = ["BUILTIN_MODULES", "architecture_of", "create_model", "is_architecture", "list_models", "model_class", "register_model"]

F = TypeVar("F", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}
"""name -> architecture class or variant builder."""


BUILTIN_MODULES: dict[str, str] = {
    "AdaptiveCFA": "webiml.models.adaptive_cfa",
    "apsc_net_base": "webiml.models.apsc_net",
    "apsc_net_tiny": "webiml.models.apsc_net",
    "APSCNet": "webiml.models.apsc_net",
    "CAAAv1Classifier": "webiml.models.caaa_v1",
    "CATNet": "webiml.models.cat_net",
    "DASS": "webiml.models.caaa_v1",
    "iml_vit_base": "webiml.models.iml_vit",
    "iml_vit_tiny": "webiml.models.iml_vit",
    "IMLViT": "webiml.models.iml_vit",
    "Mesorch": "webiml.models.mesorch",
    "mesorch_base": "webiml.models.mesorch",
    "mesorch_tiny": "webiml.models.mesorch",
    "MVSSNet": "webiml.models.mvss_net",
    "Noiseprint": "webiml.models.noiseprint",
    "NoiseprintPP": "webiml.models.noiseprint",
    "PairClassifier": "webiml.models.caaa",
    "PSCCNet": "webiml.models.pscc_net",
    "SACM": "webiml.models.caaa_v1",
    "SDGSegmenter": "webiml.models.caaa",
    "SmpIML": "webiml.models.baselines.smp_models",
    "SparseViT": "webiml.models.sparse_vit",
    "SPGSegmenter": "webiml.models.caaa",
    "TruFor": "webiml.models.trufor",
    "trufor": "webiml.models.trufor",
    "trufor_tiny": "webiml.models.trufor",
    "web_iml_base": "webiml.models.web_iml",
    "web_iml_small": "webiml.models.web_iml",
    "web_iml_tiny": "webiml.models.web_iml",
    "WebIML": "webiml.models.web_iml",
}
"""Built-in name -> the module that registers it when imported (kept complete by tests/test_registry.py)."""


def register_model(fn: F) -> F:
    """Register an architecture class or a variant builder under its ``__name__`` (decorator).

    Registering a second, different object under a taken name is an error, so a name means one model.
    A re-definition of the same qualified name (a module reloaded, a test class redefined) replaces it.
    """
    name = fn.__name__
    old = _REGISTRY.get(name)
    if old is not None and old is not fn and _qualname(old) != _qualname(fn):
        raise ValueError(f"model name {name!r} is already registered by {_qualname(old)}; cannot register {_qualname(fn)}")
    _REGISTRY[name] = fn
    return fn


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _ensure_builtin() -> None:
    """Import every built-in model module (registers all of them)."""
    for module in sorted(set(BUILTIN_MODULES.values())):
        importlib.import_module(module)


def _ensure(name: str) -> None:
    """Import the module that registers the built-in ``name`` (nothing for other names)."""
    module = BUILTIN_MODULES.get(name)
    if module is not None and name not in _REGISTRY:
        importlib.import_module(module)


def is_architecture(name: str) -> bool:
    """Whether ``name`` is a registered architecture class (what a config may name)."""
    _ensure(name)
    return isinstance(_REGISTRY.get(name), type)


def model_class(name: str) -> type[HubModel]:
    """The registered architecture class called ``name`` (a dotted ``module.Class`` is matched by its last
    part); ``KeyError`` for anything else: a variant, an unknown name, an arbitrary import path."""
    short = name.rsplit(".", 1)[-1]
    _ensure(short)
    cls = _REGISTRY.get(short)
    if not isinstance(cls, type):
        _ensure_builtin()
        known = sorted(k for k, v in _REGISTRY.items() if isinstance(v, type))
        raise KeyError(f"unknown architecture {name!r}; known: {known}")
    return cls


def architecture_of(name: str) -> type[HubModel]:
    """The class a registered name builds: the class itself, or a variant builder's return annotation."""
    _ensure(name)
    fn = _REGISTRY[name]
    if isinstance(fn, type):
        return fn
    return typing.get_type_hints(fn)["return"]


def list_models(pattern: str = "*", *, pretrained: bool = False, catalogue: str | None = None) -> list[str]:
    """Names that :func:`create_model` accepts, matching a glob ``pattern`` (like ``timm.list_models``).

    Registered architectures and variants, and the catalogue's models (``webiml zoo list``). With
    ``pretrained=True`` only names whose weights load (catalogue entries with status available/converted).
    """
    from webiml.catalogue import load_catalogue

    entries = load_catalogue(catalogue)
    names = {n for n, e in entries.items() if e.loadable or not pretrained}
    if not pretrained:
        names |= {n for n in [*_REGISTRY, *BUILTIN_MODULES] if not n.startswith("_")}
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def create_model(name: str, *, pretrained: bool = False, **kwargs: Any) -> HubModel:
    """Build a model by name: a registered variant or architecture (``kwargs`` go to its constructor) or a
    catalogue name (its config, updated by ``kwargs``). ``pretrained=True`` loads a catalogue model's
    weights (see :func:`webiml.from_pretrained`); no constructor overrides with it."""
    from webiml.catalogue import load_catalogue

    _ensure(name)
    entries = load_catalogue()
    if pretrained:
        if kwargs:
            raise ValueError("constructor overrides cannot be combined with pretrained=True")
        if name not in entries or not entries[name].loadable:
            loadable = [n for n, e in entries.items() if e.loadable]
            raise KeyError(f"no pretrained weights called {name!r}; loadable: {loadable} (webiml.list_models(pretrained=True))")
        from webiml.hub import from_pretrained

        return from_pretrained(name)
    if name in _REGISTRY:
        return _REGISTRY[name](**kwargs)
    if name in entries:
        from webiml.hub import build_model

        entry = entries[name]
        return build_model(entry.architecture, {**entry.config, **kwargs}, where=f"checkpoints.yaml:{name}")
    close = fnmatch.filter(list_models(), f"*{name}*")[:5]
    raise KeyError(f"unknown model {name!r}" + (f"; did you mean {close}?" if close else "; see webiml.list_models()"))
