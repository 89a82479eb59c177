"""Lung-RADS v2022 suggestion for one nodule at baseline screening, from its type and size.

The size criteria are one table (:data:`RULES`), not a chain of ifs. They are the ACR
Lung-RADS v2022 assessment categories for a *baseline* screening CT (ACR, "Lung-RADS v2022",
released November 2022; summarised in Christensen J. et al., "ACR Lung-RADS v2022:
Assessment Categories and Management Recommendations", CHEST 2024;165(3):738-753). Their
size thresholds at baseline are those of Lung-RADS 1.1 (ACR 2019), which also gives the
volume equivalents used here:

=============  =====================================  ==========================================
category       by mean diameter                       by volume
=============  =====================================  ==========================================
2              solid < 6 mm; part-solid total < 6 mm;  solid < 113 mm³; part-solid total < 113
               ground glass < 30 mm                   mm³; ground glass < 14 137 mm³
3              solid 6 to < 8 mm; part-solid total    solid 113 to < 268 mm³; part-solid total
               ≥ 6 mm with solid component < 6 mm;    ≥ 113 mm³ with solid component < 6 mm;
               ground glass ≥ 30 mm                   ground glass ≥ 14 137 mm³
4A             solid 8 to < 15 mm; part-solid solid   solid 268 to < 1767 mm³
               component 6 to < 8 mm
4B             solid ≥ 15 mm; part-solid solid        solid ≥ 1767 mm³
               component ≥ 8 mm
=============  =====================================  ==========================================

A nodule with a benign calcification pattern (complete, central, popcorn, concentric rings)
or fat is category 1; here ``"calcified"`` stands for a nodule the caller judged so.

Size is the mean diameter: the long and short axis measured to one decimal (mm) and their
mean reported to one decimal (:func:`mean_diameter`); volumes to the nearest mm³. When
both are given, the category comes from the mean diameter and the rule says what the volume
would give where that differs.

Growth and new nodules on a follow-up exam: :func:`lung_rads_followup` (below).
What this does **not** assess: category 4X (a
category 3 or 4 nodule with additional features or imaging findings that increase the
suspicion of cancer, such as spiculation or lymphadenopathy), perifissural, juxtapleural,
airway and cystic nodules, and the S modifier. The result is a suggestion, not a diagnosis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INF = math.inf
NOTE = "suggestion, not a diagnosis"
NOT_ASSESSED = ("baseline screening size rules only; 4X (additional suspicious features such "
                "as spiculation or lymphadenopathy), growth, perifissural and cystic nodules "
                "are not assessed")

#: accepted spellings of the nodule types
TYPES = {
    "solid": "solid",
    "part-solid": "part-solid", "part solid": "part-solid", "partsolid": "part-solid",
    "part_solid": "part-solid", "semi-solid": "part-solid", "subsolid": "part-solid",
    "ground-glass": "ground-glass", "ground glass": "ground-glass", "ground_glass": "ground-glass",
    "ggn": "ground-glass", "ggo": "ground-glass", "non-solid": "ground-glass",
    "nonsolid": "ground-glass",
    "calcified": "calcified",
}


@dataclass(frozen=True)
class Rule:
    """One row: ``type`` with its total size in ``[lo, hi)`` (mean diameter in mm, or
    volume in mm³ when ``by == "volume"``) and, for part-solid nodules, the solid
    component's mean diameter in ``[solid_lo, solid_hi)`` mm → ``category``."""

    type: str
    by: str  # "diameter" | "volume"
    lo: float
    hi: float
    category: str
    solid_lo: float = 0.0
    solid_hi: float = INF


#: Lung-RADS v2022 baseline size rules; the first matching row wins.
RULES: tuple[Rule, ...] = (
    Rule("calcified", "diameter", 0, INF, "1"),
    Rule("calcified", "volume", 0, INF, "1"),
    Rule("solid", "diameter", 0, 6, "2"),
    Rule("solid", "diameter", 6, 8, "3"),
    Rule("solid", "diameter", 8, 15, "4A"),
    Rule("solid", "diameter", 15, INF, "4B"),
    Rule("solid", "volume", 0, 113, "2"),
    Rule("solid", "volume", 113, 268, "3"),
    Rule("solid", "volume", 268, 1767, "4A"),
    Rule("solid", "volume", 1767, INF, "4B"),
    Rule("part-solid", "diameter", 0, 6, "2"),
    Rule("part-solid", "diameter", 6, INF, "3", 0, 6),
    Rule("part-solid", "diameter", 6, INF, "4A", 6, 8),
    Rule("part-solid", "diameter", 6, INF, "4B", 8, INF),
    Rule("part-solid", "volume", 0, 113, "2"),
    Rule("part-solid", "volume", 113, INF, "3", 0, 6),
    Rule("part-solid", "volume", 113, INF, "4A", 6, 8),
    Rule("part-solid", "volume", 113, INF, "4B", 8, INF),
    Rule("ground-glass", "diameter", 0, 30, "2"),
    Rule("ground-glass", "diameter", 30, INF, "3"),
    Rule("ground-glass", "volume", 0, 14137, "2"),
    Rule("ground-glass", "volume", 14137, INF, "3"),
)

_TYPE_TEXT = {"solid": "solid", "part-solid": "part-solid", "ground-glass": "ground glass",
              "calcified": "calcified"}


@dataclass(frozen=True)
class LungRadsResult:
    """The suggested category (``"1"``, ``"2"``, ``"3"``, ``"4A"`` or ``"4B"``) and the
    rule that gave it, e.g. ``"solid, 7.4 mm mean diameter → 3"``."""

    category: str
    rule: str

    def as_dict(self) -> dict:
        return {"category": self.category, "rule": self.rule, "note": NOTE,
                "not_assessed": NOT_ASSESSED}

    def text(self) -> str:
        return f"Lung-RADS {self.category} ({self.rule}; {NOTE})"


def round1(x: float) -> float:
    """Round to one decimal, halves away from zero (as a reader reads 7.45 mm as 7.5)."""
    return math.copysign(math.floor(abs(float(x)) * 10.0 + 0.5) / 10.0, float(x))


def mean_diameter(long_mm: float, short_mm: float) -> float:
    """Lung-RADS mean diameter: long and short axis each to one decimal, their mean to one
    decimal (mm)."""
    return round1((round1(long_mm) + round1(short_mm)) / 2.0)


def normalise_type(nodule_type: str) -> str:
    """``"solid"``, ``"part-solid"``, ``"ground-glass"`` or ``"calcified"`` for any of the
    accepted spellings; ValueError otherwise."""
    key = str(nodule_type).strip().lower()
    if key not in TYPES:
        raise ValueError(f"unknown nodule type {nodule_type!r}; one of solid, part-solid, "
                         "ground-glass (or calcified)")
    return TYPES[key]


def _number(name: str, v: float | None) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be a finite number ≥ 0, got {v!r}")
    return x


def _match(kind: str, by: str, size: float, solid: float | None) -> Rule:
    for r in RULES:
        if r.type != kind or r.by != by or not (r.lo <= size < r.hi):
            continue
        if (r.solid_lo, r.solid_hi) != (0.0, INF) and (
                solid is None or not (r.solid_lo <= solid < r.solid_hi)):
            continue
        return r
    raise AssertionError(f"no Lung-RADS rule for {kind} {by} {size}")  # the table is complete


def _describe(kind: str, r: Rule, size: float, solid: float | None) -> str:
    what = _TYPE_TEXT[kind]
    if r.by == "volume":
        s = f"{what}, {size:.0f} mm³" + (" total" if kind == "part-solid" else "")
    else:
        s = (f"{what}, {size:.1f} mm " + ("total mean diameter" if kind == "part-solid"
                                          else "mean diameter"))
    if kind == "part-solid" and (r.solid_lo, r.solid_hi) != (0.0, INF) and solid is not None:
        s += f", solid component {solid:.1f} mm"
    if kind == "calcified":
        s = "calcified (benign pattern assumed: complete, central, popcorn or concentric)"
    return f"{s} → {r.category}"


def lung_rads(nodule_type: str, mean_diameter_mm: float | None,
              solid_diameter_mm: float | None = None,
              volume_mm3: float | None = None) -> LungRadsResult:
    """Lung-RADS v2022 baseline category of one nodule (a suggestion, not a diagnosis).

    Args:
        nodule_type: ``solid``, ``part-solid``, ``ground-glass`` (or ``calcified`` for a
            benign calcification pattern).
        mean_diameter_mm: mean of long and short axis (:func:`mean_diameter`); rounded to one
            decimal here. May be None when ``volume_mm3`` is given.
        solid_diameter_mm: part-solid only: the solid component's mean diameter (mm); needed
            once the total reaches 6 mm (113 mm³).
        volume_mm3: the nodule's volume; used when there is no mean diameter, else reported
            in the rule where its category differs.

    Raises ValueError for an unknown type, a negative or non-numeric size, or a part-solid
    nodule ≥ 6 mm without its solid component's size.
    """
    kind = normalise_type(nodule_type)
    diam = _number("the mean diameter", mean_diameter_mm)
    solid = _number("the solid component's diameter", solid_diameter_mm)
    vol = _number("the volume", volume_mm3)
    if diam is None and vol is None:
        raise ValueError("Lung-RADS needs the nodule's mean diameter or its volume")
    diam = round1(diam) if diam is not None else None
    vol = float(round(vol)) if vol is not None else None
    solid = round1(solid) if solid is not None else None
    by, size = ("diameter", diam) if diam is not None else ("volume", vol)
    assert size is not None
    big = size >= (6.0 if by == "diameter" else 113.0)
    if kind == "part-solid" and big and solid is None:
        raise ValueError("a part-solid nodule of this size needs the solid component's "
                         "mean diameter")
    rule = _match(kind, by, size, solid)
    text = _describe(kind, rule, size, solid)
    if by == "diameter" and vol is not None and kind != "calcified":
        alt = _match(kind, "volume", vol, solid)
        if alt.category != rule.category:
            text += f" (volume {vol:.0f} mm³ would give {alt.category})"
    return LungRadsResult(rule.category, text)


# --------------------------------------------------------------------------- follow-up
#: Lung-RADS v2022 growth: an increase in mean diameter of more than this (mm) ...
GROWTH_MM = 1.5
#: ... within this many days (12 months); slower growth over a longer interval is the
#: v2022 "slowly growing" solid or part-solid nodule (4B)
GROWTH_DAYS = 365
#: a category 3 or 4 nodule unchanged for at least this many days (3 months) is category 2
STABLE_DAYS = 90

#: Lung-RADS v2022 new-nodule rules, by type: (lo, hi) mean diameter mm → category; for
#: part-solid the ranges are of the solid component once the total reaches 6 mm
NEW_RULES: dict[str, tuple[tuple[float, float, str], ...]] = {
    "solid": ((0, 4, "2"), (4, 6, "3"), (6, 8, "4A"), (8, INF, "4B")),
    "part-solid": ((0, 4, "4A"), (4, INF, "4B")),
    "ground-glass": ((0, 30, "2"), (30, INF, "3")),
}
#: Lung-RADS v2022 growing-nodule rules (growth > 1.5 mm within 12 months), as NEW_RULES
GROWING_RULES: dict[str, tuple[tuple[float, float, str], ...]] = {
    "solid": ((0, 8, "4A"), (8, INF, "4B")),
    "part-solid": ((0, 4, "4A"), (4, INF, "4B")),
    "ground-glass": ((0, 30, "2"), (30, INF, "3")),
}


def _by_table(table, size: float) -> str:
    return next(cat for lo, hi, cat in table if lo <= size < hi)


def lung_rads_followup(nodule_type: str, mean_diameter_mm: float | None,
                       prior_mean_diameter_mm: float | None = None,
                       interval_days: float | None = None,
                       solid_diameter_mm: float | None = None,
                       volume_mm3: float | None = None,
                       resolved: bool = False) -> LungRadsResult:
    """Lung-RADS v2022 category of one nodule on a follow-up (screening) CT, with the rule.

    ``prior_mean_diameter_mm`` None: a **new** nodule (v2022 new-nodule thresholds: solid
    < 4 mm → 2, 4 to < 6 → 3, 6 to < 8 → 4A, ≥ 8 → 4B; part-solid < 6 mm total → 3, else by
    the new solid component < 4 mm → 4A, ≥ 4 mm → 4B; ground glass < 30 mm → 2, ≥ 30 → 3).
    Otherwise **growth** is an increase of the mean diameter by more than 1.5 mm: within 12
    months → the growing rules (solid < 8 mm → 4A, ≥ 8 → 4B; part-solid by the solid
    component < 4 mm → 4A, ≥ 4 → 4B; ground glass < 30 mm → 2, ≥ 30 → 3); over a longer
    interval → the v2022 slow-growth rule (a solid or part-solid nodule growing slowly over
    more than one screening interval → 4B; ground glass → 2). A nodule that did not grow
    takes its baseline size category, lowered to 2 when that is 3 or 4 and the interval is
    at least 3 months ("unchanged"). ``resolved``: gone on the current exam → 1.

    Same inputs as :func:`lung_rads` otherwise (a part-solid nodule without the solid
    component's size is taken by its total size)."""
    if resolved:
        return LungRadsResult("1", "resolved: not on the current exam → 1")
    kind = normalise_type(nodule_type)
    diam = _number("the mean diameter", mean_diameter_mm)
    prior = _number("the prior mean diameter", prior_mean_diameter_mm)
    solid = _number("the solid component's diameter", solid_diameter_mm)
    days = _number("the interval", interval_days)
    if diam is None:
        raise ValueError("a follow-up Lung-RADS category needs the mean diameter")
    diam = round1(diam)
    what = _TYPE_TEXT[kind]
    if kind == "calcified":
        return lung_rads(kind, diam)
    part_big = kind == "part-solid" and diam >= 6.0
    size = (solid if solid is not None else diam) if part_big else diam
    size_text = (f"solid component {size:.1f} mm" if part_big and solid is not None
                 else f"{diam:.1f} mm mean diameter")
    if prior is None:
        if kind == "part-solid" and not part_big:
            cat = "3"
        else:
            cat = _by_table(NEW_RULES[kind], size)
        return LungRadsResult(cat, f"new {what} nodule, {size_text} → {cat} (v2022 new-nodule "
                                   "rule)")
    prior = round1(prior)
    delta = round1(diam - prior)
    span = "" if days is None else f" in {days:.0f} days"
    if delta > GROWTH_MM:
        if days is not None and days > GROWTH_DAYS:
            cat = "2" if kind == "ground-glass" else "4B"
            return LungRadsResult(cat, f"slowly growing {what} nodule, {prior:.1f} → "
                                       f"{diam:.1f} mm (+{delta:.1f} mm{span}, over more than "
                                       f"12 months) → {cat} (v2022 slow-growth rule)")
        cat = _by_table(GROWING_RULES[kind], size)
        return LungRadsResult(cat, f"growing {what} nodule, {prior:.1f} → {diam:.1f} mm "
                                   f"(+{delta:.1f} mm{span}; > {GROWTH_MM} mm within 12 "
                                   f"months), {size_text} → {cat} (v2022 growth rule)")
    base = lung_rads(kind, diam, solid_diameter_mm=solid if part_big else None,
                     volume_mm3=volume_mm3) if not (part_big and solid is None) else \
        lung_rads(kind, diam, solid_diameter_mm=0.0)
    change = f"{delta:+.1f} mm{span}"
    if base.category in ("3", "4A", "4B") and days is not None and days >= STABLE_DAYS:
        return LungRadsResult("2", f"unchanged {what} nodule ({change}; not > {GROWTH_MM} "
                                   f"mm) for ≥ 3 months, would be {base.category} by size → 2")
    return LungRadsResult(base.category, f"not growing ({change}); {base.rule}")
