"""Follow-up pairs with known ground truth, for the follow-up reading (DESIGN.md method P).

From one base exam — the LIDC twin (SYNTHETIC) or a real scan (then the pair is HYBRID) —
:func:`make_followup_pair` builds a *prior* (the base itself, plus inserted nodules at their
prior size) and a *current* exam: the base resampled under a known affine map (the patient
shifted and rotated by a few degrees, the lungs larger or smaller by ``lung_scale`` in
volume, more in the cranio-caudal direction as with a deeper breath) onto another grid (slice
spacing and field of view of its own), with the inserted nodules drawn at their current
size: some grown by a known volume doubling time, one new, one resolved, one stable. A real
nodule of the base can be enlarged by a known factor (the hybrid pair).

Ground truth (:class:`PairTruth`) comes from the construction: the map current → prior in
patient coordinates (the convention of :class:`lungviewer.followup.registration.
Registration`), every nodule's centre in both exams (voxel indices), its volumes and the
VDT. Arrays are ``(z, y, x)`` int16 HU; spacing ``(z, y, x)`` mm.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lungviewer.study.volume import Volume

NODULE_HU = 20.0  #: solid nodule density
LUNG_MARGIN_MM = 4.0  #: inserted nodules lie at least this far (plus radius) from ...
CLEAR_HU = -600.0  #: ... anything denser than this (vessels, walls) in the lung


@dataclass
class TruthNodule:
    """One nodule by construction. Centres are voxel indices ``(z, row, col)``; None where
    the nodule is absent (new: no prior; resolved: no current). Diameters are of the
    sphere (mm), volumes in mm³."""

    name: str
    status: str  # new | resolved | stable | growing | shrinking
    prior_zyx: tuple[float, float, float] | None
    current_zyx: tuple[float, float, float] | None
    prior_diameter_mm: float | None
    current_diameter_mm: float | None
    vdt_days: float | None = None
    inserted: bool = True
    type: str = "solid"  #: the inserted spheres are solid; a base nodule's as segmented

    @property
    def prior_volume_mm3(self) -> float | None:
        d = self.prior_diameter_mm
        return None if d is None else math.pi / 6.0 * d ** 3

    @property
    def current_volume_mm3(self) -> float | None:
        d = self.current_diameter_mm
        return None if d is None else math.pi / 6.0 * d ** 3

    @property
    def volume_ratio(self) -> float | None:
        a, b = self.prior_volume_mm3, self.current_volume_mm3
        return None if not a or b is None else b / a


@dataclass
class PairTruth:
    """The construction: ``x_prior = matrix @ x_current + offset`` (patient mm)."""

    matrix: np.ndarray
    offset: np.ndarray
    interval_days: int
    nodules: list[TruthNodule]
    label: str  # SYNTHETIC | HYBRID

    def current_to_prior_mm(self, xyz) -> np.ndarray:
        return np.atleast_2d(np.asarray(xyz, float)) @ self.matrix.T + self.offset


@dataclass
class FollowupPair:
    current: Volume
    prior: Volume
    current_date: _dt.date
    prior_date: _dt.date
    truth: PairTruth
    current_lung: np.ndarray  # the prior's lung mask carried to the current grid
    prior_lung: np.ndarray
    extra: dict = field(default_factory=dict)


def _rotation(deg_xyz) -> np.ndarray:
    ax, ay, az = (math.radians(v) for v in deg_xyz)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _uid(*parts: str) -> str:
    """A deterministic UID (2.25 form of a name-based UUID) for the pair's series."""
    import uuid

    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join(('lungviewer-followup',) + parts)).int}"


def _axial_volume(hu: np.ndarray, spacing, origin, like: Volume, label: str,
                  uid_tag: str) -> Volume:
    sz = float(spacing[0])
    pos = np.asarray(origin, float)[None, :] + np.arange(hu.shape[0])[:, None] * [0, 0, sz]
    return Volume(hu=hu, spacing=tuple(float(v) for v in spacing), positions=pos,
                  orientation=np.array([1.0, 0, 0, 0, 1.0, 0]),
                  sop_uids=[_uid(uid_tag, str(k)) for k in range(len(pos))],
                  series_uid=_uid(uid_tag, "series"), study_uid=_uid(uid_tag, "study"),
                  description=f"{label} follow-up ({uid_tag})", patient_id=like.patient_id,
                  is_synthetic=True, slice_thickness=sz)


def stamp_sphere(hu: np.ndarray, spacing, centre_zyx, diameter_mm: float,
                 value: float = NODULE_HU, sub: int = 3) -> None:
    """Draw a solid sphere (``diameter_mm``, centre in voxel indices) into ``hu`` in place,
    with partial volume: each voxel takes the share of its ``sub``³ sub-samples inside."""
    r = diameter_mm / 2.0
    sp = np.asarray(spacing, float)
    c = np.asarray(centre_zyx, float)
    lo = np.maximum(np.floor(c - r / sp - 1).astype(int), 0)
    hi = np.minimum(np.ceil(c + r / sp + 2).astype(int), hu.shape)
    if np.any(hi <= lo):
        return
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    grids = np.meshgrid(*[np.arange(lo[i], hi[i]) for i in range(3)], indexing="ij")
    occ = np.zeros(grids[0].shape, float)
    for dz in offs:
        for dy in offs:
            for dx in offs:
                d2 = (((grids[0] + dz - c[0]) * sp[0]) ** 2 + ((grids[1] + dy - c[1]) * sp[1]) ** 2
                      + ((grids[2] + dx - c[2]) * sp[2]) ** 2)
                occ += d2 <= r * r
    occ /= sub ** 3
    box = tuple(slice(lo[i], hi[i]) for i in range(3))
    old = hu[box].astype(float)
    hu[box] = np.rint(old + occ * (value - old)).clip(-1024, 3071).astype(hu.dtype)


def enlarge_nodule(hu: np.ndarray, mask: np.ndarray, centre_zyx, factor: float) -> None:
    """Enlarge the nodule ``mask`` (bool, the volume's shape) about ``centre_zyx`` by the
    linear ``factor`` in place: the nodule's voxels zoomed, written where the zoomed mask
    lies (its volume grows by about ``factor``³)."""
    zs, ys, xs = np.nonzero(mask)
    c = np.asarray(centre_zyx, float)
    ext = max(zs.max() - zs.min(), ys.max() - ys.min(), xs.max() - xs.min()) + 1
    half = int(math.ceil(ext * factor / 2 + 3))
    lo = np.maximum(np.round(c).astype(int) - half, 0)
    hi = np.minimum(np.round(c).astype(int) + half + 1, hu.shape)
    grid = np.meshgrid(*[np.arange(lo[i], hi[i]) for i in range(3)], indexing="ij")
    src = [c[i] + (grid[i] - c[i]) / factor for i in range(3)]
    m = ndi.map_coordinates(mask.astype(np.float32), src, order=1) >= 0.5
    v = ndi.map_coordinates(hu.astype(np.float32), src, order=1)
    box = tuple(slice(lo[i], hi[i]) for i in range(3))
    sub = hu[box]
    sub[m] = np.maximum(sub[m], np.rint(v[m]).astype(hu.dtype))


def _sites(lung: np.ndarray, hu: np.ndarray, spacing, n: int, radii_mm, rng,
           avoid=(), accept=None) -> list[np.ndarray]:
    """``n`` nodule centres (voxel indices) in clear lung (no vessel or wall within the
    radius + :data:`LUNG_MARGIN_MM`), ≥ 30 mm apart."""
    clear = np.pad(lung & (hu < CLEAR_HU), 1)  # the volume's edges count as not clear
    dist = ndi.distance_transform_edt(clear, sampling=spacing)[1:-1, 1:-1, 1:-1]
    out: list[np.ndarray] = []
    taken = [np.asarray(a, float) for a in avoid]
    sp = np.asarray(spacing, float)
    for r in radii_mm:
        cand = np.argwhere(dist >= r + LUNG_MARGIN_MM)
        if len(cand) == 0:
            raise ValueError("the lung is too small for the nodules")
        rng.shuffle(cand)
        for p in cand[:4000]:
            if all(np.linalg.norm((p - q) * sp) >= 30.0 for q in taken + out) and (
                    accept is None or accept(p, r)):
                out.append(p.astype(float))
                break
        else:
            raise ValueError("no room for another nodule 30 mm from the others")
    return out[:n]


#: the inserted nodules: name, status, prior diameter (mm), VDT (days; None: no growth)
DEFAULT_NODULES = (
    ("grow200", "growing", 6.0, 200.0),
    ("grow400", "growing", 10.0, 400.0),
    ("stable", "stable", 8.0, None),
    ("new", "new", None, 7.0),  # for "new" the last field is its current diameter
    ("resolved", "resolved", 7.0, None),
)


def make_followup_pair(prior: Volume, prior_lung: np.ndarray, *, seed: int = 0,
                       interval_days: int = 365, rotation_deg=None,
                       shift_mm=None, lung_scale: float | None = None,
                       current_spacing=(2.0, 1.6, 1.6), current_shape=None,
                       nodules=DEFAULT_NODULES, base_nodules=(),
                       enlarge: tuple | None = None, label: str = "SYNTHETIC",
                       prior_date: _dt.date = _dt.date(2025, 3, 4)) -> FollowupPair:
    """A follow-up pair with known ground truth (see the module docstring).

    ``prior``: the base exam (axial, its lung mask ``prior_lung``); ``base_nodules``: its own
    nodules as ``(name, centre_zyx, diameter_mm[, type])``, stable by construction (their volume
    changes only by the map's scale); ``enlarge``: ``(name, centre_zyx, mask, factor)`` — a
    base nodule enlarged by a linear factor in the current exam. ``current_shape`` default:
    the prior's field of view, 10 % narrower in plane, at ``current_spacing``. The motion
    not given is drawn from ``seed``: rotation up to ±3° about each axis, shift up to ±15 mm,
    lung volume ×1.10 or ×0.90 (a deeper or a shallower breath)."""
    rng = np.random.default_rng(seed)
    motion = np.random.default_rng([seed, 7])
    if rotation_deg is None:
        rotation_deg = tuple(motion.uniform(-3.0, 3.0, 3))
    if shift_mm is None:
        shift_mm = tuple(motion.uniform(-15.0, 15.0, 3))
    if lung_scale is None:
        lung_scale = 1.10 if seed % 2 == 0 else 0.90
    sp_p = np.asarray(prior.spacing, float)
    # the map current -> prior: current lungs larger by lung_scale (z takes half of it)
    sz_ = lung_scale ** 0.5
    sxy = (lung_scale / sz_) ** 0.5
    m = _rotation(rotation_deg) @ np.diag([1 / sxy, 1 / sxy, 1 / sz_])
    sp_c = np.asarray(current_spacing, float)
    if current_shape is None:
        ext = np.asarray(prior.hu.shape) * sp_p * np.array([1.0 * sz_, 0.9, 0.9])
        current_shape = tuple(int(v) for v in np.round(ext / sp_c))
    shape_c = tuple(int(v) for v in current_shape)
    from lungviewer.followup.registration import Grid

    gp = Grid.of(prior)
    prior_centre = gp.to_patient((np.asarray(prior.hu.shape) - 1) / 2.0)
    origin_c = np.array([-200.0, -190.0, -350.0]) + rng.uniform(-10, 10, 3)
    cur_centre = origin_c + ((np.asarray(shape_c) - 1) / 2.0 * sp_c)[::-1]
    offset = prior_centre + np.asarray(shift_mm, float) - m @ cur_centre
    # inserted nodules
    radii = [max(d for d in (n[2], n[3] if n[1] == "new" else None) if d) / 2.0
             for n in nodules]
    base = prior.hu.copy()
    if enlarge is not None:
        name, centre, mask, factor = enlarge
        enlarge_nodule(base, mask, centre, factor)
    prior_hu = prior.hu.copy()
    truth: list[TruthNodule] = []
    # the current exam: the (possibly enlarged) base under the map, on the current grid
    gc = Grid(tuple(origin_c), tuple(sp_c), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)), shape_c)
    cur = np.empty(shape_c, np.int16)
    cur_lung = np.empty(shape_c, bool)
    rr, cc = np.meshgrid(np.arange(shape_c[1]), np.arange(shape_c[2]), indexing="ij")
    for k in range(shape_c[0]):
        idx = np.stack([np.full(rr.size, k), rr.ravel(), cc.ravel()], axis=1)
        q = gp.to_index(gc.to_patient(idx) @ m.T + offset).T
        cur[k] = np.rint(ndi.map_coordinates(base, q, order=1, cval=-1024.0,
                                             prefilter=False)).reshape(rr.shape)
        cur_lung[k] = ndi.map_coordinates(prior_lung.astype(np.uint8), q, order=0,
                                          cval=0).reshape(rr.shape).astype(bool)

    def to_current(p_zyx) -> np.ndarray:
        x = gp.to_patient(np.asarray(p_zyx, float))
        return gc.to_index(np.linalg.solve(m, x - offset))

    def inside(p_zyx, r_mm) -> bool:  # the nodule lies wholly in the current field of view
        q = to_current(p_zyx)
        pad = (r_mm + LUNG_MARGIN_MM) / sp_c
        return bool(np.all(q >= pad) and np.all(q <= np.asarray(shape_c) - 1 - pad))

    base_centres = [np.asarray(b[1], float) for b in base_nodules]
    sites = _sites(prior_lung, prior.hu, sp_p, len(nodules), radii, rng, avoid=base_centres,
                   accept=inside)
    for (name, status, d1, v), site in zip(nodules, sites):
        if status == "new":
            d1, d2, vdt = None, float(v), None
        elif status == "resolved":
            d2, vdt = None, None
        elif v:
            d2, vdt = float(d1) * 2.0 ** (interval_days / v / 3.0), float(v)
        else:
            d2, vdt = float(d1), None
        pc = to_current(site)
        if d1:
            stamp_sphere(prior_hu, sp_p, site, d1)
        if d2:
            stamp_sphere(cur, sp_c, pc, d2)
        truth.append(TruthNodule(name, status, tuple(site) if d1 else None,
                                 tuple(pc) if d2 else None, d1, d2, vdt))
    lin = abs(np.linalg.det(m)) ** (-1 / 3)  # linear size change of base anatomy
    for name, centre, d, *kind in base_nodules:
        f = enlarge[3] if enlarge is not None and enlarge[0] == name else 1.0
        d2 = float(d) * lin * f
        vdt = (interval_days * math.log(2) / (3 * math.log(d2 / d))) if d2 > d else None
        st = "growing" if (d2 / d) ** 3 >= 1.25 or d2 - d > 1.5 else "stable"
        truth.append(TruthNodule(name, st, tuple(float(v) for v in centre),
                                 tuple(to_current(centre)), float(d), d2, vdt, inserted=False,
                                 type=kind[0] if kind else "solid"))
    prior_vol = Volume(hu=prior_hu, spacing=prior.spacing, positions=prior.positions,
                       orientation=prior.orientation,
                       sop_uids=[_uid(label, str(seed), "prior", str(k))
                                 for k in range(prior.n_slices)],
                       series_uid=_uid(label, str(seed), "prior", "series"),
                       study_uid=_uid(label, str(seed), "prior", "study"),
                       description=f"{label} follow-up prior", patient_id=prior.patient_id,
                       is_synthetic=True, slice_thickness=float(sp_p[0]))
    current_vol = _axial_volume(cur, sp_c, origin_c, prior, label, f"{label}-{seed}-current")
    return FollowupPair(current_vol, prior_vol, prior_date + _dt.timedelta(days=interval_days),
                        prior_date, PairTruth(m, offset, interval_days, truth, label),
                        cur_lung, prior_lung.copy())


def landmark_errors(reg, pair: FollowupPair, n: int = 200, seed: int = 1) -> np.ndarray:
    """Distances (mm) between where ``reg`` and the construction put ``n`` points of the
    current exam's lungs in the prior (the lung landmarks of the benchmark)."""
    from lungviewer.followup.registration import Grid

    rng = np.random.default_rng(seed)
    pts = np.argwhere(ndi.binary_erosion(pair.current_lung, iterations=2))
    if len(pts) == 0:
        pts = np.argwhere(pair.current_lung)
    pts = pts[rng.choice(len(pts), size=min(n, len(pts)), replace=False)].astype(float)
    gc, gp = Grid.of(pair.current), Grid.of(pair.prior)
    want = pair.truth.current_to_prior_mm(gc.to_patient(pts))
    got = gp.to_patient(reg.current_to_prior(pts))
    return np.linalg.norm(want - got, axis=1)


def write_series(volume: Volume, folder: str | Path, study_date: _dt.date | None,
                 label: str = "SYNTHETIC", body_part: str = "CHEST",
                 modality: str = "CT") -> list[Path]:
    """Write ``volume`` as a CT DICOM series (one file per slice) that says ``label`` in its
    SeriesDescription and ImageComments; ``study_date`` None leaves StudyDate empty."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(volume.n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = volume.sop_uids[k]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = volume.sop_uids[k]
        ds.StudyInstanceUID = volume.study_uid
        ds.SeriesInstanceUID = volume.series_uid
        ds.FrameOfReferenceUID = volume.series_uid + ".1"
        ds.Modality = modality
        ds.PatientName = f"{label}^{volume.patient_id}"
        ds.PatientID = volume.patient_id
        ds.StudyDate = study_date.strftime("%Y%m%d") if study_date else ""
        ds.BodyPartExamined = body_part
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = f"{label} {volume.description}"[:64]
        ds.ImageComments = f"{label} image, not a patient image as it stands (follow-up pair)"
        ds.PixelSpacing = [f"{volume.spacing[1]:.6g}", f"{volume.spacing[2]:.6g}"]
        ds.SliceThickness = f"{volume.spacing[0]:.6g}"
        ds.ImagePositionPatient = [f"{v:.6f}" for v in volume.positions[k]]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in volume.orientation]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.hu.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        ds.PixelData = volume.hu[k].astype("<i2").tobytes()
        p = out / f"{k + 1:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths
