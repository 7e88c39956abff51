"""MVSS-Net: a ResNet-50 RGB stream with an edge-supervised branch, a BayarConv noise stream, and dual attention.

- X. Chen, C. Dong, J. Ji, J. Cao, X. Li, "Image Manipulation Detection by Multi-View Multi-Scale
  Supervision", ICCV 2021; C. Dong, X. Chen, R. Hu, J. Cao, X. Li, "MVSS-Net: Multi-View Multi-Scale
  Supervised Networks for Image Manipulation Detection", IEEE TPAMI 2022.
- Official code and weights: https://github.com/dong03/MVSS-Net (``models/mvssnet.py``, ``inference.py``,
  ``common/tools.py``); this is webiml's own implementation of that architecture.

Forward pass (``get_mvss(sobel=True, constrain=True, nclass=1)``, the released configuration)::

    BGR image, ImageNet-normalised in BGR order (cv2.imread + albumentations' img_to_tensor)
      -> ResNet-50, layer4 with stride 1 and dilations 1, 2, 4 (output stride 16): c1..c4
      -> edge-supervised branch (ESB): each c_i -> Sobel gate sigmoid(|grad|) * c_i -> ERB (1 channel),
         summed coarse-to-fine through three more ERBs at stride 4 -> edge logits (stride 4)
      -> noise-sensitive branch: grey (0.2989 R + 0.587 G + 0.114 B of the normalised input) -> 5x5
         Bayar constrained conv (3 filters) -> a second ResNet-50 -> its c4
      -> dual attention head (position + channel attention, DANet) on [c4, noise c4] (4096 channels)
      -> 1-channel segmentation logits, bilinearly upsampled (align_corners=True) to the input size.

The image score is the global max of the segmentation probability map (the authors' GMP):
``image_logits`` is the max of the mask logits over the image. :class:`MVSSOutput` adds the edge
logits (stride 4) to webiml's :class:`~webiml.models.base.IMLOutput`; :class:`webiml.tasks.losses.MVSSLoss`
supervises them.

Inputs and outputs (webiml contract): RGB in ``[0, 1]``, normalised by :attr:`MVSSNet.normalize` with the
ImageNet statistics listed in RGB order *as the authors apply them to BGR channels* (mean
``(0.406, 0.456, 0.485)``, std ``(0.225, 0.224, 0.229)`` for R, G, B), then flipped to BGR inside
:meth:`MVSSNet.forward_padded`: the network sees exactly the authors' input tensor.

State-dict keys: the authors' (``erb_db_*``, ``erb_trans_*``, ``sobel_x*``/``sobel_y*``,
``constrain_conv.kernel``, ``head.*``) except the two ResNets, ``model.*`` -> ``encoder.*`` and
``noise_extractor.model.*`` -> ``noise_encoder.*`` (timm's ResNet, whose parameter names under these
prefixes equal torchvision's and the authors'); their unused ImageNet classifiers (``model.fc``,
``noise_extractor.model.fc``) are dropped. :mod:`webiml.convert.mvss_net` does the renaming.

Deviations from the official code (none changes the network's output on the same input tensor):

- **Resizing.** The authors' ``inference.py`` resizes every image to 512 x 512 (``cv2.resize``, bilinear)
  and resizes the uint8 probability map back. With ``input_size=512`` (default) :meth:`MVSSNet.forward`
  does the same on tensors: ``F.interpolate`` (bilinear, half-pixel centres, no antialiasing, as
  ``cv2.INTER_LINEAR``) on the float input, and the probability map (not its uint8 rounding) resized back
  bilinearly (:func:`webiml.models.layers.resize_probabilities`). The image score is the max over the 512 x 512
  map, as the authors'. ``input_size=None`` runs at the native size, padded to a multiple of 16.
- **Bayar constraint.** The authors rescale the 24 free weights of each 5x5 kernel to sum 1 by assigning
  ``kernel.data`` at every forward (no gradient through the rescaling, the centre fixed at -1); webiml does
  the same rescaling in place on ``kernel.data``.
- Large images: with ``input_size`` set the model is not ``tile_safe``, so :class:`~webiml.inference.Localizer`
  resizes the whole image, as the authors do (with ``input_size=None`` it may tile).
- MVSS-Net++ checkpoints (``mvssnetplus.md``) are not supported: their model code is not released.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.resnet import Bottleneck, ResNet
from torch import Tensor, nn

from webiml.models.base import IMAGENET_MEAN, IMAGENET_STD, IMLModel, IMLOutput, WholeImageResize, _crop_fraction
from webiml.models.layers import resize_probabilities

BGR_IMAGENET_MEAN = tuple(reversed(IMAGENET_MEAN))
"""The authors normalise BGR images with the ImageNet mean in RGB order; per R, G, B channel that is this."""
BGR_IMAGENET_STD = tuple(reversed(IMAGENET_STD))
LAYER4_RATES = (1, 2, 4)
"""Dilation of each layer4 block (the authors' ``_make_deeplabv3_layer`` multi-grid rates)."""


@dataclass
class MVSSOutput(IMLOutput):
    """:class:`IMLOutput` plus the edge branch's logits ``(B, 1, H/4, W/4)`` (of the network's input grid)."""

    edge_logits: Tensor | None = None


def dilated_resnet(layers: Sequence[int], channels: Sequence[int]) -> ResNet:
    """timm ResNet (Bottleneck) with output stride 16 and the authors' layer4 rates 1, 2, 4, no classifier."""
    if int(layers[3]) > len(LAYER4_RATES):
        raise ValueError(f"layer4 has {layers[3]} blocks; the authors' rates cover {len(LAYER4_RATES)}")
    net = ResNet(Bottleneck, tuple(int(n) for n in layers), num_classes=0, output_stride=16,
                 channels=tuple(int(c) for c in channels), stem_width=int(channels[0]))
    for block, rate in zip(net.layer4, LAYER4_RATES, strict=False):  # timm's dilations: 1, 2, 2
        block.conv2.dilation = (rate, rate)
        block.conv2.padding = (rate, rate)
    return net


def resnet_features(net: ResNet, x: Tensor) -> list[Tensor]:
    """c1..c4 (strides 4, 8, 16, 16) of :func:`dilated_resnet`."""
    x = net.maxpool(net.act1(net.bn1(net.conv1(x))))
    feats = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
        feats.append(x)
    return feats


def sobel_gate(in_channels: int) -> nn.Sequential:
    """One half of the authors' ``get_sobel``: a 3x3 conv summing a fixed Sobel filter over the channels (a
    non-trainable parameter, kept in the state dict as theirs; set by :class:`MVSSNet`), then BatchNorm."""
    conv = nn.Conv2d(in_channels, 1, 3, padding=1, bias=False)
    conv.weight.requires_grad_(False)
    return nn.Sequential(conv, nn.BatchNorm2d(1))


def _sobel_kernels(in_channels: int) -> tuple[Tensor, Tensor]:
    gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    return gx.expand(1, in_channels, 3, 3).clone(), gx.t().expand(1, in_channels, 3, 3).clone()


class ERB(nn.Module):
    """Edge residual block: 1x1 conv, then ``x + conv3(relu(bn(conv2(x))))``, ReLU unless ``relu=False``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor, relu: bool = True) -> Tensor:
        x = self.conv1(x)
        y = x + self.conv3(F.relu(self.bn(self.conv2(x))))
        return F.relu(y) if relu else y


class BayarConv2d(nn.Module):
    """Bayar & Stamm's constrained convolution as the authors implement it: ``kernel`` (in, out, k*k - 1)
    holds the free weights, rescaled to sum 1 per filter before every use (in place, no gradient through
    the rescaling), the centre tap fixed at -1; the (in, out, k*k) tensor is *reshaped* (not permuted) to
    (out, in, k, k), as in the official code."""

    def __init__(self, in_channels: int = 1, out_channels: int = 3, kernel_size: int = 5, padding: int = 2) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding = kernel_size, padding
        self.kernel = nn.Parameter(torch.rand(in_channels, out_channels, kernel_size**2 - 1))

    def constrained_kernel(self) -> Tensor:
        if torch.is_inference_mode_enabled():
            k = self.kernel / self.kernel.sum(-1, keepdim=True)  # same values, the parameter left as it is
        else:
            # The authors' ``kernel.data = kernel / kernel.sum``: the stored weights are rescaled, untracked.
            self.kernel.data.div_(self.kernel.data.sum(-1, keepdim=True))
            k = self.kernel
        ctr = self.kernel_size**2 // 2
        minus1 = k.new_full((self.in_channels, self.out_channels, 1), -1.0)
        full = torch.cat([k[..., :ctr], minus1, k[..., ctr:]], dim=2)
        return full.reshape(self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.constrained_kernel(), padding=self.padding)


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PositionAttention(nn.Module):
    """DANet position attention (the authors' ``_PositionAttentionModule``): ``x + alpha * attention(x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_b = nn.Conv2d(channels, channels // 8, 1)
        self.conv_c = nn.Conv2d(channels, channels // 8, 1)
        self.conv_d = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.conv_b(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
        k = self.conv_c(x).flatten(2)  # (B, C/8, HW)
        attn = torch.bmm(q, k).softmax(dim=-1)  # (B, HW, HW)
        v = self.conv_d(x).flatten(2)  # (B, C, HW)
        return self.alpha * torch.bmm(v, attn.transpose(1, 2)).view(b, c, h, w) + x


class ChannelAttention(nn.Module):
    """DANet channel attention (the authors' ``_ChannelAttentionModule``): ``x + beta * attention(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        a = x.flatten(2)
        energy = torch.bmm(a, a.transpose(1, 2))
        attn = (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=-1)
        return self.beta * torch.bmm(attn, a).view(b, c, h, w) + x


class DAHead(nn.Module):
    """The authors' ``_DAHead`` with ``aux=False``: two 3x3 conv branches with position / channel
    attention, summed, dropout 0.1, 1x1 classifier (``out.1``)."""

    def __init__(self, in_channels: int, num_classes: int = 1) -> None:
        super().__init__()
        inter = in_channels // 4
        self.conv_p1 = conv_bn_relu(in_channels, inter)
        self.conv_c1 = conv_bn_relu(in_channels, inter)
        self.pam = PositionAttention(inter)
        self.cam = ChannelAttention()
        self.conv_p2 = conv_bn_relu(inter, inter)
        self.conv_c2 = conv_bn_relu(inter, inter)
        self.out = nn.Sequential(nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        p = self.conv_p2(self.pam(self.conv_p1(x)))
        c = self.conv_c2(self.cam(self.conv_c1(x)))
        return self.out(p + c)


class MVSSNet(WholeImageResize, IMLModel):
    """MVSS-Net (ICCV 2021), the released ``get_mvss(sobel=True, constrain=True)`` model; see the module docstring.

    Args:
        input_size: side of the square the input is resized to (the authors' 512), ``None`` for the
            native size (padded to a multiple of 16).
        layers: ResNet blocks per stage of both streams (ResNet-50: 3, 4, 6, 3).
        channels: bottleneck widths per stage (64, 128, 256, 512; outputs are 4x); smaller values build
            the same code path cheaply (tests, smoke runs).
        mean, std: input normalisation (per R, G, B channel; default: the authors' BGR normalisation).
    """

    size_divisor = 16

    def __init__(self, input_size: int | None = 512, layers: Sequence[int] = (3, 4, 6, 3),
                 channels: Sequence[int] = (64, 128, 256, 512),
                 mean: tuple[float, float, float] = BGR_IMAGENET_MEAN,  # type: ignore[assignment]
                 std: tuple[float, float, float] = BGR_IMAGENET_STD) -> None:  # type: ignore[assignment]
        super().__init__(mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]
        if input_size is not None and (int(input_size) <= 0 or int(input_size) % self.size_divisor):
            raise ValueError(f"input_size must be a positive multiple of {self.size_divisor} or None, got {input_size}")
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"layers and channels need 4 stages, got {list(layers)} and {list(channels)}")
        self.input_size = None if input_size is None else int(input_size)
        widths = [4 * int(c) for c in channels]
        self.encoder = dilated_resnet(layers, channels)
        for i, w in enumerate(widths, start=1):
            self.add_module(f"erb_db_{i}", ERB(w, 1))
        for i in range(1, 4):
            self.add_module(f"erb_trans_{i}", ERB(1, 1))
        for i, w in enumerate(widths, start=1):
            sx, sy = sobel_gate(w), sobel_gate(w)
            kx, ky = _sobel_kernels(w)
            sx[0].weight.data.copy_(kx)
            sy[0].weight.data.copy_(ky)
            self.add_module(f"sobel_x{i}", sx)
            self.add_module(f"sobel_y{i}", sy)
        self.noise_encoder = dilated_resnet(layers, channels)
        self.constrain_conv = BayarConv2d(1, 3, 5, padding=2)
        self.head = DAHead(2 * widths[3], 1)

    def _sobel(self, i: int, c: Tensor) -> Tensor:
        gx = getattr(self, f"sobel_x{i}")(c)
        gy = getattr(self, f"sobel_y{i}")(c)
        return torch.sigmoid(torch.sqrt(gx.pow(2) + gy.pow(2))) * c

    def edge_branch(self, feats: Sequence[Tensor]) -> Tensor:
        """ESB: Sobel-gated ERBs from coarse levels summed into stride 4 -> edge logits."""
        c1 = feats[0]

        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, size=c1.shape[-2:], mode="bilinear", align_corners=True)

        e = self.erb_db_1(self._sobel(1, c1))
        e = self.erb_trans_1(e + up(self.erb_db_2(self._sobel(2, feats[1]))))
        e = self.erb_trans_2(e + up(self.erb_db_3(self._sobel(3, feats[2]))))
        return self.erb_trans_3(e + up(self.erb_db_4(self._sobel(4, feats[3]))), relu=False)

    def forward_padded(self, x: Tensor) -> MVSSOutput:
        x = x.flip(1)  # RGB -> BGR: the authors' channel order
        feats = resnet_features(self.encoder, x)
        edge = self.edge_branch(feats)
        gray = (0.2989 * x[:, 2] + 0.5870 * x[:, 1] + 0.1140 * x[:, 0])[:, None]
        noise = resnet_features(self.noise_encoder, self.constrain_conv(gray))[-1]
        seg = self.head(torch.cat([feats[-1], noise], dim=1))
        seg = F.interpolate(seg, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return MVSSOutput(mask_logits=seg, edge_logits=edge)

    def forward(self, x: Tensor) -> MVSSOutput:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.input_size is not None:
            s = self.input_size
            inp = x if (h, w) == (s, s) else F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
            out = self.forward_padded(inp)
            out.image_logits = out.mask_logits.flatten(1).amax(dim=1)  # GMP over the network's map
            if (h, w) != (s, s):
                out.mask_logits = resize_probabilities(out.mask_logits, (h, w), align_corners=False)
            return out
        d = self.size_divisor
        ph, pw = (-h) % d, (-w) % d
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        out = self.forward_padded(x)
        out.mask_logits = out.mask_logits[..., :h, :w]
        if (ph or pw) and out.edge_logits is not None:
            out.edge_logits = _crop_fraction(out.edge_logits, h / x.shape[-2], w / x.shape[-1])
        out.image_logits = out.mask_logits.flatten(1).amax(dim=1)
        return out


__all__ = ["BGR_IMAGENET_MEAN", "BGR_IMAGENET_STD", "BayarConv2d", "DAHead", "ERB", "MVSSNet", "MVSSOutput",
           "dilated_resnet", "resnet_features"]
