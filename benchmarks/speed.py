"""Speed budget of the front door, measured side by side in one run: ``python benchmarks/speed.py``.

Rows: start-up of ``webiml --help`` and ``webiml zoo list`` (fresh processes, best of N); ``webiml localize`` on
a 1024x1024 JPEG (whole process, and in-loop seconds) against the bare model forward at that size; the import
of the localize path. Prints a Markdown table (hardware, versions, commit) for benchmarks/RESULTS.md.
Not yet measured here: ``webiml test`` s/image, the fit step against a bare loop, DataLoader images/s per worker
(see benchmarks/loader_speed.py for the last).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}


def _best_of(cmd: list[str], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, env=ENV, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(int(ENV["OMP_NUM_THREADS"]))
    py = sys.executable
    rows: list[tuple[str, str, str]] = []
    rows.append(("`webiml --help` start-up", f"{_best_of([py, '-m', 'webiml', '--help'], 5):.3f} s", "goal < 1 s"))
    rows.append(("`webiml zoo list` start-up", f"{_best_of([py, '-m', 'webiml', 'zoo', 'list'], 3):.3f} s", ""))
    rows.append(("`import webiml.inference, webiml.hub` (localize's imports)",
                 f"{_best_of([py, '-c', 'import webiml.inference, webiml.hub'], 3):.3f} s", ""))

    from webiml.hub import from_pretrained
    from webiml.inference import Localizer

    model = from_pretrained("iml-unet-lite0-synthetic").eval()
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        model(x)
        t = time.perf_counter()
        for _ in range(3):
            model(x)
        forward = (time.perf_counter() - t) / 3
    rows.append(("bare model forward, 1x3x1024x1024 (embedded model)", f"{forward:.3f} s", "reference"))
    with tempfile.TemporaryDirectory() as tmp:
        jpg = Path(tmp) / "one.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(jpg, quality=90)
        image = np.asarray(Image.open(jpg).convert("RGB"))
        loc = Localizer(model, device="cpu")
        loc.localize(image)
        t = time.perf_counter()
        for _ in range(3):
            loc.localize(image)
        in_loop = (time.perf_counter() - t) / 3
        rows.append(("Localizer.localize in-loop, 1024x1024", f"{in_loop:.3f} s", f"{in_loop / forward:.2f}x forward (goal <= 1.1x)"))
        whole = _best_of([py, "-m", "webiml", "localize", str(jpg), "-o", str(Path(tmp) / "out"), "--workers", "0",
                          "--device", "cpu"], 2)
        rows.append(("`webiml localize one.jpg` whole process", f"{whole:.3f} s", f"{whole / forward:.2f}x forward (goal <= 1.5x)"))

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    cpu = next((re.sub(r".*:\s*", "", line) for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    import lightning

    print(f"hardware: {cpu}, {os.cpu_count()} cores, OMP_NUM_THREADS={ENV['OMP_NUM_THREADS']}, load {os.getloadavg()[0]:.1f}; "
          f"python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}; commit {commit}\n")
    print("| measure | time | note |\n| --- | --- | --- |")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()
