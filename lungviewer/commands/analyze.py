"""``lungviewer analyze PATH [--box SLICE,ROW0,COL0,ROW1,COL1] [--json]``: the CAD panel's
numbers without a window, computed by the same study session the viewer drives
(malignancy and disease probabilities, detector probability, similar nodules for the box;
the recommended slices of the study)."""

from __future__ import annotations

import json
import sys
import time

from .common import add_device, parse_box


def add_parser(sub):
    p = sub.add_parser("analyze", help="CAD scores for a study (and a box), headless")
    p.add_argument("path")
    p.add_argument("--box", metavar="SLICE,ROW0,COL0,ROW1,COL1", type=parse_box)
    p.add_argument("--json", action="store_true")
    add_device(p)
    return p


def analyze(path: str, box=None, device: str = "auto", top: int = 10) -> dict:
    from lungviewer.session import StudySession

    t0 = time.perf_counter()
    s = StudySession()
    vol = s.open(path)
    if box is not None and not 0 <= box[0] < vol.n_slices:
        raise ValueError(f"--box slice {box[0]} is outside 0..{vol.n_slices - 1}")
    s.load_engine(device)
    s.segment()
    t1 = time.perf_counter()
    scores = s.scan()
    t2 = time.perf_counter()
    engine = s.engine
    out = {
        "path": str(path), "synthetic": vol.is_synthetic, "slices": vol.n_slices,
        "device": engine.device_name, "caveat": engine.caveat,
        "disease_label_set": {"names": engine.disease_names, "source": engine.disease_source},
        "findings": [f.as_dict() for f in (s.findings or [])],
        "recommended_slices": [
            {"slice": int(k), "score": round(float(scores.scores[k]), 4),
             "class": scores.label(k), "at": [int(v) for v in scores.best[k]]}
            for k in scores.ranking()[:top]],
        "scan_seconds": round(t2 - t1, 3),
    }
    if box is not None:
        k, r0, c0, r1, c1 = box
        out["box"] = s.score_box(k, (r0, c0, r1, c1)).as_dict()
        out["segmentation"] = s.segment_nodule(k, (r0, c0, r1, c1)).as_dict()
    out["total_seconds"] = round(time.perf_counter() - t0, 3)
    return out


def run(args, top_text: int = 10) -> int:
    from lungviewer.cad.weights import WeightsError
    from lungviewer.study.dicom_series import StudyLoadError

    try:
        res = analyze(args.path, args.box, args.device)
    except (StudyLoadError, WeightsError, ValueError) as exc:
        print(f"lungviewer analyze: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=2, allow_nan=False))
        return 0
    print(f"{res['slices']} slices{' [SYNTHETIC]' if res['synthetic'] else ''}, CAD on "
          f"{res['device']} — {res['caveat']}")
    if "box" in res:
        b = res["box"]
        print(f"box {b['box']} ({b['box_mm'][0]:.1f}×{b['box_mm'][1]:.1f} mm):")
        print("  malignancy level: " + "  ".join(f"{k}: {v:.0%}" for k, v in
                                                  b["malignancy"].items())
              + f"  (expected {b['malignancy_expected']:.2f})")
        print("  disease: " + "  ".join(f"{k}: {v:.0%}" for k, v in b["disease"].items())
              + f"  [{res['disease_label_set']['source']}]")
        print(f"  nodule probability (detector): {b['nodule_probability']:.0%}")
        g = res["segmentation"]
        print(f"  nodule: {g['type']}, {g['volume_mm3']:.0f} mm³, long {g['long_axis_mm']:.1f}"
              f" / short {g['short_axis_mm']:.1f} mm, mean {g['mean_hu']:.0f} HU; "
              f"Lung-RADS {g['lung_rads']['category']} ({g['lung_rads']['rule']}; "
              f"{g['lung_rads']['note']})")
        for s in b["similar"]:
            print(f"  similar: {s['patient_id']} nodule {s['nodule']} readers' malignancy "
                  f"{s['malignancies']} Ø {s['diameter_mm']} mm (distance {s['distance']:.3f})")
    print("CAD findings (0-based slice, row, col; diameter; score; class):")
    for f in res["findings"][:top_text]:
        print(f"  {f['slice']:4d} {f['row']:4d} {f['col']:4d}  Ø {f['diameter_mm']:5.1f} mm  "
              f"{f['score']:.2f}  {f['class']}")
    print("recommended slices (0-based index, score, class):")
    for r in res["recommended_slices"]:
        print(f"  {r['slice']:4d}  {r['score']:.2f}  {r['class']}")
    return 0
