"""SegFormer's Mix Transformer (MiT) building blocks, shared by the MiT encoders of webiml.

E. Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
NeurIPS 2021 (official code: NVlabs/SegFormer, ``mmseg/models/backbones/mix_transformer.py``). This is
webiml's own code. Attribute names are SegFormer's (``proj``, ``norm``, ``q``, ``kv``, ``sr``, ``fc1``,
``dwconv.dwconv``, ``fc2``, ``norm1``, ``attn``, ``norm2``, ``mlp``), so the state-dict keys of every user stay
the official ones.

Users: :mod:`webiml.models.cmx` (TruFor's dual-stream MiT-B2), :mod:`webiml.models.mesorch` (Mesorch's
single-stream MiT-B3) and :mod:`webiml.models.sparse_vit` (the Mix-FFN of its sparse attention blocks, the
authors' ``Mlp``). Each keeps its own weight initialisation (they differ between the official codes).

Tokens are ``(B, N, C)`` sequences of an ``(H, W)`` grid, row-major; blocks take the grid size with them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

__all__ = ["DWConv", "EfficientSelfAttention", "MiTBlock", "MixFFN", "OverlapPatchEmbed", "mit_stage", "tokens_to_map"]


def tokens_to_map(tokens: Tensor, h: int, w: int) -> Tensor:
    """(B, N, C) tokens -> (B, C, H, W)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlapping windows (``kernel // 2`` padding), then LayerNorm over tokens;
    returns ``(B, N, C)`` tokens and the grid size."""

    def __init__(self, in_channels: int, dim: int, kernel: int, stride: int, bias: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel, stride, padding=kernel // 2, bias=bias)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class DWConv(nn.Module):
    """3x3 depthwise convolution on tokens (the positional mixing of the Mix-FFN)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.dwconv(tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """fc1 -> depthwise 3x3 -> GELU -> fc2 (with dropout after the activation and after fc2; ``drop=0``, the
    default, is an exact identity)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), h, w)))
        return self.drop(self.fc2(x))


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys / values come from a ``sr_ratio``-strided convolution of the map
    (then LayerNorm); scale ``head_dim ** -0.5``.

    ``fused=True`` runs :func:`torch.nn.functional.scaled_dot_product_attention` (less memory on large
    images). ``fused=False`` computes the product and its softmax explicitly, the softmax in float32 (also
    under autocast): Mesorch's encoder, as measured against the authors' code. Both are equal up to float
    rounding in float32.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, fused: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.fused = fused
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        d = c // self.num_heads
        q = self.q(x).reshape(b, n, self.num_heads, d).transpose(1, 2)
        src = x
        if self.sr_ratio > 1:
            src = self.norm(self.sr(tokens_to_map(x, h, w)).flatten(2).transpose(1, 2))
        k, v = self.kv(src).reshape(b, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
        drop = self.attn_drop if self.training else 0.0
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:
            attn = ((q @ k.transpose(-2, -1)) * d**-0.5).float().softmax(dim=-1)
            out = (F.dropout(attn, drop) if drop > 0 else attn) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class MiTBlock(nn.Module):
    """Pre-norm transformer block: efficient self-attention, then Mix-FFN, each with stochastic depth
    (block norms with ``eps``, 1e-6 in SegFormer's MiT-B* configurations)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, drop_path: float = 0.0,
                 drop: float = 0.0, attn_drop: float = 0.0, eps: float = 1e-6, fused: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, True, attn_drop, drop, fused)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


def mit_stage(patch_embed: OverlapPatchEmbed, blocks: Iterable[MiTBlock], norm: nn.Module, x: Tensor) -> Tensor:
    """One MiT stage on a (B, C, H, W) map: patch embedding, the blocks, the stage norm -> (B, C', H', W')."""
    tokens, h, w = patch_embed(x)
    for blk in blocks:
        tokens = blk(tokens, h, w)
    return tokens_to_map(norm(tokens), h, w)
