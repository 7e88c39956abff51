"""``webiml export CKPT DIR``: a Lightning checkpoint from ``fit`` to config.json + model.safetensors + card.

Any webiml task's checkpoint: IMLTask (an IML model) or the CAAAv2 pair tasks (a pair part: PairClassifier,
SPGSegmenter, SDGSegmenter; export the three into DIR/classifier, DIR/spg, DIR/sdg for
``webiml annotate --checkpoint DIR``). The folder loads with ``webiml.from_pretrained(DIR)``.
"""

from __future__ import annotations

import argparse

from webiml.cli import register_verb


@register_verb("export", "export a Lightning .ckpt from `webiml fit` (any webiml task) to a from_pretrained folder")
def export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="webiml export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .ckpt written by `webiml fit` (IMLTask, PairClassifierTask, PairSegmenterTask)")
    parser.add_argument("out_dir", help="folder to write config.json, model.safetensors and README.md into")
    parser.add_argument("--name", default=None, help="model name for the model card")
    parser.add_argument("--training-data", default=None, help="training data description for the model card")
    parser.add_argument("--license", default=None,
                        help="licence of the weights for the model card (an SPDX / Hub id such as cc-by-4.0, or text); "
                             "it follows the training data")
    parser.add_argument("--half", action="store_true", help="store weights as float16 (half the size; loads as float32)")
    args = parser.parse_args(argv)

    from webiml.tasks.base import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out_dir, model_name=args.name, training_data=args.training_data,
                             license=args.license, dtype="float16" if args.half else None)
    print(f"wrote {path}/config.json, model.safetensors, README.md; load with webiml.from_pretrained({str(path)!r})")
    return 0
