"""JPEG DCT coefficients for evaluation samples, for models that read them (CAT-Net): :class:`AttachJpegDCT`.

A JPEG's own quantised luminance coefficients only describe its pixels as stored: after an EXIF rotation, a
resize of the evaluation policy or a degradation of a robustness protocol they no longer match. In those cases,
and for non-JPEG files, the sample is re-compressed at quality 100 (4:4:4) and the model sees the decoded
pixels of that JPEG with its coefficients: the authors' treatment of non-JPEG input, which is also what
:class:`~webiml.models.cat_net.CATNet` does by itself when it gets no coefficients. ``webiml localize`` follows
the same rule (:func:`webiml.jpeg.load_with_dct`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from webiml.data.transforms._base import Sample

if TYPE_CHECKING:
    from webiml.jpeg import JpegDCT

log = logging.getLogger(__name__)


def _round8(n: int) -> int:
    return -(-n // 8) * 8


def _file_dct(path: str, height: int, width: int) -> JpegDCT | None:
    """The file's coefficients when they describe the pixels as loaded (a JPEG, stored upright, covering
    ``height`` x ``width``); ``None`` otherwise."""
    from PIL import Image

    from webiml.io import exif_orientation
    from webiml.jpeg import is_jpeg_file, read_jpeg_dct

    if not is_jpeg_file(path):
        return None
    with Image.open(path) as im:
        if exif_orientation(im) != 1:
            return None
    dct = read_jpeg_dct(path)
    return dct if dct.covers(height, width) else None


class AttachJpegDCT:
    """Add ``"dct"`` (int16 (H8, W8), on the 8x8 grid of the padded image, zeros in the padding) and ``"qtable"``
    (float32 (8, 8)) to an evaluation sample; see the module docstring for when the file's own coefficients are
    used (``use_file=False``: never, e.g. after a degradation) and when the sample is re-compressed.

    Runs after the evaluation transform (it reads ``valid_size`` and ``orig_size`` when present).
    """

    def __init__(self, use_file: bool = True) -> None:
        self.use_file = use_file

    def __repr__(self) -> str:
        return f"AttachJpegDCT(use_file={self.use_file})"

    def __call__(self, sample: Sample) -> Sample:
        from webiml.jpeg import recompress

        out = dict(sample)
        image: torch.Tensor = sample["image"]
        hp, wp = (int(v) for v in image.shape[-2:])
        h, w = (int(v) for v in sample.get("valid_size", (hp, wp)))
        native = "orig_size" not in sample or tuple(int(v) for v in sample["orig_size"]) == (h, w)
        path = sample.get("path")
        dct: JpegDCT | None = None
        if self.use_file and native and isinstance(path, str) and Path(path).is_file():
            try:
                dct = _file_dct(path, h, w)
            except (OSError, ValueError) as err:  # unreadable coefficients: fall back to re-compression
                log.warning("%s: JPEG coefficients not readable (%s); re-compressing at quality 100", path, err)
        if dct is None:
            rgb, dct = recompress(image[:, :h, :w].permute(1, 2, 0).contiguous().numpy())
            image = image.clone()
            image[:, :h, :w] = torch.from_numpy(rgb).permute(2, 0, 1)
            out["image"] = image
        coef = np.zeros((_round8(hp), _round8(wp)), dtype=np.int16)
        gh, gw = min(coef.shape[0], dct.coef.shape[0]), min(coef.shape[1], dct.coef.shape[1])
        coef[:gh, :gw] = dct.coef[:gh, :gw]
        out["dct"] = torch.from_numpy(coef)
        out["qtable"] = torch.from_numpy(np.asarray(dct.qtable, dtype=np.float32))
        return out


__all__ = ["AttachJpegDCT"]
