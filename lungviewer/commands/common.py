"""Argument types and options that several commands share."""

from __future__ import annotations

import argparse


def parse_box(text: str) -> tuple[int, int, int, int, int]:
    """``SLICE,ROW0,COL0,ROW1,COL1`` (0-based, ends exclusive) as integers."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 5:
        raise argparse.ArgumentTypeError(
            f"a box is SLICE,ROW0,COL0,ROW1,COL1 (five 0-based integers), got {text!r}")
    return vals  # type: ignore[return-value]


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the networks run (auto: CUDA, then MPS, then the CPU)")
