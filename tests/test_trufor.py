"""TruFor (CVPR 2023): output contract at odd sizes, the official key layout, `webiml convert trufor`, the
authors' phase losses and the phase task.

The constructed checkpoints have the official layout of grip-unina/TruFor's ``trufor.pth.tar`` (a dict with
``state_dict``; key names and shapes from ``fixtures/trufor_keys.json.gz``) with random values. The equality
with the authors' code itself was measured outside the test suite (see the catalogue entry ``trufor``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from webiml.cli import main
from webiml.convert import ConversionError, convert_trufor, infer_trufor_config
from webiml.models import create_model
from webiml.models.trufor import TruFor, TruForOutput, min_input_size, weighted_statistics_pooling
from webiml.tasks.trufor import TruForLoss, TruForTask, tcp_targets

FIXTURE = json.loads(gzip.decompress((Path(__file__).parent / "fixtures" / "trufor_keys.json.gz").read_bytes()))["state_dict"]


def _random_state(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) >= 2:
            state[key] = torch.randn(shape, generator=g) * (1.0 / torch.Size(shape[1:]).numel()) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


# -- model ----------------------------------------------------------------------------------------------


def test_tiny_forward_backward_odd_size() -> None:
    torch.manual_seed(0)
    model = create_model("trufor_tiny")
    assert isinstance(model, TruFor) and model.frozen == ("dncnn",)
    model.train()
    assert not model.dncnn.training and model.backbone.training  # Noiseprint++ stays fixed (FIX_MODULES)
    out = model(torch.rand(2, 3, 200, 328))
    assert isinstance(out, TruForOutput)
    assert out.mask_logits.shape == (2, 1, 200, 328) and out.confidence_logits.shape == (2, 1, 200, 328)
    assert out.image_logits.shape == (2,)
    (out.mask_logits.mean() + out.confidence_logits.mean() + out.image_logits.sum()).backward()
    no_grad = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is None}
    assert no_grad == {"dncnn"}
    assert all(not p.requires_grad for p in model.dncnn.parameters())


def test_outputs_follow_the_official_heads() -> None:
    """mask = z1 - z0 of the 2-class head at full size; image = MLP on the confidence-weighted pooling."""
    torch.manual_seed(0)
    model = TruFor(size="tiny").eval()
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        out = model(x)
        noise = model.dncnn(x).repeat(1, 3, 1, 1)
        feats = model.backbone((x - model.rgb_mean) / model.rgb_std, noise)
        z = F.interpolate(model.decode_head(feats), size=(45, 61), mode="bilinear", align_corners=False)
        c = F.interpolate(model.decode_head_conf(feats), size=(45, 61), mode="bilinear", align_corners=False)
        d = z[:, 1:2] - z[:, 0:1]
        det = model.detection(torch.cat((weighted_statistics_pooling(c), weighted_statistics_pooling(d, F.logsigmoid(c))), 1))
    torch.testing.assert_close(out.mask_logits, d)
    torch.testing.assert_close(out.mask_probs(), z.softmax(1)[:, 1:2])  # the authors' 'map'
    torch.testing.assert_close(out.confidence(), c.sigmoid())
    torch.testing.assert_close(out.image_logits, det[:, 0])


def test_weighted_statistics_pooling() -> None:
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])
    stats = weighted_statistics_pooling(x)[0]
    n = torch.log(torch.tensor(4.0))
    torch.testing.assert_close(stats, torch.stack([-(torch.logsumexp(-x.flatten(), 0) - n), torch.logsumexp(x.flatten(), 0) - n,
                                                   x.mean(), (x * x).mean()]))
    assert stats[0] < x.min() + n and stats[1] > x.max() - n
    peaked = torch.full_like(x, -1e4)
    peaked[..., 1, 0] = 0.0  # all the weight on the pixel of value 3
    torch.testing.assert_close(weighted_statistics_pooling(x, peaked)[0], torch.tensor([3.0, 3.0, 3.0, 9.0]))


def test_any_size_and_tiny_inputs() -> None:
    assert min_input_size((8, 4, 2, 1)) == 29  # the authors' code fails on a side of 28 (stage-1 reduction 8)
    model = TruFor(size="tiny").eval()
    with torch.no_grad():
        for h, w in ((29, 30), (17, 40), (5, 3)):
            out = model(torch.rand(1, 3, h, w))
            assert out.mask_logits.shape == out.confidence_logits.shape == (1, 1, h, w)
            assert torch.isfinite(out.mask_logits).all() and torch.isfinite(out.image_logits).all()
        # at or above the minimum the input runs as it is: the top-left of a padded input differs
        x = torch.rand(1, 3, 29, 29)
        assert not torch.allclose(model(x).mask_logits, model(F.pad(x, (0, 3, 0, 3), mode="replicate")).mask_logits[..., :29, :29])
    with pytest.raises(ValueError, match="detection_head needs confidence_head"):
        TruFor(size="tiny", confidence_head=False)
    with pytest.raises(ValueError, match="unknown TruFor parts"):
        model.set_frozen(["head"])


def test_uint8_input_is_exactly_over_256() -> None:
    model = TruFor(size="tiny")
    u8 = torch.randint(0, 256, (3, 31, 40), dtype=torch.uint8)
    assert torch.equal(model.normalize(u8), u8.float()[None] / 256.0)  # the authors' loaders


@pytest.fixture(scope="module")
def b2_official_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A constructed ``trufor.pth.tar`` (MiT-B2, all heads) in the official format."""
    path = tmp_path_factory.mktemp("trufor") / "trufor.pth.tar"
    state = _random_state(FIXTURE)
    torch.save({"epoch": 42, "best_value": 0.9, "best_key": "avg_det_bacc", "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.005, "params": [0, 1]}]}}, path)
    return path, state


def test_b2_matches_official_layout_and_converts(b2_official_file, tmp_path: Path, capsys) -> None:
    path, state = b2_official_file
    torch.manual_seed(0)
    model = create_model("trufor")
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert own == FIXTURE  # every official key, same shapes, nothing else
    assert sum(p.numel() for p in model.parameters()) == 68_697_421
    assert infer_trufor_config(state) == {"size": "b2", "confidence_head": True, "detection_head": True}

    out_dir = tmp_path / "trufor"
    assert main(["convert", "trufor", str(path), str(out_dir)]) == 0
    assert "TruFor" in capsys.readouterr().out
    converted = TruFor.from_pretrained(out_dir).eval()
    loaded = converted.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    with torch.no_grad():
        out = converted.predict(torch.randint(0, 256, (3, 33, 47), dtype=torch.uint8))
    assert out.mask_logits.shape == (1, 1, 33, 47) and out.image_logits.shape == (1,)
    assert torch.isfinite(out.mask_logits).all() and torch.isfinite(out.confidence_logits).all()


def test_converter_reads_variants_and_refuses_bad_files(tmp_path: Path) -> None:
    tiny = TruFor(size="tiny", confidence_head=False, detection_head=False)  # a phase-2 model
    shapes = {k: list(v.shape) for k, v in tiny.state_dict().items()}
    state = {f"module.{k}": v for k, v in _random_state(shapes, seed=1).items()}  # saved from DataParallel
    src = tmp_path / "best.pth.tar"
    torch.save(state, src)  # a bare state dict
    model = convert_trufor(src, tmp_path / "ph2")
    assert model.size == "tiny" and model.decode_head_conf is None and model.detection is None
    out = TruFor.from_pretrained(tmp_path / "ph2").eval()(torch.rand(1, 3, 40, 40))
    assert out.image_logits is None and out.confidence_logits is None

    bad = tmp_path / "notes.pth.tar"
    bad.write_text("not a checkpoint")
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        convert_trufor(bad, tmp_path / "x")
    noiseprint = tmp_path / "noiseprint++.th"
    torch.save({"network": {"0.weight": torch.zeros(64, 3, 3, 3)}, "global_step": 1}, noiseprint)
    with pytest.raises(ConversionError, match="noiseprint\\+\\+"):
        convert_trufor(noiseprint, tmp_path / "x")
    extra = tmp_path / "extra.pth"
    torch.save({"state_dict": {**state, "head.fc.weight": torch.zeros(2)}}, extra)
    with pytest.raises(ConversionError, match="not part of TruFor"):
        convert_trufor(extra, tmp_path / "x")
    wrong = dict(state)
    wrong["module.decode_head.linear_pred.weight"] = torch.zeros(3, 32, 1, 1)
    torch.save({"state_dict": wrong}, extra)
    with pytest.raises(ConversionError, match="shape"):
        convert_trufor(extra, tmp_path / "x")


# -- losses and the phase task --------------------------------------------------------------------------


def _batch(seed: int = 0, size: tuple[int, int] = (37, 53)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    z = torch.randn(3, 2, h, w, generator=g) * 3
    t = torch.zeros(3, 1, h, w)
    t[0, 0, 5:25, 10:40] = 1.0
    t[2, 0, 1:3, 1:2] = 1.0  # 2 forged pixels: "pristine" for detection (more than 3 needed)
    t[torch.rand(3, 1, h, w, generator=g) < 0.05] = -1.0
    return z, t, torch.randn(3, generator=g)


def test_phase2_loss_is_the_authors_dice_entropy() -> None:
    z, t, _ = _batch()
    out = SimpleNamespace(mask_logits=z[:, 1:2] - z[:, 0:1])
    parts = TruForLoss(phase=2)(out, t)
    # the authors' formula on the 2-class logits: weighted softmax CE (ignore -1) and Dice (exponent 2, smooth 0)
    labels = t[:, 0].long()
    ce = F.cross_entropy(z, labels, weight=torch.tensor([0.5, 2.5]), ignore_index=-1)
    p, valid, forged = z.softmax(1)[:, 1], (labels >= 0).float(), (labels == 1).float()
    dice = 1 - ((2 * (p * forged * valid).sum((1, 2))) / ((p**2 * valid + forged * valid).sum((1, 2)) + 1e-5)).mean()
    torch.testing.assert_close(parts["loss_ce"], ce)
    torch.testing.assert_close(parts["loss_dice"], dice)
    torch.testing.assert_close(parts["loss"], 0.3 * ce + 0.7 * dice)
    # an image without forged pixels contributes a constant 1 to the Dice term (smooth 0): no gradient
    d = out.mask_logits[1:2].clone().requires_grad_(True)
    TruForLoss(phase=2, ce_weight=0.0)(SimpleNamespace(mask_logits=d), t[1:2])["loss"].backward()
    assert float(d.grad.abs().max()) == 0.0


def test_phase3_loss_confidence_and_detection() -> None:
    z, t, det = _batch(1)
    conf = torch.randn(3, 1, *t.shape[-2:]).requires_grad_(True)
    out = SimpleNamespace(mask_logits=(z[:, 1:2] - z[:, 0:1]).requires_grad_(True), confidence_logits=conf, image_logits=det)
    parts = TruForLoss(phase=3)(out, t)
    box = torch.zeros(1, 1, 40, 60)
    box[..., 5:25, 10:40] = 1.0
    out_box, in_box = tcp_targets(box)
    assert in_box.sum() == in_box[..., 12:18, 17:33].sum() == 6 * 16  # eroded by 15x15 (7 pixels each way)
    assert out_box[..., 0:30, 5:45].sum() == 0 and out_box.sum() == 40 * 60 - 30 * 40  # dilated by 11x11
    outside, inside = tcp_targets((t > 0.5).float())
    p = z.softmax(1)[:, 1:2]
    tcp = p * inside + (1 - p) * outside
    sup = (t >= 0) & ((inside > 0) | (outside > 0))
    torch.testing.assert_close(parts["loss_conf"], ((conf.detach().sigmoid() - tcp)[sup] ** 2).mean())
    y = torch.tensor([1.0, 0.0, 0.0])  # image 2 has only 2 forged pixels
    w = y * 0.5 / 0.7 + (1 - y) * 0.5 / 0.3
    torch.testing.assert_close(parts["loss_det"], (w * F.binary_cross_entropy_with_logits(det, y, reduction="none")).mean())
    torch.testing.assert_close(parts["loss"], parts["loss_conf"] + 0.5 * parts["loss_det"])
    parts["loss"].backward()
    assert out.mask_logits.grad is None  # the TCP target is detached
    with pytest.raises(ValueError, match="phases"):
        TruForLoss(phase=1)


@pytest.mark.parametrize("phase", [2, 3])
def test_task_phase_trains_only_its_parts(phase: int) -> None:
    torch.manual_seed(0)
    task = TruForTask(TruFor(size="tiny"), phase=phase)
    trainable = {n.split(".")[0] for n, p in task.net.named_parameters() if p.requires_grad}
    assert trainable == ({"backbone", "decode_head"} if phase == 2 else {"decode_head_conf", "detection"})
    assert task.hparams["phase"] == phase and task.hparams["net"]["class_path"].endswith("TruFor")
    task.train()
    assert not task.net.dncnn.training and task.net.backbone.training == (phase == 2)
    opt = task.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    image = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    mask = torch.zeros(2, 1, 48, 64)
    mask[0, :, 10:30, 20:50] = 1.0
    batch = {"image": task.net.normalize(image), "mask": mask, "label": torch.tensor([1, 0])}
    losses = []
    for _ in range(6):
        parts = task.losses(task.forward_batch(batch), batch)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(float(parts["loss"].detach()))
    assert set(parts) == ({"loss", "loss_ce", "loss_dice"} if phase == 2 else {"loss", "loss_conf", "loss_det"})
    assert losses[-1] < losses[0], losses
    no_grad = {n.split(".")[0] for n, p in task.net.named_parameters() if p.grad is None}
    assert no_grad == {n for n in ("dncnn", "backbone", "decode_head", "decode_head_conf", "detection") if n not in trainable}
