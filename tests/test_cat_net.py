"""CAT-Net (``webiml convert cat-net``), its JPEG DCT input (webiml.jpeg) and the Localizer / localize path, offline.

``fixtures/cat_net_keys.json.gz`` holds the key names and shapes (no weights) of the authors' ``CAT_Net`` built
from ``experiments/CAT_full.yaml`` (the architecture of ``CAT_full_v1/v2.pth.tar``). The full model has 114 M
parameters, so files are round-tripped with the ``tiny`` preset (same code path and key scheme) and the full
layout is checked on the meta device.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.fft import idctn

from webiml.cli import main
from webiml.convert import ConversionError, convert_cat_net
from webiml.convert.cat_net import infer_cat_net_size
from webiml.inference import Localizer, _windows
from webiml.jpeg import JpegDCT, load_with_dct, read_jpeg_dct, recompress
from webiml.models.cat_net import CATNet, dct_volume

FIXTURE = json.loads(gzip.decompress((Path(__file__).parent / "fixtures" / "cat_net_keys.json.gz").read_bytes()))

# ITU-T T.81 Annex K luminance table = libjpeg's quality-50 table (natural order).
ANNEX_K_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.float32)


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth mid-range image with texture (no clipping at 0 / 255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 60 * np.sin(xx / (9.0 + c) + c) * np.cos(yy / 13.0 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 8, base.shape), 20, 235).astype(np.uint8)


def _tiny(seed: int = 0) -> CATNet:
    torch.manual_seed(seed)
    model = CATNet(size="tiny")
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():  # non-trivial BatchNorm statistics, so eval mode is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.eval()


def _random_dct(h8: int, w8: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coef = (torch.randn(1, h8, w8, generator=g) * 8).round().to(torch.int16)
    q = torch.randint(1, 60, (1, 8, 8), generator=g).float()
    return coef, q


# -- the network --------------------------------------------------------------------------------------


def test_fixture_is_the_full_model_layout() -> None:
    with torch.device("meta"):
        model = CATNet(size="full")
    own = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert own == list(FIXTURE["state_dict"].items())  # every official key, same shape, same order
    assert len(own) == 2926
    meta_state = {k: torch.empty(s, device="meta") for k, s in FIXTURE["state_dict"].items()}
    assert infer_cat_net_size(meta_state) == "full"


def test_forward_backward_odd_size_uses_both_streams() -> None:
    model = _tiny().train()
    x = torch.randn(1, 3, 200, 328, requires_grad=True)
    coef, q = _random_dct(200, 328)
    out = model(x, coef, q)
    assert out.mask_logits.shape == (1, 1, 200, 328) and out.image_logits is None
    out.mask_logits.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name in ("conv1.weight", "dc_layer0_dil.0.weight", "dc_layer2.0.conv1.weight", "stage5.0.branches.3.0.conv1.weight",
                 "last_layer.3.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_forward_is_the_official_logits_on_the_padded_input() -> None:
    model = _tiny()
    x = torch.randn(2, 3, 37, 51)
    coef, q = _random_dct(48, 56)  # larger than the 40 x 56 grid: cropped
    coef = coef.expand(2, -1, -1)
    q = torch.cat([q, q * 2])
    with torch.no_grad():
        out = model(x, coef, q).mask_logits
        z = model.logits(torch.nn.functional.pad(x, (0, 5, 0, 3)), dct_volume(coef[:, :40, :56]), q)
        ref = torch.nn.functional.interpolate(z[:, 1:] - z[:, :1], size=(40, 56), mode="bilinear", align_corners=False)
    assert out.shape == (2, 1, 37, 51)
    torch.testing.assert_close(out, ref[..., :37, :51], rtol=0, atol=1e-6)
    assert (out[0] - out[1]).abs().max() > 1e-4  # the qtable reaches the output, per sample
    with pytest.raises(ValueError, match="does not cover"):
        model(x, coef[:, :32], q)
    with pytest.raises(ValueError, match="both dct and qtable"):
        model(x, coef, None)


def test_normalize_is_the_authors_exactly() -> None:
    model = _tiny()
    img = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, -1, -1)
    assert torch.equal(model.normalize(img), ((img.float() - 127.5) / 127.5)[None])
    torch.testing.assert_close(model.normalize(img.float() / 255), model.normalize(img), rtol=0, atol=1e-6)


def test_dct_volume_is_the_clipped_one_hot() -> None:
    coef = torch.tensor([[[0, 1, -1, 19, -19, 20, -20, 300], [-300, 5, 0, 0, 0, 0, 0, 0]]])
    vol = dct_volume(coef)
    assert vol.shape == (1, 21, 2, 8) and (vol.sum(1) == 1).all()
    assert vol[0, :, 0].argmax(0).tolist() == [0, 1, 1, 19, 19, 20, 20, 20]


# -- the JPEG input -----------------------------------------------------------------------------------


def _y_from_coefficients(dct: JpegDCT) -> np.ndarray:
    h8, w8 = dct.coef.shape
    blocks = dct.coef.reshape(h8 // 8, 8, w8 // 8, 8).transpose(0, 2, 1, 3).astype(np.float64) * dct.qtable
    pixels = idctn(blocks, type=2, axes=(2, 3), norm="ortho") + 128.0
    return pixels.transpose(0, 2, 1, 3).reshape(h8, w8)


@pytest.mark.parametrize("mode, subsampling", [("L", None), ("RGB", 2), ("RGB", 0)])
def test_dct_coefficients_decode_to_the_luminance(tmp_path: Path, mode: str, subsampling: int | None) -> None:
    img = Image.fromarray(_photo(45, 61)).convert(mode)
    path = tmp_path / "a.jpg"
    img.save(path, quality=50, **({} if subsampling is None else {"subsampling": subsampling}))
    dct = read_jpeg_dct(path)
    assert not dct.recompressed and dct.coef.dtype == np.int16
    assert dct.coef.shape[0] >= 48 and dct.coef.shape[1] >= 64 and dct.coef.shape[0] % 8 == 0
    np.testing.assert_array_equal(dct.qtable, ANNEX_K_LUMA)  # quality 50 = the standard table, natural order [u, v]
    y = _y_from_coefficients(dct)[:45, :61]
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    # libjpeg's integer IDCT and the decoder's rounding: within 1 level of the exact IDCT; RGB -> Y adds rounding
    y_decoded = rgb[..., 0] if mode == "L" else rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(y - y_decoded).max() <= (1.0 if mode == "L" else 2.0)


def test_non_jpeg_input_is_recompressed_at_quality_100(tmp_path: Path) -> None:
    arr = _photo(33, 50)
    Image.fromarray(arr).save(tmp_path / "a.png")
    rgb, dct, orientation = load_with_dct(tmp_path / "a.png")
    assert dct.recompressed and orientation == 1
    np.testing.assert_array_equal(dct.qtable, np.ones((8, 8)))  # quality 100: every step is 1
    assert np.abs(rgb.astype(int) - arr).max() <= 6 and not np.array_equal(rgb, arr)  # the JPEG's pixels, not the PNG's
    rgb2, dct2 = recompress(arr)
    np.testing.assert_array_equal(rgb, rgb2)
    np.testing.assert_array_equal(dct.coef, dct2.coef)
    # the coefficients are those of the returned pixels' JPEG: they decode back to its luminance
    y = _y_from_coefficients(dct)[:33, :50]
    assert np.abs(y - rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).max() <= 2.0
    with pytest.raises(Exception, match="cannot read the JPEG DCT"):
        read_jpeg_dct(tmp_path / "a.png")


def test_forward_without_dct_follows_the_non_jpeg_path() -> None:
    model = _tiny()
    arr = _photo(35, 42)
    rgb, dct = recompress(arr)
    with torch.no_grad():
        implicit = model.predict(arr).mask_logits
        x = model.normalize(torch.from_numpy(rgb).permute(2, 0, 1))
        explicit = model(x, torch.from_numpy(dct.coef)[None], torch.from_numpy(dct.qtable)[None]).mask_logits
    torch.testing.assert_close(implicit, explicit, rtol=0, atol=1e-6)


# -- Localizer / localize -----------------------------------------------------------------------------


def test_dct_tiles_start_on_the_8x8_grid() -> None:
    assert _windows(300, 128, 32) == [(0, 128), (96, 128), (172, 128)]  # pixel models: unchanged
    tiles = _windows(301, 128, 32, grid=8)
    assert all(s % 8 == 0 for s, _ in tiles) and tiles[-1][0] + tiles[-1][1] == 301
    assert {n for _, n in tiles[:-1]} == {128} and tiles[-1][1] > 120
    covered = np.zeros(301, bool)
    for s, n in tiles:
        covered[s:s + n] = True
    assert covered.all()


def test_localizer_passes_the_dct_whole_and_tiled(tmp_path: Path) -> None:
    model = _tiny()
    path = tmp_path / "a.jpg"
    Image.fromarray(_photo(75, 99)).save(path, quality=80)
    rgb, dct, _ = load_with_dct(path)
    whole = Localizer(model, device="cpu").localize(rgb, dct)
    with torch.no_grad():
        ref = model(model.normalize(torch.from_numpy(rgb).permute(2, 0, 1)), torch.from_numpy(dct.coef)[None],
                    torch.from_numpy(dct.qtable)[None]).mask_logits.sigmoid()[0, 0].numpy()
    np.testing.assert_allclose(whole.mask_probs, ref, atol=1e-6)
    tiled = Localizer(model, device="cpu", tile=48, overlap=16, batch_size=3).localize(rgb, dct)
    assert tiled.mask_probs.shape == (75, 99) and np.isfinite(tiled.mask_probs).all()
    # the stream batches same-size images with their coefficients, in order; no dct = re-compressed
    items = [("a", rgb, dct), ("b", rgb, dct), ("c", rgb)]
    results = dict(Localizer(model, device="cpu", batch_size=4).localize_stream(items))
    np.testing.assert_allclose(results["a"].mask_probs, ref, atol=1e-6)
    np.testing.assert_allclose(results["b"].mask_probs, ref, atol=1e-6)
    rgb_re, dct_re = recompress(rgb)
    np.testing.assert_allclose(results["c"].mask_probs, Localizer(model, device="cpu").localize(rgb_re, dct_re).mask_probs, atol=1e-6)


def test_localize_verb_reads_jpeg_coefficients_and_orients(tmp_path: Path) -> None:
    model_dir = tmp_path / "cat"
    _tiny().save_pretrained(model_dir)
    arr = _photo(40, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    Image.fromarray(arr).save(tmp_path / "rot.jpg", quality=90, exif=exif)
    Image.fromarray(arr).save(tmp_path / "flat.png")
    out = tmp_path / "out"
    assert main(["localize", str(tmp_path / "rot.jpg"), str(tmp_path / "flat.png"), "-m", str(model_dir), "-o", str(out),
                 "--workers", "0", "--report-max", "0"]) == 0
    with Image.open(out / "rot_prob.png") as im:
        assert im.size == (40, 64)  # (width, height) as shown: the map was oriented like the image
    with Image.open(out / "flat_prob.png") as im:
        assert im.size == (64, 40)


def test_evaluation_samples_carry_the_files_coefficients_when_they_still_fit(tmp_path: Path) -> None:
    """``IMLDataModule(jpeg_dct=True)``: a JPEG at its stored size keeps its own coefficients; a PNG, a resized
    JPEG (fixed policy), an EXIF-rotated one and a degraded one are re-compressed at quality 100; collate pads the
    grids; ``webiml test``'s task then feeds them to CAT-Net, and its maps are the Localizer's."""
    from webiml.data.datamodule import IMLDataModule
    from webiml.data.datasets import ManifestDataset, ManifestRecord
    from webiml.data.transforms import AttachJpegDCT, Compose, collate_iml, make_eval_transform
    from webiml.tasks.iml import IMLTask

    Image.fromarray(_photo(75, 99)).save(tmp_path / "a.jpg", quality=80)
    Image.fromarray(_photo(60, 70, seed=1)).save(tmp_path / "b.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_photo(40, 64, seed=2)).save(tmp_path / "rot.jpg", quality=90, exif=exif)
    records = [ManifestRecord(str(tmp_path / n)) for n in ("a.jpg", "b.png", "rot.jpg")]
    native = ManifestDataset(records, Compose([*make_eval_transform("native", min_side=16).transforms, AttachJpegDCT()]))
    a, b, rot = native[0], native[1], native[2]
    own = read_jpeg_dct(tmp_path / "a.jpg")
    assert a["dct"].shape == (96, 128) and torch.equal(a["dct"][:80, :104], torch.from_numpy(own.coef[:80, :104]))
    assert not a["dct"][80:].any() and torch.equal(a["qtable"], torch.from_numpy(own.qtable))
    b_rgb, b_dct = recompress(np.asarray(Image.open(tmp_path / "b.png").convert("RGB")))
    assert torch.equal(b["image"][:, :60, :70], torch.from_numpy(b_rgb).permute(2, 0, 1))
    assert torch.equal(b["dct"][:64, :72], torch.from_numpy(b_dct.coef)) and float(b["qtable"].max()) == 1.0
    assert float(rot["qtable"].max()) == 1.0  # shown rotated: the stored grid no longer fits, re-compressed
    resized = ManifestDataset(records[:1], Compose([*make_eval_transform("fixed", size=64).transforms, AttachJpegDCT()]))[0]
    assert resized["dct"].shape == (64, 64) and float(resized["qtable"].max()) == 1.0
    batch = collate_iml([a, b])
    assert batch["dct"].shape == (2, 96, 128) and not batch["dct"][1, 64:].any()

    (tmp_path / "set.jsonl").write_text(json.dumps({"image": str(tmp_path / "a.jpg"), "label": 0}) + "\n")
    dm = IMLDataModule(test={"set": str(tmp_path / "set.jsonl")}, eval_policy="native", eval_min_side=16, num_workers=0,
                       jpeg_dct=True, test_degradation="jpeg", test_degradation_levels=[70], pin_memory=False)
    dm.setup("test")
    clean, degraded = dm._datasets["test"][0][0], dm._datasets["test"][1][0]
    assert torch.equal(clean["dct"], a["dct"]) and float(degraded["qtable"].max()) == 1.0
    model = _tiny()
    task = IMLTask(net=model).eval()
    x = model.normalize(batch["image"][:1])
    with torch.no_grad():
        got = task.forward_batch({"image": x, "dct": batch["dct"][:1], "qtable": batch["qtable"][:1]}).mask_logits
        own_coefficients = model(x, torch.from_numpy(np.pad(own.coef, ((0, 16), (0, 24))))[None, :96, :128],
                                 torch.from_numpy(own.qtable)[None]).mask_logits
        without = task.forward_batch({"image": x}).mask_logits  # no coefficients: re-compressed at quality 100
    torch.testing.assert_close(got, own_coefficients)
    assert (got - without).abs().max() > 1e-5  # the coefficients reached the DCT stream


# -- converter ----------------------------------------------------------------------------------------


def _official_file(path: Path, model: CATNet) -> None:
    """The authors' tools/train.py checkpoint layout around ``model``'s (official-named) state dict, in the
    pre-zip serialisation of their PyTorch 1.1, with a numpy score as their validate() returns."""
    torch.save({"epoch": 25, "best_p_mIoU": np.float64(0.61), "state_dict": model.state_dict(),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.005, "momentum": 0.9, "params": [0, 1]}]}}, path,
               _use_new_zipfile_serialization=False)


def test_convert_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src_model = _tiny(seed=3)
    _official_file(tmp_path / "CAT_tiny.pth.tar", src_model)
    assert main(["convert", "cat-net", str(tmp_path / "CAT_tiny.pth.tar"), str(tmp_path / "conv")]) == 0
    assert "CATNet" in capsys.readouterr().out
    loaded = CATNet.from_pretrained(tmp_path / "conv").eval()
    assert loaded.config["size"] == "tiny"
    x = torch.randn(1, 3, 40, 48)
    coef, q = _random_dct(40, 48, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, coef, q).mask_logits, src_model(x, coef, q).mask_logits, rtol=0, atol=0)
    for k, v in src_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_convert_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        convert_cat_net(tmp_path / "junk.pth.tar", tmp_path / "o1")
    state = _tiny().state_dict()
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("stage5.")}}, tmp_path / "cut.pth")
    with pytest.raises(ConversionError, match="matches no CAT-Net configuration"):
        convert_cat_net(tmp_path / "cut.pth", tmp_path / "o2")
    dct_only = {k: v for k, v in state.items() if k.startswith(("dc_", "last_layer"))}
    torch.save({"state_dict": dct_only}, tmp_path / "DCT_only_v2.pth.tar")
    with pytest.raises(ConversionError, match="DCT-only"):
        convert_cat_net(tmp_path / "DCT_only_v2.pth.tar", tmp_path / "o3")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match="not a CAT-Net checkpoint"):
        convert_cat_net(tmp_path / "other.pth", tmp_path / "o4")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
