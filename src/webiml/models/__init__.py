"""IML models: plain ``nn.Module`` s following the contract of :mod:`webiml.models.base`.

Every :class:`IMLModel` subclass and every named variant (``web_iml_tiny``, ``apsc_net_base``, ...)
registers in :mod:`webiml.models.registry`: ``create_model(name, **kwargs)``, ``list_models(pattern)``.
"""

from webiml.models.adaptive_cfa import AdaptiveCFA
from webiml.models.apsc_net import APSCNet
from webiml.models.base import IMLModel, IMLOutput
from webiml.models.baselines import SmpIML
from webiml.models.caaa import PairClassifier, SDGSegmenter, SPGSegmenter
from webiml.models.noiseprint import NoiseprintPP
from webiml.models.registry import create_model, list_models, register_model
from webiml.models.web_iml import WebIML, web_iml_base, web_iml_small, web_iml_tiny

__all__ = [
    "AdaptiveCFA",
    "APSCNet",
    "PairClassifier",
    "SDGSegmenter",
    "SPGSegmenter",
    "IMLModel",
    "IMLOutput",
    "NoiseprintPP",
    "SmpIML",
    "create_model",
    "list_models",
    "register_model",
    "WebIML",
    "web_iml_base",
    "web_iml_small",
    "web_iml_tiny",
]
