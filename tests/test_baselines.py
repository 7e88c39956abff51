"""The field's baselines through the one front door: every one builds with ``webiml.create_model(NAME, ...)``
(reduced widths so the test stays fast), runs forward + backward at the odd size 200 x 328, returns a map of that
size, and passes gradients to its input; the catalogue lists each with its converter and licence."""

from __future__ import annotations

import pytest
import torch

import webiml
from webiml.catalogue import load_catalogue

BASELINES: dict[str, tuple[str, dict]] = {
    # name -> (catalogue entry, reduced-width constructor arguments)
    "trufor_tiny": ("trufor", {}),
    "MVSSNet": ("mvss-net-casia2", {"input_size": None, "channels": (8, 16, 32, 64), "layers": (1, 2, 2, 3)}),
    "PSCCNet": ("pscc-net", {"crop_size": 32, "channels": (4, 8, 8, 16), "stem_width": 8}),
    "CATNet": ("cat-net-v2", {"size": "tiny"}),
    "iml_vit_tiny": ("iml-vit-casiav2", {"input_size": 256}),
    "mesorch_tiny": ("mesorch", {"input_size": None}),
    "SparseViT": ("sparse-vit", {"size": "tiny", "input_size": 128}),
}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_builds_by_name_and_trains_at_an_odd_size(name: str) -> None:
    torch.manual_seed(0)
    model = webiml.create_model(name, **BASELINES[name][1])
    model.train()
    x = torch.rand(1, 3, 200, 328, requires_grad=True)
    out = model(x)
    assert out.mask_logits.shape == (1, 1, 200, 328) and torch.isfinite(out.mask_logits).all()
    loss = out.mask_logits.float().mean() + (out.image_logits.float().mean() if out.image_logits is not None else 0)
    for extra in ("edge_logits", "confidence_logits"):  # MVSS-Net's edge map, TruFor's confidence map
        if getattr(out, extra, None) is not None:
            loss = loss + getattr(out, extra).float().mean()
    loss.backward()
    if name != "CATNet":  # CAT-Net re-encodes pixels without DCT input as a JPEG (the authors' path): no input gradient
        assert x.grad is not None and x.grad.abs().sum() > 0
    # every top-level part with trainable weights gets a gradient (somewhere: timm ResNets zero-initialise each
    # block's last BatchNorm, so at initialisation only those receive one inside the residual branches)
    for part, module in model.named_children():
        trainable = [p for p in module.parameters() if p.requires_grad]
        if trainable:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable), f"{name}.{part} gets no gradient"


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_is_in_the_catalogue_with_its_converter_and_licence(name: str) -> None:
    entry = load_catalogue()[BASELINES[name][0]]
    assert entry.status == "needs-conversion" and entry.weights.get("upstream")
    assert entry.weights.get("converter", "").startswith("webiml convert ")
    assert entry.license and entry.license_short not in ("apache-2.0", "unspecified")
