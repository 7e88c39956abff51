"""Model complexity of the zoo, side by side in one run: ``python benchmarks/complexity.py [--size 512] [--write]``.

For every registered IML architecture / variant (``webiml.list_models``; the CAAA pair parts take two images and
are listed apart): parameters, forward FLOPs at ``size`` x ``size`` (torch.utils.flop_counter, which counts a
multiply-add as 2 FLOPs: halve them for the "MACs" some papers call FLOPs), and CPU images/s (batch 1, eval,
no_grad, ``--threads`` torch threads, median of ``--repeats`` timed forwards after one warm-up), plus CUDA rows
when a GPU is present. Models whose forward needs more than an RGB tensor, or fails, get the reason instead.
With ``--write`` the table replaces the "Model complexity" section of benchmarks/RESULTS.md, with the hardware
and versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Model complexity (`python benchmarks/complexity.py --write`)"
PAIR_PARTS = {"PairClassifier", "SPGSegmenter", "SDGSegmenter", "CAAAv1Classifier", "DASS", "SACM"}
TEST_PRESETS = {"trufor_tiny", "iml_vit_tiny", "mesorch_tiny"}
"""Reduced configurations that exist for the tests only."""
SHIPPED = ["iml-unet-lite0-online"]
"""Catalogue models with weights in the package (SmpIML is any smp architecture: the shipped one stands for it)."""
BLIND = {"NoiseprintPP", "Noiseprint", "AdaptiveCFA"}
"""Models whose map comes from a numpy post-processing step (blind EM / block votes) the FLOP counter does not see."""


def _names() -> list[str]:
    """Every built-in IML model once: the named variants of a family (not the ``*_tiny`` test presets), else
    the architecture class with its defaults; the pair parts are listed apart."""
    from webiml.models.registry import BUILTIN_MODULES

    variants = {n for n in BUILTIN_MODULES if n[0].islower() and n not in TEST_PRESETS}
    with_variants = {BUILTIN_MODULES[v] for v in variants}
    classes = {n for n in BUILTIN_MODULES if n[0].isupper() and n != "SmpIML"
               and (BUILTIN_MODULES[n] not in with_variants or n in PAIR_PARTS)}
    return [*sorted(variants | classes, key=str.lower), *SHIPPED]


def _forward_flops(model: Any, x: Any) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def measure(name: str, size: int, repeats: int, device: str) -> dict[str, Any]:
    import torch

    from webiml.models.registry import architecture_of, create_model

    row: dict[str, Any] = {"model": name}
    try:
        cls = architecture_of(name) if name not in SHIPPED else None
        row["architecture"] = cls.__name__ if cls is not None else "SmpIML"
        if cls is None:
            from webiml.catalogue import load_catalogue

            cls = type(create_model(load_catalogue()[name].architecture))
        if cls.__name__ in PAIR_PARTS:
            row["note"] = "CAAA pair part (two images): not an IML model"
            return row
        torch.manual_seed(0)
        model = create_model(name).eval().to(device)
        row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        x = torch.rand(1, 3, size, size, device=device)
        with torch.no_grad():
            row["gflops"] = _forward_flops(model, x) / 1e9
            model(x)  # warm-up
            times = []
            for _ in range(repeats):
                if device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                model(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        row["img_s"] = 1.0 / statistics.median(times)
        if cls.__name__ in BLIND:
            row["note"] = "FLOPs of the network only (the blind post-processing runs in numpy)"
    except Exception as err:  # noqa: BLE001 - a model that cannot run here is reported, the table goes on
        row["note"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return row


def _hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", text)[1]  # type: ignore[index]
    except (OSError, TypeError):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
    import timm

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"CPU {cpu} ({os.cpu_count()} cores), GPU {gpu}; torch {torch.__version__}, timm {timm.__version__}, "
            f"python {platform.python_version()}; commit {commit}; {time.strftime('%Y-%m-%d')}")


def table(rows: list[dict[str, Any]], size: int, threads: int) -> str:
    head = f"| model | architecture | params (M) | GFLOPs @{size}x{size} | CPU img/s ({threads} thread{'s' if threads > 1 else ''}) | GPU img/s | note |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(key: str, fmt: str, r: dict[str, Any] = r) -> str:
            return format(r[key], fmt) if key in r else "-"
        lines.append(f"| {r['model']} | {r.get('architecture', '-')} | {f('params_m', '.2f')} | {f('gflops', '.1f')} | "
                     f"{f('img_s', '.2f')} | {f('gpu_img_s', '.1f')} | {r.get('note', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=[], help="model names (default: every registered one)")
    parser.add_argument("--write", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.only or _names():
        row = measure(name, args.size, args.repeats, "cpu")
        if torch.cuda.is_available() and "params_m" in row:
            row["gpu_img_s"] = measure(name, args.size, max(args.repeats, 10), "cuda").get("img_s")
        print(row, flush=True)
        rows.append(row)
    text = (f"{SECTION}\n\n{_hardware()}. Batch 1, eval mode, no_grad, median of {args.repeats} forwards after a warm-up; "
            "FLOPs from torch.utils.flop_counter (a multiply-add = 2 FLOPs), random weights (same graph as the released ones). "
            "CPU figures on a shared 2-core machine are indicative; compare rows, not machines.\n\n"
            f"{table(rows, args.size, args.threads)}\n")
    print(text)
    if args.write:
        old = RESULTS.read_text() if RESULTS.is_file() else ""
        if SECTION in old:
            before, rest = old.split(SECTION, 1)
            after = rest[rest.find("\n## ") + 1:] if "\n## " in rest else ""
            new = before + text + ("\n" + after if after else "")
        else:
            new = old.rstrip() + "\n\n" + text
        tmp = RESULTS.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(RESULTS)


if __name__ == "__main__":
    main()
