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
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
"""Default largest image (width x height) decoded: twice NIST16's largest (5616 x 3744 = 21 Mpx), so every
image of the usual benchmarks and web photos passes, while a decompression bomb (a small file declaring
e.g. 30000 x 30000 pixels) is refused from its header before any pixel is decoded. Override it with the
environment variable ``WEBIML_MAX_PIXELS`` or :func:`set_max_pixels`; ``0`` means no limit."""

_max_pixels: int | None = None  # set_max_pixels() value; None: read WEBIML_MAX_PIXELS / the default

# PIL's own guard stays as a backstop for other callers of Image.open (it raises DecompressionBombError at
# twice this); webiml's readers check max_pixels() from the header first.
Image.MAX_IMAGE_PIXELS = 300_000_000

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
"""File suffixes (lower case) taken for images when a folder is listed."""

_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                MemoryError, IndexError, KeyError, TypeError, struct.error, ZeroDivisionError)
"""What PIL raises on hostile bytes (malformed headers and chunks reach many code paths)."""

_EXIF_ORIENTATION = 0x0112
_ORIENT_METHODS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                   5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                   8: Image.Transpose.ROTATE_90}


class ImageReadError(ValueError):
    """An image or mask file could not be decoded; the message names the file and the reason."""


def max_pixels() -> int:
    """The pixel limit of :func:`read_image` / :func:`read_mask` (0: none): :func:`set_max_pixels`'s value, else
    the environment variable ``WEBIML_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    if _max_pixels is not None:
        return _max_pixels
    env = os.environ.get("WEBIML_MAX_PIXELS", "").strip()
    if env:
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(f"WEBIML_MAX_PIXELS={env!r}: expected a whole number of pixels (0: no limit)") from None
        if value < 0:
            raise ValueError(f"WEBIML_MAX_PIXELS={env!r}: expected a whole number of pixels >= 0 (0: no limit)")
        return value
    return DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit for this process (and DataLoader workers forked after it); ``None`` restores the
    environment / default, ``0`` removes the limit."""
    global _max_pixels
    if limit is not None and int(limit) < 0:
        raise ValueError(f"max_pixels must be >= 0 (0: no limit), got {limit}")
    _max_pixels = None if limit is None else int(limit)


def check_pixels(path: str | os.PathLike[str], size: tuple[int, int], limit: int | None = None) -> None:
    """Raise :class:`ImageReadError` when ``size`` (width, height, from a header) exceeds the pixel limit."""
    limit = max_pixels() if limit is None else limit
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageReadError(f"{path}: invalid image size {w}x{h}")
    if limit and w * h > limit:
        raise ImageReadError(f"{path}: image is {w}x{h} = {w * h / 1e6:.1f} Mpx, over the limit of {limit / 1e6:g} Mpx "
                             "(a decompression bomb or a huge scan; raise WEBIML_MAX_PIXELS to read it)")


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1..8) of an opened image; 1 when absent or invalid."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block is not a reason to refuse the pixels
        return 1
    return value if isinstance(value, int) and value in _ORIENT_METHODS else 1


def orient_array(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (H, W[, C]) transposed as ``PIL.ImageOps.exif_transpose`` does for EXIF ``orientation``."""
    method = _ORIENT_METHODS.get(orientation)
    if method is None:
        return array
    ops = {Image.Transpose.FLIP_LEFT_RIGHT: lambda a: a[:, ::-1], Image.Transpose.ROTATE_180: lambda a: a[::-1, ::-1],
           Image.Transpose.FLIP_TOP_BOTTOM: lambda a: a[::-1], Image.Transpose.TRANSPOSE: lambda a: a.swapaxes(0, 1),
           Image.Transpose.ROTATE_270: lambda a: np.rot90(a, -1), Image.Transpose.TRANSVERSE: lambda a: np.rot90(a, 2).swapaxes(0, 1),
           Image.Transpose.ROTATE_90: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[method](array))


def image_orientation(path: str | os.PathLike[str]) -> int:
    """The EXIF orientation of an image file, from its header (1 when absent or unreadable)."""
    try:
        with Image.open(path) as im:
            return exif_orientation(im)
    except Exception:
        return 1


def decode_file(path: str | os.PathLike[str], what: str, decode: Any, *, max_pixels: int | None = None,
                orient: bool = True) -> tuple[np.ndarray, int]:
    """Open ``path``, check its header size against the pixel limit (:func:`check_pixels`), decode it with
    ``decode(im)``; returns the array *as stored* and its EXIF orientation (1 when ``orient`` is false; apply it
    with :func:`orient_array`). Every failure is an :class:`ImageReadError` naming the file (``what``: image,
    mask...)."""
    try:
        with Image.open(path) as im:
            check_pixels(path, im.size, max_pixels)
            orientation = exif_orientation(im) if orient else 1
            im.load()
            array = decode(im)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except Image.DecompressionBombError as err:  # PIL's backstop (2 x Image.MAX_IMAGE_PIXELS), raised by open()
        raise ImageReadError(f"{path}: image is over the limit of {Image.MAX_IMAGE_PIXELS * 2 / 1e6:g} Mpx, a decompression "
                             f"bomb ({err})") from None
    except _READ_ERRORS as err:
        raise ImageReadError(f"{path}: cannot decode {what} ({type(err).__name__}: {err})".replace("\n", " ")) from None
    return array, orientation


def _decode_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{int((~np.isfinite(arr)).sum())} non-finite (NaN/Inf) pixel value(s)")
        scale = 255.0 / max(arr.max(), 1.0)
        return np.repeat(np.clip(arr * scale, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only arrays


def _decode_mask(im: Image.Image) -> np.ndarray:
    if im.mode == "1":
        return np.asarray(im, dtype=np.uint8) * 255
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{int((~np.isfinite(arr)).sum())} non-finite (NaN/Inf) pixel value(s)")
        top = arr.max() if arr.size else 0.0
        if top <= 1.0:
            return (arr > 0).astype(np.uint8) * 255
        return np.clip(arr * (255.0 / (65535.0 if top > 255 else 255.0)), 0, 255).astype(np.uint8)
    if im.mode in ("L", "P"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB")).max(axis=2)


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None, orient: bool = True) -> np.ndarray:
    """Decode an image file as RGB ``uint8`` (H, W, 3). Alpha is dropped, palettes and 16-bit are converted.

    The EXIF orientation is applied (as ``PIL.ImageOps.exif_transpose``: the array is the image as viewers
    show it) unless ``orient=False``. An image over the pixel limit (:func:`max_pixels`, checked from the header
    before decoding), an unreadable file or a float image with NaN/Inf pixels raises :class:`ImageReadError`."""
    return orient_array(*decode_file(path, "image", _decode_rgb, max_pixels=max_pixels, orient=orient))


def read_image_stored(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> tuple[np.ndarray, int]:
    """:func:`read_image` without applying the orientation: ``(array as stored, EXIF orientation)``, for callers
    that orient an image and its mask together (see :func:`webiml.data.datasets.load_sample`)."""
    return decode_file(path, "image", _decode_rgb, max_pixels=max_pixels)


def read_mask(path: str | os.PathLike[str], *, max_pixels: int | None = None, orient: bool = True) -> np.ndarray:
    """Decode a mask file as ``uint8`` (H, W). Colour masks are reduced with their max channel,
    boolean/1-bit masks become 0/255; 16-bit masks are rescaled to 0..255; float masks with NaN/Inf pixels
    are refused. The mask's own EXIF orientation (rare) and the pixel limit apply as in :func:`read_image`."""
    return orient_array(*decode_file(path, "mask", _decode_mask, max_pixels=max_pixels, orient=orient))


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


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_folder(path: str | os.PathLike[str], write: Any, keep_others: bool = True) -> Any:
    """Replace the folder ``path`` as one unit: ``write(staging)`` fills a new hidden folder beside it, which
    then takes its place (an atomic exchange on Linux; elsewhere two renames), so that a reader sees the old
    folder or the new one, never a mix. Files and folders of the old one that ``write`` did not write are
    carried over (``keep_others``). A killed writer leaves only a hidden ``.NAME.saving-*`` folder, removed by
    the next call. Returns what ``write`` returns."""
    import shutil

    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.saving-*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    try:
        os.chmod(staging, _dir_mode())  # mkdtemp makes 0700; a saved folder gets the usual permissions
        result = write(staging)
        if target.is_dir():
            if keep_others:
                for entry in target.iterdir():
                    dest = staging / entry.name
                    if dest.exists() or dest.is_symlink() or entry.name.endswith(".tmp"):
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.copytree(entry, dest, symlinks=True)
                    else:
                        shutil.copy2(entry, dest, follow_symlinks=False)
            if not _exchange(str(staging), str(target)):
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
                os.rename(target, old / "old")
                os.rename(staging, target)
                staging = old
        elif target.exists():
            raise FileExistsError(f"{target}: exists and is not a folder")
        else:
            os.rename(staging, target)
            return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the old folder after the swap, or the new one on failure
    return result


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _dir_mode() -> int:
    return 0o777 & ~_umask()


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
