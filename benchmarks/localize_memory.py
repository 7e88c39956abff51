"""Peak memory and time of `webiml localize` on one large photo (default 4000x3000).

    python benchmarks/localize_memory.py [--model NAME_OR_PATH] [--size 4000x3000] [--tile 1024]

Runs the real command in a child process and reports its wall time and peak resident memory
(``ru_maxrss`` of the child), so the figure includes decoding, tiling, blending and writing the outputs.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="iml-unet-lite0-synthetic")
    parser.add_argument("--size", default="4000x3000", help="WxH of the generated photo")
    parser.add_argument("--tile", type=int, default=1024)
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "big.jpg"
        # A smooth photo-like image (gradients + texture) rather than white noise, which JPEG hates.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        rng = np.random.default_rng(0)
        img = np.stack([128 + 100 * np.sin(xx / 300 + c) * np.cos(yy / 200) for c in range(3)], axis=2)
        img += rng.normal(0, 6, img.shape).astype(np.float32)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(photo, quality=92)
        del img, yy, xx
        cmd = [sys.executable, "-m", "webiml", "localize", str(photo), "-m", args.model, "-o", str(Path(tmp) / "out"),
               "--tile", str(args.tile), "--device", "cpu", "--workers", "0"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out = np.asarray(Image.open(Path(tmp) / "out" / "big_prob.png"))
    print(f"{w}x{h} photo, tile {args.tile}, model {args.model}: {elapsed:.1f} s, peak RSS {peak_mb:.0f} MB, map {out.shape[1]}x{out.shape[0]}")


if __name__ == "__main__":
    main()
