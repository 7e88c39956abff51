"""``webiml calibrate MODEL --authentic SOURCE... [-o FOLDER] [--check MANIFEST...]``: the image verdict's threshold.

Scores authentic photos that the model never saw in training, each also JPEG-compressed (q90, q75) and
down-up resized (x0.5), and picks the lowest image threshold that calls at least ``--specificity`` of
them authentic in each of these versions, with ``--confidence`` (default 0.95): the specificity must hold
for new photos of the same kind, not only for this sample, so fewer false alarms are allowed on it than the
point estimate would (exact binomial bound, :func:`webiml.calibration.allowed_false_alarms`; ``--confidence 0``
for the point estimate). Forgeries play no part in the choice. ``--check`` manifests (with forged and authentic
records) then report the verdict's TPR / TNR and the image AUC at that threshold.

SOURCE: a folder of photos, an image file, a manifest (its authentic records), or a photo source of
``webiml.data.online`` (``coco-panoptic:PATH``, ``bsds:PATH``), of which only the held-out val and test
splits are used (training on those sources uses the train split).

With ``-o FOLDER`` the model is saved there (``webiml.save_pretrained``) with its thresholds in
``config.json``; ``webiml localize -m FOLDER`` then uses them as its defaults. The report goes to
``calibration.json`` (in FOLDER, or beside ``--report``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from webiml.cli import register_verb

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webiml calibrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="catalogue name, Hub id, folder or .safetensors")
    parser.add_argument("--authentic", nargs="+", required=True, metavar="SOURCE",
                        help="held-out authentic photos: folders, files, manifests, or coco-panoptic:PATH / bsds:PATH (val+test splits)")
    parser.add_argument("--specificity", type=float, default=0.9, help="fraction of authentic photos to call authentic (default 0.9)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence that the specificity holds beyond the calibration photos (default 0.95; 0: point estimate)")
    parser.add_argument("--pixel-threshold", type=float, default=None, help="pixel threshold to store (default: the model's, else 0.5)")
    parser.add_argument("--check", nargs="*", default=[], metavar="MANIFEST", help="manifests to report TPR / TNR / image AUC on")
    parser.add_argument("-o", "--out", default=None, help="save the model with its thresholds into this folder")
    parser.add_argument("--half", action="store_true", help="with -o: store float16 weights")
    parser.add_argument("--report", default=None, help="where to write calibration.json without -o (default: ./calibration.json)")
    parser.add_argument("--device", default=None)
    return parser


def authentic_paths(sources: list[str]) -> list[str]:
    """Image paths of the authentic photos named by ``sources`` (see the module docstring)."""
    from webiml.data.datasets import records_from_paths
    from webiml.data.photo_pool import make_photo_pool

    paths: list[str] = []
    for source in sources:
        kind = source.partition(":")[0]
        if ":" in source and not Path(source).exists() and kind in ("coco-panoptic", "bsds", "folder"):
            for split in ("val", "test"):
                paths += [str(e.image) for e in make_photo_pool(source, split=split).entries]
        else:
            paths += [r.image for r in records_from_paths(source) if r.label == 0]
    return sorted(dict.fromkeys(paths))


@register_verb("calibrate", "pick the image verdict's threshold on held-out authentic photos (target specificity)")
def calibrate(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from webiml.calibration import (
        VARIANTS,
        allowed_false_alarms,
        authentic_variant,
        threshold_for_specificity,
        verdict_rates,
    )
    from webiml.evaluation import score_manifest
    from webiml.hub import from_pretrained
    from webiml.inference import Localizer
    from webiml.io import ImageReadError, atomic_write_text, read_image

    try:
        paths = authentic_paths(args.authentic)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}")
        return 2
    if not paths:
        print("error: no authentic photos found in --authentic")
        return 2
    from webiml.models.base import IMLModel

    model = from_pretrained(args.model, model_class=IMLModel)  # a CheckpointError is one `error:` line (cli.main)
    localizer = Localizer(model, device=args.device)
    scores: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for path in tqdm(paths, desc="authentic", unit="img"):
        try:
            image = read_image(path)
        except ImageReadError as err:
            tqdm.write(f"skipped {err}")
            continue
        for variant in VARIANTS:
            scores[variant].append(localizer.localize(authentic_variant(image, variant)).image_score)
    every = [s for v in VARIANTS for s in scores[v]]
    # The verdict must hold for every kind of copy a photo arrives as (original, re-compressed, resized), not only
    # on average: the threshold meets the specificity on each variant separately, so it is the highest of theirs.
    confidence = args.confidence or None
    per_variant = {v: threshold_for_specificity(scores[v], args.specificity, confidence) for v in VARIANTS}
    threshold = max(per_variant.values())
    allowed = {v: allowed_false_alarms(len(scores[v]), args.specificity, confidence) for v in VARIANTS}
    if min(allowed.values()) < 0:
        print(f"warning: {min(len(s) for s in scores.values())} photos are too few to show specificity {args.specificity} "
              f"with confidence {confidence}: the threshold lies above every authentic score")
    pixel = args.pixel_threshold if args.pixel_threshold is not None else float(getattr(model, "pixel_threshold", 0.5))
    report: dict[str, Any] = {
        "model": args.model, "specificity_target": args.specificity, "confidence": confidence,
        "image_threshold": threshold, "pixel_threshold": pixel,
        "point_estimate_threshold": max(threshold_for_specificity(scores[v], args.specificity) for v in VARIANTS),
        "allowed_false_alarms": allowed,
        "authentic_photos": len(every) // len(VARIANTS), "variants": list(VARIANTS),
        "calibration_tnr": {v: float(sum(s < threshold for s in scores[v]) / max(1, len(scores[v]))) for v in VARIANTS},
        "per_variant_threshold": per_variant,
        "authentic_scores": scores,
        "check": {},
    }
    worst = min(report["calibration_tnr"].values())
    print(f"image threshold {threshold:.4f}: {report['calibration_tnr']['original']:.3f} of {report['authentic_photos']} "
          f"held-out authentic photos called authentic (worst variant {worst:.3f}, all variants "
          f"{sum(s < threshold for s in every) / len(every):.3f})")
    for manifest in args.check:
        scored = score_manifest(localizer, manifest)
        rates = verdict_rates([s.image_score for s in scored], [s.label for s in scored], threshold)
        report["check"][manifest] = rates
        fmt = {k: ("n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else v) for k, v in rates.items()}
        print(f"{manifest}: TPR {fmt['tpr']} ({fmt['n_manipulated']} forged), TNR {fmt['tnr']} ({fmt['n_authentic']} authentic), "
              f"image AUC {fmt['image_auc']}")
    if args.out:
        from webiml.hub import save_pretrained

        model.pixel_threshold, model.image_threshold = pixel, threshold
        save_pretrained(model, args.out, dtype="float16" if args.half else None)
        report_path = Path(args.out) / "calibration.json"
    else:
        report_path = Path(args.report or "calibration.json")
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    print(f"report: {report_path}" + (f"; model with thresholds: {args.out}/" if args.out else ""))
    return 0
