"""Package layering: low layers never import high ones (checked in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _loaded_after(code: str) -> list[str]:
    """Names of the modules loaded by ``code`` in a fresh interpreter that imports this checkout."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
                         env=env, capture_output=True, text=True, check=True, timeout=300)
    return out.stdout.split()


def _walk(package: str) -> str:
    """Code importing ``package`` and every module under it."""
    return (f"import importlib, pkgutil, {package} as p\n"
            f"for m in pkgutil.walk_packages(p.__path__, '{package}.'):\n"
            "    importlib.import_module(m.name)\n")


def test_models_import_no_annotation_tasks_commands_or_lightning() -> None:
    # the check, verbatim: importing webiml.models loads nothing of the higher layers
    loaded = _loaded_after("import webiml.models")
    assert not [m for m in loaded if m.startswith(("webiml.annotate", "webiml.tasks", "webiml.commands", "lightning"))]
    # and no module under webiml.models does either
    loaded = _loaded_after(_walk("webiml.models"))
    assert "webiml.models.caaa" in loaded
    assert not [m for m in loaded if m.startswith(("webiml.annotate", "webiml.tasks", "webiml.commands", "lightning"))]


ARCH_MODULES = ("webiml.models.apsc_net", "webiml.models.caaa", "webiml.models.web_iml",
                "webiml.models.adaptive_cfa", "webiml.models.noiseprint", "webiml.models.baselines.smp_models",
                "webiml.models.cat_net", "webiml.models.sparse_vit")


def test_import_models_loads_no_architecture() -> None:
    loaded = _loaded_after("import webiml.models, webiml.inference, webiml.hub\n"
                           "from webiml.models import list_models\nassert 'APSCNet' in list_models() and 'web_iml_tiny' in list_models()")
    assert not [m for m in loaded if m in ARCH_MODULES or m == "timm"]


def test_a_name_imports_only_its_module() -> None:
    loaded = _loaded_after("from webiml.models.registry import model_class\nassert model_class('webiml.models.SmpIML').__name__ == 'SmpIML'")
    assert "webiml.models.baselines.smp_models" in loaded
    assert not [m for m in loaded if m in ARCH_MODULES and m != "webiml.models.baselines.smp_models"]
    loaded = _loaded_after("from webiml.models.registry import architecture_of\nassert architecture_of('web_iml_tiny').__name__ == 'WebIML'")
    assert "webiml.models.web_iml" in loaded and "webiml.models.apsc_net" not in loaded


def test_data_imports_no_annotation_or_tasks() -> None:
    loaded = _loaded_after("import webiml.data")
    assert not [m for m in loaded if m.startswith(("webiml.annotate", "webiml.tasks"))]
    loaded = _loaded_after(_walk("webiml.data"))
    assert {"webiml.data.pair_datamodule", "webiml.data.pairs", "webiml.data.jitter"} <= set(loaded)
    assert not [m for m in loaded if m.startswith(("webiml.annotate", "webiml.tasks"))]


def test_align_is_low_level() -> None:
    loaded = _loaded_after("import webiml.align")
    assert not [m for m in loaded if m.startswith(("webiml.models", "webiml.data", "webiml.annotate", "webiml.tasks"))]


def _imports_in(package_dir: Path) -> dict[str, set[str]]:
    """Every module named by an import statement (also inside functions) of each file under ``package_dir``."""
    import ast

    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(SRC))] = names
    return found


def test_no_lazy_upward_imports() -> None:
    # imports inside functions do not show up at import time: read them from the source
    rules = {"models": ("webiml.annotate", "webiml.tasks", "webiml.commands", "lightning"),
             "data": ("webiml.annotate", "webiml.tasks", "webiml.commands")}
    bad = []
    for package, forbidden in rules.items():
        for path, names in _imports_in(SRC / "webiml" / package).items():
            bad += [f"{path}: {n}" for n in sorted(names) if n.startswith(forbidden)]
    assert not bad
