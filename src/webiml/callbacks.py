"""Lightning callbacks shipped with webiml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from webiml.io import atomic_write_json
from webiml.reports import format_value, metrics_once, write_scores


class MetricsSummary(L.Callback):
    """At the end of ``fit``, print the last validation metrics as a table and save them as JSON
    (``<log_dir>/val_metrics.json``, written atomically, undefined metrics as ``null``), so a training run ends with its numbers in plain sight."""

    def __init__(self, prefix: str = "val/") -> None:
        self.prefix = prefix

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = metrics_once({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefix)})
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if not metrics or not trainer.is_global_zero:
            return
        width = max(len(k) for k in metrics)
        # current_epoch counts the epochs run when fit ends; the last one run is that minus one (Lightning numbers from 0)
        lines = [f"final validation metrics (after {trainer.current_epoch} epoch(s), step {trainer.global_step}):"]
        lines += [f"  {k:<{width}}  {format_value(v)}" for k, v in sorted(metrics.items())]
        rank_zero_info("\n".join(lines))
        if log_dir:
            atomic_write_json(Path(log_dir) / "val_metrics.json", metrics, sort_keys=True)  # NaN -> null


class PredictionWriter(BasePredictionWriter):
    """``webiml predict``'s output, as ``webiml localize`` writes it: per image ``<name>_prob.png`` (probability
    0-255) and ``<name>_mask.png`` (binary at the pixel threshold), and ``scores.csv`` / ``scores.json`` with the
    image scores and verdicts. Under DDP every rank writes its images and a shard of rows
    (``scores.rank<R>.jsonl``); after a barrier rank 0 merges the shards in input order.

    ``output_dir`` defaults to ``<log_dir>/predictions``; thresholds default to the net's ``pixel_threshold`` /
    ``image_threshold`` (0.5 when it has none). Predictions of other shapes (not dicts with ``mask_probs``) are
    passed over."""

    def __init__(self, output_dir: str | None = None, pixel_threshold: float | None = None,
                 image_threshold: float | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.pixel_threshold = pixel_threshold
        self.image_threshold = image_threshold
        self._out: Path | None = None
        self._names: dict[str, str] = {}
        self._order: dict[str, int] = {}

    def _threshold(self, pl_module: L.LightningModule, name: str, given: float | None) -> float:
        if given is not None:
            return float(given)
        return float(getattr(getattr(pl_module, "net", pl_module), name, 0.5))

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from webiml.commands.localize import _unique_names

        log_dir = trainer.log_dir  # collective under DDP: every rank
        self._out = Path(self.output_dir) if self.output_dir else Path(log_dir or ".") / "predictions"
        self._out.mkdir(parents=True, exist_ok=True)
        paths: list[str] = []
        for loader in trainer.predict_dataloaders if isinstance(trainer.predict_dataloaders, list) else [trainer.predict_dataloaders]:
            records = getattr(getattr(loader, "dataset", None), "records", None) or []
            paths += [str(r.image) for r in records]
        self._names = dict(zip(paths, _unique_names(paths), strict=True))
        self._order = {p: i for i, p in enumerate(paths)}
        self._shard = self._out / f"scores.rank{trainer.global_rank}.jsonl"
        self._shard.write_text("")
        self.pixel = self._threshold(pl_module, "pixel_threshold", self.pixel_threshold)
        self.image = self._threshold(pl_module, "image_threshold", self.image_threshold)

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        import json

        import numpy as np

        from webiml.io import save_image

        if not isinstance(prediction, list) or self._out is None:
            return
        lines = []
        for item in prediction:
            if not isinstance(item, dict) or "mask_probs" not in item:
                continue
            probs = np.asarray(item["mask_probs"], dtype=np.float32).reshape(item["mask_probs"].shape[-2:])
            path = str(item.get("path"))
            name = self._names.get(path) or Path(path).stem
            mask = probs >= self.pixel
            save_image(self._out / f"{name}_prob.png", np.round(probs * 255).astype(np.uint8))
            save_image(self._out / f"{name}_mask.png", mask.astype(np.uint8) * 255)
            score = float(item["image_score"])
            lines.append(json.dumps({"path": path, "name": name, "width": int(probs.shape[1]), "height": int(probs.shape[0]),
                                     "image_score": round(score, 6), "manipulated": int(score >= self.image),
                                     "manipulated_area": round(float(mask.mean()), 6)}))
        with open(self._shard, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json

        trainer.strategy.barrier()
        if not trainer.is_global_zero or self._out is None:
            return
        rows = []
        for shard in sorted(self._out.glob("scores.rank*.jsonl")):
            rows += [json.loads(line) for line in shard.read_text().splitlines() if line.strip()]
        rows.sort(key=lambda r: self._order.get(r["path"], len(self._order)))
        write_scores(self._out, rows, {"pixel_threshold": self.pixel, "image_threshold": self.image})
        for shard in self._out.glob("scores.rank*.jsonl"):
            shard.unlink()
        rank_zero_info(f"predictions of {len(rows)} image(s) written to {self._out}/ (scores.csv, *_prob.png, *_mask.png)")


class TestReport(L.Callback):
    """``webiml test``'s page and table: ``<log_dir>/test_report/per_image.csv`` (set, path, image score, label,
    pixel F1 / IoU at the threshold, false-positive fraction; with ``threshold_policy: miml_adaptive`` also the
    image's threshold and the APSC-Net authors' IoU / precision / recall / F1) and ``report.html``: per evaluation set the metrics
    table (test_metrics.json), the pixel PR curve, the per-image F1 histogram, then the ``max_images`` worst images
    (lowest F1; authentic images by false-positive area) with image / overlay / heatmap / truth / error map.

    Reads the per-image results that IMLTask keeps of its last test batch (``last_test_batch``); other tasks
    are passed over. Under DDP each rank writes its rows and its worst images, rank 0 merges after a barrier."""

    __test__ = False  # not a pytest class

    def __init__(self, max_images: int = 24, out_dir: str | None = None) -> None:
        self.max_images = max_images
        self.out_dir = out_dir

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows: list[dict[str, Any]] = []
        self._hist: dict[str, list[Any]] = {}
        self._worst: list[tuple[float, int, dict[str, Any]]] = []
        self._count = 0

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        import heapq

        import numpy as np

        from webiml.metrics import pixel_f1_iou
        from webiml.reports import pixel_histograms

        last = getattr(pl_module, "last_test_batch", None)
        if not last:
            return
        pl_module.last_test_batch = None
        names = pl_module.eval_names("test") if hasattr(pl_module, "eval_names") else ["default"]
        set_name = names[dataloader_idx] if dataloader_idx < len(names) else str(dataloader_idx)
        threshold = float(getattr(pl_module.hparams, "threshold", 0.5))
        for i, (prob, target) in enumerate(zip(last["probs"], last["targets"], strict=True)):
            p = prob.detach().float().cpu().numpy().reshape(prob.shape[-2:])
            t = target.detach().float().cpu().numpy().reshape(target.shape[-2:])
            pos, neg = pixel_histograms(p, t)
            hist = self._hist.setdefault(set_name, [np.zeros_like(pos), np.zeros_like(neg)])
            hist[0] += pos
            hist[1] += neg
            valid, truth, pred = t >= 0, t > 0.5, p >= threshold
            manipulated = bool((truth & valid).any())
            f1, iou = pixel_f1_iou(p, t, threshold) if manipulated else (float("nan"), float("nan"))
            fp_fraction = int((pred & ~truth & valid).sum()) / max(int((~truth & valid).sum()), 1)
            path = str(last["paths"][i]) if last.get("paths") is not None else f"{set_name}-{self._count}"
            row = {"set": set_name, "path": path, "image_score": round(float(last["scores"][i]), 6),
                   "label": int(manipulated), "pixel_f1": f1, "pixel_iou": iou, "fp_fraction": round(fp_fraction, 6),
                   "manipulated_area_pred": round(float(pred.mean()), 6), "manipulated_area_true": round(float(truth.mean()), 6)}
            if last.get("miml"):  # the APSC-Net authors' per-image scores (threshold_policy: miml_adaptive)
                official = last["miml"][i]
                row.update({f"miml_{k}": round(float(official[k]), 6) for k in ("threshold", "iou", "precision", "recall", "f1")})
            self._rows.append(row)
            badness = (1.0 - f1) if manipulated else fp_fraction
            item = (badness, self._count, {"row": row, "prob": np.round(p * 255).astype(np.uint8), "truth": truth})
            self._count += 1
            if len(self._worst) < self.max_images:
                heapq.heappush(self._worst, item)
            elif item[0] > self._worst[0][0]:
                heapq.heapreplace(self._worst, item)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json

        log_dir = trainer.log_dir  # collective under DDP: every rank
        if not getattr(self, "_rows", None) and not getattr(self, "_worst", None):
            trainer.strategy.barrier()
            return
        out = Path(self.out_dir) if self.out_dir else Path(log_dir or trainer.default_root_dir) / "test_report"
        out.mkdir(parents=True, exist_ok=True)
        threshold = float(getattr(pl_module.hparams, "threshold", 0.5))
        rank = trainer.global_rank
        for _, k, item in self._worst:
            item["row"]["files"] = _write_row_images(out, f"r{rank}_{k}", item, threshold)
        shard = {"rows": self._rows, "worst": [item["row"] for _, _, item in self._worst],
                 "hist": {k: [h.tolist() for h in v] for k, v in self._hist.items()}}
        atomic_write_json(out / f"shard.rank{rank}.json", shard)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return
        shards = [json.loads(f.read_text()) for f in sorted(out.glob("shard.rank*.json"))]
        for f in out.glob("shard.rank*.json"):
            f.unlink()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        net = getattr(pl_module, "net", None)
        _write_test_report(out, shards, metrics, threshold, self.max_images,
                           image_threshold=float(getattr(net, "image_threshold", threshold)))
        rank_zero_info(f"test report written to {out}/report.html (per-image table: per_image.csv)")


def _write_row_images(out: Path, stem: str, item: dict[str, Any], threshold: float) -> dict[str, str]:
    import os

    import numpy as np

    from webiml.io import save_image
    from webiml.reports import error_map
    from webiml.viz import colorize, overlay

    prob = item["prob"].astype(np.float32) / 255.0
    files = {"heatmap": f"{stem}_heatmap.png", "truth": f"{stem}_truth.png", "errors": f"{stem}_errors.png"}
    save_image(out / files["heatmap"], colorize(prob))
    save_image(out / files["truth"], item["truth"].astype(np.uint8) * 255)
    save_image(out / files["errors"], error_map(prob >= threshold, item["truth"]))
    path = Path(item["row"]["path"])
    if path.is_file():
        from PIL import Image

        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        if image.shape[:2] == prob.shape:
            files["overlay"] = f"{stem}_overlay.jpg"
            save_image(out / files["overlay"], overlay(image, prob, threshold=threshold), quality=90)
        files["image"] = Path(os.path.relpath(path.resolve(), out.resolve())).as_posix()
    return files


def _write_test_report(out: Path, shards: list[dict[str, Any]], metrics: dict[str, float], threshold: float,
                       max_images: int, image_threshold: float | None = None) -> None:
    """``threshold``: the pixel threshold of the task's metrics; ``image_threshold``: the image verdict's (the
    model's calibrated one; ``threshold`` when not given)."""
    image_threshold = threshold if image_threshold is None else image_threshold
    import csv
    import io

    import numpy as np

    from webiml.io import atomic_write_text
    from webiml.reports import format_value, histogram_figure, pr_curve_figure, render_report

    rows = [r for s in shards for r in s["rows"]]
    buf = io.StringIO()
    fields = ["set", "path", "image_score", "label", "pixel_f1", "pixel_iou", "fp_fraction",
              "manipulated_area_pred", "manipulated_area_true"]
    fields += [k for k in ("miml_threshold", "miml_iou", "miml_precision", "miml_recall", "miml_f1") if any(k in r for r in rows)]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: ("" if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows)
    atomic_write_text(out / "per_image.csv", buf.getvalue())
    worst = [r for s in shards for r in s["worst"]]
    sets = []
    for name in dict.fromkeys(r["set"] for r in rows):
        pos = sum(np.asarray(s["hist"][name][0]) for s in shards if name in s["hist"])
        neg = sum(np.asarray(s["hist"][name][1]) for s in shards if name in s["hist"])
        set_rows = [r for r in rows if r["set"] == name]
        f1s = [r["pixel_f1"] for r in set_rows if r["label"]]
        plots = [("pixel precision-recall", pr_curve_figure(pos, neg, out / f"{name}_pr.png", threshold)),
                 ("per-image pixel F1 (manipulated images)",
                  histogram_figure(f1s, out / f"{name}_f1_hist.png", "pixel F1", "per-image F1"))]
        prefix = f"test/{name}/"
        table = [(k[len(prefix):], format_value(v)) for k, v in sorted(metrics.items()) if k.startswith(prefix)]
        table += [("images", str(len(set_rows))), ("manipulated images", str(len(f1s)))]
        shown = sorted((r for r in worst if r["set"] == name),
                       key=lambda r: (1.0 - r["pixel_f1"]) if r["label"] else r["fp_fraction"], reverse=True)[:max_images]
        report_rows = []
        for r in shown:
            files = r.get("files", {})
            images = [(c, files[k]) for k, c in (("image", "image"), ("overlay", "overlay"), ("heatmap", "heatmap"),
                                                  ("truth", "truth"), ("errors", "error map")) if k in files]
            fields_ = [("verdict", "manipulated" if r["image_score"] >= image_threshold else "authentic"),
                       ("truth", "manipulated" if r["label"] else "authentic"), ("image score", f"{r['image_score']:.3f}")]
            if r["label"]:
                fields_ += [("pixel F1", f"{r['pixel_f1']:.3f}"), ("pixel IoU", f"{r['pixel_iou']:.3f}")]
            else:
                fields_ += [("false-positive area", f"{100 * r['fp_fraction']:.1f}%")]
            report_rows.append({"title": Path(r["path"]).name, "fields": fields_, "images": images})
        sets.append({"name": name, "metrics": table, "plots": plots, "rows": report_rows,
                     "rows_title": f"{len(shown)} worst image(s) of {len(set_rows)}, worst first"})
    render_report(out / "report.html", title="webiml test", sets=sets, pixel_threshold=threshold, image_threshold=image_threshold,
                  intro="Metrics at the original resolution of each image; per-image results in per_image.csv.")
