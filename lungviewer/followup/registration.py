"""Registration of the prior CT to the current one on the lungs (SimpleITK).

Why SimpleITK: it is already a dependency, its registration framework (ITK's
``ImageRegistrationMethod``: metric, optimiser, multi-resolution pyramid, masks) is
maintained and well tested, and it needs no parameter files; nothing here is hand-written
optimisation.

Method:

1. **Downsampling.** Both volumes are shrunk by whole-voxel averaging (``BinShrink``) to about
   :data:`TARGET_MM` per voxel, HU clipped to −1000..400 (the lungs, their vessels and walls).
2. **Lung region.** The lung masks (the caller's, shrunk the same way; else
   ``imaging.parenchyma.segment_lungs`` on the shrunk volumes, its pixel sizes scaled); the metric is evaluated only on the current exam's lungs dilated
   by :data:`MASK_MARGIN_MM` (the chest wall and the diaphragm steer, the arms and the table
   do not).
3. **Initialisation** by the lung masks' centres of mass (``CenteredTransformInitializer``,
   moments), which copes with different fields of view and table positions.
4. **Rigid then affine** (``Euler3DTransform`` → ``AffineTransform``), mean squares of HU,
   regular-step gradient descent, two pyramid levels (shrink 2 and 1, smoothing 2 and 1 voxel).
   The affine stage absorbs a different inspiration (lung volume ±10 %) to first order.
5. **Quality**: the Dice overlap of the current lung mask and the prior's lung mask carried
   through the transform (at the registration's resolution), and the final metric value.
   A Dice below :data:`MIN_DICE`, or an ITK error, is a :class:`RegistrationError`: the
   caller shows the two exams side by side, unlinked, and says why.

The result, :class:`Registration`, maps points current → prior (ITK's fixed → moving
convention) as an affine map of patient coordinates (LPS, mm); :class:`Grid` maps voxel
indices ``(z, row, col)`` of each volume to patient coordinates. :meth:`Registration.
corrected` applies the reader's "align on this point" (a translation that makes the two
points correspond).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lungviewer.cancel import Cancelled

log = logging.getLogger(__name__)

TARGET_MM = 3.0  #: voxel size the registration works at (about)
MASK_MARGIN_MM = 12.0  #: the metric region: current lungs dilated by this
MIN_DICE = 0.80  #: lung overlap below this after registration: not converged
SAMPLING = 0.15  #: share of the metric region's voxels sampled per iteration
CLIP_HU = (-1000.0, 400.0)
REFERENCE_PIXEL_MM = 0.7  #: pixel size the lung mask's parameters are set for


class RegistrationError(RuntimeError):
    """Automatic registration failed (one-line reason); the exams can still be shown
    side by side, unlinked."""


@dataclass(frozen=True)
class Grid:
    """Voxel ``(z, row, col)`` ↔ patient (LPS, mm): ``origin`` is voxel (0, 0, 0)'s centre,
    ``spacing`` is (z, y, x) mm, ``axes`` the 3×3 matrix whose columns are the unit
    directions of col (x), row (y) and slice (z) index steps."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...]
    shape: tuple[int, int, int] = (0, 0, 0)

    @staticmethod
    def of(volume) -> Grid:
        """The grid of a :class:`~lungviewer.study.volume.Volume` (slices sorted along their
        normal, as the loader leaves them)."""
        pos = np.asarray(volume.positions, float).reshape(-1, 3)
        o = np.asarray(volume.orientation, float).reshape(6)
        r, c = o[:3] / (np.linalg.norm(o[:3]) or 1), o[3:] / (np.linalg.norm(o[3:]) or 1)
        if len(pos) > 1 and np.linalg.norm(pos[-1] - pos[0]) > 0:
            n = (pos[-1] - pos[0]) / np.linalg.norm(pos[-1] - pos[0])
        else:
            n = np.cross(r, c)
        axes = np.stack([r, c, n], axis=1)
        return Grid(tuple(float(v) for v in pos[0]), tuple(float(v) for v in volume.spacing),
                    tuple(tuple(float(v) for v in row) for row in axes),
                    tuple(int(s) for s in volume.hu.shape))

    @property
    def axes_array(self) -> np.ndarray:
        return np.asarray(self.axes, float)

    def to_patient(self, zyx) -> np.ndarray:
        """Patient coordinates (n, 3) of voxel indices (n, 3) ``(z, row, col)`` (fractional
        allowed); one point in, one point out."""
        p = np.atleast_2d(np.asarray(zyx, float))
        sz, sy, sx = self.spacing
        local = np.stack([p[:, 2] * sx, p[:, 1] * sy, p[:, 0] * sz], axis=1)
        out = np.asarray(self.origin) + local @ self.axes_array.T
        return out[0] if np.ndim(zyx) == 1 else out

    def to_index(self, xyz) -> np.ndarray:
        """Fractional voxel indices ``(z, row, col)`` of patient points (n, 3)."""
        p = np.atleast_2d(np.asarray(xyz, float)) - np.asarray(self.origin)
        local = np.linalg.solve(self.axes_array, p.T).T
        sz, sy, sx = self.spacing
        out = np.stack([local[:, 2] / sz, local[:, 1] / sy, local[:, 0] / sx], axis=1)
        return out[0] if np.ndim(xyz) == 1 else out

    def as_dict(self) -> dict:
        return {"origin": list(self.origin), "spacing": list(self.spacing),
                "axes": [list(a) for a in self.axes], "shape": list(self.shape)}

    @staticmethod
    def from_dict(d: dict) -> Grid:
        return Grid(tuple(float(v) for v in d["origin"]), tuple(float(v) for v in d["spacing"]),
                    tuple(tuple(float(v) for v in a) for a in d["axes"]),
                    tuple(int(v) for v in d.get("shape", (0, 0, 0))))


@dataclass
class Registration:
    """An affine map of patient coordinates current → prior, ``x_prior = matrix @ x_cur +
    offset`` (mm), with the two volumes' grids and how it was obtained."""

    matrix: np.ndarray
    offset: np.ndarray
    current: Grid
    prior: Grid
    seconds: float = 0.0
    dice: float = float("nan")
    metric: float = float("nan")
    stages: list[str] = field(default_factory=list)
    method: str = "SimpleITK rigid → affine, mean squares, lung-masked"
    corrections: int = 0

    def current_to_prior(self, zyx) -> np.ndarray:
        """Prior voxel index (z, row, col; fractional) of a current voxel index (or n×3)."""
        p = self.current.to_patient(zyx)
        q = np.atleast_2d(p) @ self.matrix.T + self.offset
        return self.prior.to_index(q[0] if np.ndim(p) == 1 else q)

    def prior_to_current(self, zyx) -> np.ndarray:
        """Current voxel index (fractional) of a prior voxel index (or n×3)."""
        q = self.prior.to_patient(zyx)
        p = np.linalg.solve(self.matrix, (np.atleast_2d(q) - self.offset).T).T
        return self.current.to_index(p[0] if np.ndim(q) == 1 else p)

    def corrected(self, current_zyx, prior_zyx) -> Registration:
        """The registration with a translation added so that current voxel ``current_zyx``
        maps onto prior voxel ``prior_zyx`` (the reader's "align on this point")."""
        p = self.current.to_patient(np.asarray(current_zyx, float))
        q = self.prior.to_patient(np.asarray(prior_zyx, float))
        shift = q - (self.matrix @ p + self.offset)
        return Registration(self.matrix.copy(), self.offset + shift, self.current, self.prior,
                            self.seconds, self.dice, self.metric, list(self.stages),
                            self.method, self.corrections + 1)

    @property
    def rotation_deg(self) -> float:
        """The rotation part's angle (degrees; polar decomposition of the matrix)."""
        u, _, vt = np.linalg.svd(self.matrix)
        r = u @ vt
        return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(r) - 1) / 2))))

    @property
    def scale(self) -> float:
        """Volume ratio prior / current of the map (its determinant)."""
        return float(np.linalg.det(self.matrix))

    def as_dict(self) -> dict:
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.matrix, self.offset
        return {"transform": {"type": "affine", "direction": "current → prior (patient LPS mm)",
                              "matrix": [[round(float(v), 9) for v in row] for row in m]},
                "rotation_deg": round(self.rotation_deg, 2),
                "volume_scale": round(self.scale, 4),
                "seconds": round(float(self.seconds), 2),
                "quality": {"lung_dice": round(float(self.dice), 4),
                            "final_metric": (None if not math.isfinite(self.metric)
                                             else round(float(self.metric), 2))},
                "method": self.method, "stages": list(self.stages),
                "manual_corrections": self.corrections,
                "current_grid": self.current.as_dict(), "prior_grid": self.prior.as_dict()}

    @staticmethod
    def from_dict(d: dict) -> Registration:
        m = np.asarray(d["transform"]["matrix"], float)
        q = d.get("quality", {})
        return Registration(m[:3, :3].copy(), m[:3, 3].copy(), Grid.from_dict(d["current_grid"]),
                            Grid.from_dict(d["prior_grid"]), float(d.get("seconds", 0.0)),
                            float(q.get("lung_dice", float("nan"))),
                            float(q.get("final_metric") if q.get("final_metric") is not None
                                  else float("nan")), list(d.get("stages", [])),
                            str(d.get("method", "")), int(d.get("manual_corrections", 0)))

    @staticmethod
    def identity(current: Grid, prior: Grid) -> Registration:
        """The map that takes patient coordinates as they are (both exams in one frame)."""
        return Registration(np.eye(3), np.zeros(3), current, prior, method="identity")


# --------------------------------------------------------------------------- SimpleITK
def _image(arr: np.ndarray, grid: Grid):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    sz, sy, sx = grid.spacing
    img.SetSpacing((sx, sy, sz))
    img.SetOrigin(grid.origin)
    img.SetDirection(tuple(float(v) for v in grid.axes_array.flatten()))
    return img


def _shrink(img, target_mm: float, mean: bool = False):
    """``img`` averaged over whole blocks of voxels to about ``target_mm``; ``mean``: as
    float (a mask's share of each block)."""
    import SimpleITK as sitk

    if mean:
        img = sitk.Cast(img, sitk.sitkFloat32)
    f = [max(1, int(round(target_mm / s))) for s in img.GetSpacing()]
    return sitk.BinShrink(img, f) if any(v > 1 for v in f) else img


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    n = int(a.sum()) + int(b.sum())
    return 2.0 * float(np.count_nonzero(a & b)) / n if n else 0.0


def lung_mask_of(hu: np.ndarray, spacing) -> np.ndarray:
    """The lung mask the registration uses when none is given (the viewer's lung mask)."""
    from lungviewer.imaging.parenchyma import ParenchymaParams, segment_lungs

    # the method's pixel sizes are for ~0.7 mm pixels (512² slices); scaled for coarser ones
    f = min(1.0, REFERENCE_PIXEL_MM / max(float(spacing[1]), float(spacing[2])))
    params = ParenchymaParams(closing_radius=max(1, int(round(5 * f))),
                              min_component_px=max(20, int(round(1000 * f * f))),
                              body_opening_radius=max(1, int(round(2 * f))))
    return segment_lungs(hu, params, spacing=tuple(spacing)).mask


def register(current, prior, current_mask: np.ndarray | None = None,
             prior_mask: np.ndarray | None = None, target_mm: float = TARGET_MM,
             affine: bool = True, progress: Callable[[int, int], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> Registration:
    """Register ``prior`` to ``current`` (both :class:`~lungviewer.study.volume.Volume`-like:
    ``hu`` (z, y, x), ``spacing``, ``positions``, ``orientation``) on the lungs.

    ``current_mask`` / ``prior_mask``: their lung masks (bool, the volume's shape); computed
    when None. ``progress(done, total)`` after each stage; ``cancel()`` True stops between
    stages (:class:`~lungviewer.cancel.Cancelled`). Raises :class:`RegistrationError` when it
    does not converge (see the module docstring)."""
    import SimpleITK as sitk

    t0 = time.perf_counter()
    total = 4 if affine else 3

    def step(i: int) -> None:
        if cancel is not None and cancel():
            raise Cancelled("the registration was cancelled")
        if progress is not None:
            progress(i, total)

    gc, gp = Grid.of(current), Grid.of(prior)
    lo, hi = CLIP_HU
    # shrink first (whole-voxel averages of the int16 HU), then clip: the full-resolution
    # volumes are never copied to float
    fixed = sitk.Clamp(sitk.Cast(_shrink(_image(np.asarray(current.hu), gc), target_mm),
                                 sitk.sitkFloat32), sitk.sitkFloat32, lo, hi)
    moving = sitk.Clamp(sitk.Cast(_shrink(_image(np.asarray(prior.hu), gp), target_mm),
                                  sitk.sitkFloat32), sitk.sitkFloat32, lo, hi)
    masks = []
    for name, m, v, img in (("current", current_mask, current, fixed),
                            ("prior", prior_mask, prior, moving)):
        if m is None:  # the lung mask at the registration's resolution (fast)
            a = sitk.GetArrayFromImage(img).astype(np.int16)
            sz, sy, sx = (float(t) for t in reversed(img.GetSpacing()))
            small = sitk.GetImageFromArray(lung_mask_of(a, (sz, sy, sx)).astype(np.uint8))
            small.CopyInformation(img)
            masks.append(small > 0)
            continue
        if m.shape != v.hu.shape:
            raise ValueError(f"the {name} lung mask's shape {m.shape} is not its volume's "
                             f"{v.hu.shape}")
        if not m.any():
            raise RegistrationError(f"no lung found on the {name} exam: cannot register")
        g = gc if name == "current" else gp
        masks.append(_shrink(_image(m.astype(np.uint8), g), target_mm, mean=True) > 0.5)
    fmask, mmask = masks
    step(1)
    fm = sitk.GetArrayViewFromImage(fmask).astype(bool)
    if not fm.any() or not sitk.GetArrayViewFromImage(mmask).any():
        raise RegistrationError("the lungs vanish at the registration's resolution")
    r = max(1, int(round(MASK_MARGIN_MM / max(fixed.GetSpacing()))))
    region = sitk.BinaryDilate(sitk.Cast(fmask, sitk.sitkUInt8), [r] * 3)
    stages: list[str] = []
    try:
        init = sitk.CenteredTransformInitializer(
            sitk.Cast(fmask, sitk.sitkFloat32), sitk.Cast(mmask, sitk.sitkFloat32),
            sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
        step(2)
        rigid, m1, stop1 = _run(fixed, moving, region, init, rigid=True)
        stages.append(f"rigid: {stop1}")
        best, metric = rigid, m1
        step(3)
        if affine:
            aff = sitk.AffineTransform(3)
            aff.SetCenter(rigid.GetCenter())
            aff.SetMatrix(rigid.GetMatrix())
            aff.SetTranslation(rigid.GetTranslation())
            aff, m2, stop2 = _run(fixed, moving, region, aff, rigid=False)
            stages.append(f"affine: {stop2}")
            best, metric = aff, m2
            step(4)
    except RuntimeError as exc:  # ITK's exceptions (e.g. all samples outside the image)
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise RegistrationError(f"registration failed: {msg[:160]}") from None
    a = np.asarray(best.GetMatrix(), float).reshape(3, 3)
    c = np.asarray(best.GetCenter(), float)
    t = np.asarray(best.GetTranslation(), float)
    reg = Registration(a, c + t - a @ c, gc, gp, stages=stages, metric=float(metric))
    warped = sitk.Resample(sitk.Cast(mmask, sitk.sitkUInt8), fmask, best, sitk.sitkNearestNeighbor, 0)
    reg.dice = _dice(fm, sitk.GetArrayViewFromImage(warped).astype(bool))
    reg.seconds = time.perf_counter() - t0
    if not math.isfinite(reg.dice) or reg.dice < MIN_DICE or not np.all(np.isfinite(reg.matrix)) \
            or abs(np.linalg.det(a)) < 0.5 or abs(np.linalg.det(a)) > 2.0:
        raise RegistrationError(
            f"registration did not converge (lung overlap Dice {reg.dice:.2f} < {MIN_DICE}); "
            "the exams are shown unlinked — use 'align on this point'")
    log.info("registration: Dice %.3f, %.1f s, %s", reg.dice, reg.seconds, "; ".join(stages))
    return reg


def _run(fixed, moving, region, transform, rigid: bool):
    import SimpleITK as sitk

    R = sitk.ImageRegistrationMethod()
    R.SetMetricAsMeanSquares()
    R.SetMetricFixedMask(region)
    R.SetMetricSamplingStrategy(R.RANDOM)
    R.SetMetricSamplingPercentage(SAMPLING, 1)
    R.SetInterpolator(sitk.sitkLinear)
    R.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0 if rigid else 1.0, minStep=0.01, numberOfIterations=80 if rigid else 60,
        relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    R.SetOptimizerScalesFromPhysicalShift()
    R.SetShrinkFactorsPerLevel([2, 1])
    R.SetSmoothingSigmasPerLevel([2, 1])
    R.SetInitialTransform(transform, inPlace=False)
    out = R.Execute(fixed, moving)
    if isinstance(out, sitk.CompositeTransform):
        out = out.GetNthTransform(0)
    out = out.Downcast() if hasattr(out, "Downcast") else out
    if rigid and not isinstance(out, sitk.Euler3DTransform):
        out = sitk.Euler3DTransform(out)
    if not rigid and not isinstance(out, sitk.AffineTransform):
        out = sitk.AffineTransform(out)
    return out, R.GetMetricValue(), R.GetOptimizerStopConditionDescription()
