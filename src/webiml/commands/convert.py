"""``webiml convert MODEL CHECKPOINT OUT_DIR``: upstream checkpoint -> webiml model directory.

Example: ``webiml convert apsc-net APSC-Net.pth weights/apsc-net`` reads the MIML authors' mmcv
checkpoint safely (``torch.load(weights_only=True)``), maps its keys, checks every shape, loads it
strictly and writes ``config.json`` + ``model.safetensors``, loadable with
``APSCNet.from_pretrained(OUT_DIR)``.

Constructor arguments that the weights cannot tell are given with ``--option KEY=VALUE`` (repeatable; the
value is read as YAML: ``--option input_size=null`` runs MVSS-Net / Mesorch / SparseViT at native resolution
instead of the authors' 512 x 512 resize).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webiml.cli import register_verb


def _parser() -> argparse.ArgumentParser:
    from webiml.convert import CONVERTERS

    parser = argparse.ArgumentParser(
        prog="webiml convert",
        description="Convert an upstream checkpoint into a webiml model directory (config.json + model.safetensors).",
    )
    parser.add_argument("model", choices=sorted(CONVERTERS), help="; ".join(f"{k}: {d}" for k, (d, _) in sorted(CONVERTERS.items())))
    parser.add_argument("checkpoint", help="upstream checkpoint file (read with torch.load(weights_only=True)); for "
                        "pscc-net the folder of its three files, or the three files comma-separated")
    parser.add_argument("out_dir", help="output directory for config.json and model.safetensors")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a constructor argument the weights cannot tell, value read as YAML (e.g. input_size=null); repeatable")
    return parser


def parse_options(options: list[str]) -> dict[str, Any]:
    """``["input_size=null", "size=tiny"]`` -> ``{"input_size": None, "size": "tiny"}`` (values read as YAML)."""
    import yaml

    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--option {option!r}: expected KEY=VALUE with KEY an argument name")
        try:
            parsed[key.strip()] = None if value.strip() == "None" else yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--option {option!r}: the value is not valid YAML") from None
    return parsed


@register_verb("convert", "convert an upstream checkpoint (e.g. apsc-net) to a webiml model directory")
def run(argv: list[str]) -> int:
    from webiml.convert import ConversionError, get_converter

    args = _parser().parse_args(argv)
    try:
        options = parse_options(args.option)
    except ValueError as err:
        print(f"webiml convert: error: {err}", file=sys.stderr)
        return 2
    try:
        model = get_converter(args.model)(args.checkpoint, args.out_dir, **options)
    except ConversionError as err:
        print(f"webiml convert: error: {err}", file=sys.stderr)
        return 1
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out_dir} ({type(model).__name__}, {n:,} parameters)")
    return 0
