"""Which image score makes the better verdict? The model's image head against scores read off its pixel map (maximum,
99.9th / 99th percentile, mean of the top 1 % / 5 %, area at or above 0.5, mean), each calibrated like
``webiml calibrate`` (specificity 0.9 with 95 % confidence, on the held-out authentic photos in four versions).

    python benchmarks/image_score_rules.py MODEL --out runs/x/image_scores.json [--synthetic 200]

Reports per score: image AUC on held-out generated forgeries (val split of the photos, half authentic: the
choice should be made on this column), the calibrated threshold, and image AUC / TPR / TNR on the real sets
(default casia1-samples and noso under data/manifests). Needs ../shared/data/natural (held-out photos).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

PHOTOS = ("coco-panoptic:../shared/data/natural/coco128", "bsds:../shared/data/natural/bsds500")
MANIFESTS = ("casia1-samples=data/manifests/casia1-samples.jsonl", "noso=data/manifests/noso.jsonl")
SCORES = ("head", "max", "q999", "q99", "top1", "top5", "frac50", "mean")


def map_scores(mask_probs: np.ndarray, head: float) -> dict[str, float]:
    """The image head's score and the pixel-map statistics of :data:`SCORES` for one image."""
    s = np.sort(mask_probs.astype(np.float64).ravel())[::-1]
    n = s.size
    return {"head": float(head), "max": float(s[0]), "q999": float(s[n // 1000]), "q99": float(s[n // 100]),
            "top1": float(s[: max(1, n // 100)].mean()), "top5": float(s[: max(1, n // 20)].mean()),
            "frac50": float((s >= 0.5).mean()), "mean": float(s.mean())}


def collect(model_name: str, manifests: list[str], n_synthetic: int) -> dict[str, Any]:
    from webiml.calibration import VARIANTS, authentic_variant
    from webiml.commands.calibrate import authentic_paths
    from webiml.data.datasets import records_from_paths
    from webiml.data.online import OnlineSyntheticDataset
    from webiml.hub import from_pretrained
    from webiml.inference import Localizer
    from webiml.io import read_image
    from webiml.models.base import IMLModel

    localizer = Localizer(from_pretrained(model_name, model_class=IMLModel))

    def scores(image: np.ndarray) -> dict[str, float]:
        loc = localizer.localize(image)
        return map_scores(loc.mask_probs, loc.image_score)

    out: dict[str, Any] = {"real": {}, "calibration": {v: [] for v in VARIANTS}, "synthetic": []}
    for spec in manifests:
        name, _, path = spec.partition("=")
        out["real"][name] = [dict(scores(read_image(r.image)), label=r.label) for r in records_from_paths(path)]
    generated = OnlineSyntheticDataset(list(PHOTOS), split="val", size=384, seed=123, authentic_every=2)
    for i in range(n_synthetic):
        forgery = generated.forgery(i)
        out["synthetic"].append(dict(scores(forgery.image), label=int(forgery.label)))
    for path in authentic_paths(list(PHOTOS)):
        image = read_image(path)
        for variant in VARIANTS:
            out["calibration"][variant].append(scores(authentic_variant(image, variant)))
    return out


def report(data: dict[str, Any]) -> str:
    from webiml.calibration import threshold_for_specificity, verdict_rates

    def rates(rows: list[dict[str, Any]], key: str, threshold: float) -> dict[str, Any]:
        return verdict_rates([r[key] for r in rows], [r["label"] for r in rows], threshold)

    sets = list(data["real"])
    lines = ["| score | held-out synthetic AUC | threshold | " + " | ".join(f"{s} AUC / TPR / TNR" for s in sets) + " |",
             "|---|---|---|" + "---|" * len(sets)]
    for key in SCORES:
        threshold = max(threshold_for_specificity([r[key] for r in rows], 0.9, 0.95) for rows in data["calibration"].values())
        real = [rates(data["real"][s], key, threshold) for s in sets]
        cells = [f"{r['image_auc']:.3f} / {r['tpr']:.3f} / {r['tnr']:.3f}" for r in real]
        lines.append(f"| {key} | {rates(data['synthetic'], key, threshold)['image_auc']:.3f} | {threshold:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--out", required=True, help="per-image scores (JSON); reused when it exists")
    parser.add_argument("--manifest", nargs="+", default=list(MANIFESTS), metavar="NAME=PATH")
    parser.add_argument("--synthetic", type=int, default=200, help="held-out generated images (half authentic)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from webiml.io import atomic_write_text

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.is_file():
        data = json.loads(out.read_text())
    else:
        data = collect(args.model, args.manifest, args.synthetic)
        atomic_write_text(out, json.dumps(data) + "\n")
    print(report(data))


if __name__ == "__main__":
    main()
