"""Lightning training of the CAAAv2 pair models (constrained IML).

- :class:`PairClassifierTask`: trains :class:`~webiml.models.caaa.PairClassifier` (BCE on the category
  and, for SPG pairs, on "aligned"; smooth-L1 on the crop box of SPG pairs).
- :class:`PairSegmenterTask`: trains :class:`~webiml.models.caaa.SPGSegmenter` or
  :class:`~webiml.models.caaa.SDGSegmenter` with the project's mask losses (BCE/OHEM + Dice, IGNORE-aware,
  auxiliary outputs; for SDG also the donated region in the original when the data has it).
- :func:`export_pair_checkpoint`: a task checkpoint -> a ``save_pretrained`` folder of the part (the same
  as ``webiml export``, :func:`webiml.tasks.base.export_checkpoint`, restricted to the pair models).

Both tasks are :class:`webiml.tasks.base.BaseTask` s (hyperparameters, checkpoint hooks, optimiser, metrics
per evaluation set built in ``setup()``, export); only losses, metrics and prediction are theirs.
The batches come from :class:`webiml.data.pair_datamodule.PairDataModule`.

All are usable from the ``webiml`` LightningCLI by ``class_path`` (see ``configs/caaa/*.yaml``).
Images travel as ``uint8`` and are normalised on the device by the model's own statistics.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from webiml.metrics import PixelMetrics
from webiml.models.base import IMLOutput
from webiml.tasks.base import BaseTask, export_checkpoint
from webiml.tasks.base import module_config as net_config
from webiml.tasks.losses import IMLLoss

__all__ = ["PairClassifierTask", "PairSegmenterTask", "export_pair_checkpoint", "load_pair_init_weights", "net_config"]


# --------------------------------------------------------------------------------------------------
# tasks


def load_pair_init_weights(net: nn.Module, name_or_path: str) -> list[str]:
    """Start ``net`` from saved weights: a ``save_pretrained`` folder, a Hub repo id or a ``.safetensors`` file.

    Every saved tensor must exist in ``net`` with the same shape; tensors of ``net`` the file lacks keep their
    initialisation and are returned (and warned about): this is how a part gains a new module, e.g. the SPG
    segmenter's zero-initialised refinement head on top of a trained U-Net.
    """
    from safetensors.torch import load_file

    from webiml.hub import WEIGHTS_NAME, CheckpointError, resolve_file

    path = Path(name_or_path) if str(name_or_path).endswith(".safetensors") else resolve_file(str(name_or_path), WEIGHTS_NAME)
    if not path.is_file():
        raise CheckpointError(f"init_weights {name_or_path!r}: no such file")
    state = load_file(str(path))
    own = net.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if unexpected or wrong:
        raise CheckpointError(
            f"init_weights {name_or_path!r} does not fit {type(net).__name__}: "
            + (f"{len(unexpected)} tensors the net lacks (e.g. {unexpected[:3]}) " if unexpected else "")
            + (f"{len(wrong)} with other shapes (e.g. {wrong[:3]})" if wrong else "")
        )
    missing = [k for k in own if k not in state]
    net.load_state_dict(state, strict=False)
    if missing:
        modules = sorted({k.split(".")[0] for k in missing})
        warnings.warn(f"init_weights {name_or_path!r}: {len(missing)} tensors not in the file keep their "
                      f"initialisation (modules: {', '.join(modules)})", stacklevel=2)
    return missing


class _PairTask(BaseTask):
    """Shared by the pair tasks: both images of a pair are normalised on the device and go to the net as
    ``net(original, forged)``; ``init_weights`` starts the net from saved weights (:func:`load_pair_init_weights`).
    Everything else (hyperparameters, checkpoint hooks, optimiser, metrics per evaluation set, export) is
    :class:`~webiml.tasks.base.BaseTask`'s: like IMLTask, the hparams hold the net as its class_path config
    (never the module), so that ``--ckpt_path`` restores the model and ``webiml export`` can rebuild it.

    The tasks' constructor parameters (lr, schedule, loss weights, ...) are spelled out in each ``__init__``
    on purpose, as in :class:`~webiml.tasks.iml.IMLTask`: they are the LightningCLI's arguments and the
    hyperparameters ``save_hyperparameters`` records, and their defaults differ per task."""

    image_keys = ("original", "forged")

    @staticmethod
    def load_init_weights(net: nn.Module, name_or_path: str) -> None:  # type: ignore[override]
        load_pair_init_weights(net, name_or_path)


class PairClassifierTask(_PairTask):
    """Trains :class:`~webiml.models.caaa.PairClassifier` (use with ``PairDataModule(mode="classifier")``).

    Loss: ``category_weight * BCE(category) + aligned_weight * BCE(aligned | SPG) + box_weight *
    SmoothL1(box | SPG)``. Logged: losses, category accuracy and AUROC, aligned accuracy, box L1.
    ``init_weights`` starts the net from saved weights (:func:`load_pair_init_weights`).
    """

    def __init__(
        self,
        net: nn.Module,
        lr: float = 3e-4,
        weight_decay: float = 0.05,
        schedule: str = "cosine",
        warmup_steps: float = 0,
        min_lr_ratio: float = 0.0,
        category_weight: float = 1.0,
        aligned_weight: float = 1.0,
        box_weight: float = 1.0,
        box_beta: float = 0.02,
        init_weights: str | None = None,
    ) -> None:
        super().__init__()  # hyperparameters: the net stored as its class_path config (BaseTask)
        self.net = self.build_net(net, init_weights)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"category_acc": BinaryAccuracy(), "category_auroc": BinaryAUROC(), "aligned_acc": BinaryAccuracy()},
                                compute_groups=False)

    def losses(self, out, batch: dict[str, Any]) -> dict[str, Tensor]:
        hp = self.hparams
        parts = {"loss_category": F.binary_cross_entropy_with_logits(out.category_logits, batch["category"].float())}
        spg = batch["box_valid"].bool()
        aligned_known = batch["aligned"] >= 0
        if aligned_known.any():
            parts["loss_aligned"] = F.binary_cross_entropy_with_logits(out.aligned_logits[aligned_known], batch["aligned"][aligned_known])
        else:
            parts["loss_aligned"] = out.aligned_logits.sum() * 0.0
        if spg.any():
            box = out.box_raw if out.box_raw is not None else out.box
            parts["loss_box"] = F.smooth_l1_loss(box[spg], batch["box"][spg], beta=hp.box_beta)
        else:
            parts["loss_box"] = out.box.sum() * 0.0
        parts["loss"] = hp.category_weight * parts["loss_category"] + hp.aligned_weight * parts["loss_aligned"] + hp.box_weight * parts["loss_box"]
        return parts

    def update_metrics(self, stage: str, metrics: MetricCollection, out, batch: dict[str, Any], parts: dict[str, Tensor]) -> None:
        bs = batch["forged"].shape[0]
        self.log_dict({f"{stage}/{k}": v for k, v in parts.items() if k != "loss"}, batch_size=bs, sync_dist=True)
        metrics["category_acc"].update(out.category_logits.sigmoid(), batch["category"])
        metrics["category_auroc"].update(out.category_logits.sigmoid(), batch["category"])
        known = batch["aligned"] >= 0
        if known.any():
            metrics["aligned_acc"].update(out.aligned_logits[known].sigmoid(), batch["aligned"][known].long())
        spg = batch["box_valid"].bool()
        if spg.any():
            self.log(f"{stage}/box_l1", (out.box[spg] - batch["box"][spg]).abs().mean(), batch_size=int(spg.sum()), sync_dist=True)

    def compute_metrics(self, metrics: MetricCollection) -> dict[str, float]:
        return {name: float(metric.compute()) for name, metric in metrics.items() if metric.update_count}

    def predict_step(self, batch: dict[str, Any] | None, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        if batch is None:
            return []
        out = self.net(batch["original"], batch["forged"])
        spg, al = out.spg_probs().float(), out.aligned_probs().float()
        return [
            {"index": int(batch["index"][i]), "spg_prob": float(spg[i]), "aligned_prob": float(al[i]), "box": out.box[i].tolist()}
            for i in range(spg.shape[0])
        ]


class PairSegmenterTask(_PairTask):
    """Trains an SPG or SDG segmenter (use with ``PairDataModule(mode="spg" | "sdg")``).

    Loss on the forgery's mask: :class:`~webiml.tasks.losses.IMLLoss` (BCE or OHEM BCE + Dice, auxiliary
    outputs with ``aux_weights``); for models that also segment the donated region in the original
    (:class:`~webiml.models.caaa.SDGSegmenter`), ``source_weight`` times the same loss on it wherever the
    data knows it. Evaluation: pixel F1 / IoU / AUC of the forgery's mask at the batch resolution
    (``tta_eval``: with flip test-time augmentation). ``init_weights`` starts the net from saved weights
    (:func:`load_pair_init_weights`; e.g. a trained SPG U-Net under a new refinement head).
    """

    def __init__(
        self,
        net: nn.Module,
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
        aux_weights: float | list[float] = 0.4,
        source_weight: float = 0.5,
        tta_eval: bool = False,
        threshold: float = 0.5,
        init_weights: str | None = None,
    ) -> None:
        super().__init__()  # hyperparameters: the net stored as its class_path config (BaseTask)
        self.net = self.build_net(net, init_weights)
        self.criterion = IMLLoss(bce_weight, dice_weight, ohem_thresh, ohem_min_kept, 0.0, aux_weights)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"pixel": PixelMetrics(threshold=self.hparams.threshold)}, compute_groups=False)

    def losses(self, out, batch: dict[str, Any]) -> dict[str, Tensor]:
        parts = dict(self.criterion(out, batch["mask"]))
        src_logits = getattr(out, "source_mask_logits", None)
        if src_logits is not None and self.hparams.source_weight:
            src_out = IMLOutput(mask_logits=src_logits, aux_mask_logits=list(getattr(out, "source_aux_mask_logits", [])))
            src = self.criterion(src_out, batch["source_mask"])["loss"]
            parts["loss_source"] = src
            parts["loss"] = parts["loss"] + self.hparams.source_weight * src
        return parts

    def update_metrics(self, stage: str, metrics: MetricCollection, out, batch: dict[str, Any], parts: dict[str, Tensor]) -> None:
        logits = out.mask_logits
        if self.hparams.tta_eval and hasattr(self.net, "forward_tta"):
            logits = self.net.forward_tta(batch["original"], batch["forged"]).mask_logits
        metrics["pixel"].update(logits.sigmoid().float(), batch["mask"])

    def compute_metrics(self, metrics: MetricCollection) -> dict[str, float]:
        return {f"pixel_{k}": float(v) for k, v in metrics["pixel"].compute().items() if not k.startswith("n_")}

    def predict_step(self, batch: dict[str, Any] | None, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        if batch is None:
            return []
        fn = self.net.forward_tta if hasattr(self.net, "forward_tta") else self.net
        probs = fn(batch["original"], batch["forged"]).mask_logits.sigmoid().float()
        results = []
        for i in range(probs.shape[0]):
            h, w = (int(v) for v in batch["forged_size"][i])
            p = F.interpolate(probs[i : i + 1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            results.append({"index": int(batch["index"][i]), "mask_probs": p.cpu()})
        return results


# --------------------------------------------------------------------------------------------------
# export

PAIR_MODEL_NAMES = ("PairClassifier", "SPGSegmenter", "SDGSegmenter")


def export_pair_checkpoint(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], **card: Any) -> Path:
    """Turn a Lightning checkpoint of :class:`PairClassifierTask` / :class:`PairSegmenterTask` into a
    ``save_pretrained`` folder (``config.json`` + ``model.safetensors`` + model card) that
    ``<Model>.from_pretrained``, :func:`webiml.from_pretrained` and :func:`webiml.annotate.caaa.find_parts` read.

    :func:`webiml.tasks.base.export_checkpoint` (what ``webiml export`` runs) accepting only the CAAAv2 pair
    model classes."""
    from webiml.models.caaa import PairModel

    return export_checkpoint(checkpoint, out_dir, model_class=PairModel, **card)
