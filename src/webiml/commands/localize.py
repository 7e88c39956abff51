"""``webiml localize INPUT... [-m MODEL] [-o OUT]``: heatmaps, masks, overlays and scores for images.

Inputs are image files, folders (searched recursively), ``.txt`` lists of paths or manifests. Per image
it writes ``<name>_prob.png`` (probability 0-255), ``<name>_mask.png`` (binary at the pixel threshold) and
``<name>_overlay.jpg`` (the image with manipulated regions highlighted), and for the whole run
``scores.csv`` / ``scores.json`` with image-level scores. Images of any size keep their resolution
(large ones are tiled). Unreadable files are reported and skipped; the exit status is 1 if any failed.

Models that read JPEG DCT coefficients (CAT-Net) get each JPEG's own coefficients and quantisation table;
other images are re-compressed at quality 100 first, as the CAT-Net authors do (see :mod:`webiml.jpeg`).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from webiml.cli import register_verb

DEFAULT_MODEL = "iml-unet-lite0-online"

log = logging.getLogger(__name__)


class _Decoded:
    """Decoding in DataLoader workers: returns the image or the error message, never raises."""

    def __init__(self, paths: list[str], with_dct: bool = False) -> None:
        self.paths = paths
        self.with_dct = with_dct

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from webiml.io import ImageReadError, read_image

        try:
            if self.with_dct:  # pixels as stored (the coefficient grid's orientation) + coefficients
                from webiml.jpeg import load_with_dct

                image, dct, orientation = load_with_dct(self.paths[i])
                return {"index": i, "image": image, "dct": dct, "orientation": orientation, "error": None}
            return {"index": i, "image": read_image(self.paths[i]), "dct": None, "orientation": 1, "error": None}
        except ImageReadError as err:
            return {"index": i, "image": None, "error": str(err)}


def _identity(x: Any) -> Any:
    return x


def _unique_names(paths: list[str]) -> list[str]:
    """One output name per input: the file's stem, then ``<stem>_1``, ``<stem>_2``... skipping every name
    already taken (compared case-insensitively, for case-insensitive file systems), so that no result set
    overwrites another whatever the inputs (``x/a.jpg``, ``y/a.jpg``, ``z/a_1.jpg``)."""
    names: list[str] = []
    taken: set[str] = set()
    for p in paths:
        stem = name = Path(p).stem
        n = 0
        while name.casefold() in taken:
            n += 1
            name = f"{stem}_{n}"
        taken.add(name.casefold())
        names.append(name)
    return names


def check_output_folder(out: Path) -> str | None:
    """Why ``out`` cannot take the results (an existing file, a folder or parent that is not writable), or
    ``None``; checked before any model is loaded or image decoded. Creates the folder when it can."""
    import os
    import tempfile

    if out.exists() and not out.is_dir():
        return f"{out}: exists and is not a folder; name a folder for the results with -o"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        return f"{out}: cannot write the results there ({err.strerror or err})"
    if not os.access(out, os.W_OK | os.X_OK):
        return f"{out}: cannot write the results there (not writable)"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webiml localize", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders, .txt lists of paths, or manifests")
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"catalogue name, Hub id, folder or .safetensors (default: {DEFAULT_MODEL}, embedded)")
    parser.add_argument("-o", "--out", default="localize-out", help="output folder (default: ./localize-out)")
    parser.add_argument("--threshold", "--pixel-threshold", dest="threshold", type=float, default=None,
                        help="pixel threshold of the mask (default: the model's, 0.5 unless it stores another)")
    parser.add_argument("--image-threshold", type=float, default=None,
                        help="image verdict threshold: 'manipulated' when the image score is >= it (default: the "
                             "model's calibrated threshold, see `webiml calibrate`)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--tile", type=int, default=1024, help="images larger than this are tiled (default 1024)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    parser.add_argument("--no-overlay", action="store_true", help="skip the overlay images")
    parser.add_argument("--report-max", type=int, default=50,
                        help="images shown in report.html, highest image score first (default 50; 0: no report)")
    return parser


@register_verb("localize", "localize manipulations in images: heatmaps, masks, overlays, scores")
def localize(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    created = not out.exists()
    try:
        return _localize(args, out)
    finally:  # a run that wrote nothing (bad input, unknown model) leaves no empty folder behind
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _localize(args: argparse.Namespace, out: Path) -> int:
    import numpy as np
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from webiml.data.datasets import records_from_paths
    from webiml.hub import from_pretrained
    from webiml.inference import Localization, Localizer
    from webiml.io import orient_array, save_image
    from webiml.reports import write_scores
    from webiml.viz import overlay

    if (problem := check_output_folder(out)) is not None:
        print(f"error: {problem}")
        return 2
    try:
        paths = [r.image for r in records_from_paths(args.inputs)]
    except FileNotFoundError as err:
        print(f"error: {err}")
        return 2
    if not paths:
        print("error: no images found in the inputs")
        return 2
    from webiml.models.base import IMLModel

    model = from_pretrained(args.model, model_class=IMLModel)  # a CheckpointError is one `error:` line (cli.main)
    pixel_threshold = float(model.pixel_threshold if args.threshold is None else args.threshold)
    image_threshold = float(model.image_threshold if args.image_threshold is None else args.image_threshold)
    print(f"model {args.model}: pixel threshold {pixel_threshold:g}"
          + (" (model default)" if args.threshold is None else "")
          + f", image threshold {image_threshold:g}" + (" (model default)" if args.image_threshold is None else ""))
    localizer = Localizer(model, device=args.device, tile=args.tile, batch_size=args.batch_size)
    names = _unique_names(paths)
    loader = DataLoader(_Decoded(paths, localizer.uses_jpeg_dct), batch_size=None, num_workers=args.workers, collate_fn=_identity)
    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    start = time.perf_counter()
    images: dict[int, Any] = {}

    def decoded() -> Any:
        """Readable images from the loader, in order; unreadable ones are reported and skipped."""
        for item in loader:
            if item["error"] is not None:
                failed.append((paths[item["index"]], item["error"]))
                tqdm.write(f"skipped {item['error']}")
                progress.update(1)
                continue
            images[item["index"]] = item["image"], item["orientation"]
            yield item["index"], item["image"], item["dct"]

    progress = tqdm(total=len(paths), desc="localize", unit="img")
    for i, result in localizer.localize_stream(decoded()):
        image, orientation = images.pop(i)
        if orientation != 1:  # a DCT model ran on the stored pixels: show image and map as viewers do
            image = orient_array(image, orientation)
            result = Localization(orient_array(result.mask_probs, orientation), result.image_score)
        prob8 = np.round(result.mask_probs * 255).astype(np.uint8)
        save_image(out / f"{names[i]}_prob.png", prob8)
        save_image(out / f"{names[i]}_mask.png", (result.binary_mask(pixel_threshold) * 255).astype(np.uint8))
        if not args.no_overlay:
            save_image(out / f"{names[i]}_overlay.jpg", overlay(image, result.mask_probs, threshold=pixel_threshold), quality=90)
        area = float(result.binary_mask(pixel_threshold).mean())
        rows.append({"path": paths[i], "name": names[i], "width": image.shape[1], "height": image.shape[0],
                     "image_score": round(result.image_score, 6), "manipulated": int(result.image_score >= image_threshold),
                     "manipulated_area": round(area, 6)})
        progress.update(1)
    progress.close()
    elapsed = time.perf_counter() - start
    write_scores(out, rows, {"model": args.model, "pixel_threshold": pixel_threshold, "image_threshold": image_threshold,
                             "failed": [{"path": p, "error": e} for p, e in failed]})
    if args.report_max > 0 and rows:
        write_localize_report(out, rows, args.model, pixel_threshold, image_threshold, args.report_max, not args.no_overlay)
    print(f"localized {len(rows)} image(s) in {elapsed:.1f}s; results in {out}/ (scores.csv, *_prob.png, *_mask.png"
          + ("" if args.no_overlay else ", *_overlay.jpg") + (", report.html" if args.report_max > 0 and rows else "") + ")")
    if failed:
        print(f"{len(failed)} file(s) could not be read:")
        for _, error in failed:
            print(f"  {error}")
        return 1
    return 0


def write_localize_report(out: Path, rows: list[dict[str, Any]], model: str, pixel_threshold: float,
                          image_threshold: float, limit: int, with_overlay: bool) -> Path:
    """``report.html`` beside localize's outputs: the image-score histogram, then the ``limit`` images with the
    highest image score: image / overlay / coloured heatmap (``<name>_heatmap.png``, made here for these rows
    only) with their scores and verdicts."""
    import os

    import numpy as np
    from PIL import Image

    from webiml.io import save_image
    from webiml.reports import histogram_figure, render_report, verdict
    from webiml.viz import colorize

    shown = sorted(rows, key=lambda r: -r["image_score"])[:limit]
    report_rows = []
    for r in shown:
        with Image.open(out / f"{r['name']}_prob.png") as im:
            prob = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        save_image(out / f"{r['name']}_heatmap.png", colorize(prob))
        images = [("image", Path(os.path.relpath(Path(r["path"]).resolve(), out.resolve())).as_posix())]
        if with_overlay:
            images.append(("overlay", f"{r['name']}_overlay.jpg"))
        images += [("heatmap", f"{r['name']}_heatmap.png"), ("mask", f"{r['name']}_mask.png")]
        report_rows.append({"title": r["name"], "images": images, "fields": [
            ("verdict", verdict(r["image_score"], image_threshold)), ("image score", f"{r['image_score']:.3f}"),
            ("manipulated area", f"{100 * r['manipulated_area']:.1f}%"), ("size", f"{r['width']}x{r['height']}")]})
    n_manipulated = sum(r["manipulated"] for r in rows)
    plots = [("image scores", histogram_figure([r["image_score"] for r in rows], out / "image_scores.png",
                                               "image score", "image scores", image_threshold))]
    sets = [{"name": "images", "metrics": [("images", str(len(rows))), ("verdict manipulated", str(n_manipulated)),
                                           ("verdict authentic", str(len(rows) - n_manipulated))],
             "plots": plots, "rows": report_rows,
             "rows_title": f"{len(shown)} of {len(rows)} image(s), highest image score first"}]
    return render_report(out / "report.html", title="webiml localize", intro=f"Model {model}.", sets=sets,
                         pixel_threshold=pixel_threshold, image_threshold=image_threshold, has_truth=False)
