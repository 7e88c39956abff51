"""CAAA v1 (the MIML authors' CIML parts): reduced-width forward passes, the authors' decision rule and TTA,
converter round trips from official-format files, the official key layouts (``fixtures/caaa_v1_*_keys.json``,
key names and shapes of the authors' modules at full size) and ``webiml annotate --annotator caaa-v1``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from webiml.annotate.caaa_v1 import CAAAv1Annotator, PairNotAnnotated, _resize_u8
from webiml.cli import main
from webiml.convert import ConversionError
from webiml.convert.caaa_v1 import (
    caaa_v1_classifier_official_to_webiml,
    caaa_v1_dass_official_to_webiml,
    caaa_v1_sacm_official_to_webiml,
    convert_caaa_v1_classifier,
    convert_caaa_v1_dass,
    infer_classifier_config,
    infer_dass_config,
    infer_sacm_config,
    webiml_to_caaa_v1_official,
)
from webiml.models.caaa_v1 import (
    DASS,
    NOT_ALIGNED_SPG,
    SACM,
    CAAAv1Classifier,
    CAAAv1ClassifierOutput,
    caaa_v1_decisions,
    shifted_correlation,
)

FIXTURES = Path(__file__).parent / "fixtures"
CLS_TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), input_size=64)
DASS_TINY = dict(embed_dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), mlp_ratios=(2, 2, 2, 2), channels=16, aux_channels=8, low_proj=8)
SACM_TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), channels=16, input_size=64, corr_features=6, low_proj=8, decoder_widths=(8, 4))


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and norm weights (seeded), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.is_floating_point() and t.ndim == 1 and name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def parts() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"classifier": _perturbed(CAAAv1Classifier(**CLS_TINY)), "dass": _perturbed(DASS(**DASS_TINY), 1),
            "sacm": _perturbed(SACM(**SACM_TINY), 2)}


# --------------------------------------------------------------------------------------------------
# forward passes


def test_forward_backward_at_odd_sizes(parts) -> None:
    torch.manual_seed(1)
    cls = CAAAv1Classifier(**CLS_TINY).train()
    out = cls(torch.randn(2, 3, 37, 53), torch.randn(2, 3, 61, 29))
    assert out.logits.shape == (2, 8) and len(out.decisions()) == 2 and out.box().shape == (2, 4)
    out.logits.sum().backward()

    dass = DASS(**DASS_TINY).train()
    x = dass.pair_input(torch.rand(2, 3, 45, 67), torch.rand(2, 3, 45, 67))
    res = dass(x)
    assert res.mask_logits.shape == (2, 1, 45, 67) and [a.shape for a in res.aux_mask_logits] == [(2, 1, 45, 67)] * 2
    (res.mask_logits.mean() + sum(a.mean() for a in res.aux_mask_logits)).backward()
    assert dass.backbone.patch_embed1.proj.weight.grad is not None
    dass.eval()
    assert dass(x).aux_mask_logits == []

    sacm = SACM(**SACM_TINY).train()
    res = sacm(torch.randn(2, 3, 50, 70), torch.randn(2, 3, 61, 45))  # batch 2: BatchNorm after global pooling
    assert res.mask_logits.shape == (2, 1, 61, 45) and res.source_mask_logits.shape == (2, 1, 50, 70)
    assert res.aux_mask_logits[0].shape == (2, 1, 61, 45) and res.source_aux_mask_logits[0].shape == (2, 1, 50, 70)
    res.mask_logits.mean().backward()
    with pytest.raises(ValueError, match="runs at 64x64 only"):
        sacm.two_class_logits(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32))


def test_dass_padding_matches_the_unpadded_run_on_its_divisible_part(parts) -> None:
    """An input that is already a multiple of 32 runs unpadded; other sizes come back at their own size."""
    dass = parts["dass"]
    x = torch.randn(1, 9, 64, 96)
    with torch.no_grad():
        full = dass.two_class_logits(x)
        odd = dass.two_class_logits(x[..., :50, :81])
    assert full.shape == (1, 2, 64, 96) and odd.shape == (1, 2, 50, 81)
    assert torch.equal(dass(x).mask_logits, full[:, 1:2] - full[:, 0:1])


def test_difference_channels_abs_and_wrap(parts) -> None:
    dass = parts["dass"]
    o = torch.tensor([10, 200, 7], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    f = torch.tensor([30, 100, 7], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    mean, std = dass.input_mean.view(3), dass.input_std.view(3)
    for mode, want in (("abs", [20, 100, 0]), ("wrap", [236, 100, 0])):  # 10 - 30 = -20 wraps to 236 in uint8
        d = dass.pair_input(o, f, diff=mode)[0, 6:, 0, 0]
        torch.testing.assert_close(d * std + mean, torch.tensor(want, dtype=torch.float32) / 255)
    with pytest.raises(ValueError, match="diff"):
        dass.pair_input(o, f, diff="signed")


def test_shifted_correlation_is_the_cyclic_shift_correlation() -> None:
    """Channel ``rx * w + cx`` at ``p``: ``<x1[p], x2[p + (rx, cx)]> / C`` (the authors' index table)."""
    torch.manual_seed(2)
    x1, x2 = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    got = shifted_correlation(x1, x2)
    want = torch.stack([(x1 * torch.roll(x2, shifts=(-rx, -cx), dims=(2, 3))).sum(1) / 5 for rx in range(3) for cx in range(4)], 1)
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------------------------------
# decision rule and TTA


def test_decision_rule_on_hand_made_logits() -> None:
    big = 4.0
    rows = {
        "SPG": [-big, big, -big, big],            # same source, aligned
        "SDG": [big, -big, big, -big],            # different sources, not aligned
        NOT_ALIGNED_SPG: [-big, big, big, -big],  # same source, cropped
        None: [big, -big, -big, big],             # different sources judged aligned: no list
        "tie": [0.0, 0.0, -big, big],             # P(same) exactly 0.5: no list
    }
    logits = torch.tensor([r + [0.3, -0.2, 0.5, 0.1] for r in rows.values()])
    got = caaa_v1_decisions(logits)
    assert got == ["SPG", "SDG", NOT_ALIGNED_SPG, None, None]
    out = CAAAv1ClassifierOutput(logits)
    assert out.same_source_probs()[0] > 0.99 and out.aligned_probs()[2] < 0.01
    # box: (start_row, start_col, end_row, end_col) / 512 on a 1024 canvas, ends minus 1
    box = CAAAv1ClassifierOutput(torch.tensor([[0, 0, 0, 0, 0.25, 0.5, 0.5, 0.75]])).box()[0]
    torch.testing.assert_close(box, torch.tensor([0.25, 0.125, 0.875, 0.75]))


def test_tta_dass_mean_sacm_sum(parts) -> None:
    """DASS averages the logits of its three flips (whole input); SACM sums those of the forgery's three flips."""
    dass, sacm = parts["dass"], parts["sacm"]
    torch.manual_seed(3)
    x = torch.randn(1, 9, 64, 64)
    with torch.no_grad():
        runs = [dass.two_class_logits(x), dass.two_class_logits(x.flip(2)).flip(2), dass.two_class_logits(x.flip(3)).flip(3)]
        tta = dass.tta_two_class_logits(x)
        torch.testing.assert_close(tta, sum(runs) / 3, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(tta, sum(runs), atol=1e-3)
        torch.testing.assert_close(dass.forward_tta(x).mask_logits, tta[:, 1:2] - tta[:, 0:1])
        o, f = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
        runs = [sacm.two_class_logits(o, f)[1], sacm.two_class_logits(o, f.flip(2))[1].flip(2),
                sacm.two_class_logits(o, f.flip(3))[1].flip(3)]
        tta = sacm.tta_two_class_logits(o, f)
        torch.testing.assert_close(tta, sum(runs), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(tta, sum(runs) / 3, atol=1e-3)
        torch.testing.assert_close(sacm.forward_tta(o, f).mask_logits, tta[:, 1:2] - tta[:, 0:1])
        # the original is not flipped: the authors' TTA of the source map does not exist
        assert sacm.forward_tta(o, f).source_mask_logits is None


# --------------------------------------------------------------------------------------------------
# converters


def _official_keys(name: str) -> dict[str, list[int]]:
    """The authors' key names and shapes at full size (``fixtures/caaa_v1_<name>_keys.json``: repeated blocks are
    stored once with ``{j}`` for the block index, their counts under ``repeats``)."""
    fixture = json.loads((FIXTURES / f"caaa_v1_{name}_keys.json").read_text())
    keys: dict[str, list[int]] = {}
    for key, shape in fixture["state_dict"].items():
        template = next((t for t in fixture["repeats"] if key.startswith(t + ".")), None)
        for j in range(fixture["repeats"][template] if template else 1):
            keys[key.replace("{j}", str(j))] = shape
    assert len(keys) == fixture["num_keys"]
    return keys


@pytest.mark.parametrize(("name", "cls", "rename", "dropped"), [
    ("classifier", CAAAv1Classifier, caaa_v1_classifier_official_to_webiml, 0),
    ("dass", DASS, caaa_v1_dass_official_to_webiml, 0),
    ("sacm", SACM, caaa_v1_sacm_official_to_webiml, 10),
])
def test_official_layout_maps_onto_the_full_size_model(name, cls, rename, dropped) -> None:
    """Every key of the authors' module (names and shapes at full size) has its place and shape in webiml's
    model at its default (the authors') configuration, and the converter reads that configuration back."""
    official = _official_keys(name)
    with torch.device("meta"):
        own = cls().state_dict()
        mapped = rename({k: torch.empty(shape) for k, shape in official.items()})
    assert len(mapped) == len(official) - dropped
    assert set(mapped) == set(own)
    bad = [k for k in own if mapped[k].shape != own[k].shape]
    assert not bad, bad[:3]
    infer = {"classifier": infer_classifier_config, "dass": infer_dass_config, "sacm": infer_sacm_config}[name]
    assert infer(mapped) == {}


def _official_file(model: torch.nn.Module, path: Path, kind: str) -> Path:
    state = {"module." + k: v.clone() for k, v in webiml_to_caaa_v1_official(model).items()}
    if kind == "sacm":  # the heads the authors' SAFM carries but never calls
        state["module.models.decode_head.conv_seg.weight"] = torch.randn(2, 16, 1, 1)
        state["module.models.decode_head.conv_seg.bias"] = torch.randn(2)
        state["module.models.auxiliary_head.convs.0.conv.weight"] = torch.randn(8, 24, 3, 3)
        torch.save(state, path)
    else:
        torch.save({"state_dict": state, "meta": {"iter": 1, "score": np.float64(0.5)}}, path)
    return path


@pytest.mark.parametrize("kind", ["classifier", "dass", "sacm"])
def test_convert_verb_round_trip(kind: str, parts, tmp_path: Path, capsys) -> None:
    source = parts[kind]
    src = _official_file(source, tmp_path / f"{kind}.pth", kind)
    out = tmp_path / kind
    assert main(["convert", f"caaa-v1-{kind}", str(src), str(out)]) == 0
    assert type(source).__name__ in capsys.readouterr().out
    loaded = type(source).from_pretrained(out).eval()
    torch.manual_seed(4)
    with torch.no_grad():
        if kind == "classifier":
            x = torch.randn(1, 6, 40, 72)  # the network; its input size is not in the weights (the authors' 512)
            torch.testing.assert_close(loaded.backbone(x), source.backbone(x), atol=0, rtol=0)
            cfg = json.loads((out / "config.json").read_text())
            assert cfg["dims"] == [8, 16, 24, 32] and cfg["depths"] == [1, 1, 1, 1] and cfg["input_size"] == 512
        elif kind == "dass":
            x = torch.randn(1, 9, 40, 72)
            torch.testing.assert_close(loaded.two_class_logits(x), source.two_class_logits(x), atol=0, rtol=0)
        else:
            a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
            for got, want in zip(loaded.two_class_logits(a, b), source.two_class_logits(a, b), strict=True):
                torch.testing.assert_close(got, want, atol=0, rtol=0)
            cfg = json.loads((out / "config.json").read_text())
            assert cfg["input_size"] == 64 and cfg["corr_features"] == 6 and cfg["decoder_widths"] == [8, 4]


def test_bad_files_are_conversion_errors(parts, tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        convert_caaa_v1_dass(text, tmp_path / "a")
    dass_file = _official_file(parts["dass"], tmp_path / "DASS.pth", "dass")
    with pytest.raises(ConversionError, match="not part of the authors' ConvNeXt-XL pair classifier") as err:
        convert_caaa_v1_classifier(dass_file, tmp_path / "b")
    assert "\n" not in str(err.value)
    state = torch.load(dass_file, weights_only=False)
    del state["state_dict"]["module.decode_head.bottleneck.conv.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(ConversionError, match="decode_head.bottleneck.conv.weight"):
        convert_caaa_v1_dass(tmp_path / "cut.pth", tmp_path / "c")
    assert main(["convert", "caaa-v1-sacm", str(text), str(tmp_path / "d")]) == 1


# --------------------------------------------------------------------------------------------------
# the annotator


def _forced_classifier(decision: str) -> CAAAv1Classifier:
    """A tiny classifier whose logits are its bias: the decision is fixed."""
    m = CAAAv1Classifier(**CLS_TINY).eval()
    bias = {"SPG": [-3, 3, -3, 3], "SDG": [3, -3, 3, -3], NOT_ALIGNED_SPG: [-3, 3, 3, -3]}[decision]
    with torch.no_grad():
        m.backbone.head.fc.weight.zero_()
        m.backbone.head.fc.bias.copy_(torch.tensor(bias + [0.0] * 4))
    return m


def _image(seed: int, h: int, w: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_annotator_paths_follow_the_authors_scripts(parts) -> None:
    o, f = _image(0, 40, 56), _image(1, 36, 50)
    ann = CAAAv1Annotator(_forced_classifier("SPG"), parts["dass"], parts["sacm"], dass_size=64)
    res = ann.annotate(o, f)
    assert res.category == "SPG" and res.aligned and res.soft_mask.shape == (36, 50) and res.class_prob > 0.99
    x = parts["dass"].pair_input(_resize_u8(o, 64), _resize_u8(f, 64), diff="wrap")
    want = F.interpolate(F.softmax(parts["dass"].tta_two_class_logits(x), 1)[:, 1:2], size=(36, 50), mode="bilinear")[0, 0]
    torch.testing.assert_close(res.soft_mask, want.clamp(0, 1))

    res = ann.annotate(o, f, category="SDG")
    s = lambda t: parts["sacm"].normalize(F.interpolate(t[None].float() / 255, size=(64, 64), mode="bilinear"))  # noqa: E731
    want = F.interpolate(F.softmax(parts["sacm"].tta_two_class_logits(s(o), s(f)), 1)[:, 1:2], size=(36, 50), mode="bilinear")[0, 0]
    assert res.category == "SDG" and not res.aligned and res.category_source == "given"
    torch.testing.assert_close(res.soft_mask, want.clamp(0, 1))

    ann.classifier = _forced_classifier(NOT_ALIGNED_SPG)
    with pytest.raises(PairNotAnnotated, match="NotAlignedSPG"):
        ann.annotate(o, f)
    ann.not_aligned = "register"
    res = ann.annotate(o, f)
    assert res.category == "SPG" and not res.aligned and res.align_method is not None


def test_annotate_verb_with_caaa_v1(parts, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    for i in range(2):
        (pairs / f"p{i}").mkdir(parents=True)
        Image.fromarray(_image(10 + i, 40, 52).permute(1, 2, 0).numpy()).save(pairs / f"p{i}" / "0.png")
        Image.fromarray(_image(20 + i, 44, 38).permute(1, 2, 0).numpy()).save(pairs / f"p{i}" / "1.png")
    folder = CAAAv1Annotator(_forced_classifier("SPG"), parts["dass"], parts["sacm"]).save_pretrained(tmp_path / "caaa-v1")
    assert {p.name for p in folder.iterdir()} == {"classifier", "dass", "sacm"}
    out = tmp_path / "out"
    args = ["annotate", str(pairs), "-o", str(out), "--annotator", "caaa-v1", "--checkpoint", str(folder), "--no-progress",
            "--workers", "0", "--accelerator", "cpu", "--option", "dass_size=64"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"] and {r["category"] for r in records} == {"SPG"}
    assert Image.open(out / "masks" / "p0.png").size == (38, 44)
    settings = json.loads((out / "run.json").read_text())
    assert settings["annotator"] == "caaa-v1" and settings["annotator_config"]["dass_diff"] == "wrap"
    assert main(["annotate", str(pairs), "-o", str(tmp_path / "x"), "--annotator", "caaa-v1", "--no-progress"]) == 2
