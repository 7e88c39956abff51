"""SparseViT: a UniFormer-style backbone whose self-attention only joins tokens a fixed stride apart.

L. Su, X. Ma, X. Zhu, C. Niu, Z. Lei, J.-Z. Zhou, "Can We Get Rid of Handcrafted Feature Extractors? SparseViT:
Nonsemantics-Centered, Parameter-Efficient Image Manipulation Localization through Sparse-Coding Transformer",
AAAI 2025 (arXiv 2412.14598). Official code: https://github.com/scu-zjz/SparseViT (``SparseViT.py``,
``decoderhead.py``, ``SparseViT_Mul.py``, ``utils/sparsevit_transforms.py``). This is webiml's own
implementation with the official module names, so the authors' checkpoint (``{"model": state dict}`` of their
``SparseViT_Mul``) loads key for key (``webiml convert sparse-vit``).

Network (official defaults, the ``"base"`` preset; UniFormer-B widths and depths)::

    RGB resized to 512 x 512, ImageNet-normalised
      -> patch embed /4 (64 ch)  -> 5 conv blocks  (CBlock: dw 3x3 position conv, BN, 1x1, dw 5x5, 1x1, BN + conv MLP)
      -> patch embed /8 (128 ch) -> 8 conv blocks
      -> patch embed /16 (320 ch) -> 20 sparse attention blocks, in groups of 5 with sparsity rates 8, 4, 2, 1
      -> patch embed /32 (512 ch) -> 7 sparse attention blocks, rates 2 (blocks 0-3) and 1 (blocks 4-6)
    sparse attention block (SABlock): LayerNorm -> multi-head self-attention *within each sparse group* ->
      x + gamma_1 * attn; x + gamma_2 * MLP (Linear, dw 3x3 conv, GELU, Linear) (layer scale, init 1e-6).
      With rate S the tokens at (S i + a, S j + b) for one offset (a, b) form a group: S^2 groups, each
      attending only within itself (rate 1 = global attention).
    LFF head ("Learnable Feature Fusion", the authors' ``Multiple`` as ``lmu``): the stage-3 outputs after
      blocks 5, 10, 15 and the LayerNorm-ed stage-3 output (1x1 conv 320 -> 512 each), the stage-4 output
      after block 4 and the LayerNorm-ed stage-4 output (bilinearly upsampled to stride 16) are summed with a
      learnable per-channel weight each (gamma1..6, init 1e-6) -> LayerNorm -> 1x1 conv to one logit at
      stride 16 -> bilinear (align_corners=False) to 512 x 512.

The authors' inference (``main_test.py``, ``utils/datasets.py``) resizes every image to 512 x 512 (albumentations
``Resize``, bilinear) and normalises it with the ImageNet statistics, then resizes the 512 x 512 probability map
back to the image size. Training (``main_train.py``) resizes whole images to 512 x 512 after augmentation and
minimises ``BCEWithLogitsLoss`` of the 512 x 512 logits against the resized binary mask; it is the only loss.
In webiml that loss is :class:`webiml.tasks.iml.IMLTask` with ``bce_weight=1``, ``dice_weight=0``,
``image_loss_weight=0`` (``configs/sparse_vit/sparse_vit_cat.yaml``).

Contract (:class:`SparseViT`): the input is the normalised batch at any size; with ``input_size=512`` (the
default) :meth:`SparseViT.forward` resizes it to 512 x 512 as the authors do and resizes the logits back to the
input size. ``input_size=None`` runs at the image's own resolution instead (a webiml option: the input is
padded to a multiple of :attr:`size_divisor`, 128 for the official rates, and the map cropped back); the
authors' code cannot run other sizes (their patch embedding asserts the size; their group split needs a square
map of 32 x 32 tokens at stride 16).
With ``input_size`` set the model is not ``tile_safe``: :class:`webiml.inference.Localizer` resizes the whole
image, as the authors do (with ``input_size=None`` it may tile).

Deviations from the official code, all outside the network at 512 x 512 (where the converted model equals
the authors' ``SparseViT_Mul`` up to float rounding):

- Resizing: the authors resize the ``uint8`` image with OpenCV (bilinear, rounded to ``uint8``) before
  normalising; webiml resizes the normalised float image with ``F.interpolate`` (bilinear, no antialias,
  ``align_corners=False``, OpenCV's sampling grid). The authors resize the *probability* map back with PIL's
  Lanczos filter; webiml resizes the logits bilinearly.
- Sparsity rate = stride: a block of rate ``S`` groups tokens ``S`` apart, at any feature size. The authors
  compute the group side as ``32 // S`` (stage 3) and ``16 // S`` (stage 4) tokens, which is the same thing at
  their 512 x 512 input (32 x 32 tokens at stride 16) but would change the stride at other sizes.
- The official ``SABlock`` builds a ``pos_embed`` depth-wise conv that its ``forward`` never uses, and the
  backbone builds ``norm1`` / ``norm2`` LayerNorms that are never used; webiml keeps those tensors as
  (persistent) buffers so that the checkpoint keys match, without unused parameters in training.
- Attention uses :func:`torch.nn.functional.scaled_dot_product_attention` (same scale ``head_dim ** -0.5``).
- No image-level head (``image_logits`` is ``None``; the image score is the map's maximum).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import Tensor, nn

from webiml.models.base import IMAGENET_MEAN, IMAGENET_STD, IMLModel, IMLOutput, WholeImageResize
from webiml.models.mit import DWConv, MixFFN

SPARSE_VIT_PRESETS: dict[str, dict[str, Any]] = {
    # SparseViT_Mul() defaults: UniFormer-B (layer scale) widths and depths, rates [8, 4, 2, 1] / [2, 1].
    "base": {"depths": [5, 8, 20, 7], "embed_dims": [64, 128, 320, 512], "head_dim": 64, "rates3": [8, 4, 2, 1],
             "rates4": [2, 1], "group3": 5, "group4": 4},
    # The same code path at toy widths and depths, for tests (not a trained configuration).
    "tiny": {"depths": [1, 1, 4, 2], "embed_dims": [8, 16, 24, 32], "head_dim": 8, "rates3": [8, 4, 2, 1],
             "rates4": [2, 1], "group3": 1, "group4": 1},
}
"""Configurations of :class:`SparseViT` (``rates3`` / ``rates4``: sparsity rate of each group of ``group3`` /
``group4`` consecutive blocks of stages 3 / 4, the authors' ``s_blocks3`` / ``s_blocks4``)."""


class _Unused(nn.Module):
    """Tensors the official module holds but never uses, kept as buffers so checkpoint keys match."""

    def __init__(self, **shapes: Sequence[int]) -> None:
        super().__init__()
        for name, shape in shapes.items():
            self.register_buffer(name, torch.zeros(*shape))


def _channels_last_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm over the channels of a (B, C, H, W) map."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class PatchEmbed(nn.Module):
    """Strided conv + LayerNorm (eps 1e-5, as the official ``PatchEmbed``)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return _channels_last_norm(self.norm, self.proj(x))


class CMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CBlock(nn.Module):
    """UniFormer's convolutional block (stages 1, 2)."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = CMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


def to_sparse_groups(x: Tensor, rate: int) -> Tensor:
    """(B, C, H, W) -> (B * rate^2, H W / rate^2, C): the tokens ``rate`` apart, one group per offset."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // rate, rate, w // rate, rate).permute(0, 3, 5, 2, 4, 1)
    return x.reshape(b * rate * rate, (h // rate) * (w // rate), c)


def from_sparse_groups(x: Tensor, rate: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`to_sparse_groups`: -> (B, C, H, W)."""
    c = x.shape[-1]
    x = x.view(-1, rate, rate, h // rate, w // rate, c).permute(0, 5, 3, 1, 4, 2)
    return x.reshape(-1, c, h, w)


class SABlock(nn.Module):
    """Sparse attention block: self-attention within the groups of tokens ``rate`` apart, conv MLP, layer scale."""

    def __init__(self, dim: int, num_heads: int, rate: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.rate = rate
        self.pos_embed = _Unused(weight=(dim, 1, 3, 3), bias=(dim,))  # built but unused by the official forward
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))  # the official ``Mlp``: Linear, dw 3x3, GELU, Linear
        self.gamma_1 = nn.Parameter(1e-6 * torch.ones(dim))
        self.gamma_2 = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if h % self.rate or w % self.rate:
            raise ValueError(f"SparseViT: a {h}x{w} token map cannot be split at sparsity rate {self.rate}")
        attn = self.attn(self.norm1(to_sparse_groups(x, self.rate)))
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.drop_path(self.gamma_1 * from_sparse_groups(attn, self.rate, h, w).flatten(2).transpose(1, 2))
        tokens = tokens + self.drop_path(self.gamma_2 * self.mlp(self.norm2(tokens), h, w))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


def _tap_after(depth: int, group: int) -> list[bool]:
    """Whether a block's output is a head input: the end of each group of ``group`` blocks but the stage's last."""
    return [(i + 1) % group == 0 and i + 1 < depth for i in range(depth)]


class SparseViTEncoder(nn.Module):
    """The official ``SparseViT`` backbone; :meth:`forward` returns the head's inputs, stage 3 then stage 4."""

    def __init__(self, depths: Sequence[int], embed_dims: Sequence[int], head_dim: int, mlp_ratio: float,
                 rates3: Sequence[int], rates4: Sequence[int], group3: int, group4: int, drop_path_rate: float) -> None:
        super().__init__()
        d1, d2, d3, d4 = depths
        e1, e2, e3, e4 = embed_dims
        self.patch_embed1 = PatchEmbed(4, 3, e1)
        self.patch_embed2 = PatchEmbed(2, e1, e2)
        self.patch_embed3 = PatchEmbed(2, e2, e3)
        self.patch_embed4 = PatchEmbed(2, e3, e4)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # the official schedule
        self.blocks1 = nn.ModuleList([CBlock(e1, mlp_ratio, dpr[i]) for i in range(d1)])
        self.norm1 = _Unused(weight=(e1,), bias=(e1,))  # built but unused by the official forward
        self.blocks2 = nn.ModuleList([CBlock(e2, mlp_ratio, dpr[d1 + i]) for i in range(d2)])
        self.norm2 = _Unused(weight=(e2,), bias=(e2,))
        self.blocks3 = nn.ModuleList([SABlock(e3, e3 // head_dim, rates3[i // group3], mlp_ratio, dpr[d1 + d2 + i])
                                      for i in range(d3)])
        self.norm3 = nn.LayerNorm(e3, eps=1e-6)
        self.blocks4 = nn.ModuleList([SABlock(e4, e4 // head_dim, rates4[i // group4], mlp_ratio, dpr[d1 + d2 + d3 + i])
                                      for i in range(d4)])
        self.norm4 = nn.LayerNorm(e4, eps=1e-6)
        self.taps3 = _tap_after(d3, group3)
        self.taps4 = _tap_after(d4, group4)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        x = self.patch_embed1(x)
        for blk in self.blocks1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x)
        x = self.patch_embed3(x)
        out3: list[Tensor] = []
        for blk, tap in zip(self.blocks3, self.taps3, strict=True):
            x = blk(x)
            if tap:
                out3.append(x)
        out3.append(_channels_last_norm(self.norm3, x))
        x = self.patch_embed4(x)
        out4: list[Tensor] = []
        for blk, tap in zip(self.blocks4, self.taps4, strict=True):
            x = blk(x)
            if tap:
                out4.append(x)
        out4.append(_channels_last_norm(self.norm4, x))
        return out3, out4


class LearnableFeatureFusion(nn.Module):
    """The LFF head (the authors' ``Multiple``): per-channel weighted sum of the multi-scale features at stride 16."""

    def __init__(self, n3: int, n4: int, dim3: int, dim: int) -> None:
        super().__init__()
        self.n3, self.n4 = n3, n4
        for i in range(1, n3 + n4 + 1):
            self.register_parameter(f"gamma{i}", nn.Parameter(1e-6 * torch.ones(dim)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        for i in range(1, n3 + 1):
            self.add_module(f"conv_layer{i}", nn.Conv2d(dim3, dim, 1))
        self.conv_last = nn.Conv2d(dim, 1, 1)

    def forward(self, out3: list[Tensor], out4: list[Tensor]) -> Tensor:
        if len(out3) != self.n3 or len(out4) != self.n4:
            raise ValueError(f"LFF head expects {self.n3} + {self.n4} features, got {len(out3)} + {len(out4)}")
        feats = [getattr(self, f"conv_layer{i + 1}")(f) for i, f in enumerate(out3)]
        size = feats[0].shape[-2:]
        feats += [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in out4]
        x = sum(getattr(self, f"gamma{i + 1}").view(1, -1, 1, 1) * f for i, f in enumerate(feats))
        return self.conv_last(_channels_last_norm(self.norm, x))  # type: ignore[arg-type]


def _init_weights(m: nn.Module) -> None:
    """The official initialisation: trunc-normal Linear, unit LayerNorm, He-normal (fan-out) MLP dw convs."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, DWConv):
        conv = m.dwconv
        fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
        nn.init.zeros_(conv.bias)


def load_uniformer_weights(encoder: nn.Module, path: str | Path) -> list[str]:
    """Load a UniFormer ImageNet checkpoint (``{"model": state dict}``, e.g. ``uniformer_base_ls_in1k.pth``) into
    ``encoder`` non-strictly, as the authors' ``_uniformer_init_weights`` does (``backbone.`` prefixes dropped);
    returns the encoder keys it did not set (the MLP dw convs and the stage norms, which UniFormer lacks)."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else obj
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    own = encoder.state_dict()
    usable = {k: v for k, v in state.items() if k in own}
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in usable.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{path}: UniFormer weights do not fit the SparseViT encoder: {'; '.join(bad[:5])}")
    encoder.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


class SparseViT(WholeImageResize, IMLModel):
    """SparseViT (AAAI 2025): sparse-attention UniFormer backbone + LFF head; see the module docstring.

    Args:
        size: a key of :data:`SPARSE_VIT_PRESETS` (``"base"`` = the authors' model, ``"tiny"`` for tests).
        depths, embed_dims, head_dim, rates3, rates4, group3, group4: overrides of the preset.
        input_size: side of the square every input is resized to (the authors': 512); ``None`` runs at the input's
            own resolution, padded to a multiple of :attr:`size_divisor`.
        mlp_ratio: MLP width factor.
        drop_path_rate: stochastic depth at the last block (the authors train with 0.2).
        backbone_weights: path to a UniFormer ImageNet checkpoint to initialise the backbone from (the authors
            start from ``uniformer_base_ls_in1k.pth``); not kept in the saved config.
        mean, std: input normalisation (ImageNet, as the authors').
    """

    encoder_names = ("encoder_net",)  # for freeze_encoder and layer-wise lr decay

    card_summary = (
        "SparseViT ported to [webiml]({repo_url}): a UniFormer-style vision transformer whose self-attention only\n"
        "joins tokens a fixed stride apart (sparse attention), so it learns content-independent manipulation traces;\n"
        "a learnable per-channel fusion of its multi-scale features predicts the manipulation map.")

    def __init__(
        self,
        size: str = "base",
        depths: Sequence[int] | None = None,
        embed_dims: Sequence[int] | None = None,
        head_dim: int | None = None,
        rates3: Sequence[int] | None = None,
        rates4: Sequence[int] | None = None,
        group3: int | None = None,
        group4: int | None = None,
        input_size: int | None = 512,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.2,
        backbone_weights: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]
        if size not in SPARSE_VIT_PRESETS:
            raise ValueError(f"unknown SparseViT size {size!r}; choose one of {sorted(SPARSE_VIT_PRESETS)}")
        given = dict(depths=depths, embed_dims=embed_dims, head_dim=head_dim, rates3=rates3, rates4=rates4,
                     group3=group3, group4=group4)
        cfg = {**SPARSE_VIT_PRESETS[size], **{k: v for k, v in given.items() if v is not None}}
        depths_, dims = [int(v) for v in cfg["depths"]], [int(v) for v in cfg["embed_dims"]]
        r3, r4 = [int(v) for v in cfg["rates3"]], [int(v) for v in cfg["rates4"]]
        g3, g4, hd = int(cfg["group3"]), int(cfg["group4"]), int(cfg["head_dim"])
        if len(depths_) != 4 or len(dims) != 4:
            raise ValueError(f"SparseViT needs 4 depths and 4 widths, got {depths_} and {dims}")
        if len(r3) * g3 < depths_[2] or len(r4) * g4 < depths_[3] or min(r3 + r4) < 1:
            raise ValueError(f"SparseViT: rates {r3} (groups of {g3}) / {r4} (groups of {g4}) do not cover depths {depths_}")
        if dims[2] % hd or dims[3] % hd:
            raise ValueError(f"SparseViT: widths {dims[2:]} must be multiples of head_dim {hd}")
        self.input_size = None if input_size is None else int(input_size)
        # At its own resolution the input must split into groups at every rate: stride 16 x rates3, 32 x rates4.
        divisor = math.lcm(*(16 * r for r in r3), *(32 * r for r in r4))
        if self.input_size is not None and self.input_size % divisor:
            raise ValueError(f"SparseViT: input_size {self.input_size} must be a multiple of {divisor} for rates {r3} / {r4}")
        self.size_divisor = 1 if self.input_size is not None else divisor
        self.size = size
        self.encoder_net = SparseViTEncoder(depths_, dims, hd, float(mlp_ratio), r3, r4, g3, g4, float(drop_path_rate))
        n3, n4 = sum(self.encoder_net.taps3) + 1, sum(self.encoder_net.taps4) + 1
        self.lmu = LearnableFeatureFusion(n3, n4, dims[2], dims[3])
        self.apply(_init_weights)
        if backbone_weights is not None:
            load_uniformer_weights(self.encoder_net, backbone_weights)
        if isinstance(getattr(self, "_hub_mixin_config", None), dict):
            self._hub_mixin_config["backbone_weights"] = None

    def logits(self, x: Tensor) -> Tensor:
        """The authors' network: normalised (B, 3, S, S) -> logits (B, 1, S, S) (before their sigmoid)."""
        out3, out4 = self.encoder_net(x)
        return F.interpolate(self.lmu(out3, out4), size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward_padded(self, x: Tensor) -> IMLOutput:
        return IMLOutput(mask_logits=self.logits(x), image_logits=None)

    def forward(self, x: Tensor) -> IMLOutput:
        if self.input_size is None:
            return super().forward(x)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SparseViT expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.input_size
        xs = x if (h, w) == (s, s) else F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        mask = self.logits(xs)
        if (h, w) != (s, s):
            mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)
        return IMLOutput(mask_logits=mask, image_logits=None)


__all__ = ["SPARSE_VIT_PRESETS", "SparseViT", "from_sparse_groups", "load_uniformer_weights", "to_sparse_groups"]
