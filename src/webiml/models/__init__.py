"""IML models: plain ``nn.Module`` s following the contract of :mod:`webiml.models.base`."""

from webiml.models.base import IMLModel, IMLOutput
from webiml.models.baselines import SmpIML

__all__ = ["IMLModel", "IMLOutput", "SmpIML"]
