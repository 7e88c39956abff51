"""HTML reports of `webiml localize` and `webiml test`, opened in a real headless chromium: the page loads and
every image on it decodes; the report helpers (error map, PR histograms, number formatting)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from browser import browser, page_images
from test_cli import _config
from webiml.cli import main
from webiml.models import SmpIML
from webiml.reports import ERROR_COLOURS, error_map, format_value, pixel_histograms


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model") / "fpn"
    SmpIML(arch="FPN").save_pretrained(out)
    return out


def _check_page(page: Path, min_images: int) -> list[tuple[str, bool]]:
    with browser() as driver:
        driver.get(page.resolve().as_uri())
        assert driver.title.startswith("webiml")
        images = page_images(driver)
    assert len(images) >= min_images
    assert all(ok for _, ok in images), [src for src, ok in images if not ok]
    return images


def test_error_map_and_histograms() -> None:
    pred = np.array([[1, 1], [0, 0]], bool)
    truth = np.array([[1, 0], [1, 0]], bool)
    m = error_map(pred, truth)
    assert tuple(m[0, 0]) == ERROR_COLOURS["TP"] and tuple(m[0, 1]) == ERROR_COLOURS["FP"]
    assert tuple(m[1, 0]) == ERROR_COLOURS["FN"] and tuple(m[1, 1]) == ERROR_COLOURS["TN"]
    pos, neg = pixel_histograms(np.array([[0.9, 0.1], [0.6, 1.0]]), np.array([[1.0, 0.0], [-1.0, 1.0]]))
    assert pos.sum() == 2 and neg.sum() == 1  # the ignored pixel counts for neither
    assert format_value(16.0) == "16" and format_value(float("nan")) == "-" and format_value(0.51234) == "0.5123"


def test_localize_report_in_browser(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    out = tmp_path / "out"
    assert main(["localize", str(folder), "-m", str(model_dir), "-o", str(out), "--workers", "0", "--report-max", "2"]) == 0
    page = out / "report.html"
    text = page.read_text()
    assert "pixel <b>0.5</b>" in text and "image <b>0.5</b>" in text and text.count("verdict:") == 2
    scores = json.loads((out / "scores.json").read_text())
    top = sorted(scores["images"], key=lambda r: -r["image_score"])[:2]
    assert text.index(top[0]["name"] + "_heatmap.png") < text.index(top[1]["name"] + "_heatmap.png")  # highest first
    images = _check_page(page, min_images=2 * 4 + 2)  # 2 rows x (image, overlay, heatmap, mask) + colour bar + histogram
    assert any(src.endswith("im0.png") or src.endswith("im1.png") or src.endswith("im2.png") for src, _ in images)


def test_test_report_and_per_image_csv_in_browser(tmp_path: Path, tiny_dataset: Path) -> None:
    cfg = _config(tmp_path, tiny_dataset)
    assert main(["fit", "--config", str(cfg), "--trainer.fast_dev_run", "true"]) == 0
    assert main(["test", "--config", str(cfg)]) == 0
    pages = sorted((tmp_path / "runs").rglob("test_report/report.html"))
    assert len(pages) == 1
    out = pages[0].parent
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert {r["set"] for r in rows} == {"tinytest", "tinyval"} and len(rows) == 16  # 8 + 8 images, each once
    assert all(r["label"] in ("0", "1") for r in rows)
    manipulated = [float(r["pixel_f1"]) for r in rows if r["label"] == "1"]
    assert manipulated and all(0.0 <= f <= 1.0 for f in manipulated)
    assert all(r["pixel_f1"] == "" for r in rows if r["label"] == "0")  # undefined, not 0
    text = pages[0].read_text()
    assert "tinytest_pr.png" in text and "tinyval_f1_hist.png" in text and "error map" in text and "threshold" in text
    # 2 sets x (PR + histogram) + colour bar + per-image rows of 5 images each
    images = _check_page(pages[0], min_images=5 + 5 * 2)
    assert sum(src.endswith("_errors.png") for src, _ in images) == 16
