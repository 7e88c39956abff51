"""Manifest format, mask convention and image I/O: round trips and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from webiml.data.manifest import ManifestError, ManifestRecord, read_manifest, write_manifest
from webiml.data.masks import IGNORE, WEB_LABELS, target_from_mask
from webiml.io import ImageReadError, read_image, read_mask


def test_manifest_round_trip_relative_paths(tmp_path) -> None:
    (tmp_path / "imgs").mkdir()
    recs = [
        ManifestRecord(str(tmp_path / "imgs/1.jpg"), str(tmp_path / "masks/1.png"), 1, "miml", 0.5, WEB_LABELS, {"qes": 0.9}),
        ManifestRecord(str(tmp_path / "imgs/2.jpg"), None, 0, "coco"),
    ]
    path = write_manifest(tmp_path / "m.jsonl", recs)
    text = path.read_text()
    assert '"imgs/1.jpg"' in text and str(tmp_path) not in text
    back = read_manifest(path)
    assert back == recs
    assert back[0].band == WEB_LABELS and back[1].band == (127, 128)


def test_manifest_csv(tmp_path) -> None:
    (tmp_path / "m.csv").write_text("image,mask,label,source,ignore_band\na.png,b.png,1,x,\"7,193\"\nc.png,,,y,\n")
    recs = read_manifest(tmp_path / "m.csv")
    assert recs[0].ignore_band == (7, 193) and recs[0].label == 1
    assert recs[1].mask is None and recs[1].label == 0


@pytest.mark.parametrize(
    "line, msg",
    [
        ("{not json", "invalid JSON"),
        ('{"mask": "a.png"}', "missing 'image'"),
        ('{"image": "a.png", "label": 3}', "'label' must be 0 or 1"),
        ('{"image": "a.png", "ignore_band": [200, 100]}', "ignore_band"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, line: str, msg: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"image": "ok.png"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=rf"bad.jsonl:2: .*{msg}"):
        read_manifest(p)


def test_target_from_mask_bands() -> None:
    mask = np.array([[0, 7, 8, 128, 192, 193, 255]], dtype=np.uint8)
    assert target_from_mask(mask).tolist() == [[0, 0, 0, 1, 1, 1, 1]]
    web = target_from_mask(mask, WEB_LABELS)
    assert web.tolist() == [[0, 0, IGNORE, IGNORE, IGNORE, 1, 1]]
    assert target_from_mask(np.array([[True, False]])).tolist() == [[1.0, 0.0]]
    with pytest.raises(ValueError):
        target_from_mask(mask, (10, 5))


def test_read_image_and_mask_modes(tmp_path) -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (4, 5, 3)
    Image.fromarray(np.array([[0, 1]], np.uint8) * 255).convert("1").save(tmp_path / "m1.png")
    assert read_mask(tmp_path / "m1.png").tolist() == [[0, 255]]
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0, 1] = 255
    Image.fromarray(colour).save(tmp_path / "c.png")
    assert read_mask(tmp_path / "c.png").tolist() == [[255, 0], [0, 0]]


def test_unreadable_files_name_the_file(tmp_path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="not found"):
        read_mask(tmp_path / "missing.png")
    assert torch.is_tensor(target_from_mask(np.zeros((2, 2), np.uint8)))


def test_paths_outside_the_manifest_folder_are_stored_absolute(tmp_path, monkeypatch) -> None:
    """A record given relative to the working directory must still name the same file when read back
    (read_manifest resolves relative paths against the manifest's folder)."""
    from webiml.data.manifest import ManifestRecord, read_manifest, write_manifest

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"")
    (tmp_path / "out" / "masks").mkdir(parents=True)
    (tmp_path / "out" / "masks" / "a.png").write_bytes(b"")
    path = write_manifest("out/manifest.jsonl", [ManifestRecord("photos/a.png", "out/masks/a.png", 1)])
    raw = path.read_text()
    assert '"masks/a.png"' in raw and str(tmp_path / "photos" / "a.png") in raw
    rec = read_manifest(path)[0]
    assert Path(rec.image).resolve() == (tmp_path / "photos" / "a.png").resolve()
    assert Path(rec.mask).resolve() == (tmp_path / "out" / "masks" / "a.png").resolve()
    monkeypatch.chdir(tmp_path / "out")  # read from elsewhere: still the same files
    rec = read_manifest("manifest.jsonl")[0]
    assert Path(rec.image).is_file() and Path(rec.mask).is_file()
