"""The MIML authors' CAAA (v1) as an annotator: their classifier decides, DASS annotates aligned SPG pairs,
SACM annotates SDG pairs, with their preprocessing, test-time augmentation and thresholds.

It follows ``models for CIML`` of https://github.com/qcf-568/MIML: ``classify_convxl.py`` (pair -> SPG /
SDG / NotAlignedSPG), ``Auto_Annotate_SPG.py`` (DASS) and ``Auto_Annotate_SDG.py`` (SACM), on the parts of
:mod:`webiml.models.caaa_v1` converted from the authors' weights (``webiml convert caaa-v1-classifier /
caaa-v1-dass / caaa-v1-sacm``). For one pair (``uint8`` RGB images):

- classifier: both images resized to 512 x 512 (bilinear, no antialiasing), the authors' decision rule
  (:func:`~webiml.models.caaa_v1.caaa_v1_decisions`);
- SPG (aligned): both images resized to ``dass_size`` (1024) x ``dass_size`` and rounded to 8 bits, the
  9-channel input ``[original, forged, difference]`` (``dass_diff``, below), the mean of the 2-class logits
  over identity / vertical / horizontal flip, softmax, resized to the forgery's size;
- SDG: both images resized to 512 x 512, SACM's forgery logits summed over identity / vertical / horizontal
  flip of the forgery, softmax, resized to the forgery's size. The authors keep an SDG mask only when its
  QES (pixels above 15/16 over pixels above 1/16) exceeds 0.5: exactly what ``webiml annotate``'s default
  QES filter does (``--qes-threshold 0.5``, computed at the forgery's size rather than at 512 x 512).

The authors annotate nothing else. A NotAlignedSPG pair, or one their rule puts in no list, is an error
(reported by ``webiml annotate`` as a failed pair, never fatal) unless ``not_aligned="register"``: then
webiml registers the original onto the forgery (:func:`webiml.align.register_pair`; a webiml addition,
not the authors') and runs DASS on the registered pair.

``dass_diff`` (the 3 difference channels): ``"wrap"`` (default) is what ``Auto_Annotate_SPG.py`` computes:
``torch.abs`` of the *uint8* difference, i.e. ``(original - forged) mod 256``; the authors trained DASS on
``|original - forged|`` (``train_dass.py``), which ``"abs"`` gives. Which one their released masks came from
cannot be told from the code; ``--option dass_diff=abs`` switches. Other deviations: images are decoded by
PIL (the authors: OpenCV), resizing is bilinear in float rounded to 8 bits (OpenCV's fixed-point
``INTER_LINEAR`` can differ by one grey level), the DASS probability is resized in float (the authors
truncate it to 8 bits first) and the SDG mask is resized to the forgery (the authors keep 512 x 512).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from webiml.annotate.caaa import AnnotationResult, PartsAnnotator
from webiml.data.pairs import PairCategory
from webiml.models.caaa_v1 import DASS, NOT_ALIGNED_SPG, SACM, CAAAv1Classifier

__all__ = ["CAAAv1Annotator", "CAAAv1_PART_FOLDERS", "PairNotAnnotated", "find_v1_parts"]

CAAAv1_PART_FOLDERS: dict[str, str] = {"classifier": "classifier", "dass": "dass", "sacm": "sacm"}
"""Sub-folders of a CAAA v1 parts folder (each the output of the matching ``webiml convert caaa-v1-*``)."""


class PairNotAnnotated(ValueError):
    """The authors' CAAA annotates only aligned SPG and SDG pairs; this pair is neither (the message says why)."""


def find_v1_parts(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``{"classifier": path, "dass": path, "sacm": path}`` for the sub-folders of ``folder`` that hold a
    converted part (missing parts are left out). ``FileNotFoundError`` when there is no segmenter."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"CAAA v1 parts folder not found: {root}")
    parts = {part: str(root / sub) for part, sub in CAAAv1_PART_FOLDERS.items() if (root / sub / "config.json").is_file()}
    if "dass" not in parts and "sacm" not in parts:
        raise FileNotFoundError(
            f"{root}: no CAAA v1 segmenter found (expected {root}/dass and/or {root}/sacm, and {root}/classifier: "
            "webiml convert caaa-v1-dass DASS.pth DIR/dass, caaa-v1-sacm SAFM.pth DIR/sacm, caaa-v1-classifier convxl.pth DIR/classifier)")
    return parts


def _resize_u8(image: Tensor, size: int) -> Tensor:
    """``(3, H, W)`` uint8 -> ``(1, 3, size, size)`` uint8: bilinear, no antialiasing, rounded (albumentations'
    ``A.Resize``, i.e. OpenCV ``INTER_LINEAR``, up to its fixed-point rounding)."""
    x = image[None].float()
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return x.round().clamp(0, 255).to(torch.uint8)


class CAAAv1Annotator(PartsAnnotator):
    """Classifier -> DASS (aligned SPG) or SACM (SDG), the authors' CAAA on raw ``uint8`` pairs (see the
    module docstring).

    Args:
        classifier, dass, sacm: the converted parts; ``classifier`` may be ``None`` when the category is
            always passed to :meth:`annotate`; a missing segmenter makes its category an error.
        tta: the authors' flip test-time augmentation (DASS: mean of 3, SACM: sum of 3 logits).
        dass_size: side both images are resized to for DASS (the authors' 1024).
        dass_diff: DASS's difference channels, ``"wrap"`` (the authors' annotation script) or ``"abs"``
            (their training).
        not_aligned: ``"skip"`` (the authors: no annotation) or ``"register"`` (webiml: register, then DASS)
            for NotAlignedSPG pairs.
    """

    def __init__(
        self,
        classifier: CAAAv1Classifier | None = None,
        dass: DASS | None = None,
        sacm: SACM | None = None,
        tta: bool = True,
        dass_size: int = 1024,
        dass_diff: str = "wrap",
        not_aligned: str = "skip",
    ) -> None:
        super().__init__()
        if dass_diff not in ("wrap", "abs"):
            raise ValueError(f"dass_diff must be 'wrap' or 'abs', got {dass_diff!r}")
        if not_aligned not in ("skip", "register"):
            raise ValueError(f"not_aligned must be 'skip' or 'register', got {not_aligned!r}")
        self.classifier, self.dass, self.sacm = classifier, dass, sacm
        self.tta, self.dass_size, self.dass_diff, self.not_aligned = bool(tta), int(dass_size), dass_diff, not_aligned
        self.eval()  # an inference pipeline: its parts run (and stay) in eval mode

    @property
    def config(self) -> dict[str, Any]:
        """The settings that change the masks (recorded by ``webiml annotate`` in ``run.json``)."""
        return {"annotator": "caaa-v1", "tta": self.tta, "dass_size": self.dass_size, "dass_diff": self.dass_diff,
                "not_aligned": self.not_aligned}

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], require_classifier: bool = True, **kwargs: Any) -> CAAAv1Annotator:
        """Build the annotator from a folder with ``classifier/``, ``dass/``, ``sacm/`` (converted parts).
        Without ``classifier/`` it is refused unless ``require_classifier=False`` (the category is then
        passed to :meth:`annotate`). ``kwargs`` go to the constructor."""
        parts = find_v1_parts(folder)
        if require_classifier and "classifier" not in parts:
            raise FileNotFoundError(f"{folder}: CAAA v1 parts folder without classifier/ (webiml convert caaa-v1-classifier "
                                    "convxl.pth DIR/classifier); it decides SPG or SDG for every pair")
        return cls(
            CAAAv1Classifier.from_pretrained(parts["classifier"]) if "classifier" in parts else None,
            DASS.from_pretrained(parts["dass"]) if "dass" in parts else None,
            SACM.from_pretrained(parts["sacm"]) if "sacm" in parts else None,
            **kwargs,
        )

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Save the parts as ``classifier/``, ``dass/``, ``sacm/`` under ``folder``."""
        return self._save_parts(folder, CAAAv1_PART_FOLDERS)

    @torch.inference_mode()
    def classify(self, original: Tensor, forged: Tensor) -> tuple[str | None, float, float]:
        """``(decision, P(same source), P(aligned))`` of a raw pair: decision ``"SPG"``, ``"SDG"``,
        ``"NotAlignedSPG"`` or ``None`` (the authors' rule)."""
        out = self._predict_pair(original, forged)
        return out.decisions()[0], float(out.same_source_probs()[0]), float(out.aligned_probs()[0])

    def _dass_soft(self, original: Tensor, forged: Tensor) -> Tensor:
        if self.dass is None:
            raise ValueError("this annotator has no DASS (SPG segmenter)")
        s, dev = self.dass_size, self._device()
        x = self.dass.pair_input(_resize_u8(original, s).to(dev), _resize_u8(forged, s).to(dev), diff=self.dass_diff)
        logits = self.dass.tta_two_class_logits(x) if self.tta else self.dass.two_class_logits(x)
        return F.softmax(logits.float(), dim=1)[:, 1:2]

    def _sacm_soft(self, original: Tensor, forged: Tensor) -> Tensor:
        if self.sacm is None:
            raise ValueError("this annotator has no SACM (SDG segmenter)")
        s, dev, m = self.sacm.input_size, self._device(), self.sacm
        o, f = (m.normalize(F.interpolate(t[None].float().to(dev) / 255.0, size=(s, s), mode="bilinear", align_corners=False,
                                           antialias=False)) for t in (original, forged))
        logits = m.tta_two_class_logits(o, f) if self.tta else m.two_class_logits(o, f)[1]
        return F.softmax(logits.float(), dim=1)[:, 1:2]

    @torch.inference_mode()
    def annotate(self, original: Tensor, forged: Tensor, category: str | None = None, aligned: bool | None = None) -> AnnotationResult:
        """Annotate one pair: ``original`` ``uint8`` (3, H, W), ``forged`` ``uint8`` (3, H', W').

        ``category`` (``"SPG"`` / ``"SDG"``) replaces the classifier; a given ``"SPG"`` is taken as aligned
        unless ``aligned=False``. Raises :class:`PairNotAnnotated` for pairs the authors do not annotate.
        """
        for name, t in (("original", original), ("forged", forged)):
            if t.ndim != 3 or t.shape[0] != 3:
                raise ValueError(f"{name} must be a (3, H, W) image, got shape {tuple(t.shape)}")
        original, forged = original.to(torch.uint8), forged.to(torch.uint8)
        was_training = self.training
        self.eval()
        try:
            if category is None:
                decision, p_same, p_aligned = self.classify(original, forged)
                source = "classifier"
            else:
                cat = str(category).upper()
                if cat not in (PairCategory.SPG, PairCategory.SDG):
                    raise ValueError(f"category must be 'SPG' or 'SDG', got {category!r}")
                decision = NOT_ALIGNED_SPG if cat == "SPG" and aligned is False else cat
                p_same, p_aligned, source = float(cat == "SPG"), float(aligned is not False), "given"
            fh, fw = forged.shape[-2:]
            extra: dict[str, Any] = {}
            if decision == NOT_ALIGNED_SPG and self.not_aligned == "register":
                from webiml.align import register_pair

                reg = register_pair(original.cpu(), forged.cpu())
                warped = torch.where(reg.result.valid[None], reg.result.original_warped.to(torch.uint8), forged.cpu())
                soft = self._dass_soft(warped, forged)
                extra = {"align_method": reg.result.method, "align_ok": bool(reg.result.ok),
                         "valid_fraction": reg.result.valid_fraction, "agreement": float(reg.agreement)}
                category_out, prob, is_aligned = PairCategory.SPG, p_same, False
            elif decision == "SPG":
                soft = self._dass_soft(original, forged)
                category_out, prob, is_aligned = PairCategory.SPG, p_same, True
                extra = {"align_method": "resize"}
            elif decision == "SDG":
                soft = self._sacm_soft(original, forged)
                category_out, prob, is_aligned = PairCategory.SDG, 1.0 - p_same, False
            else:
                why = ("a same-source pair that is not aligned (NotAlignedSPG)" if decision == NOT_ALIGNED_SPG
                       else "neither SPG nor SDG by the authors' rule")
                raise PairNotAnnotated(
                    f"not annotated: the CAAA v1 classifier calls this pair {why} (P(same source) {p_same:.3f}, "
                    f"P(aligned) {p_aligned:.3f}); the authors annotate only aligned SPG and SDG pairs"
                    + (" (--option not_aligned=register registers it first)" if decision == NOT_ALIGNED_SPG else ""))
            soft = F.interpolate(soft, size=(fh, fw), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).cpu()
            return AnnotationResult(soft, category_out, float(prob), is_aligned, category_source=source, **extra)
        finally:
            self.train(was_training)
