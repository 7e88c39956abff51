"""Map-style datasets over manifests. Decoding happens here, in DataLoader workers.

A broken sample (unreadable image or mask, mask of another size than its image) is reported once with
its file name and skipped: in training another sample takes its place, in evaluation it is dropped from
the batch (and so from the metrics), so one bad file in thousands never stops a run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from webiml.data.manifest import ManifestRecord, read_manifest
from webiml.data.masks import target_from_mask
from webiml.data.transforms import collate_iml
from webiml.io import IMAGE_SUFFIXES, ImageReadError, hwc_to_chw, orient_array, read_image_stored, read_mask

log = logging.getLogger(__name__)



class SampleError(ValueError):
    """A sample is unusable (e.g. its mask and image sizes differ); the message names the files."""


_WARNED_01: set[str] = set()


def _scale_01_mask(mask: Any, path: str) -> Any:
    """A hand-written 0/1 mask (maximum 1) would train on an all-zero target: it becomes 0/255, with a warning
    (once per file and process)."""
    if mask.size and int(mask.max()) == 1:
        if path not in _WARNED_01:
            _WARNED_01.add(path)
            log.warning("%s: a 0/1 mask (maximum 1, not 255); read as 0/255. Masks are 0 = authentic, 255 = manipulated: "
                        "convert it (`webiml data index` does) to silence this", path)
        return mask * 255
    return mask


def load_sample(record: ManifestRecord) -> dict[str, Any]:
    """Decode one record into ``{"image": uint8 (3,H,W), "mask": float (1,H,W), ...}`` in the project convention.

    The image's EXIF orientation is applied to the image and to its mask together: a mask of the image's
    stored size is taken in the stored frame (as tools that ignore EXIF wrote it) and turned with the image;
    a mask already of the displayed size (width and height swapped) is taken as it is."""
    stored, orientation = read_image_stored(record.image)
    image = orient_array(stored, orientation)
    h, w = image.shape[:2]
    if record.mask is not None:
        mask = _scale_01_mask(read_mask(record.mask), record.mask)
        if mask.shape == stored.shape[:2]:
            mask = orient_array(mask, orientation)
        if mask.shape != (h, w):
            raise SampleError(f"{record.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but image {record.image} is {w}x{h}")
        target = target_from_mask(mask, record.band)[None]
    else:
        target = torch.zeros(1, h, w)
    return {
        "image": hwc_to_chw(image),
        "mask": target,
        "label": torch.tensor(float(record.label)),
        "weight": torch.tensor(float(record.weight)),
        "path": record.image,
        "source": record.source,
    }


class ManifestDataset(Dataset):
    """Samples of a manifest, transformed by ``transform`` (a callable on sample dicts).

    Args:
        records: manifest records with absolute paths (see :func:`read_manifest`).
        transform: sample transform (see :mod:`webiml.data.transforms`).
        train: on a broken sample, substitute another one (training) or return ``None`` (evaluation).
    """

    def __init__(self, records: Sequence[ManifestRecord], transform: Callable[[dict], dict] | None = None, train: bool = False) -> None:
        self.records = list(records)
        self.transform = transform
        self.train = train
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def sources(self) -> list[str]:
        return [r.source for r in self.records]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        """A sample by index, or by ``(index, seed)`` (a seeded :class:`SourceBalancedSampler`): then its random
        transforms draw from torch's RNG seeded with ``seed``, and the global RNG is left as it was."""
        if isinstance(key, tuple | list):
            index, seed = int(key[0]), int(key[1])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._get(index)
        return self._get(int(key))

    def _get(self, index: int) -> dict[str, Any] | None:
        for _ in range(10):
            try:
                sample = load_sample(self.records[index])
                sample["index"] = torch.tensor(index)
                return self.transform(sample) if self.transform is not None else sample
            except (ImageReadError, SampleError) as err:
                if index not in self._reported:
                    self._reported.add(index)
                    log.warning("skipping broken sample %d: %s", index, err)
                if not self.train:
                    return None
                index = int(torch.randint(len(self.records), ()).item())
        raise RuntimeError(f"10 broken samples in a row in a dataset of {len(self.records)}; last: {self.records[index].image}")


def collate_skip_broken(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Collate after dropping samples that failed to load; ``None`` if none is left."""
    kept = [b for b in batch if b is not None]
    return collate_iml(kept) if kept else None


def records_from_paths(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], source: str = "predict") -> list[ManifestRecord]:
    """Records for inference from manifests, image files, folders of images or ``.txt`` lists of paths."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    records: list[ManifestRecord] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            records += [ManifestRecord(str(f), source=source) for f in files]
        elif p.suffix.lower() in (".jsonl", ".csv"):
            records += read_manifest(p)
        elif p.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
            records += [ManifestRecord(ln if os.path.isabs(ln) else str(p.parent / ln), source=source) for ln in lines]
        elif p.exists():
            records.append(ManifestRecord(str(p), source=source))
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return records
