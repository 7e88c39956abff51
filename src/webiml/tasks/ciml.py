"""Lightning training of the CAAAv2 pair models (constrained IML).

- :class:`PairClassifierTask`: trains :class:`~webiml.models.caaa.PairClassifier` (BCE on the category
  and, for SPG pairs, on "aligned"; smooth-L1 on the crop box of SPG pairs).
- :class:`PairSegmenterTask`: trains :class:`~webiml.models.caaa.SPGSegmenter` or
  :class:`~webiml.models.caaa.SDGSegmenter` with the project's mask losses (BCE/OHEM + Dice, IGNORE-aware,
  auxiliary outputs; for SDG also the donated region in the original when the data has it).
- :class:`PairDataModule`: pair manifests (:mod:`webiml.data.pairs`) in, fixed-size uint8 pairs out; with
  no manifest it generates synthetic pairs on first use (deterministic from ``seed``, cached on disk).
  ``mode`` says which model the batches are for: ``"classifier"`` (all pairs, both images resized),
  ``"spg"`` (SPG pairs, the original aligned onto the forgery with the recorded crop box) or ``"sdg"``
  (SDG and unrelated pairs, both images resized independently).

All are usable from the ``webiml`` LightningCLI by ``class_path`` (see ``configs/caaa/*.yaml``).
Images travel as ``uint8`` and are normalised on the device by the model's own statistics.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from webiml.align import box_homography, warp_original
from webiml.data.masks import IGNORE, target_from_mask
from webiml.data.pairs import PairRecord, read_pair_manifest, write_pair_dataset
from webiml.io import read_image, read_mask
from webiml.metrics import PixelMetrics
from webiml.models.base import IMLOutput
from webiml.tasks.losses import IMLLoss
from webiml.tasks.optim import adamw_with_schedule

log = logging.getLogger(__name__)

__all__ = ["MODES", "PairClassifierTask", "PairDataModule", "PairDataset", "PairSegmenterTask", "export_pair_checkpoint", "net_config"]

MODES = ("classifier", "spg", "sdg")
_DEFAULT_CATEGORIES: dict[str, dict[str, float]] = {
    "classifier": {"SPG": 0.45, "SDG": 0.45, "unrelated": 0.1},
    "spg": {"SPG": 1.0},
    "sdg": {"SDG": 0.85, "unrelated": 0.15},
}
_MODE_CATEGORIES = {"classifier": ("SPG", "SDG", "unrelated"), "spg": ("SPG",), "sdg": ("SDG", "unrelated")}


# --------------------------------------------------------------------------------------------------
# data


def _chw(image: np.ndarray) -> Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous()


def _resize_u8(image: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    x = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return x.round().clamp(0, 255).to(torch.uint8)


def _resize_target(target: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(target.shape[-2:]) == size:
        return target
    return F.interpolate(target[None], size=size, mode="nearest")[0]


class PairDataset(Dataset):
    """Pairs of a manifest as fixed-size tensors for one of the :data:`MODES`.

    Items: ``original``/``forged`` ``uint8`` (3, S, S); ``mask`` float target (1, S, S) of the forgery
    (with :data:`~webiml.data.masks.IGNORE`); ``source_mask`` (1, S, S) of the original (all IGNORE when
    unknown); ``category`` (1 = SPG, 0 = SDG/unrelated); ``aligned`` (1/0, IGNORE for non-SPG pairs);
    ``box`` (4,) and ``box_valid``; ``forged_size`` (H', W') and ``index``.

    Args:
        records: pair records (absolute paths).
        mode: ``"classifier"``, ``"spg"`` or ``"sdg"`` (see the module docstring).
        size: side of the square output (or ``(h, w)``).
        train: apply random horizontal flips (``hflip``) and box jitter (``box_jitter``, SPG mode: the
            crop box used for alignment is perturbed by up to this fraction, imitating alignment error).
        low_res_p, low_res_range: training only: each image, independently with probability ``low_res_p``,
            loses resolution (shrunk by a factor drawn from ``low_res_range``, then brought to ``size``), so
            that a model trained on photos of one size also works on smaller, upsampled web images.
    """

    def __init__(
        self,
        records: Sequence[PairRecord],
        mode: str = "spg",
        size: int | tuple[int, int] = 256,
        train: bool = False,
        hflip: float = 0.5,
        box_jitter: float = 0.0,
        low_res_p: float = 0.0,
        low_res_range: tuple[float, float] = (0.4, 1.0),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.records = list(records)
        self.mode = mode
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.train = bool(train)
        self.hflip = float(hflip) if train else 0.0
        self.box_jitter = float(box_jitter) if train else 0.0
        self.low_res_p = float(low_res_p) if train else 0.0
        lo, hi = (float(v) for v in low_res_range)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"low_res_range must satisfy 0 < low <= high <= 1, got {low_res_range}")
        self.low_res_range = (lo, hi)

    def _maybe_low_res(self, image: Tensor) -> Tensor:
        if self.low_res_p <= 0 or torch.rand(()) >= self.low_res_p:
            return image
        lo, hi = self.low_res_range
        s = lo + (hi - lo) * float(torch.rand(()))
        h, w = image.shape[-2:]
        return _resize_u8(image, (max(8, round(h * s)), max(8, round(w * s))))

    def __len__(self) -> int:
        return len(self.records)

    def _target(self, path: str | None, hw: tuple[int, int], default: float) -> Tensor:
        if path is None:
            return torch.full((1, *hw), default, dtype=torch.float32)
        m = np.array(read_mask(path), copy=True)
        if m.shape != hw:
            raise ValueError(f"{path}: mask shape {m.shape} does not match its image {hw}")
        return target_from_mask(m)[None]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        original = _chw(read_image(rec.original))
        forged = _chw(read_image(rec.forged))
        fhw = (int(forged.shape[1]), int(forged.shape[2]))
        ohw = (int(original.shape[1]), int(original.shape[2]))
        is_spg = rec.category == "SPG"
        # no mask file: "nothing pasted" for SDG/unrelated pairs, "unknown" (ignored) for SPG pairs
        mask = self._target(rec.mask, fhw, IGNORE if is_spg else 0.0)
        source_mask = self._target(rec.source_mask, ohw, IGNORE)
        box = torch.tensor(rec.crop_box, dtype=torch.float32)
        if self.mode == "spg":
            b = box.clone()
            if self.box_jitter > 0:
                b = b + (torch.rand(4) * 2 - 1) * self.box_jitter
                b = torch.stack([b[0].clamp(0, 0.5), b[1].clamp(0, 0.5), b[2].clamp(0.5, 1), b[3].clamp(0.5, 1)])
            h = box_homography(tuple(b.tolist()), ohw, fhw)
            warped, valid = warp_original(original, h, fhw)
            original = torch.where(valid[None], warped, forged)
            source_mask = torch.full((1, *fhw), IGNORE)
        original = _resize_u8(self._maybe_low_res(original), self.size)
        forged = _resize_u8(self._maybe_low_res(forged), self.size)
        mask = _resize_target(mask, self.size)
        source_mask = _resize_target(source_mask, self.size)
        if self.hflip and torch.rand(()) < self.hflip:
            forged, mask = forged.flip(-1), mask.flip(-1)
            if self.mode != "sdg":  # the pair's geometry must survive: flip both (and the box)
                original, source_mask = original.flip(-1), source_mask.flip(-1)
                box = torch.stack([1 - box[2], box[1], 1 - box[0], box[3]])
        if self.mode == "sdg" and self.hflip and torch.rand(()) < self.hflip:
            original, source_mask = original.flip(-1), source_mask.flip(-1)
        return {
            "original": original,
            "forged": forged,
            "mask": mask,
            "source_mask": source_mask,
            "category": torch.tensor(int(is_spg)),
            "aligned": torch.tensor(float(rec.aligned) if is_spg else IGNORE),
            "box": box,
            "box_valid": torch.tensor(is_spg),
            "forged_size": torch.tensor(fhw),
            "index": torch.tensor(index),
        }


def _as_list(x: str | os.PathLike[str] | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str | os.PathLike):
        return [str(x)]
    return [str(p) for p in x]


class PairDataModule(L.LightningDataModule):
    """Pair data for the CAAAv2 tasks: pair manifests, or synthetic pairs generated on first use.

    Args:
        mode: ``"classifier"``, ``"spg"`` or ``"sdg"``: which model the batches are for (and which pair
            categories are used: all, SPG only, SDG + unrelated).
        train, val, test, predict: pair manifest path(s). A missing ``train`` (and ``val``/``test`` when
            ``num_val``/``num_test`` > 0) is generated under ``root/<mode>/<split>``.
        root: folder of the generated pairs (generation is cached: same parameters, no regeneration).
        num_train, num_val, num_test: numbers of generated pairs.
        synth_size: size of the generated photos (``(h, w)`` or a side).
        photos: photo pool of the generator: ``"procedural"`` or a folder (see :func:`~webiml.data.pairs.make_pool`).
        categories: category probabilities of the generator (default depends on ``mode``).
        degrade: web-style degradation of the generated pairs.
        seed: seed of the generator (train: ``seed``, val: ``seed + 1``, test: ``seed + 2``).
        size: side of the square tensors the batches hold.
        batch_size, eval_batch_size, num_workers, pin_memory: loaders.
        hflip, box_jitter, low_res_p, low_res_range: training augmentation (see :class:`PairDataset`).
        label_tolerance: generated masks leave out changes of at most this many levels outside an edit's
            own region (see :func:`~webiml.data.pairs.make_spg_pair`); 0 marks every changed pixel.
    """

    def __init__(
        self,
        mode: str = "spg",
        train: str | list[str] | None = None,
        val: str | list[str] | None = None,
        test: str | list[str] | None = None,
        predict: str | list[str] | None = None,
        root: str = "runs/synthetic-pairs",
        num_train: int = 256,
        num_val: int = 32,
        num_test: int = 0,
        synth_size: int | tuple[int, int] = 256,
        photos: str = "procedural",
        categories: dict[str, float] | None = None,
        degrade: bool = True,
        seed: int = 0,
        size: int = 256,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        hflip: float = 0.5,
        box_jitter: float = 0.01,
        label_tolerance: int = 0,
        low_res_p: float = 0.0,
        low_res_range: tuple[float, float] = (0.4, 1.0),
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.manifests = {"train": _as_list(train), "val": _as_list(val), "test": _as_list(test), "predict": _as_list(predict)}
        self.root = Path(root)
        self.counts = {"train": int(num_train), "val": int(num_val), "test": int(num_test)}
        s = synth_size
        self.synth_size = (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))
        self.photos = photos
        self.categories = dict(categories) if categories is not None else dict(_DEFAULT_CATEGORIES[mode])
        self.degrade = bool(degrade)
        self.seed = int(seed)
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.hflip, self.box_jitter = float(hflip), float(box_jitter)
        self.label_tolerance = int(label_tolerance)
        self.low_res_p, self.low_res_range = float(low_res_p), (float(low_res_range[0]), float(low_res_range[1]))
        self.datasets: dict[str, PairDataset] = {}

    def _generated(self, split: str) -> list[str]:
        if self.manifests[split] or split == "predict" or self.counts.get(split, 0) <= 0:
            return self.manifests[split]
        offset = {"train": 0, "val": 1, "test": 2}[split]
        path = write_pair_dataset(
            self.root / self.mode / split, self.counts[split], seed=self.seed + offset, pool=self.photos,
            size=self.synth_size, categories=self.categories, degrade=self.degrade, label_tolerance=self.label_tolerance,
        )
        return [str(path)]

    def prepare_data(self) -> None:
        for split in ("train", "val", "test"):
            self._generated(split)

    def _records(self, split: str) -> list[PairRecord]:
        keep = _MODE_CATEGORIES[self.mode]
        records = [r for p in self._generated(split) for r in read_pair_manifest(p)]
        return [r for r in records if r.category in keep]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}.get(stage or "", ("train", "val", "test", "predict"))
        for split in splits:
            if split in self.datasets:
                continue
            records = self._records(split)
            if records:
                self.datasets[split] = PairDataset(
                    records, self.mode, self.size, train=split == "train", hflip=self.hflip, box_jitter=self.box_jitter,
                    low_res_p=self.low_res_p, low_res_range=self.low_res_range,
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"no {split} pairs: give a {split} manifest or a positive num_{split}")
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size if split == "train" else self.eval_batch_size, shuffle=shuffle,
            num_workers=self.num_workers, pin_memory=self.pin_memory, drop_last=False,
            persistent_workers=self.num_workers > 0 and split == "train",
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", False)


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
    and :func:`webiml.annotate.pipeline.find_caaa_parts` read.

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
