"""APSC-Net (Qu et al., "Towards Modern Image Manipulation Localization: A Large-Scale Dataset and Novel
Methods", CVPR 2024): ConvNeXt + SE-gated UPer decoder + iterative self-refinement.

The architecture follows the authors' released code (``qcf-568/MIML``, ``models for IML``: config
``apscnet.py``, decode head ``TestRFB1HA1CLab``); this is webiml's own implementation of it. What follows
the paper, the authors' code, and webiml's own choices is listed in :data:`MODEL_CARD_NOTES` (also the
Hub model card).

Forward pass::

    ConvNeXt (4 levels, strides 4..32, each followed by a LayerNorm ``norm{i}``)
      -> UPer decoder: 1x1 laterals on levels 0..2, PPM (scales 1,2,3,6) + 3x3 bottleneck on level 3;
         top-down fusion where each level is a weighted sum of itself and all coarser levels, with
         per-image weights from squeeze-excitation gates (SE1, SE2, SE3) on the pooled levels;
         3x3 convs on levels 0..2 -> first prediction from level 0 (stride 4)
      -> all 4 levels resized to stride 8 and concatenated (4C channels) = the fused features F
      -> R rounds of self-refinement (R = 3):
           p   = P(manipulated) of the previous prediction, downsampled to stride 8
           F   = F * max(minmax(p (*) K(p)), p)      K: a 31x31 kernel predicted per image (``ha``)
           y   = DeepLabV3+ head (``MSDEC``: separable ASPP 1/12/24/36 on F, low-level branch from
                 level 0 at stride 4) -> next prediction (stride 4) and ASPP features A
           F   = SCSE-gated 1x1 fusion of [F, A] back to 4C channels (``CE``; not after the last round)
      -> image head (``cls_head``) on [A, F split in four, P(y)] (detached), max-pooled to 2 logits.

The model runs unpadded at any input size of at least 32 pixels a side (``size_divisor = 1``), as the
authors' model does in their inference scripts; smaller inputs are padded up to 32.

Outputs follow webiml's contract (:mod:`webiml.models.base`): the authors predict two-class logits
``(z0, z1)``; softmax cross-entropy on them equals binary cross-entropy on ``z1 - z0``, so the two-channel
classifiers are kept (checkpoint compatibility) and ``z1 - z0`` is returned (the authors' image score
``softmax(cls)[1]`` is ``sigmoid(image_logits)``). The main mask is the last round's prediction; the first
prediction and the predictions of rounds 1..R-1 are the ``R`` auxiliary outputs (training mode only).
The authors supervise all of them with OHEM cross-entropy (threshold 0.7, 100k kept pixels) on logits
upsampled to the label size, every term (main and auxiliary alike) halved in their
``BaseDecodeHead.losses``: in webiml terms ``bce_weight=0.5, aux_weights=1.0, ohem_thresh=0.7,
dice_weight=0`` (:class:`webiml.tasks.losses.IMLLoss`). The authors' training config (``Decode_seg``) has
no image head; their inference head adds ``cls_head``, which reads detached features.

State-dict keys: the decode head keeps the authors' module names (``decode_head.psp_modules``,
``decode_head.SE1``, ``decode_head.MSDEC``, ``decode_head.ha.kg``, ``decode_head.CE``, ...). The backbone
is timm's ConvNeXt (``backbone.stem``, ``backbone.stages.{i}.blocks.{j}``...), whose keys map one to one
onto the official ConvNeXt keys (``backbone.downsample_layers``, ``backbone.stages.{i}.{j}.dwconv``...);
:mod:`webiml.convert` performs that mapping. Normalisation is ImageNet mean/std on RGB in ``[0, 1]``
(the authors' ``img_norm_cfg`` on 0..255). :meth:`APSCNet.layer_decay_ids` gives the authors' stage-wise
layer-decay ids (mmseg's ``get_stage_id_for_convnext``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from webiml.models.base import IMAGENET_MEAN, IMAGENET_STD, IMLModel, IMLOutput
from webiml.models.layers import (
    PPM,
    ChannelSEFusion,
    ConvBNReLU,
    DynamicKernelAttention,
    SepASPPHead,
    resize,
    se_gate,
)
from webiml.models.registry import register_model

MODEL_CARD_NOTES = """\
## APSC-Net (webiml implementation)

Paper: Qu et al., "Towards Modern Image Manipulation Localization: A Large-Scale Dataset and Novel
Methods", CVPR 2024. Official code: github.com/qcf-568/MIML ("models for IML"), CC-BY-NC-4.0.

**Follows the authors' code:** the architecture and module names of the released model (config
`apscnet.py`, decode head `TestRFB1HA1CLab`): ConvNeXt-B with output LayerNorms, SE-gated UPer decoder,
three rounds of self-refinement with a per-image 31x31 dynamic kernel, DeepLabV3+ head, image head on
detached features; unpadded inference at the input size; the released weights convert one to one
(`webiml convert apsc-net`). Training (`configs/miml/apscnet_miml_recipe.yaml`): OHEM cross-entropy
(0.7, 100k pixels) on the main and every auxiliary output, each upsampled to the label size and weighted
equally (0.5 each); AdamW 1e-4, weight decay 0.05 (none on biases and norms), stage-wise layer decay 0.9
with mmseg's ConvNeXt ids; poly schedule after a 1500-step warmup; absolute resize of each side to
512-768, 512 crops, rot90, JPEG 50-100 (p 0.9), RGB shift (p 0.3), none of these on the Object Jitter set.
Test protocol (`configs/protocols/miml_official.yaml`): the inference scripts' area-based resizing,
the adaptive threshold clamp(1 - image score, 0.3, 0.7) (0.5 on IMD2020) and per-image IoU / precision /
recall / F1 averaged over manipulated images.

**webiml's own choices:** timm's ConvNeXt modules for the backbone (same weights, renamed keys);
single-logit outputs (`z1 - z0` of the authors' two classes); the image head trained with BCE at weight
0.5 in the recipe (the authors' training config has no image head; its inputs are detached, so the mask
branch trains exactly as theirs); inputs smaller than 32 pixels a side padded up to 32.
"""

APSC_PRESETS: dict[str, dict[str, Any]] = {
    # The authors' configuration (apscnet.py): ConvNeXt-B, 512-channel decoder.
    "base": dict(
        depths=(3, 3, 27, 3),
        dims=(128, 256, 512, 1024),
        drop_path_rate=0.4,
        channels=512,
        low_proj=48,
        attn_widths=(32, 64, 128, 256, 512),
    ),
    # Same code path at toy widths, for tests and smoke runs (not a trained configuration).
    "tiny": dict(
        depths=(1, 1, 1, 1),
        dims=(16, 32, 64, 128),
        drop_path_rate=0.0,
        channels=32,
        low_proj=8,
        attn_widths=(4, 8, 8, 16, 16),
    ),
}
"""Size presets of :class:`APSCNet`; any preset value can be overridden by a constructor argument."""


class ConvNeXtBackbone(nn.Module):
    """timm's ConvNeXt stem and stages plus one channels-first LayerNorm per output level (``norm{i}``).

    ``layer_scale_init_value=1.0`` and the linear drop-path schedule follow the authors' config.
    ``weights``: ``None``, a timm pretrained name such as ``"convnext_base.fb_in22k"`` (uses timm's
    download / Hugging Face cache), or a local ``.safetensors`` / ``.pth`` file with timm ConvNeXt keys.
    The output norms are not part of ImageNet checkpoints and keep their identity initialisation.
    """

    def __init__(
        self,
        depths: Sequence[int],
        dims: Sequence[int],
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1.0,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt needs 4 stages, got depths={list(depths)} dims={list(dims)}")
        net = timm.models.convnext.ConvNeXt(
            depths=tuple(int(d) for d in depths),
            dims=tuple(int(d) for d in dims),
            drop_path_rate=drop_path_rate,
            ls_init_value=layer_scale_init_value,
            num_classes=0,
        )
        self.stem = net.stem
        self.stages = net.stages
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", LayerNorm2d(int(d), eps=1e-6))
        self.dims = [int(d) for d in dims]
        if weights:
            self.load_timm_weights(weights)

    def load_timm_weights(self, weights: str) -> None:
        """Load ImageNet weights of a timm ConvNeXt into the stem and stages (strictly for those)."""
        if Path(weights).is_file():
            if weights.endswith(".safetensors"):
                from safetensors.torch import load_file

                sd = load_file(weights)
            else:
                sd = torch.load(weights, map_location="cpu", weights_only=True)
                sd = sd.get("state_dict", sd.get("model", sd))
        else:
            sd = timm.create_model(weights, pretrained=True, num_classes=0).state_dict()
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("norm")}
        picked = {k: sd[k] for k in own if k in sd}
        missing = sorted(set(own) - set(picked))
        if missing:
            raise ValueError(f"backbone weights {weights!r} lack {len(missing)} tensors, e.g. {missing[:3]}")
        bad = [k for k in own if picked[k].shape != own[k].shape]
        if bad:
            raise ValueError(f"backbone weights {weights!r} do not fit this ConvNeXt: {bad[0]} {tuple(picked[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
        self.load_state_dict(picked, strict=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs.append(getattr(self, f"norm{i}")(x))
        return outs


class APSCHead(nn.Module):
    """APSC-Net's decoder (the authors' ``TestRFB1HA1CLab`` head), at width ``channels`` (C).

    Module names are the authors'; widths are expressed in C (the authors' C = 512 gives their
    hard-coded 1024/1536/2048/2560/3072).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dilations: Sequence[int] = (1, 12, 24, 36),
        low_proj: int = 48,
        attn_widths: Sequence[int] = (32, 64, 128, 256, 512),
        attn_kernel: int = 31,
        refine_steps: int = 3,
        dropout: float = 0.1,
        image_head: bool = True,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"APSCHead expects 4 feature levels, got {len(in_channels)}")
        if refine_steps < 1:
            raise ValueError(f"refine_steps must be >= 1, got {refine_steps}")
        c = int(channels)
        self.channels, self.refine_steps, self.align_corners = c, int(refine_steps), align_corners
        # UPer: PPM on the deepest level, laterals + 3x3 convs on the others.
        self.psp_modules = PPM(in_channels[-1], c, pool_scales, align_corners)
        self.bottleneck = ConvBNReLU(in_channels[-1] + len(pool_scales) * c, c, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(ch, c, 1) for ch in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(c, c, 3, padding=1) for _ in in_channels[:-1])
        # SE gates of the top-down fusion: SE{k} weighs level 3-k and the k coarser levels.
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.SE1 = se_gate(2 * c, 2)
        self.SE2 = se_gate(3 * c, 3)
        self.SE3 = se_gate(4 * c, 4)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(c, 2, 1)
        # Self-refinement.
        self.convert = nn.Conv2d(c, c // 2, 1)
        self.MSDEC = SepASPPHead(4 * c, c, c // 2, low_proj, dilations, num_classes=2, dropout=dropout, align_corners=align_corners)
        self.ha = DynamicKernelAttention(attn_widths, kernel=attn_kernel, dropout=dropout)
        self.CE = ChannelSEFusion(5 * c, 4 * c)
        # Image-level head on [A, F (4 chunks), P(mask)] interleaved channel-wise (6C channels).
        self.cls_head = (
            nn.Sequential(
                ConvBNReLU(6 * c, c, 1),
                nn.MaxPool2d(2, 2),
                ConvBNReLU(c, c // 2, 3, padding=1),
                nn.MaxPool2d(2, 2),
                ConvBNReLU(c // 2, c // 2, 3, padding=1),
                nn.AdaptiveMaxPool2d(1),
                nn.Dropout(p=0.2),
                nn.Conv2d(c // 2, 2, 1),
            )
            if image_head
            else None
        )

    def _up(self, x: Tensor, ref: Tensor) -> Tensor:
        return resize(x, ref.shape[-2:], self.align_corners)

    def uper(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """SE-gated UPer decoder: the four pyramid levels at width C (strides 4, 8, 16, 32)."""
        lat = [conv(f) for conv, f in zip(self.lateral_convs, feats[:-1], strict=True)]
        top = feats[-1]
        lat.append(self.bottleneck(torch.cat([top, *self.psp_modules(top)], dim=1)))
        # Top-down: level i becomes a gated sum of itself and every (already fused) coarser level.
        for i, gate in ((2, self.SE1), (1, self.SE2), (0, self.SE3)):
            srcs = lat[i:]
            w = gate(torch.cat([self.avg(s) for s in srcs], dim=1))
            lat[i] = sum(w[:, k : k + 1] * (s if k == 0 else self._up(s, lat[i])) for k, s in enumerate(srcs))
        outs = [conv(x) for conv, x in zip(self.fpn_convs, lat[:-1], strict=True)]
        outs.append(lat[-1])
        return outs

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, list[Tensor], Tensor | None]:
        """Return ``(final 2-class logits, earlier 2-class logits, image 2-class logits or None)``."""
        levels = self.uper(feats)
        preds = [self.conv_seg(self.dropout(levels[0]))]
        low = self.convert(levels[0])
        fused = torch.cat([self._up(x, levels[1]) for x in levels], dim=1)
        for step in range(self.refine_steps):
            prob = F.interpolate(preds[-1].softmax(dim=1)[:, 1:2], scale_factor=0.5, mode="bilinear", align_corners=False)
            fused = fused * self.ha(prob)
            logits, aspp = self.MSDEC(low, fused)
            if step < self.refine_steps - 1:
                preds.append(logits)
                fused = self.CE(torch.cat([fused, aspp], dim=1))
        image = None
        if self.cls_head is not None:
            prob = F.interpolate(logits.softmax(dim=1)[:, 1:2], scale_factor=0.5, mode="bilinear", align_corners=True)
            parts = [aspp, *fused.chunk(4, dim=1), prob.expand_as(aspp)]
            b, c, h, w = aspp.shape
            image = self.cls_head(torch.stack(parts, dim=2).reshape(b, 6 * c, h, w).detach()).flatten(1)
        return logits, preds, image


class APSCNet(IMLModel):
    """APSC-Net: ConvNeXt backbone + :class:`APSCHead` (see the module docstring).

    Runs unpadded (``size_divisor = 1``) like the authors' model; inputs under 32 pixels a side are
    padded up to 32 (the deepest level needs one pixel).

    Args:
        size: a key of :data:`APSC_PRESETS` (``"base"`` = the authors' model, ``"tiny"`` for tests).
        depths, dims, drop_path_rate: ConvNeXt configuration (``None``: from the preset).
        channels: decoder width C (``None``: from the preset; the authors use 512).
        low_proj: width of the DeepLabV3+ low-level projection (48).
        attn_widths: widths of the dynamic-kernel generator's convolutions.
        attn_kernel: size of the per-image dynamic kernel (31).
        pool_scales: PPM scales (1, 2, 3, 6). dilations: ASPP dilations (1, 12, 24, 36).
        refine_steps: self-refinement rounds (3); also the number of auxiliary outputs.
        dropout: dropout before the pixel classifiers and in the kernel generator (0.1).
        image_head: build the image-level head (the authors' ``cls_head``).
        backbone_weights: ImageNet initialisation of the backbone, see :class:`ConvNeXtBackbone`.
        mean, std: input normalisation.
    """

    size_divisor = 1
    min_input_size = 32

    def __init__(
        self,
        size: str = "base",
        depths: Sequence[int] | None = None,
        dims: Sequence[int] | None = None,
        drop_path_rate: float | None = None,
        channels: int | None = None,
        low_proj: int | None = None,
        attn_widths: Sequence[int] | None = None,
        attn_kernel: int = 31,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dilations: Sequence[int] = (1, 12, 24, 36),
        refine_steps: int = 3,
        dropout: float = 0.1,
        image_head: bool = True,
        backbone_weights: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        if size not in APSC_PRESETS:
            raise ValueError(f"unknown APSC-Net size {size!r}; choose one of {sorted(APSC_PRESETS)}")
        given = dict(depths=depths, dims=dims, drop_path_rate=drop_path_rate, channels=channels, low_proj=low_proj, attn_widths=attn_widths)
        cfg = {**APSC_PRESETS[size], **{k: v for k, v in given.items() if v is not None}}
        self.size = size
        self.config_resolved = cfg
        self.backbone = ConvNeXtBackbone(cfg["depths"], cfg["dims"], cfg["drop_path_rate"], 1.0, backbone_weights)
        if isinstance(getattr(self, "_hub_mixin_config", None), dict):
            # Initial weights only matter at construction: a saved model carries its own weights, so
            # config.json must not make from_pretrained fetch ImageNet weights again.
            self._hub_mixin_config["backbone_weights"] = None
        self.decode_head = APSCHead(
            in_channels=cfg["dims"],
            channels=cfg["channels"],
            pool_scales=pool_scales,
            dilations=dilations,
            low_proj=cfg["low_proj"],
            attn_widths=cfg["attn_widths"],
            attn_kernel=attn_kernel,
            refine_steps=refine_steps,
            dropout=dropout,
            image_head=image_head,
        )

    @property
    def encoder(self) -> nn.Module:
        """The backbone (named ``backbone`` in the state dict, as in the authors' checkpoints)."""
        return self.backbone

    def layer_decay_ids(self, num_layers: int = 12) -> tuple[dict[str, int], int]:
        """The authors' stage-wise layer-decay ids (``LearningRateDecayOptimizerConstructor`` with
        ``decay_type='stage_wise'``, ``num_layers=12``: mmseg's ``get_stage_id_for_convnext``) per parameter
        name, and the number of ids ``L = num_layers + 2``; the lr scale of id ``i`` is ``decay ** (L - 1 - i)``.

        The stem and the three downsampling layers (the official ``backbone.downsample_layers``) have id 0
        (0.9 ** 13 at decay 0.9), the blocks of stage ``i`` id ``i + 1`` (0.9 ** (12 - i)), everything else,
        the backbone's output norms ``norm0..3`` and the whole decode head included, id ``num_layers + 1``
        (scale 1).
        """
        top = num_layers + 1
        ids = {}
        for name, _ in self.named_parameters():
            parts = name.split(".")
            if name.startswith("backbone.stem.") or (name.startswith("backbone.stages.") and parts[3] == "downsample"):
                ids[name] = 0
            elif name.startswith("backbone.stages."):
                ids[name] = int(parts[2]) + 1
            else:
                ids[name] = top
        return ids, num_layers + 2

    def forward_padded(self, x: Tensor) -> IMLOutput:
        logits, preds, image = self.decode_head(self.backbone(x))
        mask = logits[:, 1:2] - logits[:, 0:1]
        aux = [p[:, 1:2] - p[:, 0:1] for p in preds] if self.training else []
        img = None if image is None else image[:, 1] - image[:, 0]
        return IMLOutput(mask_logits=mask, image_logits=img, aux_mask_logits=aux)


def apsc_net(size: str = "base", **overrides: Any) -> APSCNet:
    """Build an :class:`APSCNet` from a size preset with keyword overrides."""
    return APSCNet(size=size, **overrides)


@register_model
def apsc_net_base(**overrides: Any) -> APSCNet:
    """APSC-Net as the authors trained it: ConvNeXt-B backbone, 512-channel decoder."""
    return APSCNet(size="base", **overrides)


@register_model
def apsc_net_tiny(**overrides: Any) -> APSCNet:
    """APSC-Net's code path at toy widths (tests and smoke runs; not a trained configuration)."""
    return APSCNet(size="tiny", **overrides)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["APSC_PRESETS", "MODEL_CARD_NOTES", "APSCHead", "APSCNet", "ConvNeXtBackbone", "apsc_net", "apsc_net_base", "apsc_net_tiny", "count_parameters"]
