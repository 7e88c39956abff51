"""CAAA v1: the MIML authors' category-aware auto-annotation parts, loadable from their released weights.

C. Qu et al., "Towards Modern Image Manipulation Localization: A Large-Scale Dataset and Novel Methods",
CVPR 2024; code https://github.com/qcf-568/MIML, folder ``models for CIML`` (``classify_convxl.py``,
``convnext.py``, ``dass.py``, ``safm_convb.py``, ``convbuper.py``, ``Auto_Annotate_SPG.py``,
``Auto_Annotate_SDG.py`` and the mmseg heads ``uper_lab.py``, ``uper_head.py``, ``sep_aspp_head.py``,
``fcn_head.py``). This is webiml's own implementation of those architectures; the converters
(:mod:`webiml.convert.caaa_v1`) load the authors' ``convxl.pth``, ``DASS.pth`` and ``SAFM.pth``.
webiml's CAAAv2 (:mod:`webiml.models.caaa`) is a separate reconstruction from the MIMLv2 paper.

- :class:`CAAAv1Classifier` (``convxl.pth``): ConvNeXt-XL over the 6-channel concatenation
  ``[original, forgery]``, both resized to 512x512; the last feature map is LayerNorm-ed *before* global
  pooling (timm's ``head_norm_first``), then one linear layer with 8 outputs: logits of "same source"
  (0:2), "not cropped" i.e. aligned (2:4) and a crop box (4:8). :func:`caaa_v1_decisions` is the
  authors' rule: softmax over the pairs ``(0, 1), (2, 3), ...``; SPG when both "same" and "aligned" exceed
  0.5, SDG when neither does, NotAlignedSPG when "same" does but "aligned" does not (otherwise none).
- :class:`DASS` (``DASS.pth``): VAN (:mod:`webiml.models.van`, 9 input channels ``[original, forgery,
  difference]``) + UPerLab head (UPer levels, all resized to stride 8 and concatenated, DeepLabV3+ head
  with the stride-4 level as low-level input) + FCN auxiliary head; logits upsampled x4 with
  ``align_corners=True`` (``F.upsample_bilinear``). Test-time augmentation: mean of the logits over the
  identity, the vertical and the horizontal flip of the whole input.
- :class:`SACM` (``SAFM.pth``; the paper's SACM, the code's SAFM): a Siamese ConvNeXt-B + UPer network gives
  4 levels at stride 8 for each image; for 16 (level of the original, level of the forgery) pairs,
  correlations over every cyclic shift of the stride-8 grid (``(input_size / 8) ** 2`` channels, fixed, so
  the model runs at ``input_size`` = 512 only) are summarised by max, mean and a learned 1x1 projection, for
  the cross and the self correlation; a 1x1 ``seg_out`` predicts a coarse mask from them, and a DeepLabV3+
  head with an x8 upsampling decoder segments each image from ``[level0, level1, level2, correlations] +
  P(coarse)``. Test-time augmentation: the forgery's logits *summed* over the identity, the vertical and
  the horizontal flip of the forgery (before the softmax, as the authors do).

Conventions: images are RGB; the normalisation travels with each part and is the authors'
``mean=(0.485, 0.455, 0.406)`` (sic, 0.455 for green in every CAAA script), ImageNet std. Two-class logits
``(z0, z1)`` are kept where the authors have them (``two_class_logits``); the :class:`IMLOutput` /
:class:`SDGOutput` mask logits are ``z1 - z0`` (softmax(z)[1] == sigmoid(z1 - z0)).

Deviations from the authors' code: none in eval mode at the authors' input sizes (measured against their
modules, see the catalogue). DASS pads inputs to a multiple of 32 and crops back (the authors run 1024 x
1024 only); the classifier's dropout (eval no-op) sits after the pooling in timm's head, before it in theirs;
SyncBN is plain BatchNorm (same keys). Unused tensors of ``SAFM.pth`` (``models.decode_head.conv_seg`` and
``models.auxiliary_head``, never called by the authors' SAFM) are left out by the converter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from webiml.models.base import IMAGENET_STD, HubModel, IMLOutput
from webiml.models.caaa import SDGOutput, check_pair
from webiml.models.layers import PPM, ConvBNReLU, SepASPPHead, resize
from webiml.models.van import VAN

__all__ = [
    "AUTHORS_MEAN",
    "CAAAv1Classifier",
    "CAAAv1ClassifierOutput",
    "CAAAv1Part",
    "DASS",
    "NOT_ALIGNED_SPG",
    "SACM",
    "SACM_LEVEL_PAIRS",
    "caaa_v1_decisions",
    "shifted_correlation",
]

AUTHORS_MEAN = (0.485, 0.455, 0.406)
"""The mean of every CAAA v1 script (``0.455``, not ImageNet's ``0.456``, for green)."""
NOT_ALIGNED_SPG = "NotAlignedSPG"
"""Classifier decision for a same-source pair that is not aligned (the authors' scripts annotate no such pair)."""
SACM_LEVEL_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 0), (1, 1), (2, 2), (3, 3), (0, 1), (1, 0), (2, 0), (3, 0),
    (0, 2), (1, 2), (2, 1), (3, 1), (0, 3), (1, 3), (2, 3), (3, 2),
)
"""(level of the original, level of the forgery) of SACM's 16 correlation blocks, in the authors' order."""


def _resize_square(x: Tensor, size: int) -> Tensor:
    """Bilinear resize to ``size x size`` without antialiasing: torchvision 0.14's tensor ``Resize``, which
    the authors' scripts ran (half-pixel centres, like OpenCV's ``INTER_LINEAR``)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def _z(logits: Tensor) -> Tensor:
    return logits[:, 1:2] - logits[:, 0:1]


class CAAAv1Part(HubModel, tags=["image-manipulation-localization", "constrained-iml", "caaa-v1"]):
    """Base of the CAAA v1 parts: the authors' normalisation, webiml's hub hooks, registration by class name."""

    abstract = True
    card_summary = (
        "A part of CAAA v1, the MIML authors' category-aware auto-annotation (CVPR 2024), as implemented in\n"
        "[webiml]({repo_url}): it classifies an (original photo, forged copy) pair or localizes the edit.")
    card_usage = (
        "import webiml\n"
        "model = webiml.from_pretrained(\"{load_name}\")\n"
        "# the three parts in one folder (classifier/, dass/, sacm/):\n"
        "# webiml.annotate.caaa_v1.CAAAv1Annotator.from_pretrained(folder), or webiml annotate --annotator caaa-v1")

    def __init__(self, mean: tuple[float, float, float] = AUTHORS_MEAN, std: tuple[float, float, float] = IMAGENET_STD) -> None:
        super().__init__(mean=mean, std=std)


# --------------------------------------------------------------------------------------------------
# pair classifier


def caaa_v1_decisions(logits: Tensor) -> list[str | None]:
    """The authors' decision rule (``classify_convxl.py``) on classifier logits ``(B, 8)``: ``"SPG"``
    (aligned same-source pair), ``"SDG"``, ``"NotAlignedSPG"`` or ``None`` (different sources judged
    aligned, or a probability of exactly 0.5: the authors put such a pair in no list)."""
    b, c = logits.shape
    p = F.softmax(logits.float().reshape(b, c // 2, 2), dim=-1)
    out: list[str | None] = []
    for same, aligned in zip(p[:, 0].tolist(), p[:, 1].tolist(), strict=True):
        if same[1] > 0.5 and aligned[1] > 0.5:
            out.append("SPG")
        elif same[0] > 0.5 and aligned[0] > 0.5:
            out.append("SDG")
        elif same[1] > 0.5 and aligned[0] > 0.5:
            out.append(NOT_ALIGNED_SPG)
        else:
            out.append(None)
    return out


@dataclass
class CAAAv1ClassifierOutput:
    """The 8 logits of :class:`CAAAv1Classifier` ``(B, 8)`` and what the authors derive from them."""

    logits: Tensor

    def pair_probs(self) -> Tensor:
        """``(B, 4, 2)``: softmax over consecutive logit pairs, as the authors' script computes it."""
        b, c = self.logits.shape
        return F.softmax(self.logits.reshape(b, c // 2, 2), dim=-1)

    def same_source_probs(self) -> Tensor:
        """P(the forgery is an edited copy of the original), ``(B,)``."""
        return self.pair_probs()[:, 0, 1]

    def aligned_probs(self) -> Tensor:
        """P(the pair is not cropped, i.e. spatially aligned), ``(B,)``."""
        return self.pair_probs()[:, 1, 1]

    def box(self) -> Tensor:
        """``(B, 4)`` normalised ``(x0, y0, x1, y1)`` of the cropped image inside the other, decoded from
        logits 4:8 with the encoding of the authors' ``train_classifier.py`` (rows, then columns, of a
        1024-pixel canvas: ``start / 512`` and ``end / 512 - 1``). Their annotation scripts do not use it."""
        r = self.logits[:, 4:8].float()
        return torch.stack([r[:, 1] / 2, r[:, 0] / 2, (r[:, 3] + 1) / 2, (r[:, 2] + 1) / 2], dim=1)

    def decisions(self) -> list[str | None]:
        return caaa_v1_decisions(self.logits)


class CAAAv1Classifier(CAAAv1Part):
    """The authors' pair classifier (``classify_convxl.py``): timm ConvNeXt (``in_chans=6``,
    ``head_norm_first=True``, 8 outputs) over ``[original, forged]``, each resized to ``input_size``.

    Args:
        depths, dims: ConvNeXt stages (the authors': ConvNeXt-XL, ``(3, 3, 27, 3)``, ``(256, 512, 1024, 2048)``).
        input_size: side both images are resized to (512).
        drop_path_rate: stochastic depth (the authors trained with 0.8). dropout: head dropout (0.3).
        mean, std: input normalisation (the authors').
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 27, 3),
        dims: Sequence[int] = (256, 512, 1024, 2048),
        input_size: int = 512,
        drop_path_rate: float = 0.8,
        dropout: float = 0.3,
        mean: tuple[float, float, float] = AUTHORS_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        self.input_size = int(input_size)
        self.backbone = timm.models.convnext.ConvNeXt(
            in_chans=6, num_classes=8, depths=tuple(int(d) for d in depths), dims=tuple(int(d) for d in dims),
            ls_init_value=1.0, head_norm_first=True, drop_path_rate=drop_path_rate, drop_rate=dropout,
        )

    def forward(self, original: Tensor, forged: Tensor) -> CAAAv1ClassifierOutput:
        """Normalised ``(B, 3, H, W)`` images of any sizes -> :class:`CAAAv1ClassifierOutput`."""
        check_pair(original, forged)
        s = self.input_size
        return CAAAv1ClassifierOutput(self.backbone(torch.cat([_resize_square(original, s), _resize_square(forged, s)], dim=1)))

    @torch.inference_mode()
    def predict(self, original: Tensor, forged: Tensor) -> CAAAv1ClassifierOutput:
        """Inference on raw images (``uint8`` or 0..1 float, (3, H, W) or batched), in eval mode. The images
        are resized before normalisation, as in the authors' script."""
        was_training = self.training
        self.eval()
        try:
            dev, s = self.input_mean.device, self.input_size
            o, f = (_resize_square(_unit(t).to(dev), s) for t in (original, forged))
            return self(self.normalize(o), self.normalize(f))
        finally:
            self.train(was_training)


def _unit(images: Tensor) -> Tensor:
    """``uint8`` or 0..1 float images, (3, H, W) or batched -> float (B, 3, H, W) in [0, 1]."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x[None] if x.ndim == 3 else x


# --------------------------------------------------------------------------------------------------
# shared decoder pieces (mmseg layout: psp_modules, bottleneck, lateral_convs, fpn_convs)


class UPerLevels(nn.Module):
    """mmseg's UPerHead up to its FPN outputs: laterals on levels 0..2, PPM + 3x3 bottleneck on level 3,
    top-down sums, 3x3 convs; :meth:`levels` returns the four levels at their own strides."""

    def __init__(self, in_channels: Sequence[int], channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.psp_modules = PPM(in_channels[-1], channels, pool_scales)
        self.bottleneck = ConvBNReLU(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3, padding=1) for _ in in_channels[:-1])

    def levels(self, feats: Sequence[Tensor]) -> list[Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral_convs, feats[:-1], strict=True)]
        top = feats[-1]
        lat.append(self.bottleneck(torch.cat([top, *self.psp_modules(top)], dim=1)))
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + resize(lat[i], lat[i - 1].shape[-2:])
        return [conv(x) for conv, x in zip(self.fpn_convs, lat[:-1], strict=True)] + [lat[-1]]


def _classifier(channels: int, num_classes: int, dropout: float) -> tuple[nn.Module, nn.Conv2d]:
    return (nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()), nn.Conv2d(channels, num_classes, 1)


class _UPerLab(UPerLevels):
    """DASS's decode head (the authors' ``UPerLab``): UPer levels -> stride 8, concatenated -> DeepLabV3+
    head (``deeplab``) with the stride-4 level, projected by ``convert``, as its low-level input.
    ``conv_seg`` (on the stride-4 level) is the authors' training-only auxiliary classifier."""

    def __init__(self, in_channels: Sequence[int], channels: int, pool_scales: Sequence[int], dilations: Sequence[int],
                 low_proj: int, dropout: float) -> None:
        super().__init__(in_channels, channels, pool_scales)
        self.dropout, self.conv_seg = _classifier(channels, 2, dropout)
        self.deeplab = SepASPPHead(4 * channels, channels, channels // 2, low_proj, dilations, num_classes=2, dropout=dropout)
        self.convert = nn.Conv2d(channels, channels // 2, 1)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
        outs = self.levels(feats)
        aux = self.conv_seg(self.dropout(outs[0])) if self.training else None
        low = self.convert(outs[0])
        fused = torch.cat([resize(o, outs[1].shape[-2:]) for o in outs], dim=1)
        return self.deeplab(low, fused)[0], aux


class _FCNHead(nn.Module):
    """mmseg's FCNHead with one 3x3 conv and no input concatenation (DASS's auxiliary head)."""

    def __init__(self, in_channels: int, channels: int, dropout: float) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvBNReLU(in_channels, channels, 3, padding=1))
        self.dropout, self.conv_seg = _classifier(channels, 2, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_seg(self.dropout(self.convs(x)))


# --------------------------------------------------------------------------------------------------
# DASS


class DASS(CAAAv1Part):
    """Difference-aware segmentation of an aligned SPG pair (the authors' ``DASS``): VAN + UPerLab + FCN.

    Input: the normalised 9-channel tensor of :meth:`pair_input` (``[original, forgery, difference]``,
    same size). :meth:`two_class_logits` gives the authors' 2-class logits at the input size (padded to a
    multiple of 32 inside, cropped back); :meth:`forward` the :class:`IMLOutput` (``z1 - z0``; in training
    mode the FCN head's and the UPer level-0 classifier's logits are the auxiliary outputs).

    Args:
        embed_dims, depths, mlp_ratios: VAN stages (the authors': ``(96, 192, 480, 768)``, ``(3, 3, 24, 3)``).
        channels: decoder width (512). aux_channels: FCN head width (256). low_proj: DeepLabV3+ low-level
            projection (48). pool_scales, dilations: PPM scales and ASPP dilations.
        drop_path_rate: VAN stochastic depth (0.4). dropout: before the pixel classifiers (0.1).
        mean, std: normalisation of each 3-channel group.
    """

    size_divisor: int = 32

    def __init__(
        self,
        embed_dims: Sequence[int] = (96, 192, 480, 768),
        depths: Sequence[int] = (3, 3, 24, 3),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        channels: int = 512,
        aux_channels: int = 256,
        low_proj: int = 48,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dilations: Sequence[int] = (1, 12, 24, 36),
        drop_path_rate: float = 0.4,
        dropout: float = 0.1,
        mean: tuple[float, float, float] = AUTHORS_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        dims = [int(d) for d in embed_dims]
        self.backbone = VAN(9, dims, depths, mlp_ratios, drop_path_rate=drop_path_rate)
        self.decode_head = _UPerLab(dims, int(channels), pool_scales, dilations, int(low_proj), dropout)
        self.auxiliary_head = _FCNHead(dims[2], int(aux_channels), dropout)

    def pair_input(self, original: Tensor, forged: Tensor, diff: str = "abs") -> Tensor:
        """The normalised 9-channel input from two images of one size (``uint8`` or 0..1 float, (3, H, W)
        or batched): ``[original, forged, difference] / 255`` normalised per 3-channel group.

        ``diff="abs"``: ``|original - forged|`` (the authors' training, ``train_dass.py``); ``"wrap"``:
        ``(original - forged) mod 256``, what their annotation script ``Auto_Annotate_SPG.py`` computes
        (``torch.abs`` of a ``uint8`` subtraction, which wraps around)."""
        o, f = _unit(original) * 255.0, _unit(forged) * 255.0
        if o.shape != f.shape:
            raise ValueError(f"DASS needs two images of one size, got {tuple(o.shape)} and {tuple(f.shape)}")
        if diff == "abs":
            d = (o - f).abs()
        elif diff == "wrap":
            d = torch.remainder(o.round() - f.round(), 256.0)
        else:
            raise ValueError(f"diff must be 'abs' or 'wrap', got {diff!r}")
        dev = self.input_mean.device
        return torch.cat([self.normalize(t.to(dev) / 255.0) for t in (o, f, d)], dim=1)

    def _run(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        if x.ndim != 4 or x.shape[1] != 9:
            raise ValueError(f"DASS expects a (B, 9, H, W) batch (see pair_input), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.size_divisor, (-w) % self.size_divisor
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        feats = self.backbone(x)
        main, cls_aux = self.decode_head(feats)

        def up(t: Tensor, s: int) -> Tensor:  # the authors' F.upsample_bilinear (align_corners=True)
            return F.interpolate(t, scale_factor=float(s), mode="bilinear", align_corners=True)[..., :h, :w]

        aux = [up(self.auxiliary_head(feats[2]), 16), up(cls_aux, 4)] if cls_aux is not None else []
        return up(main, 4), aux

    def two_class_logits(self, x: Tensor) -> Tensor:
        """The authors' 2-class logits ``(B, 2, H, W)`` of a 9-channel input."""
        return self._run(x)[0]

    def forward(self, x: Tensor) -> IMLOutput:
        main, aux = self._run(x)
        return IMLOutput(mask_logits=_z(main), aux_mask_logits=[_z(a) for a in aux])

    def tta_two_class_logits(self, x: Tensor) -> Tensor:
        """Mean of the 2-class logits over the identity, the vertical and the horizontal flip (one batch of
        three, as ``Auto_Annotate_SPG.py``)."""
        b = x.shape[0]
        pred = self.two_class_logits(torch.cat([x, x.flip(2), x.flip(3)], dim=0))
        return torch.stack([pred[:b], pred[b : 2 * b].flip(2), pred[2 * b :].flip(3)]).mean(0)

    def forward_tta(self, x: Tensor) -> IMLOutput:
        return IMLOutput(mask_logits=_z(self.tta_two_class_logits(x)))


# --------------------------------------------------------------------------------------------------
# SACM


class _ConvNeXtLevels(nn.Module):
    """timm's ConvNeXt stem + stages and a channels-first LayerNorm per level (``norm{i}``): the
    authors' mmseg-style ConvNeXt backbone (its keys are renamed by the converter)."""

    def __init__(self, depths: Sequence[int], dims: Sequence[int], drop_path_rate: float) -> None:
        super().__init__()
        net = timm.models.convnext.ConvNeXt(depths=tuple(int(d) for d in depths), dims=tuple(int(d) for d in dims),
                                            drop_path_rate=drop_path_rate, ls_init_value=1e-6, num_classes=0)
        self.stem, self.stages = net.stem, net.stages
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", LayerNorm2d(int(d), eps=1e-6))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs.append(getattr(self, f"norm{i}")(x))
        return outs


def _shift_gather(m: Tensor, h: int, w: int) -> Tensor:
    """``out[:, rx * w + cx, rb, cb] = m[:, ((rb + rx) % h) * w + (cb + cx) % w, rb * w + cb]``: the
    authors' ``index_select`` with ``get_mapping_indices``, as a strided view of ``m`` tiled 2 x 2."""
    b = m.shape[0]
    t = m.reshape(b, h, w, h, w).repeat(1, 2, 2, 1, 1)
    s0, s1, s2, s3, s4 = t.stride()
    return t.as_strided((b, h, w, h, w), (s0, s1, s2, s1 + s3, s2 + s4)).reshape(b, h * w, h, w)


def shifted_correlation(x1: Tensor, x2: Tensor) -> Tensor:
    """The authors' ``Correlation_Module(x1, x2)``: ``(B, h * w, h, w)``, channel ``s`` at position ``p``
    holding ``<x1[p], x2[p + s]> / C`` for every cyclic shift ``s`` of the ``h x w`` grid."""
    b, c, h, w = x1.shape
    m = torch.bmm(x2.reshape(b, c, h * w).transpose(1, 2), x1.reshape(b, c, h * w) / c)
    return _shift_gather(m, h, w)


class _CorrPool(nn.Module):
    """The authors' ``Poolopt_on_Corrmat``: max and mean over the shifts and a learned 1x1 projection."""

    def __init__(self, shifts: int, features: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(shifts, features, 1)

    def forward(self, corr: Tensor) -> Tensor:
        return torch.cat([corr.amax(1, keepdim=True), corr.mean(1, keepdim=True), self.fc(corr)], dim=1)


class SACM(CAAAv1Part):
    """Siamese correlation segmentation of an SDG pair (the authors' ``SAFM`` in ``safm_convb.py``).

    :meth:`forward` takes normalised images of any size, resizes both to ``input_size`` (the correlation
    projection is tied to it) and returns an :class:`SDGOutput`: the forgery's mask logits (``z1 - z0``)
    and the donated region of the original (``source_mask_logits``), each resized back to its input.
    :meth:`two_class_logits` is the authors' forward at ``input_size``: ``(original, forgery, coarse
    original, coarse forgery)`` 2-class logits.

    Args:
        depths, dims: ConvNeXt stages (the authors': ConvNeXt-B, ``(3, 3, 27, 3)``, ``(128, 256, 512, 1024)``).
        channels: UPer width C (512); each correlation block has ``2 * (2 + corr_features)`` channels.
        input_size: working resolution (512; the stride-8 grid has ``(input_size / 8) ** 2`` cyclic shifts).
        corr_features: outputs of the learned correlation projection (14).
        low_proj: DeepLabV3+ low-level projection (48). decoder_widths: the x8 upsampling decoder (128, 32).
        pool_scales, dilations, drop_path_rate, dropout: as the authors (dropout only acts in training).
        mean, std: input normalisation.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 27, 3),
        dims: Sequence[int] = (128, 256, 512, 1024),
        channels: int = 512,
        input_size: int = 512,
        corr_features: int = 14,
        low_proj: int = 48,
        decoder_widths: Sequence[int] = (128, 32),
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dilations: Sequence[int] = (1, 12, 24, 36),
        drop_path_rate: float = 0.4,
        dropout: float = 0.1,
        mean: tuple[float, float, float] = AUTHORS_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        if input_size % 8:
            raise ValueError(f"SACM's input_size must be a multiple of 8, got {input_size}")
        c, grid = int(channels), int(input_size) // 8
        self.input_size = int(input_size)
        self.backbone = _ConvNeXtLevels(depths, dims, drop_path_rate)
        self.decode_head = UPerLevels([int(d) for d in dims], c, pool_scales)
        self.poolopt_on_corrmat = _CorrPool(grid * grid, int(corr_features))
        corr_channels = len(SACM_LEVEL_PAIRS) * 2 * (2 + int(corr_features))
        self.seg_out = nn.Conv2d(corr_channels, 2, 1)
        self.deeplab = SepASPPHead(3 * c + corr_channels, c, c, int(low_proj), dilations, num_classes=2, dropout=dropout)
        w1, w2 = (int(v) for v in decoder_widths)
        def up() -> nn.Module:  # align_corners=True, as the authors'
            return nn.UpsamplingBilinear2d(scale_factor=2.0)

        self.deeplab.conv_seg = nn.Sequential(  # type: ignore[assignment]
            up(), nn.Conv2d(c, w1, 3, 1, 1), nn.BatchNorm2d(w1), nn.ReLU(),
            up(), nn.Conv2d(w1, w2, 3, 1, 1), nn.BatchNorm2d(w2), nn.ReLU(),
            up(), nn.Conv2d(w2, 2, 1),
        )

    def _levels(self, x: Tensor) -> list[Tensor]:
        outs = self.decode_head.levels(self.backbone(x))
        return [resize(o, outs[1].shape[-2:]) for o in outs]

    def _correlations(self, a: list[Tensor], b: list[Tensor]) -> tuple[Tensor, Tensor]:
        pool = self.poolopt_on_corrmat
        self_a = [pool(shifted_correlation(x, x)) for x in a]
        self_b = [pool(shifted_correlation(x, x)) for x in b]
        c1, c2 = [], []
        for i, j in SACM_LEVEL_PAIRS:
            bs, ch, h, w = a[i].shape
            m = torch.bmm(b[j].reshape(bs, ch, h * w).transpose(1, 2), a[i].reshape(bs, ch, h * w) / ch)
            c1.append(torch.cat([pool(_shift_gather(m, h, w)), self_a[i]], dim=1))
            c2.append(torch.cat([pool(_shift_gather(m.transpose(1, 2), h, w)), self_b[j]], dim=1))
        return torch.cat(c1, dim=1), torch.cat(c2, dim=1)

    def two_class_logits(self, original: Tensor, forged: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The authors' ``SAFM_model.forward`` on normalised ``input_size`` x ``input_size`` images."""
        check_pair(original, forged)
        s = self.input_size
        if original.shape[-2:] != (s, s) or forged.shape[-2:] != (s, s):
            raise ValueError(f"SACM runs at {s}x{s} only, got {tuple(original.shape[-2:])} and {tuple(forged.shape[-2:])}")
        a, b = self._levels(original), self._levels(forged)
        c1, c2 = self._correlations(a, b)
        p1, p2 = self.seg_out(c1), self.seg_out(c2)
        h1 = torch.cat([a[0], a[1], a[2], c1], dim=1) + F.softmax(p1, dim=1)[:, 1:2]
        h2 = torch.cat([b[0], b[1], b[2], c2], dim=1) + F.softmax(p2, dim=1)[:, 1:2]
        x1, x2 = self.deeplab(a[0], h1)[0], self.deeplab(b[0], h2)[0]
        up = [F.interpolate(p, scale_factor=8.0, mode="bilinear", align_corners=False) for p in (p1, p2)]
        return x1, x2, up[0], up[1]

    def forward(self, original: Tensor, forged: Tensor) -> SDGOutput:
        check_pair(original, forged)
        s = self.input_size
        x1, x2, p1, p2 = self.two_class_logits(_resize_square(original, s), _resize_square(forged, s))
        fo, ff = original.shape[-2:], forged.shape[-2:]
        out = SDGOutput(mask_logits=resize(_z(x2), ff), source_mask_logits=resize(_z(x1), fo))
        if self.training:
            out.aux_mask_logits, out.source_aux_mask_logits = [resize(_z(p2), ff)], [resize(_z(p1), fo)]
        return out

    def tta_two_class_logits(self, original: Tensor, forged: Tensor) -> Tensor:
        """The forgery's 2-class logits at ``input_size``, *summed* over the identity, the vertical and the
        horizontal flip of the forgery (``Auto_Annotate_SDG.py``); inputs are resized to ``input_size`` first."""
        s = self.input_size
        o, f = _resize_square(original, s), _resize_square(forged, s)
        total = self.two_class_logits(o, f)[1]
        for dim in (2, 3):
            total = total + self.two_class_logits(o, f.flip(dim))[1].flip(dim)
        return total

    def forward_tta(self, original: Tensor, forged: Tensor) -> SDGOutput:
        return SDGOutput(mask_logits=resize(_z(self.tta_two_class_logits(original, forged)), forged.shape[-2:]))
