"""``lungviewer analyze PATH [--box SLICE,ROW0,COL0,ROW1,COL1] [--json]``: the CAD panel's
numbers without a window, computed by the same study session the viewer drives
(malignancy and disease probabilities, the probability of the CAD finding it lies on, similar
nodules for the box; every CAD finding with its calibrated probability, whether it is shown
at the operating point and its measured size; the recommended slices of the study).

The findings are saved with the study's reading, as the viewer saves them. When they could
not be saved (a read-only reading store, a full disk) the results are still printed, a
warning on stderr says so and why, and the exit status is 3 (``"saved": false`` and
``"not_saved_because"`` in the JSON)."""

from __future__ import annotations

import json
import sys
import time

from lungviewer.session import DEFAULT_OPERATING_POINT, OPERATING_POINTS

from .common import add_device, parse_box


def add_parser(sub):
    p = sub.add_parser("analyze", help="CAD scores for a study (and a box), headless")
    p.add_argument("path")
    p.add_argument("--box", metavar="SLICE,ROW0,COL0,ROW1,COL1", type=parse_box)
    p.add_argument("--json", action="store_true")
    p.add_argument("--operating-point", type=int, choices=OPERATING_POINTS,
                   default=DEFAULT_OPERATING_POINT, metavar="FP",
                   help="false positives per scan at which findings are shown (1, 2 or 4; "
                        f"default {DEFAULT_OPERATING_POINT})")
    add_device(p)
    return p


def analyze(path: str, box=None, device: str = "auto", top: int = 10,
            operating_point: int = DEFAULT_OPERATING_POINT) -> dict:
    from lungviewer.session import StudySession

    t0 = time.perf_counter()
    s = StudySession()
    s.set_operating_point(operating_point)
    messages: list[str] = []
    s.subscribe(lambda ev, payload: messages.append(payload) if ev == "message" else None)
    vol = s.open(path)
    if box is not None and not 0 <= box[0] < vol.n_slices:
        raise ValueError(f"--box slice {box[0]} is outside 0..{vol.n_slices - 1}")
    s.load_engine(device)
    s.segment()
    t1 = time.perf_counter()
    scores = s.scan()
    t2 = time.perf_counter()
    engine = s.engine
    shown, below = s.finding_counts()
    out = {
        "path": str(path), "synthetic": vol.is_synthetic, "slices": vol.n_slices,
        "device": engine.device_name, "caveat": engine.caveat,
        "disease_label_set": {"names": engine.disease_names, "source": engine.disease_source},
        "disease_assessment": engine.disease_assessment(),
        "operating_point": {"fp_per_scan": s.operating_point, "threshold": s.threshold,
                            "shown": shown, "below": below},
        "findings": [f.as_dict(s.threshold) for f in (s.findings or [])],
        "recommended_slices": [
            {"slice": int(k), "score": round(float(scores.scores[k]), 4),
             "class": scores.label(k), "at": [int(v) for v in scores.best[k]]}
            for k in scores.ranking()[:top]] if scores is not None else [],
        "scan_seconds": round(t2 - t1, 3),
        "messages": messages,
    }
    if box is not None:
        k, r0, c0, r1, c1 = box
        out["box"] = s.score_box(k, (r0, c0, r1, c1)).as_dict()
        out["segmentation"] = s.segment_nodule(k, (r0, c0, r1, c1)).as_dict()
    out["saved"] = s.save_error is None
    if s.save_error is not None:
        out["not_saved_because"] = s.save_error
    out["total_seconds"] = round(time.perf_counter() - t0, 3)
    return out


#: exit status of a run whose results were computed but could not be saved
NOT_SAVED = 3


def _not_saved(res) -> int:
    if res.get("saved", True):
        return 0
    print(f"lungviewer analyze: warning: the findings were not saved "
          f"({res.get('not_saved_because', 'unknown')})", file=sys.stderr)
    return NOT_SAVED


def run(args, top_text: int = 10) -> int:
    from lungviewer.cad.weights import WeightsError
    from lungviewer.study.dicom_series import StudyLoadError

    try:
        res = analyze(args.path, args.box, args.device,
                      operating_point=args.operating_point)
    except (StudyLoadError, WeightsError, ValueError) as exc:
        print(f"lungviewer analyze: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=2, allow_nan=False))
        return _not_saved(res)
    print(f"{res['slices']} slices{' [SYNTHETIC]' if res['synthetic'] else ''}, CAD on "
          f"{res['device']} — {res['caveat']}")
    if "box" in res:
        b = res["box"]
        print(f"box {b['box']} ({b['box_mm'][0]:.1f}×{b['box_mm'][1]:.1f} mm):")
        print("  malignancy level: " + "  ".join(f"{k}: {v:.0%}" for k, v in
                                                  b["malignancy"].items())
              + f"  (expected {b['malignancy_expected']:.2f})")
        why = res["disease_assessment"]["why"]
        print("  disease: " + "  ".join(f"{k}: {v:.0%}" for k, v in b["disease"].items())
              + f"  [{res['disease_label_set']['source']}]"
              + (f" — {why}; no class named" if why else ""))
        p = b["nodule_probability"]
        print(f"  nodule or mass: {'—' if p is None else f'{p:.0%}'} "
              f"({b['nodule_probability_source']})")
        g = res["segmentation"]
        print(f"  nodule: {g['type']}, {g['volume_mm3']:.0f} mm³, long {g['long_axis_mm']:.1f}"
              f" / short {g['short_axis_mm']:.1f} mm, mean {g['mean_hu']:.0f} HU; "
              f"Lung-RADS {g['lung_rads']['category']} ({g['lung_rads']['rule']}; "
              f"{g['lung_rads']['note']})")
        for s in b["similar"]:
            print(f"  similar: {s['patient_id']} nodule {s['nodule']} readers' malignancy "
                  f"{s['malignancies']} Ø {s['diameter_mm']} mm (distance {s['distance']:.3f})")
    op = res["operating_point"]
    for m in res["messages"]:
        print(m)
    print(f"CAD findings at {op['fp_per_scan']} false positive(s) per scan: {op['shown']} "
          f"shown, {op['below']} below (0-based slice, row, col; size; probability):")
    for f in [f for f in res["findings"] if f["shown"]]:
        size = (f"{f['long_axis_mm']:5.1f} x {f['short_axis_mm']:4.1f} mm "
                f"{f['volume_mm3']:7.0f} mm³" if f["measured"]
                else f"~{f['diameter_mm']:5.1f} mm (not segmented)")
        mal = f"  malignancy {f['malignancy_expected']:.1f}" if "malignancy_expected" in f else ""
        print(f"  {f['slice']:4d} {f['row']:4d} {f['col']:4d}  {f['kind']:6s} {size}  "
              f"p={f['probability']:.2f}{mal}")
    print("recommended slices (0-based index, score, class):")
    for r in res["recommended_slices"]:
        print(f"  {r['slice']:4d}  {r['score']:.2f}  {r['class']}")
    return _not_saved(res)
