"""``webiml demo``: pretrained inference on sample forgeries, offline, with an HTML page of the results.

The samples are made on the spot from the photos bundled with scikit-image (astronaut, cat, coffee,
rocket, ...): splices between photos, copy-moves and object removals with exact ground truth, plus
untouched photos. The embedded model localizes them; the page shows image / prediction / ground truth
side by side with per-image scores, and the command prints the measured pixel F1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from webiml.cli import register_verb
from webiml.commands.localize import DEFAULT_MODEL

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "clock", "horse")


def _write_photos(folder: Path) -> None:
    import numpy as np
    from skimage import data

    from webiml.io import save_image

    folder.mkdir(parents=True, exist_ok=True)
    for name in SKIMAGE_PHOTOS:
        target = folder / f"{name}.png"
        if target.exists():
            continue
        img = np.asarray(getattr(data, name)())
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        save_image(target, np.ascontiguousarray(img[..., :3]).astype(np.uint8))


@register_verb("demo", "pretrained inference on bundled sample forgeries, with an HTML page (offline)")
def demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="webiml demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"model to run (default: {DEFAULT_MODEL}, embedded)")
    parser.add_argument("-o", "--out", default="webiml-demo", help="output folder (default: ./webiml-demo)")
    parser.add_argument("-n", "--num", type=int, default=12, help="number of sample images (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample forgeries")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from tqdm import tqdm

    from webiml.data.masks import target_from_mask
    from webiml.data.photo_pool import PhotoPool
    from webiml.data.synthetic import synthesize
    from webiml.hub import from_pretrained
    from webiml.inference import Localizer
    from webiml.io import atomic_write_json, save_image
    from webiml.metrics import ImageMetrics, PixelMetrics, flatten_results
    from webiml.viz import ReportRow, colorize, overlay, write_report

    out = Path(args.out)
    _write_photos(out / "photos")
    pool = PhotoPool.from_folder(out / "photos", max_side=512)
    rng = np.random.default_rng(args.seed)
    from webiml.models.base import IMLModel

    model = from_pretrained(args.model, model_class=IMLModel)  # a CheckpointError is one `error:` line (cli.main)
    localizer = Localizer(model, device=args.device)
    pixel, image_m = PixelMetrics(), ImageMetrics()
    rows: list[ReportRow] = []
    records = []
    for i in tqdm(range(args.num), desc="demo", unit="img"):
        forgery = synthesize(pool, rng, p_authentic=0.2, p_jpeg=0.5)
        result = localizer.localize(forgery.image)
        prob = torch.from_numpy(result.mask_probs)[None]
        target = target_from_mask(forgery.mask)[None]
        single = PixelMetrics()
        single.update([prob], [target])
        per = {k: float(v) for k, v in single.compute().items()}
        pixel.update([prob], [target])
        image_m.update(torch.tensor([result.image_score]), torch.tensor([forgery.label]))
        stem = f"{i:02d}_{forgery.kind}"
        save_image(out / f"{stem}_image.png", forgery.image)
        save_image(out / f"{stem}_truth.png", forgery.mask)
        save_image(out / f"{stem}_heatmap.png", colorize(result.mask_probs))
        save_image(out / f"{stem}_overlay.jpg", overlay(forgery.image, result.mask_probs), quality=90)
        fields = [("kind", forgery.kind), ("image score", f"{result.image_score:.3f}")]
        if forgery.label:
            fields += [("pixel F1", f"{per['f1']:.3f}"), ("pixel IoU", f"{per['iou']:.3f}")]
        rows.append(ReportRow(stem, [("image", f"{stem}_image.png"), ("prediction", f"{stem}_overlay.jpg"),
                                     ("heatmap", f"{stem}_heatmap.png"), ("ground truth", f"{stem}_truth.png")], fields))
        records.append({"sample": stem, "kind": forgery.kind, "image_score": result.image_score,
                        **({"pixel_f1": per["f1"], "pixel_iou": per["iou"]} if forgery.label else {})})
    summary = flatten_results(pixel.compute(), image_m.compute())
    intro = (f"Model <code>{args.model}</code> on {args.num} sample forgeries made from scikit-image's bundled photos "
             f"(seed {args.seed}). Mean pixel F1 over manipulated images: <b>{summary['pixel_f1']:.3f}</b>, "
             f"pixel AUC {summary['pixel_auc']:.3f}, image AUC {summary['image_auc']:.3f}.")
    page = write_report(out / "index.html", "webiml demo", rows, intro)
    atomic_write_json(out / "summary.json", {"model": args.model, "seed": args.seed, "metrics": summary, "samples": records})
    print(f"pixel F1 {summary['pixel_f1']:.3f} | pixel IoU {summary['pixel_iou']:.3f} | pixel AUC {summary['pixel_auc']:.3f} "
          f"| image AUC {summary['image_auc']:.3f} on {args.num} sample images")
    print(f"wrote {page} (open it in a browser) and the images beside it")
    return 0
