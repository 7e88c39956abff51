"""Mesorch (Zhu et al., AAAI 2025): parallel ConvNeXt + SegFormer encoders on DCT-filtered inputs, eight
per-scale predictions mixed by a pixel-wise gate.

Paper: Xuekang Zhu, Xiaochen Ma, Lei Su, Zhuohang Jiang, Bo Du, Xiwen Wang, Zeyu Lei, Wentao Feng, Chi-Man
Pun, Jizhe Zhou, "Mesoscopic Insights: Orchestrating Multi-scale & Hybrid Architecture for Image Manipulation
Localization", AAAI 2025 (arXiv:2412.13753). Official code (MIT licence): ``scu-zjz/Mesorch``
(``mesorch.py``: ``MesorchFull``; ``extractor/``), also in IMDL-BenCo's model zoo as ``Mesorch``. This is
webiml's own implementation; module names are the official ones (``convnext``, ``segformer``, ``upsample``,
``inverse``, ``gate``), so :mod:`webiml.convert.mesorch` only drops the ConvNeXt classifier head that the
official model carries unused.

Forward pass (the authors' configuration)::

    x: the normalised RGB image (ImageNet mean / std), resized to 512 x 512
    high = minmax(IDCT(DCT(x) with the lowest 5% x 5% frequencies zeroed))     (per image, over C, H, W)
    low  = minmax(IDCT(DCT(x) with the highest 95% x 95% frequencies zeroed))
      (orthonormal DCT-II matrices per axis, computed in float32 as the authors do)
    ConvNeXt-Tiny on [x, high] (6 channels, bias-free stem)  -> c1..c4 (strides 4..32, no output norms)
    MiT-B3 (SegFormer) on [x, low] (6 channels, bias-free first patch embedding) -> s1..s4 (after each stage norm)
    c2..c4 / s2..s4 brought to stride 4 by chains of 4x4 stride-2 transposed convs (halving channels each step)
    eight 1x1 convs -> eight one-channel maps; gate (ScoreNetwork) on [x, high, low]: 7x7/2 conv, a
      LayerNorm + 3x3 + 1x1 (x4) + 1x1 + GELU residual, 7x7/2 conv to 8 channels, softmax over the 8
    logits = sum over the eight maps of gate * map  -> bilinear upsampling (align_corners=True) to 512 x 512.

Libraries: the ConvNeXt is timm's (:class:`timm.models.convnext.ConvNeXt`, the class the authors subclass).
The Mix Transformer is webiml's own (:class:`MixTransformer`, SegFormer's parameter names; its blocks are
:mod:`webiml.models.mit`'s, shared with TruFor's CMX encoder, with the explicit float32 attention softmax):
segmentation_models_pytorch's ``MixVisionTransformer`` computes the same but cannot be built on the meta
device (it calls ``Tensor.item()`` in its constructor), which :func:`webiml.from_pretrained` needs. Both
encoders were measured against the official code (see ``checkpoints.yaml``).

Input sizes: with ``input_size=512`` (default) every image is resized to 512 x 512 (bilinear,
``align_corners=False``, no antialiasing, on the normalised image; the authors resize the uint8 image with
albumentations ``Resize`` before normalising, which is the same bilinear interpolation up to rounding to
uint8) and the logits are resized back to the image's size (bilinear), as the authors' test protocol
(``--if_resizing --image_size 512``) scores resized predictions. With ``input_size=None`` the image runs at
its own resolution (reflect-padded to a multiple of 32, logits upsampled x4 with ``align_corners=True``,
cropped); the DCT and the min-max scaling then see the whole padded image. With
``input_size`` set the model is not ``tile_safe``: :class:`webiml.inference.Localizer` (``webiml localize``)
resizes the whole image, as the authors do.

Training loss (the authors'): plain BCE on the 512 x 512 logits: ``IMLTask(bce_weight=1, dice_weight=0)``.

Deviations from the official code: the min-max scaling of the DCT maps divides by ``max(max - min, 1e-12)``
(the authors divide by ``max - min``, NaN on a constant map; identical otherwise); the official low-pass
extractor zeroes every coefficient of a 1-pixel-high or -wide input (``mask[-0:] = 0``), webiml none.
No image-level head (the authors' is commented out); the image score is the map's maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXt
from torch import Tensor, nn

from webiml.models.base import IMAGENET_MEAN, IMAGENET_STD, IMLModel, IMLOutput, WholeImageResize
from webiml.models.mit import MiTBlock, OverlapPatchEmbed, mit_stage
from webiml.models.registry import register_model

MESORCH_PRESETS: dict[str, dict[str, Any]] = {
    # The authors' model: ConvNeXt-Tiny + MiT-B3, 192-channel gate, 512 x 512 input.
    "base": dict(conv_depths=(3, 3, 9, 3), conv_dims=(96, 192, 384, 768), mit_depths=(3, 4, 18, 3),
                 mit_dims=(64, 128, 320, 512), mit_heads=(1, 2, 5, 8), mit_sr_ratios=(8, 4, 2, 1), gate_width=192,
                 conv_drop_path_rate=0.0, mit_drop_path_rate=0.1),
    # The same code path at toy widths (tests and smoke runs; not a trained configuration).
    "tiny": dict(conv_depths=(1, 1, 1, 1), conv_dims=(16, 32, 64, 128), mit_depths=(1, 1, 1, 1),
                 mit_dims=(16, 32, 64, 128), mit_heads=(1, 1, 1, 2), mit_sr_ratios=(8, 4, 2, 1), gate_width=16,
                 conv_drop_path_rate=0.0, mit_drop_path_rate=0.0),
}
"""Size presets of :class:`Mesorch`; any value can be overridden by a constructor argument."""


# -- DCT frequency maps -------------------------------------------------------------------------------


def dct_matrix(n: int) -> Tensor:
    """Orthonormal DCT-II matrix ``(n, n)`` (rows: frequencies), computed in float32 in the authors' order of
    operations so that the frequency maps equal theirs bit for bit on the same device."""
    i = torch.arange(n, dtype=torch.float32, device="cpu").reshape(1, n)
    k = torch.arange(n, dtype=torch.float32, device="cpu").reshape(n, 1)
    m = torch.sqrt(torch.tensor(2.0 / n, device="cpu")) * torch.cos(math.pi * k * (2 * i + 1) / (2 * n))
    m[0, :] = 1 / math.sqrt(n)
    return m


def dct_filtered(x: Tensor, high: bool, alpha: float) -> Tensor:
    """Per-image min-max scaled inverse DCT of ``x`` with a corner of the spectrum zeroed.

    ``high=True``: the lowest ``int(alpha*H) x int(alpha*W)`` frequencies are removed (the authors' high
    frequency extractor, alpha 0.05); ``high=False``: the highest ``int(alpha*H) x int(alpha*W)`` (their low
    frequency extractor, alpha 0.95).
    """
    h, w = x.shape[-2:]
    # Built on the CPU and moved, as the authors' extractors do (same float32 values on every device).
    dh, dw = dct_matrix(h).to(x.device, x.dtype), dct_matrix(w).to(x.device, x.dtype)
    coeffs = torch.matmul(dh, torch.matmul(x, dw.t()))
    keep = torch.ones(h, w, device=x.device, dtype=x.dtype)
    ah, aw = int(alpha * h), int(alpha * w)
    if high:
        keep[:ah, :aw] = 0
    else:
        keep[h - ah:, w - aw:] = 0
    out = torch.matmul(dh.t(), torch.matmul(coeffs * keep, dw))
    flat = out.reshape(out.shape[0], -1)
    lo, hi = flat.min(dim=1).values.view(-1, 1, 1, 1), flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (out - lo) / (hi - lo).clamp_min(1e-12)


# -- encoders -----------------------------------------------------------------------------------------


class ConvNeXtEncoder(nn.Module):
    """timm's ConvNeXt stem and stages (no head), with a bias-free ``in_chans``-channel stem conv; returns
    the four stage outputs (the authors' ``forward_features`` list)."""

    def __init__(self, depths: Sequence[int], dims: Sequence[int], in_chans: int = 6, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        net = ConvNeXt(depths=tuple(depths), dims=tuple(dims), drop_path_rate=drop_path_rate, num_classes=0)
        stem = net.stem[0]
        net.stem[0] = nn.Conv2d(in_chans, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
        self.stem, self.stages = net.stem, net.stages

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class MixTransformer(nn.Module):
    """SegFormer's Mix Transformer encoder (MiT-B*: qkv bias, MLP ratio 4, eps-1e-6 block and stage norms,
    eps-1e-5 patch-embedding and reduction norms) with a bias-free ``in_chans``-channel first patch embedding,
    as the authors build it; returns the four stage outputs ``(B, C_i, H / 2**(i+2), W / 2**(i+2))``.
    Parameter names are SegFormer's (``patch_embed1``, ``block1.0.attn.kv``, ``norm1``, ...)."""

    def __init__(self, depths: Sequence[int], dims: Sequence[int], heads: Sequence[int], sr_ratios: Sequence[int],
                 in_chans: int = 6, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        total, j = sum(depths), 0
        for i in range(4):
            cin = in_chans if i == 0 else dims[i - 1]
            self.add_module(f"patch_embed{i + 1}", OverlapPatchEmbed(cin, dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2, bias=i > 0))
            rates = [drop_path_rate * (j + d) / max(total - 1, 1) for d in range(depths[i])]  # torch.linspace(0, rate, total)
            self.add_module(f"block{i + 1}", nn.ModuleList(MiTBlock(dims[i], heads[i], 4, sr_ratios[i], r, fused=False)
                                                           for r in rates))
            self.add_module(f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))
            j += depths[i]

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i in range(1, 5):
            x = mit_stage(getattr(self, f"patch_embed{i}"), getattr(self, f"block{i}"), getattr(self, f"norm{i}"), x)
            x = x.contiguous()  # NCHW memory (the convolutions that follow pick their kernels by layout)
            outs.append(x)
        return outs


# -- decoder --------------------------------------------------------------------------------------------


def _up_chain(dims: Sequence[int], level: int) -> nn.Module:
    """Transposed convs (4x4, stride 2) from level ``level`` down to level 0, each halving the stride."""
    ups = [nn.ConvTranspose2d(dims[i], dims[i - 1], kernel_size=4, stride=2, padding=1) for i in range(level, 0, -1)]
    return ups[0] if len(ups) == 1 else nn.Sequential(*ups)


class UpsampleConcatConv(nn.Module):
    """Brings levels 2..4 of both encoders to stride 4 (the authors' module: ``upsamplec{2,3,4}`` for the
    ConvNeXt, ``upsamples{2,3,4}`` for the SegFormer)."""

    def __init__(self, conv_dims: Sequence[int], mit_dims: Sequence[int]) -> None:
        super().__init__()
        for level in (1, 2, 3):
            self.add_module(f"upsamplec{level + 1}", _up_chain(conv_dims, level))
            self.add_module(f"upsamples{level + 1}", _up_chain(mit_dims, level))

    def forward(self, conv: Sequence[Tensor], mit: Sequence[Tensor]) -> list[Tensor]:
        ups = [conv[0]] + [getattr(self, f"upsamplec{i + 1}")(conv[i]) for i in (1, 2, 3)]
        return ups + [mit[0]] + [getattr(self, f"upsamples{i + 1}")(mit[i]) for i in (1, 2, 3)]


class ScoreNetwork(nn.Module):
    """The adaptive weighting gate: per-pixel softmax weights of the ``n`` scale predictions (stride 4)."""

    def __init__(self, in_chans: int = 9, width: int = 192, n: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3)
        self.invert = nn.Sequential(LayerNorm2d(width, eps=1e-6), nn.Conv2d(width, width, 3, padding=1),
                                    nn.Conv2d(width, 4 * width, 1), nn.Conv2d(4 * width, width, 1), nn.GELU())
        self.conv2 = nn.Conv2d(width, n, kernel_size=7, stride=2, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = x + self.invert(x)
        return self.conv2(x).float().softmax(dim=1)


def _mit_init(m: nn.Module) -> None:
    """SegFormer's initialisation (the authors keep it): truncated-normal linears, fan-out normal convs."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _read_weights(weights: str) -> dict[str, Tensor]:
    """A state dict from a local ``.safetensors`` / ``.pth`` file (``{"model"|"state_dict": ...}`` unwrapped), or
    a timm model's pretrained weights by name (timm's download / cache)."""
    if Path(weights).is_file():
        if weights.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(weights)
        sd = torch.load(weights, map_location="cpu", weights_only=True)
        return sd.get("model", sd.get("state_dict", sd))
    import timm

    return timm.create_model(weights, pretrained=True).state_dict()


class Mesorch(WholeImageResize, IMLModel):
    """Mesorch (see the module docstring): one mask logit, no image head.

    Args:
        size: a key of :data:`MESORCH_PRESETS` (``"base"`` = the authors' model, ``"tiny"`` for tests).
        conv_depths, conv_dims: the ConvNeXt (``None``: from the preset; Tiny = (3, 3, 9, 3), (96, ..., 768)).
        mit_depths, mit_dims, mit_heads, mit_sr_ratios: the Mix Transformer (MiT-B3 in the preset).
        gate_width: width of the gate (192).
        conv_drop_path_rate, mit_drop_path_rate: stochastic depth (0.0 and 0.1, as the authors).
        input_size: the square every image is resized to (512, as the authors); ``None`` runs at the image's
            own resolution (padded to a multiple of 32).
        high_alpha, low_alpha: the DCT filters' fractions (0.05 and 0.95).
        convnext_weights, mit_weights: ImageNet initialisation of the encoders (:meth:`load_encoder_weights`).
        mean, std: input normalisation (ImageNet, as the authors).
    """

    encoder_names = ("convnext", "segformer")  # for freeze_encoder and layer-wise lr decay

    def __init__(
        self,
        size: str = "base",
        conv_depths: Sequence[int] | None = None,
        conv_dims: Sequence[int] | None = None,
        mit_depths: Sequence[int] | None = None,
        mit_dims: Sequence[int] | None = None,
        mit_heads: Sequence[int] | None = None,
        mit_sr_ratios: Sequence[int] | None = None,
        gate_width: int | None = None,
        conv_drop_path_rate: float | None = None,
        mit_drop_path_rate: float | None = None,
        input_size: int | None = 512,
        high_alpha: float = 0.05,
        low_alpha: float = 0.95,
        convnext_weights: str | None = None,
        mit_weights: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        if size not in MESORCH_PRESETS:
            raise ValueError(f"unknown Mesorch size {size!r}; choose one of {sorted(MESORCH_PRESETS)}")
        given = dict(conv_depths=conv_depths, conv_dims=conv_dims, mit_depths=mit_depths, mit_dims=mit_dims,
                     mit_heads=mit_heads, mit_sr_ratios=mit_sr_ratios, gate_width=gate_width,
                     conv_drop_path_rate=conv_drop_path_rate, mit_drop_path_rate=mit_drop_path_rate)
        cfg = {**MESORCH_PRESETS[size], **{k: v for k, v in given.items() if v is not None}}
        for key in ("conv_depths", "conv_dims", "mit_depths", "mit_dims", "mit_heads", "mit_sr_ratios"):
            if len(cfg[key]) != 4:
                raise ValueError(f"{key} needs 4 values (one per stage), got {list(cfg[key])}")
        if input_size is not None and (input_size <= 0 or input_size % 32):
            raise ValueError(f"input_size must be a positive multiple of 32 or None, got {input_size}")
        if not (0 < high_alpha < 1 and 0 < low_alpha < 1):
            raise ValueError("high_alpha and low_alpha must lie in (0, 1)")
        self.size, self.config_resolved = size, cfg
        self.input_size, self.high_alpha, self.low_alpha = input_size, float(high_alpha), float(low_alpha)
        self.convnext = ConvNeXtEncoder(cfg["conv_depths"], cfg["conv_dims"], 6, cfg["conv_drop_path_rate"])
        self.segformer = MixTransformer(cfg["mit_depths"], cfg["mit_dims"], cfg["mit_heads"], cfg["mit_sr_ratios"], 6,
                                        cfg["mit_drop_path_rate"])
        self.upsample = UpsampleConcatConv(cfg["conv_dims"], cfg["mit_dims"])
        self.inverse = nn.ModuleList([nn.Conv2d(cfg["conv_dims"][0], 1, 1) for _ in range(4)]
                                     + [nn.Conv2d(cfg["mit_dims"][0], 1, 1) for _ in range(4)])
        self.gate = ScoreNetwork(9, cfg["gate_width"], 8)
        self.segformer.apply(_mit_init)
        for conv in (self.convnext.stem[0], self.segformer.patch_embed1.proj):  # the DCT channels, as the authors
            nn.init.kaiming_normal_(conv.weight[:, 3:])
        if convnext_weights or mit_weights:
            self.load_encoder_weights(convnext_weights, mit_weights)

    def load_encoder_weights(self, convnext_weights: str | None = None, mit_weights: str | None = None) -> None:
        """ImageNet initialisation as the authors': timm's ConvNeXt (``convnext_weights``: a timm name such as
        ``"convnext_tiny"`` or a file with timm ConvNeXt keys) and SegFormer's MiT (``mit_weights``: NVlabs'
        ``mit_b3.pth`` or a file with the same keys). The 6-channel first convs take the pretrained RGB filters
        for their first 3 channels; the DCT channels keep their Kaiming initialisation (as the authors')."""
        for weights, module, first in ((convnext_weights, self.convnext, "stem.0.weight"),
                                       (mit_weights, self.segformer, "patch_embed1.proj.weight")):
            if not weights:
                continue
            sd = _read_weights(weights)
            own = module.state_dict()
            missing = sorted(k for k in own if k not in sd)
            if missing:
                raise ValueError(f"encoder weights {weights!r} lack {len(missing)} tensors, e.g. {missing[:3]}")
            picked = {k: sd[k] for k in own}
            rgb = picked[first][:, :3]
            picked[first] = own[first].clone()
            picked[first][:, :3] = rgb
            bad = [k for k in own if picked[k].shape != own[k].shape]
            if bad:
                raise ValueError(f"encoder weights {weights!r} do not fit: {bad[0]} {tuple(picked[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
            module.load_state_dict(picked)
        if isinstance(getattr(self, "_hub_mixin_config", None), dict):  # a saved model carries its weights
            self._hub_mixin_config.update(convnext_weights=None, mit_weights=None)

    def forward(self, x: Tensor) -> IMLOutput:
        if self.input_size is None:
            return super().forward(x)  # own resolution, reflect-padded to a multiple of 32
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.input_size
        if (h, w) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        out = self.forward_padded(x)
        if (h, w) != (s, s):
            out.mask_logits = F.interpolate(out.mask_logits, size=(h, w), mode="bilinear", align_corners=False)
        return out

    def forward_padded(self, x: Tensor) -> IMLOutput:
        high = dct_filtered(x, high=True, alpha=self.high_alpha)
        low = dct_filtered(x, high=False, alpha=self.low_alpha)
        conv = self.convnext(torch.cat([x, high], dim=1))
        mit = self.segformer(torch.cat([x, low], dim=1))
        feats = self.upsample(conv, mit)
        gate = self.gate(torch.cat([x, high, low], dim=1))
        maps = torch.cat([inv(f) for inv, f in zip(self.inverse, feats, strict=True)], dim=1)
        logits = (gate * maps).sum(dim=1, keepdim=True)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return IMLOutput(mask_logits=logits)


@register_model
def mesorch_base(**overrides: Any) -> Mesorch:
    """Mesorch as the authors trained it: ConvNeXt-Tiny + MiT-B3 at 512 x 512."""
    return Mesorch(size="base", **overrides)


@register_model
def mesorch_tiny(**overrides: Any) -> Mesorch:
    """Mesorch's code path at toy widths (tests and smoke runs; not a trained configuration)."""
    return Mesorch(size="tiny", **overrides)


__all__ = ["MESORCH_PRESETS", "ConvNeXtEncoder", "Mesorch", "ScoreNetwork", "UpsampleConcatConv", "dct_filtered",
           "dct_matrix", "MixTransformer", "mesorch_base", "mesorch_tiny"]
