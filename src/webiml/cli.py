"""The ``webiml`` command line.

``webiml fit|validate|test|predict`` is a :class:`lightning.pytorch.cli.LightningCLI` in subclass mode:
the task (``model``) and the data (``data``) are chosen by ``class_path`` in YAML, every constructor
argument is a flag (``--model.init_args.lr 3e-4``) and ``--print_config`` shows the resolved config.
Other verbs (``zoo``, ``localize``, ``demo``, ``export``, ``data``, ``annotate``) are dispatched to
their own modules before Lightning's parser sees the arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

# verb -> (one-line help, runner taking the remaining argv and returning an exit status)
EXTRA_VERBS: dict[str, tuple[str, Callable[[list[str]], int]]] = {}


def register_verb(name: str, help_text: str) -> Callable[[Callable[[list[str]], int]], Callable[[list[str]], int]]:
    def deco(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        EXTRA_VERBS[name] = (help_text, fn)
        return fn

    return deco


def text_table(rows: Sequence[Sequence[Any]], header: Sequence[str], align: str | None = None) -> str:
    """A plain-text table for the verbs' output: a header, a rule, one line per row; ``align`` has one
    letter per column, ``l`` (left) or ``r`` (right); default: the first column left, the others right."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [[str(h) for h in header], *cells]) for i in range(len(header))]
    align = align or "l" + "r" * (len(header) - 1)

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=False)).rstrip()

    return "\n".join([fmt([str(h) for h in header]), fmt(["-" * w for w in widths]), *(fmt(r) for r in cells)])


def split_key_value(text: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``(KEY, VALUE)``, both stripped; ``ValueError`` without ``=`` or with an empty key."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _load_verbs() -> None:
    """Import the modules that register verbs (kept lazy so ``webiml fit`` starts fast)."""
    import importlib

    for module in ("webiml.commands",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def _webiml_cli_class() -> type:
    """LightningCLI with webiml's defaults, built on first use so that the other verbs never import Lightning."""
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    # Imported so that their classes resolve by short name too (e.g. `--model IMLTask`).
    import webiml.data.datamodule  # noqa: F401
    import webiml.tasks.iml  # noqa: F401
    from webiml.callbacks import MetricsSummary
    from webiml.results import ResultsTable

    class WebimlCLI(LightningCLI):
        """Subclass mode over any LightningModule / LightningDataModule (IMLTask, the CAAAv2 pair tasks, ...),
        seed 0, config saved next to the logs, and two callbacks on every run: the final validation table
        (MetricsSummary) and the per-dataset results table of `test` (ResultsTable)."""

        def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
            verbs = "".join(f"\n  {name:<10} {text}" for name, (text, _) in sorted(EXTRA_VERBS.items()))
            super().__init__(
                L.LightningModule,
                L.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                seed_everything_default=0,
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
                trainer_defaults={"callbacks": [MetricsSummary(), ResultsTable()]},
                parser_kwargs={
                    "description": "webiml: image manipulation localization with PyTorch Lightning.\n"
                    "Training and evaluation: fit, validate, test, predict (LightningCLI)."
                    + (f"\nOther verbs (webiml VERB --help):{verbs}" if verbs else ""),
                },
                args=args,
                run=run,
            )

    return WebimlCLI


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``webiml`` console script; ``args`` defaults to ``sys.argv[1:]``."""
    argv = list(sys.argv[1:] if args is None else args)
    _load_verbs()
    if argv and argv[0] in EXTRA_VERBS:
        return EXTRA_VERBS[argv[0]][1](argv[1:])
    _webiml_cli_class()(args=argv)
    return 0
