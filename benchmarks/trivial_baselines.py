"""What chance looks like on an evaluation set: metrics of all-zero, all-one and random maps.

    python benchmarks/trivial_baselines.py MANIFEST [--seed 0]

Scores the same way as `webiml test` (per-image pixel F1/IoU at 0.5 over manipulated images, pixel AUC,
image AUC), at each image's original resolution, so a trained model's numbers can be read against them.
"""

from __future__ import annotations

import argparse

import torch

from webiml.data.datasets import load_sample
from webiml.data.manifest import read_manifest
from webiml.metrics import ImageMetrics, PixelMetrics, flatten_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records = read_manifest(args.manifest)
    gen = torch.Generator().manual_seed(args.seed)
    makers = {
        "all-zero": lambda t: torch.zeros_like(t),
        "all-one": lambda t: torch.ones_like(t),
        "uniform random": lambda t: torch.rand(t.shape, generator=gen),
    }
    metrics = {name: (PixelMetrics(), ImageMetrics()) for name in makers}
    for record in records:
        sample = load_sample(record)
        target = sample["mask"]
        for name, make in makers.items():
            prob = make(target)
            metrics[name][0].update([prob], [target])
            metrics[name][1].update(prob.flatten().amax()[None], sample["label"][None])
    print(f"{args.manifest}: {len(records)} images")
    print("| map | pixel F1 | pixel IoU | pixel AUC | image AUC |\n|---|---|---|---|---|")
    for name, (pixel, image) in metrics.items():
        r = flatten_results(pixel.compute(), image.compute())
        print(f"| {name} | {r['pixel_f1']:.3f} | {r['pixel_iou']:.3f} | {r['pixel_auc']:.3f} | {r['image_auc']:.3f} |")


if __name__ == "__main__":
    main()
