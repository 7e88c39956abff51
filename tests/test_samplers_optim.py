"""Balanced / unrepeated samplers under simulated DDP, parameter groups and lr schedules."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from webiml.data.samplers import SourceBalancedSampler, UnrepeatedDistributedSampler
from webiml.models import SmpIML
from webiml.tasks.optim import ScaledLambdaLR, lr_lambda, param_groups


def test_balanced_sampler_fixed_count_per_source() -> None:
    sources = ["a"] * 100 + ["b"] * 5
    s = SourceBalancedSampler(sources, samples_per_source=20, seed=1)
    idx = list(s)
    counts = Counter(sources[i] for i in idx)
    assert counts == {"a": 20, "b": 20}
    assert len(s) == 40
    b_idx = [i for i in idx if sources[i] == "b"]
    assert Counter(b_idx) == {i: 4 for i in range(100, 105)}  # whole passes before repeats


def test_balanced_sampler_repeat_factors_and_epochs() -> None:
    sources = ["a"] * 10 + ["b"] * 10
    s = SourceBalancedSampler(sources, repeat={"b": 3}, seed=0)
    counts = Counter(sources[i] for i in s)
    assert counts == {"a": 10, "b": 30}
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    with pytest.raises(ValueError, match="absent"):
        SourceBalancedSampler(sources, repeat={"zzz": 2})


def test_balanced_sampler_ranks_partition() -> None:
    sources = ["a"] * 7 + ["b"] * 4
    full = list(SourceBalancedSampler(sources, seed=3))
    parts = [list(SourceBalancedSampler(sources, num_replicas=2, rank=r, seed=3)) for r in range(2)]
    assert len(parts[0]) == len(parts[1])
    merged = [x for pair in zip(*parts, strict=False) for x in pair]
    assert sorted(merged[: len(full)]) == sorted(full)


def test_unrepeated_sampler_covers_each_index_once() -> None:
    parts = [list(UnrepeatedDistributedSampler(11, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(11))
    assert [len(UnrepeatedDistributedSampler(11, 3, r)) for r in range(3)] == [4, 4, 3]


def test_param_groups_layer_decay() -> None:
    model = SmpIML()
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.9)
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len([p for p in model.parameters() if p.requires_grad])
    scales = {g["lr_scale"] for g in groups}
    assert max(scales) == 1.0 and min(scales) < 0.5  # stem is decayed the most
    assert any(g["weight_decay"] == 0.0 for g in groups)
    flat = param_groups(model, weight_decay=0.05, layer_decay=None)
    assert {g["lr_scale"] for g in flat} == {1.0}


@pytest.mark.parametrize("schedule", ["cosine", "poly", "constant"])
def test_lr_schedules(schedule: str) -> None:
    f = lr_lambda(schedule, total_steps=100, warmup_steps=10, min_lr_ratio=0.0)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    if schedule == "constant":
        assert f(99) == 1.0
    else:
        assert f(100) == pytest.approx(0.0, abs=1e-9)
        assert f(50) < 1.0


def test_scaled_lambda_lr_applies_group_scale() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1], "lr_scale": 1.0}, {"params": [p2], "lr_scale": 0.5}], lr=1.0)
    ScaledLambdaLR(opt, lambda step: 1.0)
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.5]


def test_layer_decay_finds_backbones_and_timm_feature_stages() -> None:
    from webiml.models import APSCNet, WebIML
    from webiml.tasks.optim import encoder_layer_id

    assert encoder_layer_id("stages_2.blocks.0.conv_dw.weight", 100) == 3  # timm features_only naming
    assert encoder_layer_id("stages.1.downsample.1.weight", 100) == 2
    for model in (APSCNet(size="tiny", image_head=False), WebIML(size="tiny")):
        scales = {g["lr_scale"] for g in param_groups(model, 0.05, layer_decay=0.9)}
        assert min(scales) < 0.9 < max(scales) == 1.0, type(model).__name__


def test_models_that_name_their_encoders_get_layer_decay_and_freezing() -> None:
    """Mesorch (two encoders, timm and MiT stage names) and SparseViT (``encoder_net``, UniFormer names) declare
    ``encoder_names``: stage k of 4 gets 0.9 ** (5 - k), heads keep 1, and freeze_encoder fixes exactly them."""
    import webiml
    from webiml.tasks.iml import IMLTask

    for name, kwargs in (("mesorch_tiny", {"input_size": None}), ("SparseViT", {"size": "tiny", "input_size": 128})):
        model = webiml.create_model(name, **kwargs)
        scale_of = {}
        for group in param_groups(model, 0.05, layer_decay=0.9):
            ids = {id(p) for p in group["params"]}
            scale_of.update({n: group["lr_scale"] for n, p in model.named_parameters() if id(p) in ids})
        encoders = model.encoder_names
        assert {n.split(".")[0] for n, s in scale_of.items() if s < 1} == set(encoders), name
        assert all(s == 1.0 for n, s in scale_of.items() if n.split(".")[0] not in encoders), name
        stage1 = ".blocks1." if name == "SparseViT" else ".block1."
        expected = {encoders[-1] + ".patch_embed1.": 0.9 ** 4, encoders[-1] + stage1: 0.9 ** 4, encoders[-1] + ".norm4.": 0.9}
        if name == "mesorch_tiny":
            expected.update({"convnext.stem.": 0.9 ** 5, "convnext.stages.0.": 0.9 ** 4, "convnext.stages.3.": 0.9})
        for prefix, scale in expected.items():
            found = [s for n, s in scale_of.items() if n.startswith(prefix)]
            assert found and found == pytest.approx([scale] * len(found)), (name, prefix)
        task = IMLTask(net=model, freeze_encoder=True)
        frozen = {n.split(".")[0] for n, p in task.net.named_parameters() if not p.requires_grad}
        assert frozen == set(encoders), name
    with pytest.raises(ValueError, match="has no 'encoder' submodule"):
        IMLTask(net=webiml.create_model("CATNet"), freeze_encoder=True)


def test_timm_layer_decay_and_schedulers_differ_from_ours_which_is_why_we_keep_ours() -> None:
    """Why tasks/optim.py is not timm.optim + timm.scheduler (measured, timm 1.0):

    - ``timm.optim.param_groups_layer_decay`` needs ``model.group_matcher()``; our models (and their timm
      ``features_only`` encoders) have none, so timm puts every parameter in one layer: no decay at all.
    - timm's warmup starts at ``warmup_lr_init`` (0) on step 0, ours at ``lr / warmup`` (no wasted step);
      after warmup (``warmup_prefix=True``) timm's cosine is ours, one step later.
    """
    import warnings

    from timm.optim import param_groups_layer_decay
    from timm.scheduler import CosineLRScheduler

    model = SmpIML()
    ours = {g["lr_scale"] for g in param_groups(model, 0.05, layer_decay=0.9)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = {g["lr_scale"] for g in param_groups_layer_decay(model, 0.05, layer_decay=0.9)}
    assert min(ours) < 0.5 and theirs == {1.0}

    total, warmup = 100, 10
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    timm_sched = CosineLRScheduler(opt, t_initial=total - warmup, warmup_t=warmup, warmup_lr_init=0.0, warmup_prefix=True,
                                   t_in_epochs=False)
    timm_lr = []
    for t in range(total + 1):
        timm_sched.step_update(t)
        timm_lr.append(opt.param_groups[0]["lr"])
    f = lr_lambda("cosine", total, warmup)
    assert timm_lr[0] == 0.0 and f(0) == pytest.approx(0.1)  # timm's first step learns nothing
    assert [f(t) for t in range(warmup)] == pytest.approx(timm_lr[1:warmup + 1])  # ours is timm's, one step earlier
    assert [f(t) for t in range(warmup, total + 1)] == pytest.approx(timm_lr[warmup:])  # identical after warmup
