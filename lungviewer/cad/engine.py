"""The CAD inference engine: one object the viewer's worker thread and ``lungviewer
analyze`` share, so both give the same numbers.

``CadEngine.load()`` reads the shipped weights (checksums verified) onto the best device
(CUDA → MPS → CPU). torch is imported here lazily — importing this module does not
import torch, so the viewer's first frame never waits for it.

* :meth:`CadEngine.score_box` — a box on a slice → nodule patch → multi-task network
  (malignancy level 1–5, disease classes of the shipped label set), nodule detector
  (nodule probability, embedding) and similar annotated nodules. Where the weights hold a
  ``detector-real`` (trained on real nodule patches and real negatives, 32×32 context) the
  box uses it and the index built with it; the findings and the slice scan keep
  ``detector``, which their false-positive reduction and calibration were fitted with.
* :meth:`CadEngine.scan_slices` — slice recommendation: every slice's candidates (bright
  blobs at and in the lungs) scored by the detector and the transferred slice head
  (:mod:`lungviewer.cad.recommend`); slices ranked by the probability that they show a
  nodule. Results fill in as the scan goes. This is the one slice-scoring path: the
  viewer, ``lungviewer analyze`` and ``lungviewer evaluate`` all run it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungviewer import paths
from lungviewer.cancel import check
from lungviewer.imaging.candidates import find_candidates
from lungviewer.imaging.patches import detector_patch, detector_patches, nodule_patch
from lungviewer.study.volume import Volume

from .manifest import CAVEAT, MANIFEST, WeightsError, read_manifest, verify_file
from .recommend import SLICE_CLASSES, candidate_scores, rank_slices
from .retrieval import RetrievalIndex, SimilarNodule

__all__ = ["CAVEAT", "SLICE_CLASSES", "BoxScores", "CadEngine", "SliceScores"]

log = logging.getLogger(__name__)


@dataclass
class BoxScores:
    malignancy_probs: np.ndarray  # (5,) levels 1..5
    disease_probs: np.ndarray  # (K,)
    disease_names: list[str]
    #: the probability of a nodule or mass: the calibrated probability of the CAD finding the
    #: box lies on (set by the study session; None where there is none), never a second model's
    nodule_prob: float | None
    embedding: np.ndarray  # (512,)
    box: tuple[int, int, int, int, int]  # slice, row0, col0, row1, col1
    box_mm: tuple[float, float]
    patch_binary: np.ndarray
    patch_grey: np.ndarray
    detector_patch: np.ndarray
    device: str
    timings: dict[str, float]
    similar: list[SimilarNodule] = field(default_factory=list)
    nodule_source: str = "the box's patch (detector)"

    @property
    def malignancy_expected(self) -> float:
        return float(np.dot(self.malignancy_probs, np.arange(1, 6)))

    def as_dict(self) -> dict:
        return {
            "box": list(self.box), "box_mm": [round(v, 2) for v in self.box_mm],
            "malignancy": {str(i + 1): round(float(p), 4)
                           for i, p in enumerate(self.malignancy_probs)},
            "malignancy_expected": round(self.malignancy_expected, 3),
            "disease": {n: round(float(p), 4) for n, p in zip(self.disease_names,
                                                             self.disease_probs)},
            "nodule_probability": (None if self.nodule_prob is None
                                   else round(float(self.nodule_prob), 4)),
            "nodule_probability_source": self.nodule_source,
            "similar": [{"patient_id": s.patient_id, "nodule": s.nodule,
                         "malignancies": s.malignancies, "diameter_mm": round(s.diameter_mm, 1),
                         "slice": s.slice_index, "distance": round(s.distance, 4)}
                        for s in self.similar],
            "device": self.device, "timings_ms": {k: round(v, 1) for k, v in self.timings.items()},
        }


@dataclass
class SliceScores:
    """Per-slice recommendation scores of a study (NaN where not scanned yet)."""

    scores: np.ndarray  # (n,) probability that the slice shows a nodule
    classes: np.ndarray  # (n,) int index into SLICE_CLASSES
    best: np.ndarray  # (n, 2) row, col of the best candidate
    done: int = 0
    spacing: tuple[float, float, float] | None = None  # (z, y, x) mm, for distinct findings
    labels: tuple[str, ...] = SLICE_CLASSES  # what ``classes`` index

    @staticmethod
    def empty(n: int) -> SliceScores:
        return SliceScores(np.full(n, np.nan), np.zeros(n, int), np.zeros((n, 2), int))

    def ranking(self) -> np.ndarray:
        """Scanned slices, likeliest distinct findings first (:func:`recommend.rank_slices`)."""
        s = np.where(np.isfinite(self.scores), self.scores, -1.0)
        order = rank_slices(s, self.best, self.spacing)
        return order[np.isfinite(self.scores[order])]

    def label(self, k: int) -> str:
        return self.labels[int(self.classes[k])]


def _box_of(f, volume: Volume) -> tuple[int, int, int, int]:
    """A finding's axial box (row0, row1, col0, col1): its segmentation's extent, else a
    square of its diameter (at least 3 mm) around its centre."""
    if getattr(f, "extent", None) is not None:
        _, _, r0, r1, c0, c1 = f.extent
        return int(r0), int(r1), int(c0), int(c1)
    hr = max(f.diameter_mm, 3.0) / 2.0 / float(volume.spacing[1])
    hc = max(f.diameter_mm, 3.0) / 2.0 / float(volume.spacing[2])
    return (max(int(f.row - hr), 0), int(np.ceil(f.row + hr)) + 1,
            max(int(f.col - hc), 0), int(np.ceil(f.col + hc)) + 1)


def _cuda_present() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class CadEngine:
    def __init__(self, models: dict, index: RetrievalIndex, manifest: dict, device: str) -> None:
        self.models = models
        self.index = index
        self.manifest = manifest
        self.device = device
        cfg = manifest["models"]["multitask"]["config"]
        self.disease_names: list[str] = list(cfg.get("second_names", []))
        self.disease_source: str = cfg.get("second_source", "")
        ds = manifest.get("label_sets", {}).get("disease", {})
        if ds.get("names") == self.disease_names and "training_patients" in ds:
            self.disease_source += (f"; learned from {ds['training_patients']} training "
                                    f"patients, {ds['training_annotations']} annotations")
        self.caveat: str = manifest.get("caveat", CAVEAT)
        self.note = ""  # why the CAD runs on the CPU although a GPU is present, for the panel
        #: the box's detector: the real-trained one where shipped, with its field (pixels
        #: around the box centre it was trained to see; None: the whole 50×50 patch)
        self.box_detector = "detector-real" if "detector-real" in models else "detector"
        ctx = manifest["models"].get(self.box_detector, {}).get("config", {}).get("context")
        self.box_context: int | None = int(ctx) if ctx else None

    @classmethod
    def load(cls, weights_dir: str | Path | None = None, device: str = "auto") -> CadEngine:
        from .device import pick_device
        from .weights import load_model

        folder = Path(weights_dir or paths.weights_dir())
        manifest = read_manifest(folder)
        dev = pick_device(device)
        models = {name: load_model(name, folder, dev, manifest)
                  for name in ("multitask", "detector", "slices")}
        if "detector-real" in manifest.get("models", {}):
            models["detector-real"] = load_model("detector-real", folder, dev, manifest)
        if "fpr" in manifest.get("models", {}):  # older weights folders lack it: hand-set score
            models["fpr"] = load_model("fpr", folder, dev, manifest)
        entry = manifest["models"].get("retrieval")
        if entry is None:
            raise WeightsError(f"{folder / MANIFEST} has no retrieval index.")
        verify_file(folder, entry)
        verify_file(folder, entry, "records", "records_sha256")
        index = RetrievalIndex.load(folder / Path(entry["file"]).stem)
        engine = cls(models, index, manifest, dev)
        if device in ("auto", None) and dev == "cpu" and _cuda_present():
            engine.note = "A CUDA GPU is present but failed a test; the CAD runs on the CPU."
        return engine

    def _fall_back(self, exc: Exception) -> None:
        """A GPU error during inference: the networks move to the CPU (with a warning) and
        the work is run again there; the panel then says 'cpu'."""
        log.warning("The CAD failed on the %s (%s: %s); it goes on on the CPU.", self.device,
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        for m in self.models.values():
            m.to("cpu")
        self.note = (f"The GPU failed ({type(exc).__name__}); the CAD runs on the "
                     "CPU.")
        self.device = "cpu"

    # -- the findings' calibration, operating points and what the heads are worth ----------
    @property
    def calibration(self) -> dict | None:
        """The findings' calibration (evidence → probability), stored with the false-positive
        reduction network; None for weights without one."""
        return (self.manifest["models"].get("fpr", {}).get("config", {})
                .get("calibration") or None)

    @property
    def operating_points(self) -> dict[int, float]:
        """False positives per scan on held-out volumes → the probability threshold that
        gives them (``{1: p, 2: p, 4: p}``); empty for weights without a calibration."""
        ops = (self.manifest["models"].get("fpr", {}).get("config", {})
               .get("operating_points") or {})
        return {int(k): float(v) for k, v in ops.items()}

    def disease_assessment(self) -> dict:
        """What the disease head is worth: its measured accuracy with 95 % CI beside the
        majority-class baseline (manifest metrics), and ``reliable`` — True only when the
        baseline lies below the accuracy's confidence interval. Where it is not, the viewer,
        the SR and the PDF show the head's output greyed and name no class."""
        m = self.manifest.get("metrics", {})
        acc, base = m.get("disease.accuracy") or {}, m.get("disease.majority_baseline") or {}
        try:
            ci = [float(v) for v in acc["ci95"]]
            out = {"accuracy": float(acc["value"]), "ci95": ci,
                   "baseline": float(base["value"]), "n": int(acc.get("n", 0)),
                   "data": m.get("data", "")}
        except (KeyError, TypeError, ValueError):
            return {"reliable": False, "accuracy": None, "ci95": None, "baseline": None,
                    "n": 0, "data": "", "why": "no measured accuracy for the disease head"}
        out["reliable"] = out["baseline"] < ci[0]
        out["why"] = ("" if out["reliable"] else
                      f"not better than the base rate: accuracy {out['accuracy']:.2f} "
                      f"(95 % CI {ci[0]:.2f}-{ci[1]:.2f}) against {out['baseline']:.2f} for "
                      "always answering the commonest class")
        return out

    def malignancy_of(self, volume: Volume, findings: list) -> None:
        """Set each finding's ``malignancy`` (the malignancy network's expected level 1..5)
        from the nodule patch of its extent on its centre slice."""
        import torch

        if not findings:
            return
        sp = (volume.spacing[1], volume.spacing[2])
        xs, es = [], []
        for f in findings:
            r0, r1, c0, c1 = _box_of(f, volume)
            p = nodule_patch(volume.hu[int(f.slice)], (r0, c0, r1, c1), sp)
            xs.append(p.stacked())
            es.append(p.box_mm)
        with torch.no_grad():
            out = self.models["multitask"](torch.from_numpy(np.stack(xs)).to(self.device),
                                           torch.tensor(es, dtype=torch.float32,
                                                        device=self.device))
            mal = torch.softmax(out[0], 1).cpu().numpy()
        for f, p in zip(findings, mal):
            f.malignancy = float(np.dot(p, np.arange(1, 6)))

    @property
    def device_name(self) -> str:
        from .device import describe

        return describe(self.device)

    # -- one box ------------------------------------------------------------------------------
    def score_box(self, volume: Volume, slice_index: int, box, k_similar: int = 5,
                  exclude_patient: str | None = None) -> BoxScores:
        """Scores of the region ``box`` = (row0, col0, row1, col1) on slice ``slice_index``;
        a GPU error falls back to the CPU."""
        try:
            return self._score_box(volume, slice_index, box, k_similar, exclude_patient)
        except Exception as exc:  # CUDA raises RuntimeError, AssertionError, ...
            if self.device == "cpu":
                raise
            self._fall_back(exc)
            return self._score_box(volume, slice_index, box, k_similar, exclude_patient)

    def _score_box(self, volume: Volume, slice_index: int, box, k_similar: int,
                   exclude_patient: str | None) -> BoxScores:
        import torch

        t0 = time.perf_counter()
        sl = volume.hu[int(slice_index)]
        p = nodule_patch(sl, box, (volume.spacing[1], volume.spacing[2]))
        r0, c0, r1, c1 = (int(v) for v in box)
        det = detector_patch(sl, ((r0 + r1) / 2, (c0 + c1) / 2), context=self.box_context)
        t1 = time.perf_counter()
        with torch.no_grad():
            x = torch.from_numpy(p.stacked()[None]).to(self.device)
            e = torch.tensor([p.box_mm], dtype=torch.float32, device=self.device)
            out = self.models["multitask"](x, e)
            mal = torch.softmax(out[0], 1)[0].cpu().numpy()
            dis = torch.softmax(out[1], 1)[0].cpu().numpy() if len(out) > 1 else np.zeros(0)
            d = self.models[self.box_detector]
            f = d.embed(torch.from_numpy(det[None, None]).to(self.device))
            nod = float(torch.softmax(d.out(f), 1)[0, 1])
            emb = f[0].cpu().numpy()
        t2 = time.perf_counter()
        similar = self.index.query(emb, k_similar, exclude_patient)
        t3 = time.perf_counter()
        return BoxScores(mal, dis, self.disease_names, nod, emb,
                         (int(slice_index), r0, c0, r1, c1), p.box_mm, p.binary, p.grey, det,
                         self.device, {"patches_ms": 1e3 * (t1 - t0),
                                       "networks_ms": 1e3 * (t2 - t1),
                                       "retrieval_ms": 1e3 * (t3 - t2),
                                       "total_ms": 1e3 * (t3 - t0)}, similar)

    # -- the whole study ------------------------------------------------------------------------
    def scan_slices(self, volume: Volume, lung_mask: np.ndarray | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    cancel: Callable[[], bool] | None = None,
                    out: SliceScores | None = None, batch: int = 256) -> SliceScores:
        """Slice recommendation over every slice; fills ``out`` (if given) as batches
        finish. ``cancel`` returning True stops the scan with
        :class:`lungviewer.cancel.Cancelled`."""
        if lung_mask is None:
            from lungviewer.imaging.parenchyma import segment_lungs

            lung_mask = segment_lungs(volume.hu).mask
        res = out or SliceScores.empty(volume.n_slices)
        res.spacing = tuple(float(v) for v in volume.spacing)
        pts, _ = find_candidates(volume.hu, lung_mask)
        # slices without candidates: nothing there
        scanned = np.zeros(volume.n_slices, bool)
        det, head = self.models["detector"], self.models["slices"]
        n = len(pts)
        for i in range(0, max(n, 1), batch):
            check(cancel, "the slice scan")
            chunk = pts[i:i + batch]
            if len(chunk) == 0:
                break
            patches = np.concatenate([detector_patches(volume.hu[k], chunk[chunk[:, 0] == k, 1:])
                                      for k in np.unique(chunk[:, 0])])
            order = np.concatenate([np.nonzero(chunk[:, 0] == k)[0]
                                    for k in np.unique(chunk[:, 0])])
            chunk = chunk[order]
            try:
                score, p_cls = candidate_scores(det, head, patches, self.device)
            except Exception as exc:  # a GPU error: the rest of the scan on the CPU
                if self.device == "cpu":
                    raise
                self._fall_back(exc)
                score, p_cls = candidate_scores(det, head, patches, self.device)
            for j, (k, r, c) in enumerate(chunk):
                if not scanned[k] or score[j] > res.scores[k]:
                    scanned[k] = True
                    res.scores[k] = score[j]
                    res.classes[k] = int(np.argmax(p_cls[j])) if score[j] >= 0.5 else 0
                    res.best[k] = (r, c)
            res.done = int(chunk[-1, 0]) + 1
            if progress is not None:
                progress(min(i + batch, n), n)
        res.scores[~scanned] = 0.0
        res.done = volume.n_slices
        return res

    # -- CAD findings ---------------------------------------------------------------------------
    def find_findings(self, volume: Volume, lung_mask: np.ndarray,
                      progress: Callable[[int, int], None] | None = None,
                      cancel: Callable[[], bool] | None = None) -> list:
        """The study's CAD findings (:func:`lungviewer.cad.findings.find_findings`: 3-D blob
        candidates in the lungs, false-positive reduction, ranked marks), best first; a GPU
        error falls back to the CPU."""
        from .findings import find_findings

        try:
            return find_findings(volume, lung_mask, self.models, self.device,
                                 progress=progress, cancel=cancel,
                                 calibration=self.calibration)
        except Exception as exc:  # noqa: BLE001 - CUDA raises RuntimeError, AssertionError, ...
            if self.device == "cpu" or isinstance(exc, ValueError) \
                    or type(exc).__name__ == "Cancelled":
                raise
            self._fall_back(exc)
            return find_findings(volume, lung_mask, self.models, self.device,
                                 progress=progress, cancel=cancel,
                                 calibration=self.calibration)
