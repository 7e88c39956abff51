"""The model contract every webiml IML model follows.

A model is a plain :class:`torch.nn.Module` (no Lightning inside) that takes a *normalised* image batch
``(B, 3, H, W)`` and returns an :class:`IMLOutput`:

- ``mask_logits`` ``(B, 1, H, W)``: per-pixel manipulation logits at the input resolution;
- ``image_logits`` ``(B,)`` or ``None``: image-level "was it manipulated" logit;
- ``aux_mask_logits``: auxiliary mask logits (any resolution) for deep supervision, empty at inference.

Any ``H, W`` works: :class:`IMLModel` pads the input to a multiple of :attr:`IMLModel.size_divisor` and
crops the outputs back. Losses live in :mod:`webiml.tasks`, not here. Normalisation statistics travel
with the model (:attr:`IMLModel.input_mean` / :attr:`IMLModel.input_std`) so that training and
inference can never disagree on preprocessing; :meth:`IMLModel.normalize` applies them.

Models capture their constructor arguments (plain JSON values only) through
:class:`huggingface_hub.PyTorchModelHubMixin`, which gives ``save_pretrained`` / ``push_to_hub`` with a
``config.json`` + ``model.safetensors`` + model card layout. :class:`HubModel` (the base of
:class:`IMLModel` and of the CAAAv2 pair models, :class:`webiml.models.caaa.PairModel`) overrides only
what webiml needs: atomic writes (float16 on request, the config in the safetensors metadata), the model
card (:func:`webiml.hub.build_model_card`) and ``from_pretrained``, which is :func:`webiml.from_pretrained`
with a class check. Every concrete subclass registers itself in :mod:`webiml.models.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from webiml.models.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class IMLOutput:
    """What every IML model returns."""

    mask_logits: Tensor
    image_logits: Tensor | None = None
    aux_mask_logits: list[Tensor] = field(default_factory=list)

    def mask_probs(self) -> Tensor:
        return self.mask_logits.sigmoid()

    def image_probs(self) -> Tensor:
        """Image-level manipulation probability: the image head if the model has one, else the max of the map."""
        if self.image_logits is not None:
            return self.image_logits.sigmoid()
        return self.mask_logits.sigmoid().flatten(1).amax(dim=1)


class InputNormalization:
    """For ``nn.Module`` s: normalisation constants that travel with the model (non-persistent buffers, so
    checkpoints stay the official layout) and :meth:`normalize`, the one place images become model input."""

    def _register_normalization(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)  # type: ignore[attr-defined]
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)  # type: ignore[attr-defined]

    def normalize(self, images: Tensor) -> Tensor:
        """Map images (``uint8`` 0..255 or float 0..1; (3, H, W) or (B, 3, H, W)) to the model's input."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        if x.ndim == 3:
            x = x[None]
        return (x - self.input_mean.to(x.device)) / self.input_std.to(x.device)  # type: ignore[attr-defined]


class HubModel(
    InputNormalization,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="webiml",
    tags=["image-forensics"],
    repo_url="https://github.com/webiml/webiml",
):
    """Base of every webiml model that is saved and loaded: normalisation constants, the hub mixin with
    webiml's hooks, registration by class name.

    ``save_pretrained`` writes ``config.json`` + ``model.safetensors`` + model card atomically
    (:func:`webiml.hub.write_pretrained`, float16 on request); ``from_pretrained`` is
    :func:`webiml.from_pretrained` with a class check. Every subclass registers itself in
    :mod:`webiml.models.registry` (the only classes a config may name) unless it sets ``abstract = True``
    in its own body (a base such as :class:`IMLModel` or :class:`webiml.models.caaa.PairModel`).
    """

    abstract: ClassVar[bool] = True
    """Set in a class body: a base that is never built from a config (not registered)."""
    pretrained_init_overrides: ClassVar[dict[str, Any]] = {"encoder_weights": None, "backbone_weights": None, "weights": None}
    """Constructor arguments replaced in a saved config (those the constructor takes): a checkpoint already
    holds the weights, so loading it must not fetch (or read, or unpickle) initial weights again."""
    card_summary: ClassVar[str] = (
        "An image manipulation localization (IML) model from [webiml]({repo_url}): given a photo it predicts a\n"
        "per-pixel map of edited regions and an image-level manipulation score.")
    """First paragraph of the model card (``{repo_url}`` is filled in)."""
    card_usage: ClassVar[str] = (
        "import webiml\n"
        "model = webiml.from_pretrained(\"{load_name}\")\n"
        "out = model.predict(image)                 # numpy (H, W, 3) uint8, or a (B, 3, H, W) tensor\n"
        "heatmap = out.mask_logits.sigmoid()        # (B, 1, H, W), 1 = manipulated\n"
        "score = out.image_probs()                  # (B,)")
    """The model card's usage snippet (``{load_name}`` is filled in)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("abstract", False):
            register_model(cls)  # the only classes a config.json may name

    def __init__(self, mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD) -> None:
        super().__init__()
        self._register_normalization(mean, std)

    # -- hub: config.json + model.safetensors (see webiml.hub) ---------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this model (as saved in ``config.json``)."""
        cfg = dict(getattr(self, "_hub_mixin_config", None) or {})
        for key, value in self.pretrained_init_overrides.items():
            if key in cfg:
                cfg[key] = value
        return cfg

    def save_pretrained(self, save_directory: str | Path, *, dtype: torch.dtype | str | None = None,  # type: ignore[override]
                        model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Write ``config.json``, ``model.safetensors`` and a model card (README.md) as one unit: into a new
        folder beside ``save_directory`` that then replaces it (other files of an existing folder are kept).

        ``dtype`` (e.g. ``"float16"``) stores floating-point tensors in that precision (half the file;
        loading casts back to the model's dtype). The model card (:func:`webiml.hub.build_model_card`)
        takes ``model_card_kwargs`` or the keywords ``catalogue_entry``, ``model_name``, ``training_data``,
        ``metrics``, ``license``, ``limitations``, ``notes``, ``load_name``; the other keywords are
        :meth:`huggingface_hub.ModelHubMixin.save_pretrained`'s (``push_to_hub``, ``repo_id``, ...).
        """
        from webiml.hub import CARD_KEYS
        from webiml.io import replace_folder

        card = {**(model_card_kwargs or {}), **{k: kwargs.pop(k) for k in list(kwargs) if k in CARD_KEYS}}
        previous = self.__dict__.get("_webiml_save_options")
        self.__dict__["_webiml_save_options"] = {"dtype": dtype, "card": card}
        try:
            # The folder changes as one unit: written beside it, then swapped in (see webiml.io.replace_folder).
            return replace_folder(save_directory, lambda staging: super(HubModel, self).save_pretrained(
                staging, model_card_kwargs=card, **kwargs))
        finally:
            self.__dict__["_webiml_save_options"] = previous

    def _save_pretrained(self, save_directory: Path) -> None:
        """Hub-mixin hook: the three files, written atomically (the mixin then keeps them as they are)."""
        from webiml.hub import write_pretrained

        options = self.__dict__.get("_webiml_save_options") or {}
        write_pretrained(self, save_directory, dtype=options.get("dtype"), card=options.get("card") or {})

    def generate_model_card(self, *args: Any, **kwargs: Any) -> Any:
        """The model card (:class:`huggingface_hub.ModelCard`), see :func:`webiml.hub.build_model_card`."""
        from webiml.hub import build_model_card

        return build_model_card(self, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Any:  # type: ignore[override]
        """:func:`webiml.from_pretrained` (catalogue name | Hub id | folder | ``.safetensors`` file), checking
        that the loaded architecture is this class or a subclass (``SmpIML.from_pretrained(web_iml_folder)``
        is an error; ``IMLModel.from_pretrained`` loads any IML model)."""
        from webiml.hub import from_pretrained

        return from_pretrained(pretrained_model_name_or_path, model_class=cls, **kwargs)


class IMLModel(HubModel, tags=["image-manipulation-localization"], pipeline_tag="image-segmentation"):
    """Base class of IML models: padding to the size divisor, normalisation constants, hub mixin.

    Subclasses implement :meth:`forward_padded` on an input whose H, W are multiples of
    :attr:`size_divisor`.
    """

    abstract = True
    size_divisor: int = 32
    min_input_size: int = 1
    """Inputs with a side below this are padded up to it (after rounding to :attr:`size_divisor`), for
    models that run unpadded (``size_divisor = 1``) but need a minimum size."""
    tile_safe: bool = True
    """Whether :class:`~webiml.inference.Localizer` may cut large images into tiles. ``False`` for models whose
    output depends on the whole image (a global statistic, a fixed resize of the whole image, an image-level
    pooling): they always run on the whole image, as their authors run them."""
    pixel_threshold: float = 0.5
    """Default binarisation threshold of the mask (``prob >= pixel_threshold``); saved with the model."""
    image_threshold: float = 0.5
    """Default image verdict: "manipulated" when the image score is ``>= image_threshold``. A calibrated
    model (``webiml calibrate``) stores the threshold that calls a target share of held-out authentic
    photos authentic; saved with the model."""

    encoder_names: ClassVar[tuple[str, ...]] = ()
    """Attribute names of the (pretrained) encoder submodules, for ``freeze_encoder`` and layer-wise lr decay;
    empty: the ``encoder`` (or ``backbone``) submodule, as smp, Web-IML, APSC-Net, TruFor and IML-ViT name it."""

    uses_jpeg_dct: ClassVar[bool] = False
    """``True`` for models whose ``forward(x, dct=None, qtable=None)`` also reads the JPEG's DCT coefficients
    (CAT-Net); :class:`webiml.inference.Localizer` then passes them (see :mod:`webiml.jpeg`)."""

    def forward_padded(self, x: Tensor) -> IMLOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> IMLOutput:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        d, m = self.size_divisor, self.min_input_size
        ph, pw = max((-h) % d, m - h), max((-w) % d, m - w)
        if ph or pw:
            # Reflect keeps image statistics at the border better than zeros; fall back for tiny inputs.
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        out = self.forward_padded(x)
        mask = out.mask_logits
        if mask.shape[-2:] != x.shape[-2:]:
            mask = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out.mask_logits = mask[..., :h, :w]
        if ph or pw:
            out.aux_mask_logits = [_crop_fraction(a, h / x.shape[-2], w / x.shape[-1]) for a in out.aux_mask_logits]
        return out

    @property
    def thresholds(self) -> dict[str, float]:
        """The default decision thresholds: ``{"pixel": ..., "image": ...}`` (saved in ``config.json``)."""
        return {"pixel": float(self.pixel_threshold), "image": float(self.image_threshold)}

    def set_thresholds(self, pixel: float | None = None, image: float | None = None) -> None:
        """Set the default decision thresholds (each a finite number in [0, 1])."""
        for name, value in (("pixel", pixel), ("image", image)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} threshold must be a number in [0, 1], got {value!r}")
            setattr(self, f"{name}_threshold", float(value))

    @torch.inference_mode()
    def predict(self, images: Tensor | np.ndarray | Sequence[np.ndarray | Tensor]) -> IMLOutput:
        """Inference on raw images: normalises, runs in eval mode (then restores the mode), returns logits.

        ``images`` (``uint8`` 0..255 or float 0..1) may be

        - a tensor ``(3, H, W)`` or ``(B, 3, H, W)`` (channels first, as in PyTorch);
        - a numpy array ``(H, W, 3)`` or ``(B, H, W, 3)`` (channels last, as read by PIL, imageio,
          :func:`webiml.io.read_image` or OpenCV after BGR -> RGB), or ``(H, W)`` grey;
        - a list of such images of one size (stacked into a batch).

        The output is at the input resolution. Images of different sizes, or large ones, go through
        :class:`webiml.inference.Localizer`, which batches by size and tiles.
        """
        batch = as_image_batch(images)
        was_training = self.training
        self.eval()
        try:
            return self(self.normalize(batch.to(self.input_mean.device)))
        finally:
            self.train(was_training)


def as_image_batch(images: Tensor | np.ndarray | Sequence[np.ndarray | Tensor]) -> Tensor:
    """A channels-first ``(B, 3, H, W)`` tensor (dtype kept) from the inputs :meth:`IMLModel.predict` accepts."""
    if isinstance(images, list | tuple):
        if not images:
            raise ValueError("predict: empty list of images")
        parts = [as_image_batch(im) for im in images]
        sizes = {tuple(p.shape[-2:]) for p in parts}
        if len(sizes) > 1:
            raise ValueError(f"predict: images of different sizes {sorted(sizes)}; predict them one by one or use "
                             "webiml.inference.Localizer(model).localize_many(images)")
        return torch.cat(parts)
    if isinstance(images, np.ndarray):
        arr = images
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
            raise ValueError(f"predict: a numpy image must be (H, W, 3), (B, H, W, 3) or (H, W) (channels last), "
                             f"got shape {images.shape}")
        if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"predict: a numpy image must be uint8 (0..255) or float (0..1), got {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.permute(2, 0, 1)[None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
    if isinstance(images, Tensor):
        if images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise ValueError(f"predict: a tensor must be (3, H, W) or (B, 3, H, W) (channels first), got shape "
                             f"{tuple(images.shape)}; numpy arrays are channels last")
        return images if images.ndim == 4 else images[None]
    raise TypeError(f"predict: expected a tensor, a numpy array or a list of them, got {type(images).__name__}")


def _crop_fraction(t: Tensor, fh: float, fw: float) -> Tensor:
    """Crop the top-left ``fh`` x ``fw`` fraction of a lower-resolution map (undoes bottom/right padding)."""
    hh = max(1, round(t.shape[-2] * fh))
    ww = max(1, round(t.shape[-1] * fw))
    return t[..., :hh, :ww]


class WholeImageResize:
    """Mixin (before :class:`IMLModel`) for models that resize the whole image to a square ``input_size`` as
    their authors do (``None``: native size): then tiles would each be resized, so they are not ``tile_safe``."""

    input_size: int | None

    @property
    def tile_safe(self) -> bool:
        return self.input_size is None
