"""``webiml benchmark SPEC [--only MODEL ...] [--table-only]``: the with/without-MIML benchmark.

Trains every model of the spec on every training protocol (e.g. without and with the MIML sources),
tests each on the protocol's test sets and writes one table (``results.md`` / ``results.csv`` in the
spec's work folder; rows = model x training, columns = test set F1 / IoU), with per-run logs and resolved
configs. Rerunning skips finished runs and resumes killed trainings. See :mod:`webiml.benchmark`.
"""

from __future__ import annotations

import argparse
import sys

from webiml.cli import register_verb


@register_verb("benchmark", "train + test models without / with MIML data (a spec YAML) and write one table")
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="webiml benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="benchmark spec YAML (e.g. configs/benchmarks/with_without_miml.yaml)")
    parser.add_argument("--work", default=None, help="work folder (default: the spec's 'work')")
    parser.add_argument("--only", nargs="+", default=[], metavar="MODEL", help="run only these models of the spec")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from finished runs, train nothing")
    args = parser.parse_args(argv)

    from webiml.benchmark import load_spec, run_benchmark, write_table

    try:
        spec = load_spec(args.spec)
    except ValueError as err:
        print(f"webiml benchmark: error: {err}", file=sys.stderr)
        return 2
    if args.work:
        spec.work = args.work
    unknown = [m for m in args.only if m not in spec.models]
    if unknown:
        print(f"webiml benchmark: error: --only {unknown}: not models of {args.spec} ({', '.join(spec.models)})", file=sys.stderr)
        return 2
    if args.table_only:
        print(f"table: {write_table(spec, args.spec)}")
        return 0
    table, failures = run_benchmark(spec, args.spec, only=args.only)
    print(f"table: {table}")
    for f in failures:
        print(f"webiml benchmark: error: {f}", file=sys.stderr)
    return 1 if failures else 0
