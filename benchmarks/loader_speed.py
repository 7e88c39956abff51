"""Training-loader throughput: images/s per worker for decode + train augmentation at 512x512.

Generates ``--images`` JPEG photos (default 1024x768, quality 90, smooth random content, like camera photos
after web compression) with PNG masks and a manifest, then measures, in one process (= one DataLoader
worker):

- ``decode``: :func:`webiml.data.datasets.load_sample` only (JPEG + PNG decode, mask to target);
- ``decode+augment``: the training pipeline of :class:`~webiml.data.datamodule.IMLDataModule` with its
  defaults (random scale 0.5-1.5, crop/pad to 512 with crop bias, flip, JPEG re-compression with p=0.3).

and optionally a DataLoader with ``--loader-workers`` workers (batch 8, collate included) to show scaling.
Photometric augmentation runs on the accelerator after transfer and is not part of this.

    python benchmarks/loader_speed.py
    python benchmarks/loader_speed.py --images 64 --size 1920x1080 --loader-workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_data(root: Path, n: int, w: int, h: int) -> Path:
    from webiml.data.manifest import ManifestRecord, write_manifest

    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 6, (h, w, 3))
        arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        (root / "img").mkdir(parents=True, exist_ok=True)
        (root / "mask").mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / "img" / f"{i}.jpg", quality=90)
        m = np.zeros((h, w), np.uint8)
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        m[y:y + h // 4, x:x + w // 4] = 255
        Image.fromarray(m).save(root / "mask" / f"{i}.png")
        records.append(ManifestRecord(str(root / "img" / f"{i}.jpg"), str(root / "mask" / f"{i}.png"), 1, "bench"))
    return write_manifest(root / "manifest.jsonl", records)


def rate(fn, n: int, passes: int) -> float:
    fn(0)  # warm-up
    t0 = time.perf_counter()
    for _p in range(passes):
        for i in range(n):
            fn(i)
    return passes * n / (time.perf_counter() - t0)


def measure(records: list, crop: int, passes: int) -> tuple[float, float]:
    """(decode, decode+augment) images/s in this process (= one DataLoader worker) over ``records``."""
    from webiml.data.datasets import ManifestDataset, load_sample
    from webiml.data.transforms import make_train_transform

    ds = ManifestDataset(records, make_train_transform(crop_size=crop), train=True)
    return rate(lambda i: load_sample(records[i]), len(records), passes), rate(lambda i: ds[i], len(records), passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", default="1024x768", help="WxH of the generated photos")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--loader-workers", type=int, default=0, help="also time a DataLoader with this many workers")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)  # what one DataLoader worker gets

    from webiml.data.datasets import ManifestDataset, collate_skip_broken
    from webiml.data.manifest import read_manifest
    from webiml.data.transforms import make_train_transform

    base = Path(tempfile.mkdtemp(prefix="webiml-loader-bench-"))
    try:
        manifest = make_data(base, args.images, w, h)
        records = read_manifest(manifest)
        tf = make_train_transform(crop_size=args.crop)
        ds = ManifestDataset(records, tf, train=True)
        torch.manual_seed(0)
        print(f"{args.images} JPEG photos {w}x{h} + PNG masks; crop {args.crop}; 1 thread; "
              f"cpu {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f}")
        print(f"train pipeline: {tf!r}".replace("\n", " "))
        dec, aug = measure(records, args.crop, args.passes)
        print(f"decode          : {dec:6.1f} images/s per worker")
        print(f"decode+augment  : {aug:6.1f} images/s per worker  ({args.crop}x{args.crop} crops)")
        if args.loader_workers:
            loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, num_workers=args.loader_workers,
                                                 collate_fn=collate_skip_broken, persistent_workers=True)
            for _ in loader:  # warm-up epoch (worker start)
                break
            t0 = time.perf_counter()
            n = 0
            for _ in range(args.passes):
                for batch in loader:
                    n += batch["image"].shape[0]
            total = n / (time.perf_counter() - t0)
            print(f"DataLoader x{args.loader_workers}: {total:6.1f} images/s total "
                  f"({total / args.loader_workers:.1f} per worker, batch 8, collate included)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
