"""The project's one mask convention, and conversions into it.

On disk and in manifests a mask is a single-channel 8-bit image: 0 = authentic, 255 = manipulated.
Soft web labels (MIML, MIMLv2, CAAAv2 output) use the values in between for uncertainty.

Inside a batch a mask is a *target*: ``float32`` tensor (…, H, W) with 0.0 = authentic,
1.0 = manipulated and :data:`IGNORE` (-1.0) for pixels that carry no supervision (the uncertain band of
soft labels, and padding added by crops). Metrics and losses skip ``IGNORE`` pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

IGNORE: float = -1.0
"""Target value of pixels that must not be supervised or scored."""


class IgnoreBand(NamedTuple):
    """Soft-mask thresholds on the 0..255 scale: ``v <= low`` is authentic, ``v >= high`` manipulated,
    values strictly between are ignored. ``IgnoreBand(127, 128)`` is a plain binarisation at 128."""

    low: int = 127
    high: int = 128


BINARY = IgnoreBand(127, 128)
WEB_LABELS = IgnoreBand(7, 193)
"""The MIML authors' default for auto-annotated web labels: 0-7 authentic, 193-255 manipulated."""


def target_from_mask(mask: np.ndarray | torch.Tensor, band: IgnoreBand | tuple[int, int] = BINARY) -> torch.Tensor:
    """Convert an 8-bit mask (0..255, 255 = manipulated) into a float target with :data:`IGNORE`.

    Boolean masks are accepted too (True = manipulated).
    """
    low, high = band
    if not 0 <= low < high <= 255:
        raise ValueError(f"ignore band must satisfy 0 <= low < high <= 255, got ({low}, {high})")
    m = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.array(mask))  # copy: decoded arrays are read-only
    if m.dtype == torch.bool:
        return m.float()
    m = m.to(torch.int16)
    target = torch.full(m.shape, IGNORE, dtype=torch.float32)
    target[m <= low] = 0.0
    target[m >= high] = 1.0
    return target


def valid_pixels(target: torch.Tensor) -> torch.Tensor:
    """Boolean map of pixels that carry supervision (not :data:`IGNORE`)."""
    return target >= 0
