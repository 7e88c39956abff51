"""Indexing: a source's candidates in, checked manifest records (and converted masks) out.

Every candidate is checked (in parallel worker processes with ``workers > 1``). Problems are reported
with the file name and handled by a policy:

==================  ===============================================  ===========  =========
problem             meaning                                          ``fix``      ``skip``
==================  ===============================================  ===========  =========
unreadable_image    the image cannot be opened / decoded             skipped      skipped
unreadable_mask     the mask cannot be decoded                       skipped      skipped
missing_mask        a manipulated image has no mask                  skipped      skipped
size_mismatch       mask and image sizes differ                      mask resized skipped
                                                                     (nearest)
empty_mask          a manipulated image's mask marks no pixel        skipped      skipped
full_mask           every pixel is marked (often a polarity error)   kept         skipped
==================  ===============================================  ===========  =========

``fail`` collects every problem, writes nothing and raises :class:`IndexingFailed`. Scan-time findings
(``orphan_mask``, ``ambiguous_mask``) are warnings and never drop a sample.

How much is checked (``check``):

- ``full`` (default): image and mask fully decoded: catches truncated files, sizes, empty/full masks.
- ``header``: image header only (format and size; truncated pixel data is not noticed), masks fully decoded.
- ``none``: images and plain masks only checked to exist; masks that need conversion are still decoded.

Records get extra keys ``width``/``height`` (when the image was opened), ``area`` (manipulated fraction,
when the mask was decoded), ``mask_source`` (the raw mask of a converted one) and, with ``sha256=True``,
``sha256``/``mask_sha256`` (verified by ``webiml data verify``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from webiml.data.manifest import ManifestRecord, write_manifest
from webiml.data.masks import BINARY, IgnoreBand
from webiml.data.sources.base import Candidate, Source, decode_mask
from webiml.io import ImageReadError, atomic_write_text, check_pixels, save_image, sha256_file

POLICIES = ("fix", "skip", "fail")
CHECKS = ("full", "header", "none")
ERRORS = ("unreadable_image", "unreadable_mask", "missing_mask", "size_mismatch", "empty_mask", "full_mask")
WARNINGS = ("orphan_mask", "ambiguous_mask")
_FIX_ACTION = {
    "unreadable_image": "skipped",
    "unreadable_mask": "skipped",
    "missing_mask": "skipped",
    "size_mismatch": "fixed",
    "empty_mask": "skipped",
    "full_mask": "kept",
}


@dataclass(frozen=True)
class Problem:
    """A finding about one file: ``kind`` (see the module table), the file, a message and what was done."""

    kind: str
    path: str
    message: str
    action: str = "warning"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "message": self.message, "action": self.action}


class IndexingFailed(RuntimeError):
    """Raised under policy ``fail`` when any problem was found; ``problems`` lists them all."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = [f"  {p.kind}: {p.path}: {p.message}" for p in self.problems[:20]]
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{len(self.problems)} problem(s) found (policy 'fail'); nothing written:\n" + "\n".join(lines) + more)


@dataclass(frozen=True)
class CheckOptions:
    policy: str = "fix"
    check: str = "full"
    sha256: bool = False
    cache_dir: str = "masks"
    root: str = "."


def image_size(path: str, check: str) -> tuple[int, int] | None:
    """``(width, height)`` of an image, reading as much as ``check`` asks; ``None`` when not opened."""
    if check == "none":
        if not os.path.isfile(path):
            raise ImageReadError(f"{path}: file not found")
        return None
    try:
        with Image.open(path) as im:
            check_pixels(path, im.size)  # from the header: a decompression bomb is never decoded
            if check == "full":
                im.load()
            return im.size
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: cannot decode image ({err})") from None


def _cache_name(c: Candidate, root: str) -> str:
    if c.cache_name:
        return c.cache_name
    assert c.mask is not None
    try:
        rel = Path(os.path.relpath(c.mask, root))
        if rel.parts and rel.parts[0] == "..":
            raise ValueError
    except ValueError:
        rel = Path(Path(c.mask).name)
    return str(Path(c.source) / rel.with_suffix(".png"))


def check_candidate(c: Candidate, opts: CheckOptions) -> tuple[ManifestRecord | None, list[Problem]]:
    """Check one candidate under ``opts``; returns the record to keep (or ``None``) and the problems found."""
    problems: list[Problem] = []

    def problem(kind: str, path: str, message: str) -> str:
        action = {"fail": "fail", "skip": "skipped"}.get(opts.policy) or _FIX_ACTION[kind]
        problems.append(Problem(kind, path, message, action))
        return action

    extra: dict[str, Any] = dict(c.extra)
    try:
        size = image_size(c.image, opts.check)
    except ImageReadError as err:
        problem("unreadable_image", c.image, str(err).removeprefix(f"{c.image}: "))
        return None, problems
    if size is not None:
        extra["width"], extra["height"] = size
    band = IgnoreBand(*c.ignore_band) if c.ignore_band else BINARY
    mask_path = c.mask
    if c.mask is None:
        if c.label == 1:
            problem("missing_mask", c.image, "manipulated image without a mask")
            return None, problems
        extra["area"] = 0.0
    elif not (c.decoder == "plain" and opts.check == "none"):
        try:
            mask, convert = decode_mask(c)
        except ImageReadError as err:
            problem("unreadable_mask", c.mask, str(err).removeprefix(f"{c.mask}: "))
            return None, problems
        if size is not None and mask.shape != (size[1], size[0]):
            msg = f"mask is {mask.shape[1]}x{mask.shape[0]} but image {Path(c.image).name} is {size[0]}x{size[1]}"
            if problem("size_mismatch", c.mask, msg) != "fixed":
                return None, problems
            mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
            convert = True
        manipulated = mask >= band.high
        if c.label == 1 and not manipulated.any():
            if problem("empty_mask", c.mask, f"no pixel >= {band.high} in a manipulated image's mask") != "kept":
                return None, problems
        elif manipulated.size and manipulated.all():
            if problem("full_mask", c.mask, "every pixel is marked manipulated (inverted polarity?)") != "kept":
                return None, problems
        extra["area"] = round(float(manipulated.mean()), 6) if manipulated.size else 0.0
        if convert:
            out = Path(opts.cache_dir) / _cache_name(c, opts.root)
            save_image(out, mask)
            extra["mask_source"] = c.mask
            mask_path = str(out)
    elif not os.path.isfile(c.mask):
        problem("unreadable_mask", c.mask, "file not found")
        return None, problems
    if opts.policy == "fail" and problems:
        return None, problems
    if opts.sha256:
        extra["sha256"] = sha256_file(c.image)
        if mask_path is not None:
            extra["mask_sha256"] = sha256_file(mask_path)
    record = ManifestRecord(c.image, mask_path, c.label, c.source, c.weight,
                            IgnoreBand(*c.ignore_band) if c.ignore_band else None, extra)
    return record, problems


Packed = tuple[tuple[Any, ...] | None, list[Problem]]
_FORKED: Sequence[Candidate] = ()  # candidates inherited by forked workers (no pickling on the way in)


def _pack(result: tuple[ManifestRecord | None, list[Problem]]) -> Packed:
    # Plain tuples pickle several times faster than dataclasses on the way back from a worker.
    r, problems = result
    if r is None:
        return None, problems
    return (r.image, r.mask, r.label, r.source, r.weight, r.ignore_band, r.extra), problems


def _unpack(packed: Packed) -> tuple[ManifestRecord | None, list[Problem]]:
    t, problems = packed
    if t is None:
        return None, problems
    image, mask, label, source, weight, band, extra = t
    return ManifestRecord(image, mask, label, source, weight, IgnoreBand(*band) if band else None, extra), problems


def _check_range(bounds: tuple[int, int], opts: CheckOptions) -> list[Packed]:
    return [_pack(check_candidate(c, opts)) for c in _FORKED[bounds[0]:bounds[1]]]


def _check_chunk(chunk: list[Candidate], opts: CheckOptions) -> list[Packed]:
    return [_pack(check_candidate(c, opts)) for c in chunk]


def run_checks(
    candidates: Sequence[Candidate], opts: CheckOptions, workers: int = 0, min_parallel: int = 64
) -> list[tuple[ManifestRecord | None, list[Problem]]]:
    """Check candidates in order; ``workers > 1`` uses that many processes (chunks of candidates each) when
    there are at least ``min_parallel`` candidates."""
    if workers <= 1 or len(candidates) < max(1, min_parallel):
        return [check_candidate(c, opts) for c in candidates]
    global _FORKED
    size = max(1, min(2048, len(candidates) // (workers * 8)))
    bounds = [(i, min(i + size, len(candidates))) for i in range(0, len(candidates), size)]
    results: list[tuple[ManifestRecord | None, list[Problem]]] = []
    if "fork" in multiprocessing.get_all_start_methods():
        _FORKED = candidates
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as ex:
                for part in ex.map(partial(_check_range, opts=opts), bounds):
                    results += map(_unpack, part)
        finally:
            _FORKED = ()
        return results
    chunks = [list(candidates[a:b]) for a, b in bounds]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        for part in ex.map(partial(_check_chunk, opts=opts), chunks):
            results += map(_unpack, part)
    return results


@dataclass
class IndexResult:
    """What :func:`index_source` did: the kept records, every problem, timings and where it wrote."""

    source: str
    root: Path
    records: list[ManifestRecord]
    problems: list[Problem]
    n_candidates: int
    seconds: float
    manifest: Path | None = None
    cache_dir: Path | None = None
    check: str = "full"
    policy: str = "fix"
    notes: list[str] = field(default_factory=list)
    n_files_checked: int = 0
    """Files looked at: every candidate image plus its mask (if any)."""

    def summary(self, max_per_kind: int = 10) -> str:
        n_manip = sum(r.label for r in self.records)
        rate = self.n_files_checked / self.seconds if self.seconds > 0 else float("inf")
        lines = [
            f"indexed {len(self.records)} of {self.n_candidates} samples from {self.source} ({self.root}): "
            f"{n_manip} manipulated, {len(self.records) - n_manip} authentic",
            f"checked {self.n_files_checked} files in {self.seconds:.2f} s ({rate:,.0f} files/s, check={self.check}, policy={self.policy})",
        ]
        by_source = Counter(r.source for r in self.records)
        if set(by_source) != {self.source}:
            lines.append("records per source name: " + ", ".join(f"{s} {n}" for s, n in sorted(by_source.items())))
        lines += [f"note: {n}" for n in self.notes]
        if not self.problems:
            lines.append("problems: none")
        else:
            counts = Counter((p.kind, p.action) for p in self.problems)
            lines.append("problems: " + ", ".join(f"{n} {k} ({a})" for (k, a), n in sorted(counts.items())))
            shown: Counter[str] = Counter()
            for p in self.problems:
                shown[p.kind] += 1
                if shown[p.kind] <= max_per_kind:
                    lines.append(f"  {p.kind:<16} {_short(p.path, self.root)}: {p.message} [{p.action}]")
            hidden = sum(max(0, n - max_per_kind) for n in shown.values())
            if hidden:
                lines.append(f"  ... {hidden} more (all of them in the problems file next to the manifest)")
        if self.manifest is not None:
            lines.append(f"manifest: {self.manifest}")
        if self.cache_dir is not None and self.cache_dir.exists():
            lines.append(f"converted masks: {self.cache_dir}")
        return "\n".join(lines)


def _short(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def default_cache_dir(manifest: Path) -> Path:
    """Converted masks go to ``<manifest folder>/<manifest stem>_masks/``."""
    return manifest.parent / f"{manifest.stem}_masks"


def index_source(
    source: str | Source,
    root: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    policy: str = "fix",
    workers: int = 0,
    check: str = "full",
    sha256: bool = False,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    options: dict[str, Any] | None = None,
    only: str | None = None,
) -> IndexResult:
    """Index a dataset into a manifest.

    Args:
        source: a source name (see :data:`webiml.data.sources.SOURCES`) or a :class:`Source` instance.
        root: the dataset folder as distributed (a ``.json`` file for the IMDL-BenCo source).
        output: manifest path (``.jsonl``); ``None`` only returns the records (converted masks still go to
            ``cache_dir``, which is then required).
        policy: ``fix``, ``skip`` or ``fail`` (see the module docstring).
        workers: parallel checking processes (0 or 1: in this process).
        check: ``full``, ``header`` or ``none``.
        sha256: record ``sha256``/``mask_sha256`` of every file.
        name: replace the ``source`` name of every record.
        cache_dir: folder for converted masks (default ``<manifest stem>_masks`` next to the manifest).
        options: source options (when ``source`` is a name).
        only: ``"manipulated"`` or ``"authentic"`` keeps only those samples (e.g. to balance a dataset's
            authentic images as a source of their own, with ``name``).
    """
    from webiml.data.sources import get_source

    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    src = get_source(source, **(options or {})) if isinstance(source, str) else source
    root_path = Path(root).expanduser().resolve()
    if not root_path.exists():
        raise FileNotFoundError(f"{root_path}: no such dataset folder")
    manifest = Path(output).expanduser().resolve() if output is not None else None
    if cache_dir is None:
        if manifest is None:
            raise ValueError("index_source needs an output manifest or a cache_dir for converted masks")
        cache = default_cache_dir(manifest)
    else:
        cache = Path(cache_dir).expanduser().resolve()

    t0 = time.perf_counter()
    scan_problems: list[Problem] = []

    def report(kind: str, path: str, message: str) -> None:
        scan_problems.append(Problem(kind, path, message, "warning"))

    candidates = list(src.scan(root_path, report))
    if only is not None:
        if only not in ("manipulated", "authentic"):
            raise ValueError(f"only must be 'manipulated' or 'authentic', got {only!r}")
        candidates = [c for c in candidates if c.label == (only == "manipulated")]
    if name:
        candidates = [_renamed(c, name) for c in candidates]
    if not candidates:
        raise FileNotFoundError(
            f"source {src.name!r} found no images under {root_path}. Expected layout:\n{src.layout}"
        )
    opts = CheckOptions(policy, check, sha256, str(cache), str(root_path))
    results = run_checks(candidates, opts, workers)
    records = [r for r, _ in results if r is not None]
    problems = scan_problems + [p for _, ps in results for p in ps]
    seconds = time.perf_counter() - t0
    result = IndexResult(
        src.name, root_path, records, problems, len(candidates), seconds, None, cache, check, policy,
        list(getattr(src, "notes", [])), n_files_checked=sum(1 + (c.mask is not None) for c in candidates),
    )
    if policy == "fail" and any(p.action == "fail" for p in problems):
        raise IndexingFailed([p for p in problems if p.action == "fail"])
    if manifest is not None:
        # Paths are absolute and resolved already: made relative to the manifest's folder by string
        # operations (write_manifest's per-path resolve() costs more than all checks of a tiny-file tree).
        write_manifest(manifest, _relative(records, manifest.parent), relative_to_manifest=False)
        result.manifest = manifest
        report_path = problems_path(manifest)
        if problems:
            atomic_write_text(report_path, "".join(json.dumps(p.to_json()) + "\n" for p in problems))
        elif report_path.exists():
            report_path.unlink()
    result.seconds = time.perf_counter() - t0  # scan + checks + conversions + writing
    return result


def _relative(records: Sequence[ManifestRecord], folder: Path) -> list[ManifestRecord]:
    base = str(folder) + os.sep

    def rel(p: str | None) -> str | None:
        return p[len(base):] if p is not None and p.startswith(base) else p

    return [ManifestRecord(rel(r.image), rel(r.mask), r.label, r.source, r.weight, r.ignore_band, r.extra)  # type: ignore[arg-type]
            for r in records]


def problems_path(manifest: Path) -> Path:
    return manifest.parent / f"{manifest.stem}.problems.jsonl"


def _renamed(c: Candidate, name: str) -> Candidate:
    from dataclasses import replace

    return replace(c, source=name)


def count_labels(records: Iterable[ManifestRecord]) -> Counter[tuple[str, int]]:
    return Counter((r.source, r.label) for r in records)
