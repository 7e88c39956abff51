"""HTML pages of `webiml localize`, `webiml test`, `webiml demo` and the `webiml annotate` contact sheet, opened in a
real headless chromium: the page loads, every image on it decodes, the colour bar and thresholds are on it, and file
names are escaped; the report helpers (error map, PR histograms, number formatting) and the heatmap colormap."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from browser import browser, page_images
from test_cli import _config
from webiml.cli import main
from webiml.models import SmpIML
from webiml.reports import ERROR_COLOURS, error_map, format_value, pixel_histograms
from webiml.viz import HEATMAP_CMAP, colorize, overlay


def _check_page(page: Path, min_images: int) -> list[tuple[str, bool]]:
    images, _ = _open_page(page, min_images)
    return images


def _open_page(page: Path, min_images: int) -> tuple[list[tuple[str, bool]], str]:
    """Open ``page`` in chromium: its title, every image decoded, no ``<script>`` element (the pages have none; an
    unescaped file name would add one). Returns the images and the page's visible text."""
    with browser() as driver:
        driver.get(page.resolve().as_uri())
        assert driver.title.startswith("webiml")
        images = page_images(driver)
        assert driver.execute_script("return document.scripts.length;") == 0
        text = driver.find_element("tag name", "body").text
    assert len(images) >= min_images
    assert all(ok for _, ok in images), [src for src, ok in images if not ok]
    assert any(src == "colour_bar.png" for src, _ in images)
    return images, text


def test_colormap_ends_and_overlay_outline() -> None:
    from matplotlib import colormaps

    ends = colormaps[HEATMAP_CMAP]([0.0, 1.0], bytes=True)[:, :3]
    heat = colorize(np.array([[0.0, 1.0, -0.5, 2.0, np.nan]]))
    assert heat.dtype == np.uint8 and heat.shape == (1, 5, 3)
    assert (heat[0, 0] == ends[0]).all() and (heat[0, 1] == ends[1]).all()  # 0 and 1: the two ends of the map
    assert (heat[0, 2] == ends[0]).all() and (heat[0, 3] == ends[1]).all() and (heat[0, 4] == ends[0]).all()
    assert heat[0, 0].sum() < heat[0, 1].sum()  # dark for authentic, bright for manipulated
    prob = np.zeros((8, 8), np.float32)
    prob[2:6, 2:6] = 1.0
    out = overlay(np.full((8, 8, 3), 128, np.uint8), prob)
    edge = (out == (255, 255, 0)).all(axis=2)
    assert edge[2, 2:6].all() and edge[5, 2:6].all() and edge[2:6, 2].all() and not edge[3:5, 3:5].any()
    assert edge.sum() == 12 and out[3, 3, 0] > out[3, 3, 1]  # the inner boundary only; red tint inside


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


def test_localize_report_escapes_a_script_file_name(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    name = "<script>alert(1)<script>"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    out = tmp_path / "out"
    assert main(["localize", str(folder), "-m", str(model_dir), "-o", str(out), "--workers", "0"]) == 0
    text = (out / "report.html").read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;script&gt;" in text
    images, shown = _open_page(out / "report.html", min_images=4)
    assert name in shown  # shown as text, not run
    assert any(name in src for src, _ in images)  # and its heatmap loads by that name


def test_demo_page_in_browser(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SmpIML(arch="FPN")
    model.pixel_threshold, model.image_threshold = 0.4, 0.625
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "demo"
    assert main(["demo", "-m", str(tmp_path / "model"), "-o", str(out), "-n", "3"]) == 0
    text = (out / "index.html").read_text()
    assert "pixel <b>0.4</b>" in text and "image <b>0.625</b>" in text
    images, shown = _open_page(out / "index.html", min_images=3 * 5 + 2)  # 3 rows x 5 images, colour bar, histogram
    assert "red tint = manipulation probability" in shown and "outline = the mask at the pixel threshold" in shown
    samples = json.loads((out / "summary.json").read_text())["samples"]
    assert shown.count("verdict: called ") == 3  # every image, authentic ones too
    for s in samples:
        called = "manipulated" if s["image_score"] >= 0.625 else "authentic"
        assert s["verdict"] == called and f"{s['sample']}\ntruth: " in shown
        assert f"image score: {s['image_score']:.3f} {'≥' if called == 'manipulated' else '<'} 0.625" in shown
    assert sum(src.endswith("_heatmap.png") for src, _ in images) == 3


def test_contact_sheet_in_browser_escapes_errors(tmp_path: Path) -> None:
    from test_annotate import _run, make_pair_folders

    pairs = make_pair_folders(tmp_path / "pairs", 2)
    bad = pairs / "<script>x<script>"
    bad.mkdir()
    (bad / "0.png").write_bytes((pairs / "p01" / "0.png").read_bytes())
    (bad / "1.png").write_bytes(b"not a PNG <script>")
    out = tmp_path / "out"
    assert _run(pairs, out) == 0
    text = (out / "index.html").read_text()
    assert text.count("<tr>") == 3 and "<script>" not in text
    images, shown = _open_page(out / "index.html", min_images=2 * 3 + 1)  # 2 ok pairs x 3 thumbnails + colour bar
    assert "QES threshold 0.5" in shown and "3 pairs: " in shown and "status: failed" in shown
    assert "<script>x<script>" in shown  # the failed pair's path, shown as text
    assert sum(src.startswith("thumbs/") for src, _ in images) == 6


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


def test_test_report_verdicts_use_the_models_image_threshold(tmp_path: Path) -> None:
    from webiml.callbacks import _write_test_report

    pos, neg = pixel_histograms(np.full((4, 4), 0.7, np.float32), np.zeros((4, 4), np.float32))
    row = {"set": "s", "path": "a.png", "image_score": 0.7, "label": 0, "pixel_f1": float("nan"),
           "pixel_iou": float("nan"), "fp_fraction": 1.0, "manipulated_area_pred": 1.0, "manipulated_area_true": 0.0}
    shard = {"rows": [row], "worst": [row], "hist": {"s": [pos.tolist(), neg.tolist()]}}
    _write_test_report(tmp_path, [shard], {}, threshold=0.5, max_images=4, image_threshold=0.83)
    html = (tmp_path / "report.html").read_text()
    assert "image <b>0.83</b>" in html and 'verdict: <span class="verdict-a">authentic' in html
    _write_test_report(tmp_path, [shard], {}, threshold=0.5, max_images=4)
    assert 'verdict: <span class="verdict-m">manipulated' in (tmp_path / "report.html").read_text()
