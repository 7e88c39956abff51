"""Benchmark result tables: one row per evaluation set, with the protocol that produced them.

:class:`ResultsTable` is a Lightning callback. At the end of ``test`` it reads the metrics that
:class:`~webiml.tasks.iml.IMLTask` logged as ``test/<set>/<metric>`` and writes, in the run's log dir:

- ``results.csv``: one row per evaluation set (and a ``mean`` row per degradation), the metrics, and the
  protocol in every row (model, datamodule, eval policy and sizes, degradation, checkpoint, git commit), so
  CSVs of many runs can simply be concatenated;
- ``results.md``: the same as a Markdown table under a header that records the protocol, plus, for
  robustness sweeps (sets named ``<set>@<kind><level>``, see :class:`~webiml.data.datamodule.IMLDataModule`),
  one table per metric with a column per degradation level.

The Markdown table is also printed.
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L

from webiml.data.datamodule import parse_degradation_tag
from webiml.io import atomic_write_text

METRICS: tuple[tuple[str, str], ...] = (
    ("pixel_f1", "F1"),
    ("pixel_iou", "IoU"),
    ("pixel_f1_best", "F1 best"),
    ("pixel_iou_best", "IoU best"),
    ("pixel_f1_permuted", "F1 perm"),
    ("pixel_iou_permuted", "IoU perm"),
    ("pixel_auc", "pixel AUC"),
    ("image_auc", "image AUC"),
    ("image_balanced_acc", "image bAcc"),
)
"""Metric keys (as logged by IMLTask, without the ``test/<set>/`` prefix) and their column titles."""

MIML_METRICS: tuple[tuple[str, str], ...] = (
    ("miml_iou", "IoU (authors)"),
    ("miml_precision", "P (authors)"),
    ("miml_recall", "R (authors)"),
    ("miml_f1", "F1 (authors)"),
)
"""The APSC-Net authors' scores (``threshold_policy: miml_adaptive``); columns only when a row has them."""

COUNTS = (("pixel_n_images", "images"), ("pixel_n_manipulated", "manipulated"))
ROBUSTNESS_METRICS = ("pixel_f1", "pixel_auc", "image_auc")
METRICS_KEYS = {k for k, _ in METRICS}


def git_commit(path: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the repository holding ``path`` (default: the webiml package), with
    ``-dirty`` when tracked files differ from it; ``"unknown"`` outside a git checkout or without git."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def split_set_name(name: str) -> tuple[str, str]:
    """``"casia1@jpeg70"`` -> ``("casia1", "jpeg70")``; an undegraded set -> ``(name, "none")``.

    Only a suffix that is a real degradation tag (:func:`~webiml.data.datamodule.degradation_tag`) is one:
    a set named ``foo@v2`` is the set ``foo@v2``, undegraded."""
    base, sep, tag = name.rpartition("@")
    if not sep or not base or parse_degradation_tag(tag) is None:
        return name, "none"
    return base, tag


def _level_order(tag: str) -> tuple[int, str, float]:
    if tag == "none":
        return (0, "", 0.0)
    kind, level = parse_degradation_tag(tag) or (tag, 0.0)
    # JPEG quality: high (mild) to low (strong); other kinds: the sweep's own order of strength.
    return (1, kind, -level if kind in ("jpeg", "resize") else level)


def collect_rows(metrics: Mapping[str, float], prefix: str = "test", names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per evaluation set from flat ``{"test/<set>/<metric>": value}`` metrics, then a ``mean`` row per
    degradation (the mean over sets of each metric, NaNs left out).

    ``names``: the evaluation sets in dataloader order (the datamodule's ``eval_names("test")``); without it,
    every ``<set>`` that has at least one pixel/image metric is a row.
    """
    known = {k for k, _ in (*METRICS, *MIML_METRICS)} | {k for k, _ in COUNTS}
    per_set: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != prefix or parts[2] not in known:
            continue
        per_set.setdefault(parts[1], {})[parts[2]] = float(value)
    order = [n for n in names if n in per_set] if names else list(per_set)
    rows: list[dict[str, Any]] = []
    for name in order:
        values = per_set[name]
        dataset, degradation = split_set_name(name)
        row: dict[str, Any] = {"set": name, "dataset": dataset, "degradation": degradation}
        for key, _ in COUNTS:
            row[key] = int(values[key]) if not math.isnan(values.get(key, math.nan)) else None
        for key, _ in METRICS:
            row[key] = values.get(key, math.nan)
        for key, _ in MIML_METRICS:
            if key in values:
                row[key] = values[key]
        rows.append(row)
    first = {d: i for i, d in enumerate(dict.fromkeys(r["dataset"] for r in rows))}
    rows.sort(key=lambda r: (_level_order(r["degradation"]), first[r["dataset"]]))
    if len({r["dataset"] for r in rows}) < 2:
        return rows
    out: list[dict[str, Any]] = []
    for deg in dict.fromkeys(r["degradation"] for r in rows):
        group = [r for r in rows if r["degradation"] == deg]
        mean: dict[str, Any] = {"set": "mean" if deg == "none" else f"mean@{deg}", "dataset": "mean", "degradation": deg}
        for key, _ in COUNTS:
            mean[key] = sum(r[key] or 0 for r in group)
        for key, _ in (*METRICS, *MIML_METRICS):
            if key not in METRICS_KEYS and not any(key in r for r in group):
                continue
            vals = [r[key] for r in group if key in r and not math.isnan(r[key])]
            mean[key] = sum(vals) / len(vals) if vals else math.nan
        out += [*group, mean]
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """webiml's metric columns, then the authors' MIML ones when any row has them."""
    return [*METRICS, *((k, t) for k, t in MIML_METRICS if any(k in r for r in rows))]


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-set results as a Markdown table."""
    metrics = _metric_columns(rows)
    header = ["set", "degradation", *(t for _, t in COUNTS), *(t for _, t in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for r in rows:
        cells = [r["dataset"], r["degradation"], *(_fmt(r.get(k)) for k, _ in COUNTS), *(_fmt(r.get(k)) for k, _ in metrics)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def robustness_tables(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ROBUSTNESS_METRICS) -> str:
    """For a degradation sweep: per metric, a table with one row per dataset and one column per level."""
    levels = sorted({r["degradation"] for r in rows}, key=_level_order)
    if levels == ["none"] or not levels:
        return ""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    by = {(r["dataset"], r["degradation"]): r for r in rows}
    titles = dict((*METRICS, *MIML_METRICS))
    out = []
    for metric in metrics:
        lines = [f"### {titles.get(metric, metric)} per degradation level", "",
                 "| dataset | " + " | ".join("clean" if lv == "none" else lv for lv in levels) + " |",
                 "|---|" + "---:|" * len(levels)]
        for d in datasets:
            lines.append(f"| {d} | " + " | ".join(_fmt(by[(d, lv)][metric]) if (d, lv) in by else "-" for lv in levels) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def describe_protocol(trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> dict[str, Any]:
    """What produced the numbers: model, datamodule, evaluation policy and sizes, degradation, checkpoint, commit."""
    dm = getattr(trainer, "datamodule", None)
    hp: Mapping[str, Any] = dict(getattr(dm, "hparams", {}) or {}) if dm is not None else {}
    policy = hp.get("eval_policy")
    if policy == "fixed":
        sizes = f"{hp.get('eval_size')}x{hp.get('eval_size')}"
    elif policy == "native":
        sizes = f"native, min side {hp.get('eval_min_side')}, max side {hp.get('eval_max_side')}"
    elif policy == "miml_official":
        sizes = "the APSC-Net authors' area rule: >= 1536x1536 px -> 976x976, JPEG <= 512x512 px -> 512x512, else native"
    else:
        sizes = "-"
    kind = hp.get("test_degradation")
    levels = getattr(dm, "test_variants", None)
    if kind:
        used = sorted({lv for _, k, lv in (levels or {}).values() if k != "none"})
        degradation = f"{kind} {', '.join(f'{v:g}' for v in used)}"
    else:
        degradation = "none"
    net = getattr(pl_module, "net", None)
    model = type(pl_module).__name__ if pl_module is not None else "-"
    if net is not None:
        model += f"/{type(net).__name__}"
        arch = getattr(net, "config", {}) or {}
        detail = ",".join(f"{k}={arch[k]}" for k in ("arch", "encoder", "backbone") if k in arch)
        if detail:
            model += f"({detail})"
    task_hp = (getattr(pl_module, "hparams", None) or {}) if pl_module is not None else {}
    threshold = task_hp.get("threshold", 0.5)
    threshold_policy = task_hp.get("threshold_policy", "fixed")
    if threshold_policy == "miml_adaptive":
        fixed = ", ".join(task_hp.get("fixed_threshold_sets") or ()) or "none"
        threshold_policy = f"miml_adaptive (authors' columns: clamp(1 - image score, 0.3, 0.7); 0.5 on {fixed})"
    return {
        "protocol": hp.get("protocol") or "-",
        "model": model,
        "datamodule": type(dm).__name__ if dm is not None else "-",
        "eval_policy": policy or "-",
        "eval_sizes": sizes,
        "test_degradation": degradation,
        "threshold": threshold,
        "threshold_policy": threshold_policy,
        "ckpt_path": str(getattr(trainer, "ckpt_path", None) or "none (initial weights)"),
        "git_commit": git_commit(),
    }


class ResultsTable(L.Callback):
    """Write ``results.csv`` and ``results.md`` (per evaluation set metrics + protocol) at the end of ``test``.

    Args:
        filename: base name of the two files written into ``trainer.log_dir`` (or ``out_dir``).
        out_dir: write there instead of the log dir.
        prefix: metric prefix to read (``test``).
        print_table: print the Markdown table when done.
    """

    def __init__(self, filename: str = "results", out_dir: str | None = None, prefix: str = "test", print_table: bool = True) -> None:
        self.filename = filename
        self.out_dir = out_dir
        self.prefix = prefix
        self.print_table = print_table
        self.written: list[Path] = []

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        dm = getattr(trainer, "datamodule", None)
        names = list(dm.eval_names(self.prefix)) if dm is not None and hasattr(dm, "eval_names") else None
        rows = collect_rows(metrics, self.prefix, names)
        if not rows:
            return
        protocol = describe_protocol(trainer, pl_module)
        folder = Path(self.out_dir or log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, md_path = folder / f"{self.filename}.csv", folder / f"{self.filename}.md"
        atomic_write_text(csv_path, results_csv(rows, protocol))
        atomic_write_text(md_path, results_markdown(rows, protocol))
        self.written = [csv_path, md_path]
        if self.print_table:
            print(f"\n{markdown_table(rows)}\n\nprotocol: " + "; ".join(f"{k}={v}" for k, v in protocol.items())
                  + f"\nresults written to {md_path} and {csv_path.name}", flush=True)


def results_csv(rows: Sequence[Mapping[str, Any]], protocol: Mapping[str, Any]) -> str:
    fields = ["set", "dataset", "degradation", *(k for k, _ in COUNTS), *(k for k, _ in _metric_columns(rows)), *protocol]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**{k: ("" if r.get(k) is None else r.get(k)) for k in fields if k not in protocol}, **protocol})
    return buf.getvalue()


def results_markdown(rows: Sequence[Mapping[str, Any]], protocol: Mapping[str, Any]) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Test results", ""]
    lines += [f"- **{k.replace('_', ' ')}**: `{v}`" for k, v in protocol.items()]
    lines += [f"- **written**: {when}", "",
              f"Pixel metrics: per-image F1/IoU at threshold {protocol.get('threshold', 0.5)}, at the best threshold per image, and of the better "
              "of the map and its inverse (permuted), averaged over manipulated images, at the original resolution; "
              "pixel AUC averaged per image. Image metrics over the whole set."]
    if any(k in r for r in rows for k, _ in MIML_METRICS):
        lines += ["(authors) columns: the APSC-Net authors' test scores (their *_infer.py): each image binarised at "
                  "prob > clamp(1 - image score, 0.3, 0.7) (0.5 on the fixed-threshold sets), per-image IoU, precision, "
                  "recall and F1 averaged over manipulated images."]
    lines += ["", markdown_table(rows), ""]
    robust = robustness_tables(rows)
    if robust:
        lines += ["## Robustness", "", robust, ""]
    return "\n".join(lines)
