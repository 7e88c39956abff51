"""File I/O shared by the whole project: image and mask decoding with clear errors, atomic writes.

Nothing a user saved may be half-written: every writer here goes through a temporary file in the
destination folder and an atomic rename.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 300_000_000  # web forgeries can be large; refuse only absurd sizes

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
"""File suffixes (lower case) taken for images when a folder is listed."""


class ImageReadError(ValueError):
    """An image or mask file could not be decoded; the message names the file and the reason."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file as RGB ``uint8`` (H, W, 3). Alpha is dropped, palettes and 16-bit are converted."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(im, dtype=np.float64)
                scale = 255.0 / max(arr.max(), 1.0)
                return np.repeat((arr * scale).astype(np.uint8)[..., None], 3, axis=2)
            return np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only arrays
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot decode image ({err})") from None


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a mask file as ``uint8`` (H, W). Colour masks are reduced with their max channel,
    boolean/1-bit masks become 0/255; 16-bit masks are rescaled to 0..255."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "1":
                return np.asarray(im, dtype=np.uint8) * 255
            if im.mode in ("I;16", "I;16B", "I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                top = arr.max()
                if top <= 1.0:
                    return (arr > 0).astype(np.uint8) * 255
                return np.clip(arr * (255.0 / (65535.0 if top > 255 else 255.0)), 0, 255).astype(np.uint8)
            if im.mode in ("L", "P"):
                return np.asarray(im.convert("L"))
            return np.asarray(im.convert("RGB")).max(axis=2)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot decode mask ({err})") from None


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; saved files get the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf: a metric undefined on a set) replaced by ``None``,
    in nested dicts, lists and tuples, so that it serialises as valid JSON (``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike[str], value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write ``value`` as valid JSON (NaN and inf become ``null``) through :func:`atomic_write_text`."""
    text = json.dumps(json_safe(value), indent=indent, sort_keys=sort_keys, allow_nan=False, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def encode_image(array: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    """Encode an (H, W) or (H, W, 3) ``uint8`` array with PIL (``fmt`` e.g. PNG, JPEG)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format=fmt, **params)
    return buf.getvalue()


def save_image(path: str | os.PathLike[str], array: np.ndarray, **params: object) -> None:
    """Atomically save an image; the format follows the suffix (``.png``, ``.jpg``, ...)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "tif": "TIFF", "tiff": "TIFF", "bmp": "BMP", "webp": "WEBP"}.get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unsupported image suffix {suffix!r}")
    atomic_write_bytes(path, encode_image(array, fmt, **params))


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode ``image`` as JPEG at ``quality`` (PIL/libjpeg, 4:2:0) and decode it again."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hwc_to_chw(image: np.ndarray) -> Any:
    """An (H, W, C) array as a contiguous (C, H, W) ``torch.Tensor`` of the same dtype, never sharing memory
    with ``image`` (torch is imported here, so the rest of this module stays torch-free)."""
    import torch

    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous()
