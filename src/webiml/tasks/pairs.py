"""Lightning training of the CAAAv2 pair models (constrained IML).

- :class:`PairClassifierTask`: trains :class:`~webiml.models.caaa.PairClassifier` (BCE on the category
  and, for SPG pairs, on "aligned"; smooth-L1 on the crop box of SPG pairs).
- :class:`PairSegmenterTask`: trains :class:`~webiml.models.caaa.SPGSegmenter` or
  :class:`~webiml.models.caaa.SDGSegmenter` with the project's mask losses (BCE/OHEM + Dice, IGNORE-aware,
  auxiliary outputs; for SDG also the donated region in the original when the data has it).
- :func:`export_pair_checkpoint`: a task checkpoint -> a ``save_pretrained`` folder of the part.

The batches come from :class:`webiml.data.pair_datamodule.PairDataModule`.

All are usable from the ``webiml`` LightningCLI by ``class_path`` (see ``configs/caaa/*.yaml``).
Images travel as ``uint8`` and are normalised on the device by the model's own statistics.
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from webiml.metrics import PixelMetrics
from webiml.models.base import IMLOutput
from webiml.tasks.losses import IMLLoss
from webiml.tasks.optim import adamw_with_schedule

__all__ = ["PairClassifierTask", "PairSegmenterTask", "export_pair_checkpoint", "load_pair_init_weights", "net_config"]


# --------------------------------------------------------------------------------------------------
# tasks


def _plain(value: Any) -> Any:
    """JSON-like copy of a config value (tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def net_config(net: nn.Module) -> dict[str, Any]:
    """Constructor arguments of a pair model (the hub mixin's record of them, or ``net.config``)."""
    cfg = getattr(net, "_hub_mixin_config", None)
    if cfg is None:
        cfg = getattr(net, "config", None) or {}
    return _plain(dict(cfg))


def _save_hparams(task: L.LightningModule, net: nn.Module) -> None:
    """``save_hyperparameters()`` of the calling ``__init__``, the net replaced by its class_path config."""
    with warnings.catch_warnings():  # the module is replaced right below
        warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`")
        task.save_hyperparameters(frame=inspect.currentframe().f_back)  # type: ignore[union-attr]
    if isinstance(task.hparams.get("net"), nn.Module):
        task.hparams["net"] = {"class_path": f"{type(net).__module__}.{type(net).__name__}", "init_args": net_config(net)}


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


class _PairTask(L.LightningModule):
    """Shared: normalisation on the device, AdamW with warmup + schedule, net config in checkpoints."""

    net: nn.Module

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What `export_pair_checkpoint` needs to rebuild the net without the training config.
        checkpoint["webiml_net"] = {"architecture": type(self.net).__name__, "config": net_config(self.net)}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if batch is None:
            return batch
        batch["original"] = self.net.normalize(batch["original"])
        batch["forged"] = self.net.normalize(batch["forged"])
        return batch

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return adamw_with_schedule(
            self.net, lr=hp.lr, weight_decay=hp.weight_decay, total_steps=total, layer_decay=hp.get("layer_decay"),
            schedule=hp.schedule, warmup_steps=hp.warmup_steps, min_lr_ratio=hp.min_lr_ratio,
            poly_power=hp.get("poly_power", 1.0),
        )

    # Subclasses implement _eval_step(stage, batch) and _eval_epoch_end(stage); the hooks are wired once here.
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")


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
        super().__init__()
        # Like IMLTask: the hparams hold the net as its class_path config (never the module), so that
        # `--ckpt_path` restores the model and `export_pair_checkpoint` can rebuild it.
        _save_hparams(self, net)
        if init_weights is not None:
            load_pair_init_weights(net, init_weights)
        self.net = net
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({"category_acc": BinaryAccuracy(), "category_auroc": BinaryAUROC(), "aligned_acc": BinaryAccuracy()})
            for stage in ("val", "test")
        })

    def forward(self, original: Tensor, forged: Tensor):
        return self.net(original, forged)

    def _losses(self, out, batch: dict[str, Any]) -> dict[str, Tensor]:
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

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self.net(batch["original"], batch["forged"])
        parts = self._losses(out, batch)
        bs = batch["forged"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()}, batch_size=bs)
        return parts["loss"]

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        out = self.net(batch["original"], batch["forged"])
        parts = self._losses(out, batch)
        bs = batch["forged"].shape[0]
        self.log_dict({f"{stage}/{k}": v for k, v in parts.items()}, batch_size=bs, sync_dist=True)
        m = self.metrics[stage]
        m["category_acc"].update(out.category_logits.sigmoid(), batch["category"])
        m["category_auroc"].update(out.category_logits.sigmoid(), batch["category"])
        known = batch["aligned"] >= 0
        if known.any():
            m["aligned_acc"].update(out.aligned_logits[known].sigmoid(), batch["aligned"][known].long())
        spg = batch["box_valid"].bool()
        if spg.any():
            self.log(f"{stage}/box_l1", (out.box[spg] - batch["box"][spg]).abs().mean(), batch_size=int(spg.sum()), sync_dist=True)

    def _eval_epoch_end(self, stage: str) -> None:
        for name, metric in self.metrics[stage].items():
            if metric.update_count:
                self.log(f"{stage}/{name}", metric.compute(), sync_dist=False)
            metric.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
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
        super().__init__()
        # Like IMLTask: the hparams hold the net as its class_path config (never the module), so that
        # `--ckpt_path` restores the model and `export_pair_checkpoint` can rebuild it.
        _save_hparams(self, net)
        if init_weights is not None:
            load_pair_init_weights(net, init_weights)
        self.net = net
        self.criterion = IMLLoss(bce_weight, dice_weight, ohem_thresh, ohem_min_kept, 0.0, aux_weights)
        self.pixel = nn.ModuleDict({stage: PixelMetrics(threshold=threshold) for stage in ("val", "test")})

    def forward(self, original: Tensor, forged: Tensor):
        return self.net(original, forged)

    def _losses(self, out, batch: dict[str, Any]) -> dict[str, Tensor]:
        parts = dict(self.criterion(out, batch["mask"]))
        src_logits = getattr(out, "source_mask_logits", None)
        if src_logits is not None and self.hparams.source_weight:
            src_out = IMLOutput(mask_logits=src_logits, aux_mask_logits=list(getattr(out, "source_aux_mask_logits", [])))
            src = self.criterion(src_out, batch["source_mask"])["loss"]
            parts["loss_source"] = src
            parts["loss"] = parts["loss"] + self.hparams.source_weight * src
        return parts

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self.net(batch["original"], batch["forged"])
        parts = self._losses(out, batch)
        bs = batch["forged"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items() if k != "loss"}, batch_size=bs)
        self.log("train/loss", parts["loss"].detach(), batch_size=bs, prog_bar=True)
        return parts["loss"]

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        out = self.net(batch["original"], batch["forged"])
        bs = batch["forged"].shape[0]
        self.log(f"{stage}/loss", self._losses(out, batch)["loss"], batch_size=bs, sync_dist=True)
        logits = out.mask_logits
        if self.hparams.tta_eval and hasattr(self.net, "forward_tta"):
            logits = self.net.forward_tta(batch["original"], batch["forged"]).mask_logits
        self.pixel[stage].update(logits.sigmoid().float(), batch["mask"])

    def _eval_epoch_end(self, stage: str) -> None:
        metric = self.pixel[stage]
        if metric.update_count:
            res = metric.compute()
            self.log_dict({f"{stage}/pixel_{k}": v.float() for k, v in res.items() if not k.startswith("n_")}, sync_dist=False)
        metric.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
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


def export_pair_checkpoint(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Turn a Lightning checkpoint of :class:`PairClassifierTask` / :class:`PairSegmenterTask` into a
    ``save_pretrained`` folder (``config.json`` + ``model.safetensors``) that ``<Model>.from_pretrained``
    and :func:`webiml.annotate.caaa.find_parts` read.

    The checkpoint is read with ``torch.load(weights_only=True)``; the net is rebuilt from the
    ``webiml_net`` entry (or the ``net`` hyperparameter's ``class_path``/``init_args``), only the CAAAv2
    pair model classes are accepted, with ``encoder_weights=None`` (the weights come from the checkpoint).
    """
    from webiml.hub import CheckpointError
    from webiml.models import caaa

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
        hp = (ckpt.get("hyper_parameters") or {}).get("net")
        if isinstance(hp, dict) and "class_path" in hp:
            info = {"architecture": str(hp["class_path"]).rsplit(".", 1)[-1], "config": dict(hp.get("init_args") or {})}
    if not info:
        raise CheckpointError(f"{checkpoint}: no net config ('webiml_net' or a class_path 'net' hyperparameter); "
                              "was it written by a webiml pair task?")
    name = info["architecture"]
    if name not in PAIR_MODEL_NAMES:
        raise CheckpointError(f"{checkpoint}: {name!r} is not a CAAAv2 pair model ({', '.join(PAIR_MODEL_NAMES)})")
    config = dict(info["config"])
    config["encoder_weights"] = None
    for key in ("mean", "std"):
        if key in config:
            config[key] = tuple(config[key])
    model = getattr(caaa, name)(**config)
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint}: weights do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    return out
