"""Object Jitter datasets: a folder of jittered photos, exact masks, a manifest and params.json (atomic,
deterministic, idempotent, like :func:`~webiml.data.synthetic.write_synthetic_dataset`), and the command
line ``python -m webiml.data.jitter build`` (:func:`main`).

Command line::

    python -m webiml.data.jitter build --out data/jitter/coco --n 100000 --seed 0 \\
        --coco data/coco/annotations/instances_train2017.json --images data/coco/train2017 \\
        --size 512 --zoom 1 1.5 --source coco-jitter --manifest data/manifests/coco-jitter.jsonl
    python -m webiml.data.jitter build --out runs/jitter-data/train --n 256 --seed 0 --procedural 192
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from webiml.data.arrays import resize_bool, resize_rgb
from webiml.data.coco import CocoInstances
from webiml.data.generated import params_unchanged, write_params
from webiml.data.jitter import JITTER_KIND, object_jitter
from webiml.data.manifest import ManifestRecord, read_manifest, write_manifest
from webiml.data.photo_pool import PhotoPool
from webiml.io import jpeg_compress, save_image

__all__ = ["InstanceSource", "main", "write_jitter_dataset"]

_JITTER_VERSION = 1  # bump when the output of object_jitter / write_jitter_dataset changes


class InstanceSource(Protocol):
    """What :func:`write_jitter_dataset` samples from: ``sample(rng) -> (image, instance masks)``."""

    signature: dict[str, Any]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]: ...


def _random_fit(image: np.ndarray, masks: list[np.ndarray], size: tuple[int, int], rng: np.random.Generator,
                zoom: tuple[float, float]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize (keeping the aspect) to cover ``size`` times a random zoom, then crop ``size`` at random
    (the authors: resize to 512-768, random 512 crop, then jitter)."""
    th, tw = size
    h, w = image.shape[:2]
    if (h, w) == (th, tw) and zoom == (1.0, 1.0):
        return image, masks
    f = max(th / h, tw / w) * float(rng.uniform(*zoom))
    nh, nw = max(th, math.ceil(h * f - 1e-6)), max(tw, math.ceil(w * f - 1e-6))
    if (nh, nw) != (h, w):
        image = resize_rgb(image, nh, nw)
        masks = [resize_bool(m, nh, nw) for m in masks]
    y0, x0 = int(rng.integers(nh - th + 1)), int(rng.integers(nw - tw + 1))
    return image[y0:y0 + th, x0:x0 + tw], [m[y0:y0 + th, x0:x0 + tw] for m in masks]


_WORKER_JOB: dict[str, Any] = {}


def _init_worker(job: dict[str, Any]) -> None:
    _WORKER_JOB.clear()
    _WORKER_JOB.update(job)


def _write_in_worker(i: int) -> ManifestRecord:
    return _write_sample(_WORKER_JOB, i)


def _write_sample(job: dict[str, Any], i: int) -> ManifestRecord:
    """Draw, jitter and save sample ``i`` of a jitter dataset (depends only on the job and ``i``)."""
    out, fmt, (qlo, qhi) = job["out"], job["image_format"], job["jpeg_quality"]
    rng = np.random.default_rng([job["seed"], 7, i])
    for _ in range(job["max_tries"]):
        photo, masks = job["instances"].sample(rng)
        if job["size"] is not None:
            photo, masks = _random_fit(photo, masks, job["size"], rng, job["zoom"])
        use_jpeg = bool(rng.random() < job["p_jpeg"])
        q1, q2 = (int(rng.integers(qlo, qhi + 1)) for _ in range(2))
        if use_jpeg:
            photo = jpeg_compress(photo, q1)
        f = object_jitter(photo, masks, rng, **job["jitter"])
        if f is not None:
            break
    else:
        raise RuntimeError(f"sample {i}: no acceptable jitter in {job['max_tries']} photos (do they have instance masks?)")
    stem = f"{i:06d}"
    img_path = out / "images" / f"{stem}.{fmt}"
    (out / "images" / f"{stem}.{'png' if fmt == 'jpg' else 'jpg'}").unlink(missing_ok=True)
    if fmt == "jpg":
        save_image(img_path, f.image, quality=q2)
    else:
        save_image(img_path, jpeg_compress(f.image, q2) if use_jpeg else f.image, compress_level=1)
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
    size: tuple[int, int] | int | None = (256, 256),
    zoom: tuple[float, float] = (1.0, 1.0),
    source: str = "jitter",
    image_format: str = "png",
    p_jpeg: float = 0.0,
    jpeg_quality: tuple[int, int] = (70, 100),
    scale: float = 1 / 16,
    p_blur: float = 0.2,
    p_second: float = 0.5,
    second_min_candidates: int = 8,
    max_area: float = 0.75,
    manifest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    max_tries: int = 100,
    num_workers: int = 0,
) -> Path:
    """Write ``n`` Object Jitter samples to ``out_dir`` and return the manifest path.

    Layout: ``images/<i:06d>.<png|jpg>``, ``masks/<i:06d>.png``, ``params.json`` and the manifest
    (``out_dir/manifest.jsonl`` or ``manifest``; rows ``label`` 1, ``source``, extra ``kind: "jitter"``
    and ``objects``: how many objects were jittered). Sample ``i`` depends only on ``seed``, ``i`` and the
    instance source, so the same arguments give byte-identical files; if ``params.json`` records the same
    parameters and every file exists, nothing is regenerated (unless ``overwrite``).

    Args:
        instances: where photos and instance masks come from: :class:`CocoInstances`, a
            :class:`~webiml.data.synthetic.PhotoPool` (folder of label maps, COCO panoptic, ...) or anything
            with ``sample(rng) -> (image, masks)`` and a ``signature`` dict. Default: a bank of
            ``clamp(n // 2, 32, 4096)`` procedural scenes of ``size`` (their objects are the instances).
        size: output size ``(h, w)`` (or an int): photos are resized to cover it times a zoom drawn from
            ``zoom`` and cropped at random *before* jittering (the result is never resampled); ``None``
            keeps each photo's own size. The authors resize to 1-1.5x the crop size: ``zoom=(1.0, 1.5)``.
        p_jpeg, jpeg_quality: with probability ``p_jpeg`` the photo is JPEG-compressed before jittering and
            the result again after it (qualities drawn from ``jpeg_quality``); for photos without a JPEG
            history (procedural) so compression traces alone do not give the label away.
        image_format: ``"png"`` or ``"jpg"`` (saved at a quality from ``jpeg_quality``; blurs the traces).
        scale, p_blur, p_second, second_min_candidates, max_area: see :func:`object_jitter`.
        max_tries: photos drawn per sample before giving up (``RuntimeError``).
        num_workers: write with this many processes (the files do not depend on it).
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if isinstance(size, int):
        size = (size, size)
    out = Path(out_dir)
    if instances is None:
        bank = min(max(int(n) // 2, 32), 4096)
        instances = PhotoPool.procedural(size=tuple(size) if size is not None else (256, 256), seed=seed, n=bank,  # type: ignore[arg-type]
                                         min_region=0.0, max_region=max_area)
    params = {"version": _JITTER_VERSION, "n": int(n), "seed": int(seed), "size": None if size is None else list(size),
              "zoom": list(zoom), "source": source, "image_format": image_format, "p_jpeg": float(p_jpeg),
              "jpeg_quality": list(jpeg_quality), "scale": float(scale), "p_blur": float(p_blur),
              "p_second": float(p_second), "second_min_candidates": int(second_min_candidates),
              "max_area": float(max_area), "instances": getattr(instances, "signature", repr(instances))}
    manifest_path = Path(manifest) if manifest is not None else out / "manifest.jsonl"
    params_path = out / "params.json"
    if not overwrite and manifest_path.is_file() and params_unchanged(
            params_path, params, lambda: all(Path(r.image).is_file() and r.mask is not None and Path(r.mask).is_file()
                                             for r in read_manifest(manifest_path))):
        return manifest_path
    params_path.unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    job = {"out": out, "instances": instances, "size": size, "zoom": tuple(zoom), "source": source,
           "image_format": image_format, "p_jpeg": p_jpeg, "jpeg_quality": tuple(jpeg_quality), "seed": int(seed),
           "max_tries": max_tries, "jitter": {"scale": scale, "p_blur": p_blur, "p_second": p_second,
                                             "second_min_candidates": second_min_candidates, "max_area": max_area}}
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
    b.add_argument("--size", type=int, default=None, help="square output size (default: --procedural SIZE, else 512)")
    b.add_argument("--native", action="store_true", help="keep each photo's size (no resize/crop)")
    b.add_argument("--zoom", type=float, nargs=2, default=(1.0, 1.0), metavar=("LO", "HI"),
                   help="resize photos to cover SIZE times a zoom in [LO, HI] before the crop (authors: 1 1.5)")
    b.add_argument("--max-side", type=int, default=None, help="downscale larger photos first")
    b.add_argument("--source", default="jitter", help="manifest source name (e.g. coco-jitter)")
    b.add_argument("--manifest", default=None, help="manifest path (default OUT/manifest.jsonl)")
    b.add_argument("--format", default="png", choices=("png", "jpg"))
    b.add_argument("--p-jpeg", type=float, default=0.0)
    b.add_argument("--p-blur", type=float, default=0.2)
    b.add_argument("--p-second", type=float, default=0.5)
    b.add_argument("--second-min-candidates", type=int, default=8)
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
                                zoom=tuple(args.zoom), source=args.source, image_format=args.format, p_jpeg=args.p_jpeg,
                                p_blur=args.p_blur, p_second=args.p_second,
                                second_min_candidates=args.second_min_candidates, max_area=args.max_area,
                                manifest=args.manifest, overwrite=args.overwrite, num_workers=args.workers)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

