"""CMX: a dual-stream SegFormer (MiT) encoder with cross-modal feature rectification and fusion, and the
SegFormer all-MLP decoder. The encoder and decoder of TruFor (:mod:`webiml.models.trufor`).

References:

- J. Zhang, H. Liu, K. Yang, X. Hu, R. Liu, R. Stiefelhagen, "CMX: Cross-Modal Fusion for RGB-X Semantic
  Segmentation with Transformers", IEEE T-ITS 2023 (the FRM / FFM modules).
- E. Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
  NeurIPS 2021 (the Mix Transformer encoder MiT-B0..B5 and the MLP decoder).
- As used by TruFor (grip-unina/TruFor, ``TruFor_train_test/lib/models/cmx``: ``encoders/dual_segformer.py``
  ``RGBXTransformer``, ``net_utils.py`` ``FeatureRectifyModule`` / ``FeatureFusionModule``,
  ``decoders/MLPDecoder.py`` ``DecoderHead``).

This is webiml's own code. Attribute names follow the official modules, so TruFor's state-dict keys load
unchanged (``patch_embed1.proj``, ``block1.0.attn.kv``, ``extra_block1.0.mlp.dwconv.dwconv``, ``FRMs.0``,
``FFMs.0.cross.cross_attn.kv1``, ``linear_c4.proj``, ``linear_fuse.0``, ``linear_pred``, ...).
The MiT parts (patch embeddings, blocks) are :mod:`webiml.models.mit`'s, shared with Mesorch.

Structure: two MiT streams (RGB and the extra modality X: ``patch_embed{i}`` / ``block{i}`` / ``norm{i}`` and
``extra_patch_embed{i}`` / ``extra_block{i}`` / ``extra_norm{i}``). After every stage the two maps are
rectified by each other (FRM: channel and spatial weights from both, ``x1 + 0.5 w_c x2 + 0.5 w_s x2`` and
vice versa) and continue to the next stage; their fusion (FFM: efficient cross-attention between the streams,
then a channel embedding back to C channels) is the stage's output (strides 4, 8, 16, 32).

Deviations from the official code:

- The spatial-reduction self-attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`
  (same scale ``head_dim ** -0.5``; less memory on large images, equal up to float rounding).
- Stochastic depth: the official schedule is kept, including its quirk in stage 2, where every block of the
  RGB stream gets the rate of the stage's first block and every block of the X stream that of its second.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

from webiml.models.mit import MiTBlock, OverlapPatchEmbed, mit_stage, tokens_to_map

__all__ = ["DualMiT", "FeatureFusion", "FeatureRectify", "MLPDecoder", "load_mit_weights"]


def _init_vit(m: nn.Module) -> None:
    """The official initialisation of the encoder's layers (SegFormer's ``_init_weights``)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# -- cross-modal rectification and fusion (CMX) -----------------------------------------------------------


class ChannelWeights(nn.Module):
    """Per-channel weights of both streams from their concatenated average- and max-pooled descriptors."""

    def __init__(self, dim: int, reduction: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(4 * dim, 4 * dim // reduction), nn.ReLU(inplace=True),
                                 nn.Linear(4 * dim // reduction, 2 * dim), nn.Sigmoid())

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        x = torch.cat((x1, x2), dim=1)
        y = torch.cat((x.mean(dim=(2, 3)), x.amax(dim=(2, 3))), dim=1)
        return self.mlp(y).reshape(x.shape[0], 2, self.dim, 1, 1).transpose(0, 1)  # (2, B, C, 1, 1)


class SpatialWeights(nn.Module):
    """Per-pixel weights of both streams from their concatenation (1x1 convolutions)."""

    def __init__(self, dim: int, reduction: int = 1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(2 * dim, dim // reduction, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(dim // reduction, 2, 1), nn.Sigmoid())

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return self.mlp(torch.cat((x1, x2), dim=1)).unsqueeze(2).transpose(0, 1)  # (2, B, 1, H, W)


class FeatureRectify(nn.Module):
    """CMX's FRM: each stream plus the other stream weighted by channel and spatial weights of both."""

    def __init__(self, dim: int, reduction: int = 1, lambda_c: float = 0.5, lambda_s: float = 0.5) -> None:
        super().__init__()
        self.lambda_c, self.lambda_s = lambda_c, lambda_s
        self.channel_weights = ChannelWeights(dim, reduction)
        self.spatial_weights = SpatialWeights(dim, reduction)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        cw = self.channel_weights(x1, x2)
        sw = self.spatial_weights(x1, x2)
        out1 = x1 + self.lambda_c * cw[1] * x2 + self.lambda_s * sw[1] * x2
        out2 = x2 + self.lambda_c * cw[0] * x1 + self.lambda_s * sw[0] * x1
        return out1, out2


class CrossAttention(nn.Module):
    """Efficient cross-attention: each stream's queries read a (d x d) context of the other stream's keys and
    values (softmax over the key-channel axis), per head."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.kv1 = nn.Linear(dim, 2 * dim, bias=False)
        self.kv2 = nn.Linear(dim, 2 * dim, bias=False)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        b, n, c = x1.shape
        d = c // self.num_heads

        def heads(x: Tensor) -> Tensor:
            return x.reshape(b, n, self.num_heads, d).transpose(1, 2)

        def context(x: Tensor, kv: nn.Linear) -> Tensor:
            k, v = kv(x).reshape(b, n, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
            return ((k.transpose(-2, -1) @ v) * self.scale).softmax(dim=-2)  # (B, heads, d, d)

        ctx1, ctx2 = context(x1, self.kv1), context(x2, self.kv2)
        y1 = (heads(x1) @ ctx2).transpose(1, 2).reshape(b, n, c)
        y2 = (heads(x2) @ ctx1).transpose(1, 2).reshape(b, n, c)
        return y1, y2


class CrossPath(nn.Module):
    """Half of each stream's projection goes through the cross-attention, half stays; residual + LayerNorm."""

    def __init__(self, dim: int, num_heads: int, reduction: int = 1) -> None:
        super().__init__()
        inner = dim // reduction
        self.channel_proj1 = nn.Linear(dim, 2 * inner)
        self.channel_proj2 = nn.Linear(dim, 2 * inner)
        self.act1 = nn.ReLU(inplace=True)
        self.act2 = nn.ReLU(inplace=True)
        self.cross_attn = CrossAttention(inner, num_heads)
        self.end_proj1 = nn.Linear(2 * inner, dim)
        self.end_proj2 = nn.Linear(2 * inner, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        y1, u1 = self.act1(self.channel_proj1(x1)).chunk(2, dim=-1)
        y2, u2 = self.act2(self.channel_proj2(x2)).chunk(2, dim=-1)
        v1, v2 = self.cross_attn(u1, u2)
        out1 = self.norm1(x1 + self.end_proj1(torch.cat((y1, v1), dim=-1)))
        out2 = self.norm2(x2 + self.end_proj2(torch.cat((y2, v2), dim=-1)))
        return out1, out2


class ChannelEmbed(nn.Module):
    """2C -> C: a 1x1 residual projection plus (1x1 conv, 3x3 depthwise, ReLU, 1x1 conv, BN), then BN."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 1) -> None:
        super().__init__()
        mid = out_channels // reduction
        self.residual = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.channel_embed = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1), nn.Conv2d(mid, mid, 3, padding=1, groups=mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1), nn.BatchNorm2d(out_channels))
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.residual(x) + self.channel_embed(x))


class FeatureFusion(nn.Module):
    """CMX's FFM: cross path on the two token sequences, then the channel embedding of their concatenation."""

    def __init__(self, dim: int, num_heads: int, reduction: int = 1) -> None:
        super().__init__()
        self.cross = CrossPath(dim, num_heads, reduction)
        self.channel_emb = ChannelEmbed(2 * dim, dim, reduction)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        h, w = x1.shape[-2:]
        t1, t2 = self.cross(x1.flatten(2).transpose(1, 2), x2.flatten(2).transpose(1, 2))
        return self.channel_emb(tokens_to_map(torch.cat((t1, t2), dim=-1), h, w))


# -- the dual-stream encoder ----------------------------------------------------------------------------


class DualMiT(nn.Module):
    """Two MiT streams (RGB, X) with FRM after every stage and FFM fusion as the stage output.

    Defaults are MiT-B2 as in TruFor (``mit_b2``: dims 64/128/320/512, heads 1/2/5/8, depths 3/4/6/3,
    spatial reductions 8/4/2/1, MLP ratio 4, stochastic depth 0.1). ``forward(rgb, x)`` returns the four fused
    maps (strides 4, 8, 16, 32; any input size: the patch embeddings pad by half their kernel).
    """

    def __init__(self, in_channels: int = 3, embed_dims: Sequence[int] = (64, 128, 320, 512),
                 num_heads: Sequence[int] = (1, 2, 5, 8), depths: Sequence[int] = (3, 4, 6, 3),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), mlp_ratio: float = 4.0, drop_path_rate: float = 0.1,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0) -> None:
        super().__init__()
        dims, depths = [int(d) for d in embed_dims], [int(d) for d in depths]
        if not len(dims) == len(num_heads) == len(depths) == len(sr_ratios) == 4:
            raise ValueError("DualMiT needs 4 stages: embed_dims, num_heads, depths and sr_ratios of length 4")
        self.embed_dims = dims
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under a meta-device build
        cur = 0
        for i in range(4):
            cin, kernel, stride = (in_channels, 7, 4) if i == 0 else (dims[i - 1], 3, 2)
            for prefix in ("", "extra_"):
                self.add_module(f"{prefix}patch_embed{i + 1}", OverlapPatchEmbed(cin, dims[i], kernel, stride))
            for prefix in ("", "extra_"):
                # The official schedule: stage 2 uses dpr[cur] (RGB) and dpr[cur + 1] (X) for all its blocks.
                rates = [dpr[cur + (0 if prefix == "" else 1)]] * depths[i] if i == 1 else dpr[cur:cur + depths[i]]
                blocks = nn.ModuleList(MiTBlock(dims[i], int(num_heads[i]), mlp_ratio, int(sr_ratios[i]), rates[j],
                                                drop_rate, attn_drop_rate) for j in range(depths[i]))
                self.add_module(f"{prefix}block{i + 1}", blocks)
                self.add_module(f"{prefix}norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))
            cur += depths[i]
        self.FRMs = nn.ModuleList(FeatureRectify(d) for d in dims)
        self.FFMs = nn.ModuleList(FeatureFusion(d, int(h)) for d, h in zip(dims, num_heads, strict=True))
        self.apply(_init_vit)

    def _stage(self, i: int, x: Tensor, prefix: str) -> Tensor:
        return mit_stage(getattr(self, f"{prefix}patch_embed{i}"), getattr(self, f"{prefix}block{i}"),
                         getattr(self, f"{prefix}norm{i}"), x)

    def forward(self, rgb: Tensor, x: Tensor) -> list[Tensor]:
        outs = []
        for i in range(4):
            rgb, x = self._stage(i + 1, rgb, ""), self._stage(i + 1, x, "extra_")
            rgb, x = self.FRMs[i](rgb, x)
            outs.append(self.FFMs[i](rgb, x))
        return outs


def load_mit_weights(encoder: DualMiT, weights: str | Path) -> None:
    """Initialise both streams of ``encoder`` from a single-stream MiT checkpoint (SegFormer's ImageNet
    ``mit_b2.pth``: keys ``patch_embed{i}.*``, ``block{i}.*``, ``norm{i}.*``, possibly under ``"model"`` or
    ``"state_dict"``), as TruFor's ``load_dualpath_model``: every such tensor goes to its RGB module and to
    its ``extra_`` twin; classifier keys are ignored. Read with ``torch.load(weights_only=True)``."""
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    own = encoder.state_dict()
    picked: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.startswith(("patch_embed", "block", "norm")):
            picked[k] = v
            picked["extra_" + k] = v
    missing = [k for k in own if k.startswith(("patch_embed", "block", "norm", "extra_")) and k not in picked]
    bad = [k for k in picked if k not in own or own[k].shape != picked[k].shape]
    if missing or bad:
        raise ValueError(f"MiT weights {weights} do not fit this encoder: missing {missing[:3]}, unexpected or misshaped {bad[:3]}")
    encoder.load_state_dict(picked, strict=False)


# -- the SegFormer all-MLP decoder -----------------------------------------------------------------------


class LinearEmbed(nn.Module):
    """A per-pixel linear projection (``proj``), kept as ``nn.Linear`` for the official keys."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(x.shape[0], -1, *x.shape[-2:])


class MLPDecoder(nn.Module):
    """SegFormer's decoder: each level projected to ``embed_dim``, upsampled to stride 4, concatenated
    (coarsest first), fused by 1x1 conv + BN + ReLU, dropout, 1x1 classifier (stride-4 logits).

    ``bn_eps``: TruFor sets the fusion BatchNorm's eps to ``BN_EPS = 1e-3`` (the official ``init_weight``).
    """

    def __init__(self, in_channels: Sequence[int] = (64, 128, 320, 512), num_classes: int = 2, embed_dim: int = 512,
                 dropout: float = 0.1, bn_eps: float = 1e-3, bn_momentum: float = 0.1) -> None:
        super().__init__()
        for i, c in enumerate(in_channels):
            self.add_module(f"linear_c{i + 1}", LinearEmbed(int(c), embed_dim))
        self.linear_fuse = nn.Sequential(nn.Conv2d(4 * embed_dim, embed_dim, 1),
                                         nn.BatchNorm2d(embed_dim, eps=bn_eps, momentum=bn_momentum), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        for m in self.modules():  # the official init_weight: Kaiming (fan in) convolutions, BN at identity
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        parts = []
        for i in (4, 3, 2, 1):
            y = getattr(self, f"linear_c{i}")(feats[i - 1])
            parts.append(y if i == 1 else F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return self.linear_pred(self.dropout(self.linear_fuse(torch.cat(parts, dim=1))))
