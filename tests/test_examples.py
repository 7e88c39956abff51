"""The scripts in examples/ run as a third party would run them."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from webiml.models import SmpIML, WebIML

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def model_and_photo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ex")
    torch.manual_seed(0)
    SmpIML(arch="FPN").save_pretrained(root / "model")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(root / "photo.png")
    return root / "model", root / "photo.png"


def _run(script: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")


def test_inference_example(model_and_photo, monkeypatch, capsys) -> None:
    model, photo = model_and_photo
    _run("inference_from_pretrained.py", [str(photo), "--model", str(model)], monkeypatch)
    assert "photo.png:" in capsys.readouterr().out


def test_heatmap_example(model_and_photo, monkeypatch, tmp_path) -> None:
    model, photo = model_and_photo
    _run("plot_heatmap.py", [str(photo), str(tmp_path / "h.png"), "--model", str(model)], monkeypatch)
    assert Image.open(tmp_path / "h.png").size == (3 * 128 + 16, 96)


def test_model_card_carries_model_notes(tmp_path) -> None:
    WebIML(size="tiny").save_pretrained(tmp_path / "w")
    card = (tmp_path / "w" / "README.md").read_text()
    import webiml.models.web_iml as w

    assert w.MODEL_CARD_NOTES.strip().splitlines()[0] in card
