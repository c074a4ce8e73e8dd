"""Mixture of multinomials for count vectors: pure functions and the NumPyro model.

Model (article 4, §4.2; the grouped variant is the "individualized" model of §4.7,
after Cadez, Smyth, Ip & Mannila 2001):

    t_i ~ Cat(w)                 w = weights, or weights[g_i] for row i of group g_i
    x_i | t_i = k ~ Mult(n_i, p_k),   n_i = sum_c x_ic,  p_k = probs[k]

so each row's log-likelihood marginalises the assignment (eq. LL of §4.2):

    log p(x_i) = logsumexp_k [ log w_k + log Mult(x_i | n_i, p_k) ]
    log Mult(x | n, p) = log n! - sum_c log x_c! + sum_c x_c log p_c

with the multinomial coefficient included (as scipy's pmf) and 0 log 0 = 0, so a
category of probability 0 costs nothing where it is not observed and makes the
component impossible (-inf) where it is.

Counts are validated at the boundary (``check_counts``): non-negative whole numbers,
at least two categories, dense (NumPy/JAX) or sparse (scipy.sparse, or JAX BCOO).
Rows whose counts are all zero (empty baskets) have log-likelihood 0 under every
parameter value: they carry no information, EM excludes them, and ``assignments``
labels them ``EMPTY_LABEL``.

Groups: functions here take integer codes 0..G-1 that index ``weights`` rows;
``encode_groups`` maps arbitrary labels (household ids) to such codes.

Axis names: n rows (baskets), k components, c categories, g groups.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import scipy.sparse
from jax.experimental import sparse as jsparse
from jax.scipy.special import gammaln, xlogy

from latentmix.data.simulate_counts import sample_multinomial_mixture
from latentmix.data.validation import check_int, is_traced

__all__ = [
    "EMPTY_LABEL",
    "MAX_EXACT_COUNT",
    "MultinomialMixtureParams",
    "MultinomialMixturePrior",
    "assignments",
    "check_counts",
    "component_log_prob",
    "encode_groups",
    "log_joint",
    "log_likelihood",
    "log_multinomial_coefficient",
    "log_prior",
    "log_responsibilities",
    "lower_bound",
    "model",
    "num_parameters",
    "responsibilities",
    "sample",
    "shrinkage_prior",
]

EMPTY_LABEL = -1  # assignment of an all-zero row: not a component id
MAX_EXACT_COUNT = 2**53  # float64 holds every integer up to here exactly


class MultinomialMixtureParams(NamedTuple):
    """Parameters of a k-component mixture of multinomials over c categories.

    weights: (k,) mixture weights on the simplex, or (g, k) with one simplex row
        per group (the individualized model).
    probs: (k, c) category probabilities, one simplex row per component.
    """

    weights: jax.Array
    probs: jax.Array


class MultinomialMixturePrior(NamedTuple):
    """Dirichlet pseudocounts (and the hierarchical model's concentration prior).

    weight_concentration: a in w ~ Dirichlet(a 1_k) (scalar or (k,)); in grouped
        EM the same Dirichlet applies to every group's weights.
    probs_concentration: b in p_k ~ Dirichlet(b 1_c) (scalar, (c,) or (k, c)).
    group_concentration_shape, group_concentration_rate: Gamma(shape, rate) prior
        of the concentration s in the hierarchical NumPyro model, where group
        weights ~ Dirichlet(s w); unused by EM. The default Gamma(2, 0.1) has mean
        20 and puts little mass below 1, where group weights would collapse onto
        single components.

    With every concentration equal to 1 the Dirichlet densities are flat, so the
    posterior mode is the maximum-likelihood estimate.
    """

    weight_concentration: float | jax.Array = 1.0
    probs_concentration: float | jax.Array = 1.0
    group_concentration_shape: float = 2.0
    group_concentration_rate: float = 0.1


# ----------------------------------------------------------------------------
# Validation and conversion at the Python boundary
# ----------------------------------------------------------------------------


def _first_bad(name: str, bad_rows, bad_cols, values, what: str, fix: str) -> None:
    row, col = int(bad_rows[0]), int(bad_cols[0])
    raise ValueError(
        f"{name} has {len(bad_rows)} {what} value(s), the first {values[0]!r} at "
        f"row {row}, column {col}; {fix}"
    )


def _check_count_values(name: str, rows, cols, values) -> None:
    """Values at (rows, cols) must be finite whole numbers in [0, 2**53]."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = ~finite
        _first_bad(name, rows[bad], cols[bad], values[bad], "non-finite",
                   "counts must be finite; remove or impute those rows")
    negative = values < 0
    if negative.any():
        _first_bad(name, rows[negative], cols[negative], values[negative],
                   "negative", "counts must be >= 0")
    fractional = values != np.floor(values)
    if fractional.any():
        _first_bad(
            name, rows[fractional], cols[fractional], values[fractional],
            "non-integer",
            "counts must be whole numbers (e.g. line counts, not quantities or "
            "rates); round them with np.rint if they are integers stored with "
            "rounding noise",
        )
    huge = values > MAX_EXACT_COUNT
    if huge.any():
        _first_bad(name, rows[huge], cols[huge], values[huge], "too large",
                   "counts above 2**53 are not exact in float64")


def check_counts(counts, name: str = "counts"):
    """Validate a count matrix; return it as float64 NumPy or scipy CSR (sorted).

    Accepts dense arrays (NumPy, JAX, nested lists), any scipy.sparse matrix or
    array, and a 2-D ``jax.experimental.sparse.BCOO``. Raises ValueError (naming
    the first offending row and column) for negative, non-integer, non-finite or
    over-2**53 values, for a shape that is not (n, c), for n = 0, and for c < 2 (a
    single category makes every parameter value equally likely). Sparse results
    are canonical: duplicates summed, explicit zeros removed, indices sorted.
    A JAX tracer (inside jit) is returned unchecked.
    """
    if is_traced(counts):
        return counts
    if isinstance(counts, jsparse.BCOO):
        if counts.n_batch or counts.n_dense or counts.ndim != 2:
            raise ValueError(
                f"{name} as BCOO must be a plain 2-D sparse matrix, got shape "
                f"{counts.shape} with n_batch={counts.n_batch}, "
                f"n_dense={counts.n_dense}; use counts.todense()"
            )
        indices = np.asarray(counts.indices)
        counts = scipy.sparse.coo_matrix(
            (np.asarray(counts.data, dtype=np.float64), (indices[:, 0], indices[:, 1])),
            shape=counts.shape,
        )
    if scipy.sparse.issparse(counts):
        if counts.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n, c), got shape {counts.shape}")
        if counts.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, got dtype {counts.dtype}")
        coo = scipy.sparse.coo_matrix(counts)
        _check_count_values(name, coo.row, coo.col, coo.data.astype(np.float64))
        matrix = scipy.sparse.csr_matrix(counts, dtype=np.float64)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        matrix.sort_indices()
        _check_shape(name, matrix.shape)
        return matrix
    array = np.asarray(counts)
    if array.dtype == object or array.dtype.kind in "USVc":
        raise TypeError(
            f"{name} must be a real numeric array of counts, got dtype {array.dtype}"
        )
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n, c), got shape {array.shape}; a "
            f"single basket is counts.reshape(1, -1)"
        )
    _check_shape(name, array.shape)
    if array.dtype.kind in "iu" and array.size and array.max() > MAX_EXACT_COUNT:
        row, col = np.argwhere(array > MAX_EXACT_COUNT)[0]
        raise ValueError(
            f"{name} has a count {array[row, col]} above 2**53 at row {row}, "
            f"column {col}; it is not exact in float64"
        )
    values = array.astype(np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values))
    bad |= values > MAX_EXACT_COUNT
    if bad.any():
        rows, cols = np.nonzero(bad)
        _check_count_values(name, rows, cols, values[rows, cols])
    return values


def _check_shape(name: str, shape) -> None:
    num_rows, num_categories = shape
    if num_rows < 1:
        raise ValueError(f"{name} has no rows (shape={tuple(shape)})")
    if num_categories < 2:
        raise ValueError(
            f"{name} has {num_categories} category column(s); a multinomial "
            f"mixture needs at least 2 categories (with one, every row has "
            f"probability 1 under every parameter value)"
        )


def _as_jax_counts(counts, dtype):
    """Validated counts as a dense JAX array or a BCOO matrix of ``dtype``."""
    counts = check_counts(counts)
    if is_traced(counts) or isinstance(counts, jax.Array):
        return counts.astype(dtype)
    if scipy.sparse.issparse(counts):
        return jsparse.BCOO.from_scipy_sparse(counts.astype(dtype))
    return jnp.asarray(counts, dtype)


def encode_groups(groups, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary group labels (household ids, strings) to codes 0..G-1.

    Args:
      groups: (n,) labels.
      labels: the label of each code; default the sorted unique labels of
        ``groups`` (``np.unique``), which is the order of a grouped fit's weights.

    Returns:
      ``(codes, labels)``: (n,) int32 codes with ``labels[codes] == groups``.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise ValueError(f"groups must be 1-D, got shape {groups.shape}")
    if groups.dtype.kind == "f" and np.isnan(groups).any():
        raise ValueError("groups contains NaN; every row needs a group label")
    if labels is None:
        labels, codes = np.unique(groups, return_inverse=True)
        return codes.astype(np.int32), labels
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    positions = np.searchsorted(labels[order], groups)
    positions = np.clip(positions, 0, len(labels) - 1)
    codes = order[positions]
    unknown = labels[codes] != groups
    if unknown.any():
        raise ValueError(
            f"groups has {int(unknown.sum())} row(s) whose label is not among the "
            f"fitted groups, the first {groups[unknown][0]!r}; drop rows of unseen "
            f"groups or refit with them"
        )
    return codes.astype(np.int32), labels


def _check_groups(groups, num_rows: int, num_groups: int):
    """Integer codes of shape (n,) in [0, num_groups)."""
    if is_traced(groups):
        return groups
    codes = np.asarray(groups)
    if codes.shape != (num_rows,):
        raise ValueError(
            f"groups must have shape ({num_rows},) like the rows of counts, got "
            f"{codes.shape}"
        )
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(
            f"groups must be integer codes 0..{num_groups - 1}, got dtype "
            f"{codes.dtype}; map labels with encode_groups"
        )
    if codes.size and (codes.min() < 0 or codes.max() >= num_groups):
        raise ValueError(
            f"groups must be codes in [0, {num_groups}) (one per weights row), got "
            f"values in [{codes.min()}, {codes.max()}]"
        )
    return jnp.asarray(codes, jnp.int32)


def _check_params(params: MultinomialMixtureParams, num_categories: int, groups):
    weights, probs = params.weights, params.probs
    if probs.ndim != 2 or probs.shape[1] != num_categories:
        raise ValueError(
            f"params.probs must have shape (k, {num_categories}) to match counts, "
            f"got {probs.shape}"
        )
    if weights.ndim not in (1, 2) or weights.shape[-1] != probs.shape[0]:
        raise ValueError(
            f"params.weights must have shape ({probs.shape[0]},) or (g, "
            f"{probs.shape[0]}), got {weights.shape}"
        )
    if weights.ndim == 2 and groups is None:
        raise ValueError(
            "params.weights has one row per group: pass groups (codes 0..g-1)"
        )
    if weights.ndim == 1 and groups is not None:
        raise ValueError(
            "groups were given but params.weights is global (k,); drop groups or "
            "pass per-group weights (g, k)"
        )
    if is_traced(weights) or is_traced(probs):
        return
    for name, value in (("weights", weights), ("probs", probs)):
        array = np.asarray(value, dtype=np.float64)
        atol = 1e-6 if np.asarray(value).dtype == np.float64 else 1e-4
        if (
            not np.all(np.isfinite(array))
            or np.any(array < 0)
            or not np.allclose(array.sum(-1), 1.0, rtol=0.0, atol=atol)
        ):
            raise ValueError(
                f"params.{name} rows must lie on the simplex (>= 0, summing to 1), "
                f"got row sums {np.round(array.sum(-1), 8)}"
            )


def _prepared(params, counts, groups):
    """Validated (params as arrays, counts as JAX, groups as codes or None)."""
    params = MultinomialMixtureParams(*map(jnp.asarray, params))
    dtype = jnp.result_type(params.probs.dtype, jnp.float32)
    counts = _as_jax_counts(counts, dtype)
    if groups is not None:
        groups = _check_groups(groups, counts.shape[0], params.weights.shape[0])
    _check_params(params, counts.shape[1], groups)
    return params, counts, groups


# ----------------------------------------------------------------------------
# Log-densities
# ----------------------------------------------------------------------------


def log_multinomial_coefficient(counts) -> jax.Array:
    """log n_i! - sum_c log x_ic! per row, shape (n,) (dense or BCOO counts)."""
    ones = jnp.ones(counts.shape[1], counts.dtype)
    totals = counts @ ones
    if isinstance(counts, jsparse.BCOO):
        log_factorials = jsparse.BCOO(
            (gammaln(counts.data + 1.0), counts.indices), shape=counts.shape
        )
        return gammaln(totals + 1.0) - log_factorials @ ones
    return gammaln(totals + 1.0) - jnp.sum(gammaln(counts + 1.0), axis=-1)


def component_log_prob(probs, counts) -> jax.Array:
    """log Mult(x_i | n_i, p_k) for every row and component, shape (n, k).

    sum_c x_ic log p_kc is a matrix product; a zero probability enters as log 1 = 0
    in that product (the xlogy convention 0 log 0 = 0) and, separately, sets the
    component to -inf for every row with a positive count in that category.
    """
    positive = probs > 0
    # The inner where keeps the gradient finite where probs == 0.
    log_probs = jnp.where(positive, jnp.log(jnp.where(positive, probs, 1.0)), 0.0)
    kernel = counts @ log_probs.T
    impossible = (counts @ (~positive).astype(counts.dtype).T) > 0
    kernel = jnp.where(impossible, -jnp.inf, kernel)
    return kernel + log_multinomial_coefficient(counts)[:, None]


def _row_log_weights(weights, groups):
    log_weights = jnp.log(weights)
    return log_weights if groups is None else log_weights[groups]


def _log_joint(params, counts, groups):
    return _row_log_weights(params.weights, groups) + component_log_prob(
        params.probs, counts
    )


# One compiled evaluation per shape instead of op-by-op dispatch (each new shape
# would otherwise compile every primitive separately).
_log_joint_compiled = jax.jit(_log_joint)


@jax.jit
def _log_likelihood_compiled(params, counts, groups):
    return jax.nn.logsumexp(_log_joint(params, counts, groups), axis=-1)


def log_joint(params: MultinomialMixtureParams, counts, groups=None) -> jax.Array:
    """log w_k + log Mult(x_i | n_i, p_k) for every row and component, (n, k).

    Its log-sum-exp over k is ``log_likelihood``; subtracting that gives
    ``log_responsibilities``.
    """
    return _log_joint_compiled(*_prepared(params, counts, groups))


def log_likelihood(params: MultinomialMixtureParams, counts, groups=None) -> jax.Array:
    """Per-row log p(x_i) = logsumexp_k [log w_k + log Mult(x_i | n_i, p_k)], (n,).

    ``groups`` (codes 0..g-1) selects each row's weights when ``params.weights``
    is (g, k). All-zero rows get 0 (log 1). A row with a positive count in a
    category of probability 0 in every component gets -inf.
    """
    return _log_likelihood_compiled(*_prepared(params, counts, groups))


def log_responsibilities(
    params: MultinomialMixtureParams, counts, groups=None
) -> jax.Array:
    """log gamma_ik = log w_k + log Mult(x_i | p_k) - log p(x_i), shape (n, k).

    The multinomial coefficient cancels in the difference. An all-zero row gets
    its weights (the prior) as responsibilities.
    """
    joint = log_joint(params, counts, groups)
    return joint - jax.nn.logsumexp(joint, axis=-1, keepdims=True)


def responsibilities(params: MultinomialMixtureParams, counts, groups=None):
    """gamma_ik = p(t_i = k | x_i), rows summing to 1, shape (n, k)."""
    return jnp.exp(log_responsibilities(params, counts, groups))


def lower_bound(params: MultinomialMixtureParams, counts, resp,
                groups=None) -> jax.Array:
    """The variational lower bound (VLB, ELBO) of the total log-likelihood, a scalar.

    For any distributions q_i over the components (``resp`` (n, k), rows on the
    simplex), Jensen's inequality on the concave log (article 2; article 4 §4.2):

        log p(x_i) = log sum_k q_ik [w_k Mult(x_i | p_k) / q_ik]
                  >= sum_k q_ik [log w_k + log Mult(x_i | n_i, p_k) - log q_ik]

    and the gap is KL(q_i || p(t_i | x_i)) >= 0, zero exactly when q_i is the
    posterior (the E-step). Summed over rows, with the multinomial coefficient
    (so that it bounds ``log_likelihood(...).sum()``) and 0 log 0 = 0. EM is
    coordinate ascent on this bound: the E-step maximises it over q (closing
    the gap), the M-step over the parameters.
    """
    params, counts, groups = _prepared(params, counts, groups)
    resp = jnp.asarray(resp, counts.dtype)
    if resp.shape != (counts.shape[0], params.probs.shape[0]):
        raise ValueError(
            f"resp must have shape {(counts.shape[0], params.probs.shape[0])}, got "
            f"{resp.shape}"
        )
    return _lower_bound(params, counts, groups, resp)


@jax.jit
def _lower_bound(params, counts, groups, resp):
    joint = _log_joint(params, counts, groups)
    # Where q_ik = 0 the term is 0 (even if the component is impossible there).
    expected = jnp.where(resp > 0, resp * jnp.where(resp > 0, joint, 0.0), 0.0)
    return jnp.sum(expected) - jnp.sum(xlogy(resp, resp))


def assignments(params: MultinomialMixtureParams, counts, groups=None) -> jax.Array:
    """argmax_k gamma_ik per row, with ``EMPTY_LABEL`` (-1) for all-zero rows."""
    params, counts, groups = _prepared(params, counts, groups)
    labels = jnp.argmax(_log_joint_compiled(params, counts, groups), axis=-1)
    totals = counts @ jnp.ones(counts.shape[1], counts.dtype)
    return jnp.where(totals > 0, labels, EMPTY_LABEL)


def _dirichlet_log_density(value, concentration) -> jax.Array:
    """Dirichlet log-density on the last axis; xlogy makes (a-1) log 0 = 0 at a = 1."""
    concentration = jnp.broadcast_to(concentration, value.shape)
    return (
        jnp.sum(xlogy(concentration - 1.0, value), axis=-1)
        + gammaln(jnp.sum(concentration, axis=-1))
        - jnp.sum(gammaln(concentration), axis=-1)
    )


def log_prior(params: MultinomialMixtureParams, prior: MultinomialMixturePrior):
    """log Dirichlet(weights | a) + sum_k log Dirichlet(p_k | b), a scalar.

    With (g, k) weights every group's weights get Dirichlet(a) (the prior of
    grouped MAP-EM). Normalising constants are included.
    """
    weights = jnp.asarray(params.weights)
    probs = jnp.asarray(params.probs)
    log_density = jnp.sum(
        _dirichlet_log_density(weights, prior.weight_concentration)
    )
    return log_density + jnp.sum(
        _dirichlet_log_density(probs, prior.probs_concentration)
    )


def num_parameters(
    num_components: int, num_categories: int, num_groups: int | None = None
) -> int:
    """Free parameters: (K-1) + K(C-1), or G(K-1) + K(C-1) with per-group weights."""
    num_components = check_int("num_components", num_components, minimum=1)
    num_categories = check_int("num_categories", num_categories, minimum=1)
    num_weight_rows = 1
    if num_groups is not None:
        num_weight_rows = check_int("num_groups", num_groups, minimum=1)
    return num_weight_rows * (num_components - 1) + num_components * (
        num_categories - 1
    )


def sample(
    params: MultinomialMixtureParams, total_counts, *, rng_key, groups=None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (counts, components) with row totals ``total_counts`` from the mixture.

    See ``data.simulate_counts.sample_multinomial_mixture``; ``groups`` are codes
    indexing the rows of (g, k) weights.
    """
    return sample_multinomial_mixture(
        np.asarray(params.weights),
        np.asarray(params.probs),
        total_counts,
        rng_key=rng_key,
        groups=groups,
    )


# ----------------------------------------------------------------------------
# NumPyro model
# ----------------------------------------------------------------------------


def shrinkage_prior(weights, shrinkage: float, prior=None) -> MultinomialMixturePrior:
    """The prior of per-group weights shrunk towards the population mix ``weights``.

    Dirichlet(1 + s w) on every group's weights, s = ``shrinkage``: its MAP-EM
    update is w_gk = (N_gk + s w_k) / (N_g + s), s pseudo-baskets of the
    population mix added to each group (s = 0: the free, no-pooling weights).
    Probs keep the concentration of ``prior`` (default 1: flat).
    """
    if not np.isfinite(shrinkage) or shrinkage < 0:
        raise ValueError(f"shrinkage must be a finite number >= 0, got {shrinkage!r}")
    base = MultinomialMixturePrior() if prior is None else prior
    return base._replace(
        weight_concentration=1.0 + float(shrinkage) * np.asarray(weights, float))


def _check_concentration(name: str, value) -> None:
    if is_traced(value):
        return
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)) or not np.all(array > 0):
        raise ValueError(f"prior.{name} must be finite and > 0, got {value!r}")


def model(counts, num_components: int, *, groups=None, prior=None):
    """NumPyro model of the multinomial mixture with assignments summed out.

    weights ~ Dirichlet(a 1_k);  probs_k ~ Dirichlet(b 1_c) for each k (plate
    "components");  each row contributes log p(x_i) (the ``log_likelihood`` above,
    coefficient included) through ``numpyro.factor("counts", ...)`` in plate
    "data". NumPyro's ``MixtureSameFamily`` rejects Multinomial components, so
    the log-sum-exp is written out, exactly as in the E-step.

    With ``groups`` (integer codes 0..g-1, g = max code + 1) the model is
    hierarchical: concentration ~ Gamma(shape, rate) and, in plate "groups",
    group_weights_g ~ Dirichlet(concentration * weights); row i uses
    group_weights[groups[i]]. ``weights`` is then the population mean of the group
    weights. Use NUTS or VI on it: where concentration * w_k < 1 the Dirichlet
    density of the group weights is unbounded at the simplex boundary, so a MAP
    (AutoDelta) fit drives small group weights to 0. (Grouped EM fits the
    no-pooling version: free per-group weights, optionally with a fixed
    Dirichlet prior.)

    ``prior=None`` means ``MultinomialMixturePrior()``: flat Dirichlets (a = b = 1),
    whose posterior mode is the maximum-likelihood estimate.

    Sites: "weights" (k,), "probs" (k, c), and with groups "concentration" and
    "group_weights" (g, k).
    """
    prior = MultinomialMixturePrior() if prior is None else prior
    num_components = check_int("num_components", num_components, minimum=1)
    for name in ("weight_concentration", "probs_concentration"):
        _check_concentration(name, getattr(prior, name))
    counts = check_counts(counts)
    if scipy.sparse.issparse(counts):
        counts = counts.toarray()
    dtype = jnp.result_type(float)
    counts = jnp.asarray(counts, dtype)
    num_rows, num_categories = counts.shape
    weight_concentration = jnp.broadcast_to(
        jnp.asarray(prior.weight_concentration, dtype), (num_components,)
    )
    probs_concentration = jnp.broadcast_to(
        jnp.asarray(prior.probs_concentration, dtype), (num_components, num_categories)
    )
    weights = numpyro.sample("weights", dist.Dirichlet(weight_concentration))
    with numpyro.plate("components", num_components):
        probs = numpyro.sample("probs", dist.Dirichlet(probs_concentration))
    log_components = component_log_prob(probs, counts)
    if groups is None:
        log_weights = jnp.log(weights)
    else:
        if is_traced(groups):
            raise ValueError(
                "groups must be a concrete integer array (it sets the number of "
                "groups); pass it as a NumPy array, not a traced value"
            )
        codes = np.asarray(groups)
        if not np.issubdtype(codes.dtype, np.integer) or codes.size == 0:
            raise ValueError(
                f"groups must be non-empty integer codes 0..g-1, got dtype "
                f"{codes.dtype}; map labels with encode_groups"
            )
        num_groups = int(codes.max()) + 1
        codes = _check_groups(codes, num_rows, num_groups)
        for name in ("group_concentration_shape", "group_concentration_rate"):
            _check_concentration(name, getattr(prior, name))
        concentration = numpyro.sample(
            "concentration",
            dist.Gamma(prior.group_concentration_shape, prior.group_concentration_rate),
        )
        with numpyro.plate("groups", num_groups):
            group_weights = numpyro.sample(
                "group_weights", dist.Dirichlet(concentration * weights)
            )
        log_weights = jnp.log(group_weights)[codes]
    with numpyro.plate("data", num_rows):
        numpyro.factor(
            "counts", jax.nn.logsumexp(log_weights + log_components, axis=-1)
        )
