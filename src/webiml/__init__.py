"""webiml: a PyTorch Lightning model zoo for image manipulation localization (IML).

Public API::

    import webiml
    webiml.list_models("web*", pretrained=False)       # registered models and catalogue names
    model = webiml.from_pretrained("NAME_OR_PATH")     # catalogue name, org/name, folder or .safetensors
    model = webiml.create_model("web_iml_tiny")        # or create_model("SmpIML", arch="FPN"), a catalogue name
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "from_pretrained", "list_models", "save_pretrained"]

if TYPE_CHECKING:
    from webiml.hub import from_pretrained, save_pretrained
    from webiml.models.registry import create_model, list_models


def __getattr__(name: str) -> Any:
    # Lazy: `import webiml` stays cheap; torch and the models load on first use.
    if name in ("from_pretrained", "save_pretrained"):
        from webiml import hub

        return getattr(hub, name)
    if name in ("create_model", "list_models"):
        from webiml.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'webiml' has no attribute {name!r}")
