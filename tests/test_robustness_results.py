"""Robustness protocol (test-time degradation sweeps, one dataloader per (set, level)) and the results table
callback (results.csv / results.md with the protocol recorded)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from webiml.cli import main
from webiml.data.datamodule import DEFAULT_LEVELS, IMLDataModule, degradation_tag, parse_degradation_tag
from webiml.results import collect_rows, git_commit, markdown_table, robustness_tables, split_set_name


def _dm(data: Path, **kw) -> IMLDataModule:
    test = {"tinytest": str(data / "test" / "manifest.jsonl"), "tinyval": str(data / "val" / "manifest.jsonl")}
    return IMLDataModule(test=test, num_workers=0, pin_memory=False, eval_policy="fixed", eval_size=64, **kw)


def test_degradation_variants_are_named_loaders(tiny_dataset: Path) -> None:
    plain = _dm(tiny_dataset)
    assert plain.eval_names("test") == ["tinytest", "tinyval"]  # unchanged without a degradation
    dm = _dm(tiny_dataset, test_degradation="jpeg", test_degradation_levels=[90, 50])
    names = ["tinytest", "tinytest@jpeg90", "tinytest@jpeg50", "tinyval", "tinyval@jpeg90", "tinyval@jpeg50"]
    assert dm.eval_names("test") == names
    dm.setup("test")
    loaders = dm.test_dataloader()
    assert len(loaders) == len(names)
    clean, q50 = loaders[0].dataset[0], loaders[2].dataset[0]
    assert clean["path"] == q50["path"]
    assert torch.equal(clean["mask_orig"], q50["mask_orig"])  # masks untouched
    assert not torch.equal(clean["image"], q50["image"])
    assert (clean["image"].float() - q50["image"].float()).abs().mean() < 40  # degraded, not garbage
    assert _dm(tiny_dataset, test_degradation="noise", test_clean=False).eval_names("test")[0] == "tinytest@noise3"
    assert len(_dm(tiny_dataset, test_degradation="blur").eval_names("test")) == 2 * (1 + len(DEFAULT_LEVELS["blur"]))


def test_noise_degradation_is_reproducible(tiny_dataset: Path) -> None:
    def first(seed: int) -> torch.Tensor:
        dm = _dm(tiny_dataset, test_degradation="noise", test_degradation_levels=[10], test_clean=False, degradation_seed=seed)
        dm.setup("test")
        return dm.test_dataloader()[0].dataset[0]["image"]

    assert torch.equal(first(0), first(0)) and not torch.equal(first(0), first(1))


def test_degradation_arguments_are_checked(tiny_dataset: Path) -> None:
    with pytest.raises(ValueError, match="unknown test_degradation"):
        _dm(tiny_dataset, test_degradation="sepia")
    with pytest.raises(ValueError, match="quality"):
        _dm(tiny_dataset, test_degradation="jpeg", test_degradation_levels=[0])
    with pytest.raises(ValueError, match="without test_degradation"):
        _dm(tiny_dataset, test_degradation_levels=[90])
    assert degradation_tag("blur", 1.5) == "blur1.5" and degradation_tag("jpeg", 70.0) == "jpeg70"


def test_rows_tables_and_names() -> None:
    assert split_set_name("casia1@jpeg70") == ("casia1", "jpeg70")
    assert split_set_name("in-the-wild@resize0.5") == ("in-the-wild", "resize0.5")
    assert split_set_name("a@b") == ("a@b", "none")
    metrics = {"test/loss/dataloader_idx_0": 1.0, "test/pixel_f1": 0.5}
    for name, f1 in (("a", 0.6), ("a@jpeg90", 0.5), ("a@jpeg50", 0.2), ("b", 0.4), ("b@jpeg90", math.nan), ("b@jpeg50", 0.1)):
        metrics.update({f"test/{name}/pixel_f1": f1, f"test/{name}/pixel_n_images": 4.0, f"test/{name}/image_auc": 0.7})
    rows = collect_rows(metrics)
    assert [r["set"] for r in rows] == ["a", "b", "mean", "a@jpeg90", "b@jpeg90", "mean@jpeg90", "a@jpeg50", "b@jpeg50", "mean@jpeg50"]
    mean90 = next(r for r in rows if r["set"] == "mean@jpeg90")
    assert mean90["pixel_f1"] == pytest.approx(0.5) and mean90["pixel_n_images"] == 8  # NaN left out of the mean
    assert math.isnan(rows[0]["pixel_iou"])
    assert "| a | none | 4 | - | 0.6000 |" in markdown_table(rows)
    robust = robustness_tables(rows)
    assert "| dataset | clean | jpeg90 | jpeg50 |" in robust and "| a | 0.6000 | 0.5000 | 0.2000 |" in robust
    assert robustness_tables([r for r in rows if r["degradation"] == "none"]) == ""


def test_only_real_degradation_tags_are_parsed() -> None:
    """A set named like ``foo@v2`` (a version, a subset) is a set of its own, not a degradation level."""
    for name in ("foo@v2", "foo@jpeg", "foo@jpeg070", "foo@blur-1", "foo@x1.5", "@jpeg70", "foo@jpeg70x"):
        assert split_set_name(name) == (name, "none"), name
    for kind, levels in DEFAULT_LEVELS.items():
        for level in levels:
            tag = degradation_tag(kind, level)
            assert split_set_name(f"foo@v2@{tag}") == ("foo@v2", tag)
            assert parse_degradation_tag(tag) == (kind, float(level))
    metrics = {f"test/{n}/pixel_f1": v for n, v in (("foo", 0.5), ("foo@v2", 0.3), ("foo@v2@jpeg70", 0.1))}
    rows = collect_rows(metrics)
    assert [(r["dataset"], r["degradation"]) for r in rows] == [
        ("foo", "none"), ("foo@v2", "none"), ("mean", "none"), ("foo@v2", "jpeg70"), ("mean", "jpeg70")]
    assert "| foo@v2 | 0.3000 | 0.1000 |" in robustness_tables(rows)


def test_git_commit(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "unknown"
    commit = git_commit()
    assert commit == "unknown" or len(commit.split("-")[0]) == 40


def test_webiml_test_writes_results_per_level(tmp_path: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "default_root_dir": str(tmp_path / "runs"),
                    "enable_progress_bar": False, "enable_model_summary": False, "logger": False,
                    "callbacks": [{"class_path": "webiml.results.ResultsTable",
                                   "init_args": {"out_dir": str(tmp_path / "results")}}]},
        "model": {"class_path": "webiml.tasks.iml.IMLTask",
                  "init_args": {"net": {"class_path": "webiml.models.SmpIML", "init_args": {"arch": "FPN"}}}},
        "data": {"class_path": "webiml.data.datamodule.IMLDataModule",
                 "init_args": {"test": {"tinytest": str(tiny_dataset / "test" / "manifest.jsonl")},
                               "test_degradation": "jpeg", "test_degradation_levels": [90, 50],
                               "eval_batch_size": 4, "num_workers": 0, "pin_memory": False,
                               "eval_policy": "native", "eval_min_side": 64, "eval_max_side": 128}},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["test", "--config", str(path)])
    printed = capsys.readouterr().out
    assert "| tinytest | jpeg50 |" in printed and "protocol:" in printed

    with (tmp_path / "results" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["set"] for r in rows] == ["tinytest", "tinytest@jpeg90", "tinytest@jpeg50"]
    for r in rows:
        assert r["eval_policy"] == "native" and r["eval_sizes"] == "native, min side 64, max side 128"
        assert r["degradation"] in ("none", "jpeg90", "jpeg50") and r["datamodule"] == "IMLDataModule"
        assert r["test_degradation"] == "jpeg 50, 90"
        assert r["ckpt_path"].startswith("none") and r["git_commit"] and "SmpIML" in r["model"]
        assert r["pixel_n_images"] == "8" and 0.0 <= float(r["pixel_f1"]) <= 1.0
        for key in ("pixel_iou", "pixel_f1_best", "pixel_f1_permuted", "pixel_auc", "image_auc", "image_balanced_acc"):
            assert key in r
    md = (tmp_path / "results" / "results.md").read_text()
    assert "**eval policy**: `native`" in md and "**test degradation**: `jpeg 50, 90`" in md and "## Robustness" in md
    assert "| dataset | clean | jpeg90 | jpeg50 |" in md


def _strict_json(path: Path) -> dict:
    """Parse as standard JSON: NaN / Infinity are not JSON, a strict reader rejects them."""
    import json

    def refuse(token: str) -> None:
        raise ValueError(f"{path.name}: {token} is not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _metrics_writers(tmp_path: Path):
    """MetricsSummary (val_metrics.json) and IMLTask.on_test_epoch_end (test_metrics.json) with a stand-in trainer."""
    from types import SimpleNamespace

    from webiml.callbacks import MetricsSummary
    from webiml.models import SmpIML
    from webiml.tasks.iml import IMLTask

    nan = float("nan")
    trainer = SimpleNamespace(log_dir=str(tmp_path), is_global_zero=True, current_epoch=0, global_step=1,
                              callback_metrics={"val/pixel_f1": torch.tensor(0.5), "val/image_auc": torch.tensor(nan)})
    task = IMLTask(net=SmpIML(arch="FPN"))
    task.trainer = trainer
    task._eval_epoch_end = lambda stage: {"test/a/pixel_f1": 0.25, "test/a/image_auc": nan}  # type: ignore[method-assign]
    return [("val_metrics.json", lambda: MetricsSummary().on_fit_end(trainer, task), {"val/pixel_f1": 0.5, "val/image_auc": None}),
            ("test_metrics.json", task.on_test_epoch_end, {"test/a/pixel_f1": 0.25, "test/a/image_auc": None})]


def test_metrics_json_is_valid_and_replaced_atomically(tmp_path: Path) -> None:
    """val_metrics.json / test_metrics.json: NaN (an undefined metric) is written as null, and the file is
    replaced by a rename, never rewritten in place (a reader of the old file, here a hard link to it, keeps
    a complete old file; a crash mid-write cannot leave half a file)."""
    for name, write, expected in _metrics_writers(tmp_path):
        path = tmp_path / name
        path.write_text('{"old": 1}')
        os.link(path, tmp_path / f"{name}.reader")
        write()
        assert _strict_json(path) == expected
        assert _strict_json(tmp_path / f"{name}.reader") == {"old": 1}
        assert (path.stat().st_mode & 0o777) == (0o666 & ~_umask())
    assert not list(tmp_path.glob(".*tmp"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
