"""Adaptive CFA: demosaicing (mosaic) consistency analysis, with its block-wise localization map.

- Q. Bammey, R. Grompone von Gioi, J.-M. Morel, "An Adaptive Neural Network for Unsupervised Mosaic
  Consistency Analysis in Image Forensics", CVPR 2020.
- Reference code and weights: https://github.com/qbammey/adaptive_cfa_forensics (``src/structure.py``,
  ``src/detect_forgeries.py``, ``src/models/{pretrained,adapted_to_j95_database,adapted_to_nojpeg_database}.pt``),
  read to learn the architecture and names; webiml's code is its own. The repository has no licence file:
  no licence is granted, and the weights are not redistributable.

The network predicts, for each 32x32 block, the position of the block's pixels in the 2x2 CFA grid:

- ``spatial``: two "DirFullDil" stages of horizontal (1x3), vertical (3x1) and full (3x3) convolutions,
  plain and dilated, with skip concatenations (103 channels; 4 pixels lost on each side, no padding);
- ``pixelwise``: 1x1 convolutions with dense concatenations (30 channels per pixel);
- the 2x2 grid is split into 4 sub-images whose channels are interleaved and permuted in the 4 ways a
  grid can be shifted (4 "images" of 120 channels at half resolution), averaged over blocks of
  ``block_size / 2``;
- ``blockwise``: grouped then full 1x1 convolutions, log-softmax over the 4 grid positions.

The map (``detect_forgeries.py``): the probabilities of the 4 permuted copies are re-ordered to the same
grid hypothesis and averaged; the grid with the highest mean probability over the image is the image's
grid; a block whose most likely grid is another one is suspected, with score ``max_g p_g`` (the
authors' ``1 - confidence``); blocks agreeing with the image grid score 0.

webiml's output: ``mask_logits = logit(score)`` (scores clipped to [1e-6, 1 - 1e-6]) on the pixels each
block covers; the first 4 rows/columns (lost to the valid convolutions), the last odd row/column and the
incomplete blocks at the bottom/right score 0, as in the authors' saved maps. No image-level score
(``image_logits`` is ``None``).

Deviations: the authors' saved map (``-o``) puts the block grid at the image's top-left corner, while
their displayed map and the network place it 4 pixels in (the valid convolutions); webiml places each
block on the pixels it was computed from (offset 4). The auxiliary pixel-wise training head
(``auxiliary.2``) is kept for completeness (``auxiliary_head``); the ``auxiliary.0/1`` entries of the
checkpoint are the same tensors as ``spatial`` / ``pixelwise`` and are checked and dropped by the converter.
Inputs are RGB in [0, 1] (``uint8 / 255``, as ``plt.imread`` gives for PNG); the authors' code handles one
image at a time and webiml loops over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webiml.models.base import IMLModel, IMLOutput

SCORE_EPS = 1e-6


class DirFullDil(nn.Module):
    """Directional (1x3, 3x1) and full (3x3) convolutions, twice, plus dilated ones once; valid padding."""

    def __init__(self, channels_in: int, n_dir: int, n_full: int, n_dir_dil: int, n_full_dil: int) -> None:
        super().__init__()
        mid = 2 * n_dir + n_full
        self.h1 = nn.Conv2d(channels_in, n_dir, (1, 3))
        self.h2 = nn.Conv2d(mid, n_dir, (1, 3))
        self.v1 = nn.Conv2d(channels_in, n_dir, (3, 1))
        self.v2 = nn.Conv2d(mid, n_dir, (3, 1))
        self.f1 = nn.Conv2d(channels_in, n_full, 3)
        self.f2 = nn.Conv2d(mid, n_full, 3)
        self.hd = nn.Conv2d(channels_in, n_dir_dil, (1, 3), dilation=2)
        self.vd = nn.Conv2d(channels_in, n_dir_dil, (3, 1), dilation=2)
        self.fd = nn.Conv2d(channels_in, n_full_dil, 3, dilation=2)
        self.channels_out = mid + 2 * n_dir_dil + n_full_dil

    def forward(self, x: Tensor) -> Tensor:
        # every branch is cropped to the 2-pixel-smaller frame of the 3x3 dilated convolution
        dil = [self.hd(x)[:, :, 2:-2], self.vd(x)[:, :, :, 2:-2], self.fd(x)]
        mid = F.softplus(torch.cat([self.h1(x)[:, :, 1:-1], self.v1(x)[:, :, :, 1:-1], self.f1(x)], 1))
        out = [self.h2(mid)[:, :, 1:-1], self.v2(mid)[:, :, :, 1:-1], self.f2(mid)]
        return torch.cat(dil + out, 1)


class SpatialStage(nn.Module):
    """Two :class:`DirFullDil` with the input skipped past each (the authors' ``SkipDoubleDirFullDir``)."""

    padding = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = DirFullDil(3, 10, 5, 10, 5)
        self.conv2 = DirFullDil(3 + self.conv1.channels_out, 10, 5, 10, 5)

    def forward(self, x: Tensor) -> Tensor:
        x1 = torch.cat([x[:, :, 2:-2, 2:-2], self.conv1(x)], 1)
        return torch.cat([x1[:, :, 2:-2, 2:-2], self.conv2(x1)], 1)


class PixelwiseStage(nn.Module):
    """1x1 convolutions with dense concatenations, 103 -> 30 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(103, 30, 1)
        self.conv2 = nn.Conv2d(30, 15, 1)
        self.conv3 = nn.Conv2d(45, 15, 1)
        self.conv4 = nn.Conv2d(60, 30, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = F.leaky_relu(self.conv1(x))
        b = F.leaky_relu(self.conv2(a))
        c = F.leaky_relu(self.conv3(torch.cat([a, b], 1)))
        return self.conv4(torch.cat([a, b, c], 1))


def grid_permutations(x: Tensor) -> Tensor:
    """(1, C, 2Y, 2X) -> (4, 4C, Y, X): the four 2x2-grid sub-images, channels interleaved per input channel
    (c0 of the 4 positions, then c1, ...), in the 4 orders that correspond to shifting the grid."""
    if x.shape[0] != 1 or x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"grid_permutations expects one image of even size, got {tuple(x.shape)}")
    s = [x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]]
    orders = ([0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0])
    # stack (1, 4 positions, C, Y, X) -> channels ordered c * 4 + position
    return torch.cat([torch.stack([s[i] for i in o], 2).flatten(1, 2) for o in orders], 0)


class AdaptiveCFA(IMLModel):
    """Adaptive CFA network (Bammey et al., CVPR 2020) and its block map; see the module docstring.

    Args:
        block_size: side of the analysis blocks in pixels (even; the authors' default 32).
        mean, std: input normalisation (default: ``uint8 / 255``, the authors' input).
    """

    size_divisor = 1
    card_summary = (
        "A demosaicing-consistency forensic model ported to [webiml]({repo_url}): a small network predicts the\n"
        "position of each 32x32 block in the 2x2 colour-filter-array grid; blocks that disagree with the image's\n"
        "grid are flagged.")

    def __init__(self, block_size: int = 32, mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 std: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__(mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]
        if block_size < 2 or block_size % 2:
            raise ValueError(f"block_size must be even and >= 2, got {block_size}")
        self.block_size = int(block_size)
        self.spatial = SpatialStage()
        self.pixelwise = PixelwiseStage()
        self.blockwise = nn.Sequential(
            nn.Conv2d(120, 180, 1, groups=30), nn.Softplus(), nn.Conv2d(180, 90, 1, groups=30), nn.Softplus(),
            nn.Conv2d(90, 90, 1, groups=30), nn.Softplus(), nn.Conv2d(90, 45, 1), nn.Softplus(),
            nn.Conv2d(45, 45, 1), nn.Softplus(), nn.Conv2d(45, 4, 1), nn.LogSoftmax(dim=1))
        self.auxiliary_head = nn.Conv2d(30, 4, 1)

    def grid_log_probs(self, x: Tensor) -> Tensor:
        """The network on one even-sized image (1, 3, 2Y, 2X): (4 permutations, 4 grid positions, blocks_y, blocks_x)."""
        f = self.pixelwise(self.spatial(x))
        f = F.avg_pool2d(grid_permutations(f), self.block_size // 2)
        return self.blockwise(f)

    def block_scores(self, x: Tensor) -> Tensor:
        """(blocks_y, blocks_x) forgery score of each block of one image (the authors' ``1 - confidence``)."""
        p = self.grid_log_probs(x).exp()
        aligned = torch.stack([p[:, 0], p[[1, 0, 3, 2], 1], p[[2, 3, 0, 1], 2], p[[3, 2, 1, 0], 3]], 1)
        res = aligned.mean(1)  # (4 grid hypotheses, by, bx)
        best = int(res.mean(dim=(1, 2)).argmax())
        top, arg = res.max(0)
        return torch.where(arg == best, torch.zeros_like(top), top.clamp(0, 1))

    def forward_padded(self, x: Tensor) -> IMLOutput:
        b, _, h, w = x.shape
        pad = self.spatial.padding
        maps = torch.zeros(b, 1, h, w, dtype=x.dtype, device=x.device)
        he, we = h - h % 2, w - w % 2
        bs = self.block_size
        if he - 2 * pad >= bs and we - 2 * pad >= bs:
            for i in range(b):
                score = self.block_scores(x[i : i + 1, :, :he, :we])
                by, bx = score.shape
                up = score.repeat_interleave(bs, 0).repeat_interleave(bs, 1)
                maps[i, 0, pad : pad + by * bs, pad : pad + bx * bs] = up.to(x.dtype)
        logits = torch.logit(maps.clamp(SCORE_EPS, 1 - SCORE_EPS))
        return IMLOutput(mask_logits=logits, image_logits=None)


__all__ = ["AdaptiveCFA", "DirFullDil", "PixelwiseStage", "SpatialStage", "grid_permutations"]
