"""The ``webiml`` command line.

``webiml fit|validate|test|predict`` is a :class:`lightning.pytorch.cli.LightningCLI` in subclass mode:
the task (``model``) and the data (``data``) are chosen by ``class_path`` in YAML, every constructor
argument is a flag (``--model.init_args.lr 3e-4``) and ``--print_config`` shows the resolved config.
Other verbs (``zoo``, ``localize``, ``demo``, ``export``, ``data``, ``annotate``, ...) are dispatched to
their own modules before Lightning's parser sees the arguments.

The front door (:func:`main`): ``webiml --help`` and ``webiml --version`` answer without importing torch or
Lightning; a mistyped verb gets "did you mean"; a user's mistake (a wrong path, an unknown model, a file
that is not an image, a malformed config or manifest) ends in one ``error:`` line and exit status 2 (usage:
the command line names something wrong) or 1 (runtime: a file's content is wrong). ``--debug`` anywhere on
the command line, or ``WEBIML_DEBUG=1`` in the environment, shows the traceback instead.
"""

from __future__ import annotations

import difflib
import os
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
    from webiml.models.registry import _ensure_builtin

    _ensure_builtin()  # the model classes (imported lazily elsewhere), e.g. `--model.model SmpIML`
    from webiml.callbacks import MetricsSummary, PredictionWriter, TestReport
    from webiml.results import ResultsTable

    class WebimlCLI(LightningCLI):
        """Subclass mode over any LightningModule / LightningDataModule (IMLTask, the CAAAv2 pair tasks, ...),
        seed 0, config saved next to the logs, and three callbacks on every run: the final validation table
        (MetricsSummary), the per-dataset results table of `test` (ResultsTable) and the files of `predict`
        (PredictionWriter: probability PNGs, masks, scores.csv / scores.json under <log_dir>/predictions)."""

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
                trainer_defaults={"callbacks": [MetricsSummary(), ResultsTable(), PredictionWriter(), TestReport()]},
                parser_kwargs={
                    "description": "webiml: image manipulation localization with PyTorch Lightning.\n"
                    "Training and evaluation: fit, validate, test, predict (LightningCLI)."
                    + (f"\nOther verbs (webiml VERB --help):{verbs}" if verbs else ""),
                    # parse errors raise (ArgumentError) so that main() prints them as one line
                    "exit_on_error": False,
                    **{verb: {"exit_on_error": False} for verb in LIGHTNING_VERBS},
                },
                args=args,
                run=run,
            )

    return WebimlCLI


# LightningCLI's verbs, listed by `webiml --help` without building the LightningCLI.
LIGHTNING_VERBS: dict[str, str] = {
    "fit": "train a task on a datamodule from a YAML config (LightningCLI; `webiml fit --help` for every flag)",
    "validate": "evaluate a checkpoint on the validation sets (LightningCLI)",
    "test": "evaluate a checkpoint on the test sets: results table, per-image CSV, HTML report (LightningCLI)",
    "predict": "probability maps and scores for the predict set, like localize (LightningCLI)",
}

DEBUG_ENV = "WEBIML_DEBUG"

# Exceptions that are a user's mistake, by class name (anywhere in the MRO, so the modules that define them
# need not be imported here), with their exit status: 2 when the command line names something wrong
# (a path, a model, an option value), 1 when a file's content is wrong.
USER_ERRORS: dict[str, int] = {
    "FileNotFoundError": 2, "NotADirectoryError": 2, "IsADirectoryError": 2, "CheckpointError": 2,
    "ArgumentError": 2, "NSKeyError": 2,
    "PermissionError": 1, "ImageReadError": 1, "ManifestError": 1, "PairManifestError": 1, "PairSourceError": 1,
    "SampleError": 1, "ConversionError": 1, "IndexingFailed": 1, "YAMLError": 1, "JSONDecodeError": 1,
    "ValueError": 1, "OSError": 1, "UnpicklingError": 1,
}


def _version() -> str:
    from webiml import __version__

    return __version__


def _help_text() -> str:
    verbs = {**LIGHTNING_VERBS, **{name: text for name, (text, _) in EXTRA_VERBS.items()}}
    width = max(len(v) for v in verbs)
    lines = [
        "usage: webiml [--version] [--debug] VERB [ARGS...]",
        "",
        "webiml: image manipulation localization with PyTorch Lightning.",
        "",
        "verbs (`webiml VERB --help` for a verb's options):",
        *(f"  {name:<{width}}  {text}" for name, text in verbs.items()),
        "",
        "options:",
        "  -h, --help  show this list and exit",
        "  --version   print the webiml version and exit",
        f"  --debug     show the full traceback of an error (or set {DEBUG_ENV}=1)",
    ]
    return "\n".join(lines)


def user_error_status(err: BaseException) -> int | None:
    """The exit status for an exception that is a user's mistake (see ``USER_ERRORS``), ``None`` for a bug."""
    for cls in type(err).__mro__:
        if cls.__name__ in USER_ERRORS:
            return USER_ERRORS[cls.__name__]
    return None


def error_line(err: BaseException) -> str:
    """One line naming what is wrong: the exception's message, its lines joined."""
    text = str(err).strip() or type(err).__name__
    if type(err).__name__ == "UnpicklingError":
        # torch's message advises weights_only=False, i.e. running the file's code: never pass that on.
        return ("a checkpoint holds objects other than tensors and plain data and was refused: webiml never "
                "unpickles code from a file (export trusted checkpoints with `webiml export`)")
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.strerror}: {err.filename}"
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])
    if "\n" in text and ("Parser key" in text or "Union subtypes" in text):  # jsonargparse
        text = _condense_parse_error(text)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


_TIP_PATTERNS = ("litlogger", "tensorboardX", "💡 Tip")


def _drop_tips(record: Any) -> bool:
    """A logging filter (a callable) dropping Lightning's tips."""
    message = record.getMessage()
    return not any(p in message for p in _TIP_PATTERNS)


def _condense_parse_error(text: str) -> str:
    """jsonargparse's nested message for a bad value inside a class_path ("Does not validate against any of
    the Union subtypes ... Parser key "lr": Expected a <class 'float'>. Got value: abc") -> the option and the
    innermost complaint: ``--model.lr: Expected a <class 'float'>. Got value: abc``."""
    import re

    lines = [line.strip() for line in text.splitlines() if line.strip()]
    keys: list[str] = []
    detail = lines[0]
    for i, line in enumerate(lines):
        m = re.match(r'^(?:- )?(?:Problem with given class_path .*: )?Parser key "([^"]+)":\s*(.*)$', line)
        if m:
            keys.append(m.group(1))
            detail = m.group(2) or (lines[i + 1] if i + 1 < len(lines) else "")
    if len(keys) >= 2:
        return f"--{'.'.join(keys)}: {detail}"
    # A union of subtypes: the first alternative's own complaint (not "Expected a <class 'NoneType'>").
    for line in lines:
        reason = line[2:].strip().strip('"') if line.startswith("- ") else ""
        if reason and not reason.startswith(("Does not validate", "Expected a <class 'NoneType'>", "Problem with")):
            return f"--{keys[0]}: {reason}" if keys else reason
    return " ".join(lines)


def quiet_library_tips(accelerator_is_cpu: bool | None = None) -> None:
    """Silence library chatter that tells a webiml user nothing: Lightning's litlogger tip and tensorboardX
    note, and (on CPU, where workers compete with the model for cores) the "does not have many workers" hint."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _drop_tips not in logger.filters:
            logger.addFilter(_drop_tips)
    warnings.filterwarnings("ignore", message=r".*`tensorboardX` has been removed as a dependency.*")
    # webiml's tasks augment on the device by design; and a deprecation inside Lightning's own code
    warnings.filterwarnings("ignore", message=r".*You have overridden `on_after_batch_transfer` in `LightningModule`.*")
    warnings.filterwarnings("ignore", message=r".*The dirpath has changed from .* reloaded.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter is intended to run from within Python.*")
    if accelerator_is_cpu is None:
        import torch

        accelerator_is_cpu = not torch.cuda.is_available()
    if accelerator_is_cpu:
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def _run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help_text())
        return 0
    if argv[0] == "--version":
        print(f"webiml {_version()}")
        return 0
    verb = argv[0]
    if verb in EXTRA_VERBS:
        return EXTRA_VERBS[verb][1](argv[1:])
    if verb not in LIGHTNING_VERBS:
        known = [*LIGHTNING_VERBS, *EXTRA_VERBS]
        close = difflib.get_close_matches(verb, known, n=1, cutoff=0.6)
        what = "option" if verb.startswith("-") else "verb"
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"webiml: error: unknown {what} {verb!r}{hint} (see `webiml --help`)", file=sys.stderr)
        return 2
    quiet_library_tips()
    _webiml_cli_class()(args=argv)
    return 0


def _setup_logging() -> None:
    """INFO messages of webiml's modules as plain lines on stderr (once; left alone when the root logger has
    handlers, e.g. under pytest or an application embedding webiml)."""
    import logging

    class Handler(logging.StreamHandler):  # type: ignore[type-arg]
        @property  # type: ignore[override]
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, value: Any) -> None:
            pass

    root = logging.getLogger()
    if not root.handlers:
        handler = Handler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``webiml`` console script; ``args`` defaults to ``sys.argv[1:]``.

    Returns the exit status: 0, 1 (runtime error), 2 (usage error); argparse-based verbs may also raise
    ``SystemExit`` for ``--help`` and bad options, as argparse does."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    _load_verbs()
    try:
        if argv and argv[0] not in ("-h", "--help", "help", "--version"):
            _setup_logging()
        return _run(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("webiml: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`webiml zoo list | head`): stop quietly, as other command-line tools do; stdout
        # is pointed at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as err:
        if debug:
            raise
        status = user_error_status(err)
        if status is None:
            print(f"webiml: internal error: {type(err).__name__}: {error_line(err)} "
                  f"(rerun with --debug or {DEBUG_ENV}=1 for the traceback, and please report it)", file=sys.stderr)
            return 1
        print(f"webiml: error: {error_line(err)}", file=sys.stderr)
        return status
