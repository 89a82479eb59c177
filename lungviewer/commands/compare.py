"""``lungviewer compare CURRENT PRIOR [--json]``: the follow-up reading headless — the prior
checked and registered to the current exam on the lungs, the CAD findings of both paired
one-to-one, with growth, volume doubling time and the Lung-RADS v2022 follow-up category
(lungviewer/followup/)."""

from __future__ import annotations

import json
import sys


def add_parser(sub):
    p = sub.add_parser("compare", help="follow-up reading: a study against its prior, headless")
    p.add_argument("current", help="folder of the current CT series")
    p.add_argument("prior", help="folder of the prior CT series")
    p.add_argument("--json", action="store_true")
    p.add_argument("--confirm-other-patient", action="store_true",
                   help="compare although the PatientIDs differ")
    p.add_argument("--device", default="auto", help="CAD device: auto, cpu, cuda, mps")
    return p


def find_nodules(volume, mask, device: str = "auto", progress=None, cancel=None) -> list:
    """The CAD findings shown at the default operating point, as follow-up nodules."""
    from lungviewer.followup.compare import nodules_from_findings
    from lungviewer.session import StudySession

    s = StudySession(autosave=False)
    s.set_volume(volume)
    s.mask = mask
    s.load_engine(device)
    s.scan()
    return nodules_from_findings(s.findings, s.threshold)


def compare_paths(current: str, prior: str, confirm_other_patient: bool = False,
                  device: str = "auto") -> dict:
    from lungviewer.followup.pipeline import run_comparison
    from lungviewer.study.dicom_series import load_series

    cur, pri = load_series(current), load_series(prior)
    comp, _ = run_comparison(
        cur, pri, lambda v, m, p=None, c=None: find_nodules(v, m, device, p, c),
        confirm_other_patient=confirm_other_patient)
    return comp.as_dict()


def run(args) -> int:
    from lungviewer.followup.priors import PriorError
    from lungviewer.study.dicom_series import StudyLoadError

    try:
        res = compare_paths(args.current, args.prior, args.confirm_other_patient, args.device)
    except (StudyLoadError, PriorError, ValueError, OSError) as exc:
        print(f"lungviewer compare: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=2, allow_nan=False))
        return 0
    reg = res["registration"]
    print(f"prior {res['prior_study'].get('study_date')} → current "
          f"{res['current_study'].get('study_date')}: {res['interval_days']} days"
          + (f" [{res['label']}]" if res["label"] else ""))
    if "error" in reg:
        print(f"registration: {reg['error']}")
        return 0
    q = reg["quality"]
    print(f"registration: {reg['seconds']:.1f} s, lung Dice {q['lung_dice']:.3f}, rotation "
          f"{reg['rotation_deg']:.1f}°, volume scale {reg['volume_scale']:.3f}")
    for p in res["pairs"]:
        c, pr = p["current"], p["prior"]
        where = c or pr
        size = " → ".join(f"{n['diameter_mm']:.1f} mm {n['volume_mm3']:.0f} mm³" if n else "—"
                          for n in (pr, c))
        vdt = (f"VDT {p['vdt_days']:.0f} d" if p["vdt_days"] is not None else "no VDT") + (
            "" if p["vdt_trusted"] or p["vdt_days"] is None
            else f" (not trusted: {'; '.join(p['vdt_why_not'])})")
        print(f"  {p['status']:9s} at {where['slice']},{where['row']},{where['col']}  {size}  "
              f"{vdt}  Lung-RADS {p['lung_rads']['category']} ({p['lung_rads']['rule']})")
    return 0
