"""Command-line entry point: ``lungviewer [PATH]``, ``lungviewer --demo`` and subcommands.

Each subcommand's work lives in the package it belongs to; this module only parses
arguments and imports the handler lazily, so ``lungviewer info`` never loads Qt or torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# subcommand -> "module:function"; the function takes the parsed args, returns an exit code
HANDLERS: dict[str, str] = {
    "view": "lungviewer.ui.app:main",
    "info": "lungviewer.study.info_cmd:main",
    "nodules": "lungviewer.study.nodules_cmd:main",
    "synth": "lungviewer.synth.synth_cmd:main",
    "segment": "lungviewer.imaging.segment_cmd:main",
    "train": "lungviewer.cad.train:main",
    "evaluate": "lungviewer.cad.evaluate:main",
    "analyze": "lungviewer.cad.analyze:main",
    "self-test": "lungviewer.ui.selftest:main",
}

DEFAULT_DEMO_PATIENT = "LIDC-IDRI-0001"


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


def _add_view_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true",
                   help="open the embedded demo study (a synthetic LIDC twin, generated once "
                        "into the cache folder)")
    p.add_argument("--patient", default=DEFAULT_DEMO_PATIENT,
                   help="LIDC patient whose twin --demo opens (default %(default)s)")
    p.add_argument("--series", help="SeriesInstanceUID to open when the folder holds several")
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="render the window offscreen into OUT.png and exit")
    p.add_argument("--slice", type=int, help="0-based slice index to show")
    p.add_argument("--preset", choices=["lung", "mediastinum", "bone"], help="window preset")
    p.add_argument("--box", metavar="SLICE,ROW0,COL0,ROW1,COL1", type=parse_box,
                   help="place the CAD box (with --screenshot: wait for the CAD result)")
    p.add_argument("--size", default="1600x1000", help="window size for --screenshot (WxH)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lungviewer",
        description="Chest-CT viewer with a CAD assistant. Research software: not for "
                    "clinical use.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("view", help="open a study in the viewer (default command)")
    p.add_argument("path", nargs="?", help="DICOM folder or file")
    _add_view_options(p)

    p = sub.add_parser("info", help="describe the CT series found under PATH")
    p.add_argument("path")
    p.add_argument("--series", help="SeriesInstanceUID to describe")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("nodules", help="list the LIDC readers' nodules of the study at PATH")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("synth", help="write the synthetic LIDC twin of a LIDC scan")
    p.add_argument("--patient", required=True, help="LIDC patient ID, e.g. LIDC-IDRI-0001")
    p.add_argument("--series", help="LIDC SeriesInstanceUID when the patient has two scans")
    p.add_argument("--out", required=True, help="output folder")

    p = sub.add_parser("segment", help="lung parenchyma mask (method M1)")
    p.add_argument("path")
    p.add_argument("--out", required=True, help="mask file: .npy, or .nii/.nii.gz (NIfTI)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train a CAD model")
    p.add_argument("model", choices=["multitask", "detector", "slices", "retrieval"])
    p.add_argument("--scheme", choices=["partial", "hard", "soft", "single"], default="partial")
    p.add_argument("--second-task", choices=["disease", "texture", "calcification"],
                   default="disease", help="second task of the multi-task network")
    p.add_argument("--epochs", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--lidc-root", help="a real LIDC-IDRI download (renders nothing)")
    p.add_argument("--disease-labels", help="CSV patient_id,label (default: TCIA diagnoses)")
    p.add_argument("--out", help="output folder for weights (default: model_weights/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")

    p = sub.add_parser("evaluate", help="evaluate the shipped models on held-out patients")
    p.add_argument("--json", action="store_true")
    p.add_argument("--weights", help="weights folder (default: the shipped model_weights/)")
    p.add_argument("--lidc-root", help="a real LIDC-IDRI download")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--rec-scans", type=lambda v: None if v == "all" else int(v), default=24,
                   metavar="N|all",
                   help="slice recommendation recall on the first N annotated test scans "
                        "(by scan id; about 8 s per scan on 2 cores; 0 skips it; default 24)")

    p = sub.add_parser("analyze", help="CAD scores for a study (and a box), headless")
    p.add_argument("path")
    p.add_argument("--box", metavar="SLICE,ROW0,COL0,ROW1,COL1", type=parse_box)
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    p = sub.add_parser("self-test", help="offscreen end-to-end check of the installed program")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `lungviewer PATH` and `lungviewer --demo` mean `lungviewer view ...`
    commands = set(HANDLERS)
    first = next((a for a in argv if not a.startswith("-")), None)
    if first not in commands and not any(a in ("-h", "--help") for a in argv[:1]):
        argv = ["view", *argv]
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["view", *argv])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    module_name, func_name = HANDLERS[args.command].split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
