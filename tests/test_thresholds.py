"""Decision thresholds travel with the model: saved, loaded (folder, file, catalogue), validated, calibrated
by `webiml calibrate`, and used as the defaults of `webiml localize`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from webiml.cli import main
from webiml.hub import CheckpointError, from_pretrained
from webiml.models import IMLModel, IMLOutput


class _Constant(IMLModel):
    """Image score = sigmoid(bias) + a little of the mean red channel; map = per-pixel conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward_padded(self, x: torch.Tensor) -> IMLOutput:
        m = self.conv(x)
        return IMLOutput(mask_logits=m, image_logits=x[:, 0].mean(dim=(1, 2)))


def _saved(tmp_path: Path, pixel: float = 0.3, image: float = 0.7) -> Path:
    torch.manual_seed(0)
    model = _Constant()
    model.set_thresholds(pixel=pixel, image=image)
    model.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_thresholds_round_trip_through_folder_and_file(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    assert json.loads((folder / "config.json").read_text())["thresholds"] == {"pixel": 0.3, "image": 0.7}
    for target in (folder, folder / "model.safetensors"):
        m = from_pretrained(target)
        assert (m.pixel_threshold, m.image_threshold) == (0.3, 0.7)
    assert _Constant().thresholds == {"pixel": 0.5, "image": 0.5}


@pytest.mark.parametrize("bad", [{"image": 1.5}, {"image": "high"}, {"pixl": 0.2}, [0.5]])
def test_bad_thresholds_in_config_name_the_file(tmp_path: Path, bad) -> None:
    folder = _saved(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["thresholds"] = bad
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json"):
        from_pretrained(folder)
    with pytest.raises(ValueError):
        _Constant().set_thresholds(image=float("nan"))


def test_catalogue_thresholds_are_applied(tmp_path: Path) -> None:
    from webiml.hub import sha256_of

    folder = _saved(tmp_path, 0.5, 0.5)
    entry = {"name": "t", "status": "available", "architecture": "_Constant", "config": {}, "license": "x",
             "training": {}, "weights": {"hub": {"repo_id": "a/b", "revision": "0" * 40}},
             "sha256": sha256_of(folder / "model.safetensors"), "thresholds": {"image": 0.9}}
    path = tmp_path / "cat.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}))
    from webiml import hub

    original = hub.resolve_file
    hub.resolve_file = lambda *a, **k: str(folder / "model.safetensors")  # the weights' location is not the point
    try:
        m = from_pretrained("t", catalogue=path)
    finally:
        hub.resolve_file = original
    assert (m.pixel_threshold, m.image_threshold) == (0.5, 0.9)


def test_localize_uses_the_model_thresholds_unless_given(tmp_path: Path, capsys) -> None:
    folder = _saved(tmp_path, 0.5, 0.2)
    img = np.full((40, 48, 3), 200, np.uint8)  # normalised red mean ~ 1.3: image prob ~0.79
    Image.fromarray(img).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["localize", str(tmp_path / "a.png"), "-m", str(folder), "-o", str(out), "--workers", "0"]) == 0
    assert "image threshold 0.2 (model default)" in capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    assert scores["image_threshold"] == 0.2 and scores["images"][0]["manipulated"] == 1
    assert main(["localize", str(tmp_path / "a.png"), "-m", str(folder), "-o", str(out), "--workers", "0",
                 "--image-threshold", "0.99"]) == 0
    assert json.loads((out / "scores.json").read_text())["images"][0]["manipulated"] == 0


def test_calibrate_picks_threshold_on_authentic_photos_and_saves_it(tmp_path: Path, capsys) -> None:
    folder = _saved(tmp_path, 0.5, 0.5)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(np.full((32, 32, 3), 20 * i, np.uint8) + rng.integers(0, 5, (32, 32, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    out = tmp_path / "calibrated"
    # ten photos cannot show 90 % specificity with 95 % confidence: the default says so and stays above them all
    assert main(["calibrate", str(folder), "--authentic", str(photos), "--report", str(tmp_path / "strict.json")]) == 0
    assert "too few to show specificity 0.9 with confidence 0.95" in capsys.readouterr().out
    strict = json.loads((tmp_path / "strict.json").read_text())
    assert strict["image_threshold"] > max(max(s) for s in strict["authentic_scores"].values())
    assert strict["allowed_false_alarms"]["original"] == -1 and strict["confidence"] == 0.95
    assert main(["calibrate", str(folder), "--authentic", str(photos), "--specificity", "0.9", "--confidence", "0",
                 "-o", str(out)]) == 0
    report = json.loads((out / "calibration.json").read_text())
    assert report["confidence"] is None and report["allowed_false_alarms"]["original"] == 1
    assert report["image_threshold"] == report["point_estimate_threshold"] <= strict["image_threshold"]
    model = from_pretrained(out)
    assert model.image_threshold == pytest.approx(report["image_threshold"])
    assert report["authentic_photos"] == 10
    # at least 90 % of the calibration scores (all variants) fall below the stored threshold
    from webiml.calibration import VARIANTS, authentic_variant
    from webiml.inference import Localizer

    loc = Localizer(model, device="cpu")
    scores = [loc.localize(authentic_variant(np.asarray(Image.open(p).convert("RGB")), v)).image_score
              for p in sorted(photos.iterdir()) for v in VARIANTS]
    assert np.mean(np.array(scores) < model.image_threshold) >= 0.9


def test_localize_refuses_a_pair_part_in_one_line(tmp_path: Path, capsys) -> None:
    from webiml.models.caaa import SPGSegmenter

    SPGSegmenter(encoder_weights=None).save_pretrained(tmp_path / "spg")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["localize", str(tmp_path / "a.png"), "-m", str(tmp_path / "spg"), "-o", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    out = (captured.out + captured.err).strip()
    assert len(out.splitlines()) == 1 and "error" in out and "SPGSegmenter" in out
