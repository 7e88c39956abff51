"""The original Noiseprint (``webiml convert noiseprint``), the TensorFlow tensor-bundle reader and the JPEG
quality rule, offline.

- ``fixtures/tf_bundle/``: a 409-byte checkpoint written by real TensorFlow (2.21, ``tf.compat.v1.train.Saver``)
  with its values in ``values.json``;
- ``fixtures/noiseprint_keys.json``: the variable names / dtypes / shapes of grip-unina/noiseprint's
  ``nets/net_jpgQQ/model.index`` and the key names / shapes of noiseprint-pytorch's ``model_qfQQ.pth``;
  the constructed checkpoints below have that layout and random values.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from webiml.cli import main
from webiml.convert import ConversionError
from webiml.convert.noiseprint import convert_noiseprint, noiseprint_port_to_webiml, noiseprint_tf_to_webiml
from webiml.convert.tf_bundle import crc32c, list_tensors, read_tensor_bundle, write_tensor_bundle
from webiml.models import noiseprint as npm
from webiml.models.noiseprint import Noiseprint, NoiseprintPP, grip_gray, jpeg_quality, quality_from_table

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = json.loads((FIXTURES / "noiseprint_keys.json").read_text())


# -- the tensor-bundle reader --------------------------------------------------------------------------------

def test_reads_a_checkpoint_written_by_tensorflow() -> None:
    expected = json.loads((FIXTURES / "tf_bundle" / "values.json").read_text())["values"]
    got = read_tensor_bundle(FIXTURES / "tf_bundle" / "model")
    assert set(got) == set(expected)
    assert got["level_0/conv/weights"].dtype == np.float32 and got["level_0/conv/weights"].shape == (3, 3, 1, 2)
    assert got["global_step"].dtype == np.int64 and int(got["global_step"]) == 123
    assert got["a_double"].dtype == np.float64
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], np.asarray(value, dtype=got[name].dtype))
    # the folder and the .index path name the same checkpoint
    assert set(read_tensor_bundle(FIXTURES / "tf_bundle")) == set(expected)


def test_crc32c_and_writer_round_trip(tmp_path: Path) -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    data = np.random.default_rng(0).integers(0, 256, 70_001, dtype=np.uint8).tobytes()
    reg = 0xFFFFFFFF  # bytewise reference for the chunked implementation
    for b in data:
        reg ^= b
        for _ in range(8):
            reg = (reg >> 1) ^ 0x82F63B78 if reg & 1 else reg >> 1
    assert crc32c(data) == reg ^ 0xFFFFFFFF
    tensors = {"w": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "step": np.array(5, np.int64), "u": np.arange(3, dtype=np.uint8)}
    write_tensor_bundle(tmp_path / "ck" / "model", tensors)
    entries, shards = list_tensors(tmp_path / "ck" / "model.index")
    assert shards == 1 and entries["w"].shape == (2, 3, 4)
    back = read_tensor_bundle(tmp_path / "ck" / "model")
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)


def test_corrupt_bundles_are_refused(tmp_path: Path) -> None:
    write_tensor_bundle(tmp_path / "model", {"w": np.ones((4, 4), np.float32)})
    data_file = tmp_path / "model.data-00000-of-00001"
    raw = bytearray(data_file.read_bytes())
    raw[5] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    with pytest.raises(ConversionError, match="checksum mismatch for tensor 'w'"):
        read_tensor_bundle(tmp_path / "model")
    assert read_tensor_bundle(tmp_path / "model", verify=False)["w"].shape == (4, 4)
    index = tmp_path / "model.index"
    good = index.read_bytes()
    index.write_bytes(good[:10] + bytes([good[10] ^ 1]) + good[11:])
    with pytest.raises(ConversionError, match="checksum"):
        list_tensors(index)
    index.write_bytes(b"not a checkpoint" * 4)
    with pytest.raises(ConversionError, match="not a TensorFlow checkpoint index"):
        list_tensors(index)
    data_file.unlink()
    index.write_bytes(good)
    with pytest.raises(ConversionError, match="data file not found"):
        read_tensor_bundle(tmp_path / "model")


# -- the converter and the network -----------------------------------------------------------------------------

def _official_tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, spec in KEYS["tf_variables"].items():
        shape = tuple(spec["shape"])
        if spec["dtype"] == 3:
            out[name] = np.array(1000, np.int32)
        elif name.endswith("moving_variance"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.endswith("conv/weights"):
            out[name] = (rng.normal(size=shape) * (2.0 / (9 * shape[2])) ** 0.5).astype(np.float32)
        else:
            out[name] = (rng.normal(size=shape) * 0.1).astype(np.float32)
    return out


def _reference(tensors: dict[str, np.ndarray], gray: torch.Tensor) -> torch.Tensor:
    """grip-unina/noiseprint's FullConvNet written from network.py on the HWIO variables: SAME 3x3 convolution
    (zero padding), BatchNorm (x - mean) / sqrt(var + 1e-5) * gamma, + beta, ReLU except on the last level."""
    x = gray.double()[:, 0, :, :, None]  # NHWC
    for level in range(17):
        w = torch.from_numpy(tensors[f"level_{level}/conv/weights"]).double()  # (kh, kw, in, out)
        h, wd = x.shape[1:3]
        xp = F.pad(x.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)
        x = sum(torch.einsum("nhwi,io->nhwo", xp[:, i : i + h, j : j + wd], w[i, j]) for i in range(3) for j in range(3))
        if f"level_{level}/bn/gamma" in tensors:
            t = {k: torch.from_numpy(tensors[f"level_{level}/bn/{k}"]).double() for k in ("gamma", "moving_mean", "moving_variance")}
            x = (x - t["moving_mean"]) / torch.sqrt(t["moving_variance"] + 1e-5) * t["gamma"]
        x = x + torch.from_numpy(tensors[f"level_{level}/bias/beta"]).double()
        x = torch.relu(x) if level < 16 else x
    return x[..., 0][:, None].float()


def test_convert_tf_nets_folder_matches_the_official_network(tmp_path: Path, capsys) -> None:
    nets = tmp_path / "noiseprint" / "noiseprint" / "nets"
    official = {q: _official_tensors(q) for q in (75, 101)}
    for q, tensors in official.items():
        write_tensor_bundle(nets / f"net_jpg{q}" / "model", tensors)
    out = tmp_path / "np"
    assert main(["convert", "noiseprint", str(tmp_path / "noiseprint"), str(out)]) == 0  # the repository root works too
    assert "Noiseprint" in capsys.readouterr().out
    model = Noiseprint.from_pretrained(out).eval()
    assert model.qualities == [75, 101] and model.quality == 101
    u8 = torch.randint(0, 256, (3, 29, 38), dtype=torch.uint8)
    x = model.normalize(u8)
    gray = ((0.299 * u8[0].float() + 0.587 * u8[1].float()) + 0.114 * u8[2].float()) / 256.0  # imread2f, float32
    assert torch.equal(grip_gray(model.pixels_255(x))[0], gray)
    pp = NoiseprintPP()  # the blind EM of both models sees the grey image on the authors' scale (luminance / 256)
    assert torch.equal(pp.pixels_255(pp.normalize(u8)), u8.float()[None])
    with torch.no_grad():
        for q in (75, 101):
            torch.testing.assert_close(model.noiseprint(x, quality=q), _reference(official[q], gray[None, None]), rtol=0, atol=2e-5)
        assert not torch.allclose(model.noiseprint(x, quality=75), model.noiseprint(x, quality=101))
    # the network a quality uses: >100 -> 101, <51 -> 51, then the nearest held
    assert [model.network_quality(q) for q in (200, 100, 89, 80, 40)] == [101, 101, 101, 75, 75]
    # one net_jpgQQ folder, one model.index
    assert convert_noiseprint(nets / "net_jpg75", tmp_path / "a").qualities == [75]
    assert convert_noiseprint(nets / "net_jpg101" / "model.index", tmp_path / "b").qualities == [101]


def test_pytorch_port_converts_to_the_same_model(tmp_path: Path) -> None:
    tensors = _official_tensors(3)
    tf_state = noiseprint_tf_to_webiml(tensors)
    port: dict[str, torch.Tensor] = {}
    for key, shape in KEYS["pytorch_port"].items():  # the port's layout, values from the TF variables
        level, rest = int(key.split(".")[1]), key.split(".", 2)[2]
        name = {"0.weight": "conv/weights", "0.bias": "bias/beta", "2.bias": "bias/beta", "1.gamma": "bn/gamma",
                "1.moving_mean": "bn/moving_mean", "1.moving_variance": "bn/moving_variance"}[rest]
        value = torch.from_numpy(tensors[f"level_{level}/{name}"])
        port[key] = value.permute(3, 2, 0, 1).contiguous() if value.ndim == 4 else value
        assert list(port[key].shape) == shape
    weights = tmp_path / "pretrained_weights"
    weights.mkdir()
    torch.save(port, weights / "model_qf88.pth")
    model = convert_noiseprint(weights, tmp_path / "out")
    assert model.qualities == [88]
    got = noiseprint_port_to_webiml(port)
    assert set(got) == set(tf_state) and all(torch.equal(got[k], tf_state[k]) for k in got)
    with pytest.raises(ConversionError, match="not noiseprint-pytorch"):
        noiseprint_port_to_webiml({**port, "head.weight": torch.zeros(1)})


def test_bad_inputs_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no Noiseprint networks found"):
        convert_noiseprint(tmp_path, tmp_path / "out")
    tensors = _official_tensors(0)
    tensors["level_3/extra/thing"] = np.zeros(2, np.float32)
    write_tensor_bundle(tmp_path / "nets" / "net_jpg90" / "model", tensors)
    with pytest.raises(ConversionError, match="quality 90 .* not Noiseprint network variables"):
        convert_noiseprint(tmp_path / "nets", tmp_path / "out")
    del tensors["level_3/extra/thing"], tensors["level_5/bn/gamma"]
    write_tensor_bundle(tmp_path / "nets" / "net_jpg90" / "model", tensors)
    with pytest.raises(ConversionError, match="missing keys: nets.q90.15.weight"):
        convert_noiseprint(tmp_path / "nets", tmp_path / "out")


# -- JPEG quality --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("quality", [51, 60, 75, 87, 90, 95, 99, 100])
def test_quality_of_generated_jpegs(quality: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(quality).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    assert jpeg_quality(buf) == quality


def test_quality_of_other_files(tmp_path: Path) -> None:
    img = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    for suffix in ("png", "tiff", "bmp"):
        img.save(tmp_path / f"x.{suffix}")
        assert jpeg_quality(tmp_path / f"x.{suffix}") == 101
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        jpeg_quality(tmp_path / "bad.jpg")
    assert quality_from_table(np.ones(64)) == 100
    assert quality_from_table(npm.IJG_LUMINANCE) == 50
    # below 50 upstream's rule is one above the saving quality (IJG's integer scale 5000 // q); webiml keeps the
    # rule, and every estimate below 51 uses the quality-51 network
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=30)
    buf.seek(0)
    assert jpeg_quality(buf) == 31
    assert Noiseprint(qualities=[51, 101]).network_quality(31) == 51


def test_predict_file_uses_the_file_quality(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Noiseprint(qualities=[60, 101]).eval()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "a.jpg", quality=60)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(m.quality))
    out = model.predict_file(tmp_path / "a.jpg")
    assert seen == [60] and model.quality == 101
    assert out.mask_logits.shape == (1, 1, 40, 56) and out.image_logits is None


# -- the model contract ---------------------------------------------------------------------------------------

def test_forward_backward_odd_size_and_tiling(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = Noiseprint(qualities=[101]).eval()
    u8 = torch.randint(0, 256, (3, 45, 61), dtype=torch.uint8)
    out = model.predict(u8)
    assert out.mask_logits.shape == (1, 1, 45, 61) and torch.all(out.mask_logits == -20.0)  # too small for the EM
    x = model.normalize(u8).requires_grad_(True)
    model.noiseprint(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # large images run in tiles with a 34-pixel overlap: the same values as one pass
    big = model.normalize(torch.randint(0, 256, (3, 83, 101), dtype=torch.uint8))
    with torch.no_grad():
        whole = model.noiseprint(big)
        monkeypatch.setattr(npm, "LARGE_LIMIT", 1000)
        monkeypatch.setattr(npm, "TILE", 40)
        tiled = model.noiseprint(big)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
