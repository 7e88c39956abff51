"""Speed budget of the front door, measured side by side in one run: ``python benchmarks/speed.py`` (~3-5 min on CPU).

Rows: start-up of ``webiml --help`` and ``webiml zoo list`` (fresh processes, best of N); ``webiml localize`` on
a 1024x1024 JPEG (whole process, and in-loop seconds) against the bare model forward at that size; the import
of the localize path; ``webiml test`` seconds per image against ``webiml localize`` on the same 8 generated
512x512 JPEGs (with masks, via a manifest; whole processes, the same architecture as the embedded model); the
``webiml fit`` training step (LightningCLI, a few steps on generated data, timed by benchmarks/step_timer.py)
against a bare PyTorch loop over the same model, data module and batch; DataLoader decode+augment images/s per
worker (benchmarks/loader_speed.py). Prints a Markdown table (hardware, versions, commit) for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import itertools
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join(p for p in [str(BENCH), os.environ.get("PYTHONPATH", "")] if p)}
NET = {"arch": "Unet", "encoder": "tu-tf_efficientnet_lite0", "encoder_weights": None, "image_head": True}
"""The embedded model's architecture (catalogue entry iml-unet-lite0-synthetic), trained and tested here."""
FIT_STEPS, WARMUP, BATCH, CROP = 14, 4, 4, 256


def _best_of(cmd: list[str], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, env=ENV, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times)


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - t


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2


def _fit_config(tmp: Path, train: Path, test: Path, timer: Path) -> Path:
    import yaml

    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": FIT_STEPS, "max_epochs": 1000,
                    "default_root_dir": str(tmp / "runs"), "enable_progress_bar": False, "enable_model_summary": False,
                    "callbacks": [{"class_path": "step_timer.StepTimer", "init_args": {"out": str(timer)}}]},
        "model": {"class_path": "webiml.tasks.iml.IMLTask",
                  "init_args": {"net": {"class_path": "webiml.models.SmpIML", "init_args": NET}, "lr": 1e-3}},
        "data": {"class_path": "webiml.data.datamodule.IMLDataModule",
                 "init_args": {"train": str(train), "test": {"bench": str(test)}, "batch_size": BATCH, "eval_batch_size": 1,
                               "num_workers": 0, "crop_size": CROP, "eval_policy": "native", "pin_memory": False}},
    }
    path = tmp / "fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _bare_loop(train: Path) -> tuple[list[float], list[float]]:
    """(whole step, step without data loading) seconds of a plain PyTorch loop: the same net, loss, data module
    and batch as the `webiml fit` run, AdamW, no Lightning."""
    import torch

    from webiml.data.datamodule import IMLDataModule
    from webiml.models import SmpIML
    from webiml.tasks.iml import IMLTask

    torch.manual_seed(0)
    task = IMLTask(net=SmpIML(**NET), lr=1e-3)
    net, criterion = task.net.train(), task.criterion
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    dm = IMLDataModule(train=str(train), batch_size=BATCH, num_workers=0, crop_size=CROP, pin_memory=False)
    dm.setup("fit")
    whole, inner = [], []
    while len(whole) < FIT_STEPS:
        it = iter(dm.train_dataloader())
        t0 = time.perf_counter()
        for batch in it:
            t1 = time.perf_counter()
            out = net(net.normalize(batch["image"]))
            parts = criterion(out, batch["mask"], batch.get("label"), batch.get("weight"))
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            t2 = time.perf_counter()
            whole.append(t2 - t0)
            inner.append(t2 - t1)
            t0 = t2
            if len(whole) == FIT_STEPS:
                break
    return whole[WARMUP:], inner[WARMUP:]


def _test_fit_loader_rows(py: str) -> list[tuple[str, str, str]]:
    import json

    from loader_speed import make_data, measure

    from webiml.data.manifest import read_manifest

    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        train = make_data(tmp / "train", 16, 512, 512)
        test = make_data(tmp / "test", 8, 512, 512)
        timer = tmp / "steps.json"
        cfg = _fit_config(tmp, train, test, timer)

        subprocess.run([py, "-m", "webiml", "fit", "--config", str(cfg)], env=ENV, check=True, capture_output=True)
        times: list[list[float]] = json.loads(timer.read_text())
        starts = [a for a, _ in times]
        fit_whole = _median([b - a for a, b in itertools.pairwise(starts[WARMUP:])])
        fit_inner = _median([b - a for a, b in times[WARMUP:]])
        bare_whole, bare_inner = (_median(v) for v in _bare_loop(train))
        shape = f"batch {BATCH}x3x{CROP}x{CROP}, median of steps {WARMUP + 1}-{FIT_STEPS}"
        rows.append((f"bare PyTorch training step ({shape}, data loading in-process)", f"{bare_whole:.3f} s",
                     f"reference; {bare_inner:.3f} s without data loading"))
        rows.append(("`webiml fit` training step (LightningCLI, same model / data / batch)", f"{fit_whole:.3f} s",
                     f"{bare_whole / fit_whole:.2f}x bare throughput (goal >= 0.9x); {fit_inner:.3f} s without data "
                     f"loading = {bare_inner / fit_inner:.2f}x"))

        ckpt = max((tmp / "runs").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        n = len(read_manifest(test))
        t_test = _timed([py, "-m", "webiml", "test", "--config", str(cfg), "--ckpt_path", str(ckpt)])
        t_loc = _timed([py, "-m", "webiml", "localize", str(test), "-o", str(tmp / "loc"), "--workers", "0", "--device", "cpu"])
        rows.append((f"`webiml localize` {n} images 512x512 (manifest), whole process", f"{t_loc / n:.3f} s/image",
                     f"reference ({t_loc:.1f} s in all)"))
        rows.append((f"`webiml test` same {n} images (checkpoint of the fit above), whole process", f"{t_test / n:.3f} s/image",
                     f"{t_test / t_loc:.2f}x localize ({t_test:.1f} s in all)"))

        records = read_manifest(make_data(tmp / "photos", 16, 1024, 768))
        dec, aug = measure(records, 512, 2)
        rows.append(("DataLoader decode, 1024x768 JPEG + PNG mask (one worker = one thread)", f"{dec:.1f} images/s", ""))
        rows.append(("DataLoader decode+augment to 512x512 crops (one worker)", f"{aug:.1f} images/s", ""))
    return rows


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
    rows += _test_fit_loader_rows(py)

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
