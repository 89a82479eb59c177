"""Lung-RADS v2022 baseline categories, checked against the published size criteria
(ACR Lung-RADS v2022; volume equivalents from Lung-RADS 1.1)."""

from __future__ import annotations

import pytest

from lungviewer.reading.lungrads import RULES, lung_rads, mean_diameter

# (type, mean diameter mm, solid component mm, expected category) — the published thresholds
# and a value either side of each
DIAMETER_CASES = [
    ("solid", 3.0, None, "2"), ("solid", 5.9, None, "2"), ("solid", 6.0, None, "3"),
    ("solid", 7.4, None, "3"), ("solid", 7.9, None, "3"), ("solid", 8.0, None, "4A"),
    ("solid", 14.9, None, "4A"), ("solid", 15.0, None, "4B"), ("solid", 40.0, None, "4B"),
    ("part-solid", 5.9, 3.0, "2"), ("part-solid", 5.9, None, "2"),
    ("part-solid", 6.0, 2.0, "3"), ("part-solid", 12.0, 5.9, "3"),
    ("part-solid", 12.0, 6.0, "4A"), ("part-solid", 12.0, 7.9, "4A"),
    ("part-solid", 12.0, 8.0, "4B"), ("part-solid", 25.0, 20.0, "4B"),
    ("ground-glass", 10.0, None, "2"), ("ground-glass", 29.9, None, "2"),
    ("ground-glass", 30.0, None, "3"), ("ground-glass", 45.0, None, "3"),
]

VOLUME_CASES = [
    ("solid", 112.0, "2"), ("solid", 113.0, "3"), ("solid", 267.0, "3"), ("solid", 268.0, "4A"),
    ("solid", 1766.0, "4A"), ("solid", 1767.0, "4B"),
    ("ground-glass", 14136.0, "2"), ("ground-glass", 14137.0, "3"),
    ("part-solid", 112.0, "2"),
]


@pytest.mark.parametrize(("kind", "diam", "solid", "cat"), DIAMETER_CASES)
def test_diameter_thresholds(kind, diam, solid, cat):
    r = lung_rads(kind, diam, solid)
    assert r.category == cat, r.rule
    assert r.rule.endswith(f"→ {cat}")


@pytest.mark.parametrize(("kind", "vol", "cat"), VOLUME_CASES)
def test_volume_thresholds(kind, vol, cat):
    assert lung_rads(kind, None, 4.0 if kind == "part-solid" else None, vol).category == cat


def test_rule_text_and_note():
    r = lung_rads("solid", 7.4)
    assert r.rule == "solid, 7.4 mm mean diameter → 3"
    d = r.as_dict()
    assert d["category"] == "3" and d["note"] == "suggestion, not a diagnosis"
    assert "4X" in d["not_assessed"]
    ps = lung_rads("part-solid", 10.0, 6.5)
    assert "solid component 6.5 mm" in ps.rule and ps.category == "4A"
    assert "ground glass" in lung_rads("GGN", 12.0).rule


def test_volume_disagreement_is_reported():
    # 7.4 mm mean diameter is category 3, a 300 mm³ volume is 4A: diameter wins, volume said
    r = lung_rads("solid", 7.4, None, 300.0)
    assert r.category == "3"
    assert "300 mm³ would give 4A" in r.rule
    assert "would give" not in lung_rads("solid", 7.4, None, 150.0).rule


def test_mean_diameter_rounding():
    # long and short axis to one decimal, then their mean to one decimal (halves up)
    assert mean_diameter(8.04, 6.66) == pytest.approx(7.4)
    assert mean_diameter(6.0, 5.9) == pytest.approx(6.0)  # 5.95 → 6.0 → category 3
    assert lung_rads("solid", mean_diameter(6.0, 5.9)).category == "3"
    assert lung_rads("solid", 5.94).category == "2"  # rounds to 5.9


def test_calcified_is_benign():
    assert lung_rads("calcified", 12.0).category == "1"


@pytest.mark.parametrize(("args", "msg"), [
    (("spiculated", 5.0), "unknown nodule type"),
    (("solid", -1.0), "≥ 0"),
    (("solid", float("nan")), "finite"),
    (("solid", "big"), "must be a number"),
    (("solid", None), "mean diameter or its volume"),
    (("part-solid", 9.0), "solid component"),
])
def test_bad_input(args, msg):
    with pytest.raises(ValueError, match=msg):
        lung_rads(*args)


def test_table_covers_every_type_and_basis():
    for kind in ("solid", "part-solid", "ground-glass"):
        for by in ("diameter", "volume"):
            rows = [r for r in RULES if r.type == kind and r.by == by]
            lows = sorted({r.lo for r in rows})
            assert lows[0] == 0  # no gap at the bottom; every size has a row
            for r in rows:
                assert r.lo < r.hi and r.category in {"2", "3", "4A", "4B"}
