"""Follow-up reading benchmark: registration time and lung-landmark error, nodule pairing,
VDT and Lung-RADS growth category against the construction, on SYNTHETIC twin follow-up
pairs (full-resolution LIDC twins) and on the HYBRID pair made from the real development
scan LIDC-IDRI-0006 (resampled under a known transform, one real nodule enlarged by a known
factor). Detections are the constructed nodule centres jittered by ~1 voxel (the pairing,
measuring and categorising are under test here, not the CAD's sensitivity).

    nice -n 10 .venv/bin/python bench/bench_compare.py [--twins LIDC-IDRI-0001 ...] [--no-real]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real" / "LIDC-IDRI-0006"


def evaluate_cad(pair, label: str, device: str = "cpu") -> dict:
    """Pairing with the CAD findings of both exams (what ``lungviewer compare`` does):
    nodules on both exams paired correctly (both ends within 5 mm of that nodule's truth)
    and false pairs (one end on a constructed nodule, the other not on the same one)."""
    from lungviewer.commands.compare import find_nodules
    from lungviewer.followup.compare import compare
    from lungviewer.followup.registration import lung_mask_of, register

    cm = lung_mask_of(pair.current.hu, pair.current.spacing)
    pm = lung_mask_of(pair.prior.hu, pair.prior.spacing)
    t0 = time.perf_counter()
    cur = find_nodules(pair.current, cm, device)
    pri = find_nodules(pair.prior, pm, device)
    t1 = time.perf_counter()
    reg = register(pair.current, pair.prior)
    comp = compare(pair.current, pair.prior, cur, pri, pair.truth.interval_days, reg, cm, pm)
    sc, sp = np.asarray(pair.current.spacing), np.asarray(pair.prior.spacing)

    def near(n, c, spacing):
        return n is not None and c is not None and \
            np.linalg.norm((np.subtract(n.zyx, c)) * spacing) <= 5.0

    both = [t for t in pair.truth.nodules if t.current_zyx and t.prior_zyx]
    ok = sum(any(near(p.current, t.current_zyx, sc) and near(p.prior, t.prior_zyx, sp)
                 for p in comp.pairs) for t in both)
    false = 0
    for p in comp.pairs:
        if p.current is None or p.prior is None:
            continue
        tc = next((t for t in pair.truth.nodules if near(p.current, t.current_zyx, sc)), None)
        tp = next((t for t in pair.truth.nodules if near(p.prior, t.prior_zyx, sp)), None)
        false += (tc is not None or tp is not None) and tc is not tp
    found = {w: sum(any(near(n, getattr(t, f"{w}_zyx"), s_) for n in ns)
                    for t in pair.truth.nodules if getattr(t, f"{w}_zyx") is not None)
             for w, ns, s_ in (("current", cur, sc), ("prior", pri, sp))}
    return {"label": label + " (CAD findings)", "cad_s": round(t1 - t0, 1),
            "findings": [len(cur), len(pri)], "truth_found_by_cad": found,
            "on_both_paired_correctly": f"{ok}/{len(both)}", "false_pairs": int(false),
            "pairs": comp.counts()}


def evaluate(pair, label: str) -> dict:
    from lungviewer.followup.compare import Nodule, compare
    from lungviewer.followup.registration import lung_mask_of, register
    from lungviewer.reading.lungrads import lung_rads_followup
    from lungviewer.synth.followup import landmark_errors

    t0, c0 = time.perf_counter(), time.process_time()
    reg = register(pair.current, pair.prior)  # all in: its own low-resolution lung masks
    t1, c1 = time.perf_counter(), time.process_time()
    cm = lung_mask_of(pair.current.hu, pair.current.spacing)  # full resolution, for sizing
    pm = lung_mask_of(pair.prior.hu, pair.prior.spacing)
    t2 = time.perf_counter()
    err = landmark_errors(reg, pair, n=500)
    rng = np.random.default_rng(7)

    def det(which):
        out = []
        for n in pair.truth.nodules:
            c = n.current_zyx if which == "current" else n.prior_zyx
            if c is not None:
                out.append(Nodule(*(np.asarray(c) + rng.normal(0, 0.7, 3)), 6.0))
        return out

    comp = compare(pair.current, pair.prior, det("current"), det("prior"),
                   pair.truth.interval_days, reg, cm, pm)
    rows = []
    both = correct = false_pairs = 0
    for t in pair.truth.nodules:
        key = "current_zyx" if t.current_zyx is not None else "prior_zyx"
        res = min(comp.pairs, key=lambda p: np.linalg.norm(np.subtract(
            getattr(t, key), (p.current if key == "current_zyx" else p.prior).zyx))
            if (p.current if key == "current_zyx" else p.prior) is not None else 1e9)
        on_both = t.current_zyx is not None and t.prior_zyx is not None
        paired = res.current is not None and res.prior is not None
        ok_pair = paired and np.linalg.norm(np.subtract(t.prior_zyx, res.prior.zyx)) < 3 \
            if on_both else not paired
        both += on_both
        correct += bool(on_both and ok_pair)
        false_pairs += bool(not on_both and paired)
        want = lung_rads_followup(t.type, t.current_diameter_mm, t.prior_diameter_mm,
                                  pair.truth.interval_days, resolved=t.current_zyx is None)
        vdt_err = None
        if t.vdt_days and res.vdt_days and (t.prior_diameter_mm or 0) >= 5 \
                and (t.volume_ratio or 0) >= 1.25:
            vdt_err = abs(res.vdt_days - t.vdt_days) / t.vdt_days
        rows.append({"nodule": t.name, "truth_status": t.status, "status": res.status,
                     "truth_d": [t.prior_diameter_mm, t.current_diameter_mm],
                     "measured_d": [res.prior.diameter_mm if res.prior else None,
                                    res.current.diameter_mm if res.current else None],
                     "truth_ratio": t.volume_ratio, "ratio": res.volume_ratio,
                     "truth_vdt": t.vdt_days, "vdt": res.vdt_days, "vdt_rel_err": vdt_err,
                     "truth_category": want.category,
                     "category": res.lung_rads.get("category"), "rule": res.lung_rads.get("rule"),
                     "truth_type": t.type, "type": (res.current or res.prior).type})
    return {"label": label, "current_shape": list(pair.current.hu.shape),
            "prior_shape": list(pair.prior.hu.shape),
            "registration_s": round(t1 - t0, 2), "registration_cpu_s": round(c1 - c0, 2), "full_lung_masks_s": round(t2 - t1, 2),
            "landmark_mm": {"mean": round(float(err.mean()), 2),
                            "p95": round(float(np.percentile(err, 95)), 2),
                            "max": round(float(err.max()), 2)},
            "lung_dice": round(reg.dice, 4),
            "paired_correctly": f"{correct}/{both}", "false_pairs": false_pairs,
            "category_exact": f"{sum(r['category'] == r['truth_category'] for r in rows)}/"
                              f"{len(rows)}", "nodules": rows}


def twin_pair(patient: str, seed: int):
    from lungviewer.followup.registration import lung_mask_of
    from lungviewer.study.volume import Volume
    from lungviewer.synth.followup import make_followup_pair
    from lungviewer.synth.twin import render_twin

    tw = render_twin(patient)
    vol = Volume(hu=tw.hu, spacing=_twin_spacing(tw), positions=tw.positions,
                 patient_id=patient)
    return make_followup_pair(vol, lung_mask_of(vol.hu, vol.spacing), seed=seed,
                              current_spacing=(2.0, 0.8, 0.8))


def _twin_spacing(tw):
    from lungviewer.synth.twin import twin_spacing

    return twin_spacing(tw.model.scan)


def hybrid_pair(factor: float = 1.3):
    from lungviewer.followup.registration import lung_mask_of
    from lungviewer.reading.lesions import _segment, lung_region
    from lungviewer.session import StudySession
    from lungviewer.synth.followup import make_followup_pair

    s = StudySession(autosave=False)
    vol = s.open(REAL)
    ann = s.load_annotations()
    lm = lung_mask_of(vol.hu, vol.spacing)
    nods = sorted([n for n in ann.nodules if n.diameter_mm >= 5], key=lambda n: -n.diameter_mm)
    from types import SimpleNamespace

    for n in nods:
        k, r, c = (int(round(v)) for v in n.centre)
        seg = _segment(vol.hu, vol.spacing, lm, SimpleNamespace(slice=k, row=r, col=c,
                                                                 diameter_mm=n.diameter_mm),
                       lung_region(lm, vol.spacing))
        if seg is not None:
            break
    else:
        raise SystemExit("no segmentable nodule on the real scan")
    zs, ys, xs = np.nonzero(seg.mask)
    centre = (zs.mean() + seg.offset[0], ys.mean() + seg.offset[1], xs.mean() + seg.offset[2])
    pair = make_followup_pair(
        vol, lm, seed=11, nodules=(), base_nodules=[("real", centre, seg.mean_diameter_mm, seg.type)],
        enlarge=("real", centre, seg.full_mask(vol.hu.shape), factor), label="HYBRID",
        current_spacing=(2.0, 0.8, 0.8), rotation_deg=(1.5, -1.0, 2.5),
        shift_mm=(5.0, -6.0, 10.0), lung_scale=1.06)
    return pair


def shots(pair, folder: Path) -> None:
    """Current | prior screenshots of a pair (offscreen Qt) into ``folder``."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from lungviewer.followup.compare import Nodule, compare
    from lungviewer.followup.registration import register
    from lungviewer.ui.compare_view import CompareView
    from lungviewer.ui.main_window import application

    app = application()
    reg = register(pair.current, pair.prior)
    t = pair.truth.nodules[0]
    comp = compare(pair.current, pair.prior, [Nodule(*t.current_zyx, 6.0)],
                   [Nodule(*t.prior_zyx, 6.0)], pair.truth.interval_days, reg)
    comp.label = pair.truth.label
    view = CompareView()
    view.resize(1500, 900)
    view.show()
    view.set_exams(pair.current, pair.prior, f"{pair.current_date} (HYBRID follow-up)",
                   f"{pair.prior_date} (real LIDC-IDRI-0006)")
    view.set_result(comp, reg)
    folder.mkdir(parents=True, exist_ok=True)
    view.show_pair(0)
    app.processEvents()
    view.grab().save(str(folder / "hybrid_nodule_pair.png"))
    view._current_clicked(*(int(round(v)) for v in t.current_zyx))
    view.current_view.set_slice(int(round(t.current_zyx[0])) + 12)
    app.processEvents()
    view.grab().save(str(folder / "hybrid_linked_scroll.png"))
    print(f"screenshots in {folder}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--twins", nargs="*", default=["LIDC-IDRI-0001"])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cad", action="store_true", help="also pair the CAD findings of both "
                                                      "exams (slow: the CAD runs on each)")
    ap.add_argument("--shots", type=Path, help="folder for current | prior screenshots of the "
                                               "HYBRID pair")
    a = ap.parse_args()
    out = []
    for p in a.twins:
        for seed in range(a.seeds):
            pr = twin_pair(p, seed)
            r = evaluate(pr, f"SYNTHETIC twin {p} seed {seed}")
            out.append(r)
            if a.cad:
                out.append(evaluate_cad(pr, f"SYNTHETIC twin {p} seed {seed}"))
                print(json.dumps(out[-1]), flush=True)
            print(json.dumps({k: v for k, v in r.items() if k != "nodules"}), flush=True)
            for row in r["nodules"]:
                print("   ", json.dumps(row), flush=True)
    if not a.no_real and REAL.is_dir():
        r = evaluate(hybrid_pair(), "HYBRID LIDC-IDRI-0006 (real pixels, known transform, "
                                    "one real nodule enlarged ×1.3 linear)")
        out.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "nodules"}), flush=True)
        for row in r["nodules"]:
            print("   ", json.dumps(row), flush=True)
    elif not a.no_real:
        print("HYBRID pair skipped: ../shared/data/real/LIDC-IDRI-0006 is absent")
    if a.shots and not a.no_real and REAL.is_dir():
        shots(hybrid_pair(), a.shots)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
