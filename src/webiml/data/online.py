"""Synthetic forgeries generated on the fly, in DataLoader workers: training data that never repeats.

:class:`OnlineSyntheticDataset` makes sample ``i`` from a generator seeded by ``(seed, i)`` only: splicing,
copy-move, removal (see :mod:`webiml.data.synthetic`) or Object Jitter (:class:`~webiml.data.jitter.ObjectJitter`,
the MIML authors' transform with their settings unless ``jitter`` says otherwise, on the pool photo's region
masks as instances) on a photo of the pool, with double JPEG compression, then the usual training transform
(rescale, crop, flip, down-up resize, blur, JPEG re-compression). Because :class:`EpochSampler` gives every
epoch fresh indices, every epoch re-draws its jitters too. Every ``authentic_every``-th index is an untouched photo
that went through the same post-processing, so every batch holds authentic images and JPEG traces alone
never give the label away.

:class:`EpochSampler` hands out fresh indices each epoch (epoch ``e`` reads ``[e * n, (e + 1) * n)``), so a
run of any length sees each sample once, and a run resumed from a checkpoint (even mid-epoch: the datamodule's
state travels in it) sees the same samples, with the same random transforms, as an
uninterrupted one. :class:`OnlineSyntheticIMLDataModule` puts them together with fixed, held-out
validation forgeries made from photos the training split never uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from webiml.data.datamodule import SyntheticIMLDataModule
from webiml.data.datasets import ManifestDataset, collate_skip_broken
from webiml.data.jitter import ObjectJitter
from webiml.data.masks import target_from_mask
from webiml.data.photo_pool import make_photo_pool
from webiml.data.transforms import make_train_transform
from webiml.io import hwc_to_chw, jpeg_compress

log = logging.getLogger(__name__)

ONLINE_KINDS: tuple[str, ...] = ("splice", "copy_move", "removal", "jitter")
"""Forgery kinds :class:`OnlineSyntheticDataset` can draw."""


class OnlineSyntheticDataset(Dataset):
    """Random forgeries made on demand; sample ``i`` depends only on ``seed``, ``i`` and the photo pool.

    Args:
        photos: photo source spec(s) (see :func:`webiml.data.photo_pool.make_photo_pool`).
        split: which hash split of the photos to use (``"train"``, ``"val"``, ``"test"``).
        length: number of indices (an epoch of :class:`EpochSampler` reads a window of them; indices past
            ``length`` are valid too: any non-negative integer is a sample).
        size: side of the square the photo is fitted to before editing.
        seed: seed of the generator.
        kinds: forgery kinds to draw from (:data:`ONLINE_KINDS`).
        authentic_every: index ``i`` is an untouched photo when ``i % authentic_every == 0`` (0: never).
        p_jpeg: probability of double JPEG compression (before and after the edit).
        transform: sample transform applied last (e.g. :func:`~webiml.data.transforms.make_train_transform`).
        source: the ``source`` of every sample.
        jitter: settings of the ``jitter`` kind (:class:`~webiml.data.jitter.ObjectJitter` fields; default the
            MIML authors', e.g. a second object only when 8 other boxes are left: ``{"second_min_candidates":
            2}`` gives scenes with few objects a second one). Unlike the authors' COCO pipeline, the photo is
            fitted to ``size`` like every other kind (:func:`~webiml.data.synthetic.fit_photo`, aspect kept)
            and a rejected photo is retried 10 times before the sample falls back to a splice.
    """

    def __init__(
        self,
        photos: str | Sequence[str],
        split: str = "train",
        length: int = 10**9,
        size: int = 320,
        seed: int = 0,
        kinds: Sequence[str] = ONLINE_KINDS,
        authentic_every: int = 4,
        p_jpeg: float = 0.5,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        source: str = "synthetic-online",
        jitter: dict[str, Any] | None = None,
    ) -> None:
        unknown = [k for k in kinds if k not in ONLINE_KINDS]
        if unknown or not kinds:
            raise ValueError(f"kinds must be some of {ONLINE_KINDS}, got {list(kinds)}")
        if authentic_every < 0 or authentic_every == 1:
            raise ValueError("authentic_every must be 0 (no authentic images) or >= 2")
        self.photos, self.split, self.length, self.size = photos, split, int(length), int(size)
        self.seed, self.kinds, self.authentic_every, self.p_jpeg = int(seed), tuple(kinds), int(authentic_every), float(p_jpeg)
        self.transform, self.source = transform, source
        self.jitter = ObjectJitter(**(jitter or {}))
        self._pool: Any = None  # built lazily, once per worker process

    def __len__(self) -> int:
        return self.length

    @property
    def pool(self) -> Any:
        if self._pool is None:
            self._pool = make_photo_pool(self.photos, split=self.split, seed=self.seed, size=self.size)
        return self._pool

    def forgery(self, index: int) -> Any:
        """The :class:`~webiml.data.synthetic.Forgery` of ``index`` (before the training transform)."""
        from webiml.data.synthetic import fit_photo, synthesize

        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, int(index)])
        size = (self.size, self.size)
        if self.authentic_every and index % self.authentic_every == 0:
            return synthesize(self.pool, rng, kinds=(), p_authentic=1.0, size=size, p_jpeg=self.p_jpeg)
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        if kind == "jitter":
            for _ in range(10):
                photo, regions = self.pool.sample(rng)
                photo, regions = fit_photo(photo, regions, size)
                forgery = self.jitter(photo, regions, rng)
                if forgery is not None:
                    if rng.random() < self.p_jpeg:
                        forgery.image = jpeg_compress(forgery.image, int(rng.integers(70, 101)))
                    return forgery
            kind = "splice"  # no usable object in ten photos: fall back to an ordinary forgery
        return synthesize(self.pool, rng, kinds=(kind,), p_authentic=0.0, size=size, p_jpeg=self.p_jpeg)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):  # the transform's draws, too, depend only on (seed, index)
            torch.manual_seed(_sample_seed(self.seed, int(index)))
            return self._item(int(index))

    def _item(self, index: int) -> dict[str, Any]:
        f = self.forgery(int(index))
        sample = {
            "image": hwc_to_chw(f.image),
            "mask": target_from_mask(f.mask)[None],
            "label": torch.tensor(float(f.label)),
            "weight": torch.tensor(1.0),
            "path": f"{self.source}://{int(index)}",
            "source": self.source,
            "index": torch.tensor(int(index)),
        }
        return self.transform(sample) if self.transform is not None else sample


def _sample_seed(seed: int, index: int, stream: int = 1) -> int:
    """Torch seed of sample ``index``'s random transform (independent of worker, process and resume point)."""
    return int(np.random.SeedSequence([int(seed), int(index), int(stream)]).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(Sampler[int]):
    """Indices ``[e * n, (e + 1) * n)`` in epoch ``e`` (``n = samples_per_epoch``), strided over DDP ranks.

    Lightning calls :meth:`set_epoch` before each training epoch (resumed runs included), so every epoch
    reads samples no earlier epoch read, and rank ``r`` of ``world`` reads every ``world``-th of them.
    """

    def __init__(self, samples_per_epoch: int, world_size: int = 1, rank: int = 0) -> None:
        if samples_per_epoch < world_size:
            raise ValueError(f"samples_per_epoch ({samples_per_epoch}) must be at least the number of processes ({world_size})")
        self.n, self.world, self.rank, self.epoch = int(samples_per_epoch), int(world_size), int(rank), 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_next(self, n: int) -> None:
        """Leave out the first ``n`` indices (of this rank) of the next pass only (a run resumed mid-epoch)."""
        self._skip = max(0, int(n))

    def __len__(self) -> int:
        return self.n // self.world

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.n
        skip, self._skip = self._skip, 0
        return iter(range(start + self.rank + skip * self.world, start + len(self) * self.world, self.world))


class MixedDataset(Dataset):
    """Index ``i`` is ``extra[(i // every) % len(extra)]`` when ``i % every == 1``, else ``generated[i]``.

    Index 1 (not 0) of each group of ``every`` goes to the extra data, so with ``authentic_every == every``
    the generated authentic images (index 0 of each group) are kept.
    """

    def __init__(self, generated: Dataset, extra: Dataset, every: int) -> None:
        self.generated, self.extra, self.every = generated, extra, int(every)

    def __len__(self) -> int:
        return len(self.generated)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if index % self.every == 1:
            with torch.random.fork_rng(devices=[]):  # as the generated samples: a function of the index alone
                torch.manual_seed(_sample_seed(0, int(index), stream=2))
                return self.extra[(index // self.every) % len(self.extra)]  # type: ignore[arg-type]
        return self.generated[index]


class OnlineSyntheticIMLDataModule(SyntheticIMLDataModule):
    """Training on forgeries made on the fly (:class:`OnlineSyntheticDataset`), validation and test on fixed
    held-out forgeries written once by :class:`~webiml.data.datamodule.SyntheticIMLDataModule` from the
    val/test photo splits.

    Args:
        photos: photo source spec(s); training uses their train split, validation/test their val/test split.
        samples_per_epoch: training samples per epoch (fresh ones every epoch).
        gen_size: side of the square photos are fitted to before editing (the training crop comes after).
        kinds: forgery kinds of the training data.
        authentic_every: every n-th training index is an untouched photo (with a batch size that is a
            multiple of n, every batch holds ``batch_size / n`` authentic images).
        p_jpeg: probability of double JPEG compression around the edit.
        resize_p: probability of a down-up resize of the training crop (a lost-resolution re-upload).
        extra_val: more named validation sets (manifests), e.g. real forgeries to watch.
        extra_train: manifests of real training samples mixed into the generated ones (e.g. the kept web
            forgeries of ``webiml annotate``): training index ``i`` with ``i % extra_every == 1`` is record
            ``(i // extra_every) % n`` of them, through the same training transform.
        extra_every: see ``extra_train`` (e.g. 4: a quarter of each batch; must be >= 2).
        jitter: settings of the Object Jitter kind (see :class:`OnlineSyntheticDataset`; default the authors').
        **kwargs: :class:`~webiml.data.datamodule.SyntheticIMLDataModule` arguments (``root``, ``num_val``,
            ``num_test``, ``size`` of the held-out forgeries, ``p_authentic`` of the held-out sets, batch size,
            crop, augmentation, evaluation policy, ...); ``num_train`` is not used.
    """

    def __init__(
        self,
        photos: str | list[str] = "procedural",
        samples_per_epoch: int = 2048,
        gen_size: int = 320,
        kinds: list[str] | None = None,
        authentic_every: int = 4,
        p_jpeg: float = 0.5,
        resize_p: float = 0.2,
        extra_val: dict[str, str] | None = None,
        extra_train: list[str] | None = None,
        extra_every: int = 4,
        jitter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if extra_train and extra_every < 2:
            raise ValueError(f"extra_every must be >= 2 with extra_train, got {extra_every}")
        kwargs["num_train"] = 0
        super().__init__(photos=photos, **kwargs)  # type: ignore[arg-type]
        self.train_sets = []  # training samples are generated, never read from a manifest
        self.val_sets.update({name: [path] for name, path in (extra_val or {}).items()})

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        super().setup(stage)
        if stage in (None, "fit"):
            transform = make_train_transform(
                crop_size=hp.crop_size, scale=tuple(hp.scale), hflip=hp.hflip, jpeg_p=hp.jpeg_p,
                jpeg_quality=tuple(hp.jpeg_quality), blur_p=hp.blur_p, crop_bias=hp.crop_bias, resize_p=hp.resize_p,
            )
            generated = OnlineSyntheticDataset(
                hp.photos, split="train", size=hp.gen_size, seed=hp.data_seed, kinds=hp.kinds or ONLINE_KINDS,
                authentic_every=hp.authentic_every, p_jpeg=hp.p_jpeg, transform=transform, jitter=hp.jitter,
            )
            if hp.extra_train:
                extra = ManifestDataset(self._read(hp.extra_train), transform, train=True)
                if len(extra) == 0:
                    raise ValueError(f"extra_train {hp.extra_train}: no records")
                self._datasets["train"] = MixedDataset(generated, extra, hp.extra_every)
            else:
                self._datasets["train"] = generated

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        sampler = EpochSampler(self.hparams.samples_per_epoch, world, rank)
        hp = self.hparams
        self._train_sampler = sampler  # its epoch and the trainer's batch count go into checkpoints (state_dict)
        resume, self._resume_position = self._resume_position, None
        if resume is not None:  # a run resumed mid-epoch continues with the epoch's next batch
            epoch, done = resume
            if done >= len(sampler) // hp.batch_size:  # saved at the end of an epoch (drop_last: full batches)
                epoch, done = epoch + 1, 0
            sampler.set_epoch(epoch)
            sampler.skip_next(done * hp.batch_size)
        return DataLoader(
            self._datasets["train"], batch_size=hp.batch_size, sampler=sampler, num_workers=hp.num_workers,
            collate_fn=collate_skip_broken, pin_memory=hp.pin_memory, persistent_workers=hp.num_workers > 0,
            drop_last=True, generator=torch.Generator().manual_seed(int(hp.seed)),  # leaves the global RNG (restored on resume) alone
        )

