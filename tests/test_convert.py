"""``webiml convert apsc-net``: official-format mmcv checkpoints in, strict webiml model directories out."""

from __future__ import annotations

import argparse
import fractions
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from webiml.cli import main
from webiml.convert import (
    ConversionError,
    apsc_key_to_webiml,
    convert_apsc_net,
    load_checkpoint,
    webiml_key_to_apsc,
    webiml_to_apsc_official,
)
from webiml.models.apsc_net import APSCNet


@pytest.fixture(scope="module")
def source() -> APSCNet:
    """A small APSC-Net with non-default depths/widths and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = APSCNet(size="tiny", depths=[1, 2, 1, 1], dims=[16, 24, 40, 48], channels=24, low_proj=8)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return model.eval()


def _official(model: APSCNet, prefix: str = "module.") -> dict[str, torch.Tensor]:
    return {prefix + k: v.clone() for k, v in webiml_to_apsc_official(model.state_dict()).items()}


def _save(path: Path, state: dict, wrap: bool = True) -> Path:
    meta = {"mmcv_version": "1.7.1", "iter": 160000, "CLASSES": ("authentic", "tampered"), "hook_msgs": {"best_score": np.float64(0.61)}}
    torch.save({"meta": meta, "state_dict": state} if wrap else state, path)
    return path


def test_key_mapping_is_official_and_invertible() -> None:
    assert apsc_key_to_webiml("backbone.downsample_layers.0.1.bias") == "backbone.stem.1.bias"
    assert apsc_key_to_webiml("backbone.downsample_layers.2.1.weight") == "backbone.stages.2.downsample.1.weight"
    assert apsc_key_to_webiml("backbone.stages.2.13.pwconv1.weight") == "backbone.stages.2.blocks.13.mlp.fc1.weight"
    assert apsc_key_to_webiml("backbone.stages.1.0.gamma") == "backbone.stages.1.blocks.0.gamma"
    assert apsc_key_to_webiml("decode_head.ha.kg.9.weight") == "decode_head.ha.kg.9.weight"
    assert apsc_key_to_webiml("auxiliary_head.conv_seg.weight") is None
    assert apsc_key_to_webiml("backbone.head.fc.weight") is None
    for key in APSCNet(size="tiny").state_dict():
        assert apsc_key_to_webiml(webiml_key_to_apsc(key)) == key


def test_convert_verb_round_trip(tmp_path: Path, source: APSCNet, capsys) -> None:
    src = _save(tmp_path / "APSC-Net.pth", _official(source))
    out = tmp_path / "apsc-net"
    assert main(["convert", "apsc-net", str(src), str(out)]) == 0
    assert "APSCNet" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors"}
    config = json.loads((out / "config.json").read_text())
    assert config["depths"] == [1, 2, 1, 1] and config["dims"] == [16, 24, 40, 48] and config["channels"] == 24
    loaded = APSCNet.from_pretrained(out, strict=True).eval()
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        ref, got = source(x), loaded(x)
    torch.testing.assert_close(got.mask_logits, ref.mask_logits)
    torch.testing.assert_close(got.image_logits, ref.image_logits)


def test_convert_verb_options_reach_the_model(tmp_path: Path, source: APSCNet, capsys) -> None:
    src = _save(tmp_path / "APSC-Net.pth", _official(source))
    out = tmp_path / "apsc-net"
    assert main(["convert", "apsc-net", str(src), str(out), "--option", "dropout=0.2", "--option", "drop_path_rate=0.1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["dropout"] == 0.2 and config["drop_path_rate"] == 0.1 and config["dims"] == [16, 24, 40, 48]
    assert main(["convert", "apsc-net", str(src), str(tmp_path / "bad"), "--option", "no_such_argument=1"]) == 1
    err = capsys.readouterr().err
    assert "no_such_argument" in err and "Traceback" not in err and not (tmp_path / "bad" / "model.safetensors").exists()
    assert main(["convert", "apsc-net", str(src), str(tmp_path / "bad"), "--option", "input_size"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_bare_state_dict_without_image_head(tmp_path: Path) -> None:
    """The training config (``Decode_seg``) has no ``cls_head``: the converter builds the model without it."""
    model = APSCNet(size="tiny", image_head=False).eval()
    src = _save(tmp_path / "bare.pth", _official(model, prefix=""), wrap=False)
    converted = convert_apsc_net(src, tmp_path / "out")
    assert converted.decode_head.cls_head is None
    assert json.loads((tmp_path / "out" / "config.json").read_text())["image_head"] is False


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.update({"module.backbone.stages.0.0.foo.weight": torch.zeros(1)}), r"not part of APSC-Net.*: backbone\.stages\.0\.0\.foo\.weight"),
        (lambda sd: sd.update({"module.decode_head.extra.weight": torch.zeros(1)}), r"unexpected keys: decode_head\.extra\.weight"),
        (lambda sd: sd.pop("module.decode_head.CE.c11.bn.running_mean"), r"missing keys: decode_head\.CE\.c11\.bn\.running_mean"),
        (lambda sd: sd.pop("module.decode_head.conv_seg.weight"), r"missing key 'decode_head\.conv_seg\.weight'"),
        (lambda sd: sd.update({"module.decode_head.SE1.0.weight": torch.zeros(3, 48, 1, 1)}), r"shape mismatches: decode_head\.SE1\.0\.weight \(3, 48, 1, 1\) vs expected"),
    ],
    ids=["unknown-key", "unexpected-head-key", "missing-key", "missing-config-key", "wrong-shape"],
)
def test_bad_checkpoints_fail_clearly(tmp_path: Path, source: APSCNet, capsys, edit, message: str) -> None:
    state = _official(source)
    edit(state)
    src = _save(tmp_path / "bad.pth", state)
    with pytest.raises(ConversionError, match=message):
        convert_apsc_net(src, tmp_path / "out")
    assert main(["convert", "apsc-net", str(src), str(tmp_path / "out2")]) == 1
    assert "webiml convert: error:" in capsys.readouterr().err
    assert not (tmp_path / "out2" / "model.safetensors").exists()


def test_refuses_full_unpickling_and_non_state_dicts(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "meta": fractions.Fraction(1, 3)}, pickled)
    with pytest.raises(ConversionError, match=r"weights_only=True.*fractions\.Fraction"):
        load_checkpoint(pickled)
    # MAE-style training scripts (IML-ViT, IMDL-BenCo) store their argparse args: plain data, accepted.
    with_args = tmp_path / "with_args.pth"
    torch.save({"model": {"a": torch.zeros(1)}, "args": argparse.Namespace(lr=1e-4, data="x")}, with_args)
    assert list(load_checkpoint(with_args)) == ["a"]
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(ConversionError, match="not a state dict"):
        load_checkpoint(listing)
    numbers = tmp_path / "numbers.pth"
    torch.save({"state_dict": {"a": 1.0}}, numbers)
    with pytest.raises(ConversionError, match="not a state dict"):
        load_checkpoint(numbers)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(ConversionError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")
