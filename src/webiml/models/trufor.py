"""TruFor: forgery localization, a confidence map and an image integrity score from RGB + Noiseprint++.

F. Guillaro, D. Cozzolino, A. Sud, N. Dufour, L. Verdoliva, "TruFor: Leveraging all-round clues for
trustworthy image forgery detection and localization", CVPR 2023. Official code and weights:
https://github.com/grip-unina/TruFor (``TruFor_train_test/lib/models/cmx/builder_np_conf.py``
``EncoderDecoder`` with the ``trufor_ph3.yaml`` configuration; weights ``TruFor_weights.zip`` ->
``trufor.pth.tar``). This is webiml's own implementation; module names are the official ones, so the
released state dict loads unchanged (:mod:`webiml.convert.trufor`).

Forward pass (input: RGB in ``[0, 1)``, ``uint8 / 256`` as the authors' loaders)::

    Noiseprint++ = dncnn(x)                       17-layer DnCNN of webiml.models.noiseprint (frozen)
    feats = backbone((x - ImageNet mean) / std, Noiseprint++ repeated to 3 channels)
                                                  dual MiT-B2 with CMX rectification / fusion (models.cmx)
    anomaly    = decode_head(feats)       -> 2-class logits, stride 4, bilinearly resized to H x W
    confidence = decode_head_conf(feats)  -> 1 logit,        stride 4, bilinearly resized to H x W
    score      = detection([pool(confidence), pool(anomaly_1 - anomaly_0; weights softmax(logsigmoid(conf)))])
                 pool = (soft min, soft max, mean, mean square) over the pixels; detection: MLP 8-128-1

Outputs under webiml's contract (:class:`TruForOutput`, an :class:`IMLOutput`): ``mask_logits`` is
``z1 - z0`` of the 2-class anomaly logits (``sigmoid(z1 - z0)`` is the authors' ``softmax(...)[1]``, their
``map``), ``image_logits`` the detection logit (``sigmoid`` = their ``score``), ``confidence_logits`` the
confidence logit map (``sigmoid`` = their ``conf``). Any input size runs as it is, without padding, as in
the authors' test code (:attr:`TruFor.size_divisor` is 1).

Training phases (the authors' ``trufor_ph2.yaml`` / ``trufor_ph3.yaml``; see :mod:`webiml.tasks.trufor`):
phase 1 trains Noiseprint++ alone (not released as code; webiml converts the released extractor); phase 2
the encoder and localization head (Noiseprint++ frozen) with ``0.3`` weighted cross-entropy + ``0.7`` Dice;
phase 3 the confidence head (MSE against the true-class probability) and the detection head (weighted
BCE, weight 0.5) with everything else frozen.

Deviations from the official code:

- Fusion-head BatchNorm eps: the training code (``TruFor_train_test``) sets ``BN_EPS = 1e-3`` on both the
  localization and the confidence head; the authors' inference container (``test_docker``) sets it on the
  localization head only (the confidence head keeps PyTorch's 1e-5). webiml follows the training code;
  ``conf_head_bn_eps=1e-5`` reproduces the container.
- Frozen modules (``set_frozen``; Noiseprint++ by default, as ``FIX_MODULES``) are kept in eval mode and run
  without gradients, as the official ``encode_decode`` does.
- Inputs with a side under 29 pixels (``min_size``), on which the authors' code fails, are padded to it by
  replicating the border and the maps cropped back; the detection score then pools over the padded maps.
- Smaller presets (``tiny``) exist for tests only; ``b0``..``b5`` follow the official ``mit_b*`` backbones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webiml.models.base import IMAGENET_MEAN, IMAGENET_STD, HubModel, IMLModel, IMLOutput
from webiml.models.cmx import DualMiT, MLPDecoder, load_mit_weights
from webiml.models.noiseprint import UINT8_OVER_256, Uint8Over256Input, make_dncnn
from webiml.models.registry import register_model

_B = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), sr_ratios=(8, 4, 2, 1), decoder_dim=512,
          noiseprint_depth=17, noiseprint_features=64)
TRUFOR_PRESETS: dict[str, dict[str, Any]] = {
    "b0": {**_B, "embed_dims": (32, 64, 160, 256), "depths": (2, 2, 2, 2)},
    "b1": {**_B, "depths": (2, 2, 2, 2)},
    "b2": {**_B, "depths": (3, 4, 6, 3)},  # TruFor as released
    "b3": {**_B, "depths": (3, 4, 18, 3)},
    "b4": {**_B, "depths": (3, 8, 27, 3)},
    "b5": {**_B, "depths": (3, 6, 40, 3)},
    # The same code path at toy widths, for tests and smoke runs (not a trained configuration).
    "tiny": dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), sr_ratios=(8, 4, 2, 1), depths=(1, 1, 1, 1),
                 decoder_dim=32, noiseprint_depth=3, noiseprint_features=8),
}
"""Size presets of :class:`TruFor` (the official ``mit_b0`` .. ``mit_b5`` backbones and a test size)."""

MODULES = ("dncnn", "backbone", "decode_head", "decode_head_conf", "detection")
"""TruFor's parts, by attribute (the authors' ``NP++``, ``backbone``, ``loc_head``, ``conf_head``, ``det_head``)."""


@dataclass
class TruForOutput(IMLOutput):
    """:class:`IMLOutput` plus TruFor's confidence map (``(B, 1, H, W)`` logits; ``None`` without the head)."""

    confidence_logits: Tensor | None = None

    def confidence(self) -> Tensor | None:
        """The confidence map in ``[0, 1]`` (the authors' ``conf``)."""
        return None if self.confidence_logits is None else self.confidence_logits.sigmoid()


def weighted_statistics_pooling(x: Tensor, log_w: Tensor | None = None) -> Tensor:
    """``(B, 4C)``: soft minimum, soft maximum, mean and mean square of each channel of ``x`` over its pixels,
    under the pixel weights ``softmax(log_w)`` (uniform without ``log_w``), in that order."""
    b, c = x.shape[:2]
    x = x.reshape(b, c, -1)
    log_w = x.new_zeros(b, 1, x.shape[-1]) if log_w is None else log_w.reshape(b, 1, -1)
    log_w = F.log_softmax(log_w, dim=-1)
    w = log_w.exp()
    return torch.cat((-torch.logsumexp(log_w - x, dim=-1), torch.logsumexp(log_w + x, dim=-1),
                      (w * x).sum(-1), (w * x * x).sum(-1)), dim=1)


def min_input_size(sr_ratios: Sequence[int]) -> int:
    """The smallest image side the encoder accepts: every stage's map (sides ``ceil(H / 4)``, then halved
    with rounding up) must be at least as large as its attention's spatial reduction (29 for TruFor)."""
    def fits(h: int) -> bool:
        side = -(-h // 4)
        for i, r in enumerate(sr_ratios):
            side = side if i == 0 else -(-side // 2)
            if side < int(r):
                return False
        return True

    return next(h for h in range(1, 1 << 16) if fits(h))


class TruFor(Uint8Over256Input, IMLModel):
    """TruFor (CVPR 2023); see the module docstring.

    Args:
        size: a key of :data:`TRUFOR_PRESETS` (``"b2"`` = the released model, ``"tiny"`` for tests).
        embed_dims, num_heads, depths, sr_ratios: the dual MiT encoder (``None``: from the preset).
        decoder_dim: width of the MLP decoders (512). noiseprint_depth / noiseprint_features: the DnCNN (17 / 64).
        mlp_ratio, drop_path_rate: MiT's MLP ratio (4) and stochastic depth (0.1).
        dropout: Dropout2d before the decoders' classifiers (0.1).
        confidence_head, detection_head: build those heads (the authors' phase-2 model has neither; detection
            needs the confidence head).
        head_bn_eps: BatchNorm eps of the decoders (the authors' ``BN_EPS``, 1e-3); ``conf_head_bn_eps``
            overrides it for the confidence head (1e-5 reproduces the authors' inference container).
        freeze_noiseprint: keep Noiseprint++ fixed in training (the authors' ``FIX_MODULES: ['NP++']``).
        backbone_weights: an ImageNet MiT file (SegFormer's ``mit_b2.pth``) for both encoder streams.
        noiseprint_weights: Noiseprint++ weights: the authors' ``noiseprint++.th``, or a converted
            :class:`~webiml.models.noiseprint.NoiseprintPP` (folder, catalogue name, Hub id).
        mean, std: input normalisation; the default maps ``uint8`` to ``uint8 / 256`` as the authors' loaders.
    """

    tile_safe = False  # the detection score pools the whole image's maps; the authors run whole images

    size_divisor = 1
    pretrained_init_overrides: ClassVar[dict[str, Any]] = {**HubModel.pretrained_init_overrides, "noiseprint_weights": None}
    card_summary = (
        "TruFor (Guillaro et al., CVPR 2023) ported to [webiml]({repo_url}): RGB and the learned Noiseprint++ camera\n"
        "trace fused by a dual SegFormer (CMX) give a per-pixel anomaly map, a confidence map (``confidence_logits``)\n"
        "and an image integrity score.")

    def __init__(
        self,
        size: str = "b2",
        embed_dims: Sequence[int] | None = None,
        num_heads: Sequence[int] | None = None,
        depths: Sequence[int] | None = None,
        sr_ratios: Sequence[int] | None = None,
        decoder_dim: int | None = None,
        noiseprint_depth: int | None = None,
        noiseprint_features: int | None = None,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        dropout: float = 0.1,
        confidence_head: bool = True,
        detection_head: bool = True,
        head_bn_eps: float = 1e-3,
        conf_head_bn_eps: float | None = None,
        freeze_noiseprint: bool = True,
        backbone_weights: str | None = None,
        noiseprint_weights: str | None = None,
        mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
        std: tuple[float, float, float] = UINT8_OVER_256,
    ) -> None:
        super().__init__(mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]
        if size not in TRUFOR_PRESETS:
            raise ValueError(f"unknown TruFor size {size!r}; choose one of {sorted(TRUFOR_PRESETS)}")
        if detection_head and not confidence_head:
            raise ValueError("TruFor's detection head pools the confidence map: detection_head needs confidence_head")
        given = dict(embed_dims=embed_dims, num_heads=num_heads, depths=depths, sr_ratios=sr_ratios, decoder_dim=decoder_dim,
                     noiseprint_depth=noiseprint_depth, noiseprint_features=noiseprint_features)
        cfg = {**TRUFOR_PRESETS[size], **{k: v for k, v in given.items() if v is not None}}
        self.size = size
        dims = [int(d) for d in cfg["embed_dims"]]
        self.backbone = DualMiT(3, dims, cfg["num_heads"], cfg["depths"], cfg["sr_ratios"], mlp_ratio, drop_path_rate)
        e = int(cfg["decoder_dim"])
        self.decode_head = MLPDecoder(dims, 2, e, dropout, head_bn_eps)
        conf_eps = head_bn_eps if conf_head_bn_eps is None else conf_head_bn_eps
        self.decode_head_conf = MLPDecoder(dims, 1, e, dropout, conf_eps) if confidence_head else None
        self.detection = (nn.Sequential(nn.Linear(8, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 1))
                          if detection_head else None)
        self.dncnn = make_dncnn(3, 1, depth=int(cfg["noiseprint_depth"]), features=int(cfg["noiseprint_features"]))
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if backbone_weights:
            load_mit_weights(self.backbone, backbone_weights)
        if noiseprint_weights:
            self.load_noiseprint(noiseprint_weights)
        self.min_size = min_input_size(cfg["sr_ratios"])
        self._frozen: tuple[str, ...] = ()
        self.set_frozen(["dncnn"] if freeze_noiseprint else [])

    # -- frozen parts (the authors' FIX_MODULES) ----------------------------------------------------
    @property
    def frozen(self) -> tuple[str, ...]:
        """The parts kept fixed in training (eval mode, no gradients)."""
        return self._frozen

    def set_frozen(self, names: Sequence[str]) -> None:
        """Keep exactly the parts ``names`` (of :data:`MODULES`) fixed: no gradients, eval mode (BatchNorm
        statistics and dropout off) even when the model trains. The others are made trainable."""
        unknown = sorted(set(names) - set(MODULES))
        if unknown:
            raise ValueError(f"unknown TruFor parts {unknown}; parts are {list(MODULES)}")
        self._frozen = tuple(n for n in MODULES if n in names)
        for name in MODULES:
            module = getattr(self, name)
            if module is not None:
                module.requires_grad_(name not in self._frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> TruFor:
        super().train(mode)
        for name in getattr(self, "_frozen", ()):
            module = getattr(self, name)
            if module is not None:
                module.eval()
        return self

    def _part(self, name: str, *args: Tensor) -> Any:
        with torch.set_grad_enabled(torch.is_grad_enabled() and name not in self._frozen):
            return getattr(self, name)(*args)

    # -- weights ------------------------------------------------------------------------------------
    def load_noiseprint(self, source: str | Path) -> None:
        """Load Noiseprint++ weights: the authors' ``noiseprint++.th`` (or any file with its DnCNN keys), or
        a converted :class:`~webiml.models.noiseprint.NoiseprintPP` (folder, catalogue name, Hub id)."""
        path = Path(source)
        if path.is_file() and path.suffix != ".safetensors":
            from webiml.convert._common import load_checkpoint
            from webiml.convert.noiseprint import noiseprint_pp_official_to_webiml

            state = noiseprint_pp_official_to_webiml(load_checkpoint(path))
        else:
            from webiml.hub import from_pretrained

            state = from_pretrained(str(source)).state_dict()
        self.dncnn.load_state_dict({k[len("dncnn."):]: v for k, v in state.items() if k.startswith("dncnn.")}, strict=True)

    # -- forward ------------------------------------------------------------------------------------
    def noiseprint(self, x: Tensor) -> Tensor:
        """The Noiseprint++ residual ``(B, 1, H, W)`` of a normalised batch."""
        return self._part("dncnn", x)

    def forward(self, x: Tensor) -> TruForOutput:
        """As :meth:`IMLModel.forward`; inputs smaller than :attr:`min_size` are first padded to it (replicated
        border) and the maps cropped back: each encoder stage needs a map at least as large as its attention's
        spatial reduction (:func:`min_input_size`; the authors' code fails on such images)."""
        h, w = x.shape[-2:]
        ph, pw = max(self.min_size - h, 0), max(self.min_size - w, 0)
        if x.ndim != 4 or not (ph or pw):
            return super().forward(x)  # type: ignore[return-value]
        out = super().forward(F.pad(x, (0, pw, 0, ph), mode="replicate"))
        out.mask_logits = out.mask_logits[..., :h, :w]
        if isinstance(out, TruForOutput) and out.confidence_logits is not None:
            out.confidence_logits = out.confidence_logits[..., :h, :w]
        return out  # type: ignore[return-value]

    def forward_padded(self, x: Tensor) -> TruForOutput:
        size = x.shape[-2:]
        noise = self.noiseprint(x).repeat(1, 3, 1, 1)
        feats = self._part("backbone", (x - self.rgb_mean) / self.rgb_std, noise)

        def head(name: str) -> Tensor:
            return F.interpolate(self._part(name, feats), size=size, mode="bilinear", align_corners=False)

        anomaly = head("decode_head")
        mask = anomaly[:, 1:2] - anomaly[:, 0:1]
        conf = head("decode_head_conf") if self.decode_head_conf is not None else None
        image = None
        if self.detection is not None and conf is not None:
            pooled = torch.cat((weighted_statistics_pooling(conf), weighted_statistics_pooling(mask, F.logsigmoid(conf))), dim=1)
            image = self._part("detection", pooled)[:, 0]
        return TruForOutput(mask_logits=mask, image_logits=image, confidence_logits=conf)


@register_model
def trufor(size: str = "b2", **overrides: Any) -> TruFor:
    """TruFor from a size preset with keyword overrides; the default is the released model (MiT-B2 dual
    encoder, 512-wide MLP decoders, 17-layer Noiseprint++)."""
    return TruFor(size=size, **overrides)


@register_model
def trufor_tiny(**overrides: Any) -> TruFor:
    """TruFor's code path at toy widths (tests and smoke runs; not a trained configuration)."""
    return TruFor(size="tiny", **overrides)


__all__ = ["MODULES", "TRUFOR_PRESETS", "TruFor", "TruForOutput", "min_input_size", "trufor", "trufor_tiny",
           "weighted_statistics_pooling"]
