"""``webiml demo``: pretrained inference on sample forgeries, offline, with an HTML page of the results.

The samples are made on the spot from the photos bundled with scikit-image (astronaut, cat, coffee,
rocket, ...): splices between photos, copy-moves and object removals with exact ground truth, plus
untouched photos. The embedded model localizes them; the page shows image / prediction / heatmap / ground truth /
error map side by side with each image's verdict at the model's image threshold, its score, and the pixel F1.
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
    from webiml.models.base import IMLModel
    from webiml.reports import error_map, format_value, histogram_figure, render_report, verdict
    from webiml.viz import colorize, overlay

    out = Path(args.out)
    _write_photos(out / "photos")
    pool = PhotoPool.from_folder(out / "photos", max_side=512)
    rng = np.random.default_rng(args.seed)
    model = from_pretrained(args.model, model_class=IMLModel)  # a CheckpointError is one `error:` line (cli.main)
    pixel_threshold, image_threshold = float(model.pixel_threshold), float(model.image_threshold)
    localizer = Localizer(model, device=args.device)
    pixel, image_m = PixelMetrics(threshold=pixel_threshold), ImageMetrics()
    rows: list[dict] = []
    records = []
    for i in tqdm(range(args.num), desc="demo", unit="img"):
        forgery = synthesize(pool, rng, p_authentic=0.2, p_jpeg=0.5)
        result = localizer.localize(forgery.image)
        prob = torch.from_numpy(result.mask_probs)[None]
        target = target_from_mask(forgery.mask)[None]
        single = PixelMetrics(threshold=pixel_threshold)
        single.update([prob], [target])
        per = {k: float(v) for k, v in single.compute().items()}
        pixel.update([prob], [target])
        image_m.update(torch.tensor([result.image_score]), torch.tensor([forgery.label]))
        stem = f"{i:02d}_{forgery.kind}"
        save_image(out / f"{stem}_image.png", forgery.image)
        save_image(out / f"{stem}_truth.png", forgery.mask)
        save_image(out / f"{stem}_heatmap.png", colorize(result.mask_probs))
        save_image(out / f"{stem}_overlay.jpg", overlay(forgery.image, result.mask_probs, threshold=pixel_threshold), quality=90)
        save_image(out / f"{stem}_errors.png", error_map(result.mask_probs >= pixel_threshold, forgery.mask > 127))
        called = verdict(result.image_score, image_threshold)
        fields = [("truth", f"manipulated ({forgery.kind})" if forgery.label else "authentic"),
                  ("verdict", f"called {called}"),
                  ("image score", f"{result.image_score:.3f} {'≥' if called == 'manipulated' else '<'} {image_threshold:g}")]
        if forgery.label:
            fields += [("pixel F1", f"{per['f1']:.3f}"), ("pixel IoU", f"{per['iou']:.3f}")]
        rows.append({"title": stem, "fields": fields, "images": [
            ("image", f"{stem}_image.png"), ("prediction", f"{stem}_overlay.jpg"), ("heatmap", f"{stem}_heatmap.png"),
            ("ground truth", f"{stem}_truth.png"), ("error map", f"{stem}_errors.png")]})
        records.append({"sample": stem, "kind": forgery.kind, "image_score": result.image_score, "verdict": called,
                        **({"pixel_f1": per["f1"], "pixel_iou": per["iou"]} if forgery.label else {})})
    summary = flatten_results(pixel.compute(), image_m.compute())
    scores = [r["image_score"] for r in records]
    metrics = [("images", str(args.num)), ("called manipulated", str(sum(r["verdict"] == "manipulated" for r in records))),
               ("mean pixel F1 (manipulated images)", format_value(summary["pixel_f1"])),
               ("pixel AUC", format_value(summary["pixel_auc"])), ("image AUC", format_value(summary["image_auc"]))]
    plots = [("image scores", histogram_figure(scores, out / "image_scores.png", "image score", "image scores", image_threshold))]
    sets = [{"name": "samples", "metrics": metrics, "plots": plots, "rows": rows, "rows_title": f"{args.num} sample image(s)"}]
    intro = (f"Model {args.model} on {args.num} sample forgeries made from scikit-image's bundled photos "
             f"(seed {args.seed}): splices, copy-moves and removals with exact ground truth, and untouched photos.")
    page = render_report(out / "index.html", title="webiml demo", intro=intro, sets=sets, pixel_threshold=pixel_threshold,
                         image_threshold=image_threshold, has_truth=True)
    atomic_write_json(out / "summary.json", {"model": args.model, "seed": args.seed, "pixel_threshold": pixel_threshold,
                                             "image_threshold": image_threshold, "metrics": summary, "samples": records})
    print(f"pixel F1 {summary['pixel_f1']:.3f} | pixel IoU {summary['pixel_iou']:.3f} | pixel AUC {summary['pixel_auc']:.3f} "
          f"| image AUC {summary['image_auc']:.3f} on {args.num} sample images")
    print(f"wrote {page} (open it in a browser) and the images beside it")
    return 0
