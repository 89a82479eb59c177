"""``lungviewer train {multitask,detector,slices,retrieval,fpr}``: train a CAD model.

Seeded and deterministic on the CPU; checkpoints (safetensors + a JSON state) after every
epoch in ``<out>/checkpoints``, with the best epoch's weights beside them
(``*.best.safetensors``); ``--resume`` continues from the last one and still returns the
best epoch's weights when no later epoch beats it (the Adam moments restart). Only
training patients are used: the held-out test list is never read for training, validation
patients choose the best epoch. Each model has one small function in :data:`TRAINERS`;
what a run records goes through :mod:`lungviewer.cad.manifest`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from lungviewer import paths

from .. import manifest as mf
from ..recommend import SLICE_CLASSES
from .datasets import Samples, cached_samples
from .predict import TaskData, accuracy, predict_detector, predict_multitask, torch_for
from .progress import print_progress
from .splits import annotations_per_patient, disease_labels, make_split

log = logging.getLogger(__name__)

EPOCHS = {"multitask": 30, "detector": 8, "slices": 10}
#: LIDC ratings that can be the multi-task network's second task, with their level count
RATING_TASKS = {"texture": 5, "calcification": 6}
SECOND_TASKS = ("disease", *RATING_TASKS)
NODULE_INPUT = "nodule patch: (2, 32, 32) binary+grey, plus box size (h, w) mm"
DETECTOR_INPUT = "(1, 50, 50) grey patch, HU -1000..400 -> 0..1"
SLICE_INPUT = "512-d detector features of a 50x50 patch"
FPR_INPUT = ("(3, 32, 32) grey planes (axial, coronal, sagittal) at 1 mm through a candidate, "
             "HU -1000..400 -> 0..1, plus 5 shape features")


def multitask_data(nod: Samples, second: str, labels_csv: str | None = None
                   ) -> tuple[TaskData, list[str], str]:
    """Task A = malignancy level (0..4), task B = disease (label set) or a LIDC rating."""
    if second == "disease":
        dl = disease_labels(labels_csv)
        names, source = list(dl.names), dl.source
        yb = np.array([dl.of(str(p)) for p in nod["patient"]], np.int64)
    else:
        names = [str(v) for v in range(1, RATING_TASKS[second] + 1)]
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
                    resume: bool = False, init_state: dict | None = None):
    """Train a multi-task network (``single``: task A only), from ``init_state`` where
    given (e.g. the twin-trained weights). Returns (model, history)."""
    torch = torch_for(device)
    from ..networks import MultiTaskNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MultiTaskNet(scheme, n_classes)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device)
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


def train_detector(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0,
                   device: str = "cpu", progress=None, val: tuple | None = None,
                   ckpt: Path | None = None, resume: bool = False,
                   init_state: dict | None = None):
    """The nodule detector: Adam 1e-3, batch 96, rotation/flip augmentation,
    class-balanced sampling; from ``init_state`` where given."""
    torch = torch_for(device)
    from ..networks import NoduleDetector

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = NoduleDetector()
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device)
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


def slice_labels(nod: Samples) -> np.ndarray:
    """Slice-head class of each nodule sample: 1 benign, 2 malignant (the mean malignancy of the
    readers of its nodule ≥ 3 → malignant)."""
    keys = nod["nodule"]
    mal = nod["malignancy"].astype(float)
    _, inv = np.unique(keys, return_inverse=True)
    mean = np.bincount(inv, weights=mal) / np.bincount(inv)
    return np.where(mean[inv] >= 3, 2, 1)


def train_slice_head(detector, feats: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0,
                     device: str = "cpu", progress=None):
    """Slice recommendation transfer: a 3-way head on the frozen detector's features."""
    torch = torch_for(device)
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


def save_model(model, name: str, folder: Path, arch: str, config: dict,
               input_spec: str = "") -> dict:
    """Write ``<name>.safetensors`` and register it (with its sha256) in the manifest."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"arch": arch, "name": name})
    return mf.register_model(folder, name, path, arch, config, input_spec)


def split_masks(patients: np.ndarray, seed: int | None = None):
    """Boolean masks (train, val, test) of samples by their patient (splits.make_split)."""
    sp = make_split() if seed is None else make_split(seed=seed)
    return (np.isin(patients, list(sp.train)), np.isin(patients, list(sp.val)),
            np.isin(patients, list(sp.test)))


# -- the command: one function per model -----------------------------------------------------
class _NeedsDetector(Exception):
    """The slice head and the similar-nodule index are built on a trained detector."""


def _checkpoint_path(key: str) -> Path:
    return paths.cache_dir() / "checkpoints" / f"{key}.safetensors"


def _trained_detector(out: Path, device: str):
    from ..weights import load_model

    try:
        return load_model("detector", out, device)
    except mf.WeightsError as exc:
        raise _NeedsDetector(str(exc)) from exc


def _run_multitask(args, nod: Samples, det: Samples, device: str, out: Path):
    """The multi-task network of ``--scheme`` and ``--second-task`` (``single``: a task-B
    network as well)."""
    data, names, source = multitask_data(nod, args.second_task, args.disease_labels)
    tr, va, _ = split_masks(data.patient)
    n_b = len(names)
    epochs = args.epochs or EPOCHS["multitask"]
    key = f"multitask-{args.scheme}-{args.second_task}"
    model, hist = train_multitask(data.subset(tr), args.scheme, (5, n_b), epochs, args.seed,
                                  device, progress=partial(print_progress,
                                                           f"multitask/{args.scheme}"),
                                  val=data.subset(va), ckpt=_checkpoint_path(key),
                                  resume=args.resume)
    name = "multitask" if (args.scheme, args.second_task) == ("partial", "disease") else key
    config = {"scheme": args.scheme, "n_classes": [5, n_b], "n_extra": 2,
              "second_task": args.second_task, "second_names": names,
              "second_source": source}
    save_model(model, name, out, "MultiTaskNet", config, NODULE_INPUT)
    if args.scheme == "single":  # the single-task baseline of task B as well
        lab = data.yb >= 0
        task_b = TaskData(data.x, data.extra, data.yb, None, data.patient)
        model_b, hist_b = train_multitask(task_b.subset(tr & lab), "single", (n_b, n_b),
                                          epochs, args.seed, device,
                                          progress=partial(print_progress, "single task B"),
                                          val=task_b.subset(va & lab))
        save_model(model_b, f"{name}-b", out, "MultiTaskNet",
                   {**config, "n_classes": [n_b, n_b], "task": "b"}, NODULE_INPUT)
        hist = {"a": hist, "b": hist_b}
    return key, hist


def _run_detector(args, nod: Samples, det: Samples, device: str, out: Path):
    tr, va, _ = split_masks(det["patient"])
    model, hist = train_detector(det["det"][tr], det["label"][tr],
                                 args.epochs or EPOCHS["detector"], args.seed, device,
                                 progress=partial(print_progress, "detector"),
                                 val=(det["det"][va], det["label"][va]),
                                 ckpt=_checkpoint_path("detector"), resume=args.resume)
    save_model(model, "detector", out, "NoduleDetector", {}, DETECTOR_INPUT)
    return "detector", hist


def _run_slices(args, nod: Samples, det: Samples, device: str, out: Path):
    """The slice head on the trained detector's features: training patients' detector
    negatives (no nodule) and nodule samples (benign / malignant)."""
    detector = _trained_detector(out, device)
    tr_d, _, _ = split_masks(det["patient"])
    neg = det.subset(tr_d & (det["label"] == 0))
    tr_n, _, _ = split_masks(nod["patient"])
    pos = nod.subset(tr_n)
    x = np.concatenate([neg["det"], pos["det"]])
    y = np.concatenate([np.zeros(len(neg), np.int64), slice_labels(pos)])
    _, feats = predict_detector(detector, x, device, embed=True)
    model, hist = train_slice_head(detector, feats, y, args.epochs or EPOCHS["slices"],
                                   args.seed, device,
                                   progress=partial(print_progress, "slice head"))
    save_model(model, "slices", out, "SliceHead", {"classes": list(SLICE_CLASSES)}, SLICE_INPUT)
    return "slices", hist


def _run_retrieval(args, nod: Samples, det: Samples, device: str, out: Path):
    return "retrieval", build_retrieval_index(_trained_detector(out, device), nod, out, device)


FPR_DATA = ("hybrid: real lungs of three hosts (LIDC-IDRI-0006, a training patient, GE "
            "LightSpeed16 2.5 mm; a GE contrast CT angiogram at 0.8 mm; a Siemens B31f series "
            "at 1 mm; real CT, The Cancer Imaging Archive, CC BY 3.0) hosting nodules rendered "
            "from {donors} training patients' real LIDC contours (readers' consensus outlines, "
            "HU from their texture rating, soft edge, the host's own noise), {volumes} hybrid "
            "volumes ({per_host}), + {twins} default twins (synthetic: {twin_names}) + "
            "{realistic} realistic twins of other training patients (synthetic: dense vessel "
            "tree, soft nodules, varied acquisition); candidates are the findings' 3-D blob "
            "candidates")
FPR_LABELS = ("candidates within an inserted nodule's radius (at least 5 mm) or a real "
              "LIDC-IDRI-0006 nodule >= 3 mm (readers' XML) are nodules; on that host's "
              "small-nodule and non-nodule marks ignored; all others (real vessels, among them "
              "the Siemens series' hand-outlined vessels, which no nodule is inserted near; "
              "hilum, fissures, chest wall) non-nodules; twins and realistic twins: their "
              "readers' nodules")
FPR_CAVEAT = ("Trained on hybrid images (three real hosts' lungs with inserted nodules drawn "
              "from other training patients' contours) and synthetic twins (default and "
              "realistic); not validated on patient images with real nodules other than "
              "LIDC-IDRI-0006's. Its probability is calibrated on held-out hybrid volumes and "
              "realistic twins, whose nodule count per scan is higher than in screening. "
              "Not for clinical use.")


def _run_fpr(args, nod, det, device: str, out: Path):
    """The findings' false-positive reduction network on hybrid images and twins
    (:mod:`lungviewer.cad.training.hybrid`): the mix of its logit with the hand-set
    evidence is chosen on held-out hybrid volumes (one fold per real host) and realistic
    twins (:func:`~lungviewer.cad.training.hybrid.cross_validate`), the findings'
    probability is calibrated and the operating points set on the same out-of-fold
    findings (:func:`~lungviewer.cad.training.hybrid.calibrate_findings`); the shipped
    network is then trained on all volumes but the unchanged hosts. Not registered when it
    does not beat the hand-set score."""
    from ..engine import CadEngine
    from . import hybrid as hy

    eng = CadEngine.load(out, device=device)
    per_host = getattr(args, "hybrid_volumes", None) or tuple(k for _, _, k in hy.HOSTS)
    hosts = tuple((n, f, k) for (n, f, _), k in zip(hy.HOSTS, per_host))
    n_real = hy.REALISTIC_TWINS if args.realistic_twins is None else args.realistic_twins
    tag = "-".join(str(k) for k in per_host)
    cache = (paths.cache_dir() / "datasets"
             / f"fpr-candidates-v3-{tag}-{n_real}-{hy.DEFAULT_TWINS}.npz")
    if cache.is_file():
        cs = hy.CandidateSet.load(cache)
    else:
        cs = hy.build_candidates(eng.models, hosts=hosts, device=device, realistic=n_real,
                                 progress=print_progress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cs.save(cache)
    epochs = args.epochs or hy.EPOCHS
    cv = hy.cross_validate(cs, epochs, args.seed, device, progress=print_progress)
    best = cv["best"]
    calibration = hy.calibrate_findings(cs, cv) if best[1] != 0.0 else None
    cv.pop("oof")
    learn = ~np.char.startswith(cs.group.astype(str), "host")
    model, hist = hy.fit(cs.subset(learn), epochs, args.seed, device,
                         progress=partial(print_progress, "fpr"))
    model.mix = (best[0], best[1])
    hist = {"epochs": hist, "cross_validation": cv, "calibration": calibration}
    if best[1] == 0.0:
        log.warning("the false-positive reduction did not beat the hand-set score on held-out "
                    "volumes; not registered")
        return "fpr", hist
    n_donors = len(hy.donor_patients(8 * sum(per_host)))
    groups = sorted(set(cs.group.astype(str)))
    twins = [g.removeprefix("twin-") for g in groups if g.startswith("twin-")]
    n_realistic = sum(g.startswith("realistic-") for g in groups)
    config = {"n_extra": int(cs.extra.shape[1]), "size": int(cs.patches.shape[-1]),
              "mix": [best[0], best[1]],
              "calibration": {k: calibration[k] for k in ("method", "a", "b")},
              "operating_points": calibration["operating_points"],
              "training_data": FPR_DATA.format(
                  donors=n_donors, volumes=sum(per_host),
                  per_host=", ".join(f"{n} {k}" for n, _, k in hosts), twins=len(twins),
                  twin_names=", ".join(twins), realistic=n_realistic),
              "labels": FPR_LABELS, "caveat": FPR_CAVEAT,
              "candidates": int(((cs.label >= 0) & learn).sum()),
              "positives": int(((cs.label == 1) & learn).sum())}
    save_model(model, "fpr", out, "FprNet", config, FPR_INPUT)
    return "fpr", hist


#: ``lungviewer train MODEL`` → (manifest key, history) = TRAINERS[MODEL](args, nod, det,
#: device, out)
TRAINERS = {"multitask": _run_multitask, "detector": _run_detector, "slices": _run_slices,
            "retrieval": _run_retrieval, "fpr": _run_fpr}


def main(args) -> int:
    from ..device import pick_device

    device = pick_device(args.device)
    out = Path(args.out) if args.out else paths.weights_dir()
    if getattr(args, "real_patches", None):  # real CT patches, not the twin samples
        from .real_patches import PatchFolderError
        from .train_real import run as run_real

        try:
            run_real(args, device, out)
        except (PatchFolderError, ValueError, mf.WeightsError) as exc:
            print(f"lungviewer train {args.model}: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.model == "fpr":  # hybrid images, not the twin samples
        t0 = time.perf_counter()
        try:
            key, hist = _run_fpr(args, None, None, device, out)
        except (FileNotFoundError, ValueError, mf.WeightsError) as exc:
            print(f"lungviewer train fpr: {exc}", file=sys.stderr)
            return 2
        seconds = time.perf_counter() - t0
        print(f"trained fpr in {seconds:.0f} s on {device} -> {out}")
        _record_fpr(out, hist, seconds)
        return 0
    try:
        nod, det = cached_samples(progress=partial(print_progress,
                                                   "building samples (twin images)"),
                                  lidc_root=args.lidc_root)
    except ValueError as exc:
        print(f"lungviewer train: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        key, hist = TRAINERS[args.model](args, nod, det, device, out)
    except _NeedsDetector as exc:
        print(f"lungviewer train {args.model}: train the detector first ({exc})",
              file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    print(f"trained {args.model} in {seconds:.0f} s on {device} -> {out}")
    disease = (disease_labels(args.disease_labels)
               if args.model == "multitask" and args.second_task == "disease" else None)
    mf.record_training(out, key, hist, seconds, annotations_per_patient(), make_split(),
                       disease, args.lidc_root)
    return 0


def _record_fpr(out: Path, hist: dict, seconds: float) -> None:
    """The fpr run's history and duration in the manifest (its data is in its entry)."""
    try:
        manifest = mf.read_manifest(out)
    except mf.WeightsError:
        return
    manifest.setdefault("history", {})["fpr"] = hist
    manifest.setdefault("train_seconds", {})["fpr"] = round(seconds)
    mf.write_manifest(manifest, out)


def build_retrieval_index(detector, nod: Samples, out: Path, device: str = "cpu") -> list:
    """Similar nodules: embed every training nodule (never a held-out test patient) with
    the detector; one index entry per nodule with its readers' ratings and a thumbnail."""
    from ..retrieval import RetrievalIndex, group_by_nodule

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
    mf.register_retrieval(out, files, len(records))
    return [{"entries": len(records)}]
