"""How "CT-like" a chest volume is: figures that measure the gap between a real chest CT and
its synthetic LIDC twin (:mod:`lungviewer.synth.twin`), which mirrors the real scan's
geometry and nodules but draws its anatomy analytically.

Arrays are ``(z, y, x)``, HU ``int16`` (any real dtype works), spacing ``(z, y, x)`` in mm,
masks bool of the volume's shape. Every function returns plain Python floats, ints and lists
(JSON-serialisable; a figure with nothing to measure is ``nan``). Most work on every
``step``-th axial slice (the default is given per function): the figures are statistics,
and a subset of slices keeps each call to about a second on a 133×512×512 volume.

The figures and what they tell about a twin:

- :func:`tissue_histograms` — HU histograms (densities per HU on fixed 10 HU bins from −1100
  to 1500 HU) of five tissue classes, each class's share of the body's voxels and its median
  HU. Classes: **lung** (the lung mask), **vessel** (lung-mask voxels above −500 HU inside the
  lung mask eroded 2 px in-plane, so the pleura does not count), **soft tissue** (body outside
  the lung mask, −200..300 HU), **fat** (body outside the lung mask, −200..−30 HU; a part of
  soft tissue) and **bone** (body outside the lung mask, ≥ 200 HU). Shows whether the twin's
  tissues have the real densities and spreads (a twin's tissue is one HU plus noise where a
  real one is a broad peak). :func:`histogram_distance` (Wasserstein-1, in HU) and
  :func:`tissue_distances` compare two such results class by class.
- :func:`describe` — all of the figures of one volume at once (what ``bench/twin_gap.py``
  prints for the real scan and its twins).
- :func:`vessel_fraction` — the share of the (eroded) lung mask above −500 HU: how much of
  the lung is vessels (and nodules, bronchial walls, dependent density).
- :func:`vessel_calibres` — the in-plane calibre distribution of those structures: their
  ridge (local maxima of the in-plane distance transform) gives local radii; shares of the
  diameters in bins 0–1–2–3–4–6–10–∞ mm, the median and the ridge length per lung volume
  (mm/ml), a density of the vessel tree. A twin with too few fine vessels shows a low share
  under 2 mm and a low skeleton density.
- :func:`noise_power_spectrum` — the 2-D noise power spectrum (NPS) of the most uniform
  soft-tissue squares, radially averaged: the noise level (sigma, HU) and its texture (mean
  and peak frequency, cycles/mm). White noise has a flat NPS (mean frequency mid-band);
  a reconstruction kernel or a blur moves the power to lower frequencies. Real CT noise is
  correlated (a band-pass NPS); a twin whose noise is white plus a light blur differs in
  shape even when its sigma matches.

These figures do not say whether a twin is good for training: they locate where it differs
from the scan it mirrors, so a change to the twin's renderer can be seen to close a gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

HU_LO, HU_HI, HU_BIN = -1100.0, 1500.0, 10.0
VESSEL_HU = -500.0
ERODE_PX = 2  # in-plane erosion of the lung mask before looking for vessels
CALIBRE_EDGES_MM = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, np.inf)
TISSUES = ("lung", "vessel", "soft tissue", "fat", "bone")


# -- input checks ------------------------------------------------------------------------------
def _volume(hu: np.ndarray) -> np.ndarray:
    a = np.asarray(hu)
    if a.ndim != 3:
        raise ValueError(f"hu must be a 3-D (z, y, x) array; got {a.ndim}-D shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"hu is empty (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"hu must hold real HU values; got dtype {a.dtype}")
    return a


def _mask(mask: np.ndarray | None, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"{what} has shape {m.shape} but hu has shape {shape}; "
                         "they must match voxel for voxel")
    return m.astype(bool, copy=False)


def _spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    s = np.asarray(spacing, float).reshape(-1)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing must be three positive (z, y, x) sizes in mm; got {spacing!r}")
    return float(s[0]), float(s[1]), float(s[2])


def _step(step: int) -> int:
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a positive whole number of slices; got {step!r}")
    return int(step)


def _f(v) -> float:
    return float(v)


# -- masks ---------------------------------------------------------------------------------------
def body_of(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """The body (z, y, x) bool: per axial slice, the largest connected (8-connected) component
    above ``threshold`` HU with its holes filled (so the lungs are inside the body). The
    table is usually a separate, smaller component and is left out."""
    hu = _volume(hu)
    out = np.zeros(hu.shape, bool)
    eight = np.ones((3, 3), bool)
    for k in range(hu.shape[0]):
        lab, n = ndimage.label(hu[k] > threshold, structure=eight)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        out[k] = ndimage.binary_fill_holes(lab == int(np.argmax(sizes)))
    return out


def eroded_lung(lung_mask: np.ndarray, px: int = ERODE_PX) -> np.ndarray:
    """The lung mask (z, y, x) eroded ``px`` pixels in-plane (3×3 square, slices apart), so
    the pleura and the chest wall's partial volume do not count as vessels."""
    m = np.asarray(lung_mask, bool)
    if px <= 0 or not m.any():
        return m.copy()
    out = np.zeros_like(m)
    _, ys, xs = (np.nonzero(m.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1)))
    y0, y1 = max(0, ys[0] - 1), min(m.shape[1], ys[-1] + 2)
    x0, x1 = max(0, xs[0] - 1), min(m.shape[2], xs[-1] + 2)
    st = np.ones((1, 3, 3), bool)
    out[:, y0:y1, x0:x1] = ndimage.binary_erosion(m[:, y0:y1, x0:x1], st, iterations=px,
                                                  border_value=0)
    return out


def vessel_mask(hu: np.ndarray, lung_mask: np.ndarray, threshold: float = VESSEL_HU
                ) -> np.ndarray:
    """Vessel voxels (z, y, x) bool: above ``threshold`` HU inside the eroded lung mask."""
    hu = _volume(hu)
    lung = _mask(lung_mask, hu.shape, "lung_mask")
    return eroded_lung(lung) & (hu > threshold)


# -- histograms ----------------------------------------------------------------------------------
def hu_bin_edges(lo: float = HU_LO, hi: float = HU_HI, width: float = HU_BIN) -> np.ndarray:
    """The fixed HU bin edges of :func:`tissue_histograms`."""
    return np.arange(lo, hi + width / 2, width)


def _density(values: np.ndarray, edges: np.ndarray) -> list[float]:
    """Density (per HU) of ``values`` on ``edges``; values outside the range count in the
    end bins, so the density integrates to 1 whenever there are values."""
    if values.size == 0:
        return [0.0] * (len(edges) - 1)
    v = np.clip(values.astype(np.float32), edges[0], edges[-1])
    counts, _ = np.histogram(v, bins=edges)
    return (counts / (values.size * np.diff(edges))).tolist()


def tissue_histograms(hu: np.ndarray, lung_mask: np.ndarray, body_mask: np.ndarray | None = None,
                      bins: np.ndarray | None = None, step: int = 2) -> dict:
    """HU histograms of the tissue classes of the module docstring on every ``step``-th slice.

    Args:
        hu: (z, y, x) HU.
        lung_mask: (z, y, x) bool, the lung mask.
        body_mask: (z, y, x) bool; default :func:`body_of` of the slices used.
        bins: HU bin edges (default :func:`hu_bin_edges`: −1100..1500 HU, 10 HU wide).
        step: every ``step``-th axial slice is used (default 2).

    Returns ``{"bin_edges": [...], "slices_used": n, "body_voxels": n, "classes": {name:
    {"density": [...] (per HU, integrating to 1; values beyond the edges in the end bins),
    "share": voxels / body voxels, "median_hu": float, "voxels": int}}}`` for the names in
    :data:`TISSUES`. Fat is a part of soft tissue, and soft tissue and bone share 200..300 HU,
    so the shares do not add up to 1.
    """
    hu = _volume(hu)
    lung = _mask(lung_mask, hu.shape, "lung_mask")
    body = _mask(body_mask, hu.shape, "body_mask")
    s = slice(None, None, _step(step))
    edges = hu_bin_edges() if bins is None else np.asarray(bins, float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bins must be increasing HU bin edges (at least two)")
    h, lu = hu[s], lung[s]
    bo = body_of(h) if body is None else body[s]
    out_lung = bo & ~lu
    classes = {
        "lung": lu,
        "vessel": eroded_lung(lu) & (h > VESSEL_HU),
        "soft tissue": out_lung & (h >= -200) & (h <= 300),
        "fat": out_lung & (h >= -200) & (h <= -30),
        "bone": out_lung & (h >= 200),
    }
    n_body = int(bo.sum())
    res: dict = {"bin_edges": edges.tolist(), "slices_used": int(h.shape[0]),
                 "body_voxels": n_body, "classes": {}}
    for name, m in classes.items():
        v = h[m]
        res["classes"][name] = {
            "density": _density(v, edges),
            "share": _f(v.size / n_body) if n_body else float("nan"),
            "median_hu": _f(np.median(v)) if v.size else float("nan"),
            "voxels": int(v.size),
        }
    return res


def histogram_distance(p: Sequence[float], q: Sequence[float], edges: Sequence[float]) -> float:
    """Wasserstein-1 (earth mover's) distance in HU between two histograms on the same bin
    ``edges`` (densities or counts; each is normalised): ∫ |CDF_p − CDF_q| dHU. ``nan`` when
    either is empty."""
    p, q, e = (np.asarray(a, float) for a in (p, q, edges))
    w = np.diff(e)
    if p.shape != w.shape or q.shape != w.shape:
        raise ValueError(f"histograms of {p.size} and {q.size} bins do not fit "
                         f"{e.size} bin edges")
    mp, mq = (p * w).sum(), (q * w).sum()
    if mp <= 0 or mq <= 0:
        return float("nan")
    cp, cq = np.cumsum(p * w) / mp, np.cumsum(q * w) / mq
    return _f(np.sum(np.abs(cp - cq)[:-1] * w[1:]))


def tissue_distances(a: dict, b: dict) -> dict[str, float]:
    """Per tissue class, :func:`histogram_distance` (HU) between two
    :func:`tissue_histograms` results on the same bins."""
    if a["bin_edges"] != b["bin_edges"]:
        raise ValueError("the two tissue histograms use different bins")
    return {k: histogram_distance(a["classes"][k]["density"], b["classes"][k]["density"],
                                  a["bin_edges"])
            for k in a["classes"] if k in b["classes"]}


# -- vessels -------------------------------------------------------------------------------------
def vessel_fraction(hu: np.ndarray, lung_mask: np.ndarray, threshold: float = VESSEL_HU,
                    step: int = 1) -> float:
    """The share of the lung mask, eroded 2 px in-plane, above ``threshold`` HU, on every
    ``step``-th slice (default all); ``nan`` when the eroded mask is empty."""
    hu = _volume(hu)
    lung = _mask(lung_mask, hu.shape, "lung_mask")
    s = slice(None, None, _step(step))
    er = eroded_lung(lung[s])
    n = int(er.sum())
    return _f((er & (hu[s] > threshold)).sum() / n) if n else float("nan")


def vessel_calibres(hu: np.ndarray, lung_mask: np.ndarray, spacing: Sequence[float],
                    threshold: float = VESSEL_HU, step: int = 2) -> dict:
    """In-plane calibres of the vessels in the lung, on every ``step``-th slice (default 2).

    Per slice: the vessel mask (above ``threshold`` inside the lung mask eroded 2 px), its
    2-D Euclidean distance transform in mm, and its ridge: mask pixels where the distance is
    the maximum of their 3×3 window. A ridge pixel's distance d is the distance from a
    vessel's centre to the nearest background pixel centre, half a pixel beyond the edge,
    so its local radius is d − pixel/2 and the diameter 2·d − pixel (pixel = the mean
    in-plane pixel size); a pixel-wide vessel thus measures one pixel.

    Returns ``{"edges_mm": [0, 1, 2, 3, 4, 6, 10, inf], "shares": [...] (of the ridge
    pixels, summing to 1), "median_mm", "ridge_pixels", "skeleton_mm_per_ml"}``: the
    skeleton density is ridge pixels × pixel size / lung volume of the same slices (mm per
    ml; a vessel crossing the slice counts one pixel per slice). ``inf`` is written as the
    float infinity; shares and median are ``nan`` without vessels.
    """
    hu = _volume(hu)
    lung = _mask(lung_mask, hu.shape, "lung_mask")
    sz, sy, sx = _spacing(spacing)
    s = slice(None, None, _step(step))
    h, lu = hu[s], lung[s]
    ves = eroded_lung(lu) & (h > threshold)
    px = 0.5 * (sy + sx)
    diam: list[np.ndarray] = []
    for k in np.nonzero(ves.any(axis=(1, 2)))[0]:
        m = ves[k]
        ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        y0, y1 = max(0, ys[0] - 1), ys[-1] + 2
        x0, x1 = max(0, xs[0] - 1), xs[-1] + 2
        c = m[y0:y1, x0:x1]
        d = ndimage.distance_transform_edt(c, sampling=(sy, sx))
        ridge = c & (d >= ndimage.maximum_filter(d, size=3, mode="constant", cval=0.0))
        diam.append(2.0 * d[ridge] - px)
    dm = np.concatenate(diam) if diam else np.zeros(0)
    edges = np.asarray(CALIBRE_EDGES_MM, float)
    lung_ml = float(lu.sum()) * sz * sy * sx / 1000.0
    if dm.size:
        counts, _ = np.histogram(np.clip(dm, 0.0, None), bins=edges)
        shares = (counts / dm.size).tolist()
        median = _f(np.median(dm))
    else:
        shares, median = [float("nan")] * (len(edges) - 1), float("nan")
    return {"edges_mm": edges.tolist(), "shares": shares, "median_mm": median,
            "ridge_pixels": int(dm.size),
            "skeleton_mm_per_ml": _f(dm.size * px / lung_ml) if lung_ml else float("nan")}


# -- noise ---------------------------------------------------------------------------------------
def noise_power_spectrum(hu: np.ndarray, spacing: Sequence[float],
                         body_mask: np.ndarray | None = None, roi: int = 32, n_rois: int = 40,
                         step: int = 4, smooth_px: float = 4.0) -> dict:
    """The 2-D noise power spectrum of the most uniform soft-tissue squares.

    On every ``step``-th axial slice (default 4) the slice is tiled with ``roi``×``roi``
    squares; a square is a candidate when it lies wholly inside the body (``body_mask``,
    default :func:`body_of`) and its mean HU is within −150..150. Candidates are ranked by
    the standard deviation, within the square, of the slice smoothed with a Gaussian of
    ``smooth_px`` pixels (structure, not noise), and the ``n_rois`` most uniform are kept.
    Each has its least-squares plane (mean + linear trend) subtracted; the NPS is the mean of
    |FFT|² · dx·dy / roi² (HU²·mm²), whose integral over frequency is the detrended
    squares' variance.

    Returns ``{"freq": [...] (cycles/mm, radial bin centres, one FFT frequency step apart, up
    to the Nyquist frequency), "nps": [...] (HU²·mm², the radial mean in each bin), "sigma_hu"
    (the square root of the NPS's integral over the whole 2-D spectrum), "mean_freq" (the
    radial NPS's centroid Σ f·NPS(f) / Σ NPS(f) over the bins: half the Nyquist frequency
    for white noise), "peak_freq" (the bin of the largest radial NPS), "nyquist", "n_rois",
    "roi_mm", "structure_hu" (the kept squares' median smoothed std)}``; figures are ``nan``
    and lists empty when no square qualifies.
    """
    hu = _volume(hu)
    body = _mask(body_mask, hu.shape, "body_mask")
    _, sy, sx = _spacing(spacing)
    step = _step(step)
    roi = int(roi)
    if roi < 8 or roi > min(hu.shape[1:]):
        raise ValueError(f"roi must be 8 to {min(hu.shape[1:])} pixels; got {roi}")
    if n_rois < 1:
        raise ValueError(f"n_rois must be at least 1; got {n_rois}")
    ny, nx = hu.shape[1] // roi, hu.shape[2] // roi
    ks = np.arange(0, hu.shape[0], step)
    tiles, structure = [], []
    for k in ks:
        sl = hu[k, :ny * roi, :nx * roi].astype(np.float32)
        bo = (body_of(hu[k:k + 1])[0] if body is None else body[k])
        bo = bo[:ny * roi, :nx * roi]
        inside = bo.reshape(ny, roi, nx, roi).all(axis=(1, 3))
        t = sl.reshape(ny, roi, nx, roi)
        mean = t.mean(axis=(1, 3))
        ok = inside & (mean >= -150) & (mean <= 150)
        if not ok.any():
            continue
        sm = ndimage.gaussian_filter(hu[k].astype(np.float32), smooth_px)[:ny * roi, :nx * roi]
        st = sm.reshape(ny, roi, nx, roi).std(axis=(1, 3))
        iy, ix = np.nonzero(ok)
        tiles.append(t[iy, :, ix, :])
        structure.append(st[iy, ix])
    empty = {"freq": [], "nps": [], "sigma_hu": float("nan"), "mean_freq": float("nan"),
             "peak_freq": float("nan"), "nyquist": _f(0.5 / max(sy, sx)), "n_rois": 0,
             "roi_mm": [roi * sy, roi * sx], "structure_hu": float("nan")}
    if not tiles:
        return empty
    t = np.concatenate(tiles)
    st = np.concatenate(structure)
    keep = np.argsort(st, kind="stable")[:n_rois]
    t, st = t[keep].astype(np.float64), st[keep]
    # detrend: least-squares plane a + b·y + c·x per square
    yy, xx = np.mgrid[0:roi, 0:roi].astype(np.float64)
    a = np.column_stack([np.ones(roi * roi), yy.ravel(), xx.ravel()])
    flat = t.reshape(len(t), -1).T
    coef, *_ = np.linalg.lstsq(a, flat, rcond=None)
    det = (flat - a @ coef).T.reshape(-1, roi, roi)
    f2 = np.abs(np.fft.fft2(det)) ** 2
    nps2d = f2.mean(axis=0) * (sy * sx) / (roi * roi)
    fy, fx = np.fft.fftfreq(roi, d=sy), np.fft.fftfreq(roi, d=sx)
    df_y, df_x = 1.0 / (roi * sy), 1.0 / (roi * sx)
    sigma = float(np.sqrt(nps2d.sum() * df_y * df_x))
    fr = np.hypot(fy[:, None], fx[None, :])
    df = max(df_y, df_x)
    nyq = 0.5 / max(sy, sx)
    idx = np.rint(fr / df).astype(int)
    nb = int(np.floor(nyq / df + 1e-9)) + 1
    sel = idx < nb
    sums = np.bincount(idx[sel], weights=nps2d[sel], minlength=nb)
    cnt = np.bincount(idx[sel], minlength=nb)
    nps = np.where(cnt > 0, sums / np.maximum(cnt, 1), 0.0)
    freq = np.arange(nb) * df
    tot = nps.sum()
    return {"freq": freq.tolist(), "nps": nps.tolist(), "sigma_hu": sigma,
            "mean_freq": _f((freq * nps).sum() / tot) if tot > 0 else float("nan"),
            "peak_freq": _f(freq[int(np.argmax(nps))]), "nyquist": _f(nyq),
            "n_rois": int(len(t)), "roi_mm": [roi * sy, roi * sx],
            "structure_hu": _f(np.median(st))}


def describe(hu: np.ndarray, lung_mask: np.ndarray, spacing: Sequence[float],
             body_mask: np.ndarray | None = None) -> dict:
    """All the figures of one volume with their defaults: ``{"tissues", "vessel_fraction",
    "calibres", "nps", "lung_ml"}`` (the body mask is made once when not given)."""
    hu = _volume(hu)
    lung = _mask(lung_mask, hu.shape, "lung_mask")
    sp = _spacing(spacing)
    body = body_of(hu) if body_mask is None else _mask(body_mask, hu.shape, "body_mask")
    return {"tissues": tissue_histograms(hu, lung, body),
            "vessel_fraction": vessel_fraction(hu, lung),
            "calibres": vessel_calibres(hu, lung, sp),
            "nps": noise_power_spectrum(hu, sp, body),
            "lung_ml": _f(lung.sum() * np.prod(sp) / 1000.0)}
