"""PSCC-Net: HRNet features, progressive spatio-channel correlation masks at four scales, a detection head.

- X. Liu, Y. Liu, J. Chen, X. Liu, "PSCC-Net: Progressive Spatio-Channel Correlation Network for Image
  Manipulation Detection and Localization", IEEE TCSVT 2022.
- Official code and weights: https://github.com/proteus1991/PSCC-Net (``models/seg_hrnet.py``,
  ``models/seg_hrnet_config.py``, ``models/NLCDetection.py``, ``models/detection_head.py``, ``test.py``,
  ``train.py``; weights ``checkpoint/{HRNet,NLCDetection,DetectionHead}_checkpoint/*.pth``); this is webiml's
  own implementation of that architecture.
- The HRNet blocks (residual blocks, transitions, multi-resolution modules) are :mod:`webiml.models.hrnet`'s,
  shared with CAT-Net.

Forward pass::

    RGB in [0, 1] (the authors' ``image / 255``, no mean / std)
      -> HRNet (``encoder``): a stem of two 3x3 convs with *stride 1* (the image's full resolution), layer1
         (2 Bottlenecks, 256 channels), then stages 2, 3, 4 with one HR module each (2 BasicBlocks per
         branch; widths 18, 36, 72, 144; fusion upsamples bilinearly with align_corners=True):
         four feature maps s1..s4 at strides 1, 2, 4, 8
      -> both heads first resize s1..s4 to the crop size and its halves (256, 128, 64, 32; bilinear,
         align_corners=True), whatever the input size
      -> ``localization_head`` (the authors' NLCDetection): on s4 a spatio-channel correlation module
         (SCCM: non-local spatial + channel attention on the features folded by ``r``: 1, 2, 2, 4 from
         coarse to fine) predicts mask4; s3 * up(mask4) -> mask3; s2 * up(mask3) -> mask2; s1 * up(mask2) -> mask1
      -> ``detection_head``: HRNet-style classification head (Bottlenecks, strided convs, 1x1 conv to 128,
         global average pooling, 128 -> 16 -> 2 MLP) -> (z0, z1).

Outputs (webiml contract): ``mask_logits`` = mask1 at the input size, as the authors' ``test.py``, which
resizes the *probability* map bilinearly (align_corners=True) to the image size
(:func:`webiml.models.layers.resize_probabilities` keeps that exactly and returns its logits);
``image_logits = z1 - z0`` (sigmoid of it = the authors' softmax probability of "forged"); in training,
``aux_mask_logits`` = the logits of mask1..mask4 at 256, 128, 64, 32 (what the authors supervise, see
:class:`webiml.tasks.losses.PSCCLoss`).

State-dict keys: the authors' three files, one prefix each: ``encoder.`` (HRNet.pth), ``localization_head.``
(NLCDetection.pth), ``detection_head.`` (DetectionHead.pth), their module names unchanged
(:mod:`webiml.convert.pscc_net`).

Deviations from the official code: none in the network (the masks are returned as logits; the authors
return ``sigmoid`` of them). timm's ``hrnet_w18_small_v2`` is not used: the authors' HRNet has a stride-1
stem, one module per stage (timm's has 3 and 2 in stages 3 and 4) and bilinear (not nearest) upsampling in
its fusion layers. Memory: HRNet runs at the input's full resolution (the authors' ``test.py`` feeds whole
images); webiml's :class:`~webiml.inference.Localizer` tiles images longer than its ``tile`` (1024), each tile
then being resized to the crop grid on its own (a larger ``tile`` gives the authors' whole-image behaviour).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webiml.models.base import IMLModel, IMLOutput
from webiml.models.hrnet import (
    BN_MOMENTUM,
    BasicBlock,
    Bottleneck,
    HighResolutionModule,
    apply_transition,
    bn,
    conv3x3,
    make_transition,
)
from webiml.models.layers import resize_probabilities


def _up(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def bottleneck_layer(inplanes: int, planes: int, blocks: int, expansion: int) -> nn.Sequential:
    """``blocks`` Bottlenecks; the first projects ``inplanes`` to ``planes * expansion`` (1x1 conv + BN)."""
    out = planes * expansion
    down = None if inplanes == out else nn.Sequential(nn.Conv2d(inplanes, out, 1, bias=False), bn(out))
    return nn.Sequential(Bottleneck(inplanes, planes, 1, down, expansion=expansion),
                         *(Bottleneck(out, planes, expansion=expansion) for _ in range(blocks - 1)))


class HRNet(nn.Module):
    """The authors' feature extractor (``seg_hrnet.py`` with ``seg_hrnet_config.py``): stride-1 stem,
    layer1, then 2, 3, 4 branches of widths ``channels``, one module per stage; returns the 4 branches."""

    def __init__(self, channels: Sequence[int] = (18, 36, 72, 144), stem_width: int = 64) -> None:
        super().__init__()
        c = [int(v) for v in channels]
        if len(c) != 4:
            raise ValueError(f"HRNet needs 4 branch widths, got {list(channels)}")
        self.conv1 = conv3x3(3, stem_width)
        self.bn1 = bn(stem_width)
        self.conv2 = conv3x3(stem_width, stem_width)
        self.bn2 = bn(stem_width)
        self.layer1 = bottleneck_layer(stem_width, stem_width, 2, 4)
        prev = [4 * stem_width]
        for stage in (2, 3, 4):
            cur = c[:stage]
            self.add_module(f"transition{stage - 1}", make_transition(prev, cur))
            # the authors' HighResolutionModule: 2 BasicBlocks per branch, SUM fusion (align_corners=True)
            self.add_module(f"stage{stage}", nn.Sequential(
                HighResolutionModule(BasicBlock, [2] * len(cur), cur, cur, align_corners=True)))
            prev = cur

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        ys = [self.layer1(x)]
        for stage in (2, 3, 4):
            ys = getattr(self, f"stage{stage}")(apply_transition(getattr(self, f"transition{stage - 1}"), ys))
        return ys


class SCCM(nn.Module):
    """Spatio-channel correlation module (the authors' ``NonLocalMask``), returning the mask *logits*.

    The input (B, C, H, W) is reshaped (a plain memory-order reshape, as the authors') to (B, C r^2, H/r, W/r);
    spatial and channel non-local attentions are added back through 1x1 convs weighted by ``gamma_s`` /
    ``gamma_c``; ``getmask`` maps the result to one channel. The channel branch's (B, N, C r^2) product is
    *viewed* as (B, C, H, W) without a transpose, exactly as in the official code.
    """

    def __init__(self, channels: int, reduce_scale: int) -> None:
        super().__init__()
        self.r = int(reduce_scale)
        ic = channels * self.r * self.r
        self.ic = ic
        self.g = nn.Conv2d(ic, ic, 1)
        self.theta = nn.Conv2d(ic, ic, 1)
        self.phi = nn.Conv2d(ic, ic, 1)
        self.W_s = nn.Conv2d(channels, channels, 1)
        self.W_c = nn.Conv2d(channels, channels, 1)
        self.gamma_s = nn.Parameter(torch.ones(1))
        self.gamma_c = nn.Parameter(torch.ones(1))
        self.getmask = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x1 = x.reshape(b, self.ic, h // self.r, w // self.r)
        g = self.g(x1).flatten(2).transpose(1, 2)  # (B, N, ic)
        theta = self.theta(x1).flatten(2)  # (B, ic, N)
        phi = self.phi(x1).flatten(2)
        f_s = torch.matmul(theta.transpose(1, 2), phi).softmax(dim=-1)  # (B, N, N)
        f_c = torch.matmul(theta, phi.transpose(1, 2)).softmax(dim=-1)  # (B, ic, ic)
        y_s = torch.matmul(f_s, g).transpose(1, 2).reshape(b, c, h, w)
        y_c = torch.matmul(g, f_c).reshape(b, c, h, w)
        z = x + self.gamma_s * self.W_s(y_s) + self.gamma_c * self.W_c(y_c)
        return self.getmask(z)


class LocalizationHead(nn.Module):
    """The authors' ``NLCDetection``: SCCMs from coarse to fine, each level gated by the upsampled
    probability of the coarser mask; returns the logits of mask1..mask4 (finest first)."""

    REDUCE = (4, 2, 2, 1)

    def __init__(self, channels: Sequence[int] = (18, 36, 72, 144)) -> None:
        super().__init__()
        # Registration order of the official module (getmask4 first) keeps the state dict's key order.
        for i in (4, 3, 2, 1):
            self.add_module(f"getmask{i}", SCCM(int(channels[i - 1]), self.REDUCE[i - 1]))

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        logits: list[Tensor] = []
        gate: Tensor | None = None
        for i in (4, 3, 2, 1):
            s = feats[i - 1]
            if gate is not None:
                s = s * _up(gate, s.shape[-2:])
            logit = getattr(self, f"getmask{i}")(s)
            gate = torch.sigmoid(logit)
            logits.insert(0, logit)
        return logits


class DetectionHead(nn.Module):
    """The authors' ``DetectionHead``: per level a Bottleneck (expansion 2), strided 3x3 convs (with bias)
    from fine to coarse, summed; 1x1 conv to 128, global average pooling, MLP 128 -> 16 -> 2."""

    def __init__(self, channels: Sequence[int] = (18, 36, 72, 144)) -> None:
        super().__init__()
        c = [int(v) for v in channels]
        self.incre_modules = nn.ModuleList(bottleneck_layer(ch, ch, 1, 2) for ch in c)
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * c[i], 2 * c[i + 1], 3, 2, 1), bn(2 * c[i + 1]), nn.ReLU(inplace=True))
            for i in range(len(c) - 1))
        self.final_layer = nn.Sequential(nn.Conv2d(2 * c[-1], 128, 1), bn(128), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Linear(128, 16), nn.ReLU(inplace=True), nn.Linear(16, 2))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        y = self.incre_modules[0](feats[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](feats[i + 1]) + down(y)
        y = self.final_layer(y)
        return self.classifier(y.mean(dim=(-2, -1)))


class PSCCNet(IMLModel):
    """PSCC-Net (TCSVT 2022): the authors' HRNet + NLCDetection + DetectionHead; see the module docstring.

    Args:
        crop_size: side of the grid both heads resize the features to (the authors' 256; a multiple of 8),
            or ``[height, width]``.
        channels: HRNet branch widths (18, 36, 72, 144); smaller values build the same code path cheaply.
        stem_width: width of the stem and of layer1's bottlenecks (64; layer1 outputs 4x).
        mean, std: input normalisation (default: the authors' ``x / 255`` with no mean / std).
    """

    size_divisor = 1

    def __init__(self, crop_size: int | Sequence[int] = 256, channels: Sequence[int] = (18, 36, 72, 144),
                 stem_width: int = 64, mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 std: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__(mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]
        crop = [int(crop_size)] * 2 if isinstance(crop_size, int | float) else [int(v) for v in crop_size]
        if len(crop) != 2 or any(v <= 0 or v % 8 for v in crop):
            raise ValueError(f"crop_size must be a positive multiple of 8 (or [h, w] of such), got {crop_size!r}")
        self.crop_size = crop
        self.encoder = HRNet(channels, stem_width)
        self.localization_head = LocalizationHead(channels)
        self.detection_head = DetectionHead(channels)

    def head_features(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """s1..s4 resized to the crop size and its halves, as both of the authors' heads do."""
        h, w = self.crop_size
        return [_up(f, (h // 2**i, w // 2**i)) for i, f in enumerate(feats)]

    def forward_padded(self, x: Tensor) -> IMLOutput:
        feats = self.head_features(self.encoder(x))
        masks = self.localization_head(feats)
        z = self.detection_head(feats)
        mask = resize_probabilities(masks[0], x.shape[-2:], align_corners=True)
        return IMLOutput(mask_logits=mask, image_logits=z[:, 1] - z[:, 0], aux_mask_logits=masks if self.training else [])


__all__ = ["BN_MOMENTUM", "DetectionHead", "HRNet", "LocalizationHead", "PSCCNet", "SCCM"]
