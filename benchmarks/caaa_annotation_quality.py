"""How good are automatic pair annotations, and does QES know?

For (original, forged, true mask) triples it runs the naive baseline annotator (aligned difference,
:class:`webiml.annotate.baseline.DifferenceAnnotator`) and, when a trained checkpoint folder is given,
CAAAv2 (:class:`webiml.annotate.caaa.CAAAv2Annotator`), and reports per data set and annotator:

- annotation quality: mean / median per-pair IoU of the soft mask binarised at 0.5 against the truth
  (a pair with an empty truth and an empty prediction counts 1);
- how well QES ranks annotations without ground truth: Spearman correlation of QES with the true IoU,
  and the mean IoU of the annotations QES keeps (QES > threshold) vs those it drops;
- category accuracy (SPG/SDG) and seconds per pair.

Triples:
- synthetic held-out pairs from webiml.data.pair_synthesis (SPG + SDG, generated with a seed the training
  configs do not use, cached under ``--work``), or any pair manifest with masks (``--pairs``);
- the real CASIA v1 samples ``shared/data/real/casia1-samples`` (tampered/, original/, mask/; every
  tampered image is an edited copy of its original: category SPG), skipped when absent.

Usage::

    python benchmarks/caaa_annotation_quality.py                        # baseline only
    python benchmarks/caaa_annotation_quality.py --checkpoint-dir runs/caaa/parts   # + CAAAv2
    python benchmarks/caaa_annotation_quality.py --pairs my_pairs.jsonl --no-casia --json results.json

The checkpoint folder holds the CAAAv2 parts as ``save_pretrained`` folders ``classifier/``, ``spg/`` and
``sdg/`` (see :func:`webiml.annotate.caaa.find_parts`). Without a classifier the true category
is given to CAAAv2 (reported as "oracle category").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASIA = REPO.parent / "shared" / "data" / "real" / "casia1-samples"


@dataclass
class Triple:
    name: str
    original: str
    forged: str
    mask: str | None
    category: str  # SPG or SDG


@dataclass
class Result:
    iou: list[float] = field(default_factory=list)
    qes: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failed: int = 0
    per_pair: list[dict[str, Any]] = field(default_factory=list)


def synthetic_triples(work: Path, n: int, size: int, seed: int, photos: str = "procedural") -> list[Triple]:
    from webiml.data.pair_synthesis import write_pair_dataset
    from webiml.data.pairs import read_pair_manifest

    tag = "" if photos == "procedural" else "-" + "".join(c if c.isalnum() else "_" for c in Path(photos).resolve().as_posix())[-40:]
    manifest = write_pair_dataset(work / f"heldout-{n}-{size}-{seed}{tag}", n, seed=seed, size=(size, size), pool=photos,
                                  categories={"SPG": 0.5, "SDG": 0.5}, degrade=True)
    return pair_manifest_triples(manifest, read_pair_manifest)


def pair_manifest_triples(path: Path, reader: Any = None) -> list[Triple]:
    if reader is None:
        from webiml.data.pairs import read_pair_manifest as reader
    out = []
    for i, rec in enumerate(reader(path)):
        if rec.category not in ("SPG", "SDG"):
            continue
        out.append(Triple(Path(rec.forged).stem or str(i), rec.original, rec.forged, rec.mask, rec.category))
    return out


def casia_triples(root: Path) -> list[Triple]:
    out = []
    for f in sorted((root / "tampered").glob("*.png")):
        o, m = root / "original" / f.name, root / "mask" / f.name
        if o.is_file() and m.is_file():
            out.append(Triple(f.stem, str(o), str(f), str(m), "SPG"))
    return out


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum() / union)


def evaluate(annotator: Any, triples: list[Triple], *, oracle_category: bool, verbose: bool) -> Result:
    from webiml.annotate.qes import qes
    from webiml.io import ImageReadError, read_image, read_mask

    res = Result()
    for t in triples:
        try:
            original = torch.from_numpy(np.array(read_image(t.original))).permute(2, 0, 1)
            forged = torch.from_numpy(np.array(read_image(t.forged))).permute(2, 0, 1)
            truth = read_mask(t.mask) > 127 if t.mask else np.zeros(forged.shape[-2:], bool)
        except ImageReadError as err:
            print(f"  skipped {t.name}: {err}", file=sys.stderr)
            res.failed += 1
            continue
        start = time.perf_counter()
        try:
            ann = annotator.annotate(original, forged, category=t.category) if oracle_category else annotator.annotate(original, forged)
        except Exception as err:  # a benchmark reports failures, it does not stop
            print(f"  {t.name}: annotation failed: {type(err).__name__}: {err}", file=sys.stderr)
            res.failed += 1
            continue
        res.seconds.append(time.perf_counter() - start)
        mask8 = (ann.soft_mask.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        score = qes(mask8)
        value = iou(mask8 >= 128, truth)
        res.iou.append(value)
        res.qes.append(score)
        res.per_pair.append({"pair": t.name, "category": t.category, "predicted": str(ann.category).upper(), "iou": value,
                             "qes": score, "align": getattr(ann, "align_method", None), "seconds": res.seconds[-1],
                             "category_source": getattr(ann, "category_source", None), "agreement": getattr(ann, "agreement", None)})
        if verbose:
            print(f"  {t.name:<40} {t.category} -> {ann.category}  IoU {value:.3f}  QES {score:.3f}  "
                  f"{getattr(ann, 'align_method', '')}", file=sys.stderr)
    return res


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def summarize(res: Result, threshold: float, category: str | None = None) -> dict[str, Any]:
    """Numbers over all pairs of ``res``, or over the pairs of one true ``category``."""
    pairs = [p for p in res.per_pair if category is None or p["category"] == category]
    ious = np.asarray([p["iou"] for p in pairs])
    qs = np.asarray([p["qes"] for p in pairs])
    secs = [p["seconds"] for p in pairs if "seconds" in p]
    kept = qs > threshold
    return {
        "n": len(ious), "failed": res.failed if category is None else 0,
        "mean_iou": float(ious.mean()) if len(ious) else math.nan,
        "median_iou": float(np.median(ious)) if len(ious) else math.nan,
        "spearman_qes_iou": _spearman(list(qs), list(ious)),
        "kept": int(kept.sum()),
        "mean_iou_kept": float(ious[kept].mean()) if kept.any() else math.nan,
        "mean_iou_dropped": float(ious[~kept].mean()) if (~kept).any() else math.nan,
        "category_acc": float(np.mean([p["category"] == p["predicted"] for p in pairs])) if pairs else math.nan,
        "sec_per_pair": float(np.mean(secs)) if secs else math.nan,
    }


def markdown(rows: list[tuple[str, str, dict[str, Any]]], threshold: float) -> str:
    head = ("| data | annotator | n | mean IoU | median IoU | Spearman(QES, IoU) | kept (QES > "
            f"{threshold:g}) | IoU kept | IoU dropped | category acc | s/pair |")
    lines = [head, "|" + "---|" * 11]
    for data, name, s in rows:
        lines.append(
            f"| {data} | {name} | {s['n']}" + (f" (+{s['failed']} failed)" if s["failed"] else "")
            + f" | {_fmt(s['mean_iou'])} | {_fmt(s['median_iou'])} | {_fmt(s['spearman_qes_iou'])} | {s['kept']}/{s['n']}"
            f" | {_fmt(s['mean_iou_kept'])} | {_fmt(s['mean_iou_dropped'])} | {_fmt(s['category_acc'], 2)}"
            f" | {_fmt(s['sec_per_pair'], 2)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="synthetic",
                    help="'synthetic' (held-out pairs from webiml.data.pair_synthesis, default), a pair manifest with masks, or 'none'")
    ap.add_argument("--num-synthetic", type=int, default=40, help="held-out synthetic pairs (SPG + SDG)")
    ap.add_argument("--synth-size", type=int, default=256, help="side of the synthetic photos")
    ap.add_argument("--photos", default="procedural",
                    help="photo pool of the synthetic pairs: 'procedural' or a folder of photos (use photos the parts were not trained on)")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the held-out pairs (training uses 0..2)")
    ap.add_argument("--work", default="runs/bench-annotation", help="cache folder of the generated pairs")
    ap.add_argument("--casia", default=str(DEFAULT_CASIA), help="CASIA samples folder (tampered/, original/, mask/)")
    ap.add_argument("--no-casia", action="store_true", help="skip the CASIA triples")
    ap.add_argument("--checkpoint-dir", default=None, help="trained CAAAv2 parts (classifier/, spg/, sdg/): adds CAAAv2")
    ap.add_argument("--caaa-random", action="store_true", help="also run CAAAv2 with random weights (pipeline check only)")
    ap.add_argument("--oracle-category", action="store_true", help="give CAAAv2 the true category even with a classifier")
    ap.add_argument("--ablate-verification", action="store_true",
                    help="also run CAAAv2 with the classifier's category alone (verify_category=False)")
    ap.add_argument("--qes-threshold", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=None, help="at most this many triples per data set")
    ap.add_argument("--json", default=None, help="write all numbers (and per-pair values) to this JSON file")
    ap.add_argument("-v", "--verbose", action="store_true", help="per-pair lines on stderr")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    from webiml.annotate.caaa import find_parts
    from webiml.annotate.pipeline import build_annotator

    datasets: list[tuple[str, list[Triple]]] = []
    if args.pairs == "synthetic":
        photos = "" if args.photos == "procedural" else f", photos {Path(args.photos).name}"
        datasets.append((f"synthetic held-out (seed {args.seed}{photos})",
                         synthetic_triples(Path(args.work), args.num_synthetic, args.synth_size, args.seed, args.photos)))
    elif args.pairs != "none":
        datasets.append((Path(args.pairs).name, pair_manifest_triples(Path(args.pairs))))
    if not args.no_casia:
        if Path(args.casia, "tampered").is_dir():
            datasets.append(("CASIA v1 samples", casia_triples(Path(args.casia))))
        else:
            print(f"note: {args.casia} not found; CASIA skipped", file=sys.stderr)
    if args.limit:
        datasets = [(n, t[: args.limit]) for n, t in datasets]

    annotators: list[tuple[str, Any, bool]] = [("baseline (aligned diff)", build_annotator("baseline"), False)]
    if args.checkpoint_dir:
        parts = find_parts(args.checkpoint_dir)
        oracle = args.oracle_category or "classifier" not in parts
        annotators.append((f"CAAAv2{' (oracle category)' if oracle else ''}",
                           build_annotator("caaa", args.checkpoint_dir, require_classifier=not oracle), oracle))
        if args.ablate_verification and not oracle:
            annotators.append(("CAAAv2 (classifier only)", build_annotator("caaa", args.checkpoint_dir, verify_category=False), False))
    if args.caaa_random:
        annotators.append(("CAAAv2 random weights", build_annotator("caaa"), False))

    rows, dump = [], []
    for data, triples in datasets:
        for name, ann, oracle in annotators:
            print(f"{data}: {name} on {len(triples)} pairs ...", file=sys.stderr)
            res = evaluate(ann, triples, oracle_category=oracle, verbose=args.verbose)
            s = summarize(res, args.qes_threshold)
            rows.append((data, name, s))
            dump.append({"data": data, "annotator": name, **s, "pairs": res.per_pair})
            cats = sorted({p["category"] for p in res.per_pair})
            if len(cats) > 1:  # pooled numbers mix easy and hard categories: show each too
                for c in cats:
                    sc = summarize(res, args.qes_threshold, c)
                    rows.append((f"{data}, {c} only", name, sc))
                    dump.append({"data": f"{data}, {c} only", "annotator": name, **sc})
    print(markdown(rows, args.qes_threshold))
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
