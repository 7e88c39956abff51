"""The single-image IML task: any :class:`~webiml.models.base.IMLModel` trained and evaluated with Lightning.

Training: losses from :class:`~webiml.tasks.losses.IMLLoss` (or a published model's own loss module,
``loss``), AdamW with optional layer-wise lr decay, linear warmup then cosine / poly / constant schedule,
optional batch-level GPU augmentation applied after the batch reaches the device. Evaluation: predictions
are mapped back to each image's original resolution and scored with :mod:`webiml.metrics`, one metric set
per evaluation set (dataloader); with ``threshold_policy="miml_adaptive"`` also the APSC-Net authors' scores
(:class:`~webiml.metrics.MIMLOfficialMetrics`: per-image adaptive thresholds from the image score, logits
restored as their segmentor does).
What every task shares (hyperparameters, checkpoint hooks, batch transfer, optimiser, metrics per evaluation
set built in ``setup()``, export) is :class:`webiml.tasks.base.BaseTask`; ``export_checkpoint`` is
:func:`webiml.tasks.base.export_checkpoint`, re-exported here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torchmetrics import MetricCollection

from webiml.data.transforms import GpuAugment, restore_logits, restore_prediction
from webiml.io import atomic_write_json
from webiml.metrics import ImageMetrics, MIMLOfficialMetrics, PixelMetrics, flatten_results
from webiml.models.base import IMLModel, IMLOutput
from webiml.reports import metrics_once
from webiml.tasks.base import BaseTask, export_checkpoint
from webiml.tasks.losses import IMLLoss

__all__ = ["THRESHOLD_POLICIES", "IMLTask", "export_checkpoint", "load_pretrained_weights"]

log = logging.getLogger(__name__)


THRESHOLD_POLICIES = ("fixed", "miml_adaptive")
"""``threshold_policy`` values of :class:`IMLTask`."""


class IMLTask(BaseTask):
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
        edge_loss_weight, edge_width: the edge BCE term of :class:`~webiml.tasks.losses.IMLLoss`
            (``edge_weight``, ``edge_width``); IML-ViT's loss is ``bce_weight=1, dice_weight=0,
            edge_loss_weight=20, edge_width=7``.
        gpu_augment: batch-level photometric augmentation run on the device during training.
        threshold: binarisation threshold of the fixed-threshold metrics.
        threshold_policy: ``"fixed"`` (webiml's metrics only) or ``"miml_adaptive"``: also the APSC-Net
            authors' scores (``miml_iou``, ``miml_precision``, ``miml_recall``, ``miml_f1``), each image
            binarised at ``clamp(1 - image score, 0.3, 0.7)`` (:class:`~webiml.metrics.MIMLOfficialMetrics`).
        fixed_threshold_sets: under ``"miml_adaptive"``, evaluation sets (by name, before any ``@degradation``
            tag) scored at the fixed 0.5 instead: the authors do so for IMD2020 (a path containing ``/imd``).
        init_weights: start from a pretrained model (catalogue name, Hub id, folder or .safetensors): its
            weights are loaded strictly into ``net``; if ``net`` is omitted the pretrained model itself is used.
        freeze_encoder: keep the encoder's weights fixed (fine-tuning the decoder and heads only).
        on_nonfinite: a NaN / Inf training loss ``"stop"`` s the run with the step and the batch's sample files
            named (default), or the batch is ``"skip"`` ped with a warning (at most 20 in a row).
        loss: a loss module used instead of :class:`~webiml.tasks.losses.IMLLoss` (the BCE / Dice / OHEM / aux /
            image arguments above are then unused), called as ``loss(output, mask, label, weight)`` and returning
            a dict with ``"loss"``: a published model's own recipe, e.g. ``webiml.tasks.losses.MVSSLoss`` or
            ``webiml.tasks.losses.PSCCLoss`` (``class_path`` in YAML).
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
        edge_loss_weight: float = 0.0,
        edge_width: int = 7,
        gpu_augment: GpuAugment | None = None,
        threshold: float = 0.5,
        threshold_policy: str = "fixed",
        fixed_threshold_sets: tuple[str, ...] = ("imd2020",),
        init_weights: str | None = None,
        freeze_encoder: bool = False,
        on_nonfinite: str = "stop",
        loss: nn.Module | None = None,
    ) -> None:
        super().__init__()  # hyperparameters: the net (and gpu_augment, loss) stored as class_path configs
        if threshold_policy not in THRESHOLD_POLICIES:
            raise ValueError(f"threshold_policy must be one of {THRESHOLD_POLICIES}, got {threshold_policy!r}")
        self.net = self.build_net(net, init_weights, freeze_encoder)
        self.criterion = loss if loss is not None else IMLLoss(
            bce_weight, dice_weight, ohem_thresh, ohem_min_kept, image_loss_weight, aux_weights, pos_weight, edge_loss_weight, edge_width)
        self.gpu_augment = gpu_augment

    @staticmethod
    def load_init_weights(net: IMLModel, name_or_path: str) -> None:  # type: ignore[override]
        """``init_weights`` with a net: strict, same architecture (:func:`load_pretrained_weights`)."""
        load_pretrained_weights(net, name_or_path)

    def augment_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Photometric augmentation (training only), on the device, before normalisation."""
        if self.gpu_augment is not None:
            batch["image"] = self.gpu_augment(batch["image"])
        return batch

    def forward_batch(self, batch: dict[str, Any]) -> IMLOutput:
        """The net on the batch's images; a model that reads JPEG coefficients (CAT-Net) also gets the batch's
        ``dct`` / ``qtable`` (``data.init_args.jpeg_dct: true``), else it re-compresses every image itself."""
        if getattr(self.net, "uses_jpeg_dct", False):
            if "dct" in batch and not self.training:
                return self.net(batch["image"], dct=batch["dct"], qtable=batch["qtable"])
            if not self.training and not getattr(self, "_warned_no_dct", False):
                self._warned_no_dct = True
                log.warning("%s reads JPEG coefficients but the batches carry none: every image is re-compressed at "
                            "quality 100. Set data.init_args.jpeg_dct: true to evaluate JPEG files with their own.",
                            type(self.net).__name__)
        return self.net(batch["image"])

    def losses(self, out: IMLOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.criterion(out, batch["mask"], batch.get("label"), batch.get("weight"))

    # -- evaluation: per-eval-set metrics at original resolution --------------------------------
    def configure_metrics(self) -> MetricCollection:
        threshold = self.hparams.threshold
        parts: dict[str, Any] = {"pixel": PixelMetrics(threshold=threshold), "image": ImageMetrics(threshold=threshold)}
        if self.hparams.get("threshold_policy", "fixed") == "miml_adaptive":
            parts["miml"] = MIMLOfficialMetrics()
        return MetricCollection(parts, compute_groups=False)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.apply_fixed_threshold_sets()

    def apply_fixed_threshold_sets(self) -> None:
        """The authors' fixed-threshold sets (IMD2020): their scores binarise at 0.5 whatever the image score."""
        fixed = {str(n).lower() for n in (self.hparams.get("fixed_threshold_sets") or ())}
        for key, metrics in self.eval_metrics.items():
            if "miml" in metrics:
                name = key.split("__", 1)[-1].split("@", 1)[0].lower()
                metrics["miml"].fixed_threshold = 0.5 if name in fixed else None

    def update_metrics(self, stage: str, metrics: MetricCollection, out: IMLOutput, batch: dict[str, Any],
                       parts: dict[str, Tensor]) -> None:
        probs = out.mask_logits.sigmoid().float()
        restored = [_restore(probs[i], batch, i) for i in range(probs.shape[0])]
        targets = [t.to(self.device) for t in batch["mask_orig"]]
        metrics["pixel"].update(restored, targets)
        metrics["image"].update(out.image_probs().float(), batch["label"])
        per_image = None
        if "miml" in metrics:
            # The authors' segmentor resizes the logits (no antialiasing), then takes probabilities.
            official = [restore_logits(out.mask_logits[i], batch["valid_size"][i], batch["orig_size"][i]).sigmoid()
                        for i in range(probs.shape[0])]
            scores = None if out.image_logits is None else out.image_probs().float()
            metrics["miml"].update(official, targets, scores)
            if stage == "test":
                per_image = metrics["miml"].per_image(official, targets, scores)
        if stage == "test":  # per-image results for the TestReport callback (webiml.callbacks)
            self.last_test_batch = {"probs": restored, "targets": targets, "scores": out.image_probs().float(),
                                    "paths": batch.get("path"), "miml": per_image}

    def compute_metrics(self, metrics: MetricCollection) -> dict[str, float]:
        results = flatten_results(metrics["pixel"].compute(), metrics["image"].compute(), prefix="")
        if "miml" in metrics:
            results.update({f"miml_{k}": float(v) for k, v in metrics["miml"].compute().items()})
        return results

    def on_test_epoch_end(self) -> None:
        results = self._eval_epoch_end("test")
        log_dir = self.trainer.log_dir  # a collective call under DDP: every rank must make it
        if self.trainer.is_global_zero and log_dir:
            path = Path(log_dir) / "test_metrics.json"
            # NaN (a metric undefined on a set) -> null; each metric once (no mean that repeats a single set)
            atomic_write_json(path, metrics_once(results), sort_keys=True)
            log.info("test metrics written to %s", path)

    # -- prediction ---------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        out = self.forward_batch(batch)
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
