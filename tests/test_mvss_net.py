"""MVSS-Net (``webiml convert mvss-net``), its forward contract and MVSSLoss, offline.

``fixtures/mvss_net_keys.json.gz`` holds the key names and shapes of the authors' ``get_mvss(...)`` state dict
(recorded by instantiating dong03/MVSS-Net's ``models/mvssnet.py``). The full model has 143M parameters, so
the key mapping is checked against a model built on the meta device, and the converter round trip runs on
the same code path at small widths (an official-layout file built from a small webiml model).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from webiml.cli import main
from webiml.convert import ConversionError
from webiml.convert.mvss_net import infer_mvss_config, mvss_official_to_webiml, webiml_to_mvss_official
from webiml.models.mvss_net import MVSSNet, MVSSOutput
from webiml.tasks.losses import MVSSLoss, squared_dice
from webiml.tasks.losses import square_edge_band as edge_band

FIXTURE = json.loads(gzip.decompress((Path(__file__).parent / "fixtures" / "mvss_net_keys.json.gz").read_bytes()))
TINY = dict(channels=(8, 16, 32, 64), layers=(1, 2, 2, 3))


def test_fixture_maps_onto_the_full_model() -> None:
    official = {k: torch.empty(s, device="meta") for k, s in FIXTURE["state_dict"].items()}
    state = mvss_official_to_webiml(official)
    assert len(official) - len(state) == 4  # model.fc.* and noise_extractor.model.fc.* dropped
    with torch.device("meta"):
        model = MVSSNet()
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == {k: tuple(v.shape) for k, v in state.items()}
    assert infer_mvss_config(state) == {}
    assert set(webiml_to_mvss_official(model.state_dict())) == {k for k in official if ".fc." not in k}


def test_forward_backward_odd_size() -> None:
    torch.manual_seed(0)
    model = MVSSNet(input_size=None, **TINY)
    out = model(torch.randn(2, 3, 200, 328))
    assert isinstance(out, MVSSOutput)
    assert out.mask_logits.shape == (2, 1, 200, 328)
    assert out.edge_logits.shape == (2, 1, 50, 82)  # stride 4 of the input padded to 208 x 336, cropped back
    torch.testing.assert_close(out.image_logits, out.mask_logits.flatten(1).amax(1))  # GMP
    (out.mask_logits.mean() + out.edge_logits.mean() + out.image_logits.sum()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert sorted(frozen) == sorted(f"sobel_{a}{i}.0.weight" for a in "xy" for i in range(1, 5))
    # The Bayar constraint: free weights rescaled to sum 1 (in place, as the authors), centre fixed at -1.
    torch.testing.assert_close(model.constrain_conv.kernel.detach().sum(-1), torch.ones(1, 3))
    assert torch.all(model.constrain_conv.constrained_kernel()[:, 0, 2, 2] == -1)


def test_resized_inference_as_the_authors() -> None:
    """input_size: the network runs on a 64 x 64 resize; the score is the max of that map; the map is resized back."""
    torch.manual_seed(0)
    model = MVSSNet(input_size=64, **TINY).eval()
    x = torch.randn(1, 3, 50, 70)
    with torch.inference_mode():
        out = model(x)
        ref = model.forward_padded(torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False))
    assert out.mask_logits.shape == (1, 1, 50, 70) and out.edge_logits.shape == (1, 1, 16, 16)
    torch.testing.assert_close(out.image_logits, ref.mask_logits.flatten(1).amax(1))
    up = torch.nn.functional.interpolate(ref.mask_logits.sigmoid(), size=(50, 70), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.mask_logits.sigmoid(), up, atol=1e-6, rtol=0)


def test_input_is_the_authors_bgr_normalisation() -> None:
    """normalize + the flip inside the model == cv2's BGR image normalised with ImageNet stats in BGR order."""
    model = MVSSNet(input_size=None, **TINY)
    rgb = torch.rand(1, 3, 8, 8)
    bgr = rgb.flip(1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(rgb).flip(1), (bgr - mean) / std)


def _official_file(path: Path, model: MVSSNet, prefix: str = "") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    state = {k: (torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v.clone())
             for k, v in webiml_to_mvss_official(model.state_dict()).items()}
    state["model.fc.weight"] = torch.randn(1000, 256)  # the unused ImageNet classifiers of the authors' file
    state["model.fc.bias"] = torch.zeros(1000)
    state["noise_extractor.model.fc.weight"] = torch.randn(1000, 256)
    state["noise_extractor.model.fc.bias"] = torch.zeros(1000)
    torch.save({prefix + k: v for k, v in state.items()}, path)
    return state


def test_convert_round_trip(tmp_path: Path, capsys) -> None:
    src = tmp_path / "mvssnet_casia.pt"
    state = _official_file(src, MVSSNet(**TINY), prefix="module.")
    out = tmp_path / "mvss"
    assert main(["convert", "mvss-net", str(src), str(out)]) == 0
    assert "MVSSNet" in capsys.readouterr().out
    model = MVSSNet.from_pretrained(out)
    assert model.config["channels"] == [8, 16, 32, 64] and model.config["layers"] == [1, 2, 2, 3]
    assert model.input_size == 512
    converted = webiml_to_mvss_official(model.state_dict())
    assert set(converted) == {k for k in state if ".fc." not in k}
    assert all(torch.equal(converted[k], state[k]) for k in converted)


def test_bad_files_are_conversion_errors(tmp_path: Path) -> None:
    from webiml.convert.mvss_net import convert_mvss_net

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="not a readable"):
        convert_mvss_net(junk, tmp_path / "a")
    other = tmp_path / "other.pt"
    torch.save({"backbone.stem.weight": torch.zeros(3)}, other)
    with pytest.raises(ConversionError, match="not part of MVSS-Net"):
        convert_mvss_net(other, tmp_path / "b")
    src = tmp_path / "cut.pt"
    state = _official_file(src, MVSSNet(**TINY))
    state["head.out.1.weight"] = torch.zeros(2, 128, 1, 1)
    del state["erb_db_1.conv1.bias"]
    torch.save(state, src)
    with pytest.raises(ConversionError, match=r"1 missing keys: erb_db_1\.conv1\.bias.*shape mismatches: head\.out\.1\.weight"):
        convert_mvss_net(src, tmp_path / "c")


def test_mvss_loss_terms() -> None:
    target = torch.zeros(2, 1, 32, 32)
    target[0, :, 8:24, 8:24] = 1.0
    band = edge_band(target, 3)
    assert band[0, 0, 7:9, 8:24].all() and band[0, 0, 12, 12] == 0 and band[1].sum() == 0
    good = MVSSOutput(mask_logits=(target * 2 - 1) * 30, image_logits=torch.tensor([30.0, -30.0]),
                      edge_logits=(torch.nn.functional.adaptive_max_pool2d(edge_band(target), (8, 8)) * 2 - 1) * 30)
    parts = MVSSLoss()(good, target, torch.tensor([1, 0]))
    assert parts["loss"] < 1e-3
    bad = MVSSOutput(mask_logits=-good.mask_logits, image_logits=-good.image_logits, edge_logits=-good.edge_logits)
    parts = MVSSLoss()(bad, target, None)  # labels derived from the mask
    torch.testing.assert_close(parts["loss_mask"], torch.tensor(0.16), atol=2e-3, rtol=0)
    assert 0.79 < parts["loss_edge"] < 0.80  # 0.8 * (1 - 1 / (sum p^2 + sum y^2 + 1)): the smoothing term
    torch.testing.assert_close(parts["loss_image"], torch.tensor(0.04 * 30.0), atol=1e-3, rtol=0)
    # Squared-denominator Dice over the batch (V-Net form); IGNORE pixels do not count.
    p = torch.tensor([[[[0.0, 2.0], [-1.0, 1.0]]]])
    y = torch.tensor([[[[1.0, 1.0], [0.0, -1.0]]]])
    s = p.sigmoid()[0, 0]
    expected = 1 - (2 * (s[0, 0] + s[0, 1]) + 1) / (s[0, 0] ** 2 + s[0, 1] ** 2 + s[1, 0] ** 2 + 2 + 1)
    torch.testing.assert_close(squared_dice(p, y), expected)
    with pytest.raises(ValueError, match="edge map"):
        MVSSLoss()(MVSSOutput(mask_logits=good.mask_logits), target)


def test_task_takes_the_loss_module() -> None:
    from webiml.tasks.iml import IMLTask

    task = IMLTask(net=MVSSNet(input_size=None, **TINY), loss=MVSSLoss(edge_width=5))
    assert isinstance(task.criterion, MVSSLoss) and task.criterion.edge_width == 5
    assert task.hparams["loss"] == {"class_path": "webiml.tasks.losses.MVSSLoss", "init_args": {
        "seg_weight": 0.16, "image_weight": 0.04, "edge_weight": pytest.approx(0.8), "edge_width": 5, "smooth": 1.0}}
    batch = {"image": torch.randn(2, 3, 64, 48), "mask": torch.zeros(2, 1, 64, 48), "label": torch.tensor([0, 1])}
    batch["mask"][1, :, 10:30, 10:20] = 1
    parts = task.losses(task.net(batch["image"]), batch)
    assert set(parts) == {"loss", "loss_mask", "loss_edge", "loss_image"} and torch.isfinite(parts["loss"])
