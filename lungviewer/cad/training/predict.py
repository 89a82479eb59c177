"""Network outputs for many samples at once, shared by training (the validation score
that picks the best epoch) and evaluation: the multi-task network's class probabilities,
the nodule detector's probability and embedding, and accuracy.

Inputs are numpy arrays; torch is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TaskData:
    """Arrays for one multi-task run: nodule patches ``x`` (n, 2, 32, 32), extra inputs
    (box size, mm), labels of task A and B (−1 = no label) and each sample's patient."""

    x: np.ndarray
    extra: np.ndarray | None
    ya: np.ndarray
    yb: np.ndarray | None
    patient: np.ndarray

    def subset(self, mask: np.ndarray) -> TaskData:
        return TaskData(self.x[mask], None if self.extra is None else self.extra[mask],
                        self.ya[mask], None if self.yb is None else self.yb[mask],
                        self.patient[mask])


def torch_for(device: str):
    """torch, imported lazily, with its CPU thread count set."""
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return torch


def predict_multitask(model, data: TaskData, device: str = "cpu", batch: int = 512):
    """Softmax probabilities of task A (and B, None for a single-task network)."""
    torch = torch_for(device)
    model.eval()
    pa, pb = [], []
    with torch.no_grad():
        for i in range(0, len(data.x), batch):
            out = model(torch.from_numpy(data.x[i:i + batch]).to(device),
                        torch.from_numpy(data.extra[i:i + batch]).to(device))
            pa.append(torch.softmax(out[0], 1).cpu().numpy())
            if len(out) > 1:
                pb.append(torch.softmax(out[1], 1).cpu().numpy())
    return np.concatenate(pa), (np.concatenate(pb) if pb else None)


def predict_detector(model, x: np.ndarray, device: str = "cpu", batch: int = 512,
                     embed: bool = False):
    """Nodule probability (and optionally the 512-d embedding) of (n, 50, 50) patches."""
    torch = torch_for(device)
    model.eval()
    probs, embs = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(np.asarray(x[i:i + batch], np.float32)[:, None]).to(device)
            f = model.embed(xb)
            probs.append(torch.softmax(model.out(f), 1)[:, 1].cpu().numpy())
            if embed:
                embs.append(f.cpu().numpy())
    p = np.concatenate(probs) if probs else np.zeros(0)
    return (p, np.concatenate(embs)) if embed else p


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Share of labelled samples (``y`` ≥ 0) whose most probable class is ``y``."""
    ok = y >= 0
    return float((probs[ok].argmax(1) == y[ok]).mean()) if ok.any() else float("nan")
