"""`webiml localize`, `webiml demo`, `webiml zoo`, tiled inference."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from webiml.cli import main
from webiml.hub import from_pretrained
from webiml.inference import Localizer
from webiml.models import IMLModel, IMLOutput


class _Pointwise(IMLModel):
    """A per-pixel model: its map does not depend on context, so tiling must reproduce it exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward_padded(self, x: torch.Tensor) -> IMLOutput:
        return IMLOutput(mask_logits=self.conv(x))


def test_tiled_equals_whole_for_pointwise_model() -> None:
    torch.manual_seed(0)
    model = _Pointwise().eval()
    img = np.random.default_rng(0).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    whole = Localizer(model, device="cpu", tile=512).localize(img)
    tiled = Localizer(model, device="cpu", tile=128, overlap=64, batch_size=3).localize(img)
    assert tiled.mask_probs.shape == whole.mask_probs.shape == (300, 420)
    assert np.allclose(tiled.mask_probs, whole.mask_probs, atol=1e-5)
    assert tiled.image_score == pytest.approx(float(whole.mask_probs.max()), abs=1e-4)


class _WholeImage(_Pointwise):
    """A model whose output depends on the whole image (here: minus the image mean), so it must never be tiled."""

    tile_safe = False

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def forward_padded(self, x: torch.Tensor) -> IMLOutput:
        self.calls.append(tuple(x.shape[-2:]))
        logits = self.conv(x)
        return IMLOutput(mask_logits=logits - logits.mean(dim=(2, 3), keepdim=True))


def test_models_that_need_the_whole_image_are_never_tiled() -> None:
    torch.manual_seed(0)
    model = _WholeImage().eval()
    img = np.random.default_rng(1).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    out = Localizer(model, device="cpu", tile=128, overlap=64).localize(img)
    assert model.calls == [(320, 448)]  # one forward over the whole (padded) image despite tile=128
    assert out.mask_probs.shape == (300, 420)
    from webiml.models.mvss_net import MVSSNet
    from webiml.models.noiseprint import NoiseprintPP
    from webiml.models.trufor import TruFor

    assert not NoiseprintPP.tile_safe and not TruFor.tile_safe and _Pointwise.tile_safe
    small = {"channels": (8, 16, 32, 64), "layers": (1, 1, 1, 1)}
    assert not MVSSNet(**small).tile_safe and MVSSNet(input_size=None, **small).tile_safe  # resized whole vs native


def test_localize_large_image_keeps_size(tmp_path: Path) -> None:
    """A 4000x3000 photo is tiled (bounded memory) and its maps keep the full size. A per-pixel model keeps
    the test fast; the tiling path is the same for every model."""
    _Pointwise().save_pretrained(tmp_path / "pointwise")
    big = np.random.default_rng(1).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    out = tmp_path / "out"
    args = ["localize", str(tmp_path / "big.jpg"), "-m", str(tmp_path / "pointwise"), "-o", str(out), "--workers", "0"]
    assert main(args) == 0
    prob = np.asarray(Image.open(out / "big_prob.png"))
    assert prob.shape == (3000, 4000)
    assert Image.open(out / "big_overlay.jpg").size == (4000, 3000)


def test_localize_folder_with_broken_file(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i, size in enumerate([(64, 96), (80, 80)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"good{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 garbage")
    out = tmp_path / "out"
    status = main(["localize", str(folder), "-m", str(model_dir), "-o", str(out), "--workers", "0"])
    assert status == 1  # the exit status says a file failed
    printed = capsys.readouterr().out
    assert "broken.jpg" in printed and "1 file(s) could not be read" in printed
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert sorted(r["name"] for r in rows) == ["good0", "good1"]
    assert {(int(r["height"]), int(r["width"])) for r in rows} == {(64, 96), (80, 80)}
    assert json.loads((out / "scores.json").read_text())["failed"][0]["path"].endswith("broken.jpg")
    for name in ("good0", "good1"):
        assert (out / f"{name}_mask.png").is_file() and (out / f"{name}_overlay.jpg").is_file()


def test_demo_writes_page(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-m", str(model_dir), "-o", str(out), "-n", "3"]) == 0
    page = (out / "index.html").read_text()
    assert page.count("verdict: <span") == 3 and "ground truth" in page and "colour_bar.png" in page
    summary = json.loads((out / "summary.json").read_text())
    assert "pixel_f1" in summary["metrics"] and len(summary["samples"]) == 3
    assert "pixel F1" in capsys.readouterr().out


def test_zoo_list_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "list"]) == 0
    listing = capsys.readouterr().out
    assert "apsc-net-convnext-b-miml" in listing and "needs-conversion" in listing
    assert main(["zoo", "info", "apsc-net-convnext-b-miml"]) == 0
    assert "webiml convert apsc-net" in capsys.readouterr().out
    assert main(["zoo", "info", "nope"]) == 2


def test_small_images_of_one_size_are_batched() -> None:
    model = _Pointwise().eval()
    calls: list[int] = []
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(5)] + [rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)]
    loc = Localizer(model, device="cpu", tile=64, batch_size=4)
    results = list(loc.localize_many(imgs))
    assert calls == [4, 1, 1]
    for img, r in zip(imgs, results, strict=True):
        assert r.mask_probs.shape == img.shape[:2]
        assert np.allclose(r.mask_probs, loc.localize(img).mask_probs, atol=1e-6)


def test_localize_output_names_are_unique(tmp_path: Path) -> None:
    """x/a.jpg, y/a.jpg and z/a_1.jpg must give three result sets: a de-duplicated name never collides
    with another input's own stem (it used to write two `a_1` sets, the second overwriting the first)."""
    _Pointwise().save_pretrained(tmp_path / "pointwise")
    rng = np.random.default_rng(4)
    inputs = []
    for folder, stem in (("x", "a"), ("y", "a"), ("z", "a_1"), ("w", "A")):
        (tmp_path / folder).mkdir()
        inputs.append(tmp_path / folder / f"{stem}.png")
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(inputs[-1])
    out = tmp_path / "out"
    assert main(["localize", *map(str, inputs), "-m", str(tmp_path / "pointwise"), "-o", str(out), "--workers", "0"]) == 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    names = [r["name"] for r in rows]
    assert len({n.casefold() for n in names}) == 4  # unique even on a case-insensitive file system
    assert [r["path"] for r in rows] == [str(p) for p in inputs]
    assert len(list(out.glob("*_prob.png"))) == 4
    model = from_pretrained(tmp_path / "pointwise")
    for row in rows:  # each result set is its own image's
        prob = np.asarray(Image.open(out / f"{row['name']}_prob.png"))
        again = Localizer(model, device="cpu").localize(np.asarray(Image.open(row["path"])))
        assert np.abs(prob.astype(int) - np.round(again.mask_probs * 255).astype(int)).max() <= 1

