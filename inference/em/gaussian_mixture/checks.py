"""Checks at the Python boundary of a Gaussian-mixture fit, before anything is traced.

Everything a caller can get wrong is refused here with a message that says what
to change (``ValueError``); data that fit but deserve attention are warned about
(``DataWarning``): constant columns (their variance is the floor) and fewer
distinct rows than components (components will be empty or collapse).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.validation import (
    DataWarning,
    check_int,
    check_matrix,
    check_nonnegative,
    warn,
)
from latentmix.inference.em.gaussian_mixture.starts import INIT_METHODS
from latentmix.models.gaussian_mixture import (
    GMMParams,
    check_covariance_type,
    check_params,
    check_prior,
)

__all__ = [
    "Options",
    "check_constant_columns",
    "check_data",
    "check_init",
    "check_options",
    "check_representable",
    "check_screen_iters",
    "prepare_prior",
]


class Options(NamedTuple):
    """The checked integer options."""

    num_components: int
    num_restarts: int
    max_iters: int


def check_options(num_components, covariance_type, num_restarts, max_iters, tol,
                  reg_covar, rtol=0.0) -> Options:
    """Validate the scalar options shared by the in-memory, chunked and sweep fits."""
    num_components = check_int("num_components", num_components, minimum=1)
    check_covariance_type(covariance_type)
    num_restarts = check_int("num_restarts", num_restarts, minimum=1)
    max_iters = check_int("max_iters", max_iters, minimum=0)
    check_nonnegative("tol", tol)
    check_nonnegative("rtol", rtol)
    check_nonnegative("reg_covar", reg_covar)
    return Options(num_components, num_restarts, max_iters)


def check_screen_iters(screen_iters, max_iters: int) -> int:
    """0, or a number of screening iterations that leaves the best restart some."""
    screen_iters = check_int("screen_iters", screen_iters, minimum=0)
    if screen_iters and screen_iters >= max_iters:
        raise ValueError(
            f"screen_iters={screen_iters} must be below max_iters="
            f"{max_iters}: the best restart needs iterations left to "
            f"continue; use 0 to run every restart to convergence"
        )
    return screen_iters


def check_data(x, num_components, covariance_type, reg_covar, prior):
    """Validate x and warn about data that fit but deserve attention.

    Returns (x as a float array, (d,) True for the non-constant columns).
    """
    x = check_matrix("x", x, min_rows=2, min_cols=1)
    num_rows, num_features = x.shape
    if num_components > num_rows:
        raise ValueError(
            f"num_components={num_components} exceeds the number of rows of x "
            f"({num_rows}); every component needs data: use num_components <= "
            f"{num_rows}"
        )
    varying = _varying_columns(x)
    check_representable(x, varying)
    check_constant_columns(varying, reg_covar, prior)
    if covariance_type in ("full", "tied"):
        check_collinear_columns(x, varying)
    # A column with >= k distinct values proves >= k distinct rows; try the first
    # rows of each column (cheap), then whole columns, and only fall back to the
    # (slower) row-wise unique when no column proves it.
    if not any(
        len(np.unique(x[:rows, j])) >= num_components
        for rows in (min(num_rows, 4 * num_components + 64), num_rows)
        for j in range(num_features)
    ):
        num_distinct = len(np.unique(x, axis=0))
        if num_distinct < num_components:
            warn(
                f"x has only {num_distinct} distinct row(s) for num_components="
                f"{num_components}: some components will be empty (reseeded) or "
                f"collapse onto single points; lower num_components",
                DataWarning,
            )
    return x, varying


def check_representable(x, varying=None, names=None) -> None:
    """Refuse columns whose second moments the dtype cannot hold.

    EM sums squares of the data: a value beyond sqrt(max / n) overflows those
    sums (float64: about 1e151 for 1,000 rows), and a varying column whose
    values all lie within sqrt(tiny) of each other (float64: 1.5e-154) has a
    variance below the smallest normal number, so neither its covariances nor
    its density can be represented. Rescaling the column (a change of units)
    changes nothing else in the fit. ``names``: the columns' names for the
    message (default: their indices).
    """
    x = np.asarray(x)
    finfo = np.finfo(x.dtype)
    varying = _varying_columns(x) if varying is None else varying
    # Two passes over x (no |x| temporary): the largest magnitude of a column
    # is that of its maximum or of its minimum.
    high, low = _column_extreme(np.max, x), _column_extreme(np.min, x)
    largest = np.maximum(np.abs(high), np.abs(low))
    spread = high - low
    huge = np.flatnonzero(largest > np.sqrt(finfo.max / (len(x) * x.shape[1])))
    small = np.flatnonzero(varying & (spread < np.sqrt(finfo.tiny)))
    label = (lambda picked: [names[j] for j in picked]) if names is not None else (
        lambda picked: picked.tolist())
    subject = "x column(s)" if names is None else "column(s)"
    if huge.size:
        raise ValueError(
            f"{subject} {label(huge)} hold values up to "
            f"{largest[huge].max():.3g}: their squares overflow {x.dtype}, so no "
            f"covariance can be computed; rescale those columns (divide by a power "
            f"of ten, a change of units) before fitting"
        )
    if small.size:
        raise ValueError(
            f"{subject} {label(small)} vary by only {spread[small].min():.3g}: "
            f"their variances underflow {x.dtype}; rescale those columns (multiply "
            f"by a power of ten, a change of units) before fitting"
        )


def check_constant_columns(varying, reg_covar, prior) -> None:
    """Refuse constant columns without a floor; warn about them otherwise."""
    constant = np.flatnonzero(~np.asarray(varying)).tolist()
    if not constant:
        return
    if reg_covar == 0 and prior is None:
        raise ValueError(
            f"x has constant column(s) {constant}: their variance is 0 and, "
            f"with reg_covar=0, the covariances are singular. Drop the "
            f"column(s), set reg_covar > 0 or give a prior"
        )
    warn(
        f"x has constant column(s) {constant}: their variance in every "
        f"component is the floor (reg_covar={reg_covar} or the prior); "
        f"consider dropping them",
        DataWarning,
    )


def check_collinear_columns(x, varying, max_rows: int = 5000,
                            max_columns: int = 512) -> None:
    """Warn when the non-constant columns are (nearly) linearly dependent.

    Then every component's full covariance is singular along the same
    direction whatever K is: its variance sits at the floor. The test: the
    smallest eigenvalue of the columns' correlation matrix (on the first
    ``max_rows`` rows; an exact dependence holds in any subset) below 1e-10
    of the largest; the columns loading on that eigenvector are named.
    """
    columns = np.flatnonzero(np.asarray(varying))
    if len(columns) < 2 or len(columns) > max_columns:
        return
    sample = np.asarray(x[:max_rows], dtype=np.float64)[:, columns]
    if len(sample) <= len(columns):
        return  # fewer rows than columns: dependent by counting, warned elsewhere
    with np.errstate(all="ignore"):
        correlation = np.corrcoef(sample, rowvar=False)
    if not np.all(np.isfinite(correlation)):
        return
    values, vectors = np.linalg.eigh(correlation)
    if values[0] > 1e-10 * values[-1]:
        return
    loading = np.abs(vectors[:, 0])
    involved = columns[loading > 0.1 * loading.max()].tolist()
    warn(
        f"columns {involved} of x are linearly dependent (collinear): every "
        f"component's covariance is singular along that direction, whatever "
        f"num_components is, and its variance sits at the floor; drop one of "
        f"those columns (or use covariance_type='diag')",
        DataWarning,
    )


def check_init(init, rng_key, num_features, covariance_type, num_restarts, dtype):
    """(init_method, batched GMMParams or None, one key per restart).

    ``init``: one of ``starts.INIT_METHODS`` (then ``rng_key`` is required and
    init_method names it), or a GMMParams with (k,) leaves (broadcast to every
    restart) or (r, k) leaves for r stacked starts (then init_method is
    "params" and the number of restarts is r).
    """
    init_method, init_params, num_restarts = _check_init_value(
        init, num_features, covariance_type, num_restarts, dtype
    )
    if rng_key is None:
        if init_method != "params":
            raise ValueError(
                f"rng_key is required for init={init!r}; pass e.g. "
                f"rng_key=jax.random.key(0)"
            )
        rng_key = jax.random.key(0)
    return init_method, init_params, jax.random.split(rng_key, num_restarts)


def prepare_prior(prior, num_components, num_features, dtype):
    """A checked prior in ``dtype`` with (k,) weight concentrations, or None."""
    if prior is None:
        return None
    prior = check_prior(prior, num_components, num_features, for_map=True)
    prior = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), prior)
    return prior._replace(
        weight_concentration=jnp.broadcast_to(
            prior.weight_concentration, (num_components,)
        )
    )


def _column_extreme(reduce, x) -> np.ndarray:
    """``reduce`` (np.max or np.min) of each column of the 2-D x, (d,).

    NumPy reduces axis 0 of a C-ordered (n, d) array with an inner loop of d
    elements, too short to vectorise when d is small (1.8-2.2 ms at n = 1e5,
    d = 16). Viewing g consecutive rows as one row of g d elements and reducing
    twice gives the same values (max and min are exact and propagate NaN) in
    0.5 ms.
    """
    num_rows, num_features = x.shape
    group = max(1, min(64, 1024 // max(1, num_features)))
    whole = num_rows // group * group
    if group == 1 or whole == 0 or not x.flags.c_contiguous:
        return reduce(x, axis=0)
    wide = reduce(x[:whole].reshape(whole // group, group * num_features), axis=0)
    rest = [wide.reshape(group, num_features), x[whole:]]
    return reduce(np.concatenate(rest, axis=0), axis=0)


def _varying_columns(x) -> np.ndarray:
    """(d,) True for a column that takes two different values.

    The first rows settle it for almost every column (one small comparison);
    only a column that is constant there is read in full.
    """
    head = x[:64]
    varying = np.any(head != head[0], axis=0)
    for column in np.flatnonzero(~varying):
        varying[column] = np.any(x[:, column] != x[0, column])
    return varying


def _check_init_value(init, num_features, covariance_type, num_restarts, dtype):
    """Return (init_method, batched GMMParams or None, num_restarts)."""
    if isinstance(init, GMMParams):
        params = check_params(init, num_features, covariance_type, name="init")
        if params.weights.ndim == 1:
            params = jax.tree_util.tree_map(
                lambda a: jnp.broadcast_to(a, (num_restarts,) + a.shape), params
            )
        elif num_restarts not in (1, params.weights.shape[0]):
            raise ValueError(
                f"init holds {params.weights.shape[0]} stacked starts but "
                f"num_restarts={num_restarts}; make them agree"
            )
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
        return "params", params, params.weights.shape[0]
    if isinstance(init, str) and init in INIT_METHODS:
        return init, None, num_restarts
    raise ValueError(
        f"init must be one of {INIT_METHODS} or a GMMParams, got {init!r}"
    )
