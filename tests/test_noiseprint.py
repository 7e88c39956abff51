"""Noiseprint++ (``webiml convert noiseprint++``) and the blind localization, offline.

The constructed checkpoint has the official layout of grip-unina/TruFor's ``noiseprint++.th``
(``{"network": state dict, "global_step": int}``) with the key names and shapes recorded in
``fixtures/noiseprint_pp_keys.json`` and random values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from webiml.cli import main
from webiml.convert import ConversionError, convert_noiseprint_pp, noiseprint_pp_official_to_webiml
from webiml.models.noiseprint import NoiseprintPP
from webiml.models.noiseprint_blind import blind_localization

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "noiseprint_pp_keys.json").read_text())


def _official_file(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in FIXTURE["network"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    torch.save({"network": state, "global_step": 123}, path)
    return state


def test_fixture_is_the_official_layout() -> None:
    assert FIXTURE["top_level"] == ["global_step", "network"]
    keys = list(FIXTURE["network"])
    assert keys[:3] == ["0.weight", "0.bias", "2.weight"] and keys[-1] == "47.bias"
    assert set(noiseprint_pp_official_to_webiml({k: torch.zeros(1) for k in keys})) == set(NoiseprintPP().state_dict())


def test_convert_verb_matches_official_layer_stack(tmp_path: Path, capsys) -> None:
    src = tmp_path / "noiseprint++.th"
    state = _official_file(src)
    out = tmp_path / "np"
    assert main(["convert", "noiseprint++", str(src), str(out)]) == 0
    assert "NoiseprintPP" in capsys.readouterr().out
    model = NoiseprintPP.from_pretrained(out).eval()
    # The official network: the Sequential of TruFor's make_net, built here from the key list.
    ref = torch.nn.Sequential()
    layers = sorted({int(k.split(".")[0]) for k in state})
    for i in range(max(layers) + 1):
        w = state.get(f"{i}.weight")
        if w is not None and w.ndim == 4:
            conv = torch.nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1, bias=f"{i}.bias" in state)
            ref.add_module(str(i), conv)
        elif w is not None:
            ref.add_module(str(i), torch.nn.BatchNorm2d(w.shape[0]))
        else:
            ref.add_module(str(i), torch.nn.ReLU())
    ref.load_state_dict(state)
    ref.eval()
    u8 = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8)
    x = model.normalize(u8)
    assert torch.equal(x, u8.float()[None] / 256.0)  # TruFor's loaders: uint8 / 256, bit-exact
    with torch.no_grad():
        torch.testing.assert_close(model.noiseprint(x), ref(u8.float()[None] / 256.0), rtol=0, atol=0)


def test_full_trufor_checkpoint_keeps_dncnn_only(tmp_path: Path) -> None:
    state = {f"dncnn.{k}": torch.zeros(v) for k, v in FIXTURE["network"].items()}
    state["backbone.patch_embed1.proj.weight"] = torch.zeros(2)
    assert set(noiseprint_pp_official_to_webiml(state)) == set(NoiseprintPP().state_dict())
    with pytest.raises(ConversionError, match="not Noiseprint"):
        noiseprint_pp_official_to_webiml({"0.weight": torch.zeros(1), "head.fc.weight": torch.zeros(1)})
    bad = tmp_path / "bad.th"
    torch.save({"network": {k: torch.zeros(1) for k in FIXTURE["network"]}}, bad)
    with pytest.raises(ConversionError, match="shape"):
        convert_noiseprint_pp(bad, tmp_path / "out")


def test_forward_contract_and_blind_map() -> None:
    """Any size; a constant -20 map when the image is too small for the blind EM; a map that flags a
    region whose residual statistics differ on a large enough image."""
    torch.manual_seed(0)
    model = NoiseprintPP().eval()
    out = model.predict(np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8))
    assert out.mask_logits.shape == (1, 1, 45, 61) and out.image_logits is None
    assert torch.all(out.mask_logits == -20.0)

    rng = np.random.default_rng(1)
    h, w = 512, 512
    res = rng.normal(0.0, 0.6, (h, w)).astype(np.float32)
    res[160:352, 160:352] = rng.normal(0.0, 0.25, (192, 192))  # a region with other statistics
    gray = np.full((h, w), 0.5, np.float32)
    result = blind_localization(res, gray)
    assert result is not None
    pix = result.pixel_map("mahal")
    assert pix.shape == (h, w)
    assert np.median(pix[200:300, 200:300]) > 2 * np.median(pix[:100, :100])
    assert np.isfinite(result.pixel_map("logit")).all()


# -- adaptive CFA (qbammey/adaptive_cfa_forensics) ----------------------------------------------------

CFA_FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "adaptive_cfa_keys.json").read_text())


def _official_cfa(path: Path) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(s, generator=g) * 0.3 for k, s in CFA_FIXTURE["state_dict"].items() if not k.startswith("auxiliary.")}
    for k, s in CFA_FIXTURE["state_dict"].items():  # FullNet.auxiliary = Sequential(spatial, pixelwise, conv, logsoftmax)
        if k.startswith("auxiliary.0."):
            state[k] = state["spatial." + k[len("auxiliary.0."):]]
        elif k.startswith("auxiliary.1."):
            state[k] = state["pixelwise." + k[len("auxiliary.1."):]]
        elif k.startswith("auxiliary."):
            state[k] = torch.randn(s, generator=g)
    torch.save(state, path)
    return state


def test_adaptive_cfa_convert_and_map(tmp_path: Path) -> None:
    from webiml.convert import adaptive_cfa_official_to_webiml
    from webiml.models.adaptive_cfa import AdaptiveCFA, grid_permutations

    src = tmp_path / "pretrained.pt"
    state = _official_cfa(src)
    out = tmp_path / "cfa"
    assert main(["convert", "adaptive-cfa", str(src), str(out)]) == 0
    model = AdaptiveCFA.from_pretrained(out).eval()
    assert torch.equal(model.auxiliary_head.weight, state["auxiliary.2.weight"])
    # the grid split: channel c * 4 + position, the 4 shifted orders
    x = torch.arange(2 * 4 * 4, dtype=torch.float).view(1, 2, 4, 4)
    g = grid_permutations(x)
    assert g.shape == (4, 8, 2, 2)
    assert torch.equal(g[0, :4, 0, 0], torch.tensor([0.0, 1.0, 4.0, 5.0])) and torch.equal(g[3, :4, 0, 0], torch.tensor([5.0, 4.0, 1.0, 0.0]))
    img = torch.randint(0, 256, (3, 75, 99), dtype=torch.uint8)
    with torch.no_grad():
        o = model.predict(img)
        scores = model.block_scores(model.normalize(img)[:, :, :74, :98])
    assert o.mask_logits.shape == (1, 1, 75, 99) and o.image_logits is None
    probs = o.mask_logits.sigmoid()[0, 0]
    assert scores.shape == (2, 2)
    torch.testing.assert_close(probs[4:68, 4:68], scores.repeat_interleave(32, 0).repeat_interleave(32, 1).clamp(1e-6, 1 - 1e-6))
    assert float(probs[:4].max()) <= 1e-6 and float(probs[68:].max()) <= 1e-6
    # a shared copy that differs from its module is refused
    bad = dict(state)
    bad["auxiliary.0.conv1.h1.bias"] = bad["auxiliary.0.conv1.h1.bias"] + 1
    with pytest.raises(ConversionError, match="differ"):
        adaptive_cfa_official_to_webiml(bad)
