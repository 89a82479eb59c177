"""The reading as DICOM: a Segmentation (SEG) of the accepted nodules and a Structured
Report (SR, TID 1500 Measurement Report), both written through ``highdicom`` and both
referencing the source CT series.

**SEG** (BINARY): one segment per accepted nodule that has a segmentation mask, plus
optionally the lung mask (threshold method). Accepted CAD marks without a segmentation are
*not* put into the SEG (a sphere of the detected diameter would be a made-up outline);
they are in the SR as a circle on their slice.

**SR** (Comprehensive 3D SR, TID 1500). Per accepted nodule two measurement groups:

* ``Nodule <id> axial`` (TID 1410 planar ROI): its outline on the axial slice of largest
  extent (an image region referencing that source image), with the diameter (mean of the
  axes), long axis and short axis measured there;
* ``Nodule <id>`` (TID 1411 volumetric ROI): references the SEG segment when a SEG is
  written with it, else its outline on each of its slices; volume, mean attenuation (HU),
  the type and the Lung-RADS suggestion (with its rule as text), the CAD scores of its box,
  the reader's note (a Comment).

Both name the lung and side (from patient x) as finding site. An accepted CAD mark without
a nodule is a ``CAD mark <id>`` group (TID 1410: a circle of its diameter on its slice, with
its score). The observer context names the device "lungviewer CAD" with the models'
version; every CAD number carries an algorithm identification (name, models' version, the
caveat "research use, not for clinical use; trained on synthetic images" as parameter),
the caveat is also a document-level Comment, and both objects say ContentQualification
RESEARCH.

Codes: SNOMED CT / DICOM / UCUM from ``pydicom.sr.codedict`` where a code exists (long
axis SCT 103339001, short axis SCT 103340004, diameter SCT 81827009, volume SCT 118565006,
mean attenuation coefficient DCM 112181, nodule, lung, laterality, comment DCM 121106).
Concepts without a standard code (Lung-RADS category and its values, nodule type from HU,
the CAD model outputs) use the private coding scheme ``99LUNGVIEWER``, declared in the
SR's Coding Scheme Identification Sequence; :data:`LOCAL_CODES` lists them.

Nothing here logs a patient identifier. A synthetic source series (the LIDC twin) gives
exports whose SeriesDescription carries the twin's SYNTHETIC marker.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from lungviewer import __version__
from lungviewer.contracts import TWIN_MARKER
from lungviewer.fileio import atomic_path

from .model import CadMark, NoduleRecord, Reading

log = logging.getLogger(__name__)

LOCAL_SCHEME = "99LUNGVIEWER"
CAVEAT = "research use, not for clinical use; trained on synthetic images"
CAD_NAME = "lungviewer CAD"
#: the private codes (value -> meaning) this module writes under ``99LUNGVIEWER``
LOCAL_CODES: dict[str, str] = {
    "LUNGRADS": "Lung-RADS v2022 category (suggestion)",
    "LUNGRADSRULE": "Lung-RADS rule applied",
    "NODTYPE": "Nodule type from attenuation",
    "SOLID": "Solid nodule",
    "PARTSOLID": "Part-solid nodule",
    "GGN": "Ground-glass nodule",
    "UNKNOWN": "Nodule type undetermined",
    "MALEXP": "Expected malignancy level 1-5 (CAD)",
    "MALP1": "Probability of malignancy level 1 (CAD)",
    "MALP2": "Probability of malignancy level 2 (CAD)",
    "MALP3": "Probability of malignancy level 3 (CAD)",
    "MALP4": "Probability of malignancy level 4 (CAD)",
    "MALP5": "Probability of malignancy level 5 (CAD)",
    "NODPROB": "Nodule probability (CAD detector)",
    "CADSCORE": "CAD finding score",
    "LUNGMASK": "Lung (threshold method)",
    **{f"DIS{i}": f"Probability of disease class {i} (CAD)" for i in range(1, 10)},
    **{f"LR-{c}": f"Lung-RADS {c} (suggestion)" for c in
       ("0", "1", "2", "3", "4A", "4B", "4X", "S")},
    # follow-up comparison (the prior's measurements, the change)
    "PRIORDIAM": "Mean diameter on the prior exam",
    "PRIORVOL": "Volume on the prior exam",
    "DIAMCHANGE": "Change in mean diameter since the prior",
    "VOLCHANGE": "Volume change since the prior",
    "VDT": "Volume doubling time",
    "FUSTATUS": "Follow-up status (new, resolved, stable, growing, shrinking)",
    "LUNGRADSFU": "Lung-RADS v2022 follow-up rule applied",
}
_TYPES = {"solid": "SOLID", "part-solid": "PARTSOLID", "part_solid": "PARTSOLID",
          "partsolid": "PARTSOLID", "ggn": "GGN", "ground glass": "GGN",
          "ground-glass": "GGN", "non-solid": "GGN", "nonsolid": "GGN"}


class ExportError(Exception):
    """An export that cannot be made (no source files, nothing accepted, ...)."""


def local_code(value: str, meaning: str | None = None):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, LOCAL_SCHEME, meaning or LOCAL_CODES[value])


def _coding_schemes():
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return [CodingSchemeIdentificationItem(
        LOCAL_SCHEME, name="lungviewer local codes",
        responsible_organization="lungviewer (research software)")]


#: Type 2 attributes of the patient/study modules that the exports copy from the source
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


# -- source images ------------------------------------------------------------------------------
def read_sources(volume) -> list[pydicom.Dataset]:
    """The headers of the loaded series' files (no pixel data), in volume order."""
    if not volume.files or len(volume.files) != volume.n_slices:
        raise ExportError("the loaded study has no source DICOM files to reference "
                          "(an export needs the CT series it was loaded from)")
    out = []
    for i, f in enumerate(volume.files):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:  # any read failure: the file changed on disk
            raise ExportError(f"source slice {i + 1} ({Path(f).name}) can no longer be read "
                              f"({type(exc).__name__})") from exc
        if volume.sop_uids and str(ds.get("SOPInstanceUID", "")) != volume.sop_uids[i]:
            raise ExportError(f"source slice {i + 1} ({Path(f).name}) changed on disk since the "
                              "study was opened; reopen the study")
        for key in _TYPE2:  # required-but-may-be-empty attributes some series leave out
            if key not in ds:
                setattr(ds, key, "")
        out.append(ds)
    if "FrameOfReferenceUID" not in out[0]:
        raise ExportError("the CT series has no FrameOfReferenceUID; DICOM SEG and SR need it")
    return out


def _is_synthetic(volume, sources) -> bool:
    desc = str(sources[0].get("SeriesDescription", "")) if sources else ""
    return bool(volume.is_synthetic) or TWIN_MARKER in desc.upper()


def _description(kind: str, volume, sources) -> str:
    text = f"lungviewer reading {kind}"
    return f"{TWIN_MARKER} {text}" if _is_synthetic(volume, sources) else text


@contextlib.contextmanager
def _quiet_highdicom():
    """highdicom logs every copied module with the source's instance UID at INFO; UIDs are
    identifying (the anonymised export replaces them), so keep them out of the log."""
    logger = logging.getLogger("highdicom")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _software() -> str:
    return f"lungviewer {__version__}"


# -- SEG ----------------------------------------------------------------------------------------
@dataclass
class SegInfo:
    """What the SR needs to reference the SEG: its UIDs and the segment of each item."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    segment_of: dict[str, int] = field(default_factory=dict)  # nodule id or "lung" -> number
    dataset: pydicom.Dataset | None = None
    #: nodule id -> the tracking UID its segment carries (the SR's groups of that nodule
    #: carry the same UID and identifier, so a PACS links the SR finding and the segment)
    tracking_of: dict[str, str] = field(default_factory=dict)


def _algorithm(name: str, version: str, ai: bool = False):
    import highdicom as hd

    family = codes.DCM.ArtificialIntelligence if ai else codes.DCM.AnalyticalAlgorithm
    return hd.AlgorithmIdentificationSequence(name=name, family=family, version=version,
                                              parameters={"caveat": CAVEAT} if ai else None)


def export_seg(reading: Reading, volume, out_path: str | Path, lung_mask: np.ndarray | None = None,
               sources: list[pydicom.Dataset] | None = None, series_number: int = 901
               ) -> SegInfo:
    """Write a BINARY DICOM SEG of the accepted nodules' masks (and the lung mask when
    given, (z, y, x) bool like the volume) to ``out_path`` (atomically)."""
    import highdicom as hd

    sources = sources if sources is not None else read_sources(volume)
    shape = volume.shape
    segments: list[tuple[str, np.ndarray, hd.seg.SegmentDescription]] = []
    nodules = [n for n in reading.accepted_nodules() if n.mask is not None]
    for n in nodules:
        mask = n.mask.full(shape)
        if not mask.any():
            log.warning("nodule %s: its mask lies outside the volume; left out of the SEG", n.id)
            continue
        desc = hd.seg.SegmentDescription(
            segment_number=len(segments) + 1, segment_label=f"Nodule {n.id}"[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if n.source == "cad"
                            else hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC),
            algorithm_identification=_algorithm("lungviewer nodule volumetry", __version__),
            tracking_uid=hd.UID(), tracking_id=f"Nodule {n.id}",
            anatomic_regions=[codes.SCT.Lung])
        segments.append((n.id, mask, desc))
    if lung_mask is not None:
        lung = np.asarray(lung_mask, dtype=bool)
        if lung.shape != shape:
            raise ExportError(f"the lung mask is {lung.shape}, the volume {shape}")
        if lung.any():
            segments.append(("lung", lung, hd.seg.SegmentDescription(
                segment_number=len(segments) + 1, segment_label="Lung (threshold method)",
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=codes.SCT.Lung,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=_algorithm("lungviewer lung mask (threshold method)",
                                                    __version__),
                tracking_uid=hd.UID(), tracking_id="lung")))
    if not segments:
        raise ExportError("nothing to put into a DICOM SEG: no accepted nodule has a "
                          "segmentation (segment a nodule from its box, or accept one)"
                          + ("" if lung_mask is not None else ", and no lung mask was asked for"))
    pixels = np.stack([m for _, m, _ in segments], axis=-1)  # (frames, rows, cols, segments)
    with _quiet_highdicom():
        seg = _segmentation(hd, sources, pixels, segments, series_number, volume)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    log.info("DICOM SEG written: %d segment(s), %d frame(s)", len(segments),
             int(seg.NumberOfFrames))
    return SegInfo(out_path, str(seg.SOPClassUID), str(seg.SOPInstanceUID),
                   str(seg.SeriesInstanceUID), {k: d.SegmentNumber for k, _, d in segments}, seg,
                   {k: str(d.TrackingUID) for k, _, d in segments if k != "lung"})


def _segmentation(hd, sources, pixels, segments, series_number: int, volume):
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[d for _, _, d in segments],
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="lungviewer", manufacturer_model_name="lungviewer",
        software_versions=_software(), device_serial_number="none",
        content_label="NODULES", content_description="lungviewer reading: nodules"[:64],
        series_description=_description("SEG", volume, sources),
        content_qualification="RESEARCH", specific_character_set="ISO_IR 192")


# -- SR -----------------------------------------------------------------------------------------
def _num(name, value: float, unit, algorithm=None, images=None, coords=None):
    from highdicom.sr import Measurement

    return Measurement(name=name, value=float(value), unit=unit, algorithm_id=algorithm,
                       referenced_images=images, referenced_coordinates=coords)


def _cad_algorithm(version: str):
    from highdicom.sr import AlgorithmIdentification

    return AlgorithmIdentification(name=CAD_NAME, version=version[:64] or "unknown",
                                   parameters=[CAVEAT])


def _type_code(kind: str):
    key = _TYPES.get(kind.strip().lower(), "UNKNOWN")
    return local_code(key)


def _lung_rads_code(category: str):
    cat = category.strip().upper().removeprefix("LUNG-RADS").strip() or "?"
    value = f"LR-{cat}"
    return local_code(value[:16], LOCAL_CODES.get(value, f"Lung-RADS {cat} (suggestion)"))


def _text(name, value: str):
    from highdicom.sr import TextContentItem

    return TextContentItem(name=name, value=value, relationship_type="CONTAINS")


def _contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a 2-D mask as (col, row) DICOM image coordinates (pixel centre =
    index + 0.5), longest first."""
    from skimage.measure import find_contours

    padded = np.pad(mask2d.astype(np.uint8), 1)
    out = []
    for c in find_contours(padded, 0.5):
        if len(c) >= 4:
            rc = c - 1 + 0.5  # undo the padding; DICOM's pixel centres are at +0.5
            out.append(np.ascontiguousarray(rc[:, ::-1], dtype=np.float32))
    return sorted(out, key=len, reverse=True)


def _centre(mask: np.ndarray) -> tuple[float, float, float]:
    idx = np.argwhere(mask)
    return tuple(float(v) for v in idx.mean(axis=0))  # type: ignore[return-value]


def _patient_point(volume, z: float, r: float, c: float) -> np.ndarray:
    """Patient coordinates (x, y, z mm) of fractional voxel (z, r, c), z interpolated."""
    zi = int(np.clip(np.floor(z), 0, volume.n_slices - 1))
    zj = min(zi + 1, volume.n_slices - 1)
    t = float(z - zi) if zj != zi else 0.0
    a, b = volume.pixel_to_patient(zi, r, c), volume.pixel_to_patient(zj, r, c)
    return (1 - t) * a + t * b


def _finding_site(volume, point: np.ndarray):
    from highdicom.sr import FindingSite

    side = codes.SCT.Left if point[0] > 0 else codes.SCT.Right  # DICOM LPS: +x = left
    return FindingSite(anatomic_location=codes.SCT.Lung, laterality=side)


def _box_score_items(score, version: str) -> list:
    alg = _cad_algorithm(score.model_version or version)
    one = codes.UCUM.NoUnits
    items = [_num(local_code("MALEXP"), score.malignancy_expected, one, alg)]
    items += [_num(local_code(f"MALP{i + 1}"), p, one, alg)
              for i, p in enumerate(score.malignancy)]
    if not score.disease_note:  # a head no better than the base rate names no class
        for i, (name, p) in enumerate(zip(score.disease_names, score.disease_probs)):
            meaning = f"Probability of {name} (CAD)"[:64]
            items.append(_num(local_code(f"DIS{i + 1}", meaning), p, one, alg))
    if score.nodule_probability is not None:
        items.append(_num(local_code("NODPROB"), score.nodule_probability, one, alg))
    return items


def _nodule_groups(n: NoduleRecord, reading: Reading, volume, sources, seg: SegInfo | None,
                   version: str) -> list:
    """Two groups per nodule: its outline on the axial slice of largest extent (TID 1410:
    diameter, long and short axis there) and the nodule in 3D (TID 1411: volume, mean HU,
    type, Lung-RADS, CAD scores, note), referencing the SEG segment or its outlines."""
    import highdicom as hd
    from highdicom.sr import (
        ImageRegion,
        PlanarROIMeasurementsAndQualitativeEvaluations,
        QualitativeEvaluation,
        ReferencedSegment,
        SourceImageForRegion,
        SourceSeriesForSegmentation,
        TrackingIdentifier,
        VolumetricROIMeasurementsAndQualitativeEvaluations,
    )

    mask = n.mask.full(volume.shape) if n.mask is not None else None
    if mask is not None and not mask.any():
        mask = None
    k, r0, c0, r1, c1 = n.box
    if mask is not None:
        cz, cr, cc = _centre(mask)
    else:
        cz, cr, cc = float(k), (r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2
    site = [_finding_site(volume, _patient_point(volume, cz, cr, cc))]
    axis = n.axis_slice if n.axis_slice is not None else k
    axis = int(np.clip(axis, 0, volume.n_slices - 1))

    def region(z: int) -> list:
        src = SourceImageForRegion(sources[z].SOPClassUID, sources[z].SOPInstanceUID)
        if mask is not None and mask[z].any():
            return [ImageRegion("POLYLINE", c, src) for c in _contours(mask[z])[:1]]
        rect = np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]], np.float32)
        return [ImageRegion("POLYLINE", rect, src)] if z == k else []

    cad_alg = _cad_algorithm(version) if n.source == "cad" else None
    # one tracking UID per nodule, shared with its SEG segment when one is written
    tracking_uid = (seg.tracking_of.get(n.id) if seg is not None else None) or hd.UID()
    mm, mm3, hu = codes.UCUM.Millimeter, codes.UCUM.CubicMillimeter, codes.UCUM.HounsfieldUnit
    outline = (region(axis) or region(k))[0]
    planar = PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid,
                                               identifier=f"Nodule {n.id} axial"),
        referenced_region=outline, finding_type=codes.SCT.Nodule, finding_sites=site,
        algorithm_id=cad_alg,
        measurements=[_num(codes.SCT.Diameter, n.mean_diameter_mm, mm),
                      _num(codes.SCT.LongAxis, n.long_axis_mm, mm),
                      _num(codes.SCT.ShortAxis, n.short_axis_mm, mm)])
    measurements = [_num(codes.SCT.Volume, n.volume_mm3, mm3),
                    _num(codes.DCM.MeanAttenuationCoefficient, n.mean_hu, hu)]
    score = reading.score_for(n.box)
    if score is not None:
        measurements += _box_score_items(score, version)
    qualitative = [QualitativeEvaluation(local_code("NODTYPE"), _type_code(n.type))]
    if n.category:
        qualitative.append(QualitativeEvaluation(local_code("LUNGRADS"),
                                                 _lung_rads_code(n.category)))
    kwargs = {}
    if seg is not None and n.id in seg.segment_of:
        kwargs["referenced_segment"] = ReferencedSegment(
            sop_class_uid=seg.sop_class_uid, sop_instance_uid=seg.sop_instance_uid,
            segment_number=seg.segment_of[n.id],
            source_series=SourceSeriesForSegmentation(volume.series_uid))
    else:
        zs = np.flatnonzero(mask.any(axis=(1, 2))) if mask is not None else [k]
        kwargs["referenced_regions"] = [r for z in zs for r in region(int(z))]
    volumetric = VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid, identifier=f"Nodule {n.id}"),
        finding_type=codes.SCT.Nodule, finding_sites=site, algorithm_id=cad_alg,
        measurements=measurements, qualitative_evaluations=qualitative, **kwargs)
    texts = []
    if n.lung_rads.get("rule"):
        texts.append(_text(local_code("LUNGRADSRULE"),
                           f"{n.lung_rads['rule']} (a suggestion, not a diagnosis)"))
    if n.note:
        texts.append(_text(codes.DCM.Comment, n.note))
    if texts:
        volumetric[0].ContentSequence.extend(texts)
    return [planar, volumetric]


def _mark_group(m: CadMark, volume, sources, version: str):
    import highdicom as hd
    from highdicom.sr import (
        ImageRegion,
        PlanarROIMeasurementsAndQualitativeEvaluations,
        SourceImageForRegion,
        TrackingIdentifier,
    )

    k = int(np.clip(m.slice, 0, volume.n_slices - 1))
    radius_px = m.diameter_mm / 2 / float(volume.spacing[2])
    x, y = m.col + 0.5, m.row + 0.5
    region = ImageRegion("CIRCLE", np.array([[x, y], [x + radius_px, y]], np.float32),
                         SourceImageForRegion(sources[k].SOPClassUID, sources[k].SOPInstanceUID))
    centre = volume.pixel_to_patient(k, m.row, m.col)
    alg = _cad_algorithm(version)
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=f"CAD mark {m.id}"),
        referenced_region=region, finding_type=codes.SCT.Nodule,
        finding_sites=[_finding_site(volume, centre)], algorithm_id=alg,
        measurements=[_num(codes.SCT.Diameter, m.diameter_mm, codes.UCUM.Millimeter, alg),
                      _num(local_code("CADSCORE"), m.score, codes.UCUM.NoUnits, alg)])


def _measurement_group(m, volume, sources):
    """The reader's axial measurement ``m`` (:class:`~lungviewer.reading.measurements.
    Measurement`) as a TID 1410 planar ROI group linked to its CT image: a ruler is a
    2-point polyline with its Length; a bidirectional its long axis with Long and Short
    axis; an ellipse (ELLIPSE, its two axes) or rectangle (closed polyline) its Area and
    mean attenuation ± SD (HU). Coronal and sagittal measurements lie on reformatted images
    that have no SOP instance to reference: None (they are in the PDF)."""
    import highdicom as hd
    from highdicom.sr import (
        ImageRegion,
        PlanarROIMeasurementsAndQualitativeEvaluations,
        SourceImageForRegion,
        TrackingIdentifier,
    )

    from .measurements import measure

    if m.plane != "axial" or not 0 <= m.index < volume.n_slices:
        return None
    res = measure(m, volume.hu, volume.spacing)
    k = int(m.index)
    src = SourceImageForRegion(sources[k].SOPClassUID, sources[k].SOPInstanceUID)
    pts = np.array([[c + 0.5, r + 0.5] for r, c in m.points], np.float32)  # DICOM (col, row)
    mm, mm2, hu = codes.UCUM.Millimeter, codes.UCUM.SquareMillimeter, codes.UCUM.HounsfieldUnit
    items: list = []

    def add(code, v, unit) -> None:
        if v is not None:
            items.append(_num(code, v, unit))

    if m.kind == "ruler":
        region = ImageRegion("POLYLINE", pts, src)
        add(codes.SCT.Length, res.length_mm, mm)
    elif m.kind == "bidirectional":
        region = ImageRegion("POLYLINE", pts[:2], src)
        add(codes.SCT.LongAxis, res.long_mm, mm)
        add(codes.SCT.ShortAxis, res.short_mm, mm)
    else:
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        if m.kind == "ellipse":
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            region = ImageRegion("ELLIPSE", np.array(
                [[x0, cy], [x1, cy], [cx, y0], [cx, y1]], np.float32), src)
        else:
            region = ImageRegion("POLYLINE", np.array(
                [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], np.float32), src)
        add(codes.SCT.Area, res.area_mm2, mm2)
        add(codes.DCM.MeanAttenuationCoefficient, res.hu_mean, hu)
        add(codes.DCM.StandardDeviation, res.hu_sd, hu)
    label = f"Measurement {m.label or m.kind} {m.id}"[:64]
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=label),
        referenced_region=region, measurements=items)


def export_sr(reading: Reading, volume, out_path: str | Path, seg: SegInfo | None = None,
              sources: list[pydicom.Dataset] | None = None, model_version: str = "",
              series_number: int = 902) -> Path:
    """Write the TID 1500 Measurement Report of the reading's accepted nodules and accepted
    CAD marks (those without a nodule) to ``out_path`` (atomically)."""
    import highdicom as hd
    from highdicom.sr import (
        DeviceObserverIdentifyingAttributes,
        MeasurementReport,
        ObservationContext,
        ObserverContext,
    )

    sources = sources if sources is not None else read_sources(volume)
    version = model_version or next((s.model_version for s in reading.box_scores), "unknown")
    nodules = reading.accepted_nodules()
    linked = {n.cad_mark_id for n in reading.nodules if n.cad_mark_id}
    marks = [m for m in reading.accepted_marks() if m.id not in linked]
    measured = [g for g in (_measurement_group(m, volume, sources)
                            for m in reading.measurements) if g is not None]
    if not nodules and not marks and not measured and not (reading.followup or {}).get("pairs"):
        raise ExportError("nothing to report: no accepted nodule or CAD mark, no axial "
                          "measurement and no follow-up comparison in this reading")
    groups = [g for n in nodules for g in _nodule_groups(n, reading, volume, sources, seg, version)]
    groups += [_mark_group(m, volume, sources, version) for m in marks]
    groups += measured
    groups += _followup_groups(reading.followup, volume, sources, version)
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=CAD_NAME, manufacturer_name="lungviewer",
            model_name=f"models {version}"[:64]))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTChestReport, imaging_measurements=groups)
    notes = [f"{CAD_NAME} ({version}): {CAVEAT}."]
    if reading.note:
        notes.append(reading.note)
    report[0].ContentSequence.extend(_text(codes.DCM.Comment, t) for t in notes)
    evidence = list(sources) + ([seg.dataset] if seg is not None and seg.dataset else [])
    with _quiet_highdicom():
        sr = _sr(evidence, report, series_number, volume, sources)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        sr.save_as(tmp)
    log.info("DICOM SR written: %d nodule(s), %d CAD mark(s)", len(nodules), len(marks))
    return out_path


def _sr(evidence, report, series_number: int, volume, sources):
    import highdicom as hd

    return hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="lungviewer", series_description=_description("SR", volume, sources),
        manufacturer_model_name="lungviewer", software_versions=_software(),
        content_qualification="RESEARCH", coding_schemes=_coding_schemes(),
        is_complete=True, specific_character_set="ISO_IR 192")


# -- both ---------------------------------------------------------------------------------------
@dataclass
class DicomExport:
    seg: Path | None = None
    sr: Path | None = None
    segments: dict[str, int] = field(default_factory=dict)


def export_dicom(reading: Reading, volume, out_dir: str | Path, *, sr: bool = True,
                 seg: bool = True, lung_mask: np.ndarray | None = None, force: bool = False,
                 model_version: str = "") -> DicomExport:
    """SEG and/or SR of ``reading`` into ``out_dir`` as ``seg.dcm`` / ``sr.dcm``; an existing
    file is kept unless ``force`` (FileExistsError)."""
    from .model import check_limits

    check_limits(reading)  # a clear message before any per-item work
    out = Path(out_dir)
    targets = {"seg": out / "seg.dcm", "sr": out / "sr.dcm"}
    wanted = [k for k, on in (("seg", seg), ("sr", sr)) if on]
    if not force:
        there = [str(targets[k]) for k in wanted if targets[k].exists()]
        if there:
            raise FileExistsError(f"{', '.join(there)} already exist(s); use --force to replace")
    out.mkdir(parents=True, exist_ok=True)
    sources = read_sources(volume)
    res = DicomExport()
    info = None
    if seg:
        has_masks = any(n.mask is not None for n in reading.accepted_nodules())
        if has_masks or lung_mask is not None:
            info = export_seg(reading, volume, targets["seg"], lung_mask, sources)
            res.seg, res.segments = info.path, dict(info.segment_of)
        elif not sr:
            raise ExportError("nothing to put into a DICOM SEG: no accepted nodule has a "
                              "segmentation")
    if sr:
        res.sr = export_sr(reading, volume, targets["sr"], info, sources, model_version)
    return res


def _followup_groups(comp: dict | None, volume, sources, version: str) -> list:
    """The follow-up comparison (``Reading.followup``) as TID 1410 groups on the current
    exam, one per nodule present on it: its current diameter and volume, the prior's
    (``PRIORDIAM``/``PRIORVOL``), the change, the VDT when trusted, the status and the
    Lung-RADS follow-up rule. Resolved nodules (not on the current exam) are listed in the
    last group's text."""
    if not comp or not comp.get("pairs"):
        return []
    import highdicom as hd
    from highdicom.sr import (
        CodedConcept,
        ImageRegion,
        PlanarROIMeasurementsAndQualitativeEvaluations,
        SourceImageForRegion,
        TrackingIdentifier,
    )

    mm, mm3 = codes.UCUM.Millimeter, codes.UCUM.CubicMillimeter
    pct = CodedConcept("%", "UCUM", "percent")
    day = CodedConcept("d", "UCUM", "day")
    alg = _cad_algorithm(version)
    prior_date = (comp.get("prior_study") or {}).get("study_date") or "unknown"
    groups = []
    resolved = []
    for i, p in enumerate(comp["pairs"]):
        cur, pri = p.get("current"), p.get("prior")
        if cur is None:
            resolved.append(f"{pri['diameter_mm']:.1f} mm at prior image {pri['slice'] + 1}")
            continue
        k = int(np.clip(cur["slice"], 0, volume.n_slices - 1))
        rad = max(cur["diameter_mm"], 2.0) / 2 / float(volume.spacing[2])
        x, y = cur["col"] + 0.5, cur["row"] + 0.5
        region = ImageRegion("CIRCLE", np.array([[x, y], [x + rad, y]], np.float32),
                             SourceImageForRegion(sources[k].SOPClassUID,
                                                  sources[k].SOPInstanceUID))
        meas = [_num(codes.SCT.Diameter, cur["diameter_mm"], mm, alg)]
        if cur.get("volume_mm3"):
            meas.append(_num(codes.SCT.Volume, cur["volume_mm3"], mm3, alg))
        if pri is not None:
            meas.append(_num(local_code("PRIORDIAM"), pri["diameter_mm"], mm, alg))
            if pri.get("volume_mm3"):
                meas.append(_num(local_code("PRIORVOL"), pri["volume_mm3"], mm3, alg))
            if p.get("diameter_change_mm") is not None:
                meas.append(_num(local_code("DIAMCHANGE"), p["diameter_change_mm"], mm, alg))
            if p.get("volume_change_pct") is not None:
                meas.append(_num(local_code("VOLCHANGE"), p["volume_change_pct"], pct, alg))
            if p.get("vdt_days") is not None and p.get("vdt_trusted"):
                meas.append(_num(local_code("VDT"), p["vdt_days"], day, alg))
        lr = p.get("lung_rads") or {}
        g = PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=hd.UID(),
                                                   identifier=f"follow-up nodule {i + 1}"),
            referenced_region=region, finding_type=codes.SCT.Nodule, algorithm_id=alg,
            measurements=meas)
        g[0].ContentSequence.append(_text(local_code("FUSTATUS"),
                                          f"{p['status']} (prior of {prior_date})"))
        if lr:
            g[0].ContentSequence.append(_text(local_code("LUNGRADSFU"),
                                              f"{lr.get('category')}: {lr.get('rule')}"[:1024]))
        groups.append(g)
    if resolved and groups:
        groups[-1][0].ContentSequence.append(_text(
            local_code("FUSTATUS"), "resolved since the prior: " + "; ".join(resolved)))
    return groups
