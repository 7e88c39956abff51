"""``webiml annotate PAIRS -o OUT``: automatic annotation of (original, forged) pairs with QES filtering.

PAIRS is a folder of pair folders (each with ``original.*`` + ``forged.*``, or the MIML authors'
``0.jpg`` = original + ``1.jpg`` = forged), a CSV with columns ``original,forged[,id]`` or a JSON Lines
file with the same keys (paths relative to the file). Per pair it writes the soft mask
``OUT/masks/<id>.png`` (0..255), and at the end ``OUT/annotations.jsonl`` (every pair: category, QES,
kept, errors), ``OUT/manifest.jsonl`` (the pairs with QES above the threshold, ready for
``webiml fit``), ``OUT/summary.json`` and a contact sheet ``OUT/index.html``.

The run goes through Lightning prediction: ``--devices 8 --strategy ddp`` (and ``--num-nodes``) spread
the pairs over GPUs/nodes, each rank writing its own shard. A killed run restarted with the same command
resumes: pairs already written are not redone. Unreadable pairs are reported and skipped.

Examples::

    webiml annotate web-pairs/pairs -o annotated                       # CAAAv2 with the parts shipped in webiml
    webiml annotate web-pairs/pairs -o annotated-naive --annotator baseline
    webiml annotate pairs.csv -o annotated --annotator caaa --checkpoint runs/caaa/parts --qes-weight
    webiml annotate pairs/ -o annotated-v1 --annotator caaa-v1 --checkpoint caaa-v1  # the authors' CAAA

``caaa`` is webiml's reconstruction of CAAAv2 (MIMLv2 paper; its weights are unreleased, webiml trains its own);
``caaa-v1`` runs the MIML authors' CAAA (CVPR 2024) with their weights, converted by ``webiml convert
caaa-v1-classifier convxl.pth DIR/classifier``, ``caaa-v1-dass DASS.pth DIR/dass``, ``caaa-v1-sacm SAFM.pth DIR/sacm``.
"""

from __future__ import annotations

import argparse
import json

from webiml.cli import register_verb, split_key_value


def _option(text: str) -> tuple[str, object]:
    try:
        key, value = split_key_value(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="webiml annotate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs", help="folder of pair folders, pairs CSV (original,forged[,id]) or JSON Lines")
    p.add_argument("-o", "--out", required=True, help="output folder (an existing one is resumed)")
    p.add_argument("--annotator", choices=("caaa", "caaa-v1", "baseline"), default=None,
                   help="caaa: webiml's reconstruction of CAAAv2 (classifier + registration + SPG/SDG segmenters, "
                        "trained by webiml); caaa-v1: the MIML authors' CAAA with their converted weights (ConvNeXt-XL "
                        "classifier, DASS, SACM); baseline: aligned difference (default: caaa, with the parts shipped in webiml unless --checkpoint)")
    p.add_argument("--checkpoint", default=None,
                   help="caaa: a folder with save_pretrained subfolders classifier/, spg/, sdg/ (default: the parts shipped "
                        "in webiml, catalogue caaa-v2-lite0-*; 'random': random weights, to test the pipeline); caaa-v1 (required): a folder with classifier/, dass/, sacm/ "
                        "from webiml convert caaa-v1-classifier / caaa-v1-dass / caaa-v1-sacm")
    p.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="annotator constructor argument (JSON value), e.g. --option threshold=30 or --option tta=false")
    p.add_argument("--qes-threshold", type=float, default=0.5, help="keep pairs with QES above this (default 0.5)")
    p.add_argument("--qes-low", type=float, default=1 / 16, help="QES: probability counted as marked (default 1/16)")
    p.add_argument("--qes-high", type=float, default=15 / 16, help="QES: probability counted as confident (default 15/16)")
    p.add_argument("--qes-weight", action="store_true",
                   help="use the QES as the manifest's sample weight (webiml's option; default: every kept sample weighs 1, as the authors)")
    p.add_argument("--ignore-band", type=int, nargs=2, default=(7, 193), metavar=("LOW", "HIGH"),
                   help="soft-label ignore band written into the manifest (default 7 193)")
    p.add_argument("--source", default="annotated", help="manifest source name (default: annotated)")
    p.add_argument("--report-limit", type=int, default=200, help="pairs in the contact sheet index.html (0: none)")
    p.add_argument("--limit", type=int, default=None, help="annotate only the first N pairs")
    p.add_argument("--batch-size", type=int, default=1, help="pairs per prediction step")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes per rank")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (Lightning)")
    p.add_argument("--devices", type=_devices, default="auto", help="devices per node (Lightning), e.g. 8 or auto")
    p.add_argument("--num-nodes", type=int, default=1, help="nodes (Lightning)")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@register_verb("annotate", "annotate (original, forged) pairs: soft masks, QES, a training manifest")
def annotate(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from webiml.annotate.pair_sources import PairSourceError
    from webiml.annotate.pipeline import annotate_pairs
    from webiml.annotate.qes import QESConfig

    name = args.annotator or "caaa"
    try:
        qcfg = QESConfig(low=args.qes_low, high=args.qes_high, threshold=args.qes_threshold)
        summary = annotate_pairs(
            args.pairs, args.out, annotator=name, checkpoint=args.checkpoint,
            annotator_kwargs=dict(args.option), qes_config=qcfg, ignore_band=tuple(args.ignore_band),
            qes_weight=args.qes_weight, source=args.source, report_limit=args.report_limit, limit=args.limit,
            batch_size=args.batch_size, num_workers=args.workers, accelerator=args.accelerator, devices=args.devices,
            num_nodes=args.num_nodes, strategy=args.strategy, progress=not args.no_progress,
        )
    except (PairSourceError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}")
        return 2
    if summary is not None:
        print(summary.text())
    return 0
