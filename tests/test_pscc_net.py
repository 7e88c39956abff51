"""PSCC-Net (``webiml convert pscc-net``), its forward contract and PSCCLoss, offline.

``fixtures/pscc_net_keys.json.gz`` holds the key names and shapes of the authors' three files (recorded by
instantiating proteus1991/PSCC-Net's models and saving them as ``train.py`` does, through ``nn.DataParallel``;
NLCDetection.pth and DetectionHead.pth equal the released files key for key). Official-layout folders are
built here from webiml models with random weights.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import torch

from webiml.cli import main
from webiml.convert import ConversionError
from webiml.convert.pscc_net import (
    convert_pscc_net,
    infer_pscc_config,
    pscc_official_to_webiml,
    webiml_to_pscc_official,
)
from webiml.models.pscc_net import PSCCNet
from webiml.tasks.losses import PSCCLoss, balanced_bce, scale_target

FIXTURE = json.loads(gzip.decompress((Path(__file__).parent / "fixtures" / "pscc_net_keys.json.gz").read_bytes()))
TINY = dict(channels=(4, 8, 8, 16), stem_width=8)


def test_fixture_maps_onto_the_full_model() -> None:
    parts = {name[: -len(".pth")]: {k[len("module."):]: torch.empty(s, device="meta") for k, s in keys.items()}
             for name, keys in FIXTURE["files"].items()}
    state = pscc_official_to_webiml(parts)
    with torch.device("meta"):
        model = PSCCNet()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    assert infer_pscc_config(state) == {}
    # the key order of each file is the official module order
    split = webiml_to_pscc_official(model.state_dict())
    assert all(list(split[p]) == list(parts[p]) for p in parts)


def test_forward_backward_odd_size() -> None:
    torch.manual_seed(0)
    model = PSCCNet(crop_size=32, **TINY)
    out = model(torch.rand(2, 3, 200, 328))
    assert out.mask_logits.shape == (2, 1, 200, 328) and out.image_logits.shape == (2,)
    assert [tuple(a.shape) for a in out.aux_mask_logits] == [(2, 1, 32 // 2**i, 32 // 2**i) for i in range(4)]
    loss = out.mask_logits.mean() + sum(a.mean() for a in out.aux_mask_logits) + out.image_logits.sum()
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 37, 45))
    assert out.aux_mask_logits == [] and out.mask_logits.shape == (1, 1, 37, 45) and torch.isfinite(out.mask_logits).all()


def test_mask_is_the_resized_probability_map() -> None:
    """As the authors' test.py: mask1's probabilities resized to the image (bilinear, align_corners=True)."""
    torch.manual_seed(0)
    model = PSCCNet(crop_size=32, **TINY).eval()
    x = torch.rand(1, 3, 50, 70)
    with torch.inference_mode():
        out = model(x)
        mask1 = model.localization_head(model.head_features(model.encoder(x)))[0]
    up = torch.nn.functional.interpolate(mask1.sigmoid(), size=(50, 70), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out.mask_logits.sigmoid(), up, atol=1e-7, rtol=0)


def _official_folder(root: Path, model: PSCCNet, layout: str = "repo") -> dict[str, Path]:
    g = torch.Generator().manual_seed(1)
    files = {}
    for part, state in webiml_to_pscc_official(model.state_dict()).items():
        state = {"module." + k: (torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v.clone())
                 for k, v in state.items()}
        path = root / f"{part}_checkpoint" / f"{part}.pth" if layout == "repo" else root / f"{part}_7.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state if layout == "repo" else {"model": state, "optimizer": {}}, path)
        files[part] = path
    return files


def test_convert_folder_and_file_list(tmp_path: Path, capsys) -> None:
    ref = PSCCNet(**TINY)
    files = _official_folder(tmp_path / "checkpoint", ref)
    out = tmp_path / "pscc"
    assert main(["convert", "pscc-net", str(tmp_path / "checkpoint"), str(out)]) == 0
    assert "PSCCNet" in capsys.readouterr().out
    model = PSCCNet.from_pretrained(out)
    assert model.config["channels"] == [4, 8, 8, 16] and model.config["stem_width"] == 8 and model.crop_size == [256, 256]
    for part, path in files.items():
        official = torch.load(path, weights_only=True)
        prefix = {"HRNet": "encoder.", "NLCDetection": "localization_head.", "DetectionHead": "detection_head."}[part]
        assert all(torch.equal(model.state_dict()[prefix + k[len("module."):]], v) for k, v in official.items())
    # train.py's per-epoch files ({"model", "optimizer"}), any names, any order, comma-separated
    epoch = _official_folder(tmp_path / "epochs", ref, layout="epoch")
    names = [str(p) for p in epoch.values()]
    random.Random(0).shuffle(names)
    other = convert_pscc_net(",".join(names), tmp_path / "pscc2", crop_size=64)
    assert other.crop_size == [64, 64]
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values(), strict=True))


def test_bad_sources_are_conversion_errors(tmp_path: Path) -> None:
    files = _official_folder(tmp_path / "checkpoint", PSCCNet(**TINY))
    with pytest.raises(ConversionError, match="three files: give their folder"):
        convert_pscc_net(files["HRNet"], tmp_path / "a")
    files["NLCDetection"].unlink()
    with pytest.raises(ConversionError, match="has no NLCDetection.pth"):
        convert_pscc_net(tmp_path / "checkpoint", tmp_path / "b")
    junk = tmp_path / "junk.pth"
    torch.save({"backbone.weight": torch.zeros(1)}, junk)
    with pytest.raises(ConversionError, match="not one of PSCC-Net's"):
        convert_pscc_net(f"{files['HRNet']},{files['DetectionHead']},{junk}", tmp_path / "c")
    with pytest.raises(ConversionError, match="both PSCC-Net HRNet"):
        convert_pscc_net(f"{files['HRNet']},{files['HRNet']},{files['DetectionHead']}", tmp_path / "d")
    with pytest.raises(ConversionError, match="not found"):
        convert_pscc_net(tmp_path / "missing", tmp_path / "e")


def test_balanced_bce_and_scale_targets() -> None:
    logits = torch.randn(2, 1, 8, 8)
    target = torch.zeros(2, 1, 8, 8)
    target[0, :, :2] = 1
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pos = target > 0.5
    expected = 0.5 * bce[pos].mean() + 0.5 * bce[~pos].mean()  # the authors' 0.5 / class share weighting
    torch.testing.assert_close(balanced_bce(logits, target), expected)
    torch.testing.assert_close(balanced_bce(logits, torch.zeros_like(target)),
                               torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(target)))
    t = torch.zeros(1, 1, 8, 8)
    t[..., :3, :] = 1  # rows 0-2 manipulated: at half size row 0 (2/2) yes, row 1 (1/2) no
    t[..., 7, 7] = -1
    small = scale_target(t, (4, 4))
    assert small[0, 0, :, 0].tolist() == [1.0, 0.0, 0.0, 0.0] and small[0, 0, 3, 3] == 0  # 3/4 supervised
    t[..., 6:, 6:] = -1
    assert scale_target(t, (4, 4))[0, 0, 3, 3] == -1


def test_pscc_loss_terms_and_task() -> None:
    torch.manual_seed(0)
    model = PSCCNet(crop_size=32, **TINY)
    target = torch.zeros(2, 1, 48, 40)
    target[1, :, 5:20, 5:30] = 1
    label = torch.tensor([0, 1])
    out = model(torch.rand(2, 3, 48, 40))
    parts = PSCCLoss()(out, target, label)
    assert set(parts) == {"loss", "loss_mask", "loss_aux", "loss_image"}
    torch.testing.assert_close(parts["loss"], parts["loss_mask"] + parts["loss_aux"] + parts["loss_image"])
    # two-class weighted CE (weights 1/0.25, 1/0.75, a weighted mean) == weighted BCE on z1 - z0
    z = torch.stack([torch.zeros(2), out.image_logits], dim=1)
    ce = torch.nn.CrossEntropyLoss(weight=torch.tensor([4.0, 4.0 / 3.0]))(z, label)
    torch.testing.assert_close(parts["loss_image"], ce)
    mask1 = balanced_bce(out.aux_mask_logits[0], scale_target(target, (32, 32)))
    torch.testing.assert_close(parts["loss_mask"], mask1)
    model.eval()  # no aux outputs: the main mask alone
    with torch.no_grad():
        assert set(PSCCLoss()(model(torch.rand(2, 3, 48, 40)), target, label)) == {"loss", "loss_mask", "loss_image"}

    from webiml.tasks.iml import IMLTask

    task = IMLTask(net=PSCCNet(crop_size=32, **TINY), loss=PSCCLoss(authentic_ratio=0.5))
    assert task.hparams["loss"]["init_args"]["authentic_ratio"] == 0.5
