"""``webiml zoo list|info``: the model catalogue as tables."""

from __future__ import annotations

import argparse
import json

from webiml.cli import register_verb, text_table


def _weights_location(weights: dict) -> str:
    """Where a catalogue entry's weights are, in a few words: in the package, on the Hub, or upstream (convert them)."""
    if weights.get("embedded"):
        return "embedded"
    if weights.get("hub"):
        return f"hub:{weights['hub']}"
    if weights.get("upstream"):
        return "upstream; webiml convert" if weights.get("converter") else "upstream"
    return "-"


@register_verb("zoo", "list the model zoo or show one model (zoo list [PATTERN] | zoo info NAME)")
def zoo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="webiml zoo", description="The webiml model catalogue (checkpoints.yaml).")
    sub = parser.add_subparsers(dest="action", required=True)
    p_list = sub.add_parser("list", help="table of catalogue models")
    p_list.add_argument("pattern", nargs="?", default="*", help="glob on model names, e.g. 'web-iml*'")
    p_list.add_argument("--available", action="store_true", help="only models whose weights webiml can load")
    p_info = sub.add_parser("info", help="everything the catalogue says about one model")
    p_info.add_argument("name")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    args = parser.parse_args(argv)

    from webiml.catalogue import list_models, load_catalogue

    entries = load_catalogue()
    if args.action == "list":
        names = list_models(args.pattern, available_only=args.available)
        rows = []
        for n in names:
            e = entries[n]
            best = next((m for m in e.metrics if "pixel_f1" in m), None)
            rows.append([n, e.status, e.task, e.architecture, _weights_location(e.weights), e.license_short,
                         f"{best['pixel_f1']:.3f} ({best.get('dataset', '?')})" if best else "-"])
        print(text_table(rows, ["name", "status", "task", "architecture", "weights", "licence", "pixel F1"], "l" * 7) if rows else "no model matches")
        return 0
    if args.name not in entries:
        print(f"unknown model {args.name!r}; see `webiml zoo list`")
        return 2
    e = entries[args.name]
    if args.json:
        print(json.dumps(e.__dict__, indent=2, default=str))
        return 0
    print(f"{e.name}  [{e.status}]\n{e.description}\n")
    print(f"architecture: {e.architecture} {json.dumps(e.config)}")
    print(f"task:         {e.task}\nlicence:      {e.license}")
    for key, value in e.weights.items():
        print(f"weights.{key}: {value}")
    if e.sha256:
        print(f"sha256:       {e.sha256}")
    for key, value in e.training.items():
        print(f"training.{key}: {value}")
    if e.metrics:
        cols = sorted({k for m in e.metrics for k in m} - {"command"})
        print("\nmetrics:\n" + text_table([[str(m.get(c, "")) for c in cols] for m in e.metrics], cols, "l" * len(cols)))
        for m in e.metrics:
            print(f"  measured with: {m['command']}")
    if e.notes:
        print(f"\nnotes: {e.notes}")
    return 0
