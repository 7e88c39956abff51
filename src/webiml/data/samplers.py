"""Samplers that stay correct under DDP.

Both subclass :class:`torch.utils.data.DistributedSampler`, so Lightning leaves them in place instead
of wrapping them in its own distributed sampler.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import DistributedSampler


class SourceBalancedSampler(DistributedSampler):
    """Per epoch, a fixed number of samples from each source, shuffled, split across ranks.

    Args:
        sources: the source name of every dataset index.
        samples_per_source: draw this many indices from every source per epoch (with replacement only
            when a source is smaller). ``None`` takes each source's own size.
        repeat: per-source multiplier of that count (the MIML recipe's repeat factors), default 1.
        num_replicas, rank: the DDP world; 1 and 0 outside DDP.
        seed: base seed; the epoch (``set_epoch``) is added, as DistributedSampler does.
        seeded: yield ``(index, sample_seed)`` pairs instead of indices: the seed, a function of (seed, epoch,
            position), makes each sample's random transforms independent of worker RNG streams, so that a run
            resumed mid-epoch sees the same crops as an uninterrupted one (:class:`ManifestDataset` takes both).

    :meth:`skip_next` drops the first samples of the next pass (a run resumed mid-epoch continues where it
    stopped instead of replaying the epoch's first batches).
    """

    def __init__(
        self,
        sources: Sequence[str],
        samples_per_source: int | None = None,
        repeat: Mapping[str, float] | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        seeded: bool = False,
    ) -> None:
        super().__init__(range(len(sources)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.seeded = seeded
        self._skip = 0
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(sources):
            groups.setdefault(s, []).append(i)
        unknown = set(repeat or {}) - set(groups)
        if unknown:
            raise ValueError(f"repeat names sources absent from the data: {sorted(unknown)}; present: {sorted(groups)}")
        self.groups = {s: torch.tensor(ix) for s, ix in sorted(groups.items())}
        self.counts = {
            s: max(1, round((samples_per_source or len(ix)) * (repeat or {}).get(s, 1.0))) for s, ix in self.groups.items()
        }
        total = sum(self.counts.values())
        self.num_samples = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        picks = []
        for s, ix in self.groups.items():
            n = self.counts[s]
            full, rest = divmod(n, len(ix))
            # Whole passes over the source, then a random subset: no sample repeats before all were seen.
            parts = [ix[torch.randperm(len(ix), generator=g)] for _ in range(full)]
            parts.append(ix[torch.randperm(len(ix), generator=g)[:rest]])
            picks.append(torch.cat(parts))
        order = torch.cat(picks)[torch.randperm(sum(self.counts.values()), generator=g)].tolist()
        order += order[: self.total_size - len(order)]
        mine = order[self.rank : self.total_size : self.num_replicas]
        skip, self._skip = self._skip, 0
        if self.seeded:
            seeds = torch.randint(0, 2**62, (self.total_size,), generator=g).tolist()[self.rank : self.total_size : self.num_replicas]
            return iter(list(zip(mine, seeds, strict=True))[skip:])
        return iter(mine[skip:])

    def skip_next(self, n: int) -> None:
        """Leave out the first ``n`` samples (of this rank) of the next pass only."""
        self._skip = max(0, int(n))

    def __len__(self) -> int:
        return self.num_samples


class UnrepeatedDistributedSampler(DistributedSampler):
    """Evaluation sampler: every index exactly once across ranks (ranks may get one sample fewer).

    Lightning's default distributed sampler pads ranks with repeated samples, which would count some
    images twice in the metrics; with this one DDP metrics equal the single-process ones.
    """

    def __init__(self, dataset_size: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(dataset_size), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.dataset_size = dataset_size
        self.num_samples = len(range(rank, dataset_size, num_replicas))
        self.total_size = dataset_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples

