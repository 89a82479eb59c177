"""``lungviewer train MODEL``: train one of the CAD models (see model_weights/MODEL_CARD.md)."""

from __future__ import annotations

import argparse

from .common import add_device


def _per_host(text: str) -> tuple[int, ...]:
    """``6,4,4`` → hybrid volumes per host of :data:`lungviewer.cad.training.hybrid.HOSTS`."""
    try:
        n = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N,N,N") from None
    if len(n) != 3 or min(n) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: three counts >= 0, one per real host")
    return n


def add_parser(sub):
    p = sub.add_parser("train", help="train a CAD model")
    p.add_argument("model", choices=["multitask", "detector", "slices", "retrieval", "fpr"])
    p.add_argument("--scheme", choices=["partial", "hard", "soft", "single"], default="partial")
    p.add_argument("--second-task", choices=["disease", "texture", "calcification"],
                   default="disease", help="second task of the multi-task network")
    p.add_argument("--epochs", type=int)
    p.add_argument("--hybrid-volumes", type=_per_host, default=None, metavar="N,N,N",
                   help="fpr: hybrid volumes (real lungs with inserted nodules) per real host "
                        "(LIDC-IDRI-0006, the GE CTA, the Siemens B31f series; default 6,4,4)")
    p.add_argument("--realistic-twins", type=int, default=None,
                   help="fpr: realistic twins of training patients to train on")
    add_device(p)
    p.add_argument("--lidc-root", help="a real LIDC-IDRI download (renders nothing)")
    p.add_argument("--disease-labels", help="CSV patient_id,label (default: TCIA diagnoses)")
    p.add_argument("--out", help="output folder for weights (default: model_weights/)")
    p.add_argument("--real-patches", metavar="DIR",
                   help="multitask, detector, retrieval: train on real nodule patches (DIR with "
                        "labels.csv and npy/), cross-validated by patient first")
    p.add_argument("--real-series", metavar="DIR",
                   help="with --real-patches: the real series for the detector's negatives "
                        "(default: DIR's parent)")
    p.add_argument("--folds", type=int, default=None,
                   help="with --real-patches: cross-validation folds (default 5; 0 skips it "
                        "for multitask)")
    p.add_argument("--init", choices=["twin", "scratch"], default="twin",
                   help="with --real-patches: start from the twin-trained weights or from "
                        "random ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    return p


def run(args) -> int:
    from lungviewer.cad.training.train import main

    return main(args)
