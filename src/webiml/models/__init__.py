"""IML models: plain ``nn.Module`` s following the contract of :mod:`webiml.models.base`."""

from webiml.models.apsc_net import APSCNet, apsc_net
from webiml.models.base import MODEL_CLASSES, IMLModel, IMLOutput
from webiml.models.baselines import SmpIML
from webiml.models.web_iml import WebIML, web_iml, web_iml_base, web_iml_small, web_iml_tiny

__all__ = [
    "MODEL_CLASSES",
    "APSCNet",
    "IMLModel",
    "IMLOutput",
    "SmpIML",
    "WebIML",
    "apsc_net",
    "web_iml",
    "web_iml_base",
    "web_iml_small",
    "web_iml_tiny",
]
