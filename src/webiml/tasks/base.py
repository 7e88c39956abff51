"""The one Lightning task base of webiml (after torchgeo's ``BaseTask``): what every task shares.

:class:`BaseTask` holds

- **hyperparameters**: ``save_hyperparameters()`` of the subclass's ``__init__`` arguments, every module among
  them (the net, a GPU augmentation) stored as its ``class_path`` config, never the module; under
  LightningCLI they are the parsed config, which is what lets ``--ckpt_path`` restore the model;
- **checkpoint hooks**: the net's architecture + config go into every checkpoint (``webiml_net``), so that
  :func:`export_checkpoint` rebuilds the net without the training config;
- **batch transfer**: images travel as ``uint8`` and are (augmented, in training, then) normalised on the
  device by the net's own statistics (:attr:`BaseTask.image_keys`);
- **optimiser / schedule**: AdamW + warmup + cosine / poly / constant of :mod:`webiml.tasks.optim`;
- **init weights**: the net built from, or started with, a pretrained model (:meth:`BaseTask.build_net`);
- **evaluation**: one :class:`torchmetrics.MetricCollection` per named evaluation set, built in
  :meth:`setup` (names from the datamodule's ``eval_names(stage)``, ``"default"`` without), reset at the
  start and after the end of every epoch; per-set results are logged as ``{stage}/{set}/{metric}`` and
  their mean over sets as ``{stage}/{metric}`` (what checkpointing and early stopping monitor);
- **export**: :func:`export_checkpoint`, a task checkpoint -> a ``from_pretrained`` folder, for every task.

Subclasses say what differs: :meth:`BaseTask.losses`, :meth:`BaseTask.configure_metrics`,
:meth:`BaseTask.update_metrics`, :meth:`BaseTask.compute_metrics`, ``predict_step``.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from webiml.tasks.optim import adamw_with_schedule

__all__ = ["BaseTask", "NonFiniteLossError", "class_path_config", "export_checkpoint", "module_config"]

NONFINITE_POLICIES = ("stop", "skip")
"""``on_nonfinite`` values: what a task does with a NaN / Inf training loss."""


def _rng_states() -> dict[str, Any]:
    import random

    import numpy as np

    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                              "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
    np_state = np.random.get_state()
    states["numpy"] = {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`_rng_states` saved (plain tensors and numbers: loads with ``weights_only=True``)."""
    import random

    import numpy as np

    try:
        torch.set_rng_state(states["torch"])
        random.setstate((states["python_version"], tuple(int(v) for v in states["python"]), states["python_gauss"]))
        n = states["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
        if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        warnings.warn(f"the checkpoint's RNG states could not be restored ({err}); the resumed run will not repeat "
                      "an uninterrupted one exactly", RuntimeWarning, stacklevel=2)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the message names the step and the batch's samples."""


EVAL_STAGES = {"fit": ("val",), "validate": ("val",), "test": ("test",)}
"""Evaluation stages whose metrics :meth:`BaseTask.setup` builds, per trainer stage."""


def _plain(value: Any) -> Any:
    """JSON-like copy of a config value (tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def module_config(module: nn.Module) -> dict[str, Any]:
    """Constructor arguments of a module as plain JSON values: ``module.config`` (webiml models, with their
    ``pretrained_init_overrides``), else the hub mixin's record of them, else ``{}``."""
    cfg = getattr(module, "config", None)
    if cfg is None:
        cfg = getattr(module, "_hub_mixin_config", None)
    return _plain(dict(cfg or {}))


def class_path_config(module: nn.Module) -> dict[str, Any]:
    """``{"class_path": "module.Class", "init_args": {...}}`` of a module (what LightningCLI would have parsed)."""
    return {"class_path": f"{type(module).__module__}.{type(module).__name__}", "init_args": module_config(module)}


class BaseTask(L.LightningModule):
    """Shared by :class:`~webiml.tasks.iml.IMLTask` and the CAAAv2 pair tasks; see the module docstring.

    ``super().__init__()`` must be the first statement of a subclass's ``__init__``: it saves the subclass's
    arguments as hyperparameters (Lightning collects them from the calling ``__init__`` frames).
    """

    image_keys: ClassVar[tuple[str, ...]] = ("image",)
    """Batch entries that are images: normalised on the device and passed, in this order, to the net."""
    net: nn.Module

    def __init__(self) -> None:
        super().__init__()
        with warnings.catch_warnings():  # modules are replaced by their configs right below
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        modules = [k for k, v in self.hparams.items() if isinstance(v, nn.Module)]
        for key in modules:
            self.hparams[key] = class_path_config(self.hparams[key])
        if modules:
            self._hparams_initial = copy.deepcopy(self._hparams)  # what loggers record: configs, not modules
        self.eval_metrics = nn.ModuleDict()
        self._eval_names: dict[str, list[str]] = {}
        if self.hparams.get("on_nonfinite", "stop") not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {self.hparams['on_nonfinite']!r}")

    # -- the net ------------------------------------------------------------------------------
    load_init_weights: ClassVar[Callable[[nn.Module, str], Any]]
    """``(net, name_or_path)``: load pretrained weights into a given net (the task's rule, strict or not)."""

    def build_net(self, net: nn.Module | None, init_weights: str | None, freeze_encoder: bool = False) -> nn.Module:
        """The task's net: ``net`` started from ``init_weights`` (:attr:`load_init_weights`), or, without
        ``net``, the pretrained model ``init_weights`` itself (:func:`webiml.from_pretrained`); with
        ``freeze_encoder`` its ``encoder`` is kept fixed."""
        if net is None:
            if init_weights is None:
                raise ValueError(f"{type(self).__name__} needs a net, or init_weights naming a pretrained model to start from")
            from webiml.hub import from_pretrained

            net = from_pretrained(init_weights).train()
        elif init_weights is not None:
            type(self).load_init_weights(net, init_weights)
        if freeze_encoder:
            names = tuple(getattr(net, "encoder_names", ())) or ("encoder",)
            missing = [n for n in names if not isinstance(getattr(net, n, None), nn.Module)]
            if missing:
                raise ValueError(f"freeze_encoder: {type(net).__name__} has no {' / '.join(repr(n) for n in missing)} "
                                 "submodule (models name theirs in `encoder_names`)")
            for n in names:
                getattr(net, n).requires_grad_(False)
        return net

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What `webiml export` needs to rebuild the net without the training config.
        checkpoint["webiml_net"] = {"architecture": type(self.net).__name__, "config": module_config(self.net)}
        # The RNG streams (dropout, device augmentation) so that a resumed run continues them exactly.
        checkpoint["webiml_rng"] = _rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Restored when the first training batch after resuming reaches the device (before its augmentation):
        # whatever ran in between (sanity checks, loader start-up) must not shift the streams.
        self._rng_to_restore = checkpoint.get("webiml_rng")

    def _restore_rng_once(self) -> None:
        states = getattr(self, "_rng_to_restore", None)
        if states:
            _set_rng_states(states)
        self._rng_to_restore = None

    def forward(self, *images: Tensor) -> Any:
        return self.net(*images)

    def forward_batch(self, batch: dict[str, Any]) -> Any:
        return self.net(*(batch[k] for k in self.image_keys))

    # -- data on the device -------------------------------------------------------------------
    def augment_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Training-only augmentation on the device, before normalisation (none by default)."""
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augmentation (training only) and normalisation happen here, on the device."""
        if batch is None:
            return batch
        if self._trainer is not None and self.trainer.training:
            self._restore_rng_once()
            batch = self.augment_batch(batch)
        for key in self.image_keys:
            batch[key] = self.net.normalize(batch[key])
        return batch

    # -- training -----------------------------------------------------------------------------
    def losses(self, out: Any, batch: dict[str, Any]) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """The loss terms of a batch; ``"loss"`` is the one optimised."""
        raise NotImplementedError

    def _batch_size(self, batch: dict[str, Any]) -> int:
        return int(batch[self.image_keys[-1]].shape[0])

    def _sample_names(self, batch: dict[str, Any], limit: int = 8) -> str:
        """The batch's samples, by file (or pair id, or dataset index), for error messages."""
        for key in ("path", "pair_id", "forged", "index"):
            names = batch.get(key)
            if isinstance(names, Tensor):
                names = names.tolist()
            if isinstance(names, list | tuple) and names:
                shown = ", ".join(str(n) for n in names[:limit])
                return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
        return "(no sample names in the batch)"

    def _nonfinite_loss(self, parts: dict[str, Tensor], batch: dict[str, Any], batch_idx: int) -> None:
        """A NaN / Inf training loss: stop with the batch's samples named (``on_nonfinite="stop"``, default) or
        skip the batch with a warning (``"skip"``; after 20 batches in a row the run stops: the weights have
        diverged)."""
        terms = ", ".join(f"{k}={float(v.detach()):g}" for k, v in parts.items())
        where = f"epoch {self.current_epoch}, global step {self.global_step}, batch {batch_idx}"
        message = (f"non-finite training loss ({terms}) at {where}; samples: {self._sample_names(batch)}. "
                   "Lower the learning rate, check these samples (their weights, masks), or set on_nonfinite: skip")
        policy = self.hparams.get("on_nonfinite", "stop")
        self._nonfinite_run = getattr(self, "_nonfinite_run", 0) + 1
        if policy == "skip" and self._nonfinite_run <= 20:
            warnings.warn(f"skipping the batch: {message}", RuntimeWarning, stacklevel=2)
            return
        raise NonFiniteLossError(message)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if batch is None:
            return None
        parts = self.losses(self.forward_batch(batch), batch)
        if not bool(torch.isfinite(parts["loss"].detach()).all()):
            self._nonfinite_loss(parts, batch, batch_idx)
            return None  # no optimiser step on this batch
        self._nonfinite_run = 0
        bs = self._batch_size(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items() if k != "loss"}, batch_size=bs)
        self.log("train/loss", parts["loss"].detach(), batch_size=bs, prog_bar=True)
        return parts["loss"]

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return adamw_with_schedule(
            self.net, lr=hp.lr, weight_decay=hp.weight_decay, total_steps=total, layer_decay=hp.get("layer_decay"),
            schedule=hp.get("schedule", "cosine"), warmup_steps=hp.get("warmup_steps", 0),
            min_lr_ratio=hp.get("min_lr_ratio", 0.0), poly_power=hp.get("poly_power", 1.0),
        )

    # -- evaluation ---------------------------------------------------------------------------
    def configure_metrics(self) -> MetricCollection:  # pragma: no cover - abstract
        """A fresh metric collection for one evaluation set."""
        raise NotImplementedError

    def update_metrics(self, stage: str, metrics: MetricCollection, out: Any, batch: dict[str, Any],
                       parts: dict[str, Tensor]) -> None:  # pragma: no cover - abstract
        """Update one evaluation set's metrics with a batch (and log any per-batch extras)."""
        raise NotImplementedError

    def compute_metrics(self, metrics: MetricCollection) -> dict[str, float]:  # pragma: no cover - abstract
        """One evaluation set's results, flat ``{name: value}``."""
        raise NotImplementedError

    def eval_names(self, stage: str) -> list[str]:
        """Names of the evaluation sets of ``stage`` ("val" / "test"), in dataloader order: the datamodule's
        ``eval_names(stage)``, or ``["default"]``."""
        if stage not in self._eval_names:
            dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            names = list(dm.eval_names(stage)) if dm is not None and hasattr(dm, "eval_names") else []
            self._eval_names[stage] = names or ["default"]
        return self._eval_names[stage]

    def setup(self, stage: str) -> None:
        """Build the metrics of every named evaluation set of this trainer stage (before the model moves to its
        device, so they move with it)."""
        for eval_stage in EVAL_STAGES.get(stage, ()):
            self._eval_names.pop(eval_stage, None)  # a new trainer / datamodule may name other sets
            for name in self.eval_names(eval_stage):
                key = f"{eval_stage}__{name}"
                if key not in self.eval_metrics:
                    self.eval_metrics[key] = self.configure_metrics()

    def metrics_of(self, stage: str, dataloader_idx: int = 0) -> MetricCollection:
        """The metrics of ``stage``'s evaluation set ``dataloader_idx`` (built here for a dataloader the
        datamodule did not name, e.g. ``trainer.validate(task, dataloaders=[a, b])``)."""
        names = self.eval_names(stage)
        key = f"{stage}__{names[dataloader_idx] if dataloader_idx < len(names) else dataloader_idx}"
        if key not in self.eval_metrics:
            self.eval_metrics[key] = self.configure_metrics().to(self.device)
        return self.eval_metrics[key]

    def _stage_metrics(self, stage: str) -> list[tuple[str, MetricCollection]]:
        prefix = f"{stage}__"
        return [(k[len(prefix):], m) for k, m in self.eval_metrics.items() if k.startswith(prefix)]

    def _eval_step(self, stage: str, batch: dict[str, Any], dataloader_idx: int) -> None:
        if batch is None:
            return
        out = self.forward_batch(batch)
        parts = self.losses(out, batch)
        self.log(f"{stage}/loss", parts["loss"], batch_size=self._batch_size(batch), add_dataloader_idx=True, sync_dist=True)
        self.update_metrics(stage, self.metrics_of(stage, dataloader_idx), out, batch, parts)

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _reset_metrics(self, stage: str) -> None:
        for _, metrics in self._stage_metrics(stage):
            metrics.reset()

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        """Compute, log and reset every evaluation set of ``stage`` that saw data; returns what was logged."""
        results: dict[str, float] = {}
        per_set: list[dict[str, float]] = []
        for name, metrics in self._stage_metrics(stage):
            if any(m.update_count for m in metrics.values()):
                flat = self.compute_metrics(metrics)
                per_set.append(flat)
                results.update({f"{stage}/{name}/{k}": v for k, v in flat.items()})
            metrics.reset()
        # The mean over evaluation sets is what checkpointing and early stopping monitor.
        for k in dict.fromkeys(k for s in per_set for k in s):
            vals = [s[k] for s in per_set if k in s and not math.isnan(s[k])]
            results[f"{stage}/{k}"] = sum(vals) / len(vals) if vals else float("nan")
        # Metrics are already synchronised across processes by torchmetrics.
        self.log_dict(results, sync_dist=False, add_dataloader_idx=False)
        return results

    def on_validation_epoch_start(self) -> None:
        self._reset_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._reset_metrics("test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")


def export_checkpoint(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                      model_class: type | None = None, **card: Any) -> Path:
    """Turn a Lightning checkpoint of any webiml task into a ``from_pretrained`` folder (``config.json`` +
    ``model.safetensors`` + model card, written atomically; ``dtype="float16"`` halves the weights).

    The checkpoint is read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
    The net is rebuilt from the ``webiml_net`` entry (or the ``net`` hyperparameter's ``class_path`` /
    ``init_args``), registered architectures only (:mod:`webiml.models.registry`), that are ``model_class``
    (default: any webiml model), with ``encoder_weights=None`` (the weights come from the checkpoint).
    ``card``: model card keywords (``model_name``, ``training_data``, ``license``, ...); the monitored best
    scores of the checkpoint's callbacks become its metrics.
    """
    from webiml.hub import CheckpointError, build_model, save_pretrained
    from webiml.models.base import HubModel

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{checkpoint}: file not found") from None
    except Exception as err:
        # torch's own message advises weights_only=False, i.e. running the file's code: never pass that on.
        reason = str(err).splitlines()[-1] if "weights_only" not in str(err) else "it holds objects other than tensors and plain data"
        raise CheckpointError(f"{checkpoint}: refused, not a Lightning checkpoint of plain data ({reason[:200]}); "
                              "webiml never unpickles code from a file") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{checkpoint}: no 'state_dict'; not a Lightning checkpoint")
    info = ckpt.get("webiml_net")
    if not info:
        hp = (ckpt.get("hyper_parameters") or {}).get("net")
        if isinstance(hp, dict) and "class_path" in hp:
            info = {"architecture": str(hp["class_path"]).rsplit(".", 1)[-1], "config": dict(hp.get("init_args") or {})}
    if not info:
        raise CheckpointError(f"{checkpoint}: no net config ('webiml_net' or a class_path 'net' hyperparameter); "
                              "was it written by `webiml fit` with a webiml task?")
    model = build_model(info["architecture"], info["config"], where=str(checkpoint), model_class=model_class or HubModel)
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint}: weights do not fit {info['architecture']}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    metrics = {k: float(v) for cb in ckpt.get("callbacks", {}).values() if isinstance(cb, dict)
               for k, v in [("best " + str(cb.get("monitor")), cb.get("best_model_score"))] if v is not None}
    card.setdefault("metrics", "\n".join(f"- {k}: {v:.4f}" for k, v in metrics.items()) or None)
    save_pretrained(model, out_dir, **{k: v for k, v in card.items() if v is not None})
    return Path(out_dir)
