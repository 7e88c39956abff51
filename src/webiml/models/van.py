"""VAN (Visual Attention Network) backbone, in the layout of the MIML authors' DASS.

M.-H. Guo, C.-Z. Lu, Z.-N. Liu, M.-M. Cheng, S.-M. Hu, "Visual Attention Network", CVMJ 2023
(https://github.com/Visual-Attention-Network). The variant here is the one in ``models for CIML/dass.py`` of
https://github.com/qcf-568/MIML (CAAA's DASS): four stages, each an overlapping patch embedding (7x7
stride 4, then 3x3 stride 2; conv + BatchNorm) followed by blocks of

    x = x + layer_scale_1 * proj_2(LKA(GELU(proj_1(BN(x)))))      LKA: 5x5 dw -> 7x7 dw dilation 3 -> 1x1, times x
    x = x + layer_scale_2 * fc2(GELU(dwconv3x3(fc1(BN(x)))))

and a channel LayerNorm (eps 1e-5) at the end of each stage; every stage's output is returned (strides
4, 8, 16, 32). timm has no VAN; this is webiml's own implementation. Module names are the authors'
(``patch_embed{i}``, ``block{i}.{j}.attn.spatial_gating_unit.conv_spatial``, ``norm{i}``...), so their
state dicts load without renaming. Deviations: none in eval mode; the authors' BatchNorms are SyncBN
(same keys; use ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` for multi-GPU training) and their
blocks work on token sequences, which is the same computation as the NCHW code here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath
from torch import Tensor, nn

__all__ = ["VAN"]


class _DWConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dwconv(x)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = _DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class _LargeKernelAttention(nn.Module):
    """LKA: depthwise 5x5, depthwise 7x7 with dilation 3, pointwise 1x1; the result gates the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, stride=1, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class _SpatialAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = _LargeKernelAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class _Block(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop: float = 0.0, drop_path: float = 0.0, layer_scale: float = 1e-2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = _SpatialAttention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(layer_scale * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride, padding=patch // 2)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class VAN(nn.Module):
    """VAN backbone returning the four stage outputs (strides 4, 8, 16, 32).

    Args:
        in_chans: input channels (9 in DASS: original, forgery, difference).
        embed_dims, depths, mlp_ratios: per-stage width, number of blocks, MLP expansion.
        drop_rate: dropout in the MLPs. drop_path_rate: stochastic depth, linear over all blocks.
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 4, 6, 3),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(mlp_ratios):
            raise ValueError(f"VAN: embed_dims, depths and mlp_ratios differ in length: {embed_dims}, {depths}, {mlp_ratios}")
        self.num_stages = len(depths)
        self.embed_dims = [int(d) for d in embed_dims]
        n = sum(int(d) for d in depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # torch.linspace(0, rate, n)
        cur = 0
        for i, (dim, depth, ratio) in enumerate(zip(self.embed_dims, depths, mlp_ratios, strict=True)):
            embed = _PatchEmbed(in_chans if i == 0 else self.embed_dims[i - 1], dim, 7 if i == 0 else 3, 4 if i == 0 else 2)
            blocks = nn.ModuleList(_Block(dim, ratio, drop_rate, rates[cur + j]) for j in range(depth))
            cur += depth
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim))

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs
