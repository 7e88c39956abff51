"""APSC-Net trained as the authors' code trains it (configs/miml/apscnet_miml_recipe.yaml): equal loss weights on
the main and auxiliary outputs, OHEM on auxiliary logits upsampled to the label size, the official stage-wise
layer decay, the tamper_comp augmentation (and none on the Object Jitter set), the ADE20k initialisation and
the official key layout (fixture from the authors' mmseg model)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from webiml.models.apsc_net import APSCNet
from webiml.models.base import IMLOutput
from webiml.tasks.losses import IMLLoss, ohem_bce
from webiml.tasks.optim import param_groups

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "miml" / "apscnet_miml_recipe.yaml"


# --- losses -----------------------------------------------------------------------------------------------


def _official_ohem(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int) -> torch.Tensor:
    """The authors' OhemCrossEntropy on 2-class logits (z0 = 0, z1 = logit), written out as their code does."""
    score = torch.cat([torch.zeros_like(logits), logits], dim=1)
    label = target[:, 0].long()
    pixel = F.cross_entropy(score, label, reduction="none").reshape(-1)
    pred = F.softmax(score, dim=1).gather(1, label[:, None]).reshape(-1)
    pred, ind = pred.sort()
    threshold = max(float(pred[min(min_kept, pred.numel() - 1)]), thresh)
    return pixel[ind][pred < threshold].mean()


def test_ohem_selection_is_the_authors() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16) * 2
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    for min_kept in (10, 100, 300, 511, 512, 10_000):
        torch.testing.assert_close(ohem_bce(logits, target, 0.7, min_kept), _official_ohem(logits, target, 0.7, min_kept))


def test_main_and_every_auxiliary_term_weighted_equally() -> None:
    torch.manual_seed(0)
    target = (torch.rand(2, 1, 32, 32) > 0.6).float()
    main = torch.randn(2, 1, 32, 32)
    aux = [torch.randn(2, 1, 8, 8) for _ in range(3)]  # stride 4, as APSC-Net's auxiliary outputs
    crit = IMLLoss(bce_weight=0.5, dice_weight=0.0, ohem_thresh=0.7, ohem_min_kept=100, image_weight=0.0, aux_weights=1.0)
    parts = crit(IMLOutput(mask_logits=main, aux_mask_logits=aux), target)
    up = [F.interpolate(a, size=(32, 32), mode="bilinear", align_corners=False) for a in aux]
    terms = [_official_ohem(x, target, 0.7, 100) for x in (main, *up)]
    # the authors' decode head: every loss (main and aux_0..2) divided by 2, summed
    torch.testing.assert_close(parts["loss"], sum(t / 2 for t in terms))
    torch.testing.assert_close(parts["loss_aux"], sum(t / 2 for t in terms[1:]))


def test_ohem_selects_pixels_on_upsampled_auxiliary_logits() -> None:
    """At stride 4 a 512 crop has 16k pixels per image: below min_kept 100k OHEM would keep them all. Upsampled
    to the label size it keeps exactly min_kept of 2 x 512^2 (the hardest ones)."""
    torch.manual_seed(0)
    target = torch.zeros(2, 1, 512, 512)
    target[:, :, 100:300, 100:300] = 1
    # a fairly confident prediction: fewer than 100k pixels are below 0.7, so min_kept sets the cut
    aux = (F.interpolate(target, size=(128, 128), mode="nearest") * 2 - 1) * 3 + torch.randn(2, 1, 128, 128) * 1.5
    up = F.interpolate(aux, size=(512, 512), mode="bilinear", align_corners=False)
    p_true = torch.where(target > 0.5, up.sigmoid(), 1 - up.sigmoid()).reshape(-1)
    cut = max(float(p_true.sort().values[100_000]), 0.7)
    assert int((p_true < cut).sum()) == 100_000  # a real selection: 100k of 524,288 pixels
    crit = IMLLoss(bce_weight=0.5, dice_weight=0.0, ohem_thresh=0.7, image_weight=0.0, aux_weights=1.0)
    parts = crit(IMLOutput(mask_logits=up.clone(), aux_mask_logits=[aux]), target)
    torch.testing.assert_close(parts["loss_aux"], parts["loss_mask"])  # the same pixels, the same weight
    hardest = F.binary_cross_entropy_with_logits(up, target, reduction="none").reshape(-1)[p_true < cut].mean()
    torch.testing.assert_close(parts["loss_aux"], 0.5 * hardest)


# --- layer decay --------------------------------------------------------------------------------------------


def _official_stage_id(official_name: str, num_layers: int = 12) -> int:
    """mmseg's get_stage_id_for_convnext(var_name, num_layers + 2) as the authors' constructor calls it."""
    if official_name.startswith("backbone.downsample_layers"):
        return 0
    if official_name.startswith("backbone.stages"):
        return int(official_name.split(".")[2]) + 1
    return num_layers + 2 - 1


def test_layer_decay_scales_are_the_official_formula() -> None:
    from webiml.convert.apsc_net import webiml_key_to_apsc

    model = APSCNet(size="tiny")
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.9)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    num_layers = 12 + 2  # the constructor's num_layers = paramwise_cfg num_layers + 2
    for name, p in model.named_parameters():
        official = webiml_key_to_apsc(name)
        expected = 0.9 ** (num_layers - _official_stage_id(official) - 1)
        assert scale_of[id(p)] == pytest.approx(expected), name
        assert wd_of[id(p)] == (0.0 if p.ndim == 1 or name.endswith(".bias") else 0.05), name
    named = dict(model.named_parameters())
    assert scale_of[id(named["backbone.stem.0.weight"])] == pytest.approx(0.9**13)
    assert scale_of[id(named["backbone.stages.2.downsample.1.weight"])] == pytest.approx(0.9**13)
    for i in range(4):
        assert scale_of[id(named[f"backbone.stages.{i}.blocks.0.conv_dw.weight"])] == pytest.approx(0.9 ** (12 - i))
        assert scale_of[id(named[f"backbone.norm{i}.weight"])] == 1.0  # not the stem's scale
    assert scale_of[id(named["decode_head.conv_seg.weight"])] == 1.0


def test_generic_layer_decay_gives_output_norms_the_top_scale() -> None:
    """Encoders without official ids: parameters outside the stages count as the stem only before them."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.stem = nn.Conv2d(3, 4, 1)
            self.encoder.stages = nn.ModuleList([nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)])
            self.encoder.norm = nn.LayerNorm(4)
            self.head = nn.Conv2d(4, 1, 1)

    net = Net()
    groups = param_groups(net, 0.0, layer_decay=0.5)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale_of[id(net.encoder.stem.weight)] == 0.5**3
    assert scale_of[id(net.encoder.stages[0].weight)] == 0.5**2
    assert scale_of[id(net.encoder.stages[1].weight)] == 0.5
    assert scale_of[id(net.encoder.norm.weight)] == 1.0 and scale_of[id(net.head.weight)] == 1.0


# --- augmentation -------------------------------------------------------------------------------------------


def _sample(h: int, w: int, source: str = "casia2") -> dict:
    image = torch.arange(3 * h * w, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(3, h, w)
    mask = (torch.arange(h * w).reshape(1, h, w) % 7 == 0).float()
    return {"image": image, "mask": mask, "source": source}


def test_absolute_resize_draws_each_side_in_range() -> None:
    from webiml.data.transforms import RandomAbsoluteResize

    torch.manual_seed(0)
    t = RandomAbsoluteResize(20, 30)
    sizes = [tuple(t(_sample(50, 70))["image"].shape[-2:]) for _ in range(200)]
    hs, ws = {s[0] for s in sizes}, {s[1] for s in sizes}
    assert min(hs) == min(ws) == 20 and max(hs) == max(ws) == 30  # both ends, inclusive
    assert sum(h != w for h, w in sizes) > 150  # independent sides: the aspect ratio is not kept
    out = t(_sample(50, 70))
    assert out["mask"].shape[-2:] == out["image"].shape[-2:] and set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError):
        RandomAbsoluteResize(30, 20)


def test_rot90_turns_image_and_mask_together() -> None:
    from webiml.data.transforms import RandomRot90

    torch.manual_seed(0)
    counts = {0: 0, 1: 0, 2: 0, 3: 0}
    for _ in range(400):
        s = _sample(6, 6)
        s["mask"] = (s["image"][:1] % 2).float()
        out = RandomRot90(p=1.0)(s)
        assert torch.equal(out["mask"], (out["image"][:1] % 2).float())
        k = next(k for k in range(4) if torch.equal(out["image"], torch.rot90(s["image"], k, dims=(-2, -1))))
        counts[k] += 1
    assert all(60 < c < 140 for c in counts.values())  # k uniform in 0..3 (albumentations' RandomRotate90)
    assert torch.equal(RandomRot90(p=0.0)(_sample(6, 6))["image"], _sample(6, 6)["image"])


def test_rgb_shift_range_and_clipping() -> None:
    from webiml.data.transforms import RandomRGBShift

    torch.manual_seed(0)
    image = torch.full((3, 4, 4), 128, dtype=torch.uint8)
    shifts = []
    for _ in range(300):
        out = RandomRGBShift(p=1.0, limit=20)({"image": image})["image"].int() - 128
        assert all(len(out[c].unique()) == 1 for c in range(3))  # one shift per channel
        shifts += out[:, 0, 0].tolist()
    assert -20 <= min(shifts) <= -17 and 17 <= max(shifts) <= 19  # truncation to uint8 floors the shift
    edge = torch.tensor([0, 255, 10], dtype=torch.uint8).view(3, 1, 1)
    out = RandomRGBShift(p=1.0, limit=20)({"image": edge})["image"]
    assert out.min() >= 0 and out.max() <= 255


def test_recipe_pipeline_and_object_jitter_without_photometric_steps(tmp_path: Path) -> None:
    from webiml.data.datamodule import IMLDataModule
    from webiml.data.transforms import (
        BySource,
        RandomAbsoluteResize,
        RandomCropPad,
        RandomJpeg,
        RandomRGBShift,
        RandomRot90,
    )

    init = yaml.safe_load(RECIPE.read_text())["data"]["init_args"]
    keys = ("crop_size", "resize_range", "crop_bias", "hflip", "vflip", "rot90_p", "jpeg_p", "jpeg_quality",
            "rgb_shift_p", "rgb_shift_limit", "geometry_only_sources")
    dm = IMLDataModule(**{k: init[k] for k in keys})
    tf = dm.train_transform()
    assert isinstance(tf, BySource) and set(tf.transforms) == {"coco-jitter"}
    steps = [type(t) for t in tf.default.transforms]
    assert steps == [RandomAbsoluteResize, RandomCropPad, RandomRot90, RandomJpeg, RandomRGBShift]  # no flips
    a, c, r, j, g = tf.default.transforms
    assert (a.min_size, a.max_size, c.size, r.p, j.p, j.quality, g.p, g.limit) == (512, 768, (512, 512), 0.5, 0.9, (50, 100), 0.3, 20.0)
    assert [type(t) for t in tf.transforms["coco-jitter"].transforms] == [RandomAbsoluteResize, RandomCropPad]
    # a jitter sample keeps its pixels (resize + crop only); any other source is re-compressed
    torch.manual_seed(0)
    small = IMLDataModule(crop_size=16, resize_range=(16, 16), jpeg_p=1.0, hflip=0.0, crop_bias=0.0,
                          geometry_only_sources=["coco-jitter"]).train_transform()
    sample = _sample(16, 16, "coco-jitter")
    assert torch.equal(small(sample)["image"], sample["image"])
    other = _sample(16, 16, "casia2")
    assert not torch.equal(small(other)["image"], other["image"])


def test_recipe_config_matches_the_authors() -> None:
    raw = yaml.safe_load(RECIPE.read_text())
    model, data = raw["model"]["init_args"], raw["data"]["init_args"]
    assert (model["bce_weight"], model["aux_weights"], model["dice_weight"]) == (0.5, 1.0, 0.0)
    assert (model["ohem_thresh"], model["ohem_min_kept"], model["layer_decay"]) == (0.7, 100000, 0.9)
    assert (model["lr"], model["weight_decay"], model["warmup_steps"], model["schedule"]) == (1e-4, 0.05, 1500, "poly")
    assert data["repeat"] == {"tampcoco-sp": 1, "tampcoco-cm": 1, "tampcoco-bcm": 1, "casia2": 80, "miml-part1": 6,
                              "miml-part2": 4, "coco-jitter": 3}
    assert raw["trainer"]["max_steps"] == 160000 and data["batch_size"] * raw["trainer"]["devices"] == 16


# --- weights: the official key layout and the ADE20k initialisation ---------------------------------------------


def test_official_key_fixture_maps_onto_apsc_net() -> None:
    """tests/fixtures/apsc_net_official_keys.json.gz: every key + shape of the authors' mmseg APSC-Net (built from
    their apscnet.py config with mmcv 1.7.2): the converter's mapping covers all of them, one to one."""
    from webiml.convert.apsc_net import apsc_key_to_webiml, infer_apsc_config

    official = json.loads(gzip.decompress((REPO / "tests" / "fixtures" / "apsc_net_official_keys.json.gz").read_bytes()))
    mapped = {apsc_key_to_webiml(k): tuple(v) for k, v in official.items()}
    assert None not in mapped and len(mapped) == len(official) == 578
    assert infer_apsc_config({k: torch.empty(v, device="meta") for k, v in mapped.items()}) == {"size": "base"}
    with torch.device("meta"):
        model = APSCNet(size="base")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == mapped


def _upernet_checkpoint(model: APSCNet, path: Path) -> dict[str, torch.Tensor]:
    """An mmseg UperNet-ConvNeXt checkpoint with ``model``'s backbone and UPer shapes (150 ADE classes)."""
    from webiml.convert.apsc_net import ADE20K_SHARED, webiml_to_apsc_official

    g = torch.Generator().manual_seed(3)
    state = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
             for k, v in webiml_to_apsc_official(model.state_dict()).items()
             if k.startswith(ADE20K_SHARED) and not k.endswith("num_batches_tracked")}
    c = model.decode_head.channels
    state["decode_head.conv_seg.weight"] = torch.randn(150, c, 1, 1, generator=g)
    state["decode_head.conv_seg.bias"] = torch.randn(150, generator=g)
    state["decode_head.fpn_bottleneck.conv.weight"] = torch.randn(c, 4 * c, 3, 3, generator=g)
    state["auxiliary_head.conv_seg.weight"] = torch.randn(150, 8, 1, 1, generator=g)
    torch.save({"meta": {"mmcv_version": "1.4.2"}, "state_dict": state}, path)
    return state


def test_ade20k_initialisation(tmp_path: Path) -> None:
    from webiml.cli import main
    from webiml.convert import ConversionError, convert_apsc_net_ade20k
    from webiml.hub import from_pretrained

    template = APSCNet(size="tiny")
    state = _upernet_checkpoint(template, tmp_path / "upernet.pth")
    model = convert_apsc_net_ade20k(tmp_path / "upernet.pth", tmp_path / "init", size="tiny", seed=0)
    own = model.state_dict()
    torch.testing.assert_close(own["backbone.stem.0.weight"], state["backbone.downsample_layers.0.0.weight"])
    torch.testing.assert_close(own["backbone.stages.1.blocks.0.mlp.fc1.weight"], state["backbone.stages.1.0.pwconv1.weight"])
    torch.testing.assert_close(own["backbone.norm3.weight"], state["backbone.norm3.weight"])
    torch.testing.assert_close(own["decode_head.psp_modules.0.1.conv.weight"], state["decode_head.psp_modules.0.1.conv.weight"])
    torch.testing.assert_close(own["decode_head.conv_seg.weight"], state["decode_head.conv_seg.weight"][:2])  # cvt_conv.py
    torch.manual_seed(0)
    fresh = APSCNet(size="tiny")  # everything APSC-Net adds to UperNet keeps the seeded random initialisation
    for key in ("decode_head.SE1.0.weight", "decode_head.MSDEC.conv_seg.weight", "decode_head.ha.kg.9.weight"):
        torch.testing.assert_close(own[key], fresh.state_dict()[key])
    loaded = from_pretrained(str(tmp_path / "init"))
    assert isinstance(loaded, APSCNet) and loaded.size == "tiny"
    # a checkpoint that is not UperNet-ConvNeXt, or lacks part of it, is refused (one line on the command line)
    bad = dict(state, **{"decode_head.MSDEC.conv_seg.weight": torch.zeros(2, 8, 1, 1)})
    torch.save({"state_dict": bad}, tmp_path / "apsc.pth")
    with pytest.raises(ConversionError, match="not part of UperNet"):
        convert_apsc_net_ade20k(tmp_path / "apsc.pth", tmp_path / "x", size="tiny")
    assert main(["convert", "apsc-net-ade20k", str(tmp_path / "apsc.pth"), str(tmp_path / "cli")]) == 1
    partial = {k: v for k, v in state.items() if not k.startswith("decode_head.fpn_convs")}
    torch.save({"state_dict": partial}, tmp_path / "partial.pth")
    with pytest.raises(ConversionError, match="lacks"):
        convert_apsc_net_ade20k(tmp_path / "partial.pth", tmp_path / "y", size="tiny")
    assert math.isfinite(float(np.mean([v.float().mean() for v in own.values()])))
