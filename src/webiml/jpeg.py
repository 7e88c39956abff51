"""JPEG internals for compression-artifact models (CAT-Net): quantised DCT coefficients and quantisation tables.

The coefficients are read losslessly from the file (no decoding) with `jpeglib
<https://pypi.org/project/jpeglib/>`_ (libjpeg behind a Python API; the CAT-Net authors use ``jpegio``, and both
give identical Y coefficients and tables: checked on 4:2:0, 4:2:2, 4:4:4 and greyscale JPEGs of odd sizes).

Layout (the authors' ``AbstractDataset._get_jpeg_info`` with ``DCT_channels=1``): the luminance (Y) coefficients
as one ``(8 * rows_of_blocks, 8 * cols_of_blocks)`` array in which block ``(i, j)``'s coefficient ``(u, v)``
(row frequency ``u``, column frequency ``v``) sits at ``[8 i + u, 8 j + v]``, covering the image from its
top-left corner (at least ``ceil(H / 8) * 8`` by ``ceil(W / 8) * 8``); the Y quantisation table as an
``(8, 8)`` array indexed ``[u, v]`` (natural order, not zig-zag). ``coefficient * qtable[u, v]`` is the
dequantised DCT value, whose inverse 8x8 DCT (+128) is the decoded luminance.

Images that are not JPEG files follow the authors' ``dataset_arbitrary.py``: the RGB image is re-compressed
with PIL at quality 100 and 4:4:4 (``subsampling=0``), and both the pixels and the coefficients the model sees
come from that JPEG (:func:`recompress`). The same happens to images given as pixels only (arrays, tensors).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from webiml.io import ImageReadError, decode_file

RECOMPRESS_QUALITY = 100
"""Quality of the authors' re-compression of non-JPEG inputs (PIL, ``subsampling=0``)."""


@dataclass(frozen=True)
class JpegDCT:
    """Quantised luminance DCT coefficients of a JPEG and its luminance quantisation table.

    Attributes:
        coef: ``(H8, W8)`` int16, block ``(i, j)`` coefficient ``(u, v)`` at ``[8 i + u, 8 j + v]``.
        qtable: ``(8, 8)`` float32, the Y quantisation table indexed ``[u, v]``.
        recompressed: ``True`` when these come from the quality-100 re-compression of a non-JPEG input.
    """

    coef: np.ndarray
    qtable: np.ndarray
    recompressed: bool = False

    def __post_init__(self) -> None:
        if self.coef.ndim != 2 or self.coef.shape[0] % 8 or self.coef.shape[1] % 8:
            raise ValueError(f"JpegDCT.coef must be (8 k, 8 l), got {self.coef.shape}")
        if self.qtable.shape != (8, 8):
            raise ValueError(f"JpegDCT.qtable must be (8, 8), got {self.qtable.shape}")

    def covers(self, height: int, width: int) -> bool:
        """Whether the coefficient grid covers an image of this size (from the top-left corner)."""
        return self.coef.shape[0] >= height and self.coef.shape[1] >= width


def _jpeglib():  # type: ignore[no-untyped-def]
    try:
        import jpeglib
    except ImportError as err:  # pragma: no cover - a dependency of webiml
        raise ImportError("reading JPEG DCT coefficients needs the 'jpeglib' package: pip install jpeglib") from err
    return jpeglib


def read_jpeg_dct(path: str | os.PathLike[str]) -> JpegDCT:
    """The Y coefficients and Y quantisation table of a JPEG file (no decoding, lossless).

    Raises :class:`webiml.io.ImageReadError` when the file is not a readable JPEG. For CMYK / YCCK JPEGs (rare)
    the first component is taken, as the authors' code does.
    """
    jpeglib = _jpeglib()
    try:
        jpeg = jpeglib.read_dct(str(path))
        y = np.asarray(jpeg.Y)
        qt = np.asarray(jpeg.qt)[int(np.asarray(jpeg.quant_tbl_no)[0])]
    except (OSError, ValueError, IndexError, TypeError) as err:
        raise ImageReadError(f"{path}: cannot read the JPEG DCT coefficients ({type(err).__name__}: {err})") from None
    rows, cols = y.shape[:2]
    coef = np.ascontiguousarray(y.transpose(0, 2, 1, 3).reshape(rows * 8, cols * 8)).astype(np.int16, copy=False)
    return JpegDCT(coef=coef, qtable=qt.astype(np.float32))


def is_jpeg_file(path: str | os.PathLike[str]) -> bool:
    """Whether PIL identifies the file as a JPEG (the authors' test: ``Image.open(path).format == "JPEG"``)."""
    try:
        with Image.open(path) as im:
            return im.format == "JPEG"
    except Exception:
        return False


def recompress(image: np.ndarray, quality: int = RECOMPRESS_QUALITY) -> tuple[np.ndarray, JpegDCT]:
    """The authors' treatment of a non-JPEG input: save the ``uint8`` RGB ``image`` (H, W, 3) as a JPEG with PIL
    (``quality``, 4:4:4), return the decoded RGB of that JPEG and its coefficients (``recompressed=True``)."""
    arr = np.ascontiguousarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"recompress expects a uint8 (H, W, 3) image, got {arr.shape} {arr.dtype}")
    fd, tmp = tempfile.mkstemp(prefix="webiml-dct-", suffix=".jpg")
    os.close(fd)
    try:
        Image.fromarray(arr).save(tmp, format="JPEG", quality=int(quality), subsampling=0)
        with Image.open(tmp) as im:
            rgb = np.array(im.convert("RGB"))
        dct = read_jpeg_dct(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return rgb, JpegDCT(dct.coef, dct.qtable, recompressed=True)


def load_with_dct(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> tuple[np.ndarray, JpegDCT, int]:
    """Read an image file for a DCT model: ``(RGB uint8 (H, W, 3) as stored, its JpegDCT, EXIF orientation)``.

    A JPEG gives its decoded pixels and its own coefficients; any other image is re-compressed at quality 100
    (:func:`recompress`), as in the authors' code. The pixels are *not* rotated by the EXIF orientation, since
    the coefficient grid is in stored order: run the model on them, then orient its output with
    :func:`webiml.io.orient_array` and the returned orientation. Unreadable files raise
    :class:`webiml.io.ImageReadError`.
    """
    from webiml.io import _decode_rgb

    rgb, orientation = decode_file(path, "image", _decode_rgb, max_pixels=max_pixels, orient=True)
    if is_jpeg_file(path):
        dct = read_jpeg_dct(path)
        if not dct.covers(*rgb.shape[:2]):
            raise ImageReadError(f"{path}: the DCT grid {dct.coef.shape} does not cover the {rgb.shape[0]}x{rgb.shape[1]} image")
        return rgb, dct, orientation
    rgb, dct = recompress(rgb)
    return rgb, dct, orientation


__all__ = ["RECOMPRESS_QUALITY", "JpegDCT", "is_jpeg_file", "load_with_dct", "read_jpeg_dct", "recompress"]
