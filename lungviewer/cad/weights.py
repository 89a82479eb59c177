"""Loading the CAD networks: ``*.safetensors`` (no pickle, ever) listed in the weights
folder's ``manifest.json`` (format: :mod:`lungviewer.cad.manifest`).

Loading checks the file's sha256 against the manifest and the tensor names and shapes
against the architecture; anything wrong raises :class:`WeightsError` with a message the
viewer can show. Writing weights is training's job (``lungviewer.cad.training.train``).
"""

from __future__ import annotations

from pathlib import Path

from lungviewer import paths

from .manifest import MANIFEST, WeightsError, model_entry, read_manifest, sha256, verify_file

__all__ = ["MANIFEST", "WeightsError", "load_model", "read_manifest", "sha256"]


def load_model(name: str, folder: Path | None = None, device: str = "cpu",
               manifest: dict | None = None):
    """The network ``name`` from ``folder`` (default: the shipped model_weights/),
    checksum verified, in eval mode on ``device``."""
    from safetensors.torch import load_file

    from .networks import build

    folder = Path(folder or paths.weights_dir())
    manifest = manifest or read_manifest(folder)
    entry = model_entry(manifest, name, folder)
    path = verify_file(folder, entry)
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
