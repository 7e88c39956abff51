"""The registry's built-in table is complete, the lazy names import as before, unknown names are refused
(what a look-up imports: tests/test_layering.py)."""

from __future__ import annotations

import pytest


def test_builtin_table_is_complete() -> None:
    from webiml.models import registry

    registry._ensure_builtin()
    defined = {n: f.__module__ for n, f in registry._REGISTRY.items()
               if f.__module__.startswith("webiml.models.") and f.__module__ != "webiml.models.base"}
    assert defined == registry.BUILTIN_MODULES


def test_lazy_names_import_as_before() -> None:
    import webiml.models
    from webiml.models import APSCNet, IMLModel, SmpIML, WebIML, web_iml_tiny  # noqa: F401

    for name in webiml.models.__all__:
        assert getattr(webiml.models, name) is not None
    assert issubclass(APSCNet, IMLModel)
    assert webiml.models.caaa.PairClassifier is webiml.models.PairClassifier  # submodules as attributes
    with pytest.raises(AttributeError):
        webiml.models.no_such_thing  # noqa: B018


def test_unknown_names_refused() -> None:
    from webiml.models.registry import create_model, model_class

    for name in ("os.system", "webiml.models.registry.create_model", "web_iml_tiny", "NoSuch"):
        with pytest.raises(KeyError):
            model_class(name)
    with pytest.raises(KeyError):
        create_model("NoSuch")
