"""The single-image IML task: any :class:`~webiml.models.base.IMLModel` trained and evaluated with Lightning.

Training: losses from :class:`~webiml.tasks.losses.IMLLoss`, AdamW with optional layer-wise lr decay,
linear warmup then cosine / poly / constant schedule, optional batch-level GPU augmentation applied after
the batch reaches the device. Evaluation: predictions are mapped back to each image's original
resolution and scored with :mod:`webiml.metrics`, one metric set per evaluation set (dataloader).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from webiml.data.transforms import GpuAugment, restore_prediction
from webiml.io import atomic_write_json
from webiml.metrics import ImageMetrics, PixelMetrics, flatten_results
from webiml.models.base import IMLModel, IMLOutput
from webiml.tasks.losses import IMLLoss
from webiml.tasks.optim import adamw_with_schedule

log = logging.getLogger(__name__)


class IMLTask(L.LightningModule):
    """Lightning task wrapping an IML model.

    Args:
        net: the IML model (any :class:`IMLModel`; chosen by ``class_path`` in YAML).
        lr: base learning rate of AdamW.
        weight_decay: AdamW weight decay (not applied to biases and norm weights).
        layer_decay: layer-wise lr decay factor for the encoder (e.g. 0.9), ``None`` to disable.
        schedule: ``"cosine"``, ``"poly"`` or ``"constant"`` after warmup; stepped every optimiser step.
        warmup_steps: linear warmup steps (or a fraction of all steps if < 1).
        min_lr_ratio: final lr as a fraction of ``lr``.
        poly_power: exponent of the poly schedule.
        bce_weight, dice_weight, ohem_thresh, ohem_min_kept, image_loss_weight, aux_weights, pos_weight: see
            :class:`~webiml.tasks.losses.IMLLoss`.
        gpu_augment: batch-level photometric augmentation run on the device during training.
        threshold: binarisation threshold of the fixed-threshold metrics.
        init_weights: start from a pretrained model (catalogue name, Hub id, folder or .safetensors): its
            weights are loaded strictly into ``net``; if ``net`` is omitted the pretrained model itself is used.
        freeze_encoder: keep the encoder's weights fixed (fine-tuning the decoder and heads only).
    """

    def __init__(
        self,
        net: IMLModel | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        layer_decay: float | None = None,
        schedule: str = "cosine",
        warmup_steps: float = 0,
        min_lr_ratio: float = 0.0,
        poly_power: float = 1.0,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 100_000,
        image_loss_weight: float = 0.5,
        aux_weights: float | list[float] = 0.4,
        pos_weight: float = 1.0,
        gpu_augment: GpuAugment | None = None,
        threshold: float = 0.5,
        init_weights: str | None = None,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        # Under LightningCLI the hparams are the parsed config (plain class_path dicts), which is what lets
        # `--ckpt_path` restore the model; used directly from Python, modules are replaced by their configs.
        self.save_hyperparameters()
        for key, module in (("net", net), ("gpu_augment", gpu_augment)):
            if isinstance(self.hparams.get(key), nn.Module):
                self.hparams[key] = {"class_path": f"{type(module).__module__}.{type(module).__name__}",
                                     "init_args": getattr(module, "config", {})}
        if net is None:
            if init_weights is None:
                raise ValueError("IMLTask needs a net, or init_weights naming a pretrained model to start from")
            from webiml.hub import from_pretrained

            net = from_pretrained(init_weights).train()
        elif init_weights is not None:
            load_pretrained_weights(net, init_weights)
        if freeze_encoder:
            encoder = getattr(net, "encoder", None)
            if encoder is None:
                raise ValueError(f"freeze_encoder: {type(net).__name__} has no 'encoder' attribute")
            encoder.requires_grad_(False)
        self.net = net
        self.criterion = IMLLoss(bce_weight, dice_weight, ohem_thresh, ohem_min_kept, image_loss_weight, aux_weights, pos_weight)
        self.gpu_augment = gpu_augment
        self.eval_metrics = nn.ModuleDict()
        self._stage_names: dict[str, list[str]] = {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What `webiml export` needs to rebuild the net without the training config.
        checkpoint["webiml_net"] = {"architecture": type(self.net).__name__, "config": self.net.config}

    # -- data on the device -------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Photometric augmentation (training only) and normalisation happen here, on the device."""
        if batch is None:
            return batch
        images = batch["image"]
        if self.trainer is not None and self.trainer.training and self.gpu_augment is not None:
            images = self.gpu_augment(images)
        batch["image"] = self.net.normalize(images)
        return batch

    def forward(self, images: Tensor) -> IMLOutput:
        return self.net(images)

    # -- training -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if batch is None:
            return None
        out = self.net(batch["image"])
        parts = self.criterion(out, batch["mask"], batch.get("label"), batch.get("weight"))
        bs = batch["image"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items() if k != "loss"}, batch_size=bs)
        self.log("train/loss", parts["loss"].detach(), batch_size=bs, prog_bar=True)
        return parts["loss"]

    # -- evaluation ---------------------------------------------------------------------------
    def _names(self, stage: str) -> list[str]:
        if stage not in self._stage_names:
            dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            names = list(dm.eval_names(stage)) if dm is not None and hasattr(dm, "eval_names") else []
            self._stage_names[stage] = names or ["default"]
        return self._stage_names[stage]

    def _metrics(self, stage: str, idx: int) -> nn.ModuleDict:
        key = f"{stage}__{self._names(stage)[idx] if idx < len(self._names(stage)) else idx}"
        if key not in self.eval_metrics:
            self.eval_metrics[key] = nn.ModuleDict(
                {"pixel": PixelMetrics(threshold=self.hparams.threshold), "image": ImageMetrics(threshold=self.hparams.threshold)}
            ).to(self.device)
        return self.eval_metrics[key]

    def _eval_step(self, stage: str, batch: dict[str, Any], dataloader_idx: int) -> None:
        if batch is None:
            return
        out = self.net(batch["image"])
        bs = batch["image"].shape[0]
        parts = self.criterion(out, batch["mask"], batch.get("label"), batch.get("weight"))
        self.log(f"{stage}/loss", parts["loss"], batch_size=bs, add_dataloader_idx=True, sync_dist=True)
        probs = out.mask_logits.sigmoid().float()
        restored = [_restore(probs[i], batch, i) for i in range(bs)]
        targets = [t.to(self.device) for t in batch["mask_orig"]]
        metrics = self._metrics(stage, dataloader_idx)
        metrics["pixel"].update(restored, targets)
        metrics["image"].update(out.image_probs().float(), batch["label"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        results: dict[str, float] = {}
        per_set: list[dict[str, float]] = []
        for name in self._names(stage):
            key = f"{stage}__{name}"
            if key not in self.eval_metrics:
                continue
            m = self.eval_metrics[key]
            flat = flatten_results(m["pixel"].compute(), m["image"].compute(), prefix="")
            m["pixel"].reset()
            m["image"].reset()
            per_set.append(flat)
            for k, v in flat.items():
                results[f"{stage}/{name}/{k}"] = v
        if per_set:
            # The mean over evaluation sets is what checkpointing and early stopping monitor.
            for k in per_set[0]:
                vals = [s[k] for s in per_set if not math.isnan(s[k])]
                results[f"{stage}/{k}"] = sum(vals) / len(vals) if vals else float("nan")
        # Metrics are already synchronised across processes by torchmetrics.
        self.log_dict(results, sync_dist=False, add_dataloader_idx=False)
        return results

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        results = self._eval_epoch_end("test")
        log_dir = self.trainer.log_dir  # a collective call under DDP: every rank must make it
        if self.trainer.is_global_zero and log_dir:
            path = Path(log_dir) / "test_metrics.json"
            atomic_write_json(path, results, sort_keys=True)  # NaN (a metric undefined on a set) -> null
            log.info("test metrics written to %s", path)

    # -- prediction ---------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        out = self.net(batch["image"])
        probs = out.mask_logits.sigmoid().float()
        scores = out.image_probs().float()
        results = []
        for i in range(probs.shape[0]):
            results.append({
                "path": batch["path"][i] if "path" in batch else None,
                "mask_probs": _restore(probs[i], batch, i).cpu(),
                "image_score": float(scores[i]),
            })
        return results

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return adamw_with_schedule(
            self.net, lr=hp.lr, weight_decay=hp.weight_decay, total_steps=total, layer_decay=hp.layer_decay,
            schedule=hp.schedule, warmup_steps=hp.warmup_steps, min_lr_ratio=hp.min_lr_ratio, poly_power=hp.poly_power,
        )


def _restore(probs: Tensor, batch: dict[str, Any], i: int) -> Tensor:
    """Map sample ``i``'s probabilities back to its original resolution (clamped: resampling may overshoot by ulps)."""
    return restore_prediction(probs, batch["valid_size"][i], batch["orig_size"][i]).clamp_(0.0, 1.0)


def load_pretrained_weights(net: IMLModel, name_or_path: str) -> None:
    """Load a pretrained model's weights strictly into ``net`` (same architecture and config)."""
    from webiml.hub import CheckpointError, from_pretrained

    source = from_pretrained(name_or_path)
    if type(source) is not type(net):
        raise CheckpointError(f"init_weights {name_or_path!r} is a {type(source).__name__}, but the net is a {type(net).__name__}")
    try:
        net.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"init_weights {name_or_path!r} does not fit the configured net: {str(err)[:500]}") from None


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, **card: Any) -> Path:
    """Turn a Lightning checkpoint of :class:`IMLTask` into a ``from_pretrained`` folder.

    The checkpoint is read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
    """
    from webiml.hub import CheckpointError, build_model, save_pretrained

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{checkpoint}: file not found") from None
    except Exception as err:
        raise CheckpointError(f"{checkpoint}: not a readable Lightning checkpoint with plain data ({str(err)[:300]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{checkpoint}: no 'state_dict'; not a Lightning checkpoint")
    info = ckpt.get("webiml_net")
    if not info:
        raise CheckpointError(f"{checkpoint}: no 'webiml_net' entry; was it written by `webiml fit` with IMLTask?")
    model = build_model(info["architecture"], info["config"], where=str(checkpoint))
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint}: weights do not fit {info['architecture']}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    metrics = {k: float(v) for cb in ckpt.get("callbacks", {}).values() if isinstance(cb, dict)
               for k, v in [("best " + str(cb.get("monitor")), cb.get("best_model_score"))] if v is not None}
    card.setdefault("metrics", "\n".join(f"- {k}: {v:.4f}" for k, v in metrics.items()) or None)
    save_pretrained(model, out_dir, **{k: v for k, v in card.items() if v is not None})
    return Path(out_dir)
