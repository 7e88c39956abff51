"""QES on hand-made soft masks: exact ratios, empty masks, uint8 vs float, batches vs lists."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from webiml.annotate.qes import HIGH, LOW, QESConfig, apply_qes_weights, keep, main, qes, qes_weight
from webiml.data.manifest import ManifestRecord, read_manifest, write_manifest
from webiml.data.masks import WEB_LABELS
from webiml.io import save_image


def test_all_confident_is_one_and_all_uncertain_is_zero() -> None:
    assert qes(np.ones((8, 8), np.float32)) == pytest.approx(1.0, abs=1e-6)
    assert qes(np.full((8, 8), 255, np.uint8)) == pytest.approx(1.0, abs=1e-6)
    assert qes(np.full((8, 8), 0.5, np.float32)) == 0.0
    assert qes(np.full((8, 8), 128, np.uint8)) == 0.0


def test_mixed_mask_exact_ratio() -> None:
    m = np.zeros((10, 10), np.float32)  # 100 pixels
    m.flat[:30] = 0.99  # confident
    m.flat[30:50] = 0.5  # uncertain
    m.flat[50:60] = 0.07  # just above 1/16: counts in the denominator
    m.flat[60:70] = 0.06  # below 1/16: ignored
    assert qes(m) == pytest.approx(30 / 60, abs=1e-7)
    # the same on the uint8 scale: > 15/16 is v >= 240, > 1/16 is v >= 16
    u = np.zeros((10, 10), np.uint8)
    u.flat[:30] = 240
    u.flat[30:50] = 239
    u.flat[50:60] = 16
    u.flat[60:70] = 15
    assert qes(u) == pytest.approx(30 / 60, abs=1e-7)
    assert qes(torch.from_numpy(u)) == pytest.approx(30 / 60, abs=1e-7)


def test_empty_mask_scores_zero_without_nan() -> None:
    for m in (np.zeros((5, 7), np.float32), np.zeros((5, 7), np.uint8), torch.zeros(5, 7), np.zeros((0, 0), np.float32)):
        s = qes(m)
        assert s == 0.0 and not math.isnan(s)
    assert np.array_equal(qes([np.zeros((3, 3)), np.zeros((0, 4))]), [0.0, 0.0])


def test_batch_list_and_single_agree() -> None:
    rng = np.random.default_rng(0)
    batch = rng.random((6, 17, 23)).astype(np.float32) ** 3
    batch[2] = 0.0
    singles = np.array([qes(m) for m in batch])
    assert np.allclose(qes(batch), singles, atol=0, rtol=1e-12)
    assert np.allclose(qes(list(batch)), singles, rtol=1e-12)
    t = qes(torch.from_numpy(batch))
    assert isinstance(t, torch.Tensor) and t.shape == (6,)
    assert np.allclose(t.numpy(), singles, rtol=1e-12)
    assert np.allclose(qes(torch.from_numpy(batch)[:, None]).numpy(), singles, rtol=1e-12)  # (B, 1, H, W)
    # differently sized maps, mixed libraries and dtypes, in one call
    maps = [batch[0], torch.from_numpy(batch[1][:5, :9]), (batch[3] * 255).round().astype(np.uint8), batch[2][:1, :1]]
    want = [qes(batch[0]), qes(batch[1][:5, :9]), qes((batch[3] * 255).round().astype(np.uint8)), 0.0]
    assert np.allclose(qes(maps), want, rtol=1e-12)


def test_configurable_thresholds_and_keep() -> None:
    m = np.array([[0.1, 0.3, 0.6, 0.95]], np.float32)
    assert qes(m) == pytest.approx(1 / 4)
    assert qes(m, low=0.2, high=0.5) == pytest.approx(2 / 3)
    cfg = QESConfig(low=0.2, high=0.5, threshold=0.6)
    assert cfg.score(m) == pytest.approx(2 / 3)
    assert cfg.keep(cfg.score(m)) is True
    assert keep(0.5) is False and keep(0.51) is True
    assert keep(np.array([0.2, 0.7])).tolist() == [False, True]
    assert keep(torch.tensor([0.2, 0.7])).tolist() == [False, True]
    assert (LOW, HIGH) == (1 / 16, 15 / 16)
    with pytest.raises(ValueError):
        qes(m, low=0.9, high=0.5)
    with pytest.raises(ValueError):
        qes(np.zeros((2, 3, 4, 5)))


# --------------------------------------------------------------------------------------------------
# web supervision


def test_qes_and_weight() -> None:
    m = np.zeros((10, 10), np.uint8)
    assert qes(m) == 0.0
    m[:2] = 255  # 20 confident px
    m[2:4] = 128  # 20 uncertain px
    assert qes(m) == pytest.approx(0.5, abs=1e-6)
    assert qes(m.astype(np.float32) / 255) == pytest.approx(0.5, abs=1e-6)
    assert qes_weight(0.5) == 0.0 and qes_weight(0.2) == 0.0
    assert qes_weight(1.0) == pytest.approx(1.0)
    assert qes_weight(0.75) == pytest.approx(0.75)  # halfway up the ramp from floor 0.5
    assert qes_weight(0.51, floor=1.0) == 1.0
    np.testing.assert_allclose(qes_weight(np.array([0.4, 0.75, 1.0]), floor=0.0), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError):
        qes_weight(0.9, threshold=1.0)


def test_apply_qes_weights(tmp_path: Path) -> None:
    soft = np.zeros((16, 16), np.uint8)
    soft[:8] = 250
    soft[8:10] = 100  # QES = 128 / 160 = 0.8
    save_image(tmp_path / "m.png", soft)
    save_image(tmp_path / "i.png", np.full((16, 16, 3), 90, np.uint8))
    rows = [
        ManifestRecord("i.png", "m.png", 1, "mimlv2", extra={"qes": 0.9}),
        ManifestRecord("i.png", "m.png", 1, "mimlv2", extra={"qes": 0.3}),
        ManifestRecord("i.png", "m.png", 1, "mimlv2", weight=0.5),  # QES computed from the mask
        ManifestRecord("i.png", "m.png", 1, "mimlv2", ignore_band=(20, 230), extra={"qes": 1.0}),
        ManifestRecord("i.png", None, 0, "mimlv2"),
    ]
    write_manifest(tmp_path / "raw.jsonl", [r.resolve(tmp_path) for r in rows])
    rep = apply_qes_weights(tmp_path / "raw.jsonl", tmp_path / "plain.jsonl")  # default: the authors' filter, weight 1
    assert (rep.kept, rep.dropped) == (4, 1) and [r.weight for r in read_manifest(rep.manifest)] == [1.0] * 4
    rep = apply_qes_weights(tmp_path / "raw.jsonl", tmp_path / "out" / "weighted.jsonl", floor=0.5)  # webiml's option
    assert (rep.kept, rep.dropped, rep.computed) == (4, 1, 1)
    out = read_manifest(rep.manifest)
    assert [r.weight for r in out] == pytest.approx([0.9, 0.8, 1.0, 1.0])  # replaced, not multiplied
    assert out[0].ignore_band == WEB_LABELS and out[1].ignore_band == WEB_LABELS
    assert out[2].ignore_band == (20, 230)  # an existing band is kept
    assert out[3].mask is None and out[3].ignore_band is None
    assert out[1].extra["qes"] == pytest.approx(0.8, abs=1e-5)
    assert Path(out[0].image).is_file()
    rep = apply_qes_weights(tmp_path / "raw.jsonl", tmp_path / "w2.jsonl", floor=1.0, override_band=True)
    assert [r.weight for r in read_manifest(rep.manifest)] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert read_manifest(rep.manifest)[2].ignore_band == WEB_LABELS
    # band only (sets the authors already filtered): nothing dropped, weights unchanged
    assert main([str(tmp_path / "raw.jsonl"), str(tmp_path / "band.jsonl"), "--band-only"]) == 0
    band = read_manifest(tmp_path / "band.jsonl")
    assert [r.weight for r in band] == [1.0, 1.0, 0.5, 1.0, 1.0]
    assert [r.ignore_band for r in band] == [WEB_LABELS, WEB_LABELS, WEB_LABELS, (20, 230), None]
