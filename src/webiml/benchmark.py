"""The with/without-MIML benchmark: train every model on every training set, test, one table.

A *benchmark spec* (YAML, e.g. ``configs/benchmarks/with_without_miml.yaml``) names model configs and
training protocols::

    work: runs/with-without-miml        # one folder per run: <work>/<model>/<training>/
    models:                             # name -> model config (LightningCLI YAML)
      apsc-net: configs/miml/apscnet_miml_recipe.yaml
    training:                           # name -> protocol config (data + trainer), same test sets in each
      without-miml: configs/protocols/miml_without_miml.yaml
      with-miml: configs/protocols/miml.yaml
    args: [--trainer.max_epochs, "10"]   # extra LightningCLI arguments for every fit and test (optional)

:func:`run_benchmark` runs, for each model x training, ``webiml fit --config MODEL --config TRAINING``
then ``webiml test`` on the last checkpoint, each in its own process (a crash or a kill loses one run,
never the table), logging to ``fit.log`` / ``test.log`` and keeping the resolved config that LightningCLI
saved (``config.yaml``) in the run folder. It is resumable: a run whose
``done.json`` exists is not redone; a killed training resumes from its newest ``last.ckpt``.
The table (``results.md`` / ``results.csv`` in ``work``): rows = model x training, columns = test set
F1 and IoU (per-image, at the protocol's threshold, from each run's ``results.csv``), written atomically
after every run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from webiml.io import atomic_write_text

__all__ = ["BenchmarkSpec", "collect_table", "load_spec", "run_benchmark", "table_csv", "table_markdown"]


@dataclass
class BenchmarkSpec:
    """Models x training protocols, their work folder and extra arguments (see the module docstring)."""

    models: dict[str, str]
    training: dict[str, str]
    work: str = "runs/benchmark"
    args: list[str] = field(default_factory=list)
    metrics: tuple[str, ...] = ("pixel_f1", "pixel_iou")


def load_spec(path: str | Path) -> BenchmarkSpec:
    """Read a benchmark spec; relative config paths are taken as given (relative to where webiml runs).

    Raises ``ValueError`` with one line naming the file and the problem.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the benchmark spec: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: a benchmark spec is a mapping with 'models' and 'training'")
    unknown = set(raw) - {"models", "training", "work", "args", "metrics"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} (expected models, training, work, args, metrics)")
    for key in ("models", "training"):
        value = raw.get(key)
        if not isinstance(value, Mapping) or not value or not all(isinstance(v, str) for v in value.values()):
            raise ValueError(f"{path}: '{key}' must map names to config files")
        for name in value:
            if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
                raise ValueError(f"{path}: {key} name {name!r} cannot be a folder name")
    args = raw.get("args") or []
    if not isinstance(args, list):
        raise ValueError(f"{path}: 'args' must be a list of command-line arguments")
    metrics = tuple(raw.get("metrics") or BenchmarkSpec.metrics)
    return BenchmarkSpec(models=dict(raw["models"]), training=dict(raw["training"]), work=str(raw.get("work") or "runs/benchmark"),
                         args=[str(a) for a in args], metrics=metrics)


def _webiml(*args: str) -> list[str]:
    return [sys.executable, "-m", "webiml", *args]


def _run_logged(cmd: Sequence[str], log: Path) -> int:
    """Run ``cmd`` with stdout and stderr appended to ``log`` (a header line with the command first)."""
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}  # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        return subprocess.call(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _newest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.rglob(pattern), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return found[-1] if found else None


def run_one(spec: BenchmarkSpec, model: str, training: str, log: Any = print) -> dict[str, Any]:
    """Train and test one model on one training protocol (resumable); return its ``done.json`` record.

    Raises ``RuntimeError`` naming the log file when ``fit`` or ``test`` fails.
    """
    run = Path(spec.work) / model / training
    done = run / "done.json"
    if done.is_file():
        log(f"{model} / {training}: done, skipped ({done})")
        return json.loads(done.read_text())
    run.mkdir(parents=True, exist_ok=True)
    configs = ["--config", spec.models[model], "--config", spec.training[training]]
    fit_dir, test_dir = run / "fit", run / "test"
    fit_args = [*configs, "--trainer.default_root_dir", str(fit_dir), *spec.args]

    fitted = run / "fit.done"
    if not fitted.is_file():
        resume = _newest(fit_dir, "last.ckpt")
        log(f"{model} / {training}: fit" + (f" (resuming from {resume})" if resume else ""))
        rc = _run_logged(_webiml("fit", *fit_args, *(["--ckpt_path", str(resume)] if resume else [])), run / "fit.log")
        ckpt = _newest(fit_dir, "last.ckpt") or _newest(fit_dir, "*.ckpt")
        if rc != 0 or ckpt is None:
            raise RuntimeError(f"{model} / {training}: fit failed (exit {rc}{', no checkpoint' if ckpt is None else ''}); see {run / 'fit.log'}")
        # The resolved config LightningCLI saved beside the fit's logs, kept at the top of the run folder.
        saved = _newest(fit_dir, "config.yaml")
        if saved is not None:
            atomic_write_text(run / "config.yaml", saved.read_text())
        atomic_write_text(fitted, str(ckpt) + "\n")
    ckpt = fitted.read_text().strip()

    log(f"{model} / {training}: test {ckpt}")
    rc = _run_logged(_webiml("test", *configs, "--trainer.default_root_dir", str(test_dir), *spec.args, "--ckpt_path", ckpt), run / "test.log")
    results = _newest(test_dir, "results.csv")
    if rc != 0 or results is None:
        raise RuntimeError(f"{model} / {training}: test failed (exit {rc}); see {run / 'test.log'}")
    rows = list(csv.DictReader(io.StringIO(results.read_text())))
    record = {"model": model, "training": training, "checkpoint": ckpt, "results_csv": str(results),
              "sets": {r["set"]: {k: _number(r.get(k)) for k in spec.metrics} for r in rows}}
    atomic_write_text(done, json.dumps(record, indent=2) + "\n")
    return record


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def collect_table(spec: BenchmarkSpec) -> list[dict[str, Any]]:
    """The finished runs' records (``done.json``), in spec order; unfinished runs are left out."""
    out = []
    for model in spec.models:
        for training in spec.training:
            done = Path(spec.work) / model / training / "done.json"
            if done.is_file():
                out.append(json.loads(done.read_text()))
    return out


def _sets(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(s for r in records for s in r["sets"]))


def table_markdown(records: Sequence[Mapping[str, Any]], spec: BenchmarkSpec) -> str:
    """Rows = model x training, columns = each test set's metrics (F1 and IoU by default)."""
    sets = _sets(records)
    names = {"pixel_f1": "F1", "pixel_iou": "IoU", "pixel_auc": "pixel AUC", "image_auc": "image AUC"}
    head = ["model", "training", *(f"{s} {names.get(m, m)}" for s in sets for m in spec.metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [r["model"], r["training"]]
        for s in sets:
            for m in spec.metrics:
                v = r["sets"].get(s, {}).get(m, math.nan)
                cells.append("-" if v is None or math.isnan(v) else f"{v:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_csv(records: Sequence[Mapping[str, Any]], spec: BenchmarkSpec) -> str:
    """Long format: one row per model x training x test set, one column per metric."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "training", "set", *spec.metrics, "checkpoint"])
    for r in records:
        for s, values in r["sets"].items():
            writer.writerow([r["model"], r["training"], s, *(values.get(m) for m in spec.metrics), r["checkpoint"]])
    return buf.getvalue()


def write_table(spec: BenchmarkSpec, spec_path: str | Path | None = None) -> Path:
    """Write ``results.md`` and ``results.csv`` into the work folder from the finished runs; return the .md path."""
    records = collect_table(spec)
    work = Path(spec.work)
    work.mkdir(parents=True, exist_ok=True)
    header = ["# With / without MIML", ""]
    if spec_path is not None:
        header += [f"Spec: `{spec_path}`; command: `webiml benchmark {spec_path}`", ""]
    header += ["Training: " + "; ".join(f"**{k}** `{v}`" for k, v in spec.training.items()),
               "Models: " + "; ".join(f"**{k}** `{v}`" for k, v in spec.models.items()), "",
               "Per-image pixel F1 / IoU averaged over each test set's manipulated images, at the protocol's threshold "
               "(each run's results.csv, which records the protocol, lies in <work>/<model>/<training>/test/).", "",
               f"{len(records)} of {len(spec.models) * len(spec.training)} runs finished.", ""]
    md = work / "results.md"
    atomic_write_text(md, "\n".join(header) + table_markdown(records, spec) + "\n")
    atomic_write_text(work / "results.csv", table_csv(records, spec))
    return md


def run_benchmark(spec: BenchmarkSpec, spec_path: str | Path | None = None, only: Sequence[str] = (), log: Any = print) -> tuple[Path, list[str]]:
    """Run every unfinished model x training of ``spec`` (or the models in ``only``), rewriting the table after
    each. A failed run is reported and the others go on; returns (table path, failure messages)."""
    failures: list[str] = []
    for model in spec.models:
        if only and model not in only:
            continue
        for training in spec.training:
            try:
                run_one(spec, model, training, log=log)
            except RuntimeError as err:
                failures.append(str(err))
                log(f"error: {err}")
            write_table(spec, spec_path)
    return write_table(spec, spec_path), failures
