"""CAAAv2's annotator (webiml's reconstruction of the MIMLv2 paper's CAAAv2, whose code and weights are
unreleased): pair classifier -> registration -> SPG or SDG segmenter, on raw ``uint8`` pairs.

The MIML authors' own CAAA (v1) with their released weights is :mod:`webiml.annotate.caaa_v1`.

:class:`CAAAv2Annotator` chains the three CAAAv2 parts of :mod:`webiml.models.caaa` with the
registration of :mod:`webiml.align`; :func:`find_parts` reads a folder of saved parts
(``classifier/``, ``spg/``, ``sdg/``). The pair categories are :class:`webiml.data.pairs.PairCategory`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webiml.align import AlignResult, photometric_match, register_pair, registration_agreement, shrink_to_max_side
from webiml.data.pairs import PairCategory
from webiml.models.caaa import PairClassifier, SDGSegmenter, SPGSegmenter

__all__ = ["PART_FOLDERS", "AnnotationResult", "CAAAv2Annotator", "PartsAnnotator", "find_parts"]

PART_FOLDERS: dict[str, tuple[str, ...]] = {
    "classifier": ("classifier", "pair_classifier"),
    "spg": ("spg", "spg_segmenter"),
    "sdg": ("sdg", "sdg_segmenter"),
}
"""Sub-folders of a CAAAv2 parts folder (first name preferred), see :meth:`CAAAv2Annotator.from_pretrained`."""


def find_parts(folder: str | os.PathLike[str]) -> dict[str, str]:
    """The saved CAAAv2 parts of ``folder``: ``{"classifier": path, "spg": path, "sdg": path}`` for the
    sub-folders of :data:`PART_FOLDERS` that hold a ``save_pretrained`` model (missing parts are left out).
    Raises ``FileNotFoundError`` when the folder is missing or holds no segmenter."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"CAAAv2 parts folder not found: {root}")
    parts: dict[str, str] = {}
    for part, names in PART_FOLDERS.items():
        for name in names:
            sub = root / name
            if sub.is_dir() and ((sub / "config.json").is_file() or (sub / "model.safetensors").is_file()):
                parts[part] = str(sub)
                break
    if "spg" not in parts and "sdg" not in parts:
        raise FileNotFoundError(f"{root}: no CAAAv2 segmenter found (expected save_pretrained folders {root}/spg "
                                f"and/or {root}/sdg, and {root}/classifier)")
    return parts


@dataclass
class AnnotationResult:
    """CAAAv2's annotation of one pair.

    ``soft_mask``: float ``(H', W')`` in [0, 1] at the forgery's resolution; ``category``: ``"SPG"`` or
    ``"SDG"``; ``class_prob``: the probability of that category (the classifier's; the registration
    agreement when registration overrode it; 1.0 when it was given); ``category_source``: ``"given"``,
    ``"classifier"`` or ``"registration"``; ``aligned``: whether the SPG pair was judged spatially aligned
    (``False`` for SDG). ``align_method`` / ``align_ok`` / ``valid_fraction`` / ``agreement`` describe the
    registration of SPG pairs (``agreement``: fraction of the forgery the registered original explains,
    see :func:`webiml.align.registration_agreement`); ``box`` is the classifier's crop box.
    """

    soft_mask: Tensor
    category: PairCategory
    class_prob: float
    aligned: bool
    align_method: str | None = None
    align_ok: bool = True
    valid_fraction: float = 1.0
    box: tuple[float, float, float, float] | None = None
    agreement: float | None = None
    category_source: str = "classifier"


class PartsAnnotator(nn.Module):
    """What the CAAA annotators (v2 here, v1 in :mod:`webiml.annotate.caaa_v1`) share: an optional
    ``classifier`` part with ``predict(original, forged)``, parts saved as ``save_pretrained`` folders, and
    the device of their weights."""

    classifier: Any

    def _save_parts(self, folder: str | os.PathLike[str], subfolders: dict[str, str]) -> Path:
        """Save each part (``subfolders``: attribute -> sub-folder) that is not ``None`` under ``folder``."""
        root = Path(folder)
        for part, sub in subfolders.items():
            model = getattr(self, part)
            if model is not None:
                model.save_pretrained(root / sub)
        return root

    def _device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def _predict_pair(self, original: Tensor, forged: Tensor) -> Any:
        """The classifier's output on a raw pair; ``ValueError`` without a classifier."""
        if self.classifier is None:
            raise ValueError("this annotator has no classifier: pass category= to annotate()")
        return self.classifier.predict(original, forged)


class CAAAv2Annotator(PartsAnnotator):
    """Classifier -> registration -> SPG or SDG segmenter, on raw ``uint8`` pairs.

    SPG pairs are registered by :func:`~webiml.align.register_pair`: a plain resize, the
    feature homography and the classifier's crop box are each scored by how much of the forgery the
    registered original explains, and the best is kept (so neither a wrong "aligned" decision nor a
    slightly-off homography spoils an exactly aligned pair). The registered original is matched to the
    forgery's colours (per-channel gain/offset, robust to the edits) when ``photometric``; forgery pixels
    without a counterpart in the original take the forgery's own pixels (zero difference there).

    Category verification (``verify_category``): a pair the classifier calls SDG is registered anyway,
    and when the original explains at least ``spg_agreement`` of the forgery it is an edited copy of the
    original, i.e. SPG (``category_source="registration"``); two different photos never agree that much.
    Conversely a pair the classifier calls SPG whose best registration explains less than
    ``sdg_agreement`` of the forgery cannot be an edited copy (or could not be registered, and then a
    difference map would mark most of the image): it goes to the SDG segmenter. Between the two
    thresholds the classifier decides. Measured agreements: SPG pairs >= 0.65 (CASIA) / 0.80 (synthetic),
    SDG <= 0.33, unrelated photos <= 0.17.

    Segmenters run at a long side of at most ``spg_size`` / ``sdg_size`` (SDG: both images) and the soft
    mask is resized to the forgery's resolution.

    Args:
        classifier, spg, sdg: the three models; ``classifier`` may be ``None`` when the category is
            always passed to :meth:`annotate`; a missing segmenter makes that category an error.
        spg_size, sdg_size: long side the segmenters run at.
        tta: flip test-time augmentation of the segmenters.
        photometric: match the registered original's colours to the forgery before SPG segmentation.
        verify_category: let a registration that explains the forgery override an SDG decision.
        spg_agreement: agreement (0..1) from which a pair counts as SPG.
        sdg_agreement: agreement below which a pair the classifier calls SPG counts as SDG (0: never).
        align_kwargs: keyword arguments of :func:`~webiml.align.align_pair` (feature candidate).
        agreement_kwargs: keyword arguments of :func:`~webiml.align.registration_agreement`.
    """

    def __init__(
        self,
        classifier: PairClassifier | None = None,
        spg: SPGSegmenter | None = None,
        sdg: SDGSegmenter | None = None,
        spg_size: int = 1024,
        sdg_size: int = 512,
        tta: bool = True,
        photometric: bool = True,
        verify_category: bool = True,
        spg_agreement: float = 0.5,
        sdg_agreement: float = 0.25,
        align_kwargs: dict[str, Any] | None = None,
        agreement_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < spg_agreement <= 1.0:
            raise ValueError(f"spg_agreement must be in (0, 1], got {spg_agreement}")
        if not 0.0 <= sdg_agreement <= spg_agreement:
            raise ValueError(f"sdg_agreement must be in [0, spg_agreement], got {sdg_agreement}")
        self.classifier, self.spg, self.sdg = classifier, spg, sdg
        self.spg_size, self.sdg_size = int(spg_size), int(sdg_size)
        self.tta = bool(tta)
        self.photometric = bool(photometric)
        self.verify_category = bool(verify_category)
        self.spg_agreement = float(spg_agreement)
        self.sdg_agreement = float(sdg_agreement)
        self.align_kwargs = dict(align_kwargs or {})
        self.agreement_kwargs = dict(agreement_kwargs or {})

    @classmethod
    def from_pretrained_parts(
        cls,
        classifier: str | os.PathLike[str] | None = None,
        spg: str | os.PathLike[str] | None = None,
        sdg: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> CAAAv2Annotator:
        """Build an annotator from saved parts (each a ``save_pretrained`` folder or hub id, or ``None``);
        ``kwargs`` go to the constructor (``spg_size``, ``sdg_size``, ``tta``, ``align_kwargs``)."""
        return cls(
            PairClassifier.from_pretrained(classifier) if classifier is not None else None,
            SPGSegmenter.from_pretrained(spg) if spg is not None else None,
            SDGSegmenter.from_pretrained(sdg) if sdg is not None else None,
            **kwargs,
        )

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], require_classifier: bool = True, **kwargs: Any) -> CAAAv2Annotator:
        """Build an annotator from a folder of saved parts: ``classifier/`` (or ``pair_classifier/``),
        ``spg/`` (or ``spg_segmenter/``) and ``sdg/`` (or ``sdg_segmenter/``), each a ``save_pretrained``
        folder (as written by :meth:`save_pretrained` or :func:`webiml.tasks.pairs.export_pair_checkpoint`).

        A folder without the classifier is refused (``FileNotFoundError``): without it every pair whose
        category is not given fails. ``require_classifier=False`` accepts it (the category is then passed
        to :meth:`annotate`, e.g. an oracle category in a benchmark). A missing segmenter is ``None``.
        ``kwargs`` go to the constructor."""
        parts = find_parts(folder)
        if require_classifier and "classifier" not in parts:
            names = " or ".join(f"{n}/" for n in PART_FOLDERS["classifier"])
            raise FileNotFoundError(f"{folder}: CAAAv2 parts folder without the pair classifier (no save_pretrained "
                                    f"folder {names}); it decides SPG or SDG for every pair")
        return cls.from_pretrained_parts(**parts, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Save the parts as ``save_pretrained`` folders ``classifier/``, ``spg/``, ``sdg/`` under ``folder``."""
        return self._save_parts(folder, {part: part for part in ("classifier", "spg", "sdg")})

    @torch.inference_mode()
    def classify(self, original: Tensor, forged: Tensor) -> tuple[PairCategory, float, bool, tuple[float, float, float, float]]:
        """``(category, class_prob, aligned, box)`` of a raw pair from the classifier."""
        out = self._predict_pair(original, forged)
        p = float(out.spg_probs()[0])
        box = tuple(float(v) for v in out.box[0].tolist())
        if p >= 0.5:
            return PairCategory.SPG, p, float(out.aligned_probs()[0]) >= 0.5, box
        return PairCategory.SDG, 1.0 - p, False, box

    def register(self, original: Tensor, forged: Tensor, box: tuple[float, float, float, float] | None = None) -> Any:
        """The best registration of the original onto the forgery (:func:`~webiml.align.register_pair`)."""
        return register_pair(original.cpu(), forged.cpu(), crop_box=box, agreement_kwargs=self.agreement_kwargs, **self.align_kwargs)

    @torch.inference_mode()
    def annotate(
        self, original: Tensor, forged: Tensor, category: str | None = None, aligned: bool | None = None
    ) -> AnnotationResult:
        """Annotate one pair: ``original`` ``uint8`` (3, H, W), ``forged`` ``uint8`` (3, H', W').

        ``category`` (``"SPG"``/``"SDG"``) overrides the classifier (and its verification); ``aligned=True``
        takes the pair as aligned (the original is resized onto the forgery, no registration search).
        """
        for name, t in (("original", original), ("forged", forged)):
            if t.ndim != 3 or t.shape[0] != 3:
                raise ValueError(f"{name} must be a (3, H, W) image, got shape {tuple(t.shape)}")
        was_training = self.training
        self.eval()
        try:
            box: tuple[float, float, float, float] | None = None
            registration = None
            source = "given"
            if category is None:
                category, prob, _, box = self.classify(original, forged)  # registration decides alignment
                source = "classifier"
                if self.verify_category and aligned is not True:
                    if category == PairCategory.SDG and self.spg is not None:
                        registration = self.register(original, forged, box)
                        if registration.agreement >= self.spg_agreement:
                            category, prob, source = PairCategory.SPG, registration.agreement, "registration"
                    elif category == PairCategory.SPG and self.sdg is not None and self.sdg_agreement > 0:
                        registration = self.register(original, forged, box)
                        if registration.agreement < self.sdg_agreement:
                            category, prob, source = PairCategory.SDG, 1.0 - registration.agreement, "registration"
            else:
                if str(category).upper() not in (PairCategory.SPG, PairCategory.SDG):
                    raise ValueError(f"category must be 'SPG' or 'SDG', got {category!r}")
                category = PairCategory(str(category).upper())
                prob = 1.0
                if category == PairCategory.SPG and self.classifier is not None and aligned is None:
                    box = self.classify(original, forged)[3]
            dev = self._device()
            fh, fw = forged.shape[-2:]
            result_kwargs: dict[str, Any] = {}
            if category == PairCategory.SPG:
                if self.spg is None:
                    raise ValueError("this annotator has no SPG segmenter")
                if aligned:
                    orig_on_forged = F.interpolate(
                        original[None].float(), size=(fh, fw), mode="bilinear", align_corners=False, antialias=True
                    )[0].cpu()
                    valid = torch.ones(fh, fw, dtype=torch.bool)
                    res = AlignResult(orig_on_forged, valid, torch.eye(3, dtype=torch.float64), "given", True)
                    agreement = registration_agreement(orig_on_forged, forged.cpu(), valid, **self.agreement_kwargs)
                else:
                    registration = registration or self.register(original, forged, box)
                    res, agreement = registration.result, registration.agreement
                    orig_on_forged, valid = res.original_warped.float(), res.valid
                if self.photometric:
                    orig_on_forged = photometric_match(orig_on_forged, forged.float().cpu(), valid)
                orig_on_forged = torch.where(valid[None], orig_on_forged, forged.float().cpu())
                o = shrink_to_max_side(self.spg.normalize(orig_on_forged.to(dev) / 255.0), self.spg_size)
                f = shrink_to_max_side(self.spg.normalize(forged.to(dev)), self.spg_size)
                out = self.spg.forward_tta(o, f) if self.tta else self.spg(o, f)
                logits = out.mask_logits
                is_aligned = res.method in ("resize", "given", "identity")
                result_kwargs = {"align_method": res.method, "align_ok": bool(res.ok), "valid_fraction": res.valid_fraction,
                                 "agreement": float(agreement)}
            else:
                if self.sdg is None:
                    raise ValueError("this annotator has no SDG segmenter")
                o = shrink_to_max_side(self.sdg.normalize(original.to(dev)), self.sdg_size)
                f = shrink_to_max_side(self.sdg.normalize(forged.to(dev)), self.sdg_size)
                out = self.sdg.forward_tta(o, f) if self.tta else self.sdg(o, f)
                logits = out.mask_logits
                is_aligned = False
            if logits.shape[-2:] != (fh, fw):
                logits = F.interpolate(logits, size=(fh, fw), mode="bilinear", align_corners=False)
            soft = logits[0, 0].sigmoid().float().cpu()
            return AnnotationResult(soft, category, float(prob), is_aligned, box=box, category_source=source, **result_kwargs)
        finally:
            self.train(was_training)

