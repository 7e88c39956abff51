"""The base of dataset sources: :class:`Source`, :class:`Candidate`, file finding, pairing and mask decoders.

A source reads one dataset *as distributed* and yields :class:`Candidate` samples: an image, its raw mask
file (or ``None``), the label, and the name of the *decoder* that turns the raw mask into the project
convention (:mod:`webiml.data.masks`: 8-bit, 0 = authentic, 255 = manipulated, soft values in between).
:mod:`webiml.data.sources.indexing` then checks every candidate (in parallel), converts the masks that need
it into PNGs in a cache folder next to the manifest, and writes the manifest. Training never sees
per-dataset code: it reads manifests only.

Decoders (``Candidate.decoder``), each returning ``(mask uint8 (H, W), needs_conversion)``:

- ``plain``: 0/255 (or soft 0..255) single-channel or colour masks as :func:`webiml.io.read_mask` reads
  them; 0/1 masks are scaled to 0/255 (and so converted).
- ``inverted``: 0 = manipulated, 255 = authentic on disk (NIST16, DSO-1).
- ``nonzero``: any value > 0 is manipulated (label maps, 0/1 masks).
- ``green``: a colour edge map whose manipulated region is bright in the green channel (Columbia).
- ``levels3``: 3-level maps, black authentic, white changed, grey "collateral" changes (Korus); the grey
  level becomes manipulated, authentic or ignored (``collateral`` argument).
- ``npz``: a NumPy ``.npz`` archive holding one mask array (``arr_0``/``mask``/the first one), > 0 is
  manipulated (FantasticReality).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from webiml.io import IMAGE_SUFFIXES, ImageReadError, decode_file, orient_array, read_mask

MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".npz")
# Name suffixes that mark a mask file of the same stem as its image ("x_gt.png" pairs with "x.jpg").
MASK_NAME_SUFFIXES = ("_gt", "-gt", "_mask", "-mask", "_groundtruth", "_ground_truth", "_forged", ".mask")

Reporter = Callable[[str, str, str], None]
"""``report(kind, path, message)``: how a source reports scan-time findings (orphan masks, ambiguities)."""


@dataclass(frozen=True)
class Candidate:
    """One sample found by a source, before checking.

    Args:
        image: absolute path of the image.
        mask: absolute path of the raw mask file, ``None`` for authentic images (or a missing mask when
            ``label`` is 1: the checker reports it).
        label: 1 manipulated, 0 authentic.
        source: the ``source`` name written into the manifest.
        decoder: name of the mask decoder (see the module docstring).
        decoder_args: keyword arguments of the decoder, as ``((key, value), ...)``.
        ignore_band: ``(low, high)`` of soft masks (see :class:`webiml.data.masks.IgnoreBand`).
        weight: per-sample loss weight.
        extra: extra manifest keys (e.g. ``qes``).
        cache_name: relative path of the converted mask in the cache folder (default: derived from the mask).
    """

    image: str
    mask: str | None = None
    label: int = 0
    source: str = "default"
    decoder: str = "plain"
    decoder_args: tuple[tuple[str, Any], ...] = ()
    ignore_band: tuple[int, int] | None = None
    weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    cache_name: str | None = None


class Source:
    """A dataset layout. Subclasses set :attr:`name`, :attr:`title`, :attr:`options` and implement :meth:`scan`.

    The module docstring of each source shows its directory tree as distributed. Options are passed as
    keyword arguments (``get_source("tampcoco", subsets="sp,cm")``, ``--opt subsets=sp,cm`` on the CLI).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    masks: ClassVar[str] = "plain"
    """One line on how masks are read (shown by ``webiml data sources``)."""
    options: ClassVar[dict[str, str]] = {}
    """Accepted options and their help text; values arrive as strings from the CLI."""

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"source {self.name!r}: unknown option(s) {sorted(unknown)}; accepted: {allowed}")
        self.opts = dict(options)

    def option(self, key: str, default: Any = None) -> Any:
        return self.opts.get(key, default)

    def flag(self, key: str, default: bool) -> bool:
        value = self.opts.get(key, default)
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "y", "on")
        return bool(value)

    def listed(self, key: str, default: Iterable[str]) -> list[str]:
        value = self.opts.get(key)
        if value is None:
            return list(default)
        items = value.split(",") if isinstance(value, str) else list(value)
        return [str(v).strip() for v in items if str(v).strip()]

    @property
    def layout(self) -> str:
        """The documented directory tree (the defining module's docstring)."""
        import sys

        module = sys.modules.get(type(self).__module__)
        return (getattr(module, "__doc__", None) or "").strip()

    def scan(self, root: Path, report: Reporter) -> Iterator[Candidate]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.opts.items())})"


# ---------------------------------------------------------------------------------------------------------
# finding files


def _hidden(name: str) -> bool:
    # macOS resource forks ("._x.jpg"), dot files and Windows thumbnails ship inside many dataset archives.
    return name.startswith(".") or name.lower() in ("thumbs.db", "desktop.ini")


def _subdirs(folder: str, root: str, seen: set[tuple[int, int]]) -> list[str]:
    """The sub-folders of ``folder`` to descend into, sorted: hidden ones, links to folders outside ``root``
    (a real path) and folders already visited (a link loop, e.g. a link to ``..``) are skipped."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:  # vanished, not a folder, no permission, too many levels of links
        return []
    out: list[str] = []
    for e in entries:
        try:
            if _hidden(e.name) or not e.is_dir():
                continue
            if e.is_symlink():
                real = os.path.realpath(e.path)
                if os.path.commonpath([real, root]) != root:
                    continue
            st = os.stat(e.path)
        except (OSError, ValueError):
            continue
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            out.append(e.path)
    return out


def _walk_start(folder: Path) -> tuple[str, set[tuple[int, int]]]:
    root = os.path.realpath(folder)
    try:
        st = os.stat(root)
        return root, {(st.st_dev, st.st_ino)}
    except OSError:
        return root, set()


def list_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES, recursive: bool = True) -> list[Path]:
    """Files under ``folder`` whose suffix (case-insensitive) is in ``suffixes``, sorted; hidden files skipped.
    Each folder is listed once: links to folders outside ``folder`` and link loops are not followed."""
    out: list[str] = []
    root, seen = _walk_start(folder)
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for e in entries:
            try:
                if _hidden(e.name) or e.is_dir():
                    continue
            except OSError:
                continue
            if os.path.splitext(e.name)[1].lower() in suffixes:
                out.append(e.path)
        if recursive:
            stack += _subdirs(current, root, seen)
    return [Path(p) for p in sorted(out)]


def find_dirs(root: Path, *patterns: str, depth: int = 3) -> list[Path]:
    """Folders under ``root`` (itself included, up to ``depth`` levels) whose lower-cased name matches one
    of the glob ``patterns`` (lower-case), shallowest first, then sorted by path. Links to folders outside
    ``root`` and link loops are not followed."""
    found: list[Path] = []
    real_root, seen = _walk_start(root)
    level = [root]
    for d in range(depth + 1):
        nxt: list[Path] = []
        for folder in level:
            if d > 0 and any(fnmatch.fnmatchcase(folder.name.lower(), p) for p in patterns):
                found.append(folder)
            if d < depth:
                nxt += [Path(p) for p in _subdirs(str(folder), real_root, seen)]
        level = nxt
    if any(fnmatch.fnmatchcase(root.name.lower(), p) for p in patterns):
        found.insert(0, root)
    return found


def find_dir(root: Path, *patterns: str, depth: int = 3) -> Path | None:
    dirs = find_dirs(root, *patterns, depth=depth)
    return dirs[0] if dirs else None


def stem_key(path: Path | str, name_suffixes: tuple[str, ...] = MASK_NAME_SUFFIXES) -> str:
    """The pairing key of a file: its lower-cased stem with mask-name suffixes (``_gt``, ``_mask``, ...) removed."""
    s = os.path.splitext(os.path.basename(str(path)))[0].lower()
    changed = True
    while changed:
        changed = False
        for suf in name_suffixes:
            if s.endswith(suf) and len(s) > len(suf):
                s = s[: -len(suf)]
                changed = True
    return s


def pair_by_key(
    images: Iterable[Path],
    masks: Iterable[Path],
    report: Reporter,
    key: Callable[[Path], str] = stem_key,
) -> dict[Path, Path | None]:
    """Pair images with masks by ``key`` (by default the file stem without ``_gt``/``_mask``-style suffixes),
    never by sort order. Images without a mask map to ``None``; masks without an image are reported
    (``orphan_mask``); two masks with one key are reported (``ambiguous_mask``) and the one whose stem equals
    the image's stem, else the first in sorted order, is used."""
    by_key: dict[str, list[Path]] = {}
    for m in masks:
        by_key.setdefault(key(m), []).append(m)
    out: dict[Path, Path | None] = {}
    used: set[str] = set()
    for img in images:
        k = key(img)
        options = by_key.get(k)
        if not options:
            out[img] = None
            continue
        used.add(k)
        if len(options) > 1:
            exact = [m for m in options if m.stem.lower() == img.stem.lower()]
            chosen = (exact or sorted(options))[0]
            report("ambiguous_mask", str(img), f"{len(options)} masks match: {', '.join(m.name for m in options)}; using {chosen.name}")
            out[img] = chosen
        else:
            out[img] = options[0]
    for k, ms in by_key.items():
        if k not in used:
            for m in ms:
                report("orphan_mask", str(m), "mask without a matching image (ignored)")
    return out


def sanitize_name(name: str) -> str:
    """A source name from a folder or file name: lower case, runs of other characters as '-'."""
    return re.sub(r"[^a-z0-9._+]+", "-", name.lower()).strip("-") or "default"


def tampered_candidates(
    pairs: dict[Path, Path | None], source: str, decoder: str = "plain", **kwargs: Any
) -> Iterator[Candidate]:
    for img, mask in pairs.items():
        yield Candidate(str(img), None if mask is None else str(mask), 1, source, decoder, **kwargs)


def authentic_candidates(images: Iterable[Path], source: str, **kwargs: Any) -> Iterator[Candidate]:
    for img in images:
        yield Candidate(str(img), None, 0, source, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# mask decoders


def _scale_binary(m: np.ndarray) -> tuple[np.ndarray, bool]:
    """0/1 masks become 0/255 (converted); others are returned as they are."""
    if m.size and int(m.max()) == 1:
        return (m * 255).astype(np.uint8), True
    return m, False


def decode_plain(path: str) -> tuple[np.ndarray, bool]:
    return _scale_binary(read_mask(path))


def decode_inverted(path: str) -> tuple[np.ndarray, bool]:
    m, _ = _scale_binary(read_mask(path))
    return (255 - m).astype(np.uint8), True


def decode_nonzero(path: str) -> tuple[np.ndarray, bool]:
    m = read_mask(path)
    return ((m > 0) * 255).astype(np.uint8), True


def decode_green(path: str, threshold: int = 128) -> tuple[np.ndarray, bool]:
    """Columbia's edge maps: the manipulated region is the one bright in the green channel (JPEG-coded, so
    thresholded at mid-level rather than at > 0)."""
    rgb = orient_array(*decode_file(path, "mask", lambda im: np.asarray(im.convert("RGB"))))
    return ((rgb[..., 1] >= threshold) * 255).astype(np.uint8), True


def decode_levels3(path: str, collateral: str = "manipulated", low: int = 10, high: int = 200) -> tuple[np.ndarray, bool]:
    """3-level maps: ``<= low`` authentic, ``>= high`` changed (manipulated), in between "collateral damage",
    mapped by ``collateral``: ``"manipulated"`` (255), ``"authentic"`` (0) or ``"ignore"`` (128, to be used
    with the ignore band (127, 129))."""
    m = read_mask(path)
    out = np.zeros_like(m)
    out[m >= high] = 255
    grey = (m > low) & (m < high)
    value = {"manipulated": 255, "authentic": 0, "ignore": 128}.get(collateral)
    if value is None:
        raise ValueError(f"collateral must be manipulated, authentic or ignore, got {collateral!r}")
    out[grey] = value
    return out, True


def decode_npz(path: str) -> tuple[np.ndarray, bool]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if not keys:
                raise ImageReadError(f"{path}: empty .npz archive")
            key = next((k for k in ("arr_0", "mask", "gt") if k in keys), keys[0])
            arr = np.asarray(z[key])
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError) as err:
        raise ImageReadError(f"{path}: cannot read .npz mask ({err})") from None
    arr = np.squeeze(arr)
    if arr.ndim == 3:
        arr = arr.max(axis=-1) if arr.shape[-1] <= 4 else arr.max(axis=0)
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: .npz mask has shape {arr.shape}, expected (H, W)")
    return ((arr > 0) * 255).astype(np.uint8), True


DECODERS: dict[str, Callable[..., tuple[np.ndarray, bool]]] = {
    "plain": decode_plain,
    "inverted": decode_inverted,
    "nonzero": decode_nonzero,
    "green": decode_green,
    "levels3": decode_levels3,
    "npz": decode_npz,
}


def decode_mask(candidate: Candidate) -> tuple[np.ndarray, bool]:
    """Decode the raw mask of ``candidate`` into the project convention; ``(mask, needs_conversion)``."""
    if candidate.mask is None:
        raise ValueError("candidate has no mask")
    try:
        fn = DECODERS[candidate.decoder]
    except KeyError:
        raise ValueError(f"unknown mask decoder {candidate.decoder!r}; known: {sorted(DECODERS)}") from None
    return fn(candidate.mask, **dict(candidate.decoder_args))


def scan_paired(
    source: str,
    tampered: Path | Iterable[Path],
    masks: Path | Iterable[Path] | None,
    authentic: Path | Iterable[Path] | None,
    report: Reporter,
    decoder: str = "plain",
    key: Callable[[Path], str] = stem_key,
    **kwargs: Any,
) -> Iterator[Candidate]:
    """Candidates of the common layout "a folder of manipulated images, a folder of masks paired by stem,
    a folder of authentic images". Folders (or explicit file lists) may be ``None``."""
    tp = list_files(tampered) if isinstance(tampered, Path) else sorted(tampered)
    gt: list[Path] = []
    if masks is not None:
        gt = list_files(masks, MASK_SUFFIXES) if isinstance(masks, Path) else sorted(masks)
    yield from tampered_candidates(pair_by_key(tp, gt, report, key), source, decoder, **kwargs)
    if authentic is not None:
        au = list_files(authentic) if isinstance(authentic, Path) else sorted(authentic)
        yield from authentic_candidates(au, source, **{k: v for k, v in kwargs.items() if k in ("extra",)})


def require_dir(root: Path, what: str, *patterns: str, depth: int = 3) -> Path:
    """:func:`find_dir` that raises a clear error naming the folder it looked for."""
    found = find_dir(root, *patterns, depth=depth)
    if found is None:
        raise FileNotFoundError(f"{root}: no {what} folder (looked for {', '.join(repr(p) for p in patterns)} "
                                f"up to {depth} levels deep)")
    return found
