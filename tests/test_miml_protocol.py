"""The APSC-Net authors' test protocol (configs/protocols/miml_official.yaml): their area-based test resize,
the adaptive per-image threshold from the image score, their per-image IoU / P / R / F1, and the results table
that names the protocol. Hand-made cases for every rule of qcf-568/MIML 'models for IML/*_infer.py'."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from webiml.data.transforms import MIMLOfficialResize, make_eval_transform, miml_official_size, restore_logits
from webiml.data.transforms.evaluation import imghdr_jpeg
from webiml.metrics import MIMLOfficialMetrics, miml_adaptive_threshold
from webiml.models.base import IMLOutput

# --- the resize rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("h", "w", "jpeg", "expected"),
    [
        (1536, 1536, False, (976, 976)),  # area == 1536^2: squashed (>=)
        (1536, 1536, True, (976, 976)),
        (3744, 5616, True, (976, 976)),  # NIST16-sized
        (1200, 2000, False, (976, 976)),  # 2.4 Mpx >= 2,359,296, aspect not kept
        (1535, 1536, False, (1535, 1536)),  # just below: native
        (512, 512, True, (512, 512)),  # area == 512^2 JPEG: squashed (<=) (a no-op here)
        (300, 400, True, (512, 512)),  # small JPEG: squashed up to 512x512
        (300, 400, False, (300, 400)),  # small PNG: native
        (512, 513, True, (512, 513)),  # JPEG just above 512^2: native
        (384, 256, True, (512, 512)),  # CASIA v1 JPEGs
    ],
)
def test_miml_official_size(h: int, w: int, jpeg: bool, expected: tuple[int, int]) -> None:
    assert miml_official_size(h, w, jpeg) == expected


def test_imghdr_jpeg_rule_matches_pythons_imghdr() -> None:
    headers = {
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01": True,
        b"\xff\xd8\xff\xe1\x12\x34Exif\x00\x00": True,
        b"\xff\xd8\xff\xdb\x00\x43\x00\x01\x02\x03": True,  # raw JPEG starting with a quantisation table
        b"\xff\xd8\xff\xee\x00\x0eAdobe\x00": False,  # a JPEG to libjpeg, not to imghdr (the authors' test)
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR": False,
    }
    for header, expected in headers.items():
        assert imghdr_jpeg(header) is expected, header
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import imghdr
    except ImportError:  # Python >= 3.13
        return
    for header in headers:
        assert (imghdr.what(None, header + b"\x00" * 32) == "jpeg") is imghdr_jpeg(header)


def _write(path: Path, h: int, w: int, fmt: str) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def test_resize_reads_the_file_type(tmp_path: Path) -> None:
    def sample(path: Path, h: int, w: int) -> dict:
        return {"image": torch.zeros(3, h, w, dtype=torch.uint8), "mask": torch.zeros(1, h, w), "path": str(path)}

    jpg = _write(tmp_path / "a.jpg", 30, 40, "JPEG")
    png = _write(tmp_path / "b.png", 30, 40, "PNG")
    disguised = _write(tmp_path / "c.jpg", 30, 40, "PNG")  # a PNG named .jpg: the header decides
    assert MIMLOfficialResize()(sample(jpg, 30, 40))["image"].shape[-2:] == (512, 512)
    assert MIMLOfficialResize()(sample(png, 30, 40))["image"].shape[-2:] == (30, 40)
    assert MIMLOfficialResize()(sample(disguised, 30, 40))["image"].shape[-2:] == (30, 40)
    no_path = {"image": torch.zeros(3, 30, 40, dtype=torch.uint8)}
    assert MIMLOfficialResize()(no_path)["image"].shape[-2:] == (30, 40)
    # the evaluation policy records the original, resizes by the rule and does not pad
    out = make_eval_transform("miml_official")(sample(jpg, 30, 40))
    assert out["image"].shape[-2:] == (512, 512) and out["valid_size"].tolist() == [512, 512]
    assert out["orig_size"].tolist() == [30, 40] and out["mask_orig"].shape[-2:] == (30, 40)
    out = make_eval_transform("miml_official")(sample(png, 30, 41))
    assert out["image"].shape[-2:] == (30, 41) and out["valid_size"].tolist() == [30, 41]


def test_resize_is_bilinear_without_antialiasing() -> None:
    image = torch.randint(0, 256, (3, 1600, 1500), dtype=torch.uint8)  # 2.4 Mpx -> 976 x 976
    out = MIMLOfficialResize()({"image": image})["image"]
    expected = F.interpolate(image[None].float(), size=(976, 976), mode="bilinear", align_corners=False)[0]
    assert out.shape == (3, 976, 976)
    assert (out.float() - expected.round()).abs().max() <= 1


def test_restore_logits_resizes_logits_then_probabilities() -> None:
    logits = torch.randn(1, 8, 8) * 5
    out = restore_logits(logits, (8, 8), (20, 12))
    expected = F.interpolate(logits[None], size=(20, 12), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, expected)
    assert restore_logits(torch.ones(1, 10, 10), (6, 7), (6, 7)).shape == (1, 6, 7)  # crop only


# --- the thresholds and scores ---------------------------------------------------------------------------


def test_adaptive_threshold_clamps_one_minus_score() -> None:
    scores = torch.tensor([0.0, 0.2, 0.5, 0.65, 1.0])
    torch.testing.assert_close(miml_adaptive_threshold(scores, 5), torch.tensor([0.7, 0.7, 0.5, 0.35, 0.3]))
    torch.testing.assert_close(miml_adaptive_threshold(None, 3), torch.full((3,), 0.5))


def _official_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float, float]:
    """The arithmetic of the authors' *_infer.py loop, on 0/1 arrays."""
    i2 = (pred * gt).sum()
    u2 = pred.sum() + gt.sum() - i2
    p, r = i2 / (pred.sum() + 1e-6), i2 / (gt.sum() + 1e-6)
    return i2 / (u2 + 1e-6), p, r, 2 * p * r / (p + r + 1e-8)


def test_scores_per_image_at_each_images_threshold() -> None:
    gt = torch.zeros(2, 1, 4, 4)
    gt[:, :, :2, :2] = 1  # 4 manipulated pixels each
    prob = torch.full((2, 1, 4, 4), 0.1)
    prob[:, :, 0, :] = 0.6  # 2 TP + 2 FP
    prob[:, :, 1, 0] = 0.4  # a TP only under a threshold below 0.4
    scores = torch.tensor([0.2, 0.9])  # thresholds 0.7 (nothing predicted) and 0.3 (0.6 and 0.4 pixels)
    m = MIMLOfficialMetrics()
    rows = m.per_image(prob, gt, scores)
    assert [r["threshold"] for r in rows] == pytest.approx([0.7, 0.3])
    assert rows[0]["f1"] == 0.0 and rows[0]["iou"] == 0.0 and rows[0]["precision"] == 0.0
    pred = ((prob[1, 0] > 0.3).float()).numpy()
    iou, p, r, f1 = _official_scores(pred, gt[1, 0].numpy())
    assert (rows[1]["iou"], rows[1]["precision"], rows[1]["recall"], rows[1]["f1"]) == pytest.approx((iou, p, r, f1))
    assert (iou, p, r) == pytest.approx((3 / 6, 3 / 5, 3 / 4), rel=1e-5)  # 5 predicted, 4 true, 3 in both
    m.update(prob, gt, scores)
    out = m.compute()
    assert int(out["n_images"]) == 2
    assert float(out["f1"]) == pytest.approx((0 + f1) / 2, rel=1e-6)
    assert float(out["threshold"]) == pytest.approx(0.5)


def test_strictly_above_the_threshold_and_fixed_sets() -> None:
    gt = torch.ones(1, 1, 2, 2)
    prob = torch.full((1, 1, 2, 2), 0.5)
    assert MIMLOfficialMetrics().per_image(prob, gt, None)[0]["f1"] == 0.0  # 0.5 is not > 0.5
    fixed = MIMLOfficialMetrics(fixed_threshold=0.5)  # IMD2020: 0.5 whatever the score
    assert fixed.per_image(prob + 0.01, gt, torch.tensor([0.0]))[0]["threshold"] == 0.5
    assert fixed.per_image(prob + 0.01, gt, torch.tensor([0.0]))[0]["f1"] == pytest.approx(1.0, abs=1e-5)


def test_authentic_images_and_ignored_pixels_do_not_count() -> None:
    m = MIMLOfficialMetrics()
    m.update(torch.full((1, 1, 3, 3), 0.9), torch.zeros(1, 1, 3, 3), torch.tensor([0.9]))  # authentic
    assert int(m.compute()["n_images"]) == 0 and np.isnan(float(m.compute()["f1"]))
    target = torch.ones(1, 1, 2, 2)
    target[..., 0, 0] = -1.0  # IGNORE
    prob = torch.ones(1, 1, 2, 2) * 0.9
    prob[..., 0, 0] = 0.0
    m.update(prob, target, torch.tensor([0.9]))
    assert float(m.compute()["f1"]) == pytest.approx(1.0, abs=1e-5)


# --- the task and the results table -----------------------------------------------------------------------


def test_task_applies_the_policy_per_set() -> None:
    from webiml.models.apsc_net import apsc_net
    from webiml.tasks.iml import IMLTask

    with pytest.raises(ValueError, match="threshold_policy"):
        IMLTask(net=apsc_net("tiny"), threshold_policy="adaptive")
    task = IMLTask(net=apsc_net("tiny"), threshold_policy="miml_adaptive", fixed_threshold_sets=("imd2020",))
    for name in ("casia1", "imd2020", "imd2020@jpeg70"):
        task.eval_metrics[f"test__{name}"] = task.configure_metrics()
    task.apply_fixed_threshold_sets()
    assert task.eval_metrics["test__casia1"]["miml"].fixed_threshold is None
    assert task.eval_metrics["test__imd2020"]["miml"].fixed_threshold == 0.5
    assert task.eval_metrics["test__imd2020@jpeg70"]["miml"].fixed_threshold == 0.5
    assert "miml" not in IMLTask(net=apsc_net("tiny")).configure_metrics()

    # update_metrics: logits restored (no antialiasing) to the original size, the image score sets the threshold
    metrics = task.eval_metrics["test__casia1"]
    logits = torch.full((1, 1, 8, 8), -3.0)
    logits[..., :4, :] = 0.0  # probability 0.5 in the top half
    out = IMLOutput(mask_logits=logits, image_logits=torch.tensor([2.0]))  # score 0.88 -> threshold 0.3
    target = torch.zeros(1, 16, 16)
    target[:, :8] = 1
    batch = {"valid_size": torch.tensor([[8, 8]]), "orig_size": torch.tensor([[16, 16]]), "mask_orig": [target],
             "label": torch.tensor([1.0]), "path": ["x.png"]}
    task.update_metrics("test", metrics, out, batch, {})
    results = task.compute_metrics(metrics)
    assert results["miml_threshold"] == pytest.approx(0.3, abs=1e-6)
    assert results["miml_f1"] > 0.9 and results["pixel_f1"] < results["miml_f1"]  # 0.5 is not >= 0.5 + ... at 0.5
    assert task.last_test_batch["miml"][0]["threshold"] == pytest.approx(0.3, abs=1e-6)


def test_results_table_names_the_protocol_and_the_authors_columns() -> None:
    from webiml.results import collect_rows, markdown_table, results_markdown

    metrics = {"test/casia1/pixel_f1": 0.5, "test/casia1/miml_f1": 0.6, "test/casia1/miml_iou": 0.4,
               "test/imd2020/pixel_f1": 0.3, "test/imd2020/miml_f1": 0.2, "test/imd2020/miml_iou": 0.1}
    rows = collect_rows(metrics, names=["casia1", "imd2020"])
    assert rows[-1]["set"] == "mean" and rows[-1]["miml_f1"] == pytest.approx(0.4)
    table = markdown_table(rows)
    assert "F1 (authors)" in table and "IoU (authors)" in table
    page = results_markdown(rows, {"protocol": "miml_official", "threshold_policy": "miml_adaptive"})
    assert "miml_official" in page and "(authors) columns" in page
    plain = markdown_table(collect_rows({"test/casia1/pixel_f1": 0.5}))
    assert "(authors)" not in plain


def test_webiml_test_with_the_official_protocol(tmp_path: Path) -> None:
    """A tiny `webiml test` run under the protocol: both policies reach results.md, which names them."""
    import lightning as L

    from webiml.data.datamodule import IMLDataModule
    from webiml.data.manifest import ManifestRecord, write_manifest
    from webiml.models.apsc_net import apsc_net
    from webiml.results import ResultsTable
    from webiml.tasks.iml import IMLTask

    rng = np.random.default_rng(0)
    records = []
    for i, fmt in enumerate(("JPEG", "PNG")):
        image = tmp_path / f"{i}.{fmt.lower()}"
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(image, format=fmt)
        mask = np.zeros((40, 56), np.uint8)
        mask[10:20, 10:30] = 255
        mask[0, 0] = 3  # non-zero: manipulated under the authors' `mask > 0` (eval_mask_band [0, 1])
        Image.fromarray(mask).save(tmp_path / f"{i}_mask.png")
        records.append(ManifestRecord(str(image), str(tmp_path / f"{i}_mask.png"), 1, "test"))
    write_manifest(tmp_path / "m.jsonl", records)
    dm = IMLDataModule(test={"casia1": str(tmp_path / "m.jsonl"), "imd2020": str(tmp_path / "m.jsonl")},
                       eval_policy="miml_official", eval_mask_band=(0, 1), protocol="miml_official", num_workers=0,
                       pin_memory=False)
    torch.manual_seed(0)
    task = IMLTask(net=apsc_net("tiny"), threshold_policy="miml_adaptive")
    table = ResultsTable(out_dir=str(tmp_path / "out"), print_table=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[table], default_root_dir=str(tmp_path))
    (metrics,) = [trainer.test(task, datamodule=dm, verbose=False)[0]]
    assert {"test/casia1/miml_f1", "test/imd2020/miml_threshold"} <= set(metrics)
    assert metrics["test/imd2020/miml_threshold"] == pytest.approx(0.5)
    assert metrics["test/casia1/pixel_n_manipulated"] == 2
    page = (tmp_path / "out" / "results.md").read_text()
    assert "miml_official" in page and "F1 (authors)" in page and "976x976" in page
    with pytest.raises(ValueError, match="evaluation policy"):
        IMLDataModule(eval_policy="official")


def test_eval_mask_band_makes_any_nonzero_value_manipulated(tmp_path: Path) -> None:
    """The authors score against `mask > 0`: eval_mask_band [0, 1] replaces every evaluation record's band."""
    from webiml.data.datamodule import IMLDataModule
    from webiml.data.datasets import load_sample
    from webiml.data.manifest import ManifestRecord, write_manifest

    _write(tmp_path / "i.png", 4, 4, "PNG")
    mask = np.zeros((4, 4), np.uint8)
    mask[0, :] = (3, 100, 200, 255)
    Image.fromarray(mask).save(tmp_path / "m.png")
    write_manifest(tmp_path / "t.jsonl", [ManifestRecord(str(tmp_path / "i.png"), str(tmp_path / "m.png"), 1)])
    plain = IMLDataModule()._read_eval([str(tmp_path / "t.jsonl")])
    assert load_sample(plain[0])["mask"][0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]  # webiml's binarisation at 128
    official = IMLDataModule(eval_mask_band=(0, 1))._read_eval([str(tmp_path / "t.jsonl")])
    assert load_sample(official[0])["mask"][0, 0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert load_sample(official[0])["mask"][0, 1].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="eval_mask_band"):
        IMLDataModule(eval_mask_band=(5, 5))
