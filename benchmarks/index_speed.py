"""Speed of ``webiml data index`` on a large tree of tiny files.

Generates a generic ``Tp/`` + ``Gt/`` + ``Au/`` tree (the ``folder`` source) of ``--files`` files (default
100,000: 40 % manipulated 8x8 PNG images, 40 % their 8x8 PNG masks, named ``<stem>_gt.png``, 20 % authentic
8x8 PNGs, in sub-folders of 1,000), then indexes it and reports files/s (images + masks checked per second).

What is checked per file depends on ``--check`` (the same modes as ``webiml data index --check``):

- ``full``: every image and mask fully decoded; mask/image sizes compared; empty and all-manipulated masks
  detected; manipulated area recorded.
- ``header``: image headers only (format + size, no pixel decoding), masks fully decoded, sizes compared.
- ``none``: existence only (``os.stat``-level), masks neither decoded nor compared.

The tiny files make this a measure of the per-file overhead (directory scan, pairing by stem, open, PIL
header parsing, process-pool transfer, manifest writing), which dominates on a real benchmark set as soon as
the decode itself is cheap; for real images, ``full`` is bound by JPEG decoding (see loader_speed.py).

    python benchmarks/index_speed.py                          # 100k files, workers 2, checks header and full
    python benchmarks/index_speed.py --files 20000 --checks none,header,full --workers 1,2 --cli

``--cli`` also times the ``webiml data index`` command end to end (includes interpreter + CLI start-up).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, files: int, per_dir: int = 1000) -> tuple[int, int]:
    """Write the tree; returns (manipulated, authentic) image counts. Blobs are pre-encoded, so generation
    is file creation only."""
    rng = np.random.default_rng(0)
    images = [_png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(16)]
    masks = []
    for k in range(16):
        m = np.zeros((8, 8), np.uint8)
        m[k % 4: k % 4 + 3, k // 4: k // 4 + 4] = 255
        masks.append(_png(m))
    n_tp = int(files * 0.4)
    n_au = files - 2 * n_tp
    for i in range(n_tp):
        sub = f"{i // per_dir:04d}"
        for folder, name, blob in (("Tp", f"img{i:07d}.png", images[i % 16]), ("Gt", f"img{i:07d}_gt.png", masks[i % 16])):
            d = root / folder / sub
            if i % per_dir == 0:
                d.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(blob)
    for i in range(n_au):
        d = root / "Au" / f"{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"au{i:07d}.png").write_bytes(images[i % 16])
    return n_tp, n_au


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--workers", default="2", help="comma-separated worker counts")
    parser.add_argument("--checks", default="header,full", help="comma-separated check modes")
    parser.add_argument("--root", help="where to build the tree (default: a temporary folder, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the generated tree")
    parser.add_argument("--cli", action="store_true", help="also time `webiml data index` end to end")
    args = parser.parse_args()

    from webiml.data.sources import index_source

    base = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="webiml-index-bench-"))
    tree = base / "tree"
    try:
        if not (tree / "Tp").is_dir():
            t0 = time.perf_counter()
            n_tp, n_au = make_tree(tree, args.files)
            print(f"generated {2 * n_tp + n_au} files ({n_tp} manipulated + {n_tp} masks + {n_au} authentic) "
                  f"in {time.perf_counter() - t0:.1f} s under {tree}")
        print(f"cpu: {os.cpu_count()} logical cores visible; load average {os.getloadavg()[0]:.2f}")
        print(f"{'check':<8} {'workers':>7} {'samples':>8} {'files':>8} {'seconds':>8} {'files/s':>9}")
        for check in args.checks.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                out = base / f"manifest-{check}-{workers}.jsonl"
                t0 = time.perf_counter()
                r = index_source("folder", tree, out, workers=workers, check=check)
                wall = time.perf_counter() - t0
                assert not r.problems, r.summary()
                print(f"{check:<8} {workers:>7} {len(r.records):>8} {r.n_files_checked:>8} {wall:>8.2f} "
                      f"{r.n_files_checked / wall:>9,.0f}", flush=True)
                if args.cli:
                    cmd = ["webiml", "data", "index", "folder", str(tree), "-o", str(out), "--workers", str(workers),
                           "--check", check]
                    t0 = time.perf_counter()
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                    wall = time.perf_counter() - t0
                    print(f"  `{' '.join(cmd[:4])} ... --workers {workers} --check {check}`: {wall:.2f} s end to end "
                          f"({r.n_files_checked / wall:,.0f} files/s including start-up)", flush=True)
    finally:
        if not args.keep and not args.root:
            t0 = time.perf_counter()
            shutil.rmtree(base, ignore_errors=True)
            print(f"removed the tree in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
