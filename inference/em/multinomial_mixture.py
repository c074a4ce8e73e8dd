"""EM for the multinomial mixture, global or with per-group weights.

Model and notation: ``models.multinomial_mixture`` (article 4, §4.2 and §4.7).
Distinct non-empty rows are folded into weighted rows: row i has multiplicity v_i
(how many baskets share its counts, and its group in the grouped model), and
N = sum_i v_i is the number of non-empty baskets. Folding is exact: every sum
below is the same sum over the original rows, grouped differently.

E-step (log space; the multinomial coefficient cancels):

    log gamma_ik = log w_k + sum_c x_ic log p_kc - logsumexp_j [same with j]

M-step (a Lagrange multiplier per simplex constraint; with Dirichlet(a) on the
weights and Dirichlet(b) on each p_k this is the posterior mode, MAP-EM):

    w_k  = (N_k + a - 1) / sum_j (N_j + a - 1),        N_k  = sum_i v_i gamma_ik
    p_kc = (S_kc + b - 1) / sum_c' (S_kc' + b - 1),    S_kc = sum_i v_i gamma_ik x_ic

With ``prior=None`` (maximum likelihood) a = b = 1 and these are the tutorial's
mean responsibilities and normalised ``gamma.T @ X``. The mode formula needs
a, b >= 1: below 1 the Dirichlet density is unbounded at the simplex boundary, the
posterior has no mode and the formula can turn negative, so smaller values are
rejected. Grouped model: w_gk = (sum_{i in g} v_i gamma_ik + a - 1) / (N_g + K(a-1)),
the group's mean responsibility (a segment sum over group codes, no pandas, any row
order); p as above. A group without non-empty rows keeps its starting weights
(the global fit's) under maximum likelihood, and gets the prior mode under MAP.
A component whose weighted counts are all zero keeps its previous probs (it has
weight 0, so this changes no likelihood).

Objective (``EMResult.trace`` and ``EMResult.log_likelihood``): the mean over the
N non-empty baskets of log p(x_i | theta) *including* the multinomial coefficient,
plus log p(theta) / N for MAP-EM (the mean per-row log posterior, up to the
evidence). The coefficient does not depend on theta, so it is summed once, on the
host in float64, and added as a constant: the inner loop never evaluates gammaln.
``trace[t]`` is the objective at the parameters entering iteration t (trace[0] at
the initialisation); ``log_likelihood`` is recomputed at the returned parameters.

Stopping rule (``inference.em.driver``): |objective_t - objective_{t-1}| <
tol + rtol |objective_t|. The default is absolute, tol = 1e-6 nats per basket,
with rtol = 0. The tutorial's rtol = 1e-4 on ~20 nats per basket allows changes
of 2e-3 nats per basket, i.e. hundreds of nats over 10^5 baskets, which is more
than the BIC differences it is used to compare. Pass rtol=1e-4, tol=0 to reproduce
the reference protocol.

Zero probabilities. Maximum-likelihood EM sets p_kc = 0 when no basket of
component k holds category c. The inner loop writes log 0 as LOG_ZERO = -1e30 so
that the matrix product sum_c x_ic log p_kc stays exact where x_ic = 0 (a true
-inf would give 0 * -inf = NaN); where x_ic > 0 the row's log-density for
component k falls below -1e30, so its responsibility is exactly 0, as with -inf.
A row impossible under every component gets log p(x_i) = -inf, and the
objective turns non-finite: such a restart is never reported as converged.

Layout. The E-step needs X @ log(P).T and the M-step (v gamma).T @ X. Dense
matrices use BLAS matmuls; sparse ones a gather and segment_sum over the non-zeros.
Measured on a 2-core CPU in float64, one E-step product plus one M-step product
(with the softmax between them) on 120,000 x 94 counts at 5% density took, for
K = 10: dense 39 ms, BCOO 51 ms, gather/segment_sum 38 ms; for K = 30: 76, 249
and 166 ms (BCOO's transposed product is the slow part). Over c = 94..1000 and
0.5-16% density a stored entry cost about 40 times a dense cell, so
``choose_layout`` picks the sparse path only when fewer than 2% of the cells are
non-zero, or when the dense matrix would exceed 2 GiB; basket-by-category
matrices (c = 94, ~5-10% density) go dense. The choice depends only on the folded
rows, never on the input format, so dense and sparse inputs of the same counts
give bit-identical fits.

Shapes. Folded rows (and non-zeros) are padded with zero-weight rows up to a
size bucket (at most 1/8 larger), so data sets of similar size reuse the compiled
core. Restarts run under ``vmap``; each restart's while loop stops on its own
rule. The restart with the highest finite final objective is returned.

Devices (``devices=``, issue 6 §2). N_k, S_kc and the objective are sums over
rows, so the folded rows are padded (with zero-weight rows) to a multiple of the
device count and sharded over a one-axis mesh (``inference.sharding``), the
parameters are replicated, and the *same* jitted core runs: GSPMD turns each
contraction over rows (v gamma).T @ X, sum_i v_i gamma_ik and the objective's
dot into per-device partial sums plus an all-reduce. The result equals the
single-device fit up to the order of floating-point summation. Only the dense
layout is sharded: the sparse layout's gather/segment_sum would be partitioned
by GSPMD without knowing that a device's non-zeros belong to its own rows.

Out-of-core (``counts`` a ``data.chunks.ChunkedRows``): see
``inference.em.multinomial_streaming``.

K sweeps in one program (``fit_multinomial_mixture_sweep``). Every K of a sweep
is padded to K_max components; the padded ("masked") components have weight
exactly 0 and a log joint of exactly -inf, so their responsibilities are exactly
0 (exp(-inf) = 0; no 0 * -inf ever forms), they add exactly nothing to N_k, S_kc
or the objective, and the M-step leaves them untouched (weight 0, probs as
initialised), also under a Dirichlet prior, whose terms are summed over the K
real components only. All (K, restart) pairs run under one ``vmap``, so the
sweep is one compiled program, and each K's iterates are those of its separate
fit up to summation order.

References:
  1. Dempster, Laird & Rubin (1977), Maximum likelihood from incomplete data via
     the EM algorithm.
  2. Cadez, Smyth, Ip & Mannila (2001), Predictive profiles for transaction data
     using finite mixture models (UCI TR 01-67).
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from jax.scipy.special import gammaln as jax_gammaln
from jax.scipy.special import xlogy
from scipy.special import gammaln

from latentmix.data.chunks import ChunkedRows
from latentmix.data.validation import check_int, check_nonnegative, warn
from latentmix.inference.em.driver import ConvergenceWarning, EMResult, run_em
from latentmix.inference.sharding import (
    check_devices,
    padded_rows,
    replicate,
    shard_rows,
)
from latentmix.models.multinomial_mixture import (
    MultinomialMixtureParams,
    MultinomialMixturePrior,
    check_counts,
    encode_groups,
    log_prior,
)

__all__ = [
    "LOG_ZERO",
    "SPARSE_DENSITY_THRESHOLD",
    "DENSE_MAX_BYTES",
    "FLOAT32_MAX_EXACT",
    "choose_layout",
    "fit_multinomial_mixture",
    "fit_multinomial_mixture_sweep",
]

LOG_ZERO = -1e30  # stand-in for log 0 in the inner loop (see module docstring)
SPARSE_DENSITY_THRESHOLD = 0.02  # measured break-even density, see docstring
DENSE_MAX_BYTES = 2**31
FLOAT32_MAX_EXACT = 2**24  # float32 holds every integer up to here exactly


# ----------------------------------------------------------------------------
# Host-side preparation: validation, empty rows, groups, folding, layout
# ----------------------------------------------------------------------------


class _Folded(NamedTuple):
    """Distinct non-empty rows with their multiplicities (host arrays)."""

    matrix: scipy.sparse.csr_matrix  # (m, c) distinct rows
    row_weights: np.ndarray  # (m,) multiplicity v_i
    group_codes: np.ndarray | None  # (m,) int32
    num_distinct: int  # distinct row contents, groups ignored


def _fold_rows(matrix, codes, fold: bool) -> _Folded:
    """Fold identical (row, group) pairs exactly; canonical order (by content).

    Rows are hashed by two random projections (with the group code as a third
    key) and grouped with np.unique; the grouping is then verified exactly (each
    row minus its representative must be zero), with an exact byte-key fallback
    should two different rows ever share a hash. The order of the distinct rows
    depends only on their content, so permuting the input rows changes nothing.
    """
    num_rows = matrix.shape[0]
    projections = np.random.default_rng(0).random((matrix.shape[1], 2)) + 1.0
    hashes = np.asarray(matrix @ projections)
    num_distinct = len(np.unique(hashes, axis=0))
    if not fold:
        group_codes = None if codes is None else codes.astype(np.int32)
        return _Folded(matrix, np.ones(num_rows), group_codes, num_distinct)
    group_key = np.zeros(num_rows) if codes is None else codes.astype(np.float64)
    keys = np.column_stack([group_key, hashes])
    _, first, inverse, multiplicity = np.unique(
        keys, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.ravel()
    folded = matrix[first]
    difference = matrix - folded[inverse]
    difference.eliminate_zeros()
    if difference.nnz:
        return _fold_rows_exact(matrix, codes, num_distinct)
    group_codes = None if codes is None else codes[first].astype(np.int32)
    return _Folded(folded, multiplicity.astype(np.float64), group_codes, num_distinct)


def _fold_rows_exact(matrix, codes, num_distinct) -> _Folded:
    """Byte-exact folding (slow path, used only after a hash collision)."""
    first_of = {}
    multiplicity = {}
    for row in range(matrix.shape[0]):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        key = (
            -1 if codes is None else int(codes[row]),
            matrix.indices[start:stop].tobytes(),
            matrix.data[start:stop].tobytes(),
        )
        first_of.setdefault(key, row)
        multiplicity[key] = multiplicity.get(key, 0) + 1
    ordered = sorted(first_of)
    first = np.array([first_of[key] for key in ordered])
    weights = np.array([multiplicity[key] for key in ordered], dtype=np.float64)
    group_codes = None if codes is None else codes[first].astype(np.int32)
    return _Folded(matrix[first], weights, group_codes, num_distinct)


def choose_layout(num_rows: int, num_categories: int, num_nonzero: int) -> str:
    """Return "sparse" below 2% non-zero cells or above 2 GiB dense, else "dense"."""
    cells = max(num_rows * num_categories, 1)
    if num_nonzero / cells < SPARSE_DENSITY_THRESHOLD or cells * 8 > DENSE_MAX_BYTES:
        return "sparse"
    return "dense"


def _bucket(size: int) -> int:
    """Round up to 16 or to the next multiple of 2**(floor(log2 size) - 3)."""
    if size <= 16:
        return 16
    step = 2 ** (int(np.floor(np.log2(size))) - 3)
    return int(-(-size // step) * step)


class _DenseCounts(NamedTuple):
    matrix: jax.Array  # (n, c)


class _SparseCounts(NamedTuple):
    rows: jax.Array  # (nnz,) sorted row index of each non-zero
    cols: jax.Array  # (nnz,)
    values: jax.Array  # (nnz,)


class _Data(NamedTuple):
    """Device arrays for the jitted core (padding rows have weight 0)."""

    counts: _DenseCounts | _SparseCounts
    row_weights: jax.Array  # (n,) multiplicities v_i
    group_codes: jax.Array  # (n,) int32 (zeros for the global model)
    num_rows: jax.Array  # N, scalar
    mean_log_coefficient: jax.Array  # (1/N) sum over baskets of the log coefficient


def _device_data(folded: _Folded, layout: str, num_rows, mean_log_coef, dtype,
                 devices=None):
    """Padded device arrays; with ``devices``, rows sharded and scalars replicated."""
    matrix = folded.matrix
    # A sharded axis must split evenly: the bucket is rounded up to a multiple of
    # the device count, with more zero-weight rows.
    size = padded_rows(_bucket(matrix.shape[0]), devices)
    pad = size - matrix.shape[0]
    row_weights = np.concatenate([folded.row_weights, np.zeros(pad)])
    codes = folded.group_codes
    codes = np.zeros(matrix.shape[0], np.int32) if codes is None else codes
    codes = np.concatenate([codes, np.zeros(pad, np.int32)])
    if devices is None:
        place_rows = jnp.asarray
    else:
        def place_rows(array, array_dtype):
            return shard_rows(np.asarray(array, array_dtype), devices)
    if layout == "dense":
        dense = np.zeros((size, matrix.shape[1]))
        dense[: matrix.shape[0]] = matrix.toarray()
        counts = _DenseCounts(place_rows(dense, dtype))
    else:
        coo = matrix.tocoo()  # row-major order: rows sorted (CSR with sorted indices)
        nnz_size = _bucket(coo.nnz)
        extra = nnz_size - coo.nnz
        # Padding entries hold 0 in the last row, so rows stay sorted and sums exact.
        counts = _SparseCounts(
            jnp.asarray(np.concatenate([coo.row, np.full(extra, size - 1)]), jnp.int32),
            jnp.asarray(np.concatenate([coo.col, np.zeros(extra)]), jnp.int32),
            jnp.asarray(np.concatenate([coo.data, np.zeros(extra)]), dtype),
        )
    scalars = (jnp.asarray(num_rows, dtype), jnp.asarray(mean_log_coef, dtype))
    if devices is not None:
        scalars = replicate(scalars, devices)
    return _Data(
        counts,
        place_rows(row_weights, dtype),
        place_rows(codes, jnp.int32),
        *scalars,
    )


class _Prepared(NamedTuple):
    """Validated, folded counts and the host-side constants of the objective."""

    folded: _Folded
    num_rows: int  # N, the non-empty baskets
    num_categories: int
    num_groups: int | None
    max_row_total: float
    column_totals: np.ndarray  # (c,) total count of each category
    log_coefficient: float  # sum over baskets of log n_i! - sum_c log x_ic!


def _warn_empty_rows(num_empty: int, num_input_rows: int) -> None:
    """The DataWarning for all-zero rows."""
    warn(
        f"{num_empty} of {num_input_rows} rows of counts are all zero "
        f"(empty baskets): they carry no information and are excluded from the "
        f"fit; models.multinomial_mixture.assignments labels them EMPTY_LABEL (-1)",
    )


def _warn_unobserved(column_totals, prior_arrays) -> None:
    """Categories never observed get probability 0 under maximum likelihood."""
    unobserved = np.flatnonzero(np.asarray(column_totals) == 0)
    if unobserved.size and np.any(
        np.asarray(prior_arrays.probs_concentration)[:, unobserved] == 1.0
    ):
        warn(
            f"categories {unobserved.tolist()} are never observed: they are kept, "
            f"and their maximum-likelihood probability is 0 in every component, so "
            f"new baskets holding them get log-likelihood -inf; pass "
            f"prior=MultinomialMixturePrior(probs_concentration=1 + pseudocount) to "
            f"smooth them",
        )


def _check_distinct(num_components: int, num_distinct: int) -> None:
    if num_components > num_distinct:
        raise ValueError(
            f"num_components={num_components} exceeds the number of distinct "
            f"non-empty rows ({num_distinct}); use at most {num_distinct} components"
        )


def _prepare_counts(counts, groups, fold: bool) -> _Prepared:
    """Validate counts and groups, drop empty rows (warning), fold the rest.

    Warnings are attributed to the caller of the public function calling this.
    """
    matrix = check_counts(counts)
    if not scipy.sparse.issparse(matrix):
        matrix = scipy.sparse.csr_matrix(matrix)
    num_input_rows, num_categories = matrix.shape

    codes = labels = None
    if groups is not None:
        codes, labels = encode_groups(groups)
        if codes.shape[0] != num_input_rows:
            raise ValueError(
                f"groups must have one label per row of counts ({num_input_rows}), "
                f"got {codes.shape[0]}"
            )
    num_groups = None if labels is None else len(labels)

    row_totals = np.asarray(matrix.sum(axis=1)).ravel()
    empty = row_totals == 0
    if empty.all():
        raise ValueError("every row of counts is zero; there is nothing to fit")
    if empty.any():
        _warn_empty_rows(int(empty.sum()), num_input_rows)
        matrix = matrix[~empty]
        codes = None if codes is None else codes[~empty]
        row_totals = row_totals[~empty]
    log_coefficient = gammaln(row_totals + 1.0).sum() - gammaln(matrix.data + 1.0).sum()
    return _Prepared(
        folded=_fold_rows(matrix, codes, fold),
        num_rows=matrix.shape[0],
        num_categories=num_categories,
        num_groups=num_groups,
        max_row_total=float(row_totals.max()),
        column_totals=np.asarray(matrix.sum(axis=0)).ravel(),
        log_coefficient=log_coefficient,
    )


def _check_layout(layout: str) -> None:
    if layout not in ("auto", "dense", "sparse"):
        raise ValueError(f"layout must be 'auto', 'dense' or 'sparse', got {layout!r}")


def _resolve_layout(layout: str, folded: _Folded, devices, dtype) -> str:
    """``choose_layout`` on one device; the dense layout (the one sharded) on many."""
    if devices is None:
        if layout == "auto":
            return choose_layout(*folded.matrix.shape, folded.matrix.nnz)
        return layout
    if layout == "sparse":
        raise ValueError(
            "layout='sparse' cannot be sharded over devices (GSPMD would partition "
            "its gather/segment_sum without knowing which rows a device holds); "
            "use layout='dense' with devices, or devices=None for the sparse layout"
        )
    num_rows, num_categories = folded.matrix.shape
    per_device = num_rows * num_categories * jnp.dtype(dtype).itemsize / len(devices)
    if per_device > DENSE_MAX_BYTES:
        raise ValueError(
            f"the dense counts would take {per_device / 2**30:.1f} GiB per device "
            f"({num_rows} distinct rows x {num_categories} categories over "
            f"{len(devices)} devices); use more devices, or stream the rows with "
            f"a data.chunks.ChunkedRows source"
        )
    return "dense"


# ----------------------------------------------------------------------------
# Jitted core
# ----------------------------------------------------------------------------


def _safe_log(x):
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), LOG_ZERO)


def _log_kernel(counts, log_probs, num_rows: int):
    """sum_c x_ic log p_kc, shape (n, k)."""
    if isinstance(counts, _DenseCounts):
        return counts.matrix @ log_probs.T
    contributions = counts.values[:, None] * log_probs.T[counts.cols]
    return jax.ops.segment_sum(
        contributions, counts.rows, num_segments=num_rows, indices_are_sorted=True
    )


def _category_totals(counts, weighted_resp, num_categories: int):
    """S = (v gamma).T @ X, shape (k, c)."""
    if isinstance(counts, _DenseCounts):
        return weighted_resp.T @ counts.matrix
    contributions = counts.values[:, None] * weighted_resp[counts.rows]
    return jax.ops.segment_sum(
        contributions, counts.cols, num_segments=num_categories
    ).T


def _responsibilities(params, counts, group_codes, num_rows: int, *,
                      grouped: bool, component_mask=None):
    """Responsibilities gamma (n, k) and log p(x_i) without the coefficient (n,).

    ``component_mask`` (k,) marks the real components of a padded sweep; the
    others get a log joint of exactly -inf, hence gamma_ik = exp(-inf) = 0.
    """
    log_weights = _safe_log(params.weights)
    if grouped:
        log_weights = log_weights[group_codes]
    joint = _log_kernel(counts, _safe_log(params.probs), num_rows) + log_weights
    if component_mask is not None:
        joint = jnp.where(component_mask, joint, -jnp.inf)
    log_norm = jax.nn.logsumexp(joint, axis=-1)
    # Every component impossible (below the LOG_ZERO stand-in): log p = -inf.
    log_norm = jnp.where(log_norm < 0.5 * LOG_ZERO, -jnp.inf, log_norm)
    return jnp.exp(joint - log_norm[:, None]), log_norm


def _objective(params, total_log_likelihood, prior, num_rows, mean_log_coefficient,
               map_estimate: bool, component_mask=None):
    """Mean per-basket log-likelihood with coefficient, plus log prior / N (MAP)."""
    total = total_log_likelihood
    if map_estimate:
        if component_mask is None:
            total = total + log_prior(params, prior)
        else:
            total = total + _masked_log_prior(params, prior, component_mask)
    return total / num_rows + mean_log_coefficient


def _masked_log_prior(params, prior, component_mask):
    """``log_prior`` of the real components only (the K of a padded sweep).

    log Dirichlet(w_1..K | a) + sum_{k <= K} log Dirichlet(p_k | b): the masked
    weights are exactly 0, so their (a - 1) log w terms would be -inf.
    """
    concentration = jnp.broadcast_to(
        prior.weight_concentration, params.weights.shape
    )
    weight_terms = jnp.where(
        component_mask,
        xlogy(concentration - 1.0, params.weights) - jax_gammaln(concentration),
        0.0,
    )
    log_density = jnp.sum(weight_terms) + jax_gammaln(
        jnp.sum(jnp.where(component_mask, concentration, 0.0))
    )
    probs_concentration = jnp.broadcast_to(
        prior.probs_concentration, params.probs.shape
    )
    probs_terms = (
        jnp.sum(xlogy(probs_concentration - 1.0, params.probs), axis=-1)
        + jax_gammaln(jnp.sum(probs_concentration, axis=-1))
        - jnp.sum(jax_gammaln(probs_concentration), axis=-1)
    )
    return log_density + jnp.sum(jnp.where(component_mask, probs_terms, 0.0))


def _e_step(params, data: _Data, prior, grouped: bool, map_estimate: bool,
            component_mask=None):
    """Responsibilities (n, k) and the objective at ``params``."""
    resp, log_norm = _responsibilities(
        params, data.counts, data.group_codes, data.row_weights.shape[0],
        grouped=grouped, component_mask=component_mask,
    )
    objective = _objective(
        params, data.row_weights @ log_norm, prior, data.num_rows,
        data.mean_log_coefficient, map_estimate, component_mask,
    )
    return resp, objective


def _sufficient_statistics(counts, resp, row_weights, group_codes, *,
                           grouped: bool, num_groups: int, num_categories: int):
    """N_k = sum_i v_i gamma_ik (per group if grouped) and S = (v gamma).T @ X."""
    weighted = resp * row_weights[:, None]
    totals = _category_totals(counts, weighted, num_categories)
    if grouped:
        counts_k = jax.ops.segment_sum(weighted, group_codes, num_groups)
    else:
        counts_k = weighted.sum(axis=0)
    return counts_k, totals


def _update(params, counts_k, totals, prior, component_mask=None):
    """The (MAP) M-step from the summed statistics N_k and S_kc (module docstring).

    Masked components (a padded sweep) keep weight exactly 0 and their probs.
    """
    totals = totals + (prior.probs_concentration - 1.0)
    row_sums = totals.sum(axis=1, keepdims=True)
    probs = jnp.where(
        row_sums > 0, totals / jnp.where(row_sums > 0, row_sums, 1.0), params.probs
    )
    counts_k = counts_k + (prior.weight_concentration - 1.0)
    if component_mask is not None:
        probs = jnp.where(component_mask[:, None], probs, params.probs)
        counts_k = jnp.where(component_mask, counts_k, 0.0)
    norm = counts_k.sum(axis=-1, keepdims=True)
    weights = jnp.where(
        norm > 0, counts_k / jnp.where(norm > 0, norm, 1.0), params.weights
    )
    return MultinomialMixtureParams(weights, probs)


def _m_step(params, resp, data: _Data, prior, grouped: bool, num_groups: int,
            component_mask=None):
    """Closed-form (MAP) update of weights and probs from responsibilities."""
    counts_k, totals = _sufficient_statistics(
        data.counts, resp, data.row_weights, data.group_codes, grouped=grouped,
        num_groups=num_groups, num_categories=params.probs.shape[1],
    )
    return _update(params, counts_k, totals, prior, component_mask)


def _run_stage(init, data, prior, tol, rtol, *, grouped, num_groups, map_estimate,
               max_iters, component_mask=None):
    def step_fn(params):
        resp, objective = _e_step(
            params, data, prior, grouped, map_estimate, component_mask
        )
        new_params = _m_step(
            params, resp, data, prior, grouped, num_groups, component_mask
        )
        return new_params, objective

    params, num_iters, converged, trace = run_em(
        step_fn, init, max_iters=max_iters, tol=tol, rtol=rtol
    )
    # sklearn's "final E-step": report the objective at the returned params.
    _, objective = _e_step(params, data, prior, grouped, map_estimate, component_mask)
    return EMResult(params, objective, num_iters, converged, trace)


@partial(
    jax.jit,
    static_argnames=(
        "num_components", "num_groups", "max_iters", "map_estimate", "global_stage"
    ),
)
def _fit(data, init_params, prior, tol, rtol, *, num_components, num_groups,
         max_iters, map_estimate, global_stage):
    """All restarts of one fit (init_params has a leading restart axis)."""
    prior = MultinomialMixturePrior(
        prior.weight_concentration, prior.probs_concentration
    )
    stage = partial(_run_stage, data=data, tol=tol, rtol=rtol, max_iters=max_iters,
                    map_estimate=map_estimate)

    def fit_one(init):
        if global_stage:
            result = stage(init, prior=prior, grouped=False, num_groups=1)
            if num_groups is None:
                return result
            init = result.params
            init = init._replace(
                weights=jnp.broadcast_to(init.weights, (num_groups, num_components))
            )
        group_prior = prior._replace(
            weight_concentration=prior.weight_concentration[None, :]
        )
        return stage(init, prior=group_prior, grouped=True, num_groups=num_groups)

    return jax.vmap(fit_one)(init_params)


@partial(jax.jit, static_argnames=("max_iters", "map_estimate"))
def _fit_sweep(data, init_params, component_mask, prior, tol, rtol, *, max_iters,
               map_estimate):
    """Every (K, restart) of a sweep under one vmap, components padded to K_max.

    init_params: weights (f, K_max), probs (f, K_max, c); component_mask
    (f, K_max) is True on the K real components of each of the f fits.
    """
    prior = MultinomialMixturePrior(
        prior.weight_concentration, prior.probs_concentration
    )

    def fit_one(init, mask):
        return _run_stage(
            init, data, prior, tol, rtol, grouped=False, num_groups=1,
            map_estimate=map_estimate, max_iters=max_iters, component_mask=mask,
        )

    return jax.vmap(fit_one)(init_params, component_mask)


def _best_restart(results: EMResult) -> EMResult:
    """The restart with the highest finite objective (the first one if none is)."""
    objectives = np.asarray(results.log_likelihood)
    index = int(np.argmax(np.where(np.isfinite(objectives), objectives, -np.inf)))
    return jax.tree_util.tree_map(lambda leaf: leaf[index], results)


# ----------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------


def _resolve_dtype(dtype, max_row_total: float):
    x64 = bool(jax.config.jax_enable_x64)
    if dtype is None:
        dtype = jnp.float64 if x64 else jnp.float32
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if dtype == jnp.float64 and not x64:
        raise ValueError(
            "dtype=float64 needs JAX's 64-bit mode; call "
            "jax.config.update('jax_enable_x64', True) at start-up"
        )
    if dtype == jnp.float32 and max_row_total > FLOAT32_MAX_EXACT:
        if x64:
            warn(
                f"a basket holds {max_row_total:.0f} items, beyond float32's exact "
                f"integer range (2**24): fitting in float64 instead",
            )
            return jnp.dtype(jnp.float64)
        warn(
            f"a basket holds {max_row_total:.0f} items, beyond float32's exact "
            f"integer range (2**24): counts and their log-factorials lose precision; "
            f"enable float64 with jax.config.update('jax_enable_x64', True)",
        )
    return dtype


def _check_prior(prior, num_components, num_categories, dtype):
    """Concentrations broadcast to (k,) and (k, c); MAP-EM needs them >= 1."""
    if prior is None:
        prior = MultinomialMixturePrior()
    if not isinstance(prior, MultinomialMixturePrior):
        raise TypeError(
            f"prior must be a MultinomialMixturePrior or None, got {type(prior)}"
        )
    shapes = {
        "weight_concentration": (num_components,),
        "probs_concentration": (num_components, num_categories),
    }
    arrays = {}
    for name, shape in shapes.items():
        value = np.asarray(getattr(prior, name), dtype=np.float64)
        try:
            value = np.broadcast_to(value, shape)
        except ValueError:
            raise ValueError(
                f"prior.{name} must broadcast to {shape}, got shape {value.shape}"
            ) from None
        if not np.all(np.isfinite(value)) or np.any(value < 1.0):
            raise ValueError(
                f"prior.{name} must be >= 1 for MAP-EM, got minimum {value.min()!r}: "
                f"below 1 the Dirichlet density is unbounded at the simplex boundary "
                f"and has no mode. Use 1 for maximum likelihood, or 1 + pseudocount."
            )
        arrays[name] = jnp.asarray(value, dtype)
    return MultinomialMixturePrior(**arrays)


def _random_init(rng_key, num_restarts, num_components, num_categories, dtype):
    """The tutorial's start for each restart: uniform weights, p_k ~ Dirichlet(2C 1_C).

    Drawn by NumPy from a seed made of the key's bits: reproducible from
    ``rng_key`` like any JAX draw, and without a JAX Gamma sampler to compile
    for every new K (about a second each, most of a model-selection sweep).
    """
    if jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        rng_key = jax.random.key_data(rng_key)
    rng = np.random.default_rng(np.asarray(rng_key).ravel().tolist())
    concentration = np.full(num_categories, 2.0 * num_categories)
    probs = rng.dirichlet(concentration, size=(num_restarts, num_components))
    weights = np.full((num_restarts, num_components), 1.0 / num_components)
    return MultinomialMixtureParams(
        jnp.asarray(weights, dtype), jnp.asarray(probs, dtype)
    )


def _check_init(init, num_components, num_categories, num_groups, dtype):
    if isinstance(init, str):
        if init != "random":
            raise ValueError(
                f"init must be 'random' or a MultinomialMixtureParams, got {init!r}"
            )
        return None
    if not isinstance(init, MultinomialMixtureParams):
        raise TypeError(
            f"init must be 'random' or a MultinomialMixtureParams, got {type(init)}"
        )
    weights = np.asarray(init.weights, dtype=np.float64)
    probs = np.asarray(init.probs, dtype=np.float64)
    if probs.shape != (num_components, num_categories):
        raise ValueError(
            f"init.probs must have shape ({num_components}, {num_categories}), got "
            f"{probs.shape}"
        )
    allowed = [(num_components,)]
    if num_groups is not None:
        allowed.append((num_groups, num_components))
    if weights.shape not in allowed:
        raise ValueError(
            f"init.weights must have shape in {allowed}, got {weights.shape}"
        )
    for name, value in (("weights", weights), ("probs", probs)):
        if np.any(value < 0) or not np.allclose(value.sum(-1), 1.0, atol=1e-6):
            raise ValueError(f"init.{name} rows must lie on the simplex")
    return MultinomialMixtureParams(
        jnp.asarray(weights, dtype)[None], jnp.asarray(probs, dtype)[None]
    )


def _warn_result(result: EMResult, max_iters: int, tol, rtol,
                 prefix: str = "") -> None:
    """ConvergenceWarning for a non-finite objective or a run cut at max_iters."""
    if not bool(jnp.isfinite(result.log_likelihood)):
        warn(
            f"{prefix}every restart ended with a non-finite objective (a basket "
            f"impossible under every component); check init or use a prior",
            ConvergenceWarning,
        )
    elif max_iters > 0 and not bool(result.converged):
        warn(
            f"{prefix}EM did not converge in {max_iters} iterations (tol={tol}, "
            f"rtol={rtol}); increase max_iters or tol",
            ConvergenceWarning,
        )


def _check_options(num_restarts, max_iters, tol, rtol):
    num_restarts = check_int("num_restarts", num_restarts, minimum=1)
    max_iters = check_int("max_iters", max_iters, minimum=0)
    check_nonnegative("tol", tol)
    check_nonnegative("rtol", rtol)
    return num_restarts, max_iters


def fit_multinomial_mixture(
    counts,
    num_components: int,
    *,
    groups=None,
    init="random",
    num_restarts: int = 1,
    max_iters: int = 1000,
    tol: float = 1e-6,
    rtol: float = 0.0,
    prior: MultinomialMixturePrior | None = None,
    rng_key=None,
    fold: bool = True,
    layout: str = "auto",
    dtype=None,
    devices=None,
) -> EMResult:
    """Fit a mixture of multinomials by (MAP-)EM; see the module docstring.

    Args:
      counts: (n, c) non-negative integer counts: NumPy/JAX dense, scipy.sparse,
        or ``jax.experimental.sparse.BCOO``. All-zero rows are excluded (with a
        DataWarning); ``models.multinomial_mixture.assignments`` labels them
        ``EMPTY_LABEL``. Or a ``data.chunks.ChunkedRows`` of dense count chunks
        for out-of-core EM (``inference.em.multinomial_streaming``; global
        model, rows not folded, layout dense).
      num_components: K.
      groups: optional (n,) group labels of any type (e.g. household ids). Fits
        the individualized model, with one weight vector per group; rows of the
        returned (g, K) weights follow ``encode_groups(groups)[1]``, i.e.
        ``np.unique(groups)``. Each restart first fits the global model, then
        starts the grouped EM from it (Cadez et al. 2001).
      init: "random" (uniform weights, probs_k ~ Dirichlet(2C 1_C), as the
        tutorial) or a MultinomialMixtureParams to start from (then
        num_restarts must be 1); with groups, (K,) weights start the global stage
        and (g, K) weights start the grouped stage directly.
      num_restarts: independent random starts, run under vmap; the one with the
        highest finite final objective is returned.
      max_iters: bound on EM iterations per stage (sizes ``trace``).
      tol, rtol: stopping rule on the objective (nats per basket), see above.
      prior: MultinomialMixturePrior for MAP-EM (concentrations >= 1); None for
        maximum likelihood.
      rng_key: JAX PRNG key for the random initialisation.
      fold: fold identical rows into weighted rows (exact; disable to check it).
      layout: "auto" (``choose_layout``), "dense" or "sparse".
      dtype: float32 or float64; default float64 when JAX's x64 mode is on.
      devices: None (default placement) or an int m (the first m of
        ``jax.devices()``) or a list of devices: data-parallel EM with the rows
        sharded over them and the parameters replicated (module docstring,
        "Devices"); dense layout only ("auto" picks it).

    Returns:
      EMResult: params (MultinomialMixtureParams), log_likelihood (mean
      per-basket log-likelihood with coefficient, plus log prior / N for MAP),
      num_iters, converged and trace of the best restart (grouped: of the grouped
      stage).
    """
    num_components = check_int("num_components", num_components, minimum=1)
    num_restarts, max_iters = _check_options(num_restarts, max_iters, tol, rtol)
    _check_layout(layout)
    devices = check_devices(devices)
    if isinstance(counts, ChunkedRows):
        # The streaming module builds on this one's E- and M-step pieces, so it
        # is imported here rather than at the top (a circular import otherwise).
        from latentmix.inference.em.multinomial_streaming import fit_chunked

        if groups is not None:
            raise ValueError(
                "groups are not supported with chunked counts (a ChunkedRows "
                "source); fit the global model out of core, or pass the counts "
                "in memory to fit the grouped model"
            )
        if layout == "sparse":
            raise ValueError(
                "chunked counts are fitted chunk by chunk in the dense layout; "
                "use layout='dense' or 'auto' with a ChunkedRows source"
            )
        result = fit_chunked(
            counts, num_components, init=init, num_restarts=num_restarts,
            max_iters=max_iters, tol=tol, rtol=rtol, prior=prior, rng_key=rng_key,
            dtype=dtype, devices=devices,
        )
        _warn_result(result, max_iters, tol, rtol)
        return result

    prepared = _prepare_counts(counts, groups, fold)
    num_categories, num_groups = prepared.num_categories, prepared.num_groups
    dtype = _resolve_dtype(dtype, prepared.max_row_total)
    prior_arrays = _check_prior(prior, num_components, num_categories, dtype)
    map_estimate = prior is not None
    _warn_unobserved(prepared.column_totals, prior_arrays)
    folded = prepared.folded
    _check_distinct(num_components, folded.num_distinct)
    init_params = _check_init(init, num_components, num_categories, num_groups, dtype)
    if init_params is not None and num_restarts != 1:
        raise ValueError(
            "an explicit init is deterministic: use num_restarts=1 with it"
        )
    if init_params is None and rng_key is None:
        raise ValueError("rng_key is required with init='random'")
    layout = _resolve_layout(layout, folded, devices, dtype)

    data = _device_data(
        folded, layout, prepared.num_rows,
        prepared.log_coefficient / prepared.num_rows, dtype, devices,
    )
    if init_params is None:
        init_params = _random_init(
            rng_key, num_restarts, num_components, num_categories, dtype
        )
    tol_array, rtol_array = jnp.asarray(tol, dtype), jnp.asarray(rtol, dtype)
    if devices is not None:
        init_params, prior_arrays, tol_array, rtol_array = replicate(
            (init_params, prior_arrays, tol_array, rtol_array), devices
        )
    # Stage 1 (global EM) runs unless the start already has per-group weights.
    global_stage = init_params.weights.ndim == 2
    results = _fit(
        data,
        init_params,
        prior_arrays,
        tol_array,
        rtol_array,
        num_components=num_components,
        num_groups=num_groups,
        max_iters=max_iters,
        map_estimate=map_estimate,
        global_stage=global_stage,
    )
    result = _best_restart(results)
    _warn_result(result, max_iters, tol, rtol)
    return result


def _padded_init(init: MultinomialMixtureParams, max_components: int):
    """Restart-stacked params padded to K_max: weight 0, probs uniform (unused)."""
    num_restarts, num_components, num_categories = init.probs.shape
    extra = max_components - num_components
    dtype = init.probs.dtype
    weights = jnp.concatenate(
        [init.weights, jnp.zeros((num_restarts, extra), dtype)], axis=1
    )
    # Any simplex row would do: a masked component's probs never enter a result.
    uniform = jnp.full((num_restarts, extra, num_categories), 1.0 / num_categories,
                       dtype)
    return MultinomialMixtureParams(
        weights, jnp.concatenate([init.probs, uniform], axis=1)
    )


def fit_multinomial_mixture_sweep(
    counts,
    num_components_list,
    *,
    num_restarts: int = 1,
    max_iters: int = 1000,
    tol: float = 1e-6,
    rtol: float = 0.0,
    prior: MultinomialMixturePrior | None = None,
    rng_key,
    fold: bool = True,
    layout: str = "auto",
    dtype=None,
    devices=None,
) -> list[EMResult]:
    """Fit the global mixture for every K of a list in ONE compiled program.

    Components are padded to K_max = max(num_components_list) and masked (module
    docstring, "K sweeps in one program"); every (K, restart) pair runs under one
    vmap of the EM while loop. The batched loop runs until the slowest pair stops,
    and a stopped pair is carried unchanged, so each K's result is its separate
    fit's, but the cost per iteration is that of len(list) x num_restarts fits
    with K_max components: one compilation instead of one per K, at the price of
    more arithmetic (cheap for folded data or on accelerators).

    Random starts: ``rng_key`` is split into one key per entry,
    ``keys = jax.random.split(rng_key, len(num_components_list))``, and entry i
    starts exactly where ``fit_multinomial_mixture(counts, K_i,
    num_restarts=num_restarts, rng_key=keys[i])`` would (the key derivation of
    ``inference.selection.select_num_components_multinomial``), so each result
    equals that separate fit up to floating-point summation order.

    Args:
      counts: (n, c) counts as in ``fit_multinomial_mixture`` (in memory).
      num_components_list: the K values, distinct integers >= 1, in any order.
      num_restarts: random restarts per K; the best finite one is kept.
      max_iters, tol, rtol, prior, fold, layout, dtype, devices: as in
        ``fit_multinomial_mixture``; the prior's concentrations must suit every
        K (scalars, or per-category probs concentrations).
      rng_key: JAX PRNG key (required), split as above.

    Returns:
      One EMResult per entry of ``num_components_list`` (same order), with the
      masked components trimmed: weights (K,), probs (K, c).
    """
    num_components_list = [
        check_int("num_components_list entries", k, minimum=1)
        for k in num_components_list
    ]
    if not num_components_list or len(set(num_components_list)) != len(
        num_components_list
    ):
        raise ValueError(
            f"num_components_list must hold distinct integers >= 1, got "
            f"{num_components_list}"
        )
    num_restarts, max_iters = _check_options(num_restarts, max_iters, tol, rtol)
    _check_layout(layout)
    devices = check_devices(devices)
    if isinstance(counts, ChunkedRows):
        raise ValueError(
            "the one-program sweep needs the counts in memory; fit chunked counts "
            "with fit_multinomial_mixture one K at a time"
        )
    if rng_key is None:
        raise ValueError("rng_key is required: the sweep starts from random inits")
    max_components = max(num_components_list)

    prepared = _prepare_counts(counts, None, fold)
    num_categories = prepared.num_categories
    dtype = _resolve_dtype(dtype, prepared.max_row_total)
    for num_components in num_components_list:
        # Each K must accept the prior as its separate fit would.
        _check_prior(prior, num_components, num_categories, dtype)
    prior_arrays = _check_prior(prior, max_components, num_categories, dtype)
    _warn_unobserved(prepared.column_totals, prior_arrays)
    _check_distinct(max_components, prepared.folded.num_distinct)
    layout = _resolve_layout(layout, prepared.folded, devices, dtype)
    data = _device_data(
        prepared.folded, layout, prepared.num_rows,
        prepared.log_coefficient / prepared.num_rows, dtype, devices,
    )

    keys = jax.random.split(rng_key, len(num_components_list))
    inits = [
        _padded_init(
            _random_init(key, num_restarts, k, num_categories, dtype), max_components
        )
        for key, k in zip(keys, num_components_list, strict=True)
    ]
    init_params = jax.tree_util.tree_map(
        lambda *leaves: jnp.concatenate(leaves), *inits
    )
    component_mask = jnp.asarray(
        np.repeat(
            np.arange(max_components)[None, :]
            < np.asarray(num_components_list)[:, None],
            num_restarts,
            axis=0,
        )
    )
    tol_array, rtol_array = jnp.asarray(tol, dtype), jnp.asarray(rtol, dtype)
    if devices is not None:
        init_params, component_mask, prior_arrays, tol_array, rtol_array = replicate(
            (init_params, component_mask, prior_arrays, tol_array, rtol_array),
            devices,
        )
    results = _fit_sweep(
        data, init_params, component_mask, prior_arrays, tol_array, rtol_array,
        max_iters=max_iters, map_estimate=prior is not None,
    )

    # (K, restart) pairs were flattened K-major: regroup them per K.
    results = jax.tree_util.tree_map(
        lambda leaf: leaf.reshape(len(num_components_list), num_restarts,
                                  *leaf.shape[1:]),
        results,
    )
    fits = []
    for index, num_components in enumerate(num_components_list):
        best = _best_restart(
            jax.tree_util.tree_map(lambda leaf, i=index: leaf[i], results)
        )
        best = best._replace(
            params=MultinomialMixtureParams(
                best.params.weights[:num_components],
                best.params.probs[:num_components],
            )
        )
        _warn_result(best, max_iters, tol, rtol,
                     prefix=f"K={num_components}: ")
        fits.append(best)
    return fits
