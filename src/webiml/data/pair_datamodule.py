"""Pair data for the CAAAv2 parts: pair manifests (:mod:`webiml.data.pairs`) in, fixed-size ``uint8`` pairs out.

- :class:`PairDataset`: the pairs of a manifest as tensors for one of the :data:`MODES`.
- :class:`PairDataModule`: pair manifests, or synthetic pairs (:mod:`webiml.data.pair_synthesis`)
  generated on first use (deterministic from ``seed``, cached on disk). ``mode`` says which model the
  batches are for: ``"classifier"`` (all pairs, both images resized), ``"spg"`` (SPG pairs, the original
  aligned onto the forgery with the recorded crop box) or ``"sdg"`` (SDG and unrelated pairs, both images
  resized independently).

Usable from the ``webiml`` LightningCLI by ``class_path`` (see ``configs/caaa/*.yaml``) with the tasks of
:mod:`webiml.tasks.pairs`. Images travel as ``uint8`` and are normalised on the device by the model's own
statistics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from webiml.align import box_homography, warp_original
from webiml.data.masks import IGNORE, target_from_mask
from webiml.data.pair_synthesis import write_pair_dataset
from webiml.data.pairs import PairCategory, PairRecord, read_pair_manifest
from webiml.data.photo_pool import make_photo_pool
from webiml.io import ImageReadError, hwc_to_chw, read_image, read_mask

log = logging.getLogger(__name__)

__all__ = ["MODES", "PairDataModule", "PairDataset"]

MODES = ("classifier", "spg", "sdg")
_DEFAULT_CATEGORIES: dict[str, dict[str, float]] = {
    "classifier": {PairCategory.SPG: 0.45, PairCategory.SDG: 0.45, PairCategory.UNRELATED: 0.1},
    "spg": {PairCategory.SPG: 1.0},
    "sdg": {PairCategory.SDG: 0.85, PairCategory.UNRELATED: 0.15},
}
_MODE_CATEGORIES = {
    "classifier": (PairCategory.SPG, PairCategory.SDG, PairCategory.UNRELATED),
    "spg": (PairCategory.SPG,),
    "sdg": (PairCategory.SDG, PairCategory.UNRELATED),
}



def _resize_u8(image: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    x = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return x.round().clamp(0, 255).to(torch.uint8)


def _resize_target(target: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(target.shape[-2:]) == size:
        return target
    return F.interpolate(target[None], size=size, mode="nearest")[0]


def collate_pairs(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Collate the pairs that loaded (broken ones are ``None``); ``None`` when none did (the task skips it)."""
    kept = [b for b in batch if b is not None]
    return default_collate(kept) if kept else None


class PairDataset(Dataset):
    """Pairs of a manifest as fixed-size tensors for one of the :data:`MODES`.

    Items: ``original``/``forged`` ``uint8`` (3, S, S); ``mask`` float target (1, S, S) of the forgery
    (with :data:`~webiml.data.masks.IGNORE`); ``source_mask`` (1, S, S) of the original (all IGNORE when
    unknown); ``category`` (1 = SPG, 0 = SDG/unrelated); ``aligned`` (1/0, IGNORE for non-SPG pairs);
    ``box`` (4,) and ``box_valid``; ``forged_size`` (H', W') and ``index``.

    Args:
        records: pair records (absolute paths).
        mode: ``"classifier"``, ``"spg"`` or ``"sdg"`` (see the module docstring).
        size: side of the square output (or ``(h, w)``).
        train: apply random horizontal flips (``hflip``) and box jitter (``box_jitter``, SPG mode: the
            crop box used for alignment is perturbed by up to this fraction, imitating alignment error).
        low_res_p, low_res_range: training only: each image, independently with probability ``low_res_p``,
            loses resolution (shrunk by a factor drawn from ``low_res_range``, then brought to ``size``), so
            that a model trained on photos of one size also works on smaller, upsampled web images.
    """

    def __init__(
        self,
        records: Sequence[PairRecord],
        mode: str = "spg",
        size: int | tuple[int, int] = 256,
        train: bool = False,
        hflip: float = 0.5,
        box_jitter: float = 0.0,
        low_res_p: float = 0.0,
        low_res_range: tuple[float, float] = (0.4, 1.0),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.records = list(records)
        self._reported: set[int] = set()
        self.mode = mode
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.train = bool(train)
        self.hflip = float(hflip) if train else 0.0
        self.box_jitter = float(box_jitter) if train else 0.0
        self.low_res_p = float(low_res_p) if train else 0.0
        lo, hi = (float(v) for v in low_res_range)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"low_res_range must satisfy 0 < low <= high <= 1, got {low_res_range}")
        self.low_res_range = (lo, hi)

    def _maybe_low_res(self, image: Tensor) -> Tensor:
        if self.low_res_p <= 0 or torch.rand(()) >= self.low_res_p:
            return image
        lo, hi = self.low_res_range
        s = lo + (hi - lo) * float(torch.rand(()))
        h, w = image.shape[-2:]
        return _resize_u8(image, (max(8, round(h * s)), max(8, round(w * s))))

    def __len__(self) -> int:
        return len(self.records)

    def _target(self, path: str | None, hw: tuple[int, int], default: float) -> Tensor:
        if path is None:
            return torch.full((1, *hw), default, dtype=torch.float32)
        m = np.array(read_mask(path), copy=True)
        if m.shape != hw:
            raise ValueError(f"{path}: mask shape {m.shape} does not match its image {hw}")
        return target_from_mask(m)[None]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        """An item. A broken pair (unreadable file, a decompression bomb, mismatched mask) is reported once;
        in training another pair takes its place, in evaluation it is left out (``None``, dropped by
        :func:`collate_pairs`) so one bad pair among thousands does not stop a test run."""
        for _ in range(10):
            try:
                return self._load(index)
            except (ImageReadError, ValueError) as err:
                if index not in self._reported:
                    self._reported.add(index)
                    log.warning("skipping broken pair %d: %s", index, err)
                if not self.train:
                    return None
                index = int(torch.randint(len(self.records), ()).item())
        raise RuntimeError(f"10 broken pairs in a row in a dataset of {len(self.records)}; last: {self.records[index].forged}")

    def _load(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        original = hwc_to_chw(read_image(rec.original))
        forged = hwc_to_chw(read_image(rec.forged))
        fhw = (int(forged.shape[1]), int(forged.shape[2]))
        ohw = (int(original.shape[1]), int(original.shape[2]))
        is_spg = rec.category == PairCategory.SPG
        # no mask file: "nothing pasted" for SDG/unrelated pairs, "unknown" (ignored) for SPG pairs
        mask = self._target(rec.mask, fhw, IGNORE if is_spg else 0.0)
        source_mask = self._target(rec.source_mask, ohw, IGNORE)
        box = torch.tensor(rec.crop_box, dtype=torch.float32)
        if self.mode == "spg":
            b = box.clone()
            if self.box_jitter > 0:
                b = b + (torch.rand(4) * 2 - 1) * self.box_jitter
                b = torch.stack([b[0].clamp(0, 0.5), b[1].clamp(0, 0.5), b[2].clamp(0.5, 1), b[3].clamp(0.5, 1)])
            h = box_homography(tuple(b.tolist()), ohw, fhw)
            warped, valid = warp_original(original, h, fhw)
            original = torch.where(valid[None], warped, forged)
            source_mask = torch.full((1, *fhw), IGNORE)
        original = _resize_u8(self._maybe_low_res(original), self.size)
        forged = _resize_u8(self._maybe_low_res(forged), self.size)
        mask = _resize_target(mask, self.size)
        source_mask = _resize_target(source_mask, self.size)
        if self.hflip and torch.rand(()) < self.hflip:
            forged, mask = forged.flip(-1), mask.flip(-1)
            if self.mode != "sdg":  # the pair's geometry must survive: flip both (and the box)
                original, source_mask = original.flip(-1), source_mask.flip(-1)
                box = torch.stack([1 - box[2], box[1], 1 - box[0], box[3]])
        if self.mode == "sdg" and self.hflip and torch.rand(()) < self.hflip:
            original, source_mask = original.flip(-1), source_mask.flip(-1)
        return {
            "original": original,
            "forged": forged,
            "mask": mask,
            "source_mask": source_mask,
            "category": torch.tensor(int(is_spg)),
            "aligned": torch.tensor(float(rec.aligned) if is_spg else IGNORE),
            "box": box,
            "box_valid": torch.tensor(is_spg),
            "forged_size": torch.tensor(fhw),
            "index": torch.tensor(index),
        }


def _as_list(x: str | os.PathLike[str] | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str | os.PathLike):
        return [str(x)]
    return [str(p) for p in x]


class PairDataModule(L.LightningDataModule):
    """Pair data for the CAAAv2 tasks: pair manifests, or synthetic pairs generated on first use.

    Args:
        mode: ``"classifier"``, ``"spg"`` or ``"sdg"``: which model the batches are for (and which pair
            categories are used: all, SPG only, SDG + unrelated).
        train, val, test, predict: pair manifest path(s). A missing ``train`` (and ``val``/``test`` when
            ``num_val``/``num_test`` > 0) is generated under ``root/<mode>/<split>``.
        root: folder of the generated pairs (generation is cached: same parameters, no regeneration).
        num_train, num_val, num_test: numbers of generated pairs.
        synth_size: size of the generated photos (``(h, w)`` or a side).
        photos: photo pool of the generator: ``"procedural"`` or a folder (see :func:`~webiml.data.photo_pool.make_photo_pool`);
            a folder's photos are split train 80 / val 10 / test 10 by a hash of the file name.
        categories: category probabilities of the generator (default depends on ``mode``).
        degrade: web-style degradation of the generated pairs.
        seed: seed of the generator (train: ``seed``, val: ``seed + 1``, test: ``seed + 2``).
        size: side of the square tensors the batches hold.
        batch_size, eval_batch_size, num_workers, pin_memory: loaders.
        hflip, box_jitter, low_res_p, low_res_range: training augmentation (see :class:`PairDataset`).
        label_tolerance: generated masks leave out changes of at most this many levels outside an edit's
            own region (see :func:`~webiml.data.pair_synthesis.make_spg_pair`); 0 marks every changed pixel.
    """

    def __init__(
        self,
        mode: str = "spg",
        train: str | list[str] | None = None,
        val: str | list[str] | None = None,
        test: str | list[str] | None = None,
        predict: str | list[str] | None = None,
        root: str = "runs/synthetic-pairs",
        num_train: int = 256,
        num_val: int = 32,
        num_test: int = 0,
        synth_size: int | tuple[int, int] = 256,
        photos: str = "procedural",
        categories: dict[str, float] | None = None,
        degrade: bool = True,
        seed: int = 0,
        size: int = 256,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        hflip: float = 0.5,
        box_jitter: float = 0.01,
        label_tolerance: int = 0,
        low_res_p: float = 0.0,
        low_res_range: tuple[float, float] = (0.4, 1.0),
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.manifests = {"train": _as_list(train), "val": _as_list(val), "test": _as_list(test), "predict": _as_list(predict)}
        self.root = Path(root)
        self.counts = {"train": int(num_train), "val": int(num_val), "test": int(num_test)}
        s = synth_size
        self.synth_size = (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))
        self.photos = photos
        self.categories = dict(categories) if categories is not None else dict(_DEFAULT_CATEGORIES[mode])
        self.degrade = bool(degrade)
        self.seed = int(seed)
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.hflip, self.box_jitter = float(hflip), float(box_jitter)
        self.label_tolerance = int(label_tolerance)
        self.low_res_p, self.low_res_range = float(low_res_p), (float(low_res_range[0]), float(low_res_range[1]))
        self.datasets: dict[str, PairDataset] = {}

    def _generated(self, split: str) -> list[str]:
        if self.manifests[split] or split == "predict" or self.counts.get(split, 0) <= 0:
            return self.manifests[split]
        offset = {"train": 0, "val": 1, "test": 2}[split]
        # photos of a folder are split by a hash of the file name, so held-out pairs never reuse a training
        # photo; procedural photos differ by seed
        pool = self.photos if self.photos == "procedural" else make_photo_pool(self.photos, split, max_side=512)
        path = write_pair_dataset(
            self.root / self.mode / split, self.counts[split], seed=self.seed + offset, pool=pool,
            size=self.synth_size, categories=self.categories, degrade=self.degrade, label_tolerance=self.label_tolerance,
        )
        return [str(path)]

    def prepare_data(self) -> None:
        for split in ("train", "val", "test"):
            self._generated(split)

    def _records(self, split: str) -> list[PairRecord]:
        keep = _MODE_CATEGORIES[self.mode]
        records = [r for p in self._generated(split) for r in read_pair_manifest(p)]
        return [r for r in records if r.category in keep]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}.get(stage or "", ("train", "val", "test", "predict"))
        for split in splits:
            if split in self.datasets:
                continue
            records = self._records(split)
            if records:
                self.datasets[split] = PairDataset(
                    records, self.mode, self.size, train=split == "train", hflip=self.hflip, box_jitter=self.box_jitter,
                    low_res_p=self.low_res_p, low_res_range=self.low_res_range,
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"no {split} pairs: give a {split} manifest or a positive num_{split}")
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size if split == "train" else self.eval_batch_size, shuffle=shuffle,
            num_workers=self.num_workers, pin_memory=self.pin_memory, drop_last=False,
            persistent_workers=self.num_workers > 0 and split == "train", collate_fn=collate_pairs,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", False)

