"""The `webiml` CLI in-process: fit -> validate -> test -> predict round trip, help and print_config,
and a 2-process DDP test (gloo on CPU) whose metrics equal the single-process ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from webiml.cli import main

REPO = Path(__file__).resolve().parents[1]


def _config(tmp: Path, data: Path) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": 1, "default_root_dir": str(tmp / "runs"),
            "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
            "callbacks": [{"class_path": "webiml.callbacks.MetricsSummary"}],
        },
        "model": {
            "class_path": "webiml.tasks.iml.IMLTask",
            "init_args": {"net": {"class_path": "webiml.models.SmpIML", "init_args": {"arch": "FPN"}}, "lr": 1e-3},
        },
        "data": {
            "class_path": "webiml.data.datamodule.IMLDataModule",
            "init_args": {
                "train": str(data / "train" / "manifest.jsonl"),
                "val": {"tinyval": str(data / "val" / "manifest.jsonl")},
                "test": {"tinytest": str(data / "test" / "manifest.jsonl"), "tinyval": str(data / "val" / "manifest.jsonl")},
                "predict": str(data / "test" / "images"),
                "batch_size": 4, "eval_batch_size": 3, "num_workers": 0, "crop_size": 64,
                "eval_policy": "native", "pin_memory": False,
            },
        },
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _latest(tmp: Path, name: str) -> Path:
    files = sorted((tmp / "runs").rglob(name), key=lambda p: p.stat().st_mtime)
    assert files, f"no {name} written under {tmp / 'runs'}"
    return files[-1]


def test_help_and_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "fit" in out and "localize" in out and "zoo" in out
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--model" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--print_config"])
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["net"]["class_path"].endswith("SmpIML")
    assert printed["data"]["class_path"].endswith("SyntheticIMLDataModule")


def test_fit_validate_test_predict_round_trip(tmp_path: Path, tiny_dataset: Path) -> None:
    cfg = _config(tmp_path, tiny_dataset)
    main(["fit", "--config", str(cfg)])
    ckpt = _latest(tmp_path, "*.ckpt")
    val = json.loads(_latest(tmp_path, "val_metrics.json").read_text())
    assert {"val/tinyval/pixel_f1", "val/tinyval/image_auc"} <= set(val)
    assert "val/pixel_f1" not in val  # one validation set: its mean would repeat it; each metric once

    main(["validate", "--config", str(cfg), "--ckpt_path", str(ckpt)])
    main(["test", "--config", str(cfg), "--ckpt_path", str(ckpt)])
    results = json.loads(_latest(tmp_path, "test_metrics.json").read_text())
    for name in ("tinytest", "tinyval"):
        for key in ("pixel_f1", "pixel_iou", "pixel_f1_best", "pixel_f1_permuted", "pixel_auc", "image_auc", "image_balanced_acc"):
            assert f"test/{name}/{key}" in results
    assert 0.0 <= results["test/tinytest/pixel_f1"] <= 1.0
    assert "test/pixel_f1" in results  # two test sets: their mean is kept
    table = _latest(tmp_path, "results.md").read_text()  # ResultsTable is a default callback of the CLI
    assert "tinytest" in table and "tinyval" in table and "native" in table
    # The same checkpoint gives the same validation numbers on the same data in fit and validate.
    assert results["test/tinyval/pixel_f1"] == pytest.approx(val["val/tinyval/pixel_f1"], abs=1e-6)

    main(["predict", "--config", str(cfg), "--ckpt_path", str(ckpt)])
    scores = _latest(tmp_path, "scores.json")  # PredictionWriter, a default callback: files like localize's
    predicted = json.loads(scores.read_text())
    images = sorted((tiny_dataset / "test" / "images").iterdir())
    assert [Path(r["path"]).name for r in predicted["images"]] == [p.name for p in images]
    assert predicted["pixel_threshold"] == 0.5 and all(r["manipulated"] in (0, 1) for r in predicted["images"])
    for r in predicted["images"]:
        assert (scores.parent / f"{r['name']}_prob.png").is_file() and (scores.parent / f"{r['name']}_mask.png").is_file()
    assert (scores.parent / "scores.csv").read_text().count("\n") == len(images) + 1
    assert not list(scores.parent.glob("scores.rank*"))

    out = tmp_path / "exported"
    assert main(["export", str(ckpt), str(out)]) == 0
    import webiml

    model = webiml.from_pretrained(out)
    assert type(model).__name__ == "SmpIML"


@pytest.mark.skipif(sys.platform != "linux", reason="DDP subprocess launch tested on Linux")
def test_ddp_two_processes_equal_single_process(tmp_path: Path, tiny_dataset: Path) -> None:
    """`webiml test` under DDP (2 CPU processes, gloo) gives exactly the single-process metrics."""
    cfg = _config(tmp_path, tiny_dataset)
    main(["fit", "--config", str(cfg), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"])
    ckpt = _latest(tmp_path, "*.ckpt")

    def run_test(tag: str, *extra: str) -> dict[str, float]:
        root = tmp_path / tag
        cmd = [sys.executable, "-m", "webiml", "test", "--config", str(cfg), "--ckpt_path", str(ckpt),
               "--trainer.default_root_dir", str(root), *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        files = list(root.rglob("test_metrics.json"))
        assert len(files) == 1, f"{tag}: {files}"
        return json.loads(files[0].read_text())

    # One image per forward pass in both runs: convolution kernels may round differently for different batch
    # shapes, which would blur what this test checks (that sharding and metric synchronisation lose nothing).
    single = run_test("single", "--data.init_args.eval_batch_size", "1")
    ddp = run_test("ddp", "--data.init_args.eval_batch_size", "1", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                   "--trainer.accelerator", "cpu")
    assert set(single) == set(ddp)
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


@pytest.mark.parametrize("name", ["classifier", "spg_segmenter", "sdg_segmenter"])
def test_caaa_configs_fit_fast_dev_run(name: str, tmp_path: Path) -> None:
    """The CAAAv2 part configs run through the same CLI (any LightningModule by class_path)."""
    cfg = REPO / "configs" / "caaa" / f"{name}.yaml"
    main(["fit", "--config", str(cfg), "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path),
          "--data.init_args.root", str(tmp_path / "pairs"), "--data.init_args.num_workers", "0",
          "--data.init_args.num_train", "8", "--data.init_args.num_val", "4", "--data.init_args.num_test", "4"])
