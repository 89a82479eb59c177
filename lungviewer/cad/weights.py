"""Weights on disk: ``*.safetensors`` (no pickle, ever) plus ``manifest.json``.

manifest.json::

    {"format": "lungviewer-weights/1",
     "training_data": "...", "not_for_clinical_use": true,
     "label_sets": {"malignancy": {...}, "disease": {"names": [...], "source": "...",
                    "patients": N, "annotations": M}},
     "models": {"<name>": {"file": "<name>.safetensors", "sha256": "...",
                           "arch": "MultiTaskNet", "config": {...}, "input": "..."}},
     "metrics": {...}, "commands": {...}}

Loading checks the file's sha256 against the manifest and the tensor names and shapes
against the architecture; anything wrong raises :class:`WeightsError` with a message the
viewer can show.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lungviewer import paths

FORMAT = "lungviewer-weights/1"
MANIFEST = "manifest.json"


class WeightsError(RuntimeError):
    """The CAD weights are missing, altered or do not fit the network."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def write_manifest(manifest: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    manifest["format"] = FORMAT
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def save_model(model, name: str, folder: Path, arch: str, config: dict,
               input_spec: str = "") -> dict:
    """Write ``<name>.safetensors`` and register it (with its sha256) in the manifest."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"arch": arch, "name": name})
    try:
        manifest = read_manifest(folder)
    except WeightsError:
        manifest = {"models": {}}
    entry = {"file": path.name, "sha256": sha256(path), "arch": arch, "config": config,
             "input": input_spec}
    manifest.setdefault("models", {})[name] = entry
    write_manifest(manifest, folder)
    return entry


def load_model(name: str, folder: Path | None = None, device: str = "cpu",
               manifest: dict | None = None):
    """The network ``name`` from ``folder`` (default: the shipped model_weights/),
    checksum verified, in eval mode on ``device``."""
    from safetensors.torch import load_file

    from .networks import build

    folder = Path(folder or paths.weights_dir())
    manifest = manifest or read_manifest(folder)
    entry = manifest.get("models", {}).get(name)
    if entry is None:
        raise WeightsError(f"{folder / MANIFEST} has no model {name!r}.")
    path = folder / entry["file"]
    if not path.is_file():
        raise WeightsError(f"CAD weights file missing: {path}.")
    if sha256(path) != entry["sha256"]:
        raise WeightsError(f"{path} does not match its checksum in the manifest: the file "
                           "was changed or damaged. Reinstall lungviewer or retrain.")
    try:
        model = build(entry["arch"], entry.get("config", {}))
    except (ValueError, KeyError) as exc:
        raise WeightsError(f"{path}: {exc}") from exc
    state = load_file(str(path), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit the {entry['arch']} network: "
                           f"{str(exc).splitlines()[0]}") from exc
    return model.to(device).eval()
