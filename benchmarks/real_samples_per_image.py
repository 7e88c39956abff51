"""Per-image F1 / IoU (forged images, threshold 0.5, native size) and image scores of a model on real sets, and a
paired comparison with a baseline model's stored scores.

    python benchmarks/real_samples_per_image.py MODEL --out runs/x/per_image.json \
        [--manifest casia1-samples=data/manifests/casia1-samples.jsonl ...] [--baseline runs/y/per_image.json]

MODEL: catalogue name, folder or .safetensors. Manifests (default: casia1-samples and noso under data/manifests,
written by ``webiml data index folder ...``) need forged and authentic records. The F1 / IoU are those of
``webiml test --config configs/protocols/real_samples.yaml`` (``webiml.evaluation.score_manifest``); the paired
comparison is ``webiml.evaluation.paired_comparison`` (10,000 bootstrap resamples) over the forged images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_MANIFESTS = ("casia1-samples=data/manifests/casia1-samples.jsonl", "noso=data/manifests/noso.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--out", required=True, help="per-image scores (JSON) to write")
    parser.add_argument("--manifest", nargs="+", default=list(DEFAULT_MANIFESTS), metavar="NAME=PATH")
    parser.add_argument("--baseline", default=None, help="a per-image JSON written by this script for another model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from webiml.evaluation import paired_comparison, score_manifest, scores_to_rows, summarize
    from webiml.hub import from_pretrained
    from webiml.io import atomic_write_text
    from webiml.models.base import IMLModel

    torch.set_num_threads(args.threads)
    model = from_pretrained(args.model, model_class=IMLModel)
    results = {}
    for spec in args.manifest:
        name, _, path = spec.partition("=")
        scored = score_manifest(model, path)
        results[name] = scores_to_rows(scored)
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in summarize(scored).items()})
    atomic_write_text(Path(args.out), json.dumps(results) + "\n")
    if args.baseline:
        base = json.loads(Path(args.baseline).read_text())
        for name, rows in results.items():
            before = {r["image"]: r for r in base.get(name, []) if r["label"] == 1}
            after = {r["image"]: r for r in rows if r["label"] == 1 and r["image"] in before}
            keys = sorted(after)
            for metric in ("f1", "iou"):
                p = paired_comparison([before[k][metric] for k in keys], [after[k][metric] for k in keys])
                print(f"{name} {metric}: baseline {p['mean_a']:.3f}, model {p['mean_b']:.3f}, difference {p['mean_diff']:+.3f} "
                      f"[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}], wins / losses / ties {p['wins']} / {p['losses']} / {p['ties']}")


if __name__ == "__main__":
    main()
