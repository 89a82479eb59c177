"""``lungviewer evaluate``: the shipped models on the held-out test patients."""

from __future__ import annotations

from .common import add_device


def add_parser(sub):
    p = sub.add_parser("evaluate", help="evaluate the shipped models on held-out patients")
    p.add_argument("--json", action="store_true")
    p.add_argument("--weights", help="weights folder (default: the shipped model_weights/)")
    p.add_argument("--lidc-root", help="a real LIDC-IDRI download")
    add_device(p)
    p.add_argument("--rec-scans", type=lambda v: None if v == "all" else int(v), default=24,
                   metavar="N|all",
                   help="slice recommendation recall on the first N annotated test scans "
                        "(by scan id; about 8 s per scan on 2 cores; 0 skips it; default 24)")
    return p


def run(args) -> int:
    from lungviewer.cad.training.evaluate import main

    return main(args)
