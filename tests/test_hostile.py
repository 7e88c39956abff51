"""Hostile inputs: decompression bombs, EXIF orientation, bad output locations, odd data trees and manifests,
untrusted checkpoints and configs, non-finite numbers. Every hostile input is made here, in the test."""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from webiml.cli import main
from webiml.io import DEFAULT_MAX_PIXELS, ImageReadError, max_pixels, read_image, read_mask, set_max_pixels


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A small PNG whose header declares ``width`` x ``height`` pixels (its pixel data is an 8x8 image's):
    a reader that trusts the header and decodes it is the target of a decompression bomb."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def oriented_jpeg(path: Path, array: np.ndarray, orientation: int) -> Path:
    """A JPEG of ``array`` (as stored) with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95, exif=exif)
    return path


# --------------------------------------------------------------------------------------------------
# decompression bombs


def test_default_pixel_limit_fits_the_largest_benchmark_images(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBIML_MAX_PIXELS", raising=False)
    assert max_pixels() == DEFAULT_MAX_PIXELS >= 5616 * 3744  # NIST16's largest
    monkeypatch.setenv("WEBIML_MAX_PIXELS", "1000")
    assert max_pixels() == 1000
    monkeypatch.setenv("WEBIML_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="WEBIML_MAX_PIXELS"):
        max_pixels()


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_bomb_is_refused_from_its_header(tmp_path: Path, reader) -> None:
    path = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageReadError, match=r"bomb\.png: image is .*over the limit") as err:
        reader(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ImageReadError, match=r"image is 20000x20000 = 400\.0 Mpx, over the limit of 40 Mpx"):
        reader(bomb_png(tmp_path / "b400.png", 20000, 20000))  # under PIL's own guard: only a warning there
    # a moderate size declared in the header is refused under a lower limit, before any decoding
    path = bomb_png(tmp_path / "big.png", 3000, 3000)
    set_max_pixels(1_000_000)
    try:
        with pytest.raises(ImageReadError, match="over the limit of 1 Mpx"):
            reader(path)
    finally:
        set_max_pixels(None)
    assert reader(bomb_png(tmp_path / "ok.png", 8, 8)).shape[:2] == (8, 8)


def test_localize_skips_a_bomb_and_localizes_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from webiml.models import SmpIML

    torch.manual_seed(0)
    SmpIML(arch="FPN").save_pretrained(tmp_path / "model")
    folder = tmp_path / "imgs"
    bomb_png(folder / "a_bomb.png")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(folder / "good.png")
    out = tmp_path / "out"
    assert main(["localize", str(folder), "-m", str(tmp_path / "model"), "-o", str(out), "--workers", "0"]) == 1
    assert "a_bomb.png" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["name"] for r in rows] == ["good"]
    assert "over the limit" in json.loads((out / "scores.json").read_text())["failed"][0]["error"]


def test_dataset_skips_a_bomb(tmp_path: Path) -> None:
    from webiml.data.datasets import ManifestDataset
    from webiml.data.manifest import ManifestRecord

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(good)
    records = [ManifestRecord(str(bomb_png(tmp_path / "bomb.png")), label=0), ManifestRecord(str(good), label=0)]
    assert ManifestDataset(records, train=False)[0] is None
    torch.manual_seed(0)
    sample = ManifestDataset(records, train=True)[0]  # another sample takes the bomb's place
    assert sample["path"] == str(good)
    mask_bomb = [ManifestRecord(str(good), mask=str(bomb_png(tmp_path / "mbomb.png")), label=1)]
    assert ManifestDataset(mask_bomb, train=False)[0] is None


def test_annotate_records_a_bomb_pair_and_reruns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    pairs = tmp_path / "pairs"
    for name in ("p00", "p01"):
        (pairs / name).mkdir(parents=True)
        img = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(img).save(pairs / name / "original.png")
        Image.fromarray(img).save(pairs / name / "forged.png")
    bomb_png(pairs / "p01" / "forged.png")
    out = tmp_path / "out"
    args = ["annotate", str(pairs), "-o", str(out), "--annotator", "baseline", "--no-progress", "--workers", "0"]
    assert main(args) == 0
    rows = {r["pair_id"]: r for r in map(json.loads, (out / "annotations.jsonl").read_text().splitlines())}
    assert rows["p00"]["status"] == "ok" and rows["p01"]["status"] == "failed"
    assert "over the limit" in rows["p01"]["error"]
    capsys.readouterr()
    assert main(args) == 0  # the rerun neither dies on the bomb nor retries it
    assert "0 this run" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pil(tmp_path: Path, orientation: int) -> None:
    stored = np.random.default_rng(orientation).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    stored = np.repeat(np.repeat(stored, 4, 0), 4, 1)  # blocks: JPEG keeps them recognisable
    path = oriented_jpeg(tmp_path / "x.jpg", stored, orientation)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = read_image(path)
    assert got.shape == expected.shape and np.array_equal(got, expected)
    assert read_image(path, orient=False).shape == stored.shape


def test_dataset_turns_image_and_mask_together(tmp_path: Path) -> None:
    from webiml.data.datasets import load_sample
    from webiml.data.manifest import ManifestRecord

    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:16, :32] = 255  # a bright block top-left in the stored frame
    mask = np.zeros((64, 96), np.uint8)
    mask[:16, :32] = 255  # its mask, written in the stored frame (as EXIF-unaware tools do)
    image_path = oriented_jpeg(tmp_path / "x.jpg", stored, 6)  # displayed rotated 90 degrees clockwise: 64 wide, 96 high
    Image.fromarray(mask).save(tmp_path / "m.png")
    sample = load_sample(ManifestRecord(str(image_path), mask=str(tmp_path / "m.png"), label=1))
    assert tuple(sample["image"].shape) == (3, 96, 64) and tuple(sample["mask"].shape) == (1, 96, 64)
    bright = sample["image"][0] > 128
    assert torch.equal(bright, sample["mask"][0] > 0.5)  # the mask still covers the block
    # a mask already drawn on the displayed image is taken as it is
    Image.fromarray(np.rot90(mask, -1).copy()).save(tmp_path / "m_shown.png")
    sample = load_sample(ManifestRecord(str(image_path), mask=str(tmp_path / "m_shown.png"), label=1))
    assert torch.equal(sample["image"][0] > 128, sample["mask"][0] > 0.5)


def test_localize_map_has_the_displayed_size(tmp_path: Path) -> None:
    from webiml.models import SmpIML

    torch.manual_seed(0)
    SmpIML(arch="FPN").save_pretrained(tmp_path / "model")
    oriented_jpeg(tmp_path / "imgs" / "turned.jpg", np.full((64, 96, 3), 100, np.uint8), 6)
    out = tmp_path / "out"
    assert main(["localize", str(tmp_path / "imgs"), "-m", str(tmp_path / "model"), "-o", str(out), "--workers", "0"]) == 0
    assert Image.open(out / "turned_prob.png").size == (64, 96)


def test_float_tiff_with_nan_pixels_is_reported(tmp_path: Path) -> None:
    arr = np.zeros((8, 8), np.float32)
    arr[2, 3] = np.nan
    arr[4, 4] = np.inf
    Image.fromarray(arr, mode="F").save(tmp_path / "nan.tif")
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError, match=r"nan\.tif: .*2 non-finite"):
            reader(tmp_path / "nan.tif")


# --------------------------------------------------------------------------------------------------
# localize output location


def _one_image(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("where", ["existing_file", "under_a_file"])
def test_localize_refuses_an_unusable_output_before_working(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    (tmp_path / "taken").write_text("not a folder")
    out = tmp_path / "taken" if where == "existing_file" else tmp_path / "taken" / "sub"
    # a model that does not exist: the output is checked first, so its error is the one reported
    status = main(["localize", str(_one_image(tmp_path)), "-m", str(tmp_path / "no-model"), "-o", str(out), "--workers", "0"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert status == 2 and len(printed) == 1
    assert printed[0].startswith(f"error: {out}") and (tmp_path / "taken").read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0, reason="root writes anywhere")
def test_localize_refuses_a_read_only_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for out in (ro, ro / "sub"):
            status = main(["localize", str(_one_image(tmp_path)), "-m", str(tmp_path / "no-model"), "-o", str(out)])
            assert status == 2 and capsys.readouterr().out.startswith(f"error: {out}: cannot write")
    finally:
        ro.chmod(0o755)


def test_localize_refuses_an_unwritable_folder_simulated(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check where the tests run as root (who writes anywhere): the folder refuses a file."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    out = tmp_path / "out"
    status = main(["localize", str(_one_image(tmp_path)), "-m", str(tmp_path / "no-model"), "-o", str(out)])
    assert status == 2 and capsys.readouterr().out == f"error: {out}: cannot write the results there (Permission denied)\n"


# --------------------------------------------------------------------------------------------------
# data: trees, manifests


def test_index_does_not_follow_link_loops_or_links_out_of_the_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from webiml.data.manifest import read_manifest
    from webiml.data.sources.base import find_dirs, list_files

    root = tmp_path / "set"
    img = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    (root / "Tp" / "sub").mkdir(parents=True)
    (root / "Gt").mkdir()
    Image.fromarray(img).save(root / "Tp" / "a.png")
    Image.fromarray(img).save(root / "Tp" / "sub" / "b.png")
    Image.fromarray(mask).save(root / "Gt" / "a.png")
    Image.fromarray(mask).save(root / "Gt" / "b.png")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(img).save(outside / "z.png")
    (root / "Tp" / "up").symlink_to("..")  # a loop through the parent
    (root / "Tp" / "sub" / "again").symlink_to("..")  # a loop inside the tree
    (root / "Tp" / "self").symlink_to(".")
    (root / "Tp" / "out").symlink_to(outside)  # out of the tree
    (root / "Tp" / "twice").symlink_to("sub")  # a second way into a folder already listed
    assert [p.name for p in list_files(root / "Tp")] == ["a.png", "b.png"]
    assert [p.relative_to(root).as_posix() for p in find_dirs(root, "*", depth=6)] == [".", "Gt", "Tp", "Tp/sub"]  # each once
    out = tmp_path / "m.jsonl"
    assert main(["data", "index", "folder", str(root), "-o", str(out), "--workers", "1"]) == 0
    assert sorted(Path(r.image).name for r in read_manifest(out)) == ["a.png", "b.png"]


@pytest.mark.parametrize("weight", ["NaN", "Infinity", "-Infinity", "-1"])
def test_manifest_refuses_non_finite_or_negative_weights(tmp_path: Path, weight: str) -> None:
    from webiml.data.manifest import ManifestError, read_manifest

    path = tmp_path / "m.jsonl"
    path.write_text(f'{{"image": "a.png", "label": 0}}\n{{"image": "b.png", "label": 0, "weight": {weight}}}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: 'weight' must be a finite number >= 0"):
        read_manifest(path)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(f"image,label,weight\na.png,0,{weight.lower()}\n")
    with pytest.raises(ManifestError, match=r"m\.csv:2: 'weight'"):
        read_manifest(csv_path)


@pytest.mark.parametrize("label", ["0.5", "2", "NaN", '"x"', "true"])
def test_manifest_refuses_labels_other_than_0_or_1(tmp_path: Path, label: str) -> None:
    from webiml.data.manifest import ManifestError, read_manifest

    path = tmp_path / "m.jsonl"
    path.write_text(f'{{"image": "a.png", "label": {label}}}\n')
    if label == "true":  # JSON true is 1
        assert read_manifest(path)[0].label == 1
        return
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: (bad )?'label'"):
        read_manifest(path)


def test_manifest_that_is_not_text_is_one_named_error(tmp_path: Path) -> None:
    from webiml.data.manifest import ManifestError, read_manifest

    (tmp_path / "m.jsonl").write_bytes(b'{"image": "a.png"}\n\xff\xfe\x00garbage\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl: not UTF-8"):
        read_manifest(tmp_path / "m.jsonl")
    (tmp_path / "deep.jsonl").write_text("[" * 100000 + "]" * 100000 + "\n")
    with pytest.raises(ManifestError, match=r"deep\.jsonl:1: invalid JSON"):
        read_manifest(tmp_path / "deep.jsonl")
    (tmp_path / "m.csv").write_bytes(b"image,label\na.png\x00,0\n")
    try:
        read_manifest(tmp_path / "m.csv")  # Python >= 3.11 reads NUL bytes in CSV
    except ManifestError as err:
        assert "m.csv" in str(err)


@pytest.mark.parametrize("which", ["train", "val"])
def test_empty_manifest_is_named_before_training(tmp_path: Path, tiny_dataset: Path, which: str) -> None:
    from webiml.data.datamodule import IMLDataModule
    from webiml.data.manifest import ManifestError

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    sets = {"train": str(tiny_dataset / "train" / "manifest.jsonl"), "val": str(tiny_dataset / "val" / "manifest.jsonl")}
    sets[which] = str(empty)
    dm = IMLDataModule(train=sets["train"], val=sets["val"], batch_size=2)
    with pytest.raises(ManifestError, match=rf"^{empty}: the manifest has no samples$"):
        dm.setup("fit")


def test_01_mask_is_read_as_0_255_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from webiml.data.datasets import load_sample
    from webiml.data.manifest import ManifestRecord

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 1
    Image.fromarray(mask).save(tmp_path / "m01.png")
    with caplog.at_level("WARNING", logger="webiml.data.datasets"):
        sample = load_sample(ManifestRecord(str(tmp_path / "a.png"), mask=str(tmp_path / "m01.png"), label=1))
    assert float(sample["mask"].sum()) == 32.0  # the top half is manipulated, not an all-zero target
    assert any("m01.png: a 0/1 mask" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------------
# checkpoints and configs


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from webiml.models import SmpIML

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("saved") / "fpn"
    SmpIML(arch="FPN").save_pretrained(out)
    return out


def _copy_with_config(saved: Path, dest: Path, config_text: str | None = None, edit=None) -> Path:
    import shutil

    shutil.copytree(saved, dest)
    if edit is not None:
        cfg = json.loads((dest / "config.json").read_text())
        edit(cfg)
        config_text = json.dumps(cfg)
    if config_text is not None:
        (dest / "config.json").write_text(config_text)
    return dest


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object, got list"),
    ('"FPN"', "must hold a JSON object, got str"),
    ('{"architecture": ["SmpIML"]}', "'architecture' must be a class name"),
    ("\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), "not valid JSON"),
])
def test_bad_config_json_is_one_named_line(saved_model: Path, tmp_path: Path, text: str, message: str) -> None:
    from webiml.hub import CheckpointError, from_pretrained

    folder = _copy_with_config(saved_model, tmp_path / "m", text)
    with pytest.raises(CheckpointError, match=message) as err:
        from_pretrained(folder)
    assert "\n" not in str(err.value) and "m" in str(err.value)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.update(arch="NoSuchArch"), r"\(key 'arch' = 'NoSuchArch'\)"),
    (lambda c: c.update(arch_kwargs={"decoder_pyramid_channels": -5}), "config does not build a SmpIML"),
    (lambda c: c.update(arch_kwargs={"decoder_pyramid_channels": 10**7}), "billion parameters"),
    (lambda c: c.update(encoder="tu-hf-hub:evil/repo"), r"key 'encoder' = 'tu-hf-hub:evil/repo' names something to fetch"),
    (lambda c: c.update(arch_kwargs={"x": ["local-dir:/etc"]}), r"key 'arch_kwargs.x\[0\]'"),
])
def test_bad_config_values_are_one_named_line(saved_model: Path, tmp_path: Path, edit, message: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from webiml.hub import CheckpointError, from_pretrained

    def no_network(*args, **kwargs):
        raise AssertionError("a checkpoint's config made a network request")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    folder = _copy_with_config(saved_model, tmp_path / "m", edit=edit)
    with pytest.raises(CheckpointError, match=message) as err:
        from_pretrained(folder)
    assert "\n" not in str(err.value) and str(folder / "config.json") in str(err.value)


def test_safetensors_metadata_with_bad_json_is_one_named_line(saved_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from webiml.hub import CheckpointError, from_pretrained

    state = load_file(str(saved_model / "model.safetensors"))
    cases = [({"webiml_config": "{oops"}, "invalid JSON"), ({"webiml_config": "[1]"}, "not a JSON object"),
             ({"webiml_thresholds": "nan-ish{"}, "invalid JSON"), ({"webiml_architecture": "os.system"}, "os.system")]
    for meta, message in cases:
        path = tmp_path / "w.safetensors"
        save_file(state, str(path), metadata={"webiml_architecture": "SmpIML", "webiml_config": "{}", **meta})
        with pytest.raises(CheckpointError, match=message):
            from_pretrained(path)


def test_apsc_backbone_weights_path_in_a_config_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config naming a file (torch.load-ed at construction) or a timm name (downloaded) as backbone weights."""
    from webiml.hub import build_model

    loaded: list[str] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loaded.append(str(a[0])) or {})
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"not really a pickle")
    config = {"size": "tiny", "backbone_weights": str(evil)}
    model = build_model("APSCNet", config, where="evil/config.json")
    assert loaded == [] and model.config.get("backbone_weights") is None


def test_non_finite_weights_are_refused_at_save_and_load(saved_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from webiml.hub import CheckpointError, from_pretrained
    from webiml.models import SmpIML

    model = SmpIML.from_pretrained(saved_model)
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    with pytest.raises(ValueError, match="hold NaN/Inf values"):
        model.save_pretrained(tmp_path / "nan")
    assert not (tmp_path / "nan" / "model.safetensors").exists()
    folder = _copy_with_config(saved_model, tmp_path / "inf")
    state = load_file(str(folder / "model.safetensors"))
    key = sorted(state)[3]
    state[key] = torch.full_like(state[key], float("inf"))
    with __import__("safetensors").safe_open(str(saved_model / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    save_file(state, str(folder / "model.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: 1 tensor\(s\) hold NaN/Inf values, e\.g\. {key}"):
        from_pretrained(folder)


# --------------------------------------------------------------------------------------------------
# numerics: a non-finite loss in training


def _nan_weight_loader(tmp_path: Path):
    from torch.utils.data import DataLoader

    from webiml.data.datasets import ManifestDataset, collate_skip_broken
    from webiml.data.manifest import ManifestRecord

    records = []
    for i in range(4):
        path = tmp_path / f"s{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        # a record made in memory (the manifest reader refuses NaN weights): sample 2's weight is NaN
        records.append(ManifestRecord(str(path), label=0, weight=float("nan") if i == 2 else 1.0))
    return DataLoader(ManifestDataset(records, train=True), batch_size=2, shuffle=False, collate_fn=collate_skip_broken)


def _tiny_task(**kwargs):
    from webiml.models import SmpIML
    from webiml.tasks.iml import IMLTask

    torch.manual_seed(0)
    return IMLTask(SmpIML(arch="FPN", arch_kwargs={"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32}),
                   lr=1e-3, schedule="constant", **kwargs)


def test_non_finite_loss_stops_the_run_naming_the_samples(tmp_path: Path) -> None:
    import lightning as L

    from webiml.tasks.base import NonFiniteLossError

    task = _tiny_task()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(.*\) at epoch 0, global step 1, batch 1; samples: .*s2\.png, .*s3\.png"):
        trainer.fit(task, train_dataloaders=_nan_weight_loader(tmp_path))
    with pytest.raises(ValueError, match="on_nonfinite"):
        _tiny_task(on_nonfinite="ignore")


def test_non_finite_loss_skip_keeps_the_weights_finite(tmp_path: Path) -> None:
    import lightning as L

    task = _tiny_task(on_nonfinite="skip")
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.warns(RuntimeWarning, match=r"skipping the batch: non-finite training loss .*s2\.png"):
        trainer.fit(task, train_dataloaders=_nan_weight_loader(tmp_path))
    assert all(bool(torch.isfinite(p).all()) for p in task.net.parameters())


# --------------------------------------------------------------------------------------------------
# interrupted runs


_KILLER = """
import os, signal
from lightning.pytorch.callbacks import Callback

class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:  # before ModelCheckpoint's turn: last.ckpt is the step before
            os.kill(os.getpid(), signal.SIGKILL)
"""


def _online_data(tmp_path: Path, run: str) -> dict:
    """Forgeries generated on the fly from 20 small photos (4 steps of 4 an epoch, as the manifest data)."""
    photos = tmp_path / "photos"
    if not photos.exists():
        photos.mkdir()
        rng = np.random.default_rng(0)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((96, 72), Image.Resampling.BICUBIC).save(photos / f"p{i:02d}.jpg")
    return {"class_path": "webiml.data.online.OnlineSyntheticIMLDataModule", "init_args": {
        "photos": str(photos), "root": str(tmp_path / run / "online-data"), "samples_per_epoch": 16, "gen_size": 64, "size": 64,
        "num_val": 2, "num_test": 0, "batch_size": 4, "num_workers": 2, "crop_size": 48, "scale": [0.75, 1.25], "jpeg_p": 0.5,
        "pin_memory": False}}


def _fit_config(tmp_path: Path, data: Path, run: str, kill_at: int | None, online: bool = False) -> Path:
    import yaml

    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(tmp_path / run / "ckpt"), "every_n_train_steps": 1, "save_top_k": 0, "save_last": True}}]
    if kill_at is not None:
        callbacks.insert(0, {"class_path": "killer.KillAt", "init_args": {"step": kill_at}})
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 3, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path / run), "callbacks": callbacks},
        "model": {"class_path": "webiml.tasks.iml.IMLTask", "init_args": {
            "lr": 0.01, "schedule": "constant",
            "net": {"class_path": "webiml.models.SmpIML", "init_args": {
                "arch": "FPN", "dropout": 0.3,
                "arch_kwargs": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32, "decoder_dropout": 0.3}}},
            "gpu_augment": {"class_path": "webiml.data.transforms.GpuAugment"}}},
        "data": _online_data(tmp_path, run) if online else {"class_path": "webiml.data.datamodule.IMLDataModule", "init_args": {
            "train": str(data / "train" / "manifest.jsonl"), "batch_size": 4, "num_workers": 2, "crop_size": 48,
            "scale": [0.75, 1.25], "jpeg_p": 0.5}},
    }
    path = tmp_path / f"{run}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("online", [False, True], ids=["manifest", "online"])
def test_fit_killed_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(tmp_path: Path, tiny_dataset: Path, online: bool) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "killer.py").write_text(_KILLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), str(tmp_path)]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def fit(config: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "webiml", "fit", "--config", str(config), *extra], env=env,
                              capture_output=True, text=True, timeout=300)

    whole = fit(_fit_config(tmp_path, tiny_dataset, "whole", None, online))
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = fit(_fit_config(tmp_path, tiny_dataset, "parts", 6, online))  # 4 steps an epoch: killed in the middle of epoch 1
    assert killed.returncode == -9, killed.stderr[-3000:]
    first = torch.load(tmp_path / "parts" / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert first["global_step"] == 5
    resumed = fit(_fit_config(tmp_path, tiny_dataset, "parts", None, online), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "whole" / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "parts" / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    diffs = {k: float((a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max()) for k in a["state_dict"]}
    assert max(diffs.values()) == 0.0, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]


def test_seeded_sampler_keeps_the_order_and_skips_once() -> None:
    from webiml.data.samplers import SourceBalancedSampler

    sources = ["a"] * 5 + ["b"] * 3
    plain = SourceBalancedSampler(sources, seed=4)
    seeded = SourceBalancedSampler(sources, seed=4, seeded=True)
    for s in (plain, seeded):
        s.set_epoch(2)
    pairs = list(seeded)
    assert [i for i, _ in pairs] == list(plain) and len({seed for _, seed in pairs}) == len(pairs)
    seeded.skip_next(3)
    assert list(seeded) == pairs[3:] and list(seeded) == pairs  # the skip applies to one pass only


def test_save_pretrained_over_a_folder_changes_it_as_one_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    import webiml.hub
    from webiml.hub import from_pretrained
    from webiml.models import SmpIML

    torch.manual_seed(0)
    old = SmpIML(arch="FPN", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    folder = tmp_path / "model"
    old.save_pretrained(folder)
    (folder / "NOTES.txt").write_text("the user's own file")
    (folder / ".model.safetensors.x1.tmp").write_bytes(b"left by a killed write")  # a killed atomic write
    (tmp_path / ".model.saving-x2").mkdir()  # a killed save
    torch.manual_seed(1)
    new = SmpIML(arch="FPN")  # other weights and other normalisation

    # killed after the weights were written, before config.json (KeyboardInterrupt: a BaseException, as a kill)
    real = webiml.hub.atomic_write_text

    def die_on_config(path, text):
        if Path(path).name == "config.json":
            raise KeyboardInterrupt
        return real(path, text)

    monkeypatch.setattr(webiml.hub, "atomic_write_text", die_on_config)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(folder)
    monkeypatch.undo()
    back = from_pretrained(folder)  # the old model, whole: its weights with its normalisation
    assert torch.allclose(back.input_mean, old.input_mean)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), old.state_dict().values(), strict=True))

    new.save_pretrained(folder)
    back = from_pretrained(folder)
    assert torch.allclose(back.input_mean, new.input_mean)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), new.state_dict().values(), strict=True))
    assert (folder / "NOTES.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left
    assert sorted(p.name for p in folder.iterdir()) == ["NOTES.txt", "README.md", "config.json", "model.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o666 & ~umask


def test_pair_training_skips_a_bomb_pair(tmp_path: Path) -> None:
    from webiml.data.pair_datamodule import PairDataset
    from webiml.data.pairs import PairCategory, PairRecord
    from webiml.io import ImageReadError

    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "o.png")
    Image.fromarray(img).save(tmp_path / "f.png")
    records = [PairRecord(str(tmp_path / "o.png"), str(bomb_png(tmp_path / "bomb.png")), category=PairCategory.SDG),
               PairRecord(str(tmp_path / "o.png"), str(tmp_path / "f.png"), category=PairCategory.SDG)]
    torch.manual_seed(0)
    item = PairDataset(records, mode="classifier", size=32, train=True)[0]
    assert int(item["index"]) == 1  # the good pair took the bomb's place
    with pytest.raises(ImageReadError, match=r"bomb\.png: image is .*over the limit"):
        PairDataset(records, mode="classifier", size=32, train=False)._load(0)
    # in evaluation the bomb is reported and left out (collate_pairs drops the None)
    assert PairDataset(records, mode="classifier", size=32, train=False)[0] is None
