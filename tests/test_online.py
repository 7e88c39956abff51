"""On-the-fly synthetic training data: determinism, authentic images in every batch, fresh samples each
epoch, photo splits that never overlap, and the data module end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from webiml.data.online import EpochSampler, OnlineSyntheticDataset, OnlineSyntheticIMLDataModule
from webiml.data.photo_pool import make_photo_pool
from webiml.data.transforms import make_train_transform


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small random-texture photos (smooth blobs of colour, so edits are not trivially visible)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(40):
        base = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((96, 72), Image.Resampling.BICUBIC).save(root / f"photo_{i:02d}.jpg", quality=95)
    return root


def _dataset(photos: str, **kwargs) -> OnlineSyntheticDataset:
    kwargs.setdefault("seed", 3)
    return OnlineSyntheticDataset(photos, size=64, **kwargs)


def test_sample_depends_only_on_seed_and_index(photo_folder: Path) -> None:
    a, b = _dataset(str(photo_folder)), _dataset(str(photo_folder))
    for i in (1, 2, 7):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["mask"], sb["mask"])
    assert not torch.equal(a[1]["image"], a[2]["image"])
    assert not torch.equal(a[1]["image"], _dataset(str(photo_folder), seed=4)[1]["image"])


def test_every_nth_index_is_authentic_and_the_rest_are_forged(photo_folder: Path) -> None:
    ds = _dataset(str(photo_folder), authentic_every=4)
    for i in range(12):
        s = ds[i]
        assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 64, 64)
        if i % 4 == 0:
            assert s["label"] == 0 and float(s["mask"].max()) == 0.0
        else:
            assert s["label"] == 1 and float(s["mask"].max()) == 1.0, f"sample {i} has an empty mask"
    assert all(_dataset(str(photo_folder), authentic_every=0)[i]["label"] == 1 for i in (0, 4, 8))


def test_every_kind_can_be_drawn_and_jitter_pastes_an_object(photo_folder: Path) -> None:
    ds = _dataset(str(photo_folder), kinds=["jitter"], authentic_every=0)
    kinds = {ds.forgery(i).kind for i in range(6)}
    assert kinds == {"jitter"}
    f = ds.forgery(1)
    changed = np.abs(f.image.astype(int) - f.source.astype(int)).max(axis=2) > 0
    assert changed[f.mask > 0].mean() > 0.5  # the pixels the mask marks were really changed
    mixed = {_dataset(str(photo_folder), authentic_every=0).forgery(i).kind for i in range(40)}
    assert mixed == {"splice", "copy_move", "removal", "jitter"}
    with pytest.raises(ValueError, match="kinds"):
        _dataset(str(photo_folder), kinds=["blur"])


def test_training_transform_is_applied(photo_folder: Path) -> None:
    ds = _dataset(str(photo_folder), transform=make_train_transform(crop_size=48, scale=(1.0, 1.0), jpeg_p=0.0))
    s = ds[3]
    assert s["image"].shape == (3, 48, 48) and s["mask"].shape == (1, 48, 48)


def test_epoch_sampler_gives_fresh_indices_and_splits_ranks() -> None:
    sampler = EpochSampler(8)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first == list(range(8)) and second == list(range(8, 16))
    ranks = [EpochSampler(8, world_size=2, rank=r) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    a, b = (list(r) for r in ranks)
    assert len(a) == len(b) == 4 and sorted(a + b) == list(range(16, 24))
    with pytest.raises(ValueError):
        EpochSampler(1, world_size=2)


def test_random_transform_depends_only_on_seed_and_index(photo_folder: Path) -> None:
    """Worker, process and resume point do not change a sample: the transform draws from an RNG seeded by the
    index (and the global RNG is left as it was)."""
    transform = make_train_transform(crop_size=40, scale=(0.6, 1.4), jpeg_p=0.5, blur_p=0.5)
    a, b = _dataset(str(photo_folder), transform=transform), _dataset(str(photo_folder), transform=transform)
    torch.manual_seed(0)
    first = [a[i]["image"] for i in (5, 6)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    second = [b[i]["image"] for i in (6, 5)][::-1]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_epoch_sampler_skip_and_datamodule_resume_mid_epoch(tmp_path: Path, photo_folder: Path) -> None:
    sampler = EpochSampler(8, world_size=2, rank=1)
    sampler.set_epoch(1)
    sampler.skip_next(2)
    assert list(sampler) == [13, 15] and list(sampler) == [9, 11, 13, 15]  # the skip applies to one pass only
    dm = OnlineSyntheticIMLDataModule(
        photos=str(photo_folder), root=str(tmp_path / "data"), samples_per_epoch=24, gen_size=64, num_val=2, num_test=0,
        size=64, batch_size=4, num_workers=0, crop_size=32, pin_memory=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    whole = [b["index"].tolist() for b in dm.train_dataloader()]
    assert whole == [list(range(i, i + 4)) for i in range(0, 24, 4)]
    dm.load_state_dict({"train_epoch": 2, "train_batches_done": 4})  # a checkpoint taken after batch 4 of epoch 2
    assert [b["index"].tolist() for b in dm.train_dataloader()] == [[64, 65, 66, 67], [68, 69, 70, 71]]
    dm.load_state_dict({"train_epoch": 2, "train_batches_done": 6})  # saved at the end of epoch 2: epoch 3 next
    assert next(iter(dm.train_dataloader()))["index"].tolist() == [72, 73, 74, 75]


def test_photo_splits_never_share_a_photo(photo_folder: Path) -> None:
    names = {split: {e.image.name for e in make_photo_pool(str(photo_folder), split=split).entries}
             for split in ("train", "val", "test")}
    assert names["train"] and not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    merged = make_photo_pool([str(photo_folder), str(photo_folder)], split="train")
    assert len(merged.entries) == 2 * len(names["train"])
    with pytest.raises(ValueError, match="procedural"):
        make_photo_pool(["procedural", str(photo_folder)])



def test_one_pool_builder_serves_online_synthetic_and_pair_data(tmp_path: Path, photo_folder: Path) -> None:
    from webiml.data.datamodule import make_photo_pool as datamodule_pool
    from webiml.data.pair_synthesis import make_pool
    from webiml.data.photo_pool import make_photo_pool, split_photo_pool

    assert make_photo_pool is make_photo_pool and datamodule_pool is make_photo_pool
    for split in ("train", "val", "test"):
        online = make_photo_pool(str(photo_folder), split=split, size=64)
        pairs = split_photo_pool(make_pool(str(photo_folder)), split, str(photo_folder))  # the pair data's split
        assert [e.image for e in online.entries] == [e.image for e in pairs.entries]
        assert (online.max_side, pairs.max_side) == (256, 512)  # 2 x size, at least 256 / the pair generator's 512
    assert len(make_pool(str(photo_folder)).entries) == 40  # no split
    # a bare folder holding a BSDS-like tree is read as one, like "bsds:PATH"
    root = tmp_path / "bsds"
    (root / "images").mkdir(parents=True)
    (root / "regions").mkdir()
    for i in range(20):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / "images" / f"b{i}.png")
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(root / "regions" / f"b{i}.png")
    bare, named = make_photo_pool(str(root), "train"), make_photo_pool(f"bsds:{root}", "train")
    assert bare.signature == named.signature and bare.signature["type"] == "bsds"
    assert [(e.image, e.labels) for e in bare.entries] == [(e.image, e.labels) for e in named.entries]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        make_photo_pool(str(tmp_path / "missing"))

def test_datamodule_batches_hold_authentic_images_and_validation_is_held_out(tmp_path: Path, photo_folder: Path) -> None:
    dm = OnlineSyntheticIMLDataModule(
        photos=str(photo_folder), root=str(tmp_path / "data"), samples_per_epoch=16, gen_size=64, authentic_every=4,
        num_val=6, num_test=0, size=64, batch_size=8, num_workers=0, crop_size=48, pin_memory=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    for batch in batches:
        assert batch["image"].shape == (8, 3, 48, 48)
        assert int((batch["label"] == 0).sum()) == 2
    assert set(dm.eval_names("val")) == {"synthetic"}
    val = next(iter(dm.val_dataloader()[0]))
    assert val["image"].shape[0] >= 1
    train_photos = {e.image for e in make_photo_pool(str(photo_folder), split="train").entries}
    val_photos = {e.image for e in make_photo_pool(str(photo_folder), split="val").entries}
    assert not (train_photos & val_photos)


def test_mixed_dataset_puts_real_samples_in_every_group_and_keeps_authentic_ones(photo_folder: Path) -> None:
    from webiml.data.online import MixedDataset

    generated = _dataset(str(photo_folder), authentic_every=4)
    extra = [{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "mask": torch.ones(1, 64, 64), "label": torch.tensor(1.0),
              "source": f"web-{k}"} for k in range(3)]
    mixed = MixedDataset(generated, extra, every=4)
    assert len(mixed) == len(generated)
    assert [mixed[i]["source"] for i in (1, 5, 9, 13)] == ["web-0", "web-1", "web-2", "web-0"]
    assert mixed[0]["label"] == 0 and mixed[4]["label"] == 0  # the generated authentic images stay
    assert torch.equal(mixed[2]["image"], generated[2]["image"])
