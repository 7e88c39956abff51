"""The web-supervision experiment of MIML in miniature: does training on auto-annotated real web forgeries help?

M0 and M1 start from the same weights (``--init``) and get the same budget (``--steps`` optimiser steps of
``--batch`` images, same schedule, seed and crop):

- **M0**: synthetic forgeries made on the fly (splicing, copy-move, removal) only;
- **M1**: the same generator plus Object Jitter, with every ``--web-every``-th training sample a real web
  forgery of ``../shared/data/real/web-pairs`` auto-annotated by ``webiml annotate`` (CAAAv2 with
  ``--parts``, or the naive baseline annotator; QES keeps the good annotations; the true masks are never
  known to the run).

Both are tested on ``casia1-samples`` and ``noso`` at native resolution: mean per-image pixel F1 / IoU at 0.5
over the forgeries, image AUC, and a paired comparison of per-image F1 (wins, 95 % bootstrap interval of
the mean difference). Every stage is resumable: rerunning the command skips what is done and resumes a
killed training from its last checkpoint.

    python benchmarks/mini_miml.py --work runs/mini-miml --init iml-unet-lite0-online --parts runs/caaa-parts \
        --steps 300 --parallel --table benchmarks/results/mini_miml.md

Needs ../shared/data (research-only data, read in place). Two trainings in parallel take two cores.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CONFIG = REPO / "configs" / "embedded" / "unet_lite0_online.yaml"
SETS = {"casia1-samples": SHARED / "real" / "casia1-samples", "noso": SHARED / "real" / "noso"}


def _run(cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    if log is None:
        subprocess.run(cmd, check=True, env=env)
        return
    with log.open("a") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env)


def _webiml() -> list[str]:
    return [sys.executable, "-m", "webiml"]


def make_manifests(work: Path) -> dict[str, Path]:
    out = {}
    for name, root in SETS.items():
        manifest = work / "manifests" / f"{name}.jsonl"
        if not manifest.is_file():
            manifest.parent.mkdir(parents=True, exist_ok=True)
            _run(_webiml() + ["data", "index", "folder", str(root), "-o", str(manifest)])
        out[name] = manifest
    return out


def annotate(work: Path, parts: str | None, annotator: str) -> tuple[Path, dict[str, Any]]:
    out = work / "annotated"
    cmd = _webiml() + ["annotate", str(SHARED / "real" / "web-pairs" / "pairs"), "-o", str(out), "--annotator", annotator,
                       "--no-progress"]
    if parts:
        cmd += ["--checkpoint", parts]
    if not (out / "summary.json").is_file():
        _run(cmd, work / "annotate.log")
    return out / "manifest.jsonl", json.loads((out / "summary.json").read_text())


def _last_checkpoint(root: Path) -> str | None:
    found = sorted(glob.glob(str(root / "lightning_logs" / "version_*" / "checkpoints" / "last.ckpt")), key=os.path.getmtime)
    return found[-1] if found else None


def fit_command(name: str, work: Path, args: argparse.Namespace, web_manifest: Path | None) -> list[str]:
    root = work / name
    cmd = _webiml() + [
        "fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false", "--data.init_args.root", str(root / "data"),
        "--data.init_args.samples_per_epoch", str(args.steps * args.batch), "--data.init_args.batch_size", str(args.batch),
        "--data.init_args.num_val", "32", "--data.init_args.num_test", "0", "--model.init_args.lr", str(args.lr),
        "--model.init_args.warmup_steps", "0.05", "--data.init_args.data_seed", str(args.seed + 1),
    ]
    if args.init:
        cmd += ["--model.init_args.init_weights", args.init]
    if name == "M0":
        cmd += ["--data.init_args.kinds", "[splice, copy_move, removal]"]
    else:
        cmd += ["--data.init_args.kinds", "[splice, copy_move, removal, jitter]",
                "--data.init_args.extra_train", f"[{web_manifest}]", "--data.init_args.extra_every", str(args.web_every)]
    last = _last_checkpoint(root)
    if last:
        cmd += ["--ckpt_path", last]
    return cmd


def train(work: Path, args: argparse.Namespace, web_manifest: Path) -> dict[str, Path]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    models = {name: work / name / "model" for name in ("M0", "M1")}
    todo = [n for n, m in models.items() if not (m / "model.safetensors").is_file()]
    procs = []
    for name in todo:
        (work / name).mkdir(parents=True, exist_ok=True)
        cmd = fit_command(name, work, args, web_manifest)
        print("+", " ".join(cmd), flush=True)
        log = (work / name / "fit.log").open("a")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if not args.parallel:
            if proc.wait() != 0:
                raise SystemExit(f"{name}: training failed, see {work / name / 'fit.log'}")
        procs.append((name, proc))
    for name, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"{name}: training failed, see {work / name / 'fit.log'}")
    for name in todo:
        ckpt = _last_checkpoint(work / name)
        if ckpt is None:
            raise SystemExit(f"{name}: no checkpoint under {work / name}")
        tmp = work / name / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _run(_webiml() + ["export", ckpt, str(tmp)])
        os.replace(tmp, models[name])
    return models


def evaluate(models: dict[str, Path], manifests: dict[str, Path], work: Path) -> dict[str, Any]:
    import torch

    from webiml.evaluation import ImageScore, paired_comparison, score_manifest, scores_to_rows, summarize
    from webiml.hub import from_pretrained

    torch.set_num_threads(2)
    results: dict[str, Any] = {"models": {}, "paired": {}}
    per_image: dict[str, dict[str, list[Any]]] = {}
    for name, folder in models.items():
        cache = work / name / "per_image.json"
        if cache.is_file():
            rows = json.loads(cache.read_text())
        else:
            model = from_pretrained(folder)
            rows = {s: scores_to_rows(score_manifest(model, m)) for s, m in manifests.items()}
            cache.write_text(json.dumps(rows))
        per_image[name] = rows
        results["models"][name] = {s: summarize([ImageScore(**r) for r in rows[s]]) for s in manifests}
    for s in manifests:
        f1 = {n: [r["f1"] for r in per_image[n][s] if r["f1"] is not None] for n in models}
        results["paired"][s] = paired_comparison(f1["M0"], f1["M1"])
    return results


def write_table(results: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    lines = [
        "# Mini-MIML: synthetic only (M0) vs + auto-annotated web forgeries and Object Jitter (M1)", "",
        f"Command: `python benchmarks/mini_miml.py {' '.join(sys.argv[1:])}`", "",
        f"Budget per model: {args.steps} steps x {args.batch} images, lr {args.lr}, from `{args.init or 'ImageNet encoder'}`; "
        f"M1: every {args.web_every}th sample a kept web forgery. Annotation: `{args.annotator}`"
        + (f" with parts `{args.parts}`" if args.parts else "") + ".",
        f"Web pairs annotated: {summary.get('pairs', summary.get('total', '?'))}, kept by QES: {summary.get('kept', '?')}.", "",
        "M1 differs from M0 in two ways (Object Jitter and the web forgeries), so a difference cannot be given to either"
        " alone. Per-image F1 / IoU at 0.5 over the forged images at native size; image AUC from the image head.", "",
        "| model | set | forged | authentic | F1@0.5 | IoU@0.5 | image AUC |", "|---|---|---|---|---|---|---|",
    ]
    for name, sets in results["models"].items():
        for s, r in sets.items():
            fmt = {k: ("n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()}
            lines.append(f"| {name} | {s} | {fmt['n_manipulated']} | {fmt['n_authentic']} | {fmt['f1']} | {fmt['iou']} | {fmt['image_auc']} |")
    lines += ["", "Paired per-image F1, M1 - M0:", "", "| set | n | mean diff | 95 % bootstrap CI | M1 wins | M1 losses | ties |",
              "|---|---|---|---|---|---|---|"]
    for s, p in results["paired"].items():
        lines.append(f"| {s} | {p['n']} | {p['mean_diff']:+.3f} | [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] | {p['wins']} | {p['losses']} | {p['ties']} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/mini-miml", help="work folder (resumable)")
    p.add_argument("--init", default=None, help="weights both models start from (catalogue name, folder); default: ImageNet encoder")
    p.add_argument("--parts", default=None, help="CAAAv2 parts folder for webiml annotate")
    p.add_argument("--annotator", default="caaa", choices=["caaa", "baseline"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--web-every", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    p.add_argument("--parallel", action="store_true", help="train M0 and M1 at the same time")
    p.add_argument("--table", default="benchmarks/results/mini_miml.md")
    args = p.parse_args(argv)
    if not SHARED.is_dir():
        print(f"error: {SHARED} not found: this benchmark needs the shared research data")
        return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    manifests = make_manifests(work)
    web_manifest, summary = annotate(work, args.parts, args.annotator)
    models = train(work, args, web_manifest)
    results = evaluate(models, manifests, work)
    results["annotation"] = summary
    (work / "results.json").write_text(json.dumps(results, indent=2))
    write_table(results, summary, args, Path(args.table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
