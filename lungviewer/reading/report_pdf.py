"""The reading as a PDF report (fpdf2, pure Python).

One page header with the study's identification (an anonymous study key made from the
StudyInstanceUID's hash, the study date, series and slices; the patient's name only when
``include_patient_name`` is asked for), the reader's note, then for each accepted nodule
and each accepted CAD mark without a nodule: a key image (the axial slice around it, lung
window, its outline or mark drawn), its measurements and Lung-RADS suggestion, and the CAD
scores of its box with their caveat. Every page says that this is research software; the
last lines give the model card's summary.

Images are made in memory (numpy → PIL → PNG bytes); nothing is written but the PDF
(atomically).
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from lungviewer import __version__, paths
from lungviewer.contracts import TWIN_MARKER
from lungviewer.fileio import atomic_write_bytes
from lungviewer.imaging.window import PRESETS, apply_window

from .model import CadMark, NoduleRecord, Reading
from .store import study_key

log = logging.getLogger(__name__)

CAVEAT = "Research use, not for clinical use; models trained on synthetic images."
_OUTLINE = (255, 60, 40)
_MARK = (255, 200, 0)
_AXES = (40, 200, 255)
_TEXT_MAP = str.maketrans({"\u2192": "->", "\u2014": "-", "\u2013": "-", "\u2212": "-",
                           "\u2264": "<=", "\u2265": ">=", "\u2026": "...", "\u00a0": " ",
                           "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def _latin1(text: str) -> str:
    """Text for the PDF's core fonts (Latin-1): common symbols spelt out, others '?'."""
    return str(text).translate(_TEXT_MAP).encode("latin-1", "replace").decode("latin-1")


def model_card_summary(folder: str | Path | None = None) -> str:
    """The first paragraph of the model card (markdown emphasis removed), one line."""
    path = Path(folder or paths.weights_dir()) / "MODEL_CARD.md"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return "The model card was not found beside the weights."
    para: list[str] = []
    for line in lines:
        s = line.strip()
        if s.startswith("#") or (not s and not para):
            continue
        if not s:
            break
        para.append(s)
    return " ".join(para).replace("**", "").replace("*", "").strip()


# -- key images ---------------------------------------------------------------------------------
def _crop_box(k_box, shape: tuple[int, int], margin: float = 1.0, min_px: int = 64):
    _, r0, c0, r1, c1 = k_box
    h, w = r1 - r0, c1 - c0
    side = max(int(max(h, w) * (1 + 2 * margin)), min_px)
    rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
    top = int(np.clip(rc - side // 2, 0, max(shape[0] - side, 0)))
    left = int(np.clip(cc - side // 2, 0, max(shape[1] - side, 0)))
    return top, left, min(top + side, shape[0]), min(left + side, shape[1])


def _edges(mask2d: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask2d & ~ndimage.binary_erosion(mask2d)


def key_image(volume, k: int, crop, mask2d: np.ndarray | None = None,
              circle: tuple[float, float, float] | None = None, size: int = 256,
              lines: list | None = None) -> bytes:
    """PNG bytes of axial slice ``k`` (lung window) cut to ``crop`` = (top, left, bottom,
    right), scaled to about ``size`` px, with the mask's outline, a circle (row, col,
    radius px, in slice pixels) and ``lines`` (each two (row, col) end points) drawn."""
    from PIL import Image, ImageDraw

    top, left, bottom, right = crop
    lung = PRESETS["lung"]
    grey = apply_window(volume.hu[k, top:bottom, left:right], lung.level, lung.width)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mask2d is not None:
        edge = _edges(mask2d[top:bottom, left:right])
        rgb[edge] = _OUTLINE
    scale = max(1, size // max(grey.shape))
    img = Image.fromarray(rgb).resize((grey.shape[1] * scale, grey.shape[0] * scale),
                                      Image.NEAREST)
    for pts in lines or []:
        xy = [((c - left + 0.5) * scale, (r - top + 0.5) * scale) for r, c in pts]
        ImageDraw.Draw(img).line(xy, fill=_AXES, width=1)
    if circle is not None:
        r, c, rad = circle
        y, x = (r - top + 0.5) * scale, (c - left + 0.5) * scale
        rad = max(rad * scale, 4)
        ImageDraw.Draw(img).ellipse((x - rad, y - rad, x + rad, y + rad), outline=_MARK,
                                    width=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# -- the document ----------------------------------------------------------------------------------
def _shifted(text: str, days: int | None) -> str:
    """``YYYYMMDD`` or ISO ``YYYY-MM-DD…`` as ``YYYY-MM-DD`` moved by ``days`` ("" when it
    is not a date)."""
    digits = text.replace("-", "")[:8]
    if len(digits) != 8 or not digits.isdigit():
        return ""
    try:
        d = datetime(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return ""
    return (d + timedelta(days=days or 0)).strftime("%Y-%m-%d")


def _study_lines(reading: Reading, volume, sources, include_patient_name: bool,
                 show_date: bool = True, anonymous_key: str | None = None,
                 date_shift_days: int | None = None) -> list[str]:
    src = sources[0] if sources else None
    anonymized = anonymous_key is not None
    date = ""
    if src is not None and show_date and (not anonymized or date_shift_days is not None):
        date = _shifted(str(src.get("StudyDate", "")), date_shift_days)
    key = anonymous_key if anonymized else study_key(reading.study_uid)[:10]
    lines = [f"Study: anonymous key {key}" + (f", study date {date}" if date else "")]
    if include_patient_name:
        name = str(src.get("PatientName", "")) if src is not None else ""
        lines.append(f"Patient: {name.replace('^', ' ').strip() or '(no name in the images)'}")
    sp = volume.spacing
    lines.append(f"Series: {volume.description or '(no description)'}; {volume.n_slices} "
                 f"slices, {sp[1]:.2f} x {sp[2]:.2f} mm pixels, {sp[0]:.2f} mm apart")
    return lines


def build_report(reading: Reading, volume, out_path: str | Path, *,
                 include_patient_name: bool = False, show_date: bool = True, sources=None,
                 compress: bool = True, anonymous_key: str | None = None,
                 date_shift_days: int | None = None, prior_volume=None) -> Path:
    """Write the PDF report of ``reading`` on ``volume`` to ``out_path`` (atomically).

    The report of an anonymised export passes ``anonymous_key`` (not derivable from the
    original UIDs: see ``commands/export.anonymized_identity``) and ``date_shift_days``, the
    anonymised copy's date shift: every date in the PDF (study date, report made, reading
    changed) moves by it, and with no known shift the PDF shows no date.

    ``sources``: the series' DICOM headers (for the study date unless not ``show_date``,
    and, only when ``include_patient_name``, the patient's name); read from
    ``volume.files[0]`` if None. ``prior_volume``: the prior exam of the reading's follow-up
    comparison, for its key images (without it the comparison table shows the current's)."""
    from fpdf import FPDF

    from .model import check_limits

    check_limits(reading)
    if sources is None and volume.files:
        import pydicom

        try:
            sources = [pydicom.dcmread(volume.files[0], stop_before_pixels=True)]
        except Exception:  # noqa: BLE001 - the report goes on without the header's date
            sources = []
    synthetic = bool(volume.is_synthetic) or TWIN_MARKER in (volume.description or "").upper()
    summary = model_card_summary()

    class Report(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", "B", 9)
            self.set_text_color(150, 0, 0)
            self.cell(0, 5, _latin1("lungviewer reading - research software, not for "
                                    "clinical use" + (" - SYNTHETIC images, not a patient"
                                                      if synthetic else "")),
                      new_x="LMARGIN", new_y="NEXT")
            self.set_text_color(0, 0, 0)
            self.ln(2)

        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("Helvetica", "", 7)
            self.cell(0, 5, _latin1(f"{CAVEAT}  Page {self.page_no()}/{{nb}}"), align="C")

    pdf = Report(format="A4")
    pdf.set_compression(compress)
    pdf.set_title("lungviewer reading")
    pdf.set_creator(f"lungviewer {__version__}")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()

    def text(s: str, size: float = 10, style: str = "", h: float = 5) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(0, h, _latin1(s), new_x="LMARGIN", new_y="NEXT", align="L")

    text("Reading report", 16, "B", 8)
    for line in _study_lines(reading, volume, sources, include_patient_name, show_date,
                             anonymous_key, date_shift_days):
        text(line, 9)
    if anonymous_key is None:
        text(f"Report made {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC by lungviewer "
             f"{__version__}; reading last changed "
             f"{reading.modified[:16].replace('T', ' ')}", 9)
    elif date_shift_days is not None:  # the dates of an anonymised copy, shifted alike
        made = _shifted(datetime.now(UTC).strftime("%Y%m%d"), date_shift_days)
        changed = _shifted(reading.modified, date_shift_days)
        text(f"Report made {made} (shifted like the anonymised images' dates) by lungviewer "
             f"{__version__}" + (f"; reading last changed {changed}" if changed else ""), 9)
    else:
        text(f"Report made by lungviewer {__version__} (dates left out: the anonymised "
             "images' date shift is not known)", 9)
    if reading.note:
        pdf.ln(2)
        text("Reader's note", 11, "B")
        text(reading.note, 10)
    nodules = reading.accepted_nodules()
    linked = {n.cad_mark_id for n in reading.nodules if n.cad_mark_id}
    marks = [m for m in reading.accepted_marks() if m.id not in linked]
    pdf.ln(2)
    text(f"{len(nodules)} nodule(s) and {len(marks)} accepted CAD mark(s) without a "
         f"segmentation; {sum(m.status == 'rejected' for m in reading.cad_marks)} CAD "
         "mark(s) rejected by the reader.", 10)
    for n in nodules:
        _nodule_section(pdf, text, reading, volume, n)
    for m in marks:
        _mark_section(pdf, text, volume, m)
    if reading.measurements:
        _measurement_section(text, reading, volume)
    if reading.followup:
        _followup_section(pdf, text, volume, reading.followup, prior_volume)
    pdf.ln(3)
    text("About the CAD models", 11, "B")
    text(summary, 9)
    text(CAVEAT, 9, "B")
    data = bytes(pdf.output())
    out_path = Path(out_path)
    atomic_write_bytes(out_path, data)
    log.info("PDF report written: %d page(s)", pdf.page_no())
    return out_path


def _measurement_section(text, reading: Reading, volume) -> None:
    """The reader's measurements (ruler, ROIs, bidirectional): kind, plane and image, and
    the figures the viewer shows (measurements.measure)."""
    from .measurements import measure

    text("Measurements", 11, "B")
    for m in reading.measurements:
        try:
            figures = measure(m, volume.hu, volume.spacing).text()
        except (IndexError, ValueError) as exc:  # an image the volume lacks
            figures = f"not measurable on this series ({exc})"
        name = f"{m.label} - " if m.label else ""
        text(f"{name}{m.kind}, {m.plane} image {m.index + 1}: {figures}", 9)


def _keep_together(pdf, height: float = 92) -> None:
    """A finding's title, image and caption stay on one page."""
    if pdf.get_y() > pdf.h - pdf.b_margin - height:
        pdf.add_page()
    else:
        pdf.ln(2)


def _image_block(pdf, png: bytes, caption: str) -> float:
    """Put the key image at the left of the current line; returns the caption's end (mm)."""
    x, y = pdf.l_margin, pdf.get_y()
    pdf.image(io.BytesIO(png), x=x, y=y, w=60, h=60)
    pdf.set_xy(x, y + 61)
    pdf.set_font("Helvetica", "", 7)
    pdf.multi_cell(60, 3.5, _latin1(caption), align="L")
    end = pdf.get_y()
    pdf.set_xy(x + 64, y)
    return end


def _lines_right(pdf, lines: list[tuple[str, str]], end_y: float) -> None:
    x = pdf.get_x()
    for style, s in lines:
        pdf.set_x(x)
        pdf.set_font("Helvetica", style, 9)
        pdf.multi_cell(pdf.w - x - pdf.r_margin, 4.5, _latin1(s), new_x="LMARGIN",
                       new_y="NEXT", align="L")
    pdf.set_y(max(pdf.get_y(), end_y) + 3)


def _score_lines(score) -> list[tuple[str, str]]:
    mal = ", ".join(f"{i + 1}: {p:.0%}" for i, p in enumerate(score.malignancy))
    dis = ", ".join(f"{n}: {p:.0%}" for n, p in zip(score.disease_names, score.disease_probs))
    out = [("B", ("CAD scores of the box (research use, not for clinical use; models "
                 "trained on synthetic images)")),
           ("", f"Malignancy level {mal} (expected {score.malignancy_expected:.2f})"),
           ("", "Probability of a nodule or mass (calibrated CAD finding): "
                + ("none here" if score.nodule_probability is None
                   else f"{score.nodule_probability:.0%}"))]
    if dis and score.disease_note:
        out.append(("", f"Disease head: {score.disease_note}; no class is named"))
    elif dis:
        out.append(("", f"Disease: {dis}"
                        + (f" [label set: {score.disease_source}]"
                           if score.disease_source else "")))
    out.append(("", f"Models: {score.model_version}"))
    return out


def _nodule_section(pdf, text, reading: Reading, volume, n: NoduleRecord) -> None:
    mask = n.mask.full(volume.shape) if n.mask is not None else None
    k = n.axis_slice if n.axis_slice is not None else n.box[0]
    k = int(np.clip(k, 0, volume.n_slices - 1))
    crop = _crop_box(n.box, volume.shape[1:])
    axes = [p for p in (n.long_axis_points, n.short_axis_points) if p]
    png = key_image(volume, k, crop, mask[k] if mask is not None else None, lines=axes)
    _keep_together(pdf)
    text(f"Nodule {n.id}" + (" (from a CAD mark)" if n.source == "cad" else ""), 12, "B", 6)
    end = _image_block(pdf, png, f"Axial slice {k + 1} of {volume.n_slices} (lung window); "
                                 "red: the nodule's outline"
                                 + ("; blue: long and short axis" if axes else ""))
    lines = [("B", "Measurements"),
             ("", (f"Volume {n.volume_mm3:.0f} mm3; long axis {n.long_axis_mm:.1f} mm, short "
                  f"axis {n.short_axis_mm:.1f} mm (mean diameter {n.mean_diameter_mm:.1f} mm) "
                  f"on slice {k + 1}")),
             ("", f"Mean attenuation {n.mean_hu:.0f} HU; type: {n.type}")]
    if n.category:
        lines.append(("B", f"Lung-RADS suggestion: {n.category} (not a diagnosis)"))
        if n.lung_rads.get("rule"):
            lines.append(("", f"Rule: {n.lung_rads['rule']}"))
    if n.note:
        lines.append(("B", "Reader's note"))
        lines.append(("", n.note))
    score = reading.score_for(n.box)
    if score is not None:
        lines += _score_lines(score)
    _lines_right(pdf, lines, end)


def _mark_section(pdf, text, volume, m: CadMark) -> None:
    k = int(np.clip(m.slice, 0, volume.n_slices - 1))
    rad = m.diameter_mm / 2 / float(volume.spacing[2])
    r, c = round(m.row), round(m.col)
    box = (k, r - int(rad) - 1, c - int(rad) - 1, r + int(rad) + 2, c + int(rad) + 2)
    png = key_image(volume, k, _crop_box(box, volume.shape[1:]), circle=(m.row, m.col, rad))
    _keep_together(pdf)
    text(f"CAD mark {m.id} (accepted by the reader)", 12, "B", 6)
    end = _image_block(pdf, png, f"Axial slice {k + 1} of {volume.n_slices} (lung window); "
                                 "yellow: the CAD mark")
    size = (f"{m.cls}, long axis {m.long_axis_mm:.1f} mm, short axis {m.short_axis_mm:.1f} "
            f"mm, volume {m.volume_mm3:.0f} mm³ (CAD segmentation)" if m.extent is not None
            else f"{m.cls}, about {m.diameter_mm:.1f} mm (CAD estimate)")
    _lines_right(pdf, [("", f"{size}; probability {m.score:.2f}"),
                       ("", "Not segmented: no volume, axes or Lung-RADS suggestion."),
                       ("B", CAVEAT)], end)


def _followup_section(pdf, text, volume, comp: dict, prior_volume=None) -> None:
    """The follow-up comparison: the prior's date and the registration, a table of the
    pairs, and the key images of each pair (current, and prior when given)."""
    prior = comp.get("prior_study", {})
    reg = comp.get("registration", {})
    pdf.ln(3)
    _keep_together(pdf, 40)
    text("Comparison with the prior", 12, "B")
    q = reg.get("quality", {})
    text(f"Prior of {prior.get('study_date') or 'unknown date'} "
         f"({comp.get('interval_days', 0)} days earlier). "
         + (f"Registration: {reg['error']}" if "error" in reg else
            f"Registration {reg.get('seconds', 0):.1f} s, lung overlap (Dice) "
            f"{q.get('lung_dice', 0):.3f}."), 9)
    head = ("status", "current (slice, mm, mm3)", "prior (slice, mm, mm3)", "d mm",
            "vol %", "VDT d", "Lung-RADS")
    widths = (18, 40, 40, 12, 14, 20, 46)
    pdf.set_font("Helvetica", "B", 7)
    for h, w in zip(head, widths):
        pdf.cell(w, 5, h, border=1)
    pdf.ln(5)
    pdf.set_font("Helvetica", "", 7)

    def side(n) -> str:
        return "-" if not n else (f"{n['slice'] + 1}: {n['diameter_mm']:.1f}, "
                                  f"{n['volume_mm3']:.0f}")

    for p in comp.get("pairs", []):
        vdt = "" if p.get("vdt_days") is None else (
            f"{p['vdt_days']:.0f}" + ("" if p.get("vdt_trusted") else " (untrusted)"))
        row = (p["status"], side(p.get("current")), side(p.get("prior")),
               "" if p.get("diameter_change_mm") is None else f"{p['diameter_change_mm']:+.1f}",
               "" if p.get("volume_change_pct") is None else f"{p['volume_change_pct']:+.0f}",
               vdt, p.get("lung_rads", {}).get("category", ""))
        for v, w in zip(row, widths):
            pdf.cell(w, 5, _latin1(v), border=1)
        pdf.ln(5)
    for p in comp.get("pairs", [])[:8]:
        imgs = []
        for key, vol in (("current", volume), ("prior", prior_volume)):
            n = p.get(key)
            if n is None or vol is None or not 0 <= n["slice"] < vol.n_slices:
                continue
            r = max(n["diameter_mm"] / 2.0 / float(vol.spacing[1]), 3.0)
            box = (n["slice"], int(n["row"] - r), int(n["col"] - r), int(n["row"] + r),
                   int(n["col"] + r))
            crop = _crop_box(box, vol.hu.shape[1:], margin=1.5)
            imgs.append((key, n, key_image(vol, n["slice"], crop,
                                           circle=(n["row"], n["col"], r + 2))))
        if not imgs:
            continue
        _keep_together(pdf, 80)
        y = pdf.get_y()
        for i, (key, n, png) in enumerate(imgs):
            pdf.image(io.BytesIO(png), x=pdf.l_margin + 64 * i, y=y, w=60, h=60)
            pdf.set_xy(pdf.l_margin + 64 * i, y + 61)
            pdf.set_font("Helvetica", "", 7)
            pdf.multi_cell(60, 3.5, _latin1(f"{key}: image {n['slice'] + 1}, "
                                            f"{n['diameter_mm']:.1f} mm ({p['status']}; "
                                            f"{p.get('lung_rads', {}).get('rule', '')})"),
                           align="L")
        pdf.set_xy(pdf.l_margin, y + 78)
