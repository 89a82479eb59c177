"""``lungviewer self-test [--json]``: offscreen end-to-end check of the installed program."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("self-test", help="offscreen end-to-end check of the installed program")
    p.add_argument("--json", action="store_true")
    return p


def run(args) -> int:
    from lungviewer.ui.selftest import main

    return main(args)
