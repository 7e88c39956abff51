"""``webiml data sources|index|stats|verify``: datasets into manifests, and manifests inspected.

- ``webiml data sources [NAME]``: the dataset sources (or one source's documented layout and options).
- ``webiml data index SOURCE ROOT -o manifest.jsonl [--policy fix|skip|fail] [--workers N] [--check full|header|none]
  [--sha256] [--name NAME] [--opt KEY=VALUE ...]``: scan a dataset as distributed, check every file, convert
  masks that need it, write the manifest; a summary of problems at the end (exit 1 under ``--policy fail``
  when there are problems).
- ``webiml data stats MANIFEST...``: counts per source and label, image sizes, manipulated-area histogram.
- ``webiml data verify MANIFEST...``: files against the sha256 recorded by ``index --sha256``; exit 1 when a
  file is missing or changed.

Manifests of the benchmark protocols live under ``data/manifests/`` by convention (see
``configs/protocols/``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from webiml.cli import register_verb, split_key_value, text_table


def _options(pairs: Sequence[str]) -> dict[str, str]:
    try:
        return dict(split_key_value(p) for p in pairs)
    except ValueError as err:
        raise ValueError(f"--opt: {err}") from None


# ------------------------------------------------------------------------------------------------------------
# sources


def _sources(name: str | None) -> int:
    from webiml.data.sources import SOURCES, get_source

    if name:
        try:
            src = get_source(name)
        except KeyError as err:
            print(err.args[0], file=sys.stderr)
            return 2
        print(f"{src.name}: {src.title}\nmasks: {src.masks}\n")
        print(src.layout)
        if src.options:
            print("\noptions (--opt KEY=VALUE):")
            for k, v in src.options.items():
                print(f"  {k:<12} {v}")
        return 0
    rows = [[n, s.title, s.masks, ",".join(s.options) or "-"] for n, s in SOURCES.items()]
    print(text_table(rows, ["source", "layout", "masks", "options"], "llll"))
    print("\n`webiml data sources NAME` shows the directory tree a source expects.")
    return 0


# ------------------------------------------------------------------------------------------------------------
# index


def _index(args: argparse.Namespace) -> int:
    from webiml.data.sources import IndexingFailed, index_source

    try:
        options = _options(args.opt)
        result = index_source(
            args.source, args.root, args.output, policy=args.policy, workers=args.workers, check=args.check,
            sha256=args.sha256, name=args.name, cache_dir=args.cache, options=options, only=args.only,
        )
    except IndexingFailed as err:
        print(str(err), file=sys.stderr)
        return 1
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"webiml data index: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


# ------------------------------------------------------------------------------------------------------------
# stats

SIZE_BINS = (256, 512, 1024, 2048, 4096)
AREA_BINS = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 1.0)


def _size_and_area(record: Any) -> tuple[tuple[int, int] | None, float | None]:
    from PIL import Image

    from webiml.io import read_mask

    size = None
    w, h = record.extra.get("width"), record.extra.get("height")
    if isinstance(w, int) and isinstance(h, int):
        size = (w, h)
    else:
        try:
            with Image.open(record.image) as im:
                size = im.size
        except Exception:  # reported as unreadable in the table
            size = None
    area = record.extra.get("area")
    if not isinstance(area, int | float):
        area = None
        if record.mask is None:
            area = 0.0
        else:
            try:
                m = read_mask(record.mask)
                area = float((m >= record.band.high).mean())
            except Exception:
                area = None
    return size, area


def manifest_stats(records: Sequence[Any], workers: int = 4) -> str:
    """The text report of ``webiml data stats``."""
    with ThreadPoolExecutor(max(1, workers)) as ex:
        info = list(ex.map(_size_and_area, records))
    out: list[str] = []
    counts = Counter((r.source, r.label) for r in records)
    sources = sorted({r.source for r in records})
    rows = []
    for s in sources:
        m, a = counts[(s, 1)], counts[(s, 0)]
        soft = sum(1 for r in records if r.source == s and r.ignore_band is not None)
        weights = [r.weight for r in records if r.source == s]
        rows.append([s, m, a, m + a, soft, f"{statistics.fmean(weights):.3f}"])
    total_m = sum(c for (_, lab), c in counts.items() if lab == 1)
    rows.append(["total", total_m, len(records) - total_m, len(records),
                 sum(1 for r in records if r.ignore_band is not None),
                 f"{statistics.fmean([r.weight for r in records]):.3f}" if records else "-"])
    out.append(text_table(rows, ["source", "manipulated", "authentic", "total", "soft masks", "mean weight"]))

    sizes = [s for s, _ in info if s is not None]
    unreadable = sum(1 for s, _ in info if s is None)
    out.append("")
    if sizes:
        longs = [max(s) for s in sizes]
        labels = [f"< {SIZE_BINS[0]}"] + [f"{a}-{b - 1}" for a, b in zip(SIZE_BINS, SIZE_BINS[1:], strict=False)] + [f">= {SIZE_BINS[-1]}"]
        bins = Counter(next((lab for lab, b in zip(labels, SIZE_BINS, strict=False) if x < b), labels[-1]) for x in longs)
        ws, hs = [s[0] for s in sizes], [s[1] for s in sizes]
        out.append(f"image sizes (width x height): min {min(ws)}x{min(hs)}, median {int(statistics.median(ws))}x"
                   f"{int(statistics.median(hs))}, max {max(ws)}x{max(hs)}; {len(Counter(sizes))} distinct sizes")
        out.append(text_table([[lab, bins[lab], _bar(bins[lab], len(sizes))] for lab in labels],
                          ["long side", "images", ""], "lrl"))
    if unreadable:
        out.append(f"unreadable images: {unreadable}")

    areas = [a for (_, a), r in zip(info, records, strict=True) if r.label == 1 and a is not None]
    out.append("")
    if areas:
        lows = (0.0, *AREA_BINS[:-1])
        rows = []
        for lo, hi in zip(lows, AREA_BINS, strict=True):
            n = sum(1 for a in areas if lo <= a < hi or (hi == 1.0 and a == 1.0))
            rows.append([f"{lo * 100:g}-{hi * 100:g} %", n, _bar(n, len(areas))])
        out.append(f"manipulated area of {len(areas)} manipulated images: mean {statistics.fmean(areas) * 100:.1f} %, "
                   f"median {statistics.median(areas) * 100:.1f} %")
        out.append(text_table(rows, ["area", "images", ""], "lrl"))
    return "\n".join(out)


def _bar(n: int, total: int, width: int = 30) -> str:
    return "#" * round(width * n / total) if total else ""


def _stats(args: argparse.Namespace) -> int:
    from webiml.data.manifest import ManifestError, read_manifest

    try:
        records = [r for m in args.manifest for r in read_manifest(m)]
    except (FileNotFoundError, ManifestError) as err:
        print(f"webiml data stats: {err}", file=sys.stderr)
        return 2
    print(f"{len(records)} records in {', '.join(args.manifest)}\n")
    print(manifest_stats(records, args.workers))
    return 0


# ------------------------------------------------------------------------------------------------------------
# verify


def _verify_one(job: tuple[str, str | None]) -> str:
    from webiml.io import sha256_file

    path, expected = job
    if not os.path.isfile(path):
        return "missing"
    if expected is None:
        return "unrecorded"
    return "ok" if sha256_file(path) == expected else "changed"


def verify_records(records: Sequence[Any], workers: int = 4) -> dict[str, list[str]]:
    """``{"ok"|"changed"|"missing"|"unrecorded": [paths]}`` for every image and mask of ``records``."""
    jobs: list[tuple[str, str | None]] = []
    for r in records:
        jobs.append((r.image, r.extra.get("sha256")))
        if r.mask is not None:
            jobs.append((r.mask, r.extra.get("mask_sha256")))
    with ThreadPoolExecutor(max(1, workers)) as ex:
        states = list(ex.map(_verify_one, jobs))
    out: dict[str, list[str]] = {"ok": [], "changed": [], "missing": [], "unrecorded": []}
    for (path, _), state in zip(jobs, states, strict=True):
        out[state].append(path)
    return out


def _verify(args: argparse.Namespace) -> int:
    from webiml.data.manifest import ManifestError, read_manifest

    bad = 0
    for manifest in args.manifest:
        try:
            records = read_manifest(manifest)
        except (FileNotFoundError, ManifestError) as err:
            print(f"webiml data verify: {err}", file=sys.stderr)
            return 2
        res = verify_records(records, args.workers)
        print(f"{manifest}: {len(res['ok'])} ok, {len(res['changed'])} changed, {len(res['missing'])} missing, "
              f"{len(res['unrecorded'])} without a recorded sha256 (existence checked only)")
        for state in ("changed", "missing"):
            for p in res[state][: args.max_list]:
                print(f"  {state:<8} {p}")
            if len(res[state]) > args.max_list:
                print(f"  ... {len(res[state]) - args.max_list} more {state}")
        if res["unrecorded"] and not (res["ok"] or res["changed"]):
            print("  no sha256 recorded: index with `webiml data index ... --sha256` to verify contents")
        bad += len(res["changed"]) + len(res["missing"])
    return 1 if bad else 0


# ------------------------------------------------------------------------------------------------------------


@register_verb("data", "dataset sources and manifests (data sources | index | stats | verify)")
def data(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="webiml data", description="Benchmark datasets into manifests, and manifests inspected.")
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("sources", help="list the dataset sources, or show one source's layout")
    p.add_argument("name", nargs="?", help="a source name: show its directory tree and options")

    p = sub.add_parser("index", help="index a dataset (as distributed) into a manifest",
                       description="Scan ROOT with SOURCE, check every file, convert masks that need it into "
                       "<manifest stem>_masks/ next to the manifest, and write the manifest.")
    p.add_argument("source", help="source name (see `webiml data sources`)")
    p.add_argument("root", help="the dataset folder as distributed (a .json file for the benco source)")
    p.add_argument("-o", "--output", required=True, help="manifest to write (.jsonl), e.g. data/manifests/casia2.jsonl")
    p.add_argument("--policy", choices=("fix", "skip", "fail"), default="fix",
                   help="what to do with problem files: fix (resize masks, skip what cannot be fixed), skip, fail")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel check processes")
    p.add_argument("--check", choices=("full", "header", "none"), default="full",
                   help="full: decode everything; header: image headers only; none: existence only")
    p.add_argument("--sha256", action="store_true", help="record sha256 of every file (for `webiml data verify`)")
    p.add_argument("--name", help="source name written into the records (default: the source's own)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="source option (repeatable)")
    p.add_argument("--only", choices=("manipulated", "authentic"), help="keep only these samples")
    p.add_argument("--cache", help="folder for converted masks (default: <manifest stem>_masks/ next to it)")

    p = sub.add_parser("stats", help="counts, image sizes and manipulated-area histogram of manifests")
    p.add_argument("manifest", nargs="+")
    p.add_argument("--workers", type=int, default=4, help="threads reading sizes/masks not recorded in the manifest")

    p = sub.add_parser("verify", help="check files against the sha256 recorded by `index --sha256`")
    p.add_argument("manifest", nargs="+")
    p.add_argument("--workers", type=int, default=4, help="hashing threads")
    p.add_argument("--max-list", type=int, default=20, help="changed/missing files listed per manifest")

    args = parser.parse_args(argv)
    if args.action == "sources":
        return _sources(args.name)
    if args.action == "index":
        return _index(args)
    if args.action == "stats":
        return _stats(args)
    return _verify(args)
