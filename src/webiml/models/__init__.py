"""IML models: plain ``nn.Module`` s following the contract of :mod:`webiml.models.base`.

Every :class:`IMLModel` subclass and every named variant (``web_iml_tiny``, ``apsc_net_base``, ...)
registers in :mod:`webiml.models.registry`: ``create_model(name, **kwargs)``, ``list_models(pattern)``.

The architectures are imported lazily (module ``__getattr__``): ``import webiml.models`` loads only the base
classes and the registry, ``from webiml.models import APSCNet`` imports :mod:`webiml.models.apsc_net` (and timm)
on first use, and the registry imports only the module of the name it is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from webiml.models.base import IMLModel, IMLOutput
from webiml.models.registry import BUILTIN_MODULES, create_model, list_models, register_model

if TYPE_CHECKING:
    from webiml.models.adaptive_cfa import AdaptiveCFA
    from webiml.models.apsc_net import APSCNet
    from webiml.models.baselines import SmpIML
    from webiml.models.caaa import PairClassifier, SDGSegmenter, SPGSegmenter
    from webiml.models.iml_vit import IMLViT
    from webiml.models.mesorch import Mesorch
    from webiml.models.noiseprint import Noiseprint, NoiseprintPP
    from webiml.models.trufor import TruFor
    from webiml.models.web_iml import WebIML, web_iml_base, web_iml_small, web_iml_tiny

__all__ = [
    "AdaptiveCFA",
    "APSCNet",
    "PairClassifier",
    "SDGSegmenter",
    "SPGSegmenter",
    "IMLModel",
    "IMLOutput",
    "IMLViT",
    "Mesorch",
    "Noiseprint",
    "NoiseprintPP",
    "SmpIML",
    "TruFor",
    "create_model",
    "list_models",
    "register_model",
    "WebIML",
    "web_iml_base",
    "web_iml_small",
    "web_iml_tiny",
]


def __getattr__(name: str) -> Any:
    module = BUILTIN_MODULES.get(name)
    if module is None or name not in __all__:
        if name.isidentifier() and not name.startswith("_"):  # a submodule not imported yet: webiml.models.caaa
            try:
                return importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{__name__}.{name}":
                    raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
