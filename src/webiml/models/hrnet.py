"""HRNet building blocks as in the segmentation HRNet (HRNet-Semantic-Segmentation, "HRNetV2").

K. Sun, B. Xiao, D. Liu, J. Wang, "Deep High-Resolution Representation Learning for Human Pose Estimation",
CVPR 2019; J. Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition", TPAMI 2020;
code: https://github.com/HRNet/HRNet-Semantic-Segmentation (``lib/models/seg_hrnet.py``), the code CAT-Net's
``lib/models/network_CAT.py`` builds on. This is webiml's own implementation with the same module names, so
state-dict keys match the official ones one to one (``layer1.0.conv1.weight``, ``transition1.1.0.0.weight``,
``stage2.0.branches.0.0.bn1.running_mean``, ``stage2.0.fuse_layers.1.0.0.1.weight``...).

Why not timm's ``hrnet_w48``: timm's HRNet (from HRNet-Image-Classification) upsamples coarser branches in
the fusion with nearest-neighbour ``nn.Upsample(scale_factor=2**k)``, while the segmentation HRNet (and
CAT-Net) resizes them bilinearly to the finer branch's size (``align_corners=False``). The outputs differ,
and timm's fusion also needs sizes divisible by 32. The parameter layout is otherwise the same.

Branch ``i`` of a stage runs at stride ``4 * 2**i`` of the network input; every stride-2 convolution has
padding 1, so odd sizes round up (``ceil``) and the fusion resizes to the exact size of the target branch.

Users: :mod:`webiml.models.cat_net` and :mod:`webiml.models.pscc_net` (PSCC-Net's own HRNet, whose fusion
resizes with ``align_corners=True`` and whose detection head uses Bottlenecks of expansion 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

BN_MOMENTUM = 0.01
"""BatchNorm momentum of the official code (matters for training only)."""


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, ReLU between, identity (or ``downsample``) shortcut, ReLU after the sum."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = bn(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x ``expansion`` channels, 4 in HRNet) residual block."""

    expansion = 4
    """The class default (what :func:`make_layer` plans with); an instance may be built with another."""

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 expansion: int = 4) -> None:
        super().__init__()
        self.expansion = expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * expansion, 1, bias=False)
        self.bn3 = bn(planes * expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}
"""Block names of the official configs."""


def make_layer(block: type[BasicBlock] | type[Bottleneck], cin: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks; the first gets a 1x1 conv + BN shortcut when the shape changes."""
    downsample = None
    if stride != 1 or cin != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, stride=stride, bias=False),
                                   bn(planes * block.expansion))
    layers: list[nn.Module] = [block(cin, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def make_transition(cin: Sequence[int], cout: Sequence[int]) -> nn.ModuleList:
    """Transition between stages: existing branches get a 3x3 conv + BN + ReLU when their width changes
    (``None`` otherwise); each new branch is made from the last input branch by stride-2 3x3 convs."""
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cout):
        if i < len(cin):
            layers.append(nn.Sequential(conv3x3(cin[i], c), bn(c), nn.ReLU(inplace=True)) if c != cin[i] else None)
            continue
        steps = []
        for j in range(i + 1 - len(cin)):
            out = c if j == i - len(cin) else cin[-1]
            steps.append(nn.Sequential(nn.Conv2d(cin[-1], out, 3, 2, 1, bias=False), bn(out), nn.ReLU(inplace=True)))
        layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


def apply_transition(transition: nn.ModuleList, xs: Sequence[Tensor]) -> list[Tensor]:
    """Run a transition: branch ``i`` from input ``i`` (or, for a new branch, from the last input)."""
    out = []
    for i, t in enumerate(transition):
        src = xs[i] if i < len(xs) else xs[-1]
        out.append(src if t is None else t(src))
    return out


class HighResolutionModule(nn.Module):
    """Parallel branches (residual blocks at their own resolution) followed by all-to-all fusion: finer
    branches are brought down with stride-2 3x3 convs, coarser ones with a 1x1 conv + BN and a bilinear
    resize to the target's size (``align_corners``: False in the segmentation HRNet, True in PSCC-Net's);
    the sums go through ReLU."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], num_blocks: Sequence[int], cin: Sequence[int],
                 channels: Sequence[int], multi_scale_output: bool = True, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners
        n = len(channels)
        if not len(num_blocks) == len(cin) == n:
            raise ValueError(f"HRNet module: {n} branches but num_blocks={list(num_blocks)}, in_channels={list(cin)}")
        self.num_branches = n
        self.branches = nn.ModuleList(make_layer(block, cin[i], channels[i], num_blocks[i]) for i in range(n))
        self.out_channels = [c * block.expansion for c in channels]
        self.fuse_layers = self._make_fuse(self.out_channels, multi_scale_output) if n > 1 else None
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _make_fuse(ch: list[int], multi_scale_output: bool) -> nn.ModuleList:
        n = len(ch)
        rows = []
        for i in range(n if multi_scale_output else 1):
            row: list[nn.Module | None] = []
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(ch[j], ch[i], 1, 1, 0, bias=False), bn(ch[i])))
                elif j == i:
                    row.append(None)
                else:
                    steps: list[nn.Module] = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out = ch[i] if last else ch[j]
                        parts: list[nn.Module] = [nn.Conv2d(ch[j], out, 3, 2, 1, bias=False), bn(out)]
                        steps.append(nn.Sequential(*parts) if last else nn.Sequential(*parts, nn.ReLU(inplace=True)))
                    row.append(nn.Sequential(*steps))
            rows.append(nn.ModuleList(row))
        return nn.ModuleList(rows)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, self.num_branches):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + F.interpolate(row[j](xs[j]), size=xs[i].shape[-2:], mode="bilinear",
                                          align_corners=self.align_corners)
                else:
                    y = y + row[j](xs[j])
            out.append(self.relu(y))
        return out


def make_stage(num_modules: int, block: str, num_blocks: Sequence[int], cin: Sequence[int], channels: Sequence[int],
               multi_scale_output: bool = True) -> tuple[nn.Sequential, list[int]]:
    """``num_modules`` :class:`HighResolutionModule` s in a row; returns them and the output widths."""
    cls = BLOCKS[block]
    modules = []
    widths = list(cin)
    for i in range(num_modules):
        m = HighResolutionModule(cls, num_blocks, widths, channels, multi_scale_output or i < num_modules - 1)
        modules.append(m)
        widths = m.out_channels
    return nn.Sequential(*modules), widths


__all__ = ["BLOCKS", "BN_MOMENTUM", "BasicBlock", "Bottleneck", "HighResolutionModule", "apply_transition",
           "make_layer", "make_stage", "make_transition"]
