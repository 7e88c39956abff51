"""Building blocks shared by webiml's decoders: conv-BN-ReLU units, PPM, ASPP, gates, dynamic kernels.

Several blocks keep the *attribute names* of the OpenMMLab / MIML implementations they correspond to
(``conv``/``bn`` in a conv unit, ``depthwise_conv``/``pointwise_conv``, ``image_pool``/``aspp_modules``/
``c1_bottleneck``/``sep_bottleneck``/``conv_seg`` in the DeepLabV3+ head, ``kg`` in the dynamic-kernel
attention, ``cSE``/``c11`` in the channel gate), so that state dicts of the authors' released
checkpoints load without renaming. The code is webiml's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize(x: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """Bilinear resize to ``size`` (a no-op when the size already matches)."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def min_max_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Rescale every map of a ``(B, C, H, W)`` tensor to ``[0, 1]`` over its spatial dimensions."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo + eps)


class ConvBNReLU(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU; attribute names ``conv`` / ``bn`` as mmcv's ``ConvModule``.

    Use :func:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` (Lightning's ``sync_batchnorm=True``) for
    the SyncBN of the original recipes; the state-dict keys are the same.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvBNReLU(nn.Module):
    """Depthwise ConvBNReLU then pointwise ConvBNReLU (mmcv's ``DepthwiseSeparableConvModule`` layout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise_conv = ConvBNReLU(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels)
        self.pointwise_conv = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class PPM(nn.ModuleList):
    """Pyramid pooling (PSPNet): one adaptive-average-pool + 1x1 ConvBNReLU branch per scale.

    ``forward`` returns the branch outputs upsampled to the input size (the caller concatenates them
    with the input and applies its own bottleneck).
    """

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6), align_corners: bool = False) -> None:
        super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(int(s)), ConvBNReLU(in_channels, channels, 1)) for s in pool_scales)
        self.align_corners = align_corners

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        return [resize(branch(x), x.shape[-2:], self.align_corners) for branch in self]


class SepASPPHead(nn.Module):
    """DeepLabV3+ head: depthwise-separable ASPP on a high-level map + a low-level (stride-4) branch.

    ``forward(low, high)`` returns ``(logits, aspp)``: the ``num_classes`` logits at the low-level
    resolution, and the ASPP bottleneck features at the high-level resolution (which APSC-Net feeds
    back into its next refinement round). Dilation 1 is a plain 1x1 branch; other dilations are
    depthwise-separable 3x3 branches; an image-pooling branch adds global context.

    Args:
        in_channels: channels of the high-level input.
        channels: width of the ASPP branches and of the decoder.
        low_channels: channels of the low-level input; ``low_proj``: its projection width (48 in DeepLabV3+).
        dilations: ASPP dilation rates.
        num_classes: output channels of the final 1x1 classifier (``conv_seg``).
        dropout: Dropout2d before ``conv_seg``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        low_channels: int,
        low_proj: int = 48,
        dilations: Sequence[int] = (1, 12, 24, 36),
        num_classes: int = 2,
        dropout: float = 0.1,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, channels, 1))
        self.aspp_modules = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1)
            if d == 1
            else DepthwiseSeparableConvBNReLU(in_channels, channels, 3, padding=int(d), dilation=int(d))
            for d in dilations
        )
        self.bottleneck = ConvBNReLU((len(dilations) + 1) * channels, channels, 3, padding=1)
        self.c1_bottleneck = ConvBNReLU(low_channels, low_proj, 1)
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvBNReLU(channels + low_proj, channels, 3, padding=1),
            DepthwiseSeparableConvBNReLU(channels, channels, 3, padding=1),
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        outs = [resize(self.image_pool(high), high.shape[-2:], self.align_corners)]
        outs.extend(branch(high) for branch in self.aspp_modules)
        aspp = self.bottleneck(torch.cat(outs, dim=1))
        low = self.c1_bottleneck(low)
        x = torch.cat([resize(aspp, low.shape[-2:], self.align_corners), low], dim=1)
        x = self.sep_bottleneck(x)
        return self.conv_seg(self.dropout(x)), aspp


def se_gate(in_channels: int, out_channels: int, reduction: int = 8) -> nn.Sequential:
    """Squeeze-excitation MLP on a pooled descriptor: 1x1 conv -> ReLU -> 1x1 conv -> sigmoid."""
    hidden = max(in_channels // reduction, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, out_channels, 1),
        nn.Sigmoid(),
    )


class ChannelSEFusion(nn.Module):
    """Channel squeeze-excitation re-weighting followed by a 1x1 ConvBNReLU (APSC-Net's ``SCSEModule``).

    The authors call it SCSE; their module only has the channel (cSE) branch, and so does this one.
    """

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(in_channels // reduction, 1)
        self.cSE = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, in_channels, 1),
            nn.Sigmoid(),
        )
        self.c11 = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c11(x * self.cSE(x))


class DynamicKernelAttention(nn.Module):
    """Spread a probability map with a kernel predicted from the map itself (APSC-Net's ``HeadAttn``).

    The map ``(B, 1, H, W)`` is resized to ``size x size`` and encoded by stride-2 ConvBNReLU layers into
    a vector from which a linear layer predicts one ``k x k`` kernel per image. The map is convolved with
    its own kernel, min-max normalised per image, and the element-wise maximum with the input map is
    returned: an attention map that keeps every confident region and extends it where the kernel says.

    The kernel generator ``kg`` is laid out as in the authors' code: ``kg.0`` resize, ``kg.1..n``
    convolutions, then pool, flatten, dropout, linear.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128, 256, 512),
        kernel_sizes: Sequence[int] = (5, 5, 5, 5, 3),
        kernel: int = 31,
        size: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"the dynamic kernel size must be odd, got {kernel}")
        if len(widths) != len(kernel_sizes):
            raise ValueError("widths and kernel_sizes must have the same length")
        self.kernel = kernel
        layers: list[nn.Module] = [nn.Upsample(size=(size, size), mode="bilinear", align_corners=True)]
        in_ch = 1
        for w, k in zip(widths, kernel_sizes, strict=True):
            layers.append(ConvBNReLU(in_ch, int(w), int(k), stride=2, padding=int(k) // 2))
            in_ch = int(w)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p=dropout), nn.Linear(in_ch, kernel * kernel)]
        self.kg = nn.Sequential(*layers)

    def forward(self, attn: Tensor) -> Tensor:
        b, _, h, w = attn.shape
        kernels = self.kg(attn).reshape(b, 1, self.kernel, self.kernel)
        # One kernel per image: a grouped convolution over the batch folded into channels.
        spread = F.conv2d(attn.reshape(1, b, h, w), kernels, padding=self.kernel // 2, groups=b).reshape(b, 1, h, w)
        return torch.maximum(min_max_norm(spread), attn)


class MultiScaleBlock(nn.Module):
    """Residual multi-receptive-field block: parallel depthwise branches, pointwise fusion.

    Branches (all depthwise, so cheap at any width): 3x3 convolutions with each of ``dilations`` and a
    ``large_kernel`` x ``large_kernel`` receptive field built from a 1xk and a kx1 strip convolution.
    Their outputs are concatenated, fused by a 1x1 ConvBNReLU (no activation) and added to the input.
    """

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 4), large_kernel: int = 11) -> None:
        super().__init__()
        c = channels
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=int(d), dilation=int(d), groups=c, bias=False), nn.BatchNorm2d(c))
            for d in dilations
        )
        k = int(large_kernel)
        self.large = nn.Sequential(
            nn.Conv2d(c, c, (1, k), padding=(0, k // 2), groups=c, bias=False),
            nn.Conv2d(c, c, (k, 1), padding=(k // 2, 0), groups=c, bias=False),
            nn.BatchNorm2d(c),
        )
        self.fuse = ConvBNReLU(c * (len(self.branches) + 1), c, 1, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.large(x))
        return self.act(x + self.fuse(F.gelu(torch.cat(outs, dim=1))))


def resize_probabilities(logits: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """Logits of the bilinear resize of ``sigmoid(logits)``, for models whose authors resize probability maps
    rather than logits (the two differ wherever the map is not locally constant).

    The probabilities are resized in the input's dtype, exactly as the authors' code does, and turned back into
    logits in float64 (float32 on Apple MPS, which has no float64); probabilities that round to 0 or 1 give
    logits of about -87 / +17 (float32's smallest normal number / largest number below 1), the ties the
    authors' probability map has there too.
    """
    size = tuple(int(s) for s in size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    p = F.interpolate(torch.sigmoid(logits), size=size, mode="bilinear", align_corners=align_corners)
    wide = torch.float32 if logits.device.type == "mps" else torch.float64
    tiny = torch.finfo(logits.dtype).tiny
    p = p.to(wide).clamp(tiny, 1.0 - torch.finfo(logits.dtype).eps / 2)
    return (torch.log(p) - torch.log1p(-p)).to(logits.dtype)
