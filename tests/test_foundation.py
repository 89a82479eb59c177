import numpy as np
import pytest

from lungviewer.cli import build_parser, main
from lungviewer.imaging.window import PRESETS, apply_window
from lungviewer.study.annotations import Characteristics, describe_rating
from lungviewer.study.lidc_db import get_database
from lungviewer.study.volume import Volume


def test_window_presets_match_the_design():
    assert (PRESETS["lung"].level, PRESETS["lung"].width) == (-600, 1500)
    assert (PRESETS["mediastinum"].level, PRESETS["mediastinum"].width) == (40, 400)
    assert (PRESETS["bone"].level, PRESETS["bone"].width) == (400, 1800)
    out = apply_window(np.array([-1350, -600, 150, 2000], dtype=np.int16), -600, 1500)
    assert out.tolist() == [0, 127, 255, 255]


def test_volume_geometry_helpers():
    pos = np.array([[-100.0, -120.0, z] for z in (-10.0, -7.5, -5.0)])
    vol = Volume(hu=np.zeros((3, 4, 5), np.int16), spacing=(2.5, 0.7, 0.7), positions=pos,
                 sop_uids=["a", "b", "c"])
    assert vol.slice_index_at_z(-7.4) == 1
    assert vol.slice_index_at_z(-20.0) is None
    assert vol.slice_index_of_sop("c") == 2
    np.testing.assert_allclose(vol.pixel_to_patient(1, 2, 3), [-100 + 2.1, -120 + 1.4, -7.5])
    assert vol.orientation_labels() == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    with pytest.raises(ValueError):
        Volume(hu=np.zeros((2, 4, 4), np.int16), spacing=(1, 1, 1), positions=pos)


def test_lidc_database_has_the_real_annotations():
    db = get_database()
    assert len(db.scans()) == 1018
    assert sum(len(db.annotations(s.id)) for s in db.scans()) == 6859
    scan = db.scan_by_patient("LIDC-IDRI-0001")
    assert scan.n_slices == 133 and scan.pixel_spacing == pytest.approx(0.703125)
    assert len(db.annotations(scan.id)) == 4
    pts = np.concatenate([c.points for a in db.annotations(scan.id) for c in a.contours])
    # the nodule the four readers outlined: rows ~340-390, columns ~297-338 (x = column)
    assert 290 <= pts[:, 0].min() and pts[:, 0].max() <= 345
    assert 335 <= pts[:, 1].min() and pts[:, 1].max() <= 395


def test_rating_words():
    assert describe_rating("malignancy", 4) == "malignancy 4 – moderately suspicious"
    assert describe_rating("spiculation", 1) == "spiculation 1 – none"
    c = Characteristics.from_mapping({"malignancy": 2})
    assert c.malignancy == 2 and c.texture is None


def test_cli_routes_paths_to_view():
    args = build_parser().parse_args(["info", "x", "--json"])
    assert args.command == "info" and args.json
    with pytest.raises(SystemExit):
        main(["--help"])
