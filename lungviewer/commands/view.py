"""``lungviewer [view] [PATH] [--demo] ...``: the viewer (the default command)."""

from __future__ import annotations

import argparse

from lungviewer.contracts import DEMO_PATIENT

from .common import parse_box

LAYOUTS = ("axial", "1x3", "2x2")  # lungviewer.ui.mpr.LAYOUTS (not imported: no Qt here)


def parse_slab_option(text: str) -> tuple[str | None, float]:
    """``none`` or ``MODE[:MM]`` (mip, minip, avg; 2–40 mm, 10 when not given)."""
    from lungviewer.imaging.planes import parse_slab

    try:
        mode, mm = parse_slab(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if mode is not None and not 2.0 <= mm <= 40.0:
        raise argparse.ArgumentTypeError(f"a slab is 2–40 mm thick, got {mm:g} mm")
    return mode, mm


def add_parser(sub):
    p = sub.add_parser("view", help="open a study in the viewer (default command)")
    p.add_argument("path", nargs="?", help="DICOM folder or file")
    p.add_argument("--demo", action="store_true",
                   help="open the embedded demo study (a synthetic LIDC twin, generated once "
                        "into the cache folder)")
    p.add_argument("--patient", default=DEMO_PATIENT,
                   help="LIDC patient whose twin --demo opens (default %(default)s)")
    p.add_argument("--series", help="SeriesInstanceUID to open when the folder holds several")
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="render the window offscreen into OUT.png and exit")
    p.add_argument("--slice", type=int, help="0-based slice index to show")
    p.add_argument("--preset", choices=["lung", "mediastinum", "bone"], help="window preset")
    p.add_argument("--box", metavar="SLICE,ROW0,COL0,ROW1,COL1", type=parse_box,
                   help="place the CAD box (with --screenshot: wait for the CAD result)")
    p.add_argument("--segment", action="store_true",
                   help="with --box: also segment the boxed nodule (volume, axes, Lung-RADS)")
    p.add_argument("--size", default="1600x1000", help="window size for --screenshot (WxH)")
    p.add_argument("--layout", choices=LAYOUTS,
                   help="views: one axial, 1x3 (axial, coronal, sagittal) or 2x2 (the three "
                        "planes and an axial slab overview); remembered")
    p.add_argument("--slab", metavar="{none,mip,minip,avg}:MM", type=parse_slab_option,
                   help="thick slab in every view, e.g. mip:10 (maximum intensity over 10 mm; "
                        "minip, avg; 2–40 mm) or none")
    return p


def run(args) -> int:
    from lungviewer.ui.app import main

    return main(args)
