"""``lungviewer evaluate``: the shipped models on the held-out test patients (synthetic
twins), or with ``--real DIR`` on real LIDC-IDRI series that have their readers' XML
(FROC, recall@10 of the recommended slices, detector AUC, box malignancy, lung mask), or
with ``--patches DIR`` on real nodule patches (malignancy, box detector, retrieval)."""

from __future__ import annotations

from .common import add_device


def add_parser(sub):
    p = sub.add_parser("evaluate", help="evaluate the shipped models on held-out patients")
    p.add_argument("--json", action="store_true")
    p.add_argument("--weights", help="weights folder (default: the shipped model_weights/)")
    p.add_argument("--lidc-root", help="a real LIDC-IDRI download")
    p.add_argument("--real", metavar="DIR",
                   help="evaluate on the real LIDC series (with their XML) under DIR instead")
    p.add_argument("--no-baseline", action="store_true",
                   help="with --real: skip the 2-D slice scan given for comparison")
    p.add_argument("--patches", metavar="DIR",
                   help="evaluate on real nodule patches (DIR with labels.csv and npy/): "
                        "malignancy, box detector and retrieval, with 95%% CIs")
    add_device(p)
    p.add_argument("--rec-scans", type=lambda v: None if v == "all" else int(v), default=24,
                   metavar="N|all",
                   help="slice recommendation recall on the first N annotated test scans "
                        "(by scan id; about 8 s per scan on 2 cores; 0 skips it; default 24)")
    return p


def run(args) -> int:
    if args.patches:
        from lungviewer.cad.training.evaluate_patches import main as patches_main

        return patches_main(args)
    if args.real:
        return _run_real(args)
    from lungviewer.cad.training.evaluate import main

    return main(args)


def _run_real(args) -> int:
    import json
    import sys
    from pathlib import Path

    from lungviewer.cad.device import DeviceError, pick_device
    from lungviewer.cad.training.evaluate_real import evaluate_real, format_real
    from lungviewer.cad.training.progress import print_progress
    from lungviewer.cad.weights import WeightsError

    if not Path(args.real).is_dir():
        print(f"lungviewer evaluate: --real {args.real} is not a folder", file=sys.stderr)
        return 2
    try:
        res = evaluate_real(args.real, device=pick_device(args.device),
                            progress=print_progress, baseline=not args.no_baseline)
    except (WeightsError, DeviceError, ValueError) as exc:
        print(f"lungviewer evaluate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2) if args.json else format_real(res))
    return 0
