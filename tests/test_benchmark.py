"""`webiml benchmark`: the with/without-MIML runner on tiny generated data (smoke version of the real thing):
every model x training is trained and tested in its own process, the table has one row per run and one
F1 / IoU column pair per test set, finished runs are not redone, a killed training resumes from last.ckpt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from webiml.benchmark import load_spec
from webiml.cli import main


def _write(path: Path, obj: object) -> Path:
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


@pytest.fixture()
def spec(tmp_path: Path, tiny_dataset: Path) -> Path:
    model = _write(tmp_path / "model.yaml", {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}]},
        "model": {"class_path": "webiml.tasks.iml.IMLTask",
                  "init_args": {"net": {"class_path": "webiml.models.SmpIML", "init_args": {"arch": "FPN", "encoder": "resnet18"}}, "lr": 1e-3}},
    })
    data = {"batch_size": 4, "eval_batch_size": 4, "num_workers": 0, "crop_size": 64, "eval_policy": "native", "pin_memory": False,
            "val": {"tinyval": str(tiny_dataset / "val" / "manifest.jsonl")},
            "test": {"tinytest": str(tiny_dataset / "test" / "manifest.jsonl"), "tinyval": str(tiny_dataset / "val" / "manifest.jsonl")}}
    without = _write(tmp_path / "without.yaml", {"data": {"class_path": "webiml.data.datamodule.IMLDataModule", "init_args": {
        **data, "train": [str(tiny_dataset / "train" / "manifest.jsonl")]}}})
    # "with": the same training set plus a second source standing in for the web-scale data.
    with_ = _write(tmp_path / "with.yaml", {"data": {"class_path": "webiml.data.datamodule.IMLDataModule", "init_args": {
        **data, "train": [str(tiny_dataset / "train" / "manifest.jsonl"), str(tiny_dataset / "val" / "manifest.jsonl")]}}})
    return _write(tmp_path / "spec.yaml", {"work": str(tmp_path / "work"), "models": {"fpn": str(model)},
                                            "training": {"without": str(without), "with": str(with_)}})


def test_benchmark_runs_tables_and_resumes(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", str(spec)]) == 0
    work = tmp_path / "work"
    table = (work / "results.md").read_text()
    assert "| model | training | tinytest F1 | tinytest IoU | tinyval F1 | tinyval IoU |" in table
    rows = [line for line in table.splitlines() if line.startswith("| fpn |")]
    assert [r.split(" | ")[1] for r in rows] == ["without", "with"]
    assert "2 of 2 runs finished" in table
    csv_lines = (work / "results.csv").read_text().splitlines()
    # two sets and their mean (results.csv's mean row) per run
    assert csv_lines[0].startswith("model,training,set,pixel_f1,pixel_iou") and len(csv_lines) == 1 + 2 * 3
    for training in ("without", "with"):
        run = work / "fpn" / training
        done = json.loads((run / "done.json").read_text())
        f1 = done["sets"]["tinytest"]["pixel_f1"]
        assert 0.0 <= f1 <= 1.0 and f"{f1:.3f}" in table
        resolved = yaml.safe_load((run / "config.yaml").read_text())  # the resolved config of this run
        assert len(resolved["data"]["init_args"]["train"]) == (1 if training == "without" else 2)
        assert "fit" in (run / "fit.log").read_text() and (run / "test.log").is_file()

    # Finished runs are skipped; a run killed after its checkpoint resumes from last.ckpt.
    run = work / "fpn" / "with"
    (run / "done.json").unlink()
    (run / "fit.done").unlink()
    capsys.readouterr()
    assert main(["benchmark", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "fpn / without: done, skipped" in out and "fpn / with: fit (resuming from" in out
    assert "--ckpt_path" in (run / "fit.log").read_text().split("$ ")[-1]
    assert (run / "done.json").is_file()


def test_benchmark_bad_spec_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path / "bad.yaml", {"models": {"a": "x.yaml"}})
    assert main(["benchmark", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml" in err and "'training'" in err
    with pytest.raises(ValueError, match="unknown keys"):
        load_spec(_write(tmp_path / "typo.yaml", {"models": {"a": "x"}, "training": {"b": "y"}, "wrok": "z"}))
