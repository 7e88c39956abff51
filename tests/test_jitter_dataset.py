"""Object Jitter online: the authors' resize + crop before the jitter, ObjectJitterDataset (same seed + epoch +
index -> same sample, another epoch re-draws, another image after a rejection), EpochKeySampler through a
DataLoader, the fixed-set writer as a thin wrapper, and the jitter kind of the online synthetic datamodule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jitter_builders import Scripted, coco_tree, ellipse, rect, textured
from webiml.data.arrays import resize_linear_cv, resize_nearest_cv
from webiml.data.coco import CocoInstances
from webiml.data.jitter import ObjectJitter
from webiml.data.jitter_dataset import EpochKeySampler, ObjectJitterDataset, main, resize_crop, write_jitter_dataset
from webiml.data.manifest import read_manifest
from webiml.data.online import EpochSampler, OnlineSyntheticIMLDataModule
from webiml.data.photo_pool import PhotoPool
from webiml.data.transforms import collate_iml
from webiml.io import read_image, read_mask


class Listed:
    """An indexed instance source: ``(image, masks, boxes)`` per index."""

    def __init__(self, items: list[tuple[np.ndarray, list[np.ndarray], np.ndarray]]) -> None:
        self.items, self.signature = items, {"type": "listed", "n": len(items)}

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.items[i][0], self.items[i][1]

    def load_with_boxes(self, i: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        return self.items[i]


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> CocoInstances:
    return CocoInstances(coco_tree(tmp_path_factory.mktemp("coco") / "coco"))


# --------------------------------------------------------------------------------------------------
# geometry before the jitter


def test_resize_crop_draws_width_and_height_independently_like_the_authors() -> None:
    img = textured(60, 90)
    masks = [rect(60, 90, 10, 30, 20, 50)]
    boxes = np.array([[20, 10, 50, 30]], np.float32)
    rng = Scripted([40, 36, 2, 5])  # width, height, crop row, crop column
    out, ms, bx = resize_crop(img, masks, boxes, (32, 32), rng)
    # sides from [32, int(32 * 1.5)] = 32..48 (mmseg Resize, range mode, keep_ratio=False), then RandomCrop
    assert rng.asked == [(32, 49), (32, 49), 5, 9]
    np.testing.assert_array_equal(out, resize_linear_cv(img, 36, 40)[2:34, 5:37])
    np.testing.assert_array_equal(ms[0], resize_nearest_cv(masks[0], 36, 40)[2:34, 5:37])
    np.testing.assert_allclose(bx, [[20 * 40 / 90 - 5, 10 * 36 / 60 - 2, 50 * 40 / 90 - 5, 30 * 36 / 60 - 2]], rtol=1e-6)
    _, _, clipped = resize_crop(img, masks, np.array([[0, 0, 90, 60]], np.float32), (32, 32), Scripted([40, 36, 2, 5]))
    np.testing.assert_array_equal(clipped, [[0, 0, 32, 32]])  # shifted by the crop and clipped to it
    out, ms, bx = resize_crop(img, masks, boxes, (32, 32), np.random.default_rng(0), keep_aspect=True)
    assert out.shape == (32, 32, 3) and ms[0].shape == (32, 32)
    rows, cols = np.flatnonzero(ms[0].any(1)), np.flatnonzero(ms[0].any(0))
    assert abs((bx[0, 3] - bx[0, 1]) - rows.size) <= 1.5 and abs((bx[0, 2] - bx[0, 0]) - cols.size) <= 1.5


# --------------------------------------------------------------------------------------------------
# the online dataset


def test_same_seed_epoch_index_same_sample_and_another_epoch_redraws(coco: CocoInstances) -> None:
    ds = ObjectJitterDataset(coco, size=32, seed=0, source="coco-jitter")
    assert len(ds) == 2
    a, b = ds.forgery(0, epoch=0), ds.forgery(0, epoch=0)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.image.shape == (32, 32, 3) and a.kind == "jitter" and a.mask.any()
    again = ObjectJitterDataset(coco, size=32, seed=0).forgery(0, epoch=0)  # a fresh object: same sample
    np.testing.assert_array_equal(again.image, a.image)
    other_epochs = [ds.forgery(0, epoch=e) for e in (1, 2, 3)]
    assert all(not np.array_equal(o.image, a.image) for o in other_epochs)
    assert not np.array_equal(ObjectJitterDataset(coco, size=32, seed=1).forgery(0, 0).image, a.image)
    # keys: (index, epoch), or the index with the epoch of set_epoch
    s = ds[(1, 2)]
    assert s["image"].shape == (3, 32, 32) and s["mask"].shape == (1, 32, 32) and float(s["label"]) == 1.0
    assert s["path"] == "coco-jitter://2/1" and s["source"] == "coco-jitter"
    assert set(torch.unique(s["mask"]).tolist()) <= {0.0, 1.0}
    ds.set_epoch(2)
    assert torch.equal(ds[1]["image"], s["image"]) and torch.equal(ds[1]["mask"], s["mask"])
    np.testing.assert_array_equal(ds[1]["image"].permute(1, 2, 0).numpy(), ds.forgery(1, 2).image)


def test_boxes_come_from_the_source_and_rejected_photos_are_replaced() -> None:
    img = textured(64, 64)
    tiny = rect(64, 64, 5, 9, 5, 9)  # 4 x 4: never a candidate
    obj = ellipse(64, 64, 40, 40, 12, 10)
    # photo 0: only the tiny object; photo 1: the tiny one and an ellipse whose given box is too small
    # (so it is no candidate either); photo 2: the ellipse with its real box
    src = Listed([(img, [tiny], np.array([[5, 5, 9, 9]], np.float32)),
                  (img, [tiny, obj], np.array([[5, 5, 9, 9], [30, 28, 36, 34]], np.float32)),
                  (img, [obj], np.array([[30, 28, 50, 52]], np.float32))])
    ds = ObjectJitterDataset(src, size=None, seed=0)
    for i in range(6):
        f = ds.forgery(i, epoch=0)
        assert f.info["photo"] == 2 and f.info["objects"][0]["box"] == [30.0, 28.0, 50.0, 52.0]
    with pytest.raises(RuntimeError, match="no acceptable jitter"):
        ObjectJitterDataset(Listed(src.items[:2]), size=None, max_tries=5).forgery(0)


def test_sampled_sources_need_a_length_and_jpeg_is_an_option() -> None:
    pool = PhotoPool.procedural(size=(64, 64), seed=0, n=4, min_region=0.0, max_region=0.75)
    with pytest.raises(ValueError, match="length"):
        ObjectJitterDataset(pool)
    ds = ObjectJitterDataset(pool, length=10, size=48, seed=1, jitter={"second_min_candidates": 1})
    assert ds.jitter == ObjectJitter(second_min_candidates=1)
    a = ds.forgery(3, 0)
    np.testing.assert_array_equal(a.image, ds.forgery(3, 0).image)
    assert a.image.shape == (48, 48, 3) and a.info["photo"] is None
    jpeg = ObjectJitterDataset(pool, length=10, size=48, seed=1, jitter={"second_min_candidates": 1}, p_jpeg=1.0)
    b = jpeg.forgery(3, 0)
    assert not np.array_equal(a.image, b.image)
    np.testing.assert_array_equal(b.image, jpeg.forgery(3, 0).image)
    assert ds.params()["jitter"]["second_min_candidates"] == 1 and ds.params()["scale_range"] == [1.0, 1.5]


def test_epoch_key_sampler_carries_the_epoch_into_loader_workers(coco: CocoInstances) -> None:
    ds = ObjectJitterDataset(coco, size=32, seed=0, length=4)
    sampler = EpochKeySampler(range(4))
    assert list(sampler) == [(0, 0), (1, 0), (2, 0), (3, 0)] and len(sampler) == 4
    inner = EpochSampler(4)
    wrapped = EpochKeySampler(inner)
    wrapped.set_epoch(3)
    assert inner.epoch == 3 and list(wrapped)[0] == (12, 3)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=1, persistent_workers=True,
                        collate_fn=collate_iml)
    epochs = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        epochs.append(torch.cat([b["image"] for b in loader]))
    assert torch.equal(epochs[0], epochs[2]) and not torch.equal(epochs[0], epochs[1])
    expected = np.stack([ds.forgery(i, 1).image for i in range(4)]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(epochs[1].numpy(), expected)


# --------------------------------------------------------------------------------------------------
# fixed sets: a thin wrapper over the dataset


def test_write_jitter_dataset_procedural(tmp_path: Path) -> None:
    kw = dict(seed=3, size=(64, 64), source="jitter-train", second_min_candidates=1, p_jpeg=0.5)
    path = write_jitter_dataset(tmp_path / "a", 5, **kw)
    recs = read_manifest(path)
    assert [Path(r.image).name for r in recs] == [f"{i:06d}.png" for i in range(5)]
    for r in recs:
        assert r.label == 1 and r.source == "jitter-train" and r.extra["kind"] == "jitter" and r.extra["objects"] in (1, 2)
        mask = read_mask(r.mask)
        assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255} and (mask > 0).mean() <= 0.75
        assert read_image(r.image).shape == (64, 64, 3)
    params = json.loads((tmp_path / "a" / "params.json").read_text())
    assert params["n"] == 5 and params["instances"]["type"] == "procedural" and params["version"] == 2
    assert params["jitter"]["second_pick"] == "official" and params["keep_aspect"] is False
    # idempotent: same parameters -> nothing rewritten
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()}
    assert write_jitter_dataset(tmp_path / "a", 5, **kw) == path
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()} == stamp
    # deterministic: another folder gets byte-identical files, also when written by 2 processes
    other = write_jitter_dataset(tmp_path / "b", 5, num_workers=2, **kw)
    for r, s in zip(recs, read_manifest(other), strict=True):
        assert Path(r.image).read_bytes() == Path(s.image).read_bytes()
        assert Path(r.mask).read_bytes() == Path(s.mask).read_bytes()
    # other parameters regenerate
    write_jitter_dataset(tmp_path / "a", 2, **kw)
    assert len(read_manifest(path)) == 2


def test_written_set_is_epoch_0_of_the_online_dataset(coco: CocoInstances, tmp_path: Path) -> None:
    path = write_jitter_dataset(tmp_path / "j", 3, seed=0, instances=coco, size=40, source="coco-jitter",
                                manifest=tmp_path / "manifests" / "coco-jitter.jsonl")
    recs = read_manifest(path)
    assert path == tmp_path / "manifests" / "coco-jitter.jsonl" and len(recs) == 3
    ds = ObjectJitterDataset(coco, size=40, seed=0, length=3)
    for i, r in enumerate(recs):
        assert r.source == "coco-jitter" and r.label == 1 and r.extra["kind"] == "jitter"
        f = ds.forgery(i, epoch=0)
        np.testing.assert_array_equal(read_image(r.image), f.image)
        np.testing.assert_array_equal(read_mask(r.mask), f.mask)
    native = write_jitter_dataset(tmp_path / "n", 2, seed=0, instances=coco, size=None, image_format="jpg")
    assert [read_image(r.image).shape for r in read_manifest(native)] == [(64, 80, 3), (48, 48, 3)]


def test_cli_build(tmp_path: Path) -> None:
    assert main(["build", "--out", str(tmp_path / "j"), "--n", "2", "--procedural", "48",
                 "--second-min-candidates", "1", "--second-pick", "distinct", "--keep-aspect"]) == 0
    assert len(read_manifest(tmp_path / "j" / "manifest.jsonl")) == 2
    params = json.loads((tmp_path / "j" / "params.json").read_text())
    assert params["keep_aspect"] and params["jitter"]["second_pick"] == "distinct"


# --------------------------------------------------------------------------------------------------
# inside the online synthetic datamodule


def test_jitter_kind_of_the_online_synthetic_datamodule(tmp_path: Path) -> None:
    kw = dict(photos="procedural", root=str(tmp_path / "data"), samples_per_epoch=4, gen_size=64, kinds=["jitter"],
              authentic_every=0, p_jpeg=0.0, num_val=2, num_test=0, size=64, batch_size=2, num_workers=0,
              crop_size=64, pin_memory=False)
    dm = OnlineSyntheticIMLDataModule(jitter={"second_min_candidates": 2, "p_blur": 0.0}, **kw)
    dm.prepare_data()
    dm.setup("fit")
    ds = dm._datasets["train"]
    assert ds.jitter == ObjectJitter(second_min_candidates=2, p_blur=0.0)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 2 and all(bool((b["label"] == 1).all()) for b in batches)
    assert all(float(b["mask"].flatten(1).max(1).values.min()) == 1.0 for b in batches)
    sampler = loader.sampler
    first = [ds.forgery(i) for i in sampler]
    sampler.set_epoch(1)
    second = [ds.forgery(i) for i in sampler]
    for f in first + second:
        assert f.kind == "jitter" and set(np.unique(f.alpha)) <= {0.0, 1.0}  # hard alpha (blur off here)
    assert all(not np.array_equal(a.image, b.image) for a, b in zip(first, second, strict=True))  # re-drawn
    sampler.set_epoch(0)
    assert all(np.array_equal(a.image, ds.forgery(i).image) for a, i in zip(first, sampler, strict=True))
    default = OnlineSyntheticIMLDataModule(**kw)
    default.setup("fit")
    assert default._datasets["train"].jitter == ObjectJitter()  # the authors' settings by default
