"""The best restart of a Gaussian-mixture fit, and the warnings about it.

Shared by the in-memory (``fit``) and out-of-core (``chunked``) entry points:
the restart with the highest finite objective is returned; when every restart
failed, ``AllRestartsFailedError`` says why and what to change; otherwise the
per-restart diagnostics of the jitted core become warnings (failed restarts,
reseeded components, collapses onto the ``reg_covar`` floor, no convergence).
"""

import numpy as np

from latentmix.data.validation import DataWarning, warn
from latentmix.inference.em.driver import (
    AllRestartsFailedError,
    ConvergenceWarning,
    EMRestarts,
    EMResult,
    best_result,
)
from latentmix.inference.em.gaussian_mixture.steps import EMPTY_COMPONENT_COUNT
from latentmix.models.gaussian_mixture import diagonal_variances

__all__ = ["best_fit"]


def best_fit(restarts: EMRestarts, varying, *, covariance_type: str, reg_covar,
             max_iters: int, tol, rtol) -> EMResult:
    """The best restart, with warnings; raise when every restart failed.

    ``varying``: (d,) True for the non-constant columns (a constant column's
    variance is the floor by construction, not a collapse).
    """
    try:
        best = best_result(restarts)
    except AllRestartsFailedError as error:
        dtype = np.asarray(restarts.results.log_likelihood).dtype
        precision = (
            f" The fit ran in {dtype}, which resolves a variance only to ~1e-7 "
            f"of the largest one: pass float64 data (x.astype(np.float64)) or "
            f"columns of similar scale." if dtype == np.float32 else "")
        raise AllRestartsFailedError(
            f"{error} (a covariance became singular). Increase reg_covar "
            f"(now {reg_covar}), give a prior, lower num_components, or scale "
            f"the data.{precision}"
        ) from None
    _warn_about_fit(restarts, best, covariance_type, reg_covar, max_iters, tol,
                    rtol, np.asarray(varying))
    return best


def _warn_about_fit(restarts, best, covariance_type, reg_covar, max_iters, tol,
                    rtol, varying):
    """Turn the per-restart diagnostics of the jitted core into warnings."""
    num_failed = int(restarts.failed.sum())
    if num_failed:
        warn(
            f"{num_failed} of {len(restarts.failed)} EM restart(s) produced a "
            f"non-finite objective and were discarded",
            DataWarning,
        )
    reseeds = int(restarts.num_reseeds[restarts.best_index])
    if reseeds:
        warn(
            f"the best EM restart reseeded an empty component {reseeds} time(s) "
            f"(total responsibility < {EMPTY_COMPONENT_COUNT}); the data may "
            f"support fewer components",
            DataWarning,
        )
    if reg_covar > 0 and varying.any():
        params = best.params
        if covariance_type in ("full", "tied"):
            covariances = np.asarray(params.covariances)[:, varying][:, :, varying]
            smallest = np.linalg.eigvalsh(covariances)[:, 0]
        else:
            variances = np.asarray(diagonal_variances(params, covariance_type))
            smallest = variances[:, varying].min(axis=1)
        collapsed = np.flatnonzero(smallest <= 10 * reg_covar).tolist()
        if collapsed:
            warn(
                f"component(s) {collapsed} collapsed: a variance sits at the "
                f"reg_covar floor ({reg_covar}), so the likelihood is inflated by "
                f"a near-singular component. Lower num_components, increase "
                f"reg_covar or give a prior (when columns of x are collinear, "
                f"drop one of them instead)",
                DataWarning,
            )
    if max_iters > 0 and not bool(best.converged):
        tolerance = f"tol={tol}" + (f", rtol={rtol}" if rtol else "")
        warn(
            f"EM did not converge in max_iters={max_iters} iterations "
            f"({tolerance}); increase max_iters or tol, try other starts, or "
            f"check for degenerate data",
            ConvergenceWarning,
        )
