"""Object Jitter online: :class:`ObjectJitterDataset` runs the MIML authors' ``coco`` training pipeline in
DataLoader workers, re-drawn every epoch; :class:`EpochKeySampler` hands it the epoch; fixed jitter sets
for manifest training are written from the same dataset (:func:`write_jitter_dataset`, ``python -m
webiml.data.jitter build``, :func:`main`).

The authors' pipeline (``coco_pipeline`` in ``models for IML/apscnet_train.py`` of
https://github.com/qcf-568/MIML): ``LoadImageFromFile``; ``ResizeCOCO(img_scale=[(512, 512), (768, 768)],
multiscale_mode='range', keep_ratio=False)``; ``RandomCrop(crop_size=(512, 512))``; ``RandomFlip(prob=0.0)``
(never flips); ``COCO()`` (:func:`~webiml.data.jitter.object_jitter`); ``Normalize``. No JPEG, flip or colour
augmentation follows the jitter. ``ResizeCOCO`` itself is not in the published code; its arguments are those
of mmseg's ``Resize``, which with them draws the width and the height independently and uniformly from
512..768 and resizes without keeping the aspect (``mmcv.imresize``: OpenCV bilinear, masks nearest), and
the ``COCO`` transform rescales the annotation masks and boxes by the same factors (``results['scale']``,
``results['scale_factor']``); :func:`resize_crop` does that. The dataset's ``__getitem__`` catches the
rejection (``assert False``) and loads another random image; :class:`ObjectJitterDataset` draws another
image from the sample's own generator.

Command line::

    python -m webiml.data.jitter build --out data/jitter/coco --n 100000 --seed 0 \\
        --coco data/coco/annotations/instances_train2017.json --images data/coco/train2017 \\
        --size 512 --source coco-jitter --manifest data/manifests/coco-jitter.jsonl
    python -m webiml.data.jitter build --out runs/jitter-data/train --n 256 --seed 0 --procedural 192
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from webiml.data.arrays import resize_linear_cv, resize_nearest_cv
from webiml.data.coco import CocoInstances
from webiml.data.forgeries import Forgery
from webiml.data.generated import params_unchanged, write_params
from webiml.data.jitter import JITTER_KIND, SECOND_PICKS, ObjectJitter
from webiml.data.manifest import ManifestRecord, read_manifest, write_manifest
from webiml.data.masks import target_from_mask
from webiml.data.photo_pool import PhotoPool
from webiml.io import hwc_to_chw, jpeg_compress, save_image

__all__ = ["EpochKeySampler", "InstanceSource", "ObjectJitterDataset", "main", "resize_crop", "write_jitter_dataset"]

_JITTER_VERSION = 2  # bump when the output of object_jitter / ObjectJitterDataset changes

SizeArg = int | tuple[int, int] | Sequence[int] | None


class InstanceSource(Protocol):
    """Photos with instance masks: ``sample(rng) -> (image, masks)`` and a ``signature`` dict. Sources that
    also have ``__len__`` and ``load(i)`` (optionally ``load_with_boxes(i)``, e.g.
    :class:`~webiml.data.coco.CocoInstances`) are read by index; others (a
    :class:`~webiml.data.photo_pool.PhotoPool`) are sampled."""

    signature: dict[str, Any]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]: ...


def _pair(size: SizeArg) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return int(h), int(w)


def resize_crop(image: np.ndarray, masks: list[np.ndarray], boxes: np.ndarray | None, size: tuple[int, int],
                rng: np.random.Generator, *, scale_range: tuple[float, float] = (1.0, 1.5), keep_aspect: bool = False,
                ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
    """The authors' geometry before the jitter: resize, then a random ``size`` crop.

    Default (``ResizeCOCO`` + ``RandomCrop``): width and height drawn independently from
    ``[int(w_c * lo), int(w_c * hi)]`` and ``[int(h_c * lo), int(h_c * hi)]`` (authors: 512..768 for a 512
    crop), the aspect is not kept; the image is resized with OpenCV's bilinear
    (:func:`~webiml.data.arrays.resize_linear_cv`), the masks with its nearest
    (:func:`~webiml.data.arrays.resize_nearest_cv`), the xyxy ``boxes`` scaled by the same factors, then
    shifted by the crop and clipped to it. ``keep_aspect=True`` (webiml's former writer): one factor
    ``max(h_c / h, w_c / w) * U(lo, hi)`` for both axes, so the photo covers the crop.
    """
    th, tw = size
    h, w = image.shape[:2]
    lo, hi = scale_range
    if keep_aspect:
        f = max(th / h, tw / w) * float(rng.uniform(lo, hi))
        nh, nw = max(th, math.ceil(h * f - 1e-6)), max(tw, math.ceil(w * f - 1e-6))
    else:
        nw = int(rng.integers(int(tw * lo), int(tw * hi) + 1))  # mmseg Resize.random_sample: (long, short)
        nh = int(rng.integers(int(th * lo), int(th * hi) + 1))  # = (width, height) for mmcv.imresize
    oy = int(rng.integers(max(nh - th, 0) + 1))  # mmseg RandomCrop.get_crop_bbox: offset_h, then offset_w
    ox = int(rng.integers(max(nw - tw, 0) + 1))
    crop = (oy, min(oy + th, nh), ox, min(ox + tw, nw))  # only the crop of the resized photo is computed
    image = resize_linear_cv(image, nh, nw, crop)
    masks = [resize_nearest_cv(m, nh, nw, crop) for m in masks]
    if boxes is not None:
        boxes = np.asarray(boxes, np.float32) * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
        ch, cw = image.shape[:2]
        boxes = np.asarray(boxes, np.float32) - np.array([ox, oy, ox, oy], np.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, cw)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, ch)
    return image, masks, boxes


class ObjectJitterDataset(Dataset):
    """Object Jitter on the fly: sample ``(epoch, index)`` depends only on ``seed``, ``epoch``, ``index`` and
    the source, so every epoch re-draws every sample and a resumed run sees the same ones.

    Args:
        instances: photos with instance masks. Indexed sources (``__len__`` + ``load``, e.g.
            :class:`~webiml.data.coco.CocoInstances`) give index ``i`` image ``i % len``, with its annotation
            boxes when they have ``load_with_boxes``; other sources are sampled with the sample's generator.
        length: number of indices (default: the source's length; required for sampled sources).
        size: crop size (authors: 512); ``None`` keeps every photo as it is (no resize, no crop).
        scale_range, keep_aspect: the resize before the crop (:func:`resize_crop`; authors: 1-1.5, aspect
            not kept).
        seed: seed of the generator.
        jitter: an :class:`~webiml.data.jitter.ObjectJitter` or its settings (default: the authors').
        p_jpeg, jpeg_quality: webiml's option (authors: none): with probability ``p_jpeg`` the photo is
            JPEG-compressed before the jitter and the result after it (qualities from ``jpeg_quality``), for
            photos without a JPEG history (procedural scenes).
        max_tries: photos drawn per sample before giving up (``RuntimeError``); a rejected photo is replaced
            by a random other one, as the authors' dataset does.
        transform: sample transform applied last (e.g. the training crop/augmentation; authors: none).
        source: the ``source`` of every sample.

    Keys: ``dataset[i]`` uses the epoch of :meth:`set_epoch`; ``dataset[(i, epoch)]`` names it (what
    :class:`EpochKeySampler` yields, so DataLoader workers need no shared state). A seeded
    :class:`~webiml.data.samplers.SourceBalancedSampler`'s ``(index, sample_seed)`` works the same way.
    """

    def __init__(
        self,
        instances: Any,
        *,
        length: int | None = None,
        size: SizeArg = 512,
        scale_range: tuple[float, float] = (1.0, 1.5),
        keep_aspect: bool = False,
        seed: int = 0,
        jitter: ObjectJitter | Mapping[str, Any] | None = None,
        p_jpeg: float = 0.0,
        jpeg_quality: tuple[int, int] = (70, 100),
        max_tries: int = 100,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        source: str = "jitter",
    ) -> None:
        self.instances = instances
        self.indexed = hasattr(instances, "load") and hasattr(instances, "__len__") and len(instances) > 0
        if length is None:
            if not self.indexed:
                raise ValueError("length is required for a sampled instance source")
            length = len(instances)
        self.length, self.size = int(length), _pair(size)
        self.scale_range, self.keep_aspect = (float(scale_range[0]), float(scale_range[1])), bool(keep_aspect)
        self.seed, self.epoch = int(seed), 0
        self.jitter = jitter if isinstance(jitter, ObjectJitter) else ObjectJitter(**dict(jitter or {}))
        self.p_jpeg, self.jpeg_quality = float(p_jpeg), (int(jpeg_quality[0]), int(jpeg_quality[1]))
        self.max_tries, self.transform, self.source = int(max_tries), transform, source

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def params(self) -> dict[str, Any]:
        """Everything the samples depend on besides the source (for caches such as ``params.json``)."""
        return {"size": None if self.size is None else list(self.size), "scale_range": list(self.scale_range),
                "keep_aspect": self.keep_aspect, "seed": self.seed, "p_jpeg": self.p_jpeg,
                "jpeg_quality": list(self.jpeg_quality), "jitter": self.jitter.params()}

    def _photo(self, i: int | None, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
        if i is None:
            image, masks = self.instances.sample(rng)
            return image, list(masks), None
        if hasattr(self.instances, "load_with_boxes"):
            image, masks, boxes = self.instances.load_with_boxes(i)
            return image, list(masks), np.asarray(boxes, np.float32)
        image, masks = self.instances.load(i)
        return image, list(masks), None

    def forgery(self, index: int, epoch: int | None = None) -> Forgery:
        """The jittered :class:`~webiml.data.forgeries.Forgery` of ``index`` in ``epoch`` (default: the current
        epoch), before ``transform``; ``info["photo"]`` is the source index used (``None`` when sampled)."""
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        photo = int(index) % len(self.instances) if self.indexed else None
        for _ in range(self.max_tries):
            image, masks, boxes = self._photo(photo, rng)
            if self.size is not None:
                image, masks, boxes = resize_crop(image, masks, boxes, self.size, rng, scale_range=self.scale_range,
                                                  keep_aspect=self.keep_aspect)
            q2 = None
            if self.p_jpeg > 0 and rng.random() < self.p_jpeg:
                q1, q2 = (int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)) for _ in range(2))
                image = jpeg_compress(image, q1)
            f = self.jitter(np.ascontiguousarray(image), masks, rng, boxes=boxes)
            if f is not None:
                if q2 is not None:
                    f.image = jpeg_compress(f.image, q2)
                f.info["photo"] = photo
                return f
            if self.indexed:
                photo = int(rng.integers(len(self.instances)))  # the authors: another random image
        raise RuntimeError(f"sample {index}: no acceptable jitter in {self.max_tries} photos "
                           "(do they have instance masks of at least 16 x 16 px?)")

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), self.epoch)
        f = self.forgery(index, epoch)
        sample = {
            "image": hwc_to_chw(f.image),
            "mask": target_from_mask(f.mask)[None],
            "label": torch.tensor(1.0),
            "weight": torch.tensor(1.0),
            "path": f"{self.source}://{epoch}/{index}",
            "source": self.source,
            "index": torch.tensor(index),
        }
        return self.transform(sample) if self.transform is not None else sample


class EpochKeySampler(Sampler):
    """Wraps a sampler and yields ``(index, epoch)`` keys for :class:`ObjectJitterDataset`.

    Lightning (and any loop calling ``set_epoch``) updates the epoch here, in the main process, so the
    keys carry it into DataLoader workers, persistent ones included; ``set_epoch`` is passed on.
    """

    def __init__(self, sampler: Sampler | Sequence[int]) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((int(i), epoch) for i in self.sampler)


# --------------------------------------------------------------------------------------------------
# fixed jitter sets (for manifest-based training: IMLDataModule, repeat factors)


_WORKER_JOB: dict[str, Any] = {}


def _init_worker(job: dict[str, Any]) -> None:
    _WORKER_JOB.clear()
    _WORKER_JOB.update(job)


def _write_in_worker(i: int) -> ManifestRecord:
    return _write_sample(_WORKER_JOB, i)


def _write_sample(job: dict[str, Any], i: int) -> ManifestRecord:
    """Sample ``i`` of epoch 0 of the job's dataset, saved (depends only on the job and ``i``)."""
    out, fmt, dataset = job["out"], job["image_format"], job["dataset"]
    f = dataset.forgery(i, epoch=0)
    stem = f"{i:06d}"
    img_path = out / "images" / f"{stem}.{fmt}"
    (out / "images" / f"{stem}.{'png' if fmt == 'jpg' else 'jpg'}").unlink(missing_ok=True)
    if fmt == "jpg":
        lo, hi = dataset.jpeg_quality
        save_image(img_path, f.image, quality=int(np.random.default_rng([dataset.seed, 9, i]).integers(lo, hi + 1)))
    else:
        save_image(img_path, f.image, compress_level=1)
    mask_path = out / "masks" / f"{stem}.png"
    save_image(mask_path, f.mask)
    return ManifestRecord(str(img_path), str(mask_path), 1, job["source"],
                          extra={"kind": JITTER_KIND, "objects": len(f.info["objects"])})


def write_jitter_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    *,
    seed: int,
    instances: InstanceSource | None = None,
    size: SizeArg = (256, 256),
    zoom: tuple[float, float] = (1.0, 1.5),
    keep_aspect: bool = False,
    source: str = "jitter",
    image_format: str = "png",
    p_jpeg: float = 0.0,
    jpeg_quality: tuple[int, int] = (70, 100),
    scale: float = 1 / 16,
    p_blur: float = 0.2,
    p_second: float = 0.5,
    second_min_candidates: int = 8,
    second_pick: str = "official",
    max_area: float = 0.75,
    manifest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    max_tries: int = 100,
    num_workers: int = 0,
) -> Path:
    """Write samples ``0 .. n-1`` of epoch 0 of an :class:`ObjectJitterDataset` to ``out_dir``; return the
    manifest path.

    A fixed set is one draw of the online data: use it where training reads manifests (``IMLDataModule``
    with repeat factors); :class:`ObjectJitterDataset` re-draws every epoch instead. Layout:
    ``images/<i:06d>.<png|jpg>``, ``masks/<i:06d>.png``, ``params.json`` and the manifest
    (``out_dir/manifest.jsonl`` or ``manifest``; rows ``label`` 1, ``source``, extra ``kind: "jitter"`` and
    ``objects``: how many objects were jittered). The same arguments give byte-identical files; if
    ``params.json`` records the same parameters and every file exists, nothing is regenerated (unless
    ``overwrite``).

    Args:
        instances: :class:`CocoInstances` (read by index, sample ``i`` from image ``i % len``, with its
            annotation boxes), a :class:`~webiml.data.photo_pool.PhotoPool` or anything with ``sample(rng)``
            and a ``signature``. Default: a bank of ``clamp(n // 2, 32, 4096)`` procedural scenes of ``size``.
        size, zoom, keep_aspect: the crop and the resize before it (:func:`resize_crop`; ``zoom`` is its
            ``scale_range``); ``size=None`` keeps every photo as it is.
        image_format: ``"png"`` or ``"jpg"`` (saved at a quality from ``jpeg_quality``).
        p_jpeg, jpeg_quality: see :class:`ObjectJitterDataset`.
        scale, p_blur, p_second, second_min_candidates, second_pick, max_area: see
            :func:`~webiml.data.jitter.object_jitter`.
        max_tries: photos drawn per sample before giving up (``RuntimeError``).
        num_workers: write with this many processes (the files do not depend on it).
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    size = _pair(size)
    out = Path(out_dir)
    if instances is None:
        bank = min(max(int(n) // 2, 32), 4096)
        instances = PhotoPool.procedural(size=size if size is not None else (256, 256), seed=seed, n=bank,
                                         min_region=0.0, max_region=max_area)
    jitter = ObjectJitter(scale=scale, p_blur=p_blur, p_second=p_second, second_min_candidates=second_min_candidates,
                          second_pick=second_pick, max_area=max_area)
    dataset = ObjectJitterDataset(instances, length=int(n), size=size, scale_range=zoom, keep_aspect=keep_aspect,
                                  seed=seed, jitter=jitter, p_jpeg=p_jpeg, jpeg_quality=jpeg_quality,
                                  max_tries=max_tries, source=source)
    params = {"version": _JITTER_VERSION, "n": int(n), "source": source, "image_format": image_format,
              **dataset.params(), "instances": getattr(instances, "signature", repr(instances))}
    manifest_path = Path(manifest) if manifest is not None else out / "manifest.jsonl"
    params_path = out / "params.json"
    if not overwrite and manifest_path.is_file() and params_unchanged(
            params_path, params, lambda: all(Path(r.image).is_file() and r.mask is not None and Path(r.mask).is_file()
                                             for r in read_manifest(manifest_path))):
        return manifest_path
    params_path.unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    job = {"out": out, "dataset": dataset, "source": source, "image_format": image_format}
    if num_workers > 0 and n > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(num_workers, initializer=_init_worker, initargs=(job,)) as pool:
            records = list(pool.imap(_write_in_worker, range(int(n)), chunksize=8))
    else:
        records = [_write_sample(job, i) for i in range(int(n))]
    write_manifest(manifest_path, records)
    write_params(params_path, params)
    return manifest_path


def _instances_from_args(args: argparse.Namespace) -> InstanceSource | None:
    if args.coco:
        return CocoInstances(args.coco, args.images, include_crowd=args.include_crowd, max_side=args.max_side)
    if args.folder:
        return PhotoPool.from_folder(args.folder, args.labels, max_side=args.max_side, min_region=0.0,
                                     max_region=args.max_area)
    if args.coco_panoptic:
        return PhotoPool.from_coco_panoptic(args.coco_panoptic, include_unannotated=False,
                                            max_side=args.max_side, min_region=0.0, max_region=args.max_area)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webiml.data.jitter", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write an Object Jitter dataset (images, masks, manifest)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--n", type=int, required=True, help="number of samples")
    b.add_argument("--seed", type=int, default=0)
    src = b.add_mutually_exclusive_group()
    src.add_argument("--coco", help="COCO instances JSON (or a folder holding instances.json)")
    src.add_argument("--folder", help="a folder of photos (with --labels: same-stem PNG instance label maps)")
    src.add_argument("--coco-panoptic", help="a COCO panoptic root (images/, panoptic/, panoptic.json)")
    src.add_argument("--procedural", type=int, metavar="SIZE", help="procedural scenes of SIZE px (default source)")
    b.add_argument("--images", help="images folder of --coco")
    b.add_argument("--labels", help="label maps folder of --folder")
    b.add_argument("--include-crowd", action="store_true")
    b.add_argument("--size", type=int, default=None, help="square crop size (default: --procedural SIZE, else 512)")
    b.add_argument("--native", action="store_true", help="keep each photo's size (no resize/crop)")
    b.add_argument("--zoom", type=float, nargs=2, default=(1.0, 1.5), metavar=("LO", "HI"),
                   help="resize each side to SIZE times [LO, HI] before the crop (authors: 1 1.5)")
    b.add_argument("--keep-aspect", action="store_true",
                   help="one zoom for both sides, covering SIZE (the authors draw width and height independently)")
    b.add_argument("--max-side", type=int, default=None, help="downscale larger photos first")
    b.add_argument("--source", default="jitter", help="manifest source name (e.g. coco-jitter)")
    b.add_argument("--manifest", default=None, help="manifest path (default OUT/manifest.jsonl)")
    b.add_argument("--format", default="png", choices=("png", "jpg"))
    b.add_argument("--p-jpeg", type=float, default=0.0, help="JPEG before and after the jitter (authors: 0)")
    b.add_argument("--p-blur", type=float, default=0.2)
    b.add_argument("--p-second", type=float, default=0.5)
    b.add_argument("--second-min-candidates", type=int, default=8,
                   help="boxes besides the first left for a second object (authors: 8)")
    b.add_argument("--second-pick", default="official", choices=SECOND_PICKS)
    b.add_argument("--max-area", type=float, default=0.75)
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--workers", type=int, default=0, help="parallel writer processes")
    args = parser.parse_args(list(argv) if argv is not None else None)
    side = args.size or args.procedural or 512
    size = None if args.native else (side, side)
    instances = _instances_from_args(args)
    if instances is None and args.native:
        parser.error("--native needs a photo source (--coco, --folder or --coco-panoptic)")
    path = write_jitter_dataset(args.out, args.n, seed=args.seed, instances=instances, size=size,
                                zoom=tuple(args.zoom), keep_aspect=args.keep_aspect, source=args.source,
                                image_format=args.format, p_jpeg=args.p_jpeg, p_blur=args.p_blur,
                                p_second=args.p_second, second_min_candidates=args.second_min_candidates,
                                second_pick=args.second_pick, max_area=args.max_area, manifest=args.manifest,
                                overwrite=args.overwrite, num_workers=args.workers)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
