"""IML-ViT: output contract at odd sizes, the authors' black padding, the official key layout, the converter,
and the edge loss. The converter was proven against the official code (SunnyHaze/IML-ViT) outside the test
suite (see checkpoints.yaml); here the official layout comes from ``fixtures/iml_vit_keys.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

import webiml
from webiml.convert import ConversionError, get_converter
from webiml.convert.iml_vit import iml_vit_official_to_webiml, infer_iml_vit_config, webiml_to_iml_vit_official
from webiml.models.iml_vit import IMLViT
from webiml.tasks.losses import IMLLoss, edge_band, edge_bce

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "iml_vit_keys.json").read_text())["state_dict"]


def test_tiny_forward_backward_odd_size() -> None:
    torch.manual_seed(0)
    model = IMLViT(size="tiny", input_size=256)
    out = model(torch.randn(2, 3, 200, 328))  # 328 > 256: that side runs at 336 (next multiple of 16)
    assert out.mask_logits.shape == (2, 1, 200, 328)
    assert out.image_logits is None and out.aux_mask_logits == []
    assert torch.isfinite(out.mask_logits).all()
    out.mask_logits.mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_padding_is_black_before_normalisation() -> None:
    """Small images run on the authors' input: a black (0 before Normalize) canvas of input_size, cropped back."""
    torch.manual_seed(0)
    model = IMLViT(size="tiny").eval()  # input_size 128
    img = torch.rand(1, 3, 70, 101)
    assert model.padded_size(70, 101) == (128, 128) and model.padded_size(130, 90) == (144, 128)
    canvas = torch.zeros(1, 3, 128, 128)
    canvas[..., :70, :101] = img
    with torch.no_grad():
        out = model(model.normalize(img)).mask_logits
        ref = model.forward_padded(model.normalize(canvas)).mask_logits[..., :70, :101]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def _official_state(model: IMLViT) -> dict[str, torch.Tensor]:
    return webiml_to_iml_vit_official(model.state_dict())


def test_base_layout_is_the_official_one() -> None:
    """Every official key (fixture: the authors' default model) maps onto IMLViT('base') with its shape."""
    with torch.device("meta"):
        base = IMLViT(size="base")
    own = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    mapped = iml_vit_official_to_webiml({k: torch.empty(v, device="meta") for k, v in FIXTURE.items()})
    assert {k: tuple(v.shape) for k, v in mapped.items()} == own
    assert infer_iml_vit_config(mapped) == {"size": "base"}
    assert sum(v.numel() for k, v in base.state_dict().items() if not k.endswith("num_batches_tracked")
               and "running_" not in k) == 91_777_729  # the official model's parameter count (measured)


def test_convert_round_trip(tmp_path: Path) -> None:
    """An official-format file ({'model', 'epoch', 'args'} as the authors' training script saves) converts back
    to the same network: config inferred from the shapes, identical outputs."""
    torch.manual_seed(0)
    src = IMLViT(size="tiny", embed_dim=24, num_heads=2, global_blocks=[0, 2], head_norm="LN").eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.05 * torch.randn_like(p))  # rel-pos tables are zero at init: make them matter
    ckpt = tmp_path / "iml-vit_checkpoint.pth"
    torch.save({"model": _official_state(src), "epoch": 3, "args": argparse.Namespace(edge_lambda=20)}, ckpt)
    model = get_converter("iml-vit")(ckpt, tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (cfg["embed_dim"], cfg["num_heads"], cfg["global_blocks"], cfg["window_size"], cfg["input_size"], cfg["head_norm"]) == \
        (24, 2, [0, 2], 6, 128, "LN")
    loaded = webiml.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(1, 3, 61, 90)
    with torch.no_grad():
        ref = src(x).mask_logits
        torch.testing.assert_close(model(x).mask_logits, ref, rtol=0, atol=0)
        torch.testing.assert_close(loaded(x).mask_logits, ref, rtol=0, atol=0)


def test_bare_state_dict_converts(tmp_path: Path) -> None:
    src = IMLViT(size="tiny")
    torch.save(_official_state(src), tmp_path / "bare.pth")
    model = get_converter("iml-vit")(tmp_path / "bare.pth", tmp_path / "out")
    assert isinstance(model, IMLViT) and model.config_resolved["fpn_channels"] == 16


def test_bad_files_are_conversion_errors(tmp_path: Path) -> None:
    convert = get_converter("iml-vit")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        convert(junk, tmp_path / "a")
    state = _official_state(IMLViT(size="tiny"))
    torch.save({**state, "decoder.extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ConversionError, match="not part of IML-ViT.*decoder.extra.weight"):
        convert(tmp_path / "extra.pth", tmp_path / "b")
    torch.save({k: v for k, v in state.items() if not k.startswith("predict_head.linear_predict")}, tmp_path / "cut.pth")
    with pytest.raises(ConversionError, match="missing keys: head.linear_predict"):
        convert(tmp_path / "cut.pth", tmp_path / "c")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_edge_band_matches_the_authors_definition() -> None:
    """Cross-shaped dilation (side 7) of the mask and of its complement, kept where both are set."""
    target = torch.zeros(1, 1, 20, 20)
    target[..., 5:12, 6:15] = 1.0
    band = edge_band(target, 7)[0, 0].bool()
    pos, neg = target[0, 0] > 0.5, target[0, 0] <= 0.5
    ref = torch.zeros_like(band)
    for y in range(20):
        for x in range(20):
            row = slice(max(0, x - 3), x + 4)
            col = slice(max(0, y - 3), y + 4)
            near_pos = pos[y, row].any() or pos[col, x].any()
            near_neg = neg[y, row].any() or neg[col, x].any()
            ref[y, x] = bool(near_pos and near_neg)
    assert torch.equal(band, ref) and band.sum() > 0
    assert edge_band(torch.zeros(1, 1, 9, 9)).sum() == 0 and edge_band(torch.ones(1, 1, 9, 9)).sum() == 0
    ignored = target.clone()
    ignored[..., 5:12, 6:8] = -1.0  # IGNORE pixels count as neither class ...
    assert edge_band(ignored)[..., 5:12, 6:8].sum() > 0  # ... the band may cover them, but they get no loss:
    logits = torch.randn(1, 1, 20, 20)
    valid = (ignored >= 0).float()
    per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(logits, ignored.clamp(min=0), reduction="none")
    torch.testing.assert_close(edge_bce(logits, ignored), (per_pixel * edge_band(ignored) * valid).sum().view(1) / valid.sum())
    with pytest.raises(ValueError, match="odd"):
        edge_band(target, 4)


def test_iml_loss_edge_term() -> None:
    """IMLLoss(bce 1, dice 0, edge 20) = mean BCE + 20 x sum(BCE on the band) / pixels, the authors' loss."""
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 24, 24), torch.zeros(2, 1, 24, 24)
    target[0, :, 4:15, 3:11] = 1.0
    out = type("Out", (), {"mask_logits": logits, "aux_mask_logits": [], "image_logits": None})()
    loss = IMLLoss(bce_weight=1.0, dice_weight=0.0, image_weight=0.0, edge_weight=20.0)(out, target)["loss"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ref = bce(logits, target) + 20 * bce(logits, target, weight=edge_band(target))
    torch.testing.assert_close(loss, ref)


def test_backbone_weights_from_a_plain_vit(tmp_path: Path) -> None:
    """The authors start from MAE ViT-B (timm ViT keys): patch embedding, position embedding and blocks load,
    the relative position tables (absent from a plain ViT) stay zero."""
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=48, depth=4, num_heads=3, num_classes=0)
    torch.save({"model": vit.state_dict()}, tmp_path / "mae.pth")
    model = IMLViT(size="tiny", backbone_weights=str(tmp_path / "mae.pth"))
    assert torch.equal(model.backbone.blocks[2].attn.qkv.weight, vit.blocks[2].attn.qkv.weight)
    assert torch.equal(model.backbone.pos_embed, vit.pos_embed)
    assert model.backbone.blocks[1].attn.rel_pos_h.abs().sum() == 0
    assert model.config["backbone_weights"] is None  # a saved model carries its weights
    with pytest.raises(ValueError, match="lack"):
        IMLViT(size="tiny", depth=5, global_blocks=[1, 4], backbone_weights=str(tmp_path / "mae.pth"))
