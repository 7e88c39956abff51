"""The one task base (webiml.tasks.base.BaseTask) under IMLTask and the CAAAv2 pair tasks, and `webiml export`
of every task kind."""

from __future__ import annotations

import json
import warnings

import lightning as L
import pytest
import torch
from safetensors.torch import save_model

import webiml
from webiml.annotate.caaa import CAAAv2Annotator
from webiml.cli import main
from webiml.data.pair_datamodule import PairDataModule
from webiml.models.caaa import PairClassifier, PairModel, SDGSegmenter, SPGSegmenter
from webiml.tasks.base import BaseTask
from webiml.tasks.iml import IMLTask
from webiml.tasks.pairs import PairClassifierTask, PairSegmenterTask


def _dm(tmp_path, mode: str, **kwargs) -> PairDataModule:
    args = {"num_train": 2, "num_val": 2, "synth_size": 48, "size": 32, "batch_size": 2, "num_workers": 0} | kwargs
    return PairDataModule(mode=mode, root=str(tmp_path / "pairs"), **args)


def _trainer(**kwargs) -> L.Trainer:
    args = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0} | kwargs
    return L.Trainer(**args)


def _pair_task(mode: str) -> BaseTask:
    if mode == "classifier":
        return PairClassifierTask(PairClassifier(input_size=32, drop_rate=0.0), lr=1e-3, schedule="constant")
    net = SPGSegmenter() if mode == "spg" else SDGSegmenter(top_k=3)
    return PairSegmenterTask(net, lr=1e-3, schedule="constant")


def test_every_task_is_a_base_task_and_keeps_the_net_out_of_its_hparams() -> None:
    for task in (_pair_task("classifier"), _pair_task("spg"), IMLTask(webiml.create_model("SmpIML"))):
        assert isinstance(task, BaseTask)
        net = task.hparams["net"]
        assert net["class_path"] == f"{type(task.net).__module__}.{type(task.net).__name__}"
        assert net["init_args"]["encoder_weights"] is None
        assert not isinstance(task.hparams_initial["net"], torch.nn.Module)  # what loggers record
        # state-dict keys of the task are the net's under "net." (and nothing of the metrics)
        assert {k for k in task.state_dict() if not k.startswith("net.")} <= {"criterion.pos_weight"}


@pytest.mark.parametrize("mode", ["classifier", "spg", "sdg"])
def test_pair_task_loss_falls_on_a_fixed_batch(tmp_path, mode: str) -> None:
    torch.manual_seed(0)
    task = _pair_task(mode)
    dm = _dm(tmp_path, mode, num_train=4, degrade=False)
    dm.prepare_data()
    dm.setup("fit")
    batch = task.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)  # normalised like on the device
    optimizer = task.configure_optimizers()["optimizer"]
    task.train()
    losses = []
    for _ in range(20):
        loss = task.losses(task.forward_batch(batch), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.7 * losses[0], losses


class _TwoValSets(L.LightningDataModule):
    """A pair datamodule whose validation data comes as two named sets."""

    def __init__(self, dm: PairDataModule) -> None:
        super().__init__()
        self.dm = dm

    def eval_names(self, stage: str) -> list[str]:
        return ["easy", "hard"] if stage == "val" else []

    def prepare_data(self) -> None:
        self.dm.prepare_data()

    def setup(self, stage: str) -> None:
        self.dm.setup(stage)

    def train_dataloader(self):
        return self.dm.train_dataloader()

    def val_dataloader(self):
        return [self.dm.val_dataloader(), self.dm.val_dataloader()]


class _Watch(L.Callback):
    def __init__(self) -> None:
        self.at_fit_start: list[str] = []
        self.counts: list[dict[str, int]] = []

    def on_fit_start(self, trainer, task) -> None:  # after setup(), before any step
        self.at_fit_start = sorted(task.eval_metrics)
        self.devices = {str(m["pixel"].sums.device) for m in task.eval_metrics.values()}

    def on_validation_epoch_end(self, trainer, task) -> None:  # callbacks run before the task's hook computes
        self.counts.append({k: int(m["pixel"].update_count) for k, m in task.eval_metrics.items()})


def test_metrics_of_named_eval_sets_are_built_in_setup_and_reset_per_epoch(tmp_path) -> None:
    torch.manual_seed(0)
    task = _pair_task("spg")
    assert len(task.eval_metrics) == 0  # nothing before setup()
    watch = _Watch()
    trainer = _trainer(max_epochs=2, callbacks=[watch])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, _TwoValSets(_dm(tmp_path, "spg")))
    assert watch.at_fit_start == ["val__easy", "val__hard"]
    assert watch.devices == {"cpu"}
    # each epoch counts its own batches (one per set here), not the epochs before: reset per epoch
    assert watch.counts == [{"val__easy": 1, "val__hard": 1}] * 2
    assert all(m["pixel"].update_count == 0 for m in task.eval_metrics.values())  # reset after the last epoch
    logged = set(trainer.callback_metrics)
    assert {"val/easy/pixel_f1", "val/hard/pixel_f1", "val/pixel_f1", "val/loss/dataloader_idx_1"} <= logged
    mean = (trainer.callback_metrics["val/easy/pixel_f1"] + trainer.callback_metrics["val/hard/pixel_f1"]) / 2
    torch.testing.assert_close(trainer.callback_metrics["val/pixel_f1"], mean)


def _fit_two_steps(tmp_path, mode: str):
    torch.manual_seed(0)
    task = _pair_task(mode)
    trainer = _trainer(max_steps=2, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, _dm(tmp_path, mode, num_val=0))
    ckpt = tmp_path / f"{mode}.ckpt"
    trainer.save_checkpoint(ckpt)
    return task, ckpt


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    a.eval(), b.eval()
    o, f = torch.randn(1, 3, 32, 40), torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        x, y = a(o, f), b(o, f)
    for name in ("category_logits", "aligned_logits", "box", "mask_logits"):
        if hasattr(x, name):
            torch.testing.assert_close(getattr(x, name), getattr(y, name))


@pytest.mark.parametrize("mode", ["classifier", "spg", "sdg"])
def test_webiml_export_of_a_pair_task_loads_with_from_pretrained(tmp_path, mode: str) -> None:
    task, ckpt = _fit_two_steps(tmp_path, mode)
    out = tmp_path / "parts" / {"classifier": "classifier", "spg": "spg", "sdg": "sdg"}[mode]
    assert main(["export", str(ckpt), str(out), "--name", f"test {mode}", "--license", "cc-by-4.0"]) == 0
    model = webiml.from_pretrained(out)
    assert type(model) is type(task.net) and isinstance(model, PairModel)
    _same_outputs(task.net, model)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == type(task.net).__name__ and config["encoder_weights"] is None
    assert "thresholds" not in config  # decision thresholds are an IML model's
    card = (out / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "CAAAv2" in card and f"# test {mode}" in card
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]  # no temp files
    assert type(model).from_pretrained(out) is not None
    with pytest.raises(webiml.hub.CheckpointError, match="not a IMLModel"):
        webiml.models.IMLModel.from_pretrained(out)


def test_pair_models_are_registered_and_save_like_iml_models(tmp_path) -> None:
    assert {"PairClassifier", "SPGSegmenter", "SDGSegmenter"} <= set(webiml.list_models())
    assert "PairModel" not in webiml.list_models() and "IMLModel" not in webiml.list_models()
    model = webiml.create_model("SDGSegmenter", top_k=2)
    assert isinstance(model, SDGSegmenter) and model.top_k == 2
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "half", dtype="float16")
    full, half = (tmp_path / d / "model.safetensors" for d in ("full", "half"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    again = SDGSegmenter.from_pretrained(tmp_path / "half")
    assert again.top_k == 2 and next(again.parameters()).dtype == torch.float32


def test_part_folders_of_the_plain_hub_mixin_still_load(tmp_path) -> None:
    """Parts exported before the pair models used webiml's hub hooks: config.json without 'architecture'
    (huggingface_hub's mixin), weights written by safetensors.save_model."""
    torch.manual_seed(0)
    parts = {"classifier": PairClassifier(input_size=32), "spg": SPGSegmenter(), "sdg": SDGSegmenter(top_k=3)}
    for name, net in parts.items():
        folder = tmp_path / "parts" / name
        folder.mkdir(parents=True)
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in net._hub_mixin_config.items()}
        (folder / "config.json").write_text(json.dumps(config))
        save_model(net, str(folder / "model.safetensors"))
        _same_outputs(net, type(net).from_pretrained(folder))
    ann = CAAAv2Annotator.from_pretrained(tmp_path / "parts", tta=False)
    assert ann.classifier.input_size == 32 and ann.sdg.top_k == 3
    with pytest.raises(webiml.hub.CheckpointError, match="architecture"):
        webiml.from_pretrained(tmp_path / "parts" / "spg")  # no class to read it as
