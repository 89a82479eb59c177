"""Command-line entry point: ``lungviewer [PATH]``, ``lungviewer --demo`` and subcommands.

Every command is a module of :mod:`lungviewer.commands` that owns its parser
(``add_parser(sub)``) and its handler (``run(args)``); this module only lists them. The
command modules import their heavy dependencies inside ``run``, so ``lungviewer info``
never loads Qt or torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

#: command name -> module under lungviewer.commands
COMMANDS: dict[str, str] = {
    "view": "view", "info": "info", "nodules": "nodules", "synth": "synth",
    "segment": "segment", "analyze": "analyze", "train": "train", "evaluate": "evaluate",
    "export": "export", "self-test": "self_test",
    "batch": "batch",
    "pacs": "pacs",
    "compare": "compare",
}


def _module(name: str):
    return importlib.import_module(f"lungviewer.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lungviewer",
        description="Chest-CT viewer with a CAD assistant. Research software: not for "
                    "clinical use.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        p = _module(name).add_parser(sub)
        p.set_defaults(command=name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `lungviewer PATH` and `lungviewer --demo` mean `lungviewer view ...`
    first = next((a for a in argv if not a.startswith("-")), None)
    if first not in COMMANDS and not any(a in ("-h", "--help") for a in argv[:1]):
        argv = ["view", *argv]
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["view", *argv])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code = int(_module(args.command).run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # the reader went away (`lungviewer nodules … | head`): stop quietly, as the
        # Python docs advise (stdout pointed at devnull so that the exit flush is silent)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
