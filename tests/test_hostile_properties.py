"""Property-based tests (hypothesis) over hostile inputs: image / mask decoding (random sizes, modes, formats,
corrupted bytes), the sample transforms (random sizes, masks with soft and ignored pixels) and the manifest
reader (random rows, values and bytes). Nothing but a correct result or one named, one-line error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from webiml.data.manifest import ManifestError, read_manifest
from webiml.io import ImageReadError, read_image, read_mask

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

MODES = ["1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMATS = {"PNG": {"1", "L", "P", "LA", "RGB", "RGBA", "I;16"}, "JPEG": {"L", "RGB", "CMYK"},
           "TIFF": set(MODES), "BMP": {"1", "L", "P", "RGB"}, "WEBP": {"L", "RGB", "RGBA"}}


def _encode(mode: str, fmt: str, w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I"):
        im = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F":
        im = Image.fromarray(rng.random((h, w)).astype(np.float32), mode="F")
    else:
        bands = len(Image.new(mode, (1, 1)).getbands())
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
        assert len(im.getbands()) == bands
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt)
    except (OSError, KeyError, ValueError):  # a mode this Pillow cannot write in this format: not a webiml case
        return b""
    return buf.getvalue()


@st.composite
def image_files(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(sorted(FORMATS[fmt])))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    data = _encode(mode, fmt, w, h, draw(st.integers(0, 2**16)))
    assume(data)
    corruption = draw(st.sampled_from(["none", "truncate", "flip", "garbage"]))
    if corruption == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif corruption == "flip":
        pos = draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8))
        buf = bytearray(data)
        for p in pos:
            buf[p] ^= draw(st.integers(1, 255))
        data = bytes(buf)
    elif corruption == "garbage":
        data = draw(st.binary(max_size=200))
    return fmt, mode, (w, h), corruption, data


def _check(path: Path, reader, result_ndim: int, size: tuple[int, int], corruption: str) -> None:
    try:
        out = reader(path)
    except ImageReadError as err:
        text = str(err)
        assert text.startswith(f"{path}: ") and "\n" not in text
        assert corruption != "none", text  # a valid file always decodes
        return
    assert out.dtype == np.uint8 and out.ndim == result_ndim
    if corruption in ("none", "flip", "truncate"):  # a damaged file may still decode, at its declared size
        assert out.shape[:2] == (size[1], size[0])
    if result_ndim == 3:
        assert out.shape[2] == 3


@SETTINGS
@given(image_files())
def test_decoding_gives_an_array_or_one_named_error(tmp_path: Path, case) -> None:
    fmt, mode, size, corruption, data = case
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(data)
    _check(path, read_image, 3, size, corruption)
    _check(path, read_mask, 2, size, corruption)


@SETTINGS
@given(h=st.integers(1, 80), w=st.integers(1, 80), crop=st.integers(8, 64), seed=st.integers(0, 2**16),
       policy=st.sampled_from(["train", "fixed", "native"]), soft=st.booleans())
def test_transforms_keep_shapes_dtypes_and_mask_values(h: int, w: int, crop: int, seed: int, policy: str, soft: bool) -> None:
    from webiml.data.masks import IGNORE, IgnoreBand, target_from_mask
    from webiml.data.transforms import make_eval_transform, make_train_transform, restore_prediction

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    image = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
    mask8 = rng.integers(0, 256, (h, w), dtype=np.uint8) if soft else (rng.random((h, w)) > 0.5).astype(np.uint8) * 255
    target = target_from_mask(mask8, IgnoreBand(64, 192) if soft else IgnoreBand(128, 128 + 1))[None]
    sample = {"image": image, "mask": target, "label": torch.tensor(1.0), "weight": torch.tensor(1.0), "path": "x", "source": "s"}
    if policy == "train":
        out = make_train_transform(crop_size=crop, scale=(0.5, 1.5), jpeg_p=0.5, blur_p=0.3, resize_p=0.3, vflip=0.5)(sample)
        assert tuple(out["image"].shape) == (3, crop, crop) and tuple(out["mask"].shape) == (1, crop, crop)
    else:
        out = make_eval_transform(policy, size=crop, max_side=64, min_side=8)(sample)
        assert out["image"].shape[-2:] == out["mask"].shape[-2:]
        pred = torch.rand(1, *out["image"].shape[-2:])
        assert tuple(restore_prediction(pred, out["valid_size"], out["orig_size"]).shape[-2:]) == (h, w)
    assert out["image"].dtype == torch.uint8
    m = out["mask"]
    assert bool(((m == IGNORE) | ((m >= 0) & (m <= 1))).all())


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.lists(st.integers(-300, 300), max_size=3))
ROWS = st.dictionaries(st.sampled_from(["image", "mask", "label", "source", "weight", "ignore_band", "extra"]), SCALARS, max_size=7)


@SETTINGS
@given(rows=st.lists(st.one_of(ROWS, SCALARS, st.text(max_size=30)), max_size=6), tail=st.binary(max_size=20),
       as_csv=st.booleans())
def test_manifest_reader_gives_records_or_one_named_error(tmp_path: Path, rows, tail: bytes, as_csv: bool) -> None:
    path = tmp_path / ("m.csv" if as_csv else "m.jsonl")
    if as_csv:
        text = "image,mask,label,weight,ignore_band\n" + "".join(
            ",".join(str(r.get(k, "")) if isinstance(r, dict) else str(r) for k in ("image", "mask", "label", "weight", "ignore_band")) + "\n"
            for r in rows)
    else:
        text = "".join((json.dumps(r) if not isinstance(r, str) else r).replace("\n", " ") + "\n" for r in rows)
    path.write_bytes(text.encode("utf-8", "surrogatepass") + tail)
    try:
        records = read_manifest(path)
    except ManifestError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)
        return
    for r in records:
        assert isinstance(r.image, str) and r.image and r.label in (0, 1)
        assert np.isfinite(r.weight) and r.weight >= 0
        assert r.mask is None or isinstance(r.mask, str)
        if r.ignore_band is not None:
            assert 0 <= r.ignore_band.low < r.ignore_band.high <= 255


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_oriented_decoding_is_deterministic(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.arange(24 * 40 * 3, dtype=np.uint8).reshape(24, 40, 3)).save(tmp_path / "o.png", exif=exif)
    a, b = read_image(tmp_path / "o.png"), read_image(tmp_path / "o.png")
    assert np.array_equal(a, b) and a.shape[:2] == ((40, 24) if orientation in (6, 8) else (24, 40))
