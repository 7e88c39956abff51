"""IMLDataModule's ``online_jitter``: Object Jitter from COCO instances as one more training source beside the
manifests, re-drawn every epoch (through the seeded sampler's keys), identical for the same seed and epoch,
counted by ``repeat``, resized and cropped once (before the jitter, then only the crop); and one batch trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from jitter_builders import coco_tree
from webiml.data.datamodule import IMLDataModule, TrainingSources
from webiml.data.jitter_dataset import ObjectJitterDataset
from webiml.data.manifest import ManifestRecord, write_manifest
from webiml.io import save_image

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onlinejitter")
    rng = np.random.default_rng(0)
    records = []
    for i in range(3):
        image = rng.integers(0, 256, (SIZE + 8, SIZE + 4, 3), dtype=np.uint8)
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[4:20, 6:18] = 255
        save_image(root / "m" / f"{i}.png", image)
        save_image(root / "m" / f"{i}_mask.png", mask)
        records.append(ManifestRecord(str(root / "m" / f"{i}.png"), str(root / "m" / f"{i}_mask.png"), 1, "casia2"))
    manifest = write_manifest(root / "casia2.jsonl", records)
    return {"manifest": manifest, "coco": coco_tree(root / "coco")}


def _dm(data: dict[str, Path], **kw: Any) -> IMLDataModule:
    args: dict[str, Any] = dict(
        train=str(data["manifest"]),
        online_jitter={"coco": str(data["coco"] / "instances.json"), "images": str(data["coco"] / "images"),
                       "length": 4, "source": "coco-jitter", "size": SIZE, "seed": 0},
        repeat={"casia2": 2, "coco-jitter": 3}, batch_size=2, num_workers=0, pin_memory=False, crop_size=SIZE,
        resize_range=(SIZE, SIZE), crop_bias=0.0, jpeg_p=1.0, hflip=0.0, geometry_only_sources=["coco-jitter"],
        seed=0,
    )
    args.update(kw)
    dm = IMLDataModule(**args)
    dm.setup("fit")
    return dm


def _jitter_images(loader: torch.utils.data.DataLoader, epoch: int) -> dict[str, torch.Tensor]:
    """``{path: image}`` of the jitter samples of ``epoch`` (the sampler's epoch, as Lightning sets it)."""
    loader.sampler.set_epoch(epoch)
    out: dict[str, torch.Tensor] = {}
    for batch in loader:
        for path, source, image in zip(batch["path"], batch["source"], batch["image"], strict=True):
            if source == "coco-jitter":
                out[path] = image
    return out


def test_online_jitter_is_a_training_source_counted_by_repeat(data: dict[str, Path]) -> None:
    dm = _dm(data)
    ds = dm._datasets["train"]
    assert isinstance(ds, TrainingSources) and len(ds) == 3 + 4
    assert ds.sources == ["casia2"] * 3 + ["coco-jitter"] * 4
    jitter = ds.parts[1]
    assert isinstance(jitter, ObjectJitterDataset) and jitter.size == (SIZE, SIZE) and jitter.seed == 0
    # resized + cropped before the jitter (the authors' order): afterwards only the crop, no second resize
    names = [type(t).__name__ for t in jitter.transform.transforms]
    assert names == ["RandomCropPad"], names
    loader = dm.train_dataloader()
    assert len(loader.sampler) == 3 * 2 + 4 * 3  # repeat factors: 6 manifest + 12 jitter samples per epoch
    sources = [ds.sources[i] for i, _ in loader.sampler]
    assert sources.count("casia2") == 6 and sources.count("coco-jitter") == 12
    batch = next(iter(loader))
    assert batch["image"].shape[1:] == (3, SIZE, SIZE) and batch["mask"].shape[1:] == (1, SIZE, SIZE)
    # geometry only: a jitter sample's pixels are those of the jittered forgery, not re-compressed (jpeg_p 1)
    key = next(k for k in loader.sampler if ds.sources[k[0]] == "coco-jitter")
    sample = ds[key]
    forgery = jitter.forgery(key[0] - 3, key[1])
    assert sample["path"] == f"coco-jitter://{key[1]}/{key[0] - 3}" and float(sample["mask"].max()) == 1.0
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), forgery.image)
    assert torch.equal(ds[key]["image"], sample["image"])  # the same key: the same sample
    with pytest.raises(ValueError, match="coco"):
        IMLDataModule(online_jitter={"images": "x"})
    with pytest.raises(ValueError, match="unknown keys"):
        _dm(data, online_jitter={"coco": str(data["coco"]), "lenght": 4})


def test_jitter_redrawn_every_epoch_and_identical_across_datamodules(data: dict[str, Path]) -> None:
    a, b = _dm(data).train_dataloader(), _dm(data).train_dataloader()
    a0, a1 = _jitter_images(a, 0), _jitter_images(a, 1)
    b0, b1 = _jitter_images(b, 0), _jitter_images(b, 1)
    assert len(a0) == 12 and len(a1) == 12  # 4 indices x 3, each with its own sample seed
    assert a0.keys() == b0.keys() and all(torch.equal(a0[k], b0[k]) for k in a0)
    assert a1.keys() == b1.keys() and all(torch.equal(a1[k], b1[k]) for k in a1)
    assert not a0.keys() & a1.keys()
    # another epoch: other jitters (no image of epoch 1 is one of epoch 0)
    assert not any(torch.equal(x, y) for x in a0.values() for y in a1.values())
    assert _jitter_images(a, 0).keys() == a0.keys()  # back to epoch 0: its samples again


def test_one_training_batch_with_lightning(data: dict[str, Path], tmp_path: Path) -> None:
    from webiml.models import SmpIML
    from webiml.tasks.iml import IMLTask

    torch.manual_seed(0)
    dm = _dm(data, online_jitter=[{"coco": str(data["coco"]), "length": 2, "size": SIZE}], repeat={"casia2": 1})
    task = IMLTask(SmpIML(arch="FPN", arch_kwargs={"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32}))
    seen: list[list[str]] = []

    class Sources(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
            seen.append(list(batch["source"]))

    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, callbacks=[Sources()])
    trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 2 and len(seen) == 2
    assert {s for batch in seen for s in batch} <= {"casia2", "coco-jitter"}
