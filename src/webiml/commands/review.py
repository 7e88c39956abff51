"""``webiml review OUT``: accept or reject the pairs of a ``webiml annotate`` output folder in a browser.

Serves a page on 127.0.0.1 (a free port, or --port) listing the annotated pairs by QES, each as original,
forgery, soft mask and overlay. Keys: a accept, r reject, u undo (back to the QES rule), arrows or j / k to
move. Every decision is saved at once, atomically: into OUT/review.json and into OUT/manifest.jsonl, the
manifest of kept samples that ``webiml fit`` trains on (accepting adds the pair's record, rejecting removes it).
On start the manifest is brought in line with the saved decisions (e.g. after ``webiml annotate`` merged the
folder again); --apply does only that and exits.

Examples::

    webiml review annotated
    webiml review annotated --port 8765 --lowest-first
"""

from __future__ import annotations

import argparse

from webiml.cli import register_verb


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="webiml review", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder of `webiml annotate` (with annotations.jsonl)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--lowest-first", action="store_true", help="lowest QES first (default: highest first)")
    p.add_argument("--apply", action="store_true",
                   help="only apply the saved decisions (review.json) to manifest.jsonl, then exit")
    return p


@register_verb("review", "accept / reject annotated pairs in a local page; decisions update the training manifest")
def review(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from webiml.annotate.review import DECISIONS_FILE, ReviewStore, serve

    if args.apply:
        store = ReviewStore(args.out)
        added, removed = store.sync()
        c = store.counts()
        print(f"{DECISIONS_FILE}: {c['accepted']} accepted, {c['rejected']} rejected; manifest.jsonl: {added} added, "
              f"{removed} removed, {c['in_manifest']} pairs in it")
        return 0
    serve(args.out, args.port, lowest_first=args.lowest_first)
    return 0
