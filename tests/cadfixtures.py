"""Tiny, untrained CAD weights for tests (the real ones are trained by `lungviewer train`)."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np


def write_tiny_weights(folder: Path, seed: int = 0) -> Path:
    import torch

    from lungviewer.cad.manifest import register_retrieval
    from lungviewer.cad.networks import MultiTaskNet, NoduleDetector, SliceHead
    from lungviewer.cad.retrieval import RetrievalIndex
    from lungviewer.cad.training.train import save_model

    torch.manual_seed(seed)
    names = ["benign", "primary lung cancer", "metastatic"]
    save_model(MultiTaskNet("partial", (5, 3)).eval(), "multitask", folder, "MultiTaskNet",
               {"scheme": "partial", "n_classes": [5, 3], "n_extra": 2,
                "second_task": "disease", "second_names": names, "second_source": "test"})
    save_model(NoduleDetector().eval(), "detector", folder, "NoduleDetector", {})
    save_model(SliceHead().eval(), "slices", folder, "SliceHead", {})
    rng = np.random.default_rng(seed)
    records = [{"patient": f"LIDC-IDRI-{i:04d}", "nodule": f"{i}:0", "malignancies": [1 + i % 5],
                "slice": i, "diameter_mm": 5.0 + i} for i in range(6)]
    files = RetrievalIndex(rng.normal(size=(6, 512)).astype(np.float32), records,
                           rng.integers(0, 255, (6, 32, 32), dtype=np.uint8)).save(folder / "retrieval")
    register_retrieval(folder, files, len(records))
    return folder


def break_weights(folder: Path, how: str) -> str:
    """Damage the tiny weights; returns what the message must say."""
    m = json.loads((folder / "manifest.json").read_text())
    if how == "checksum":
        f = folder / "detector.safetensors"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
        return "checksum"
    if how == "missing":
        (folder / "multitask.safetensors").unlink()
        return "missing"
    if how == "other-arch":  # the detector's file registered as the slice head
        m["models"]["detector"]["arch"] = "SliceHead"
    elif how == "unknown-arch":
        m["models"]["slices"]["arch"] = "ResNet9000"
    elif how == "no-manifest":
        (folder / "manifest.json").unlink()
        return "does not exist"
    elif how == "bad-manifest":
        (folder / "manifest.json").write_text("{not json")
        return "not a readable weights manifest"
    (folder / "manifest.json").write_text(json.dumps(m))
    return {"other-arch": "does not fit the SliceHead", "unknown-arch": "ResNet9000"}[how]
