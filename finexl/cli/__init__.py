"""The ``finexl`` command: wiring only. Each command group is a module that adds its parsers and turns arguments
into one call of the public API (:mod:`finexl`); output is printed here, never in the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from finexl.cli import bench, collection, env, explain, inspection, label, report, toyworld, train
from finexl.cli.common import common_parser
from finexl.errors import FinexlError
from finexl.logs import quiet_library_warnings

GROUPS = (env, inspection, explain, collection, report, train, bench, label, toyworld)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finexl",
        description="Explain how a personalized text-to-image model differs from its base, aspect by aspect. "
        "Without --base, every command uses the embedded toy world (the 'toy' preset); with a base of your own, "
        "name its CLIP, concept bank and prompts.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_parser()
    for group in GROUPS:
        group.add_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv``; returns the exit status (2 for a user's error, with one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a malformed command line (2, argparse printed why)
        return done.code if isinstance(done.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # the loaders' bars (diffusers, transformers, the hub) only with -v; finexl's own unless -q
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
        _loading_bars_off()  # in case they are imported already (a second command in one process)
    if args.quiet:
        os.environ["DIFFUSERS_VERBOSITY"] = os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    quiet_library_warnings()
    try:
        return args.func(args)
    except FinexlError as err:  # a user's error: one line; anything else is a bug and keeps its traceback
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"finexl: error: {err}", file=sys.stderr)
        return 2


def _loading_bars_off() -> None:
    """The hub's switch, read when diffusers and transformers first import; if they are imported already (a second
    call in one process), their own switches."""
    for name in ("diffusers", "transformers"):
        if name in sys.modules:
            importlib.import_module(f"{name}.utils.logging").disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
