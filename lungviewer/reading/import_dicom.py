"""Reading DICOM SR and SEG objects that lie beside a loaded CT series (lungviewer's own
exports, or a SEG from another tool) back for display.

:func:`import_beside` finds every object of Modality SR or SEG under the study folder,
reads it with ``highdicom`` and keeps what belongs to the loaded series:

* a **SEG** must share the CT's FrameOfReferenceUID and lie on the CT's voxel grid (same
  orientation and pixel spacing, every frame on a CT slice, in-plane offset a whole number
  of pixels; it may cover only some slices or be cropped). A SEG on another grid (another
  spacing, size or orientation) is refused with a message that names the difference; it
  is not resampled.
* an **SR** (TID 1500) must reference images of the loaded series. Its nodules (volume,
  axes, type, Lung-RADS, CAD scores, note, outline) and CAD marks are read back; a nodule
  that references a SEG segment gets that segment's mask.

Nothing here raises for a bad object: a corrupt or foreign SR/SEG becomes a message in
:attr:`Imported.messages` and the study opens as usual. Messages and logs name files, never
patient identifiers.

Voxel indices are ``(z, y, x)`` of the loaded Volume; masks are bool ``(z, y, x)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from .model import BoxScore, CadMark, NoduleRecord, PackedMask, Reading

log = logging.getLogger(__name__)

_SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: SR concept (scheme, value) -> the NoduleRecord field it fills
_NODULE_NUMBERS = {("SCT", "118565006"): "volume_mm3", ("SCT", "81827009"): "mean_diameter_mm",
                   ("SCT", "103339001"): "long_axis_mm", ("SCT", "103340004"): "short_axis_mm",
                   ("DCM", "112181"): "mean_hu"}
_TYPE_NAMES = {"SOLID": "solid", "PARTSOLID": "part-solid", "GGN": "ground glass",
               "UNKNOWN": "unknown"}


@dataclass
class ImportedSegment:
    number: int
    label: str
    mask: np.ndarray  # (z, y, x) bool, on the CT grid
    is_lung: bool
    path: Path
    sop_instance_uid: str
    creator: str  # Manufacturer of the SEG ("lungviewer" or another tool)


@dataclass
class ImportedNodule:
    label: str
    numbers: dict[str, float] = field(default_factory=dict)  # volume_mm3, long_axis_mm, ...
    cad: dict[str, float] = field(default_factory=dict)  # CAD outputs by local code value
    cad_meanings: dict[str, str] = field(default_factory=dict)  # local code -> its meaning
    type: str = ""
    lung_rads: str = ""
    rule: str = ""
    note: str = ""
    axis_slice: int | None = None
    outline: np.ndarray | None = None  # (N, 2) row, col on axis_slice
    segment: tuple[str, int] | None = None  # (SEG SOPInstanceUID, segment number)
    mask: np.ndarray | None = None
    from_cad: bool = False


@dataclass
class ImportedMark:
    label: str
    slice: int
    row: float
    col: float
    diameter_mm: float
    score: float


@dataclass
class Imported:
    """What was found beside the CT: segments, nodules and marks, and messages for the user."""

    segments: list[ImportedSegment] = field(default_factory=list)
    nodules: list[ImportedNodule] = field(default_factory=list)
    marks: list[ImportedMark] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the SR's document-level comments
    messages: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.segments or self.nodules or self.marks)

    def to_reading(self, volume) -> Reading:
        """A :class:`Reading` of the imported nodules (accepted, with their masks) and CAD
        marks (accepted), for showing and re-exporting."""
        reading = Reading.for_volume(volume)
        for n in self.nodules:
            d = n.numbers
            long_ax, short_ax = d.get("long_axis_mm", 0.0), d.get("short_axis_mm", 0.0)
            box = _box_of(n, volume)
            if box is None:
                continue
            packed = None
            if n.mask is not None and n.mask.any():
                idx = np.argwhere(n.mask)
                lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
                packed = PackedMask.from_array(
                    n.mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], tuple(int(v) for v in lo))
            reading.add_nodule(NoduleRecord(
                "", box, d.get("volume_mm3", 0.0), long_ax, short_ax,
                d.get("mean_diameter_mm", (long_ax + short_ax) / 2), d.get("mean_hu", 0.0),
                n.type or "unknown", {"category": n.lung_rads, "rule": n.rule} if n.lung_rads
                else {}, n.axis_slice, packed, n.note, "accepted",
                "cad" if n.from_cad else "box"))
            score = _box_score(n, box)
            if score is not None:
                reading.add_box_score(score)
        for m in self.marks:
            mark = CadMark("", m.slice, m.row, m.col, m.diameter_mm, m.score, "nodule",
                           "accepted")
            reading.cad_marks.append(mark)
        for i, m in enumerate(reading.cad_marks):
            m.id = f"c{i + 1}"
        reading.note = "\n".join(t for t in self.notes if "research use" not in t)
        return reading


def _box_score(n: ImportedNodule, box) -> BoxScore | None:
    mal = [n.cad.get(f"MALP{i}") for i in range(1, 6)]
    if any(p is None for p in mal):
        return None
    dis = sorted((k for k in n.cad if k.startswith("DIS") and k[3:].isdigit()),
                 key=lambda k: int(k[3:]))
    names = [n.cad_meanings[k].removeprefix("Probability of ").removesuffix(" (CAD)")
             for k in dis]
    # NODPROB is left out of the SR when the box lay on no CAD finding (or none were
    # computed yet): the score is kept with an unknown nodule probability
    return BoxScore(box, mal, names, [n.cad[k] for k in dis], n.cad.get("NODPROB"),
                    "from a DICOM SR")


def _box_of(n: ImportedNodule, volume) -> tuple[int, int, int, int, int] | None:
    if n.mask is not None and n.mask.any():
        k = n.axis_slice if n.axis_slice is not None and n.mask[n.axis_slice].any() else \
            int(np.argmax(n.mask.sum(axis=(1, 2))))
        rr, cc = np.nonzero(n.mask[k])
        return k, int(rr.min()), int(cc.min()), int(rr.max()) + 1, int(cc.max()) + 1
    if n.outline is not None and n.axis_slice is not None and len(n.outline):
        r0, c0 = np.floor(n.outline.min(axis=0)).astype(int)
        r1, c1 = np.ceil(n.outline.max(axis=0)).astype(int)
        return n.axis_slice, max(int(r0), 0), max(int(c0), 0), int(r1) + 1, int(c1) + 1
    return None


# -- finding the objects -------------------------------------------------------------------------
def find_objects(folder: str | Path) -> list[tuple[Path, str]]:
    """``(path, modality)`` of every DICOM SR or SEG object under ``folder``."""
    root = Path(folder)
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    out = []
    for p in files:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True,
                                 specific_tags=["Modality", "SOPClassUID"])
        except Exception as exc:  # noqa: BLE001 - not DICOM or unreadable: the loader reports those
            log.debug("not an SR/SEG candidate: %s (%s)", p.name, type(exc).__name__)
            continue
        modality = str(ds.get("Modality", "")).upper()
        if modality in ("SR", "SEG"):
            out.append((p, modality))
    return out


def _frame_of_reference(volume) -> str:
    if not volume.files:
        return ""
    try:
        ds = pydicom.dcmread(volume.files[0], stop_before_pixels=True,
                             specific_tags=["FrameOfReferenceUID"])
    except Exception:  # noqa: BLE001
        return ""
    return str(ds.get("FrameOfReferenceUID", ""))


# -- SEG ------------------------------------------------------------------------------------------
def _ct_axes(volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, c = volume.orientation[:3], volume.orientation[3:]
    return r / np.linalg.norm(r), c / np.linalg.norm(c), volume.normal


def _place_on_ct(points: np.ndarray, volume, name: str) -> np.ndarray:
    """CT voxel indices (z, row, col) of patient points (N, 3) that must lie on CT voxel
    centres; raises ValueError naming how they miss."""
    r_hat, c_hat, n_hat = _ct_axes(volume)
    proj = volume.positions @ n_hat
    order = np.argsort(proj)
    d = points @ n_hat
    j = np.clip(np.searchsorted(proj[order], d), 1, len(order) - 1) if len(order) > 1 \
        else np.zeros(len(d), int)
    if len(order) > 1:
        left, right = order[j - 1], order[j]
        z = np.where(np.abs(proj[left] - d) <= np.abs(proj[right] - d), left, right)
    else:
        z = np.zeros(len(d), int)
    dz = float(volume.spacing[0]) or 1.0
    if np.any(np.abs(proj[z] - d) > 0.25 * dz):
        raise ValueError(f"{name}: its frames do not lie on the CT's slices (another slice "
                         "spacing or position)")
    rel = points - volume.positions[z]
    col = rel @ r_hat / float(volume.spacing[2])
    row = rel @ c_hat / float(volume.spacing[1])
    if np.any(np.abs(col - np.rint(col)) > 0.1) or np.any(np.abs(row - np.rint(row)) > 0.1):
        raise ValueError(f"{name}: its pixels are shifted by a fraction of a CT pixel "
                         "(another field of view)")
    return np.stack([z, np.rint(row).astype(int), np.rint(col).astype(int)], axis=1)


def _int(ds, key: str, name: str) -> int:
    try:
        v = int(ds.get(key, 0) or 0)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: its {key} is not a number") from exc
    return v


def _check_spacing(ds: pydicom.Dataset, volume, name: str) -> None:
    """The SEG's declared pixel spacing (shared functional groups) against the CT's."""
    try:
        sp = [float(v) for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
              .PixelSpacing]
    except (AttributeError, IndexError, TypeError, ValueError):
        return  # per-frame or absent: checked on the decoded volume
    ct = [float(v) for v in volume.spacing[1:]]
    if not np.allclose(sp, ct, rtol=1e-3, atol=1e-4):
        raise ValueError(f"{name}: its pixel spacing {sp[0]:.3f}×{sp[1]:.3f} mm differs from "
                         f"the CT's {ct[0]:.3f}×{ct[1]:.3f} mm; not shown (lungviewer does not "
                         "resample segmentations)")


def check_seg_dataset(ds: pydicom.Dataset, volume, name: str) -> None:
    """ValueError naming what disagrees, unless the SEG's header, pixel data and
    references agree with each other and with the loaded CT: Rows × Columns × frames ×
    bits match the pixel data's length (a SEG declaring 300×212 over 256×256 frames would
    otherwise be read scrambled), NumberOfFrames matches the per-frame descriptions, every
    frame names a segment the SEG describes, and every image it refers to is a slice of
    the loaded CT (the frame on that slice's position)."""
    rows, cols = _int(ds, "Rows", name), _int(ds, "Columns", name)
    frames = _int(ds, "NumberOfFrames", name) or 1
    if rows <= 0 or cols <= 0:
        raise ValueError(f"{name}: its Rows/Columns ({rows}×{cols}) are not an image size")
    if "PixelData" not in ds:
        raise ValueError(f"{name}: it has no pixel data")
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if len(per_frame) != frames:
        raise ValueError(f"{name}: it declares {frames} frame(s) (NumberOfFrames) but "
                         f"describes {len(per_frame)}")
    bits = _int(ds, "BitsAllocated", name)
    if bits not in (1, 8):
        raise ValueError(f"{name}: BitsAllocated {bits} is not a SEG's 1 or 8")
    if rows != volume.shape[1] or cols != volume.shape[2]:
        # a SEG may be cropped, but never larger than the CT's images
        if rows > volume.shape[1] or cols > volume.shape[2]:
            raise ValueError(f"{name}: its frames are {rows}×{cols} (Rows×Columns), larger "
                             f"than the CT's {volume.shape[1]}×{volume.shape[2]} images")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    encapsulated = bool(ts is not None and pydicom.uid.UID(ts).is_encapsulated)
    if not encapsulated:
        nbytes = len(ds.PixelData)
        want = (rows * cols * frames * bits + 7) // 8
        if nbytes not in (want, want + (want % 2)):
            raise ValueError(
                f"{name}: its pixel data ({nbytes} bytes) does not match its Rows × Columns "
                f"× frames ({rows}×{cols}×{frames} at {bits} bit = {want} bytes); not shown "
                "(the mask would be scrambled)")
    else:
        try:
            arr = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - any decoder failure is bad pixel data
            raise ValueError(f"{name}: its compressed pixel data cannot be decoded "
                             f"({type(exc).__name__})") from exc
        if arr.reshape(-1, *arr.shape[-2:]).shape != (frames, rows, cols):
            raise ValueError(f"{name}: its pixel data decodes to {arr.shape}, not "
                             f"{frames}×{rows}×{cols} (frames × Rows × Columns)")
    numbers = {int(x.SegmentNumber) for x in ds.get("SegmentSequence", [])
               if "SegmentNumber" in x}
    if not numbers:
        raise ValueError(f"{name}: it describes no segment")
    sops = {u: i for i, u in enumerate(volume.sop_uids)}
    n_hat = volume.normal
    dz = float(volume.spacing[0]) or 1.0
    foreign = 0
    shared = (ds.SharedFunctionalGroupsSequence[0]
              if ds.get("SharedFunctionalGroupsSequence") else pydicom.Dataset())
    for i, fg in enumerate(per_frame):
        try:
            ident = fg.get("SegmentIdentificationSequence") or \
                shared.SegmentIdentificationSequence
            seg_no = int(ident[0].ReferencedSegmentNumber)
        except (AttributeError, IndexError, TypeError, ValueError):
            seg_no = None
        if seg_no is not None and seg_no not in numbers:
            raise ValueError(f"{name}: frame {i + 1} belongs to segment {seg_no}, which the "
                             "SEG does not describe")
        for der in fg.get("DerivationImageSequence", []):
            for src in der.get("SourceImageSequence", []):
                uid = str(src.get("ReferencedSOPInstanceUID", ""))
                if not uid or not sops:
                    continue
                k = sops.get(uid)
                if k is None:
                    foreign += 1
                    continue
                try:
                    pos = np.asarray(fg.PlanePositionSequence[0].ImagePositionPatient, float)
                except (AttributeError, IndexError, TypeError, ValueError):
                    continue
                if abs(float((pos - volume.positions[k]) @ n_hat)) > 0.25 * dz:
                    raise ValueError(f"{name}: frame {i + 1} refers to CT image {k + 1} but "
                                     "does not lie on it")
    if foreign:
        raise ValueError(f"{name}: {foreign} frame reference(s) name images that are not in "
                         "the loaded CT series")


def read_seg(path: Path, volume, frame_of_reference: str = "") -> list[ImportedSegment]:
    """The segments of the SEG at ``path`` as masks on the CT grid; ValueError with a
    clear message when it is not of this CT or lies on another grid."""
    import highdicom as hd

    name = path.name
    try:
        raw = pydicom.dcmread(path)
    except Exception as exc:  # any parser failure is a bad file
        raise ValueError(f"{name}: not a readable DICOM SEG ({type(exc).__name__})") from exc
    for_uid = str(raw.get("FrameOfReferenceUID", ""))
    if frame_of_reference and for_uid != frame_of_reference:
        raise ValueError(f"{name}: it belongs to another frame of reference (another scan), "
                         "not to the loaded CT")
    _check_spacing(raw, volume, name)
    check_seg_dataset(raw, volume, name)
    try:
        seg = hd.seg.Segmentation.from_dataset(raw)
    except Exception as exc:  # any parser failure is a bad file
        raise ValueError(f"{name}: not a readable DICOM SEG ({type(exc).__name__})") from exc
    try:
        fractional = str(seg.get("SegmentationType", "")).upper() == "FRACTIONAL"
        vol = seg.get_volume(combine_segments=False, dtype=np.uint8,
                             rescale_fractional=False)
        # a fractional segment counts where it is above half its maximum value
        cut = int(seg.get("MaximumFractionalValue", 255)) // 2 if fractional else 0
    except Exception as exc:  # highdicom raises ValueError/RuntimeError on odd geometry
        raise ValueError(f"{name}: its frames do not form a regular volume "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from exc
    # geometry: same in-plane spacing and orientation as the CT
    seg_dirs = np.asarray(vol.direction, float)  # columns: unit vectors of (slice, row, col)
    r_hat, c_hat, _ = _ct_axes(volume)
    spacing = np.asarray(vol.spacing, float)
    ct_sp = np.asarray(volume.spacing, float)
    seg_row_dir, seg_col_dir = seg_dirs[:, 1], seg_dirs[:, 2]
    if not (abs(abs(seg_row_dir @ c_hat) - 1) < 1e-3 and abs(abs(seg_col_dir @ r_hat) - 1)
            < 1e-3):
        raise ValueError(f"{name}: its image orientation differs from the CT's; not shown "
                         "(lungviewer does not resample segmentations)")
    if not np.allclose(spacing[1:], ct_sp[1:], rtol=1e-3, atol=1e-4):
        raise ValueError(f"{name}: its pixel spacing {spacing[1]:.3f}×{spacing[2]:.3f} mm "
                         f"differs from the CT's {ct_sp[1]:.3f}×{ct_sp[2]:.3f} mm; not shown "
                         "(lungviewer does not resample segmentations)")
    arr = vol.array if vol.array.ndim == 4 else vol.array[..., None]
    numbers = ([int(v) for v in vol.get_channel_values(vol.channel_descriptors[0])]
               if vol.channel_descriptors else [1])
    creator = str(seg.get("Manufacturer", "") or "unknown")
    out = []
    for ch, number in enumerate(numbers):
        idx = np.argwhere(arr[..., ch] > cut)
        mask = np.zeros(volume.shape, dtype=bool)
        if len(idx):
            pts = (np.c_[idx, np.ones(len(idx))] @ np.asarray(vol.affine, float).T)[:, :3]
            ct = _place_on_ct(pts, volume, name)
            inside = np.all((ct >= 0) & (ct < np.asarray(volume.shape)), axis=1)
            if not inside.all():
                raise ValueError(f"{name}: segment {number} reaches outside the CT volume "
                                 "(another field of view or size)")
            mask[ct[:, 0], ct[:, 1], ct[:, 2]] = True
        desc = seg.get_segment_description(number)
        label = str(desc.segment_label)
        prop = desc.segmented_property_type
        out.append(ImportedSegment(number, label, mask,
                                   (prop.value, prop.scheme_designator) == ("39607008", "SCT"),
                                   path, str(seg.SOPInstanceUID), creator))
    return out


# -- SR ------------------------------------------------------------------------------------------
def _sop_of_region(roi) -> str:
    try:
        return str(roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    except (AttributeError, IndexError):
        return ""


def _texts(group) -> list[tuple[str, str, str]]:
    """(scheme, value, text) of the TEXT items directly in a group."""
    out = []
    for item in getattr(group, "ContentSequence", []):
        if item.get("ValueType") == "TEXT":
            code = item.ConceptNameCodeSequence[0]
            out.append((str(code.CodingSchemeDesignator), str(code.CodeValue),
                        str(item.TextValue)))
    return out


def read_sr(path: Path, volume) -> tuple[list[ImportedNodule], list[ImportedMark], list[str]]:
    """Nodules, CAD marks and document comments of a TID 1500 SR of the loaded series;
    ValueError when it is not a measurement report of this CT."""
    import highdicom as hd

    name = path.name
    try:
        sr = hd.sr.srread(path)
        report = sr.content
        planar = report.get_planar_roi_measurement_groups()
        volumetric = report.get_volumetric_roi_measurement_groups()
    except Exception as exc:  # any parser failure is a bad or foreign file
        raise ValueError(f"{name}: not a readable TID 1500 measurement report "
                         f"({type(exc).__name__})") from exc
    sops = {u: i for i, u in enumerate(volume.sop_uids)}
    refs = [_sop_of_region(g.roi) for g in planar if g.roi is not None]
    refs += [_sop_of_region(r) for g in volumetric for r in _regions(g)]
    refs = [r for r in refs if r]
    if refs and not any(r in sops for r in refs):
        raise ValueError(f"{name}: it refers to images of another series, not the loaded CT")
    foreign = sum(r not in sops for r in refs)
    if foreign:  # a partial folder: what refers to a missing image is not shown
        log.warning("Report %s: %d of %d referenced image(s) are not in the loaded series; "
                    "what refers to them is not shown", name, foreign, len(refs))
    nodules: dict[str, ImportedNodule] = {}
    marks: list[ImportedMark] = []
    for g in planar:
        label = str(g.tracking_identifier or "")
        z = sops.get(_sop_of_region(g.roi)) if g.roi is not None else None
        values = {(m.name.scheme_designator, m.name.value): (m.name.meaning, float(m.value))
                  for m in g.get_measurements()}
        pts = np.asarray(g.roi.value, float).reshape(-1, 2) if g.roi is not None else None
        if label.startswith("CAD mark ") and pts is not None and z is not None:
            centre = pts[0] - 0.5
            diam = values.get(("SCT", "81827009"), ("", 0.0))[1]
            score = values.get(("99LUNGVIEWER", "CADSCORE"), ("", 0.0))[1]
            marks.append(ImportedMark(label.removeprefix("CAD mark "), int(z), float(centre[1]),
                                      float(centre[0]), diam, score))
        elif label.endswith(" axial"):
            n = nodules.setdefault(label.removesuffix(" axial"),
                                   ImportedNodule(label.removesuffix(" axial")))
            n.axis_slice = z
            if pts is not None:
                n.outline = pts[:, ::-1] - 0.5  # (col, row) pixel centres -> (row, col) index
            for key, field_name in _NODULE_NUMBERS.items():
                if key in values:
                    n.numbers[field_name] = values[key][1]
    for g in volumetric:
        label = str(g.tracking_identifier or f"nodule {len(nodules) + 1}")
        n = nodules.setdefault(label, ImportedNodule(label))
        n.from_cad = n.from_cad or any(True for _ in _algorithm_items(g))
        for m in g.get_measurements():
            key = (m.name.scheme_designator, m.name.value)
            if key in _NODULE_NUMBERS:
                n.numbers[_NODULE_NUMBERS[key]] = float(m.value)
            elif m.name.scheme_designator == "99LUNGVIEWER":
                n.cad[str(m.name.value)] = float(m.value)
                n.cad_meanings[str(m.name.value)] = str(m.name.meaning)
        for q in g.get_qualitative_evaluations():
            if (q.name.scheme_designator, q.name.value) == ("99LUNGVIEWER", "NODTYPE"):
                n.type = _TYPE_NAMES.get(q.value.value, str(q.value.meaning))
            elif (q.name.scheme_designator, q.name.value) == ("99LUNGVIEWER", "LUNGRADS"):
                n.lung_rads = str(q.value.value).removeprefix("LR-")
        for scheme, value, text in _texts(g[0] if len(g) else g):
            if (scheme, value) == ("99LUNGVIEWER", "LUNGRADSRULE"):
                n.rule = text.removesuffix(" (a suggestion, not a diagnosis)")
            elif (scheme, value) == ("DCM", "121106"):
                n.note = text
        rs = g.referenced_segment
        if rs is not None:
            n.segment = (str(rs.referenced_sop_instance_uid), int(rs.referenced_segment_numbers[0]))
    notes = [t for s, v, t in _texts(report[0]) if (s, v) == ("DCM", "121106")]
    return list(nodules.values()), marks, notes


def _regions(group) -> list:
    try:
        roi = group.roi
    except Exception:  # noqa: BLE001
        return []
    if roi is None:
        return []
    return list(roi) if isinstance(roi, (list, tuple)) else [roi]


def _algorithm_items(group):
    for item in getattr(group[0] if len(group) else group, "ContentSequence", []):
        code = item.ConceptNameCodeSequence[0]
        if (str(code.CodingSchemeDesignator), str(code.CodeValue)) == ("DCM", "111001") \
                and "CAD" in str(item.get("TextValue", "")):
            yield item


# -- both ----------------------------------------------------------------------------------------
def import_beside(volume, folder: str | Path) -> Imported:
    """Every SR/SEG under ``folder`` that belongs to the loaded CT, read back for display;
    never raises for a bad or foreign object (see :attr:`Imported.messages`)."""
    out = Imported()
    try:
        found = find_objects(folder)
    except OSError as exc:
        out.messages.append(f"The study folder could not be searched for SR/SEG ({exc}).")
        return out
    if not found:
        return out
    for_uid = _frame_of_reference(volume)
    by_sop: dict[tuple[str, int], ImportedSegment] = {}
    for path, modality in found:
        if modality != "SEG":
            continue
        try:
            segs = read_seg(path, volume, for_uid)
        except ValueError as exc:
            out.messages.append(f"Segmentation {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - a broken object never stops the study opening
            out.messages.append(f"Segmentation {path.name}: could not be read "
                                f"({type(exc).__name__}).")
            continue
        out.segments += segs
        out.files.append(path)
        by_sop.update({(s.sop_instance_uid, s.number): s for s in segs})
    for path, modality in found:
        if modality != "SR":
            continue
        try:
            nodules, marks, notes = read_sr(path, volume)
        except ValueError as exc:
            out.messages.append(f"Report {exc}")
            continue
        except Exception as exc:  # noqa: BLE001
            out.messages.append(f"Report {path.name}: could not be read ({type(exc).__name__}).")
            continue
        for n in nodules:
            if n.segment is not None:
                s = by_sop.get(n.segment)
                if s is not None:
                    n.mask = s.mask
                else:
                    out.messages.append(f"Report {path.name}: {n.label} refers to a "
                                        "segmentation that is not in this folder (shown "
                                        "without its outline in 3D).")
        out.nodules += nodules
        out.marks += marks
        out.notes += notes
        out.files.append(path)
    for m in out.messages:
        log.warning("%s", m)
    return out
