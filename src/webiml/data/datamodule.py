"""``IMLDataModule``: manifests in, aligned training crops and original-resolution evaluation out.

Training reads one or more manifests and, optionally, Object Jitter sets drawn on the fly from COCO instances
(``online_jitter``: re-drawn every epoch, :class:`TrainingSources`); samples from several sources can be
balanced: a fixed number per source per epoch, or per-source repeat factors. Evaluation sets are named (``val: {casia1: a.jsonl,
columbia: b.jsonl}``): each becomes its own dataloader and its own metrics. The robustness protocol
degrades the test images (``test_degradation: jpeg``, ``test_degradation_levels: [90, 70, 50]``): every
(set, level) becomes its own dataloader named ``<set>@jpeg70``, so metrics and result tables come per level. Decoding, geometric and
JPEG augmentation run on the CPU workers; photometric augmentation and normalisation run on the device
after transfer (see :class:`~webiml.tasks.iml.IMLTask`).
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from webiml.data.coco import CocoInstances
from webiml.data.datasets import ManifestDataset, collate_skip_broken, records_from_paths
from webiml.data.jitter_dataset import ObjectJitterDataset
from webiml.data.manifest import ManifestError, ManifestRecord, read_manifest
from webiml.data.masks import IgnoreBand
from webiml.data.photo_pool import make_photo_pool, split_photo_pool  # noqa: F401 (re-exported)
from webiml.data.samplers import SourceBalancedSampler, UnrepeatedDistributedSampler
from webiml.data.transforms import AttachJpegDCT, BySource, Compose, Degrade, make_eval_transform, make_train_transform

EvalSets = Mapping[str, str] | Sequence[str] | str | None

DEGRADATIONS = ("jpeg", "blur", "noise", "resize")
DEFAULT_LEVELS: dict[str, list[float]] = {
    "jpeg": [100, 90, 80, 70, 60, 50],  # quality
    "blur": [0.5, 1.0, 1.5, 2.0, 3.0],  # Gaussian sigma, pixels
    "noise": [3, 5, 10, 15, 20],  # Gaussian std, 0..255 units
    "resize": [0.75, 0.5, 0.25],  # down-up scale
}
"""Sweep levels used when ``test_degradation`` is set without ``test_degradation_levels``."""


def degradation_tag(kind: str, level: float) -> str:
    """``jpeg70``, ``blur1.5``, ``noise5``, ``resize0.5``: the suffix of a degraded evaluation set's name."""
    return f"{kind}{float(level):g}"


def parse_degradation_tag(tag: str) -> tuple[str, float] | None:
    """The inverse of :func:`degradation_tag`: ``"jpeg70"`` -> ``("jpeg", 70.0)``; ``None`` for anything that is
    not exactly a tag it produces for a known kind (``"v2"``, ``"jpeg"``, ``"jpeg070"``, ``"blur-1"``)."""
    for kind in DEGRADATIONS:
        if tag.startswith(kind):
            try:
                level = float(tag[len(kind):])
            except ValueError:
                return None
            return (kind, level) if degradation_tag(kind, level) == tag and level >= 0 else None
    return None


def check_degradation(kind: str, level: float) -> None:
    """Raise ``ValueError`` for an unknown kind or a level out of range."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown test_degradation {kind!r}; expected one of {', '.join(DEGRADATIONS)}")
    ok = {"jpeg": 1 <= level <= 100 and float(level).is_integer(), "blur": level >= 0, "noise": level >= 0,
          "resize": level > 0}[kind]
    if not ok:
        expected = {"jpeg": "an integer JPEG quality in 1..100", "blur": "a sigma >= 0", "noise": "a std >= 0",
                    "resize": "a scale > 0"}[kind]
        raise ValueError(f"test_degradation {kind}: level {level} is not {expected}")


def _named_sets(spec: EvalSets) -> dict[str, list[str]]:
    """Normalise an evaluation-set spec into ``{name: [manifest paths]}``; list items are named by file stem."""
    if spec is None:
        return {}
    if isinstance(spec, str | os.PathLike):
        spec = [str(spec)]
    if isinstance(spec, Mapping):
        return {str(k): [str(v)] if isinstance(v, str | os.PathLike) else [str(x) for x in v] for k, v in spec.items()}
    named: dict[str, list[str]] = {}
    for p in spec:
        name = Path(p).stem if Path(p).stem != "manifest" else Path(p).parent.name
        while name in named:
            name += "_"
        named[name] = [str(p)]
    return named


JitterSpec = Mapping[str, Any]

_COCO_KEYS = ("include_crowd", "category_ids", "min_area", "max_side")
_JITTER_KEYS = ("length", "size", "scale_range", "keep_aspect", "seed", "jitter", "p_jpeg", "jpeg_quality", "max_tries")


def build_online_jitter(spec: JitterSpec, transform: Any = None) -> ObjectJitterDataset:
    """An :class:`~webiml.data.jitter_dataset.ObjectJitterDataset` over
    :class:`~webiml.data.coco.CocoInstances` from one ``online_jitter`` entry: ``coco`` (instances JSON or a
    folder holding one) and ``images`` (default: CocoInstances'), ``source`` (default ``coco-jitter``), the
    dataset's ``length``, ``size``, ``scale_range``, ``keep_aspect``, ``seed``, ``jitter``, ``p_jpeg``,
    ``jpeg_quality``, ``max_tries`` and CocoInstances' ``include_crowd``, ``category_ids``, ``min_area``,
    ``max_side``."""
    spec = dict(spec)
    unknown = set(spec) - {"coco", "images", "source", *_COCO_KEYS, *_JITTER_KEYS}
    if "coco" not in spec or unknown:
        raise ValueError(f"online_jitter entry {spec}: needs 'coco' (an instances JSON); unknown keys: {sorted(unknown)}")
    instances = CocoInstances(spec["coco"], spec.get("images"), **{k: spec[k] for k in _COCO_KEYS if k in spec})
    kw = {k: spec[k] for k in _JITTER_KEYS if k in spec}
    for k in ("scale_range", "jpeg_quality"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return ObjectJitterDataset(instances, source=str(spec.get("source", "coco-jitter")), transform=transform, **kw)


class TrainingSources(Dataset):
    """Manifest samples, then the samples of each online Object Jitter set, as one index space.

    ``sources`` names every index (for :class:`~webiml.data.samplers.SourceBalancedSampler`). Keys are those of
    :class:`~webiml.data.datasets.ManifestDataset`: an index, or ``(index, sample_seed)`` from a seeded
    sampler. A jitter sample of ``(index, sample_seed)`` is drawn from ``(jitter seed, sample_seed, index)``
    and its transform from torch's RNG seeded with ``sample_seed``; the sampler's seeds change with its epoch
    (Lightning's ``set_epoch``), so every epoch re-draws the jitter, identically for the same seed and epoch,
    in DataLoader workers (persistent ones too) and after a resume. A bare index uses the jitter set's
    own epoch (:meth:`set_epoch`).
    """

    def __init__(self, manifest: ManifestDataset | None, jitters: Sequence[ObjectJitterDataset]) -> None:
        self.parts: list[Any] = ([manifest] if manifest is not None and len(manifest) else []) + list(jitters)
        self.starts = [0]
        for part in self.parts:
            self.starts.append(self.starts[-1] + len(part))

    def __len__(self) -> int:
        return self.starts[-1]

    @property
    def sources(self) -> list[str]:
        names: list[str] = []
        for part in self.parts:
            names += part.sources if isinstance(part, ManifestDataset) else [part.source] * len(part)
        return names

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            if isinstance(part, ObjectJitterDataset):
                part.set_epoch(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        index, seed = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), None)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} training samples")
        k = bisect.bisect_right(self.starts, index) - 1
        part, local = self.parts[k], index - self.starts[k]
        if seed is None:
            return part[local]
        if isinstance(part, ManifestDataset):
            return part[(local, seed)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return part[(local, seed)]


class IMLDataModule(L.LightningDataModule):
    """Data for single-image IML.

    Args:
        train: manifest path(s) for training.
        online_jitter: Object Jitter drawn on the fly from COCO instances, re-drawn every epoch (the MIML
            authors' ``coco`` set), as one more training source (or a list of them) beside ``train``:
            ``{coco: instances.json, images: DIR, length: N, source: coco-jitter, size: 512, seed: 0}``
            (:func:`build_online_jitter` lists every key). Its samples, resized and cropped before the
            jitter as the authors do, then only get the crop (:meth:`online_jitter_transform`), ``repeat`` and
            ``samples_per_source`` count it like a manifest source.
        val, test: evaluation sets: a manifest path, a list of them, or ``{name: path}``.
        predict: images to predict: manifests, image files, folders or ``.txt`` lists.
        batch_size: training batch size per device.
        eval_batch_size: evaluation batch size (images of different sizes are padded together).
        num_workers: DataLoader workers per device.
        crop_size: training crop (padded with ignored pixels when the image is smaller).
        scale: random rescale range (a factor of the image's own size) before cropping.
        resize_range: instead of ``scale``, resize each side to a random size in this range (integers, drawn
            independently, aspect ratio not kept; the APSC-Net authors' ``[512, 768]``).
        hflip, vflip: horizontal / vertical flip probabilities.
        rot90_p: probability of a random quarter-turn rotation (k in 0..3, the authors' ``RandomRotate90``).
        jpeg_p, jpeg_quality: probability and quality range of real JPEG re-compression.
        rgb_shift_p, rgb_shift_limit: probability and range (0..255 units) of a per-channel RGB shift, applied
            after JPEG (the authors' ``RGBShift``, limit 20).
        blur_p: probability of a random Gaussian blur.
        crop_bias: probability of choosing a crop that contains manipulated pixels.
        geometry_only_sources: training sources that get only the resize and the crop, no flip, rotation,
            blur, JPEG or RGB shift (the authors' pipeline of their Object Jitter set, ``coco_pipeline``).
        samples_per_source: balanced sampling: this many training samples per source per epoch.
        repeat: per-source repeat factors for training (multiplies each source's count).
        eval_policy: ``"fixed"`` (resize to ``eval_size``) or ``"native"`` (original size, very large
            images downscaled to ``eval_max_side`` and very small ones upscaled to ``eval_min_side``).
            Predictions are always mapped back and scored at the original resolution.
            ``"miml_official"``: the APSC-Net authors' test resize (images of at least 1536x1536 pixels
            squashed to 976x976, JPEG files of at most 512x512 pixels to 512x512, others native; see
            :func:`~webiml.data.transforms.miml_official_size`).
        eval_size, eval_max_side, eval_min_side: parameters of the evaluation policy.
        eval_mask_band: ``[low, high]`` ignore band applied to every evaluation mask instead of the manifests'
            own (``[0, 1]``: any non-zero mask value is manipulated, the authors' ``mask > 0``).
        protocol: name of the protocol, recorded in ``results.csv`` / ``results.md`` (e.g. ``miml_official``).
        pin_memory: pin host memory for faster transfer to an accelerator.
        seed: seed of the training sampler.
        test_degradation: robustness protocol: degrade test images with ``"jpeg"`` (level = quality),
            ``"blur"`` (Gaussian sigma), ``"noise"`` (Gaussian std, 0..255) or ``"resize"`` (down-up scale),
            applied at the original resolution before the evaluation policy (see
            :func:`~webiml.data.transforms.degrade`). ``None``: no degradation.
        test_degradation_levels: the levels of the sweep (default :data:`DEFAULT_LEVELS` of the kind). Each
            (test set, level) is a dataloader named ``<set>@<kind><level>`` (e.g. ``casia1@jpeg70``).
        test_clean: with a degradation, also evaluate each test set undegraded (named ``<set>``).
        degradation_seed: seed of the noise degradation (the same noise for every run).
        jpeg_dct: evaluation samples carry JPEG DCT coefficients (``dct``, ``qtable``) for models that read them
            (CAT-Net): a JPEG file's own when the policy keeps it at its stored size, otherwise those of a quality-100
            re-compression, as the authors do for non-JPEG input (:class:`~webiml.data.transforms.AttachJpegDCT`).
    """

    def __init__(
        self,
        train: str | list[str] | None = None,
        val: EvalSets = None,
        test: EvalSets = None,
        predict: str | list[str] | None = None,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 4,
        crop_size: int = 512,
        scale: tuple[float, float] = (0.5, 1.5),
        hflip: float = 0.5,
        jpeg_p: float = 0.3,
        jpeg_quality: tuple[int, int] = (50, 100),
        blur_p: float = 0.0,
        crop_bias: float = 0.5,
        vflip: float = 0.0,
        resize_range: tuple[int, int] | None = None,
        rot90_p: float = 0.0,
        rgb_shift_p: float = 0.0,
        rgb_shift_limit: float = 20.0,
        geometry_only_sources: list[str] | None = None,
        samples_per_source: int | None = None,
        repeat: dict[str, float] | None = None,
        eval_policy: str = "fixed",
        eval_size: int = 512,
        eval_max_side: int = 2048,
        eval_min_side: int = 256,
        eval_mask_band: tuple[int, int] | None = None,
        protocol: str | None = None,
        pin_memory: bool = True,
        seed: int = 0,
        test_degradation: str | None = None,
        test_degradation_levels: list[float] | None = None,
        test_clean: bool = True,
        degradation_seed: int = 0,
        online_jitter: dict[str, Any] | list[dict[str, Any]] | None = None,
        jpeg_dct: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        make_eval_transform(eval_policy)  # an unknown policy fails here, not in setup()
        if eval_mask_band is not None:
            low, high = (int(v) for v in eval_mask_band)
            if not 0 <= low < high <= 255:
                raise ValueError(f"eval_mask_band must satisfy 0 <= low < high <= 255, got {list(eval_mask_band)}")
        self.train_sets = [train] if isinstance(train, str | os.PathLike) else list(train or [])
        self.online_jitter = [dict(online_jitter)] if isinstance(online_jitter, Mapping) else [dict(j) for j in online_jitter or []]
        for spec in self.online_jitter:
            if "coco" not in spec:
                raise ValueError(f"online_jitter entry {spec}: needs 'coco' (an instances JSON)")
        self.val_sets = _named_sets(val)
        self.test_sets = _named_sets(test)
        self.predict_inputs = predict
        self._datasets: dict[str, Any] = {}
        self.test_variants = self._test_variants(test_degradation, test_degradation_levels, test_clean)

    def _test_variants(self, kind: str | None, levels: list[float] | None, clean: bool) -> dict[str, tuple[str, str, float | None]]:
        """``{loader name: (test set, degradation kind, level)}`` in dataloader order."""
        if kind is None or str(kind).lower() == "none":
            if levels:
                raise ValueError("test_degradation_levels given without test_degradation (jpeg, blur, noise or resize)")
            return {name: (name, "none", None) for name in self.test_sets}
        if kind not in DEGRADATIONS:
            raise ValueError(f"unknown test_degradation {kind!r}; expected one of {', '.join(DEGRADATIONS)}")
        levels = list(DEFAULT_LEVELS[kind] if levels is None else levels)
        if not levels:
            raise ValueError("test_degradation_levels is empty")
        for level in levels:
            check_degradation(kind, float(level))
        variants: dict[str, tuple[str, str, float | None]] = {}
        for name in self.test_sets:
            if clean:
                variants[name] = (name, "none", None)
            for level in levels:
                variants[f"{name}@{degradation_tag(kind, level)}"] = (name, kind, float(level))
        return variants

    # -- names and records --------------------------------------------------------------------
    def eval_names(self, stage: str) -> list[str]:
        """Names of the evaluation sets of ``stage`` ("val" or "test"), in dataloader order."""
        return list({"val": self.val_sets, "test": self.test_variants}.get(stage, {}))

    @staticmethod
    def _read(paths: Sequence[str]) -> list[ManifestRecord]:
        """The records of ``paths``; a manifest without samples is refused (before any training starts)."""
        records: list[ManifestRecord] = []
        for p in paths:
            part = read_manifest(p)
            if not part:
                raise ManifestError(f"{p}: the manifest has no samples")
            records += part
        return records

    def _read_eval(self, paths: Sequence[str]) -> list[ManifestRecord]:
        """Evaluation records, with ``eval_mask_band`` (when set) as every record's ignore band."""
        records = self._read(paths)
        band = self.hparams.get("eval_mask_band")
        if band is None:
            return records
        return [replace(r, ignore_band=IgnoreBand(int(band[0]), int(band[1]))) for r in records]

    def train_transform(self) -> Any:
        """The training pipeline (:func:`~webiml.data.transforms.make_train_transform`), per source when
        ``geometry_only_sources`` is set."""
        hp = self.hparams
        args = dict(
            crop_size=hp.crop_size, scale=tuple(hp.scale), hflip=hp.hflip, jpeg_p=hp.jpeg_p,
            jpeg_quality=tuple(hp.jpeg_quality), blur_p=hp.blur_p, crop_bias=hp.crop_bias, vflip=hp.get("vflip", 0.0),
            resize_range=tuple(hp.resize_range) if hp.get("resize_range") else None, rot90_p=hp.get("rot90_p", 0.0),
            rgb_shift_p=hp.get("rgb_shift_p", 0.0), rgb_shift_limit=hp.get("rgb_shift_limit", 20.0),
        )
        transform = make_train_transform(**args)
        plain = list(hp.get("geometry_only_sources") or [])
        if not plain:
            return transform
        geometry = make_train_transform(**args, geometry_only=True)
        return BySource(transform, {name: geometry for name in plain})

    def online_jitter_transform(self) -> Any:
        """The transform of the online Object Jitter samples: they are already resized and cropped before the
        jitter (the authors' order, inside :class:`~webiml.data.jitter_dataset.ObjectJitterDataset`), so only the
        crop to ``crop_size`` remains (no second resize, no flip, no JPEG: the authors' geometry-only pipeline of
        that set)."""
        hp = self.hparams
        return make_train_transform(crop_size=hp.crop_size, scale=(1.0, 1.0), resize_range=None, crop_bias=hp.crop_bias,
                                    geometry_only=True)

    _resume_position: tuple[int, int] | None = None

    @staticmethod
    def _after_degradation(eval_tf: Compose) -> list[Any]:
        """The evaluation transforms that follow a degradation: a degraded image no longer has its file's JPEG
        coefficients, so :class:`AttachJpegDCT` re-compresses it."""
        return [AttachJpegDCT(use_file=False) if isinstance(tf, AttachJpegDCT) else tf for tf in eval_tf.transforms]

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        eval_tf = make_eval_transform(hp.eval_policy, size=hp.eval_size, max_side=hp.eval_max_side, min_side=hp.eval_min_side)
        if stage in (None, "fit") and (self.train_sets or self.online_jitter):
            transform = self.train_transform()
            manifest = ManifestDataset(self._read(self.train_sets), transform, train=True) if self.train_sets else None
            if not self.online_jitter:
                self._datasets["train"] = manifest
            else:
                jitters = [build_online_jitter(spec, self.online_jitter_transform()) for spec in self.online_jitter]
                self._datasets["train"] = TrainingSources(manifest, jitters)
        if hp.get("jpeg_dct", False):
            eval_tf = Compose([*eval_tf.transforms, AttachJpegDCT()])
        if stage in (None, "fit", "validate"):
            self._datasets["val"] = [ManifestDataset(self._read_eval(p), eval_tf) for p in self.val_sets.values()]
        if stage in (None, "test"):
            records = {name: self._read_eval(paths) for name, paths in self.test_sets.items()}
            hp_seed = hp.get("degradation_seed", 0)
            self._datasets["test"] = [
                ManifestDataset(records[base], eval_tf if kind == "none" else Compose([Degrade(kind, level, hp_seed), *self._after_degradation(eval_tf)]))
                for base, kind, level in self.test_variants.values()
            ]
        if stage in (None, "predict") and self.predict_inputs:
            self._datasets["predict"] = ManifestDataset(records_from_paths(self.predict_inputs), eval_tf)

    # -- loaders ------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, dataset: ManifestDataset, batch_size: int, sampler: Any) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=hp.num_workers,
            collate_fn=collate_skip_broken, pin_memory=hp.pin_memory, persistent_workers=hp.num_workers > 0,
            drop_last=False, generator=torch.Generator().manual_seed(0),  # starting an evaluation leaves the global RNG alone
        )

    def train_dataloader(self) -> DataLoader:
        if "train" not in self._datasets:
            raise ValueError("no training data: set data.train (or data.init_args.train) to one or more manifests "
                             "(or data.online_jitter)")
        ds = self._datasets["train"]
        world, rank = self._world()
        hp = self.hparams
        sampler = SourceBalancedSampler(ds.sources, hp.samples_per_source, hp.repeat, world, rank, hp.seed, seeded=True)
        self._train_sampler = sampler
        resume, self._resume_position = self._resume_position, None
        if resume is not None:  # continue the epoch's sample order where the checkpoint left it
            epoch, done = resume
            if done >= math.ceil(len(sampler) / hp.batch_size):  # saved at the end of an epoch
                epoch, done = epoch + 1, 0
            sampler.set_epoch(epoch)
            sampler.skip_next(done * hp.batch_size)
        # worker seeds from the loader's own generator: the global RNG (restored from checkpoints) is not consumed
        return DataLoader(ds, batch_size=hp.batch_size, sampler=sampler, num_workers=hp.num_workers, collate_fn=collate_skip_broken,
                          pin_memory=hp.pin_memory, persistent_workers=hp.num_workers > 0, drop_last=False,
                          generator=torch.Generator().manual_seed(int(hp.seed)))

    # -- resuming: the training position travels in checkpoints ----------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The training sampler's epoch and the batches of it trained (the trainer's count, not the prefetching
        loader's), so that ``--ckpt_path`` resumes the sample order exactly where the run stopped."""
        sampler = getattr(self, "_train_sampler", None)
        trainer = getattr(self, "trainer", None)
        if sampler is None or trainer is None:
            return {}
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        return {"train_epoch": int(sampler.epoch), "train_batches_done": done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied when the training loader is (re)built: Lightning builds it before restoring its loops.
        if "train_epoch" in state_dict:
            self._resume_position = (int(state_dict["train_epoch"]), int(state_dict.get("train_batches_done", 0)))

    def _eval_loaders(self, stage: str) -> list[DataLoader]:
        sets = self._datasets.get(stage) or []
        if not sets:
            raise ValueError(f"no {stage} data: set data.{stage} to a manifest, a list of them or {{name: manifest}}")
        world, rank = self._world()
        return [self._loader(ds, self.hparams.eval_batch_size, UnrepeatedDistributedSampler(len(ds), world, rank)) for ds in sets]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val") if self.val_sets else []

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        if "predict" not in self._datasets:
            raise ValueError("no images to predict: set data.predict to images, folders, .txt lists or manifests")
        ds = self._datasets["predict"]
        world, rank = self._world()
        return self._loader(ds, self.hparams.eval_batch_size, UnrepeatedDistributedSampler(len(ds), world, rank))


class SyntheticIMLDataModule(IMLDataModule):
    """:class:`IMLDataModule` over synthetic forgeries generated on first use (deterministic from ``seed``).

    The forgeries are written as real files + manifests under ``root`` by ``prepare_data`` (once, on
    one process), so training exercises exactly the same file pipeline as real datasets.

    Args:
        root: folder for the generated data (reused when it already holds the same parameters).
        num_train, num_val, num_test: number of generated samples per split.
        size: side of the generated images.
        photos: where photos come from: ``"procedural"`` (no data needed), a folder of images, or
            ``"coco-panoptic:PATH"`` / ``"bsds:PATH"`` for the layouts of shared/data/natural.
        p_authentic: fraction of untouched (authentic) images.
        data_seed: seed of the generator (val/test use derived seeds, so splits never overlap).
        **kwargs: everything :class:`IMLDataModule` takes (batch size, crop, augmentation, ...).
    """

    def __init__(
        self,
        root: str = "runs/synthetic-data",
        num_train: int = 400,
        num_val: int = 64,
        num_test: int = 64,
        size: int = 256,
        photos: str = "procedural",
        p_authentic: float = 0.1,
        data_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        root_path = Path(root)
        kwargs.setdefault("crop_size", size)
        super().__init__(
            train=str(root_path / "train" / "manifest.jsonl"),
            val={"synthetic": str(root_path / "val" / "manifest.jsonl")},
            test={"synthetic": str(root_path / "test" / "manifest.jsonl")},
            **kwargs,
        )
        self.root = root_path

    def prepare_data(self) -> None:
        from webiml.data.synthetic import write_synthetic_dataset

        hp = self.hparams
        splits = {"train": (hp.num_train, 0), "val": (hp.num_val, 1), "test": (hp.num_test, 2)}
        for split, (n, offset) in splits.items():
            if n <= 0:
                continue
            pool = make_photo_pool(hp.photos, split=split, seed=hp.data_seed + offset, size=hp.size)
            write_synthetic_dataset(
                self.root / split, n, seed=hp.data_seed * 1000 + offset, pool=pool,
                size=(hp.size, hp.size), p_authentic=hp.p_authentic, source=f"synthetic-{split}",
            )
