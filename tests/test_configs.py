"""Every YAML config under configs/ parses with the CLI: `webiml fit --print_config` (model and recipe configs)
and, for the protocol configs under configs/protocols, combined with a model config as their headers say
(`webiml fit|test --config <model>.yaml --config configs/protocols/<protocol>.yaml`). In-process, no training:
a typo in a key, a renamed argument or a class_path that no longer imports fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from webiml.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PROTOCOLS = sorted((CONFIGS / "protocols").glob("*.yaml"))
BENCHMARK_SPECS = sorted((CONFIGS / "benchmarks").glob("*.yaml"))
MODEL_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent not in (CONFIGS / "protocols", CONFIGS / "benchmarks"))
MODEL_FOR_PROTOCOLS = CONFIGS / "embedded" / "unet_lite0_natural.yaml"


def _print_config(capsys: pytest.CaptureFixture[str], verb: str, *configs: Path) -> dict[str, Any]:
    args = [verb, *(a for c in configs for a in ("--config", str(c))), "--print_config"]
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    assert e.value.code == 0, f"webiml {' '.join(args)} failed:\n{out.err[-3000:]}"
    return yaml.safe_load(out.out)


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def test_every_config_is_covered() -> None:
    assert len(PROTOCOLS) >= 7 and len(MODEL_CONFIGS) >= 8
    assert set(PROTOCOLS) | set(MODEL_CONFIGS) | set(BENCHMARK_SPECS) == set(CONFIGS.rglob("*.yaml"))


@pytest.mark.parametrize("path", BENCHMARK_SPECS, ids=lambda p: p.stem)
def test_benchmark_spec_names_configs_that_exist(path: Path) -> None:
    """A `webiml benchmark` spec (not a LightningCLI config): every model and training config it names exists."""
    from webiml.benchmark import load_spec

    spec = load_spec(path)
    repo = CONFIGS.parent
    assert spec.models and spec.training
    for config in [*spec.models.values(), *spec.training.values()]:
        assert (repo / config).is_file(), f"{path.name} names {config}, which does not exist"


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_model_config_prints(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _load(path)
    printed = _print_config(capsys, "fit", path)
    for part in ("model", "data"):
        if part in raw and "class_path" in raw[part]:
            assert printed[part]["class_path"].rsplit(".", 1)[-1] == raw[part]["class_path"].rsplit(".", 1)[-1]
    net = raw.get("model", {}).get("init_args", {}).get("net")
    if isinstance(net, dict) and "class_path" in net:
        assert printed["model"]["init_args"]["net"]["class_path"].endswith(net["class_path"].rsplit(".", 1)[-1])


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.stem)
def test_protocol_with_model_config_prints(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A protocol replaces the model config's data (the later --config wins) and keeps its model."""
    raw = _load(path)
    verb = "fit" if "train" in raw.get("data", {}).get("init_args", {}) else "test"
    printed = _print_config(capsys, verb, MODEL_FOR_PROTOCOLS, path)
    model = _load(MODEL_FOR_PROTOCOLS)["model"]
    assert printed["model"]["class_path"].endswith(model["class_path"].rsplit(".", 1)[-1])
    data = raw.get("data", {})
    if "class_path" in data:
        assert printed["data"]["class_path"].endswith(data["class_path"].rsplit(".", 1)[-1])
    for key, value in data.get("init_args", {}).items():
        assert printed["data"]["init_args"][key] == value, key
