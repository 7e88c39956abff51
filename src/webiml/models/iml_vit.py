"""IML-ViT (Ma et al., 2023): a plain ViT-B with windowed + global attention, a simple feature pyramid and an MLP head.

Paper: Xiaochen Ma, Bo Du, Zhuohang Jiang, Ahmed Y. Al Hammadi, Jizhe Zhou, "IML-ViT: Benchmarking Image
Manipulation Localization by Vision Transformer", arXiv:2307.14863 (2023). Official code (MIT licence):
``SunnyHaze/IML-ViT`` (``iml_vit_model.py``, ``modules/window_attention_ViT.py``, ``modules/decoderhead.py``).
This is webiml's own implementation of the architecture; module names differ from the official ones and
:mod:`webiml.convert.iml_vit` maps the keys (``encoder_net.`` -> ``backbone.``, ``featurePyramid_net.`` ->
``neck.``, ``predict_head.`` -> ``head.``; everything below those prefixes is unchanged).

Forward pass (the authors' configuration)::

    image zero-padded (black, before normalisation) at the bottom / right to 1024 x 1024
      -> ViTDet backbone: 16x16 patch embedding (768 channels), absolute position embedding of the MAE
         ViT-B (14x14 grid + class token) resized bicubically to the 64x64 token grid, 12 blocks with
         decomposed relative positions; blocks 2, 5, 8, 11 attend globally, the others in 14x14 windows
      -> simple feature pyramid (ViTDet): strides 4, 8, 16, 32 from the stride-16 map (transposed convs /
         max pool, then 1x1 + 3x3 convs with channels-first LayerNorm, 256 channels) + a stride-64 level
         (1x1 max pool with stride 2 of the stride-32 level)
      -> head: the five levels resized (bilinear) to stride 4, concatenated, 1x1 conv to 256 channels,
         BatchNorm, dropout 0.5, 1x1 conv to one logit -> bilinear upsampling to the padded size.

The transformer blocks are timm's SAM / ViTDet blocks (:class:`timm.models.vision_transformer_sam.Block`:
same parameters and computation as the official ``Block``; measured against the official code, see
``checkpoints.yaml``). Normalisation: ImageNet mean / std on RGB in ``[0, 1]``, as the authors (albumentations
``Normalize`` after ``PadIfNeeded``).

Input sizes: an image smaller than ``input_size`` (1024) is padded to ``input_size`` x ``input_size`` with
black pixels exactly as the authors' ``PadIfNeeded(value=0)`` + ``Normalize`` do, and the output is cropped
back. **Larger images**: the authors' test pipeline *crops* them to their top-left 1024 x 1024 (albumentations
``Crop``) and predicts nothing for the rest. webiml instead pads such a side to the next multiple of 16 and
runs the whole image (the position embedding is resized bicubically and the global blocks' relative position
tables linearly, as the official code does for sizes other than the table's); that is outside the
trained regime. :class:`webiml.inference.Localizer` (tile 1024 by default, as ``webiml localize``) instead
tiles large images into 1024 x 1024 tiles, each padded as the authors do, which stays within it.

Training loss (the authors' ``iml_vit_model.forward``): BCE on the mask plus ``edge_lambda`` (20) x BCE
weighted by an edge band of the mask (cross-shaped dilation of width 7 of the manipulated and of the authentic
region; both reductions divide by the number of pixels). In webiml: ``IMLTask(bce_weight=1, dice_weight=0,
edge_loss_weight=20, edge_width=7)`` (:func:`webiml.tasks.losses.edge_bce`). Deviation: the authors supervise
the whole padded 1024 x 1024 square (the black padding as authentic, and the means divide by 1024**2);
webiml supervises the image's own pixels only (the means divide by their number), so the ratio of the two
terms on an image is the authors', the padding is not a training target.

Other deviations: none in the forward pass. The official model also holds its BCE losses and prints shapes
in ``forward``; those are not part of a network. ``predict_head_norm`` ``"BN"`` (released weights), ``"IN"``
and ``"LN"`` are supported as ``head_norm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.vision_transformer_sam import Block
from torch import Tensor, nn

from webiml.models.base import IMAGENET_MEAN, IMAGENET_STD, IMLModel, IMLOutput
from webiml.models.registry import register_model

IMLVIT_PRESETS: dict[str, dict[str, Any]] = {
    # The authors' model: ViT-B/16 at 1024 (MAE initialisation), SFPN and head at 256 channels.
    "base": dict(embed_dim=768, depth=12, num_heads=12, global_blocks=(2, 5, 8, 11), window_size=14,
                 input_size=1024, fpn_channels=256, drop_path_rate=0.1),
    # The same code path at toy widths (tests and smoke runs; not a trained configuration).
    "tiny": dict(embed_dim=48, depth=4, num_heads=3, global_blocks=(1, 3), window_size=6,
                 input_size=128, fpn_channels=16, drop_path_rate=0.0),
}
"""Size presets of :class:`IMLViT`; any value can be overridden by a constructor argument."""


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection, ``(B, 3, H, W) -> (B, H/p, W/p, C)`` (channels last, as ViTDet)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class WindowedViT(nn.Module):
    """ViTDet's plain backbone: patch embedding, resized absolute position embedding, SAM / ViTDet blocks.

    ``pos_embed`` keeps the shape of the ViT it was pre-trained as (MAE ViT-B: 14x14 + class token), and
    is resized bicubically (``align_corners=False``) to the token grid on every forward, as the official
    ``get_abs_pos``. Window blocks have ``window_size`` x ``window_size`` relative position tables, global
    blocks tables for the ``input_size / patch_size`` grid.
    """

    def __init__(
        self,
        input_size: int = 1024,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        window_size: int = 14,
        global_blocks: Sequence[int] = (2, 5, 8, 11),
        drop_path_rate: float = 0.1,
        pretrain_img_size: int = 224,
        pretrain_cls_token: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        grid = pretrain_img_size // patch_size
        self.pretrain_cls_token = bool(pretrain_cls_token)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + int(pretrain_cls_token), embed_dim))
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # torch.linspace(0, rate, depth)
        tokens = input_size // patch_size
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                drop_path=dpr[i],
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                act_layer=nn.GELU,
                use_rel_pos=True,
                window_size=0 if i in set(global_blocks) else window_size,
                input_size=(tokens, tokens),
            )
            for i in range(depth)
        )
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def abs_pos(self, h: int, w: int) -> Tensor:
        """The position embedding on an ``h`` x ``w`` token grid, ``(1, h, w, C)``."""
        pos = self.pos_embed[:, 1:] if self.pretrain_cls_token else self.pos_embed
        size = int(math.isqrt(pos.shape[1]))
        if size * size != pos.shape[1]:
            raise ValueError(f"pos_embed holds {pos.shape[1]} positions, not a square grid")
        pos = pos.reshape(1, size, size, -1)
        if size != h or size != w:
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        return pos

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = x + self.abs_pos(x.shape[1], x.shape[2])
        for blk in self.blocks:
            x = blk(x)
        return x.permute(0, 3, 1, 2)


class ConvNorm(nn.Conv2d):
    """Bias-free conv followed by a channels-first LayerNorm held as ``.norm`` (detectron2's ``Conv2d(norm=...)``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int) -> None:
        super().__init__(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = LayerNorm2d(cout, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid with LayerNorm: strides 4, 8, 16, 32 (``simfp_2`` .. ``simfp_5``) + 64.

    The stride-64 level is the official ``LastLevelMaxPool``: ``max_pool2d(kernel 1, stride 2)`` of stride 32.
    """

    def __init__(self, dim: int, out_channels: int) -> None:
        super().__init__()

        def tail(cin: int) -> list[nn.Module]:
            return [ConvNorm(cin, out_channels, 1), ConvNorm(out_channels, out_channels, 3)]

        self.simfp_2 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2, eps=1e-6), nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2), *tail(dim // 4))
        self.simfp_3 = nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), *tail(dim // 2))
        self.simfp_4 = nn.Sequential(*tail(dim))
        self.simfp_5 = nn.Sequential(nn.MaxPool2d(2, 2), *tail(dim))

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.simfp_2(x), self.simfp_3(x), self.simfp_4(x), self.simfp_5(x)]
        feats.append(F.max_pool2d(feats[-1], kernel_size=1, stride=2))
        return feats


class PredictHead(nn.Module):
    """IML-ViT's head: all levels resized to the first, concatenated, 1x1 fuse, norm, dropout, 1x1 predict.

    ``norm``: ``"BN"`` (the released model), ``"IN"`` (InstanceNorm with running stats and affine, as the
    authors' option) or ``"LN"`` (channels-first LayerNorm, eps 1e-6).
    """

    def __init__(self, channels: int, levels: int = 5, norm: str = "BN", dropout: float = 0.5) -> None:
        super().__init__()
        self.linear_fuse = nn.Conv2d(channels * levels, channels, 1)
        if norm == "BN":
            self.norm: nn.Module = nn.BatchNorm2d(channels)
        elif norm == "IN":
            self.norm = nn.InstanceNorm2d(channels, affine=True, track_running_stats=True)
        elif norm == "LN":
            self.norm = LayerNorm2d(channels, eps=1e-6)
        else:
            raise ValueError(f"head_norm must be 'BN', 'IN' or 'LN', got {norm!r}")
        self.dropout = nn.Dropout(dropout)
        self.linear_predict = nn.Conv2d(channels, 1, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        x = torch.cat([f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                       for f in feats], dim=1)
        return self.linear_predict(self.dropout(self.norm(self.linear_fuse(x))))


class IMLViT(IMLModel):
    """IML-ViT (see the module docstring): windowed ViT + simple feature pyramid + MLP head, one mask logit.

    Args:
        size: a key of :data:`IMLVIT_PRESETS` (``"base"`` = the authors' model, ``"tiny"`` for tests).
        embed_dim, depth, num_heads, global_blocks, window_size: the ViT (``None``: from the preset).
        input_size: the square images are padded to (1024; must be a multiple of ``patch_size``).
        fpn_channels: width of the pyramid and the head (256; the official head has no per-level
            projection, so the two widths are one).
        drop_path_rate: stochastic depth of the last block (0.1).
        head_norm: ``"BN"``, ``"IN"`` or ``"LN"`` (the authors' ``predict_head_norm``).
        patch_size, mlp_ratio: ViT patch size (16) and MLP ratio (4).
        pretrain_img_size: size the position embedding was pre-trained at (224: a 14x14 grid + class token).
        backbone_weights: MAE / timm ViT weights for the backbone (the authors start from MAE ViT-B):
            a local ``.pth`` (``{"model": ...}`` or a state dict) or ``.safetensors`` file with timm ViT keys,
            or a timm model name such as ``"vit_base_patch16_224.mae"`` (timm's download / cache).
        mean, std: input normalisation.
    """

    size_divisor = 16

    def __init__(
        self,
        size: str = "base",
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        global_blocks: Sequence[int] | None = None,
        window_size: int | None = None,
        input_size: int | None = None,
        fpn_channels: int | None = None,
        drop_path_rate: float | None = None,
        head_norm: str = "BN",
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        pretrain_img_size: int = 224,
        backbone_weights: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        if size not in IMLVIT_PRESETS:
            raise ValueError(f"unknown IML-ViT size {size!r}; choose one of {sorted(IMLVIT_PRESETS)}")
        given = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, global_blocks=global_blocks,
                     window_size=window_size, input_size=input_size, fpn_channels=fpn_channels,
                     drop_path_rate=drop_path_rate)
        cfg = {**IMLVIT_PRESETS[size], **{k: v for k, v in given.items() if v is not None}}
        if cfg["input_size"] % patch_size:
            raise ValueError(f"input_size {cfg['input_size']} must be a multiple of patch_size {patch_size}")
        if cfg["embed_dim"] % 4:
            raise ValueError(f"embed_dim {cfg['embed_dim']} must be divisible by 4 (the pyramid's stride-4 level)")
        self.size, self.config_resolved = size, cfg
        self.input_size, self.size_divisor = int(cfg["input_size"]), int(patch_size)
        self.backbone = WindowedViT(cfg["input_size"], patch_size, cfg["embed_dim"], cfg["depth"], cfg["num_heads"], mlp_ratio,
                                    cfg["window_size"], cfg["global_blocks"], cfg["drop_path_rate"], pretrain_img_size)
        self.neck = SimpleFeaturePyramid(cfg["embed_dim"], cfg["fpn_channels"])
        self.head = PredictHead(cfg["fpn_channels"], norm=head_norm)
        self.apply(_init_weights)
        if backbone_weights:
            self.load_backbone_weights(backbone_weights)

    @property
    def encoder(self) -> nn.Module:
        """The ViT (``backbone`` in the state dict)."""
        return self.backbone

    def load_backbone_weights(self, weights: str) -> None:
        """Load a pre-trained ViT (MAE / timm keys) into the backbone, as the authors' ``strict=False`` load.

        ``patch_embed``, ``pos_embed`` and every block's norms, ``qkv``, ``proj`` and MLP must be present and of
        the right shape; the relative position tables are not part of a plain ViT and stay zero.
        """
        if Path(weights).is_file():
            if weights.endswith(".safetensors"):
                from safetensors.torch import load_file

                sd = load_file(weights)
            else:
                sd = torch.load(weights, map_location="cpu", weights_only=True)
                sd = sd.get("model", sd.get("state_dict", sd))
        else:
            import timm

            sd = timm.create_model(weights, pretrained=True, num_classes=0).state_dict()
        own = {k: v for k, v in self.backbone.state_dict().items() if ".rel_pos_" not in k}
        missing = sorted(k for k in own if k not in sd)
        if missing:
            raise ValueError(f"backbone weights {weights!r} lack {len(missing)} tensors, e.g. {missing[:3]}")
        bad = [k for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"backbone weights {weights!r} do not fit: {bad[0]} {tuple(sd[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
        self.backbone.load_state_dict({k: sd[k] for k in own}, strict=False)
        if isinstance(getattr(self, "_hub_mixin_config", None), dict):
            self._hub_mixin_config["backbone_weights"] = None  # a saved model carries its weights

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The size an ``h`` x ``w`` image is padded to: ``input_size`` per side, or the next multiple of the patch size above it."""
        d = self.size_divisor
        return max(self.input_size, -(-h // d) * d), max(self.input_size, -(-w // d) * d)

    def forward(self, x: Tensor) -> IMLOutput:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h, w)
        if (ph, pw) != (h, w):
            # Black pixels (0 before normalisation), bottom / right: the authors' PadIfNeeded(value=0) + Normalize.
            black = (-self.input_mean / self.input_std).to(x.dtype)
            canvas = black.expand(x.shape[0], 3, ph, pw).clone()
            canvas[..., :h, :w] = x
            x = canvas
        out = self.forward_padded(x)
        out.mask_logits = out.mask_logits[..., :h, :w]
        return out

    def forward_padded(self, x: Tensor) -> IMLOutput:
        logits = self.head(self.neck(self.backbone(x)))
        return IMLOutput(mask_logits=F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False))


def _init_weights(m: nn.Module) -> None:
    """The authors' initialisation: xavier-uniform linear layers with zero bias, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@register_model
def iml_vit_base(**overrides: Any) -> IMLViT:
    """IML-ViT as the authors trained it: ViT-B/16 at 1024 x 1024."""
    return IMLViT(size="base", **overrides)


@register_model
def iml_vit_tiny(**overrides: Any) -> IMLViT:
    """IML-ViT's code path at toy widths (tests and smoke runs; not a trained configuration)."""
    return IMLViT(size="tiny", **overrides)


__all__ = ["IMLVIT_PRESETS", "IMLViT", "PredictHead", "SimpleFeaturePyramid", "WindowedViT", "iml_vit_base", "iml_vit_tiny"]
