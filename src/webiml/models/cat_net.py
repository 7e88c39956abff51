"""CAT-Net v2: an HRNet RGB stream and a JPEG DCT-coefficient stream fused into one HRNet segmenter.

M.-J. Kwon, S.-H. Nam, I.-J. Yu, H.-K. Lee, C. Kim, "Learning JPEG Compression Artifacts for Image
Manipulation Detection and Localization", IJCV 130(8), 2022 (CAT-Net v2; v1: "CAT-Net: Compression Artifact
Tracing Network for Detection and Localization of Image Splicing", WACV 2021). Official code and weights:
https://github.com/mjkwon2021/CAT-Net (``lib/models/network_CAT.py``, ``experiments/CAT_full.yaml``,
``Splicing/data/AbstractDataset.py``). This is webiml's own implementation with the official module names, so
the released ``CAT_full_v2.pth.tar`` (and ``CAT_full_v1``: same architecture) loads key for key.

Network (official config ``CAT_full.yaml``, the ``"full"`` preset)::

    RGB (normalised (x - 127.5) / 127.5)
      -> HRNet-W48 stem (two stride-2 3x3 convs) + layer1 (4 bottlenecks)
      -> stages 2..4: branches at strides 4, 8, 16, 32 (48, 96, 192, 384 channels)
    DCT (quantised Y coefficients, |c| clipped to 20, one-hot -> 21 channels at full resolution)
      -> dilated 3x3 conv (dilation 8, 64 ch) + BN + ReLU -> 1x1 conv to 4 ch + BN + ReLU
      -> each 8x8 block's 64 positions become channels (4 x 64), concatenated with the same values multiplied
         by the Y quantisation table at each position (another 4 x 64) -> stride 8, 512 channels
      -> 4 basic blocks (96 ch) -> DCT stages 3, 4: branches at strides 8, 16, 32 (96, 192, 384 channels)
    fusion ("stage 5"): RGB stride 4 alone, RGB + DCT concatenated at strides 8, 16, 32
      -> 3x3 transitions to (24, 48, 96, 192) -> one HRNet module -> all branches resized bilinearly to
         stride 4 and concatenated (360 ch) -> 1x1 conv + BN + ReLU -> 1x1 conv to 2 classes (stride 4).

Inputs (:meth:`CATNet.forward`): the normalised RGB batch ``x`` (B, 3, H, W), any H, W, plus optionally the
JPEG's quantised Y DCT coefficients ``dct`` (B, H8, W8), laid out as in :mod:`webiml.jpeg` (block ``(i, j)``'s
coefficient ``(u, v)`` at ``[8 i + u, 8 j + v]``, aligned with the top-left of ``x``, covering at least
``ceil(H / 8) * 8`` by ``ceil(W / 8) * 8``; a larger grid is cropped), and ``qtable`` (B, 8, 8) (or (8, 8), or
the authors' (B, 1, 8, 8)), the Y quantisation table indexed ``[u, v]``. Get both from a file with
:func:`webiml.jpeg.load_with_dct` (as ``webiml localize`` does). Without ``dct`` the input is treated as a
non-JPEG image, as the authors' code treats one: each image is rounded to ``uint8``, re-compressed with PIL at
quality 100 / 4:4:4, and *both* streams read that JPEG (its decoded pixels and its coefficients); this runs on
the CPU per image, so pass the coefficients when you have the file.

Output (webiml's contract): ``mask_logits`` = ``z1 - z0`` of the two-class logits (softmax cross-entropy on
them equals BCE on the difference), upsampled bilinearly (``align_corners=False``) from stride 4 to the padded
size and cropped, as the authors' ``validate`` upsamples the logits to the (padded) label size. No image-level
head (``image_logits`` is ``None``; the image score is the map's maximum). :meth:`CATNet.logits` is the
authors' ``CAT_Net.forward`` on its own inputs (the padded RGB, the 21-channel one-hot volume, the qtable).

Deviations / webiml adaptations:

- Padding: the authors pad the RGB image to a multiple of 8 with 127.5 (0 after normalisation) and the
  coefficients with 0, bottom / right; webiml does the same inside :meth:`CATNet.forward` (not IMLModel's
  reflect padding, which would move content onto the 8x8 grid of the padding).
- :meth:`CATNet.normalize` maps ``uint8`` images to exactly the authors' ``(x - 127.5) / 127.5``; float images
  in [0, 1] go through ``(x - 0.5) / 0.5`` (equal up to float32 rounding).
- EXIF orientation: the coefficients are in stored order, so ``webiml localize`` runs the model on the stored
  pixels and orients the resulting map (the authors ignore the orientation tag).
- The two-class output becomes one logit map (above); upsampling is linear, so ``sigmoid`` of it equals the
  authors' ``softmax(upsampled logits)[1]`` up to float rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webiml.models.base import IMLModel, IMLOutput
from webiml.models.hrnet import (
    BLOCKS,
    BN_MOMENTUM,
    BasicBlock,
    apply_transition,
    make_layer,
    make_stage,
    make_transition,
)

DCT_CLIP = 20
"""T of the paper: coefficient magnitudes are clipped to [0, T] and one-hot encoded (T + 1 channels)."""
CAT_MEAN = (0.5, 0.5, 0.5)
CAT_STD = (0.5, 0.5, 0.5)
"""``(x / 255 - 0.5) / 0.5`` == the authors' ``(x - 127.5) / 127.5``."""


def _stage(num_modules: int, block: str, num_blocks: Sequence[int], num_channels: Sequence[int]) -> dict[str, Any]:
    return {"num_modules": num_modules, "block": block, "num_blocks": list(num_blocks), "num_channels": list(num_channels)}


CAT_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # experiments/CAT_full.yaml (MODEL.EXTRA): CAT-Net v1 and v2.
    "full": {
        "stage1": _stage(1, "BOTTLENECK", [4], [64]),
        "stage2": _stage(1, "BASIC", [4, 4], [48, 96]),
        "stage3": _stage(4, "BASIC", [4, 4, 4], [48, 96, 192]),
        "stage4": _stage(3, "BASIC", [4, 4, 4, 4], [48, 96, 192, 384]),
        "dc_stage3": _stage(3, "BASIC", [4, 4], [96, 192]),
        "dc_stage4": _stage(2, "BASIC", [4, 4, 4], [96, 192, 384]),
        "stage5": _stage(1, "BASIC", [4, 4, 4, 4], [24, 48, 96, 192]),
    },
    # The same code path at toy widths and depths, for tests (not a trained configuration).
    "tiny": {
        "stage1": _stage(1, "BOTTLENECK", [1], [8]),
        "stage2": _stage(1, "BASIC", [1, 1], [8, 16]),
        "stage3": _stage(1, "BASIC", [1, 1, 1], [8, 16, 24]),
        "stage4": _stage(1, "BASIC", [1, 1, 1, 1], [8, 16, 24, 32]),
        "dc_stage3": _stage(1, "BASIC", [1, 1], [16, 24]),
        "dc_stage4": _stage(1, "BASIC", [1, 1, 1], [16, 24, 32]),
        "stage5": _stage(1, "BASIC", [1, 1, 1, 1], [8, 8, 16, 16]),
    },
}
"""Stage configurations of :class:`CATNet` (the official ``MODEL.EXTRA`` in lower case)."""
STAGE_NAMES = ("stage1", "stage2", "stage3", "stage4", "dc_stage3", "dc_stage4", "stage5")
STAGE_BRANCHES = {"stage1": 1, "stage2": 2, "stage3": 3, "stage4": 4, "dc_stage3": 2, "dc_stage4": 3, "stage5": 4}


def dct_volume(coef: Tensor, clip: int = DCT_CLIP, dtype: torch.dtype = torch.float32) -> Tensor:
    """The authors' ``DCTvol``: (B, H, W) coefficients -> (B, clip + 1, H, W) one-hot of ``min(|c|, clip)``."""
    levels = torch.arange(clip + 1, device=coef.device).view(1, -1, 1, 1)
    return (coef.abs().clamp(max=clip).long().unsqueeze(1) == levels).to(dtype)


def _check_stages(stages: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in STAGE_NAMES:
        if name not in stages:
            raise ValueError(f"CATNet stages: missing {name!r}")
        s = stages[name]
        n = STAGE_BRANCHES[name] if name != "stage1" else 1
        if s["block"] not in BLOCKS:
            raise ValueError(f"CATNet {name}: unknown block {s['block']!r}; choose one of {sorted(BLOCKS)}")
        if len(s["num_blocks"]) != n or len(s["num_channels"]) != n:
            raise ValueError(f"CATNet {name}: needs {n} branches, got num_blocks={s['num_blocks']} num_channels={s['num_channels']}")
        out[name] = {"num_modules": int(s["num_modules"]), "block": str(s["block"]),
                     "num_blocks": [int(v) for v in s["num_blocks"]], "num_channels": [int(v) for v in s["num_channels"]]}
    unknown = set(stages) - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"CATNet stages: unknown entries {sorted(unknown)}")
    return out


class CATNet(IMLModel):
    """CAT-Net (v1 / v2 weights): HRNet RGB stream + DCT stream; see the module docstring.

    Args:
        size: a key of :data:`CAT_PRESETS` (``"full"`` = the authors' model, ``"tiny"`` for tests).
        stages: per-stage overrides (``{"stage4": {"num_channels": [...]}, ...}``), merged into the preset.
        mean, std: input normalisation (the authors': 0.5 / 0.5 on RGB in [0, 1]).
    """

    size_divisor = 8
    uses_jpeg_dct = True
    card_summary = (
        "CAT-Net (Compression Artifact Tracing Network) ported to [webiml]({repo_url}): an HRNet over the RGB image\n"
        "and a second stream over the JPEG's quantised DCT coefficients localize edits that break the JPEG history.")

    def __init__(self, size: str = "full", stages: dict[str, dict[str, Any]] | None = None,
                 mean: tuple[float, float, float] = CAT_MEAN, std: tuple[float, float, float] = CAT_STD) -> None:
        super().__init__(mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]
        if size not in CAT_PRESETS:
            raise ValueError(f"unknown CAT-Net size {size!r}; choose one of {sorted(CAT_PRESETS)}")
        cfg = copy.deepcopy(CAT_PRESETS[size])
        for name, override in (stages or {}).items():
            cfg[name] = {**cfg.get(name, {}), **override}
        self.size = size
        self.stage_cfg = cfg = _check_stages(cfg)

        # RGB stream (HRNet).
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        s1 = cfg["stage1"]
        block1 = BLOCKS[s1["block"]]
        self.layer1 = make_layer(block1, 64, s1["num_channels"][0], s1["num_blocks"][0])
        widths = [s1["num_channels"][0] * block1.expansion]
        for i, name in ((1, "stage2"), (2, "stage3"), (3, "stage4")):
            s = cfg[name]
            target = [c * BLOCKS[s["block"]].expansion for c in s["num_channels"]]
            self.add_module(f"transition{i}", make_transition(widths, target))
            stage, widths = make_stage(s["num_modules"], s["block"], s["num_blocks"], target, s["num_channels"])
            self.add_module(name, stage)
        rgb_widths = widths

        # DCT stream.
        self.dc_layer0_dil = nn.Sequential(nn.Conv2d(DCT_CLIP + 1, 64, 3, stride=1, dilation=8, padding=8),
                                           nn.BatchNorm2d(64, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))
        self.dc_layer1_tail = nn.Sequential(nn.Conv2d(64, 4, 1, stride=1, padding=0, bias=False),
                                            nn.BatchNorm2d(4, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))
        dc_width = cfg["dc_stage3"]["num_channels"][0]
        self.dc_layer2 = make_layer(BasicBlock, 4 * 64 * 2, dc_width, 4)
        widths = [dc_width]
        for i, name in ((2, "dc_stage3"), (3, "dc_stage4")):
            s = cfg[name]
            target = [c * BLOCKS[s["block"]].expansion for c in s["num_channels"]]
            self.add_module(f"dc_transition{i}", make_transition(widths, target))
            stage, widths = make_stage(s["num_modules"], s["block"], s["num_blocks"], target, s["num_channels"])
            self.add_module(name, stage)
        dc_widths = [0, *widths]

        # Fusion ("stage 5") and the classifier.
        s5 = cfg["stage5"]
        target = [c * BLOCKS[s5["block"]].expansion for c in s5["num_channels"]]
        self.transition4 = make_transition([r + d for r, d in zip(rgb_widths, dc_widths, strict=True)], target)
        self.stage5, widths = make_stage(s5["num_modules"], s5["block"], s5["num_blocks"], target, s5["num_channels"])
        last = sum(widths)
        self.last_layer = nn.Sequential(nn.Conv2d(last, last, 1, 1, 0), nn.BatchNorm2d(last, momentum=BN_MOMENTUM),
                                        nn.ReLU(inplace=True), nn.Conv2d(last, 2, 1, 1, 0))

    def normalize(self, images: Tensor) -> Tensor:
        """As :meth:`IMLModel.normalize`, but ``uint8`` images with the default statistics become exactly the
        authors' ``(x - 127.5) / 127.5`` (``(x / 255 - 0.5) / 0.5`` differs by float rounding, ~6e-8)."""
        if images.dtype == torch.uint8 and bool((self.input_mean == 0.5).all()) and bool((self.input_std == 0.5).all()):
            x = (images.float() - 127.5) / 127.5
            return (x if x.ndim == 4 else x[None]).to(self.input_mean.device)
        return super().normalize(images)

    # -- the authors' network on the authors' inputs -----------------------------------------------
    def rgb_stream(self, x: Tensor) -> list[Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for i, stage in ((1, self.stage2), (2, self.stage3), (3, self.stage4)):
            xs = stage(apply_transition(getattr(self, f"transition{i}"), xs))
        return xs

    def dct_stream(self, volume: Tensor, qtable: Tensor) -> list[Tensor]:
        x = self.dc_layer1_tail(self.dc_layer0_dil(volume))
        b, c, h, w = x.shape
        blocks = F.pixel_unshuffle(x, 8)  # channel c * 64 + 8 u + v = position (u, v) of each 8x8 block
        scaled = (blocks.view(b, c, 64, h // 8, w // 8) * qtable.reshape(b, 1, 64, 1, 1).to(x.dtype)).view_as(blocks)
        xs = [self.dc_layer2(torch.cat([blocks, scaled], dim=1))]
        for i, stage in ((2, self.dc_stage3), (3, self.dc_stage4)):
            xs = stage(apply_transition(getattr(self, f"dc_transition{i}"), xs))
        return xs

    def logits(self, x: Tensor, volume: Tensor, qtable: Tensor) -> Tensor:
        """The authors' ``CAT_Net.forward``: normalised RGB (B, 3, H, W) and the one-hot DCT volume
        (B, 21, H, W) with H, W multiples of 8, ``qtable`` (B, [1,] 8, 8) -> 2-class logits at stride 4."""
        if x.shape[-2] % 8 or x.shape[-1] % 8 or volume.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"CATNet.logits needs H, W multiples of 8 and a DCT volume of the same size; got RGB "
                             f"{tuple(x.shape)} and DCT {tuple(volume.shape)}")
        rgb = self.rgb_stream(x)
        dc = self.dct_stream(volume, qtable)
        fused = [rgb[0], *(torch.cat([r, d], dim=1) for r, d in zip(rgb[1:], dc, strict=True))]
        ys = self.stage5(apply_transition(self.transition4, fused))
        size = ys[0].shape[-2:]
        up = [ys[0], *(F.interpolate(y, size=size, mode="bilinear", align_corners=False) for y in ys[1:])]
        return self.last_layer(torch.cat(up, dim=1))

    # -- webiml's contract -------------------------------------------------------------------------
    def forward(self, x: Tensor, dct: Tensor | None = None, qtable: Tensor | None = None) -> IMLOutput:  # type: ignore[override]
        """Normalised RGB (B, 3, H, W) + optional coefficients (B, H8, W8) and qtable -> :class:`IMLOutput`
        at (H, W); see the module docstring for the layout and for what happens without ``dct``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"CATNet expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        if (dct is None) != (qtable is None):
            raise ValueError("CATNet: give both dct and qtable, or neither (then the input is re-compressed at quality 100)")
        if dct is None or qtable is None:
            x, dct, qtable = self.recompressed_inputs(x)
        b, _, h, w = x.shape
        hp, wp = h + (-h) % 8, w + (-w) % 8
        if dct.ndim == 4 and dct.shape[1] == 1:
            dct = dct[:, 0]
        if dct.ndim != 3 or dct.shape[0] != b:
            raise ValueError(f"CATNet: dct must be (B, H8, W8) for a batch of {b}, got {tuple(dct.shape)}")
        if dct.shape[-2] < hp or dct.shape[-1] < wp:
            raise ValueError(f"CATNet: the DCT grid {tuple(dct.shape[-2:])} does not cover the image padded to the 8x8 "
                             f"grid ({hp}, {wp})")
        q = qtable.to(x.device)
        q = q.expand(b, 8, 8) if q.shape == (8, 8) else q.reshape(b, 8, 8)
        x = F.pad(x, (0, wp - w, 0, hp - h))  # 0 == the authors' 127.5 padding after normalisation
        volume = dct_volume(dct[:, :hp, :wp].to(x.device), dtype=x.dtype)
        z = self.logits(x, volume, q)
        diff = z[:, 1:2] - z[:, 0:1]
        mask = F.interpolate(diff, size=(hp, wp), mode="bilinear", align_corners=False)[..., :h, :w]
        return IMLOutput(mask_logits=mask, image_logits=None)

    @torch.no_grad()
    def recompressed_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The authors' non-JPEG path for a normalised batch: each image rounded to ``uint8``, re-compressed at
        quality 100 / 4:4:4 (:func:`webiml.jpeg.recompress`); returns (normalised decoded RGB, coefficients
        (B, H8, W8), qtables (B, 8, 8))."""
        from webiml.jpeg import recompress

        rgb = (x.detach().float() * self.input_std.to(x.device) + self.input_mean.to(x.device)).clamp(0, 1)
        images = (rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        outs = [recompress(im) for im in images]
        h8 = max(d.coef.shape[0] for _, d in outs)
        w8 = max(d.coef.shape[1] for _, d in outs)
        coef = np.zeros((len(outs), h8, w8), dtype=np.int16)
        for i, (_, d) in enumerate(outs):
            coef[i, : d.coef.shape[0], : d.coef.shape[1]] = d.coef
        pixels = torch.from_numpy(np.stack([im for im, _ in outs])).permute(0, 3, 1, 2)
        xr = self.normalize(pixels.to(x.device)).to(x.dtype)
        qt = torch.from_numpy(np.stack([d.qtable for _, d in outs]))
        return xr, torch.from_numpy(coef).to(x.device), qt.to(x.device)


__all__ = ["CATNet", "CAT_MEAN", "CAT_PRESETS", "CAT_STD", "DCT_CLIP", "dct_volume"]
