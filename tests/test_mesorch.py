"""Mesorch: output contract at odd sizes (resized and native), the DCT maps, the official key layout, the
converter. The converter was proven against the official code (scu-zjz/Mesorch) outside the test suite (see
checkpoints.yaml); here the official layout comes from ``fixtures/mesorch_keys.json.gz``."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest
import torch

import webiml
from webiml.convert import ConversionError, get_converter
from webiml.convert.mesorch import infer_mesorch_config, mesorch_official_to_webiml
from webiml.models.mesorch import Mesorch, dct_filtered, dct_matrix

FIXTURE = json.loads(gzip.decompress((Path(__file__).parent / "fixtures" / "mesorch_keys.json.gz").read_bytes()))["state_dict"]


@pytest.mark.parametrize("input_size", [96, None])
def test_tiny_forward_backward_odd_size(input_size: int | None) -> None:
    torch.manual_seed(0)
    model = Mesorch(size="tiny", input_size=input_size)
    out = model(torch.randn(2, 3, 200, 328))
    assert out.mask_logits.shape == (2, 1, 200, 328)
    assert out.image_logits is None and out.aux_mask_logits == []
    assert torch.isfinite(out.mask_logits).all()
    out.mask_logits.mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_resize_mode_is_the_authors_protocol() -> None:
    """input_size=S: the network sees an S x S resize of the image, its logits are resized back."""
    torch.manual_seed(0)
    model = Mesorch(size="tiny", input_size=64).eval()
    x = torch.randn(1, 3, 50, 90)
    with torch.no_grad():
        small = model.forward_padded(torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False))
        ref = torch.nn.functional.interpolate(small.mask_logits, size=(50, 90), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x).mask_logits, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of 32"):
        Mesorch(size="tiny", input_size=100)


def test_dct_maps() -> None:
    m = dct_matrix(37)
    torch.testing.assert_close(m @ m.T, torch.eye(37), atol=1e-5, rtol=0)  # orthonormal DCT-II
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40, 24)
    for high in (True, False):
        y = dct_filtered(x, high=high, alpha=0.05 if high else 0.95)
        assert y.shape == x.shape
        for b in range(2):  # min-max scaled per image over channels and pixels
            assert y[b].min().item() == 0.0 and abs(y[b].max().item() - 1.0) < 1e-6
    # Keeping every coefficient reproduces the image (up to the min-max scaling).
    tiny = dct_filtered(x, high=True, alpha=0.01)  # int(0.01 * 40) = 0: nothing removed
    ref = (x - x.amin(dim=(1, 2, 3), keepdim=True)) / (x.amax(dim=(1, 2, 3), keepdim=True) - x.amin(dim=(1, 2, 3), keepdim=True))
    torch.testing.assert_close(tiny, ref, atol=1e-5, rtol=0)
    # The high-pass removes the mean of each channel: a constant image gives a finite (all-zero) map.
    assert torch.isfinite(dct_filtered(torch.ones(1, 3, 8, 8), high=True, alpha=0.05)).all()


def test_base_layout_is_the_official_one() -> None:
    """Every official key (fixture: the authors' MesorchFull) but the unused ConvNeXt head maps onto Mesorch('base')."""
    with torch.device("meta"):
        base = Mesorch(size="base")
    own = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    official = {k: torch.empty(v, device="meta") for k, v in FIXTURE.items()}
    mapped = mesorch_official_to_webiml(official)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == own
    assert set(official) - set(mapped) == {"convnext.head.norm.weight", "convnext.head.norm.bias", "convnext.head.fc.weight",
                                           "convnext.head.fc.bias"}
    assert infer_mesorch_config(mapped) == {"size": "base"}


def _official_file(model: Mesorch, path: Path) -> Path:
    state = dict(model.state_dict())
    dims = model.config_resolved["conv_dims"]
    state |= {"convnext.head.norm.weight": torch.ones(dims[-1]), "convnext.head.norm.bias": torch.zeros(dims[-1]),
              "convnext.head.fc.weight": torch.zeros(1000, dims[-1]), "convnext.head.fc.bias": torch.zeros(1000)}
    torch.save({"model": state, "optimizer": {}, "epoch": 98, "args": argparse.Namespace(image_size=512)}, path)
    return path


def test_convert_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = Mesorch(size="tiny", mit_sr_ratios=(4, 2, 1, 1), gate_width=8).eval()
    ckpt = _official_file(src, tmp_path / "mesorch-98.pth")
    model = get_converter("mesorch")(ckpt, tmp_path / "out", input_size=64)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (cfg["mit_sr_ratios"], cfg["gate_width"], cfg["conv_dims"], cfg["mit_heads"]) == ([4, 2, 1, 1], 8, [16, 32, 64, 128], [1, 1, 1, 2])
    loaded = webiml.from_pretrained(tmp_path / "out").eval()
    src.input_size = 64
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        ref = src(x).mask_logits
        torch.testing.assert_close(model(x).mask_logits, ref, rtol=0, atol=0)
        torch.testing.assert_close(loaded(x).mask_logits, ref, rtol=0, atol=0)


def test_bad_files_are_conversion_errors(tmp_path: Path) -> None:
    convert = get_converter("mesorch")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        convert(junk, tmp_path / "a")
    state = Mesorch(size="tiny").state_dict()
    torch.save({**state, "label_head.0.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ConversionError, match="not part of Mesorch.*label_head"):
        convert(tmp_path / "extra.pth", tmp_path / "b")
    no_gate = {k: v for k, v in state.items() if not k.startswith("gate.")}
    torch.save(no_gate, tmp_path / "mesorch_p.pth")
    with pytest.raises(ConversionError, match="Mesorch-P"):
        convert(tmp_path / "mesorch_p.pth", tmp_path / "c")
    torch.save({k: v for k, v in state.items() if not k.startswith("upsample.upsamples4")}, tmp_path / "cut.pth")
    with pytest.raises(ConversionError, match="missing keys: upsample.upsamples4"):
        convert(tmp_path / "cut.pth", tmp_path / "d")
