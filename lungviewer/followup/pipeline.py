"""The whole follow-up comparison of two loaded exams, as one function with progress.

:func:`run_comparison` checks the prior (:mod:`.priors`), computes both lung masks,
registers the prior to the current (:mod:`.registration`), gets each exam's nodules from the
caller's ``find_nodules`` (the CAD findings in the viewer and in ``lungviewer compare``: the
prior's findings are run when it has none yet) and pairs them (:mod:`.compare`). When the
registration does not converge the result says so (``registration["error"]``) and has no
pairs: the views stay side by side, unlinked. Used by ``commands/compare.py`` and the
viewer's compare view (on a worker thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from lungviewer.cancel import Cancelled

from .compare import Comparison, Nodule, compare
from .priors import check_prior, study_info
from .registration import RegistrationError, lung_mask_of, register

log = logging.getLogger(__name__)

#: find_nodules(volume, lung_mask, progress, cancel) -> list[Nodule]
NoduleFinder = Callable[..., list[Nodule]]


def run_comparison(current, prior, find_nodules: NoduleFinder,
                   current_date=None, prior_date=None, confirm_other_patient: bool = False,
                   current_nodules: list[Nodule] | None = None,
                   current_mask=None, prior_mask=None,
                   progress: Callable[[int, int, str], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> tuple[Comparison, object]:
    """``(comparison, registration or None)`` of ``current`` with ``prior`` (Volumes).
    Raises :class:`~lungviewer.followup.priors.PriorError` for an invalid prior."""

    def step(i: int, text: str) -> None:
        if cancel is not None and cancel():
            raise Cancelled("the comparison was cancelled")
        if progress is not None:
            progress(i, 6, text)

    ci, pi = study_info(current, current_date), study_info(prior, prior_date)
    step(0, "lung masks")
    if current_mask is None:
        current_mask = lung_mask_of(current.hu, current.spacing)
    if prior_mask is None:
        prior_mask = lung_mask_of(prior.hu, prior.spacing)
    lung_ml = float(prior_mask.sum()) * float(prior.spacing[0] * prior.spacing[1]
                                              * prior.spacing[2]) / 1000.0
    days = check_prior(ci, pi, confirm_other_patient, prior_lung_ml=lung_ml)
    step(1, "registering the prior to the current exam")
    reg = None
    messages = []
    try:
        reg = register(current, prior, current_mask, prior_mask, cancel=cancel)
    except RegistrationError as exc:
        messages.append(str(exc))
    if reg is None:
        return Comparison([], {"error": messages[0]}, days, ci.as_dict(), pi.as_dict(),
                          messages=messages), None
    step(2, "findings of the current exam")
    if current_nodules is None:
        current_nodules = find_nodules(current, current_mask, None, cancel)
    step(3, "findings of the prior exam")
    prior_nodules = find_nodules(prior, prior_mask, None, cancel)
    step(4, "pairing and measuring the nodules")
    comp = compare(current, prior, current_nodules, prior_nodules, days, reg, current_mask,
                   prior_mask)
    comp.current, comp.prior, comp.messages = ci.as_dict(), pi.as_dict(), messages
    comp.label = ("SYNTHETIC" if getattr(current, "is_synthetic", False)
                  or getattr(prior, "is_synthetic", False) else "")
    step(6, "done")
    return comp, reg
