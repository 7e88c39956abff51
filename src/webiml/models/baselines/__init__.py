"""Baseline IML models."""

from webiml.models.baselines.smp_models import SmpIML

__all__ = ["SmpIML"]
