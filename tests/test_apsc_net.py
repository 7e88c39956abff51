"""APSC-Net: output contract at odd sizes, self-refinement rounds, the official key layout, presets."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from timm.models.convnext import ConvNeXt

from webiml.convert import webiml_to_apsc_official
from webiml.models.apsc_net import APSC_PRESETS, APSCNet, apsc_net, count_parameters


def _loss(out) -> torch.Tensor:
    total = out.mask_logits.mean() + sum(a.mean() for a in out.aux_mask_logits)
    return total + (out.image_logits.sum() if out.image_logits is not None else 0)


def test_tiny_forward_backward_odd_size() -> None:
    torch.manual_seed(0)
    model = apsc_net("tiny")
    out = model(torch.randn(2, 3, 65, 97))
    assert out.mask_logits.shape == (2, 1, 65, 97)
    assert out.image_logits is not None and out.image_logits.shape == (2,)
    # 3 rounds: the UPer prediction and rounds 1-2 are auxiliary, round 3 is the main output (stride 4).
    assert len(out.aux_mask_logits) == 3
    assert all(a.shape[:2] == (2, 1) for a in out.aux_mask_logits)
    _loss(out).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_refine_steps_give_that_many_aux_outputs(steps: int) -> None:
    model = APSCNet(size="tiny", refine_steps=steps)
    out = model(torch.randn(2, 3, 64, 64))
    assert len(out.aux_mask_logits) == steps
    assert out.mask_logits.shape == (2, 1, 64, 64)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 47))
    assert out.aux_mask_logits == [] and out.mask_logits.shape == (1, 1, 33, 47) and out.image_logits.shape == (1,)


def test_image_head_optional_and_detached() -> None:
    model = APSCNet(size="tiny", image_head=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.image_logits is None
    # The authors' image head reads detached features: the image loss trains only the head.
    model = APSCNet(size="tiny")
    model(torch.randn(2, 3, 64, 64)).image_logits.sum().backward()
    with_grad = {n.split(".")[1] for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"cls_head"}


def test_mask_logit_is_two_class_difference() -> None:
    """sigmoid(z1 - z0) equals the authors' softmax probability of the manipulated class."""
    torch.manual_seed(0)
    model = APSCNet(size="tiny").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits, _, image = model.decode_head(model.backbone(x))
        out = model(x)
    up = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.mask_probs(), up.softmax(1)[:, 1:2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.image_probs(), image.softmax(1)[:, 1], atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def base_model() -> APSCNet:
    torch.manual_seed(0)
    return APSCNet(size="base").eval()


def test_base_preset_matches_official_layout(base_model: APSCNet) -> None:
    """Key names and shapes written in the authors' code (apscnet.py, test_rfb1ha1c.py, convnext.py)."""
    assert count_parameters(base_model) == 143_127_136
    official = {k: tuple(v.shape) for k, v in webiml_to_apsc_official(base_model.state_dict()).items()}
    assert len(official) == 578
    expected = {
        "backbone.downsample_layers.0.0.weight": (128, 3, 4, 4),
        "backbone.downsample_layers.0.1.weight": (128,),
        "backbone.downsample_layers.3.0.bias": (512,),
        "backbone.downsample_layers.3.1.weight": (1024, 512, 2, 2),
        "backbone.stages.2.26.dwconv.weight": (512, 1, 7, 7),
        "backbone.stages.2.26.pwconv1.weight": (2048, 512),
        "backbone.stages.3.2.pwconv2.weight": (1024, 4096),
        "backbone.stages.0.0.gamma": (128,),
        "backbone.norm3.weight": (1024,),
        "decode_head.psp_modules.3.1.conv.weight": (512, 1024, 1, 1),
        "decode_head.bottleneck.conv.weight": (512, 3072, 3, 3),
        "decode_head.lateral_convs.0.conv.weight": (512, 128, 1, 1),
        "decode_head.fpn_convs.2.bn.running_var": (512,),
        "decode_head.SE1.0.weight": (128, 1024, 1, 1),
        "decode_head.SE2.2.weight": (3, 192, 1, 1),
        "decode_head.SE3.2.bias": (4,),
        "decode_head.conv_seg.weight": (2, 512, 1, 1),
        "decode_head.convert.weight": (256, 512, 1, 1),
        "decode_head.MSDEC.image_pool.1.conv.weight": (512, 2048, 1, 1),
        "decode_head.MSDEC.aspp_modules.0.conv.weight": (512, 2048, 1, 1),
        "decode_head.MSDEC.aspp_modules.3.depthwise_conv.conv.weight": (2048, 1, 3, 3),
        "decode_head.MSDEC.aspp_modules.3.pointwise_conv.bn.num_batches_tracked": (),
        "decode_head.MSDEC.bottleneck.conv.weight": (512, 2560, 3, 3),
        "decode_head.MSDEC.c1_bottleneck.conv.weight": (48, 256, 1, 1),
        "decode_head.MSDEC.sep_bottleneck.0.depthwise_conv.conv.weight": (560, 1, 3, 3),
        "decode_head.MSDEC.conv_seg.weight": (2, 512, 1, 1),
        "decode_head.ha.kg.1.conv.weight": (32, 1, 5, 5),
        "decode_head.ha.kg.5.conv.weight": (512, 256, 3, 3),
        "decode_head.ha.kg.9.weight": (961, 512),
        "decode_head.CE.cSE.1.weight": (320, 2560, 1, 1),
        "decode_head.CE.cSE.3.weight": (2560, 320, 1, 1),
        "decode_head.CE.c11.conv.weight": (2048, 2560, 1, 1),
        "decode_head.cls_head.0.conv.weight": (512, 3072, 1, 1),
        "decode_head.cls_head.4.conv.weight": (256, 256, 3, 3),
        "decode_head.cls_head.7.weight": (2, 256, 1, 1),
    }
    assert {k: official.get(k) for k in expected} == expected
    assert {k.split(".")[0] for k in official} == {"backbone", "decode_head"}


def test_base_preset_forward_small_input(base_model: APSCNet) -> None:
    with torch.no_grad():
        out = base_model(torch.randn(1, 3, 33, 47))
    assert out.mask_logits.shape == (1, 1, 33, 47) and out.image_logits.shape == (1,)
    assert torch.isfinite(out.mask_logits).all()


def test_presets_and_overrides() -> None:
    assert APSC_PRESETS["base"]["depths"] == (3, 3, 27, 3)
    model = APSCNet(size="tiny", depths=[1, 2, 1, 1], channels=16)
    assert len(model.backbone.stages[1].blocks) == 2
    assert model.decode_head.conv_seg.in_channels == 16
    with pytest.raises(ValueError, match="unknown APSC-Net size"):
        APSCNet(size="huge")


def test_backbone_weights_from_local_timm_file(tmp_path) -> None:
    torch.manual_seed(1)
    cfg = APSC_PRESETS["tiny"]
    ref = ConvNeXt(depths=cfg["depths"], dims=cfg["dims"], num_classes=0, ls_init_value=1.0)
    path = tmp_path / "convnext.safetensors"
    save_file(ref.state_dict(), str(path))
    model = APSCNet(size="tiny", backbone_weights=str(path))
    torch.testing.assert_close(model.backbone.stages[3].blocks[0].mlp.fc1.weight, ref.stages[3].blocks[0].mlp.fc1.weight)
    torch.testing.assert_close(model.backbone.stem[0].weight, ref.stem[0].weight)
    # Saved weights supersede the initialisation: config.json must not point at the ImageNet file.
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["backbone_weights"] is None
