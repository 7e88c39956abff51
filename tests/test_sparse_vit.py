"""SparseViT (``webiml convert sparse-vit``): the sparse attention, the resize contract, the converter, offline.

``fixtures/sparse_vit_keys.json.gz`` holds the key names and shapes (no weights) of the authors' ``SparseViT_Mul()``
(scu-zjz/SparseViT, the ``model`` entry of their checkpoint). The full model has 50 M parameters, so files are
round-tripped with the ``tiny`` preset (same code path and key scheme) and the full layout is checked on the meta
device.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from webiml.cli import main
from webiml.convert import ConversionError, convert_sparse_vit
from webiml.convert.sparse_vit import infer_sparse_vit_size
from webiml.models.sparse_vit import SparseViT, from_sparse_groups, load_uniformer_weights, to_sparse_groups

FIXTURE = json.loads(gzip.decompress((Path(__file__).parent / "fixtures" / "sparse_vit_keys.json.gz").read_bytes()))


def _tiny(seed: int = 0, **kw: object) -> SparseViT:
    """The tiny preset (input 128) with every tensor non-trivial: layer-scale and fusion gammas of order 1
    (their 1e-6 initial value would hide the attention and fusion branches), random BatchNorm statistics."""
    torch.manual_seed(seed)
    model = SparseViT(size="tiny", input_size=kw.pop("input_size", 128), **kw)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.named_parameters():
            if "gamma" in name:
                t.copy_(0.5 + 0.5 * torch.rand(t.shape, generator=g))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.eval()


# -- the network --------------------------------------------------------------------------------------


def test_fixture_is_the_base_model_layout() -> None:
    with torch.device("meta"):
        model = SparseViT(size="base")
    own = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert own == list(FIXTURE["model"].items())  # every official key, same shape, same order
    assert len(own) == 814
    meta_state = {k: torch.empty(s, device="meta") for k, s in FIXTURE["model"].items()}
    assert infer_sparse_vit_size(meta_state) == "base"
    # the authors' schedule: rates 8, 4, 2, 1 in groups of 5 (stage 3) and 2 (x4), 1 (x3) in stage 4
    assert [b.rate for b in model.encoder_net.blocks3] == [8] * 5 + [4] * 5 + [2] * 5 + [1] * 5
    assert [b.rate for b in model.encoder_net.blocks4] == [2] * 4 + [1] * 3
    # head inputs: stage 3 after blocks 5, 10, 15 + its norm; stage 4 after block 4 + its norm
    assert model.lmu.n3 == 4 and model.lmu.n4 == 2 and model.size_divisor == 1


def test_sparse_groups_are_the_tokens_rate_apart() -> None:
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).view(2, 3, 8, 12)
    groups = to_sparse_groups(x, 4)
    assert groups.shape == (2 * 16, 2 * 3, 3)
    # group (a, b) of sample 1 = the tokens at (4 i + a, 4 j + b)
    a, b = 1, 3
    expected = x[1, :, a::4, b::4].flatten(1).T
    torch.testing.assert_close(groups[16 + 4 * a + b], expected, rtol=0, atol=0)
    torch.testing.assert_close(from_sparse_groups(groups, 4, 8, 12), x, rtol=0, atol=0)


def test_attention_stays_within_a_sparse_group() -> None:
    model = _tiny()
    block = model.encoder_net.blocks3[1]  # rate 4 on an 8 x 8 map
    assert block.rate == 4
    x = torch.randn(1, 24, 8, 8)
    x2 = x.clone()
    x2[0, :, 1, 2] = 3 * torch.randn(24)  # change the token at (1, 2): group (1, 2) = tokens (1 + 4 i, 2 + 4 j)

    def attn_branch(t: torch.Tensor) -> torch.Tensor:
        return from_sparse_groups(block.attn(block.norm1(to_sparse_groups(t, 4))), 4, 8, 8)

    with torch.no_grad():
        changed = (attn_branch(x2) - attn_branch(x)).abs().amax(1)[0] > 1e-6
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1::4, 2::4] = True
    assert torch.equal(changed, expected)


def test_forward_backward_odd_size() -> None:
    model = _tiny(drop_path_rate=0.0).train()  # stochastic depth would drop whole branches of a batch of one
    x = torch.randn(1, 3, 200, 328, requires_grad=True)
    out = model(x)
    assert out.mask_logits.shape == (1, 1, 200, 328) and out.image_logits is None
    out.mask_logits.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    params = dict(model.named_parameters())
    for name in ("encoder_net.patch_embed1.proj.weight", "encoder_net.blocks1.0.attn.weight",
                 "encoder_net.blocks3.0.attn.qkv.weight", "encoder_net.blocks3.3.mlp.dwconv.dwconv.weight",
                 "encoder_net.blocks4.1.gamma_1", "lmu.gamma1", "lmu.gamma6", "lmu.conv_layer4.weight", "lmu.conv_last.bias"):
        grad = params[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # the official modules' never-used tensors are buffers: in the checkpoint, not trained
    assert "encoder_net.blocks3.0.pos_embed.weight" not in params and "encoder_net.norm1.weight" not in params
    assert "encoder_net.blocks3.0.pos_embed.weight" in model.state_dict()


def test_forward_resizes_to_the_input_size_and_back() -> None:
    model = _tiny()
    x = torch.randn(2, 3, 90, 161)
    with torch.no_grad():
        out = model(x).mask_logits
        ref = F.interpolate(model.logits(F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)),
                            size=(90, 161), mode="bilinear", align_corners=False)
        same = model(torch.randn(1, 3, 128, 128))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert same.mask_logits.shape == (1, 1, 128, 128)
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_native_resolution_pads_to_the_rates() -> None:
    model = _tiny(input_size=None)
    assert model.size_divisor == 128  # stride 16 x rate 8
    x = torch.randn(1, 3, 200, 328)
    with torch.no_grad():
        out = model(x).mask_logits
    assert out.shape == (1, 1, 200, 328) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="multiple of 128"):
        SparseViT(size="tiny", input_size=200)
    with pytest.raises(ValueError, match="do not cover"):
        SparseViT(size="tiny", depths=[1, 1, 5, 2])


def test_uniformer_backbone_weights(tmp_path: Path) -> None:
    """The authors start from UniFormer ImageNet weights ({'model': ...}), loaded non-strictly into the backbone."""
    donor = _tiny(seed=5).encoder_net.state_dict()
    uniformer = {k: v for k, v in donor.items() if ".dwconv." not in k and not k.startswith(("norm3", "norm4"))}
    uniformer |= {"norm.weight": torch.ones(32), "head.weight": torch.zeros(1000, 32)}
    torch.save({"model": uniformer}, tmp_path / "uniformer_tiny.pth")
    model = SparseViT(size="tiny", input_size=128, backbone_weights=str(tmp_path / "uniformer_tiny.pth"))
    own = model.encoder_net.state_dict()
    assert torch.equal(own["blocks3.2.attn.qkv.weight"], donor["blocks3.2.attn.qkv.weight"])
    assert not torch.equal(own["blocks3.2.mlp.dwconv.dwconv.weight"], donor["blocks3.2.mlp.dwconv.dwconv.weight"])
    assert model.config["backbone_weights"] is None  # a saved model does not read the file again
    missing = load_uniformer_weights(SparseViT(size="tiny").encoder_net, tmp_path / "uniformer_tiny.pth")
    assert "norm3.weight" in missing and "blocks4.0.mlp.dwconv.dwconv.weight" in missing
    bad = dict(uniformer, **{"blocks3.0.attn.qkv.weight": torch.zeros(3, 3)})
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not fit"):
        SparseViT(size="tiny", backbone_weights=str(tmp_path / "bad.pth"))


# -- converter ----------------------------------------------------------------------------------------


class _TrainerState:
    """An arbitrary Python object in a checkpoint (reading it would need full unpickling)."""


def _official_file(path: Path, model: SparseViT) -> None:
    """The authors' utils/misc.py save_model layout around ``model``'s (official-named) state dict."""
    args = argparse.Namespace(batch_size=16, lr=2e-4, opt="AdamW", betas=(0.9, 0.999), output_dir="./output_dir/")
    torch.save({"model": collections.OrderedDict(model.state_dict()), "epoch": 199, "args": args,
                "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "weight_decay": 0.05, "params": [0, 1]}]},
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}}, path)


def test_convert_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src_model = _tiny(seed=3)
    _official_file(tmp_path / "checkpoint.pth", src_model)
    assert main(["convert", "sparse-vit", str(tmp_path / "checkpoint.pth"), str(tmp_path / "conv")]) == 0
    assert "SparseViT" in capsys.readouterr().out
    loaded = SparseViT.from_pretrained(tmp_path / "conv").eval()
    assert loaded.config["size"] == "tiny"
    for k, v in src_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(x), src_model.logits(x), rtol=0, atol=0)
    conv = convert_sparse_vit(tmp_path / "checkpoint.pth", tmp_path / "conv128", input_size=128)
    with torch.no_grad():
        torch.testing.assert_close(conv(x).mask_logits, src_model(x).mask_logits, rtol=0, atol=0)


def test_convert_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        convert_sparse_vit(tmp_path / "junk.pth", tmp_path / "o1")
    state = _tiny().state_dict()
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("encoder_net.blocks4.")}}, tmp_path / "cut.pth")
    with pytest.raises(ConversionError, match="matches no SparseViT configuration"):
        convert_sparse_vit(tmp_path / "cut.pth", tmp_path / "o2")
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match="not a SparseViT checkpoint"):
        convert_sparse_vit(tmp_path / "other.pth", tmp_path / "o3")
    torch.save({"model": state, "trainer": _TrainerState()}, tmp_path / "pickled.pth")  # needs full unpickling
    with pytest.raises(ConversionError, match="webiml never unpickles"):
        convert_sparse_vit(tmp_path / "pickled.pth", tmp_path / "o4")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))
