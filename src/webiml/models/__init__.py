"""IML models: plain ``nn.Module`` s following the contract of :mod:`webiml.models.base`.

The size-preset builders ``webiml.models.apsc_net.apsc_net`` and ``webiml.models.web_iml.web_iml`` are
not re-exported here: their names are those of their modules.
"""

from webiml.models.apsc_net import APSCNet
from webiml.models.base import MODEL_CLASSES, IMLModel, IMLOutput
from webiml.models.baselines import SmpIML
from webiml.models.caaa import PairClassifier, SDGSegmenter, SPGSegmenter
from webiml.models.web_iml import WebIML, web_iml_base, web_iml_small, web_iml_tiny

__all__ = [
    "MODEL_CLASSES",
    "APSCNet",
    "PairClassifier",
    "SDGSegmenter",
    "SPGSegmenter",
    "IMLModel",
    "IMLOutput",
    "SmpIML",
    "WebIML",
    "web_iml_base",
    "web_iml_small",
    "web_iml_tiny",
]
