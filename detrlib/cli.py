"""The command line: ``python -m detrlib <command> --help``."""
from __future__ import annotations

import argparse
import sys


def _bench(args: argparse.Namespace) -> int:
    from detrlib.bench import format_table

    entry = args.benchmark
    rows = entry.run(args)
    print(format_table(rows, title=f"bench {entry.name}: {entry.help}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detrlib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    from detrlib.bench import load_all

    bench = commands.add_parser("bench", help="run a benchmark and print its table")
    which = bench.add_subparsers(dest="bench_name", required=True, metavar="benchmark")
    for name, entry in sorted(load_all().items()):
        sub = which.add_parser(name, help=entry.help, description=entry.help)
        if entry.add_arguments:
            entry.add_arguments(sub)
        sub.set_defaults(func=_bench, benchmark=entry)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
