"""EM for the Gaussian mixture: maximum likelihood or MAP, four covariance types.

E-step (article 2, step 3; PRML eq. 9.23): responsibilities
    gamma_ic = weights_c N(x_i | mu_c, S_c) / sum_j weights_j N(x_i | mu_j, S_j),
computed in log space (``models.gaussian_mixture.responsibilities``).

M-step (article 3; PRML eq. 9.24-9.27) with N_c = sum_i gamma_ic, xbar_c the
gamma-weighted mean and W_c = sum_i gamma_ic (x_i - mu_c)(x_i - mu_c)^T the
weighted scatter about the *new* mean (two passes, never E[x x^T] - mu mu^T):

               max. likelihood     MAP (prior of models.gaussian_mixture)
    weights_c  N_c / N             (N_c + alpha_c - 1) / (N + sum alpha - k)
    mu_c       xbar_c              (N_c xbar_c + kappa0 m0) / (N_c + kappa0)
    "full"     W_c / N_c           (Psi + W_c + kappa0 D_c) / (N_c + nu + d + 2)
    "tied"     sum_c W_c / N       (Psi + sum_c [W_c + kappa0 D_c])
                                   / (N + k + nu + d + 1)
    "diag"     W_cjj / N_c         (Psi_jj + W_cjj + kappa0 D_cjj) / (N_c + nu + 3)
    "sph."     tr W_c / (d N_c)    (tr Psi + tr[W_c + kappa0 D_c])
                                   / (d [N_c + 1 + nu] + 2)

with D_c = (mu_c - m0)(mu_c - m0)^T. Each MAP line is the zero of the gradient of
E_q[log p(x, t | theta)] + log p(theta) (the denominators collect the powers of
|S| from the likelihood, the mean prior and the inverse-Wishart / inverse-gamma
prior). ``reg_covar`` is then added to every variance, as in scikit-learn (pass
``reg_covar=0`` with a prior to land exactly on the posterior mode; the prior's
scale already keeps the covariances positive-definite). Like scikit-learn, N_c
gets ``10 * eps`` so an empty component never divides by zero.

Objective and stopping rule. Without a prior the objective is the mean per-row
log-likelihood (1/n) sum_i log p(x_i | theta), as scikit-learn's ``lower_bound_``;
with a prior it is the mean per-row log posterior (1/n)[sum_i log p(x_i | theta) +
log p(theta)] (the NumPyro model's log joint divided by n). EM never decreases
either. ``trace[t]`` is the objective at the parameters entering iteration t + 1;
the loop stops after iteration t >= 2 once |trace[t] - trace[t - 1]| < tol
(scikit-learn's rule with its defaults tol = 1e-3, max_iters = 100), when the
objective turns non-finite (that restart is then failed, never converged) or at
``max_iters`` (``inference.em.driver.run_em``).

Numerics: the data are centred inside the jitted core (the log-likelihood is
translation invariant, so nothing else changes), which keeps float32 accurate on
data far from the origin; sufficient statistics use HIGHEST matmul precision (no
TF32 on GPUs); a component whose N_c falls below ``EMPTY_COMPONENT_COUNT`` is
reseeded at the worst-explained row with the data covariance (one component per
iteration), which is the one
place where the trace may decrease (reported and warned about).
"""

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from data.validation import (
    DataWarning,
    check_int,
    check_matrix,
    check_nonnegative,
)
from inference.em.driver import ConvergenceWarning, EMResult, run_em
from models.gaussian_mixture import (
    GMMParams,
    GMMPrior,
    _variances,
    check_covariance_type,
    check_params,
    check_prior,
    component_log_prob,
    log_prior,
    map_components,
)

__all__ = [
    "EMPTY_COMPONENT_COUNT",
    "GMMPrior",
    "GMMRestarts",
    "INIT_METHODS",
    "e_step",
    "elbo",
    "fit_gaussian_mixture",
    "fit_gaussian_mixture_restarts",
    "m_step",
    "objective",
]

INIT_METHODS = ("kmeans++", "random_from_data")

# A component with less than a thousandth of a row's worth of responsibility is
# dead: scikit-learn would keep it (weight ~0, garbage covariance); we reseed it.
EMPTY_COMPONENT_COUNT = 1e-3

# Lloyd iterations after k-means++ seeding: enough to move seeds to cluster
# centres, a small cost next to EM.
_LLOYD_STEPS = 10

_HIGHEST = jax.lax.Precision.HIGHEST


class GMMRestarts(NamedTuple):
    """All restarts of one ``fit_gaussian_mixture_restarts`` call.

    results: EMResult whose every field has a leading (num_restarts,) axis.
    num_reseeds: (num_restarts,) how many times a component was reseeded.
    failed: (num_restarts,) True where the objective turned non-finite.
    best_index: index of the best finite restart (highest objective), -1 if all
        failed.
    """

    results: EMResult
    num_reseeds: np.ndarray
    failed: np.ndarray
    best_index: int


class _State(NamedTuple):
    params: GMMParams
    num_reseeds: jax.Array


# ------------------------------------------------------------------- E and M steps


def e_step(params: GMMParams, x, covariance_type: str = "full"):
    """Log responsibilities (n, k) and log p(x_i | theta) per row (n,)."""
    weighted = jnp.log(params.weights) + component_log_prob(params, x, covariance_type)
    log_norm = jax.scipy.special.logsumexp(weighted, axis=-1)
    return weighted - log_norm[:, None], log_norm


def objective(params: GMMParams, x, covariance_type: str = "full", prior=None):
    """EM's objective: mean log-likelihood, or mean log posterior with a prior."""
    value = jnp.mean(e_step(params, x, covariance_type)[1])
    if prior is not None:
        value = value + log_prior(params, prior, covariance_type) / x.shape[0]
    return value


def elbo(params: GMMParams, x, q, covariance_type: str = "full"):
    """Evidence lower bound L(theta, q) for per-row assignment distributions q.

    L = sum_i sum_c q_ic [log weights_c + log N(x_i | mu_c, S_c) - log q_ic]
    (article 2, step 1); log p(x | theta) - L = sum_i KL(q_i || p(t_i | x_i)).
    """
    weighted = jnp.log(params.weights) + component_log_prob(params, x, covariance_type)
    return jnp.sum(q * weighted) - jnp.sum(jax.scipy.special.xlogy(q, q))


def _scatter(x, resp_t, means, covariance_type: str):
    """Weighted scatter about each mean: (k, d, d) for full/tied, (k, d) otherwise.

    Two-pass: the deviations x_i - mu_c are formed first, so no cancellation
    between E[x x^T] and mu mu^T can occur.
    """
    num_rows, num_features = x.shape
    if covariance_type in ("full", "tied"):

        def one(args):
            # W_c = Y^T Y with Y = sqrt(gamma_c) (x - mu_c): one (n, d) array per
            # component instead of two (deviations and weighted deviations),
            # which halves the memory traffic that bounds this step.
            resp_c, mean = args
            scaled = jnp.sqrt(resp_c)[:, None] * (x - mean)
            return jnp.matmul(scaled.T, scaled, precision=_HIGHEST)

        return map_components(jax.vmap(one), (resp_t, means), num_rows * num_features)

    def batch(args):
        # sum_i gamma_ic (x_ij - mu_cj)^2 as one fused reduction over rows, which
        # streams through x once per batch instead of storing (x - mu_c)^2.
        resp_b, means_b = args
        return jnp.sum(resp_b[:, :, None] * (x - means_b[:, None, :]) ** 2, axis=1)

    return map_components(batch, (resp_t, means), num_rows * num_features)


def m_step(
    x, resp, covariance_type: str = "full", *, reg_covar=0.0, prior=None
) -> GMMParams:
    """Closed-form M-step from responsibilities (n, k) (module docstring table)."""
    check_covariance_type(covariance_type)
    dtype = x.dtype
    num_rows, num_features = x.shape
    num_components = resp.shape[1]
    eye = jnp.eye(num_features, dtype=dtype)
    counts = jnp.sum(resp, axis=0) + 10 * jnp.finfo(dtype).eps
    sums = jnp.matmul(resp.T, x, precision=_HIGHEST)
    if prior is None:
        weights = counts / jnp.sum(counts)
        means = sums / counts[:, None]
    else:
        alpha = jnp.broadcast_to(prior.weight_concentration, (num_components,))
        pseudo_counts = counts + alpha.astype(dtype) - 1.0
        weights = pseudo_counts / jnp.sum(pseudo_counts)
        kappa0 = prior.mean_precision
        means = (sums + kappa0 * prior.mean_prior) / (counts + kappa0)[:, None]
    scatter = _scatter(x, resp.T, means, covariance_type)
    if prior is not None:
        deviation = means - prior.mean_prior
        nu, psi = prior.dof, prior.scale
    if covariance_type == "full":
        if prior is None:
            covariances = scatter / counts[:, None, None]
        else:
            outer = kappa0 * deviation[:, :, None] * deviation[:, None, :]
            covariances = (psi + scatter + outer) / (
                counts + nu + num_features + 2.0
            )[:, None, None]
        covariances = covariances + reg_covar * eye
    elif covariance_type == "tied":
        if prior is None:
            shared = jnp.sum(scatter, axis=0) / jnp.sum(counts)
        else:
            outer = kappa0 * jnp.matmul(deviation.T, deviation, precision=_HIGHEST)
            shared = (psi + jnp.sum(scatter, axis=0) + outer) / (
                jnp.sum(counts) + num_components + nu + num_features + 1.0
            )
        shared = shared + reg_covar * eye
        covariances = jnp.broadcast_to(
            shared, (num_components, num_features, num_features)
        )
    elif covariance_type == "diag":
        if prior is None:
            variances = scatter / counts[:, None]
        else:
            variances = (jnp.diagonal(psi) + scatter + kappa0 * deviation**2) / (
                counts + nu + 3.0
            )[:, None]
        covariances = (variances + reg_covar)[:, :, None] * eye
    else:
        total = jnp.sum(scatter, axis=1)
        if prior is None:
            variance = total / (num_features * counts)
        else:
            variance = (
                jnp.trace(psi) + total + kappa0 * jnp.sum(deviation**2, axis=1)
            ) / (num_features * (counts + 1.0 + nu) + 2.0)
        covariances = (variance + reg_covar)[:, None, None] * eye
    return GMMParams(weights, means, covariances)


def _reseed_covariance(x, covariance_type: str, reg_covar):
    """Covariance given to a reseeded component: the data's, in the type's form."""
    num_rows, num_features = x.shape
    data_covariance = jnp.matmul(x.T, x, precision=_HIGHEST) / num_rows
    eye = jnp.eye(num_features, dtype=x.dtype)
    if covariance_type == "diag":
        data_covariance = jnp.diagonal(data_covariance) * eye
    elif covariance_type == "spherical":
        data_covariance = jnp.mean(jnp.diagonal(data_covariance)) * eye
    # A constant data set has zero covariance; the identity keeps the factor finite.
    floor = jnp.where(jnp.trace(data_covariance) > 0, reg_covar, 1.0)
    return data_covariance + floor * eye


def _reseed_empty(params, counts, log_norm, x, reseed_covariance, covariance_type):
    """Move the first component with N_c < EMPTY_COMPONENT_COUNT to the worst row.

    It gets the row of lowest log p(x_i | theta) as mean, the data covariance (the
    shared one is kept for "tied") and weight 1 / n. One component per iteration:
    the next empty one then goes to the worst row *after* this move, and a single
    argmin costs O(n) where sorting for k rows would dominate the iteration.
    """
    num_rows = x.shape[0]
    empty = counts < EMPTY_COMPONENT_COUNT
    chosen = (jnp.arange(counts.shape[0]) == jnp.argmax(empty)) & empty
    worst_row = x[jnp.argmin(log_norm)]
    means = jnp.where(chosen[:, None], worst_row, params.means)
    covariances = params.covariances
    if covariance_type != "tied":
        covariances = jnp.where(chosen[:, None, None], reseed_covariance, covariances)
    weights = jnp.where(chosen, 1.0 / num_rows, params.weights)
    weights = weights / jnp.sum(weights)
    return GMMParams(weights, means, covariances), jnp.sum(chosen, dtype=jnp.int32)


def _em_step(state: _State, x, covariance_type, reg_covar, prior, reseed_covariance):
    """One E-step (objective at ``state.params``) and one M-step (plus reseeding)."""
    params = state.params
    log_resp, log_norm = e_step(params, x, covariance_type)
    value = jnp.mean(log_norm)
    if prior is not None:
        value = value + log_prior(params, prior, covariance_type) / x.shape[0]
    resp = jnp.exp(log_resp)
    new_params = m_step(x, resp, covariance_type, reg_covar=reg_covar, prior=prior)
    new_params, num_empty = _reseed_empty(
        new_params,
        jnp.sum(resp, axis=0),
        log_norm,
        x,
        reseed_covariance,
        covariance_type,
    )
    return _State(new_params, state.num_reseeds + num_empty), value


# ---------------------------------------------------------------- initialisation


def _squared_distances(x, centres):
    """||x_i - c_j||^2 (n, k) by expansion; only used to rank centres (argmin)."""
    cross = jnp.matmul(x, centres.T, precision=_HIGHEST)
    return (
        jnp.sum(x * x, axis=1)[:, None] - 2.0 * cross + jnp.sum(centres**2, axis=1)
    )


def _kmeans_plus_plus(rng_key, x, num_components: int):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): D^2-weighted draws."""
    num_rows = x.shape[0]
    key_first, key_rest = jax.random.split(rng_key)
    first = x[jax.random.randint(key_first, (), 0, num_rows)]
    centres = jnp.zeros((num_components, x.shape[1]), x.dtype).at[0].set(first)
    min_sq = jnp.sum((x - first) ** 2, axis=1)

    def add_centre(j, carry):
        centres, min_sq = carry
        logits = jnp.where(min_sq > 0, jnp.log(jnp.maximum(min_sq, 1e-300)), -jnp.inf)
        index = jax.random.categorical(jax.random.fold_in(key_rest, j), logits)
        centre = x[index]
        min_sq = jnp.minimum(min_sq, jnp.sum((x - centre) ** 2, axis=1))
        return centres.at[j].set(centre), min_sq

    centres, _ = jax.lax.fori_loop(1, num_components, add_centre, (centres, min_sq))
    return centres


def _lloyd(x, centres, num_steps: int):
    """Lloyd's k-means iterations; a centre that loses all its rows stays put."""
    num_components = centres.shape[0]

    def step(_, centres):
        labels = jnp.argmin(_squared_distances(x, centres), axis=1)
        onehot = jax.nn.one_hot(labels, num_components, dtype=x.dtype)
        counts = jnp.sum(onehot, axis=0)
        sums = jnp.matmul(onehot.T, x, precision=_HIGHEST)
        return jnp.where(
            counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres
        )

    return jax.lax.fori_loop(0, num_steps, step, centres)


def _initial_params(rng_key, x, num_components, covariance_type, init_method,
                    reg_covar, prior):
    """Initial GMMParams: centres, then one M-step from hard assignments to them.

    "kmeans++": k-means++ seeds refined by ``_LLOYD_STEPS`` Lloyd iterations.
    "random_from_data": k distinct rows drawn uniformly.
    """
    if init_method == "kmeans++":
        centres = _kmeans_plus_plus(rng_key, x, num_components)
        centres = _lloyd(x, centres, _LLOYD_STEPS)
    else:
        rows = jax.random.choice(rng_key, x.shape[0], (num_components,), replace=False)
        centres = x[rows]
    labels = jnp.argmin(_squared_distances(x, centres), axis=1)
    resp = jax.nn.one_hot(labels, num_components, dtype=x.dtype)
    return m_step(x, resp, covariance_type, reg_covar=reg_covar, prior=prior)


# ------------------------------------------------------------------- jitted core


def _two_pass_mean(x):
    """Column means, corrected by the mean of the residuals (float32 safe)."""
    centre = jnp.mean(x, axis=0)
    return centre + jnp.mean(x - centre, axis=0)


@partial(
    jax.jit,
    static_argnames=("num_components", "covariance_type", "init_method", "max_iters"),
)
def _fit(x, init_params, keys, tol, reg_covar, prior, *, num_components,
         covariance_type, init_method, max_iters):
    """All restarts of EM (vmap over ``keys``), each one lax.while_loop."""
    centre = _two_pass_mean(x)
    centred = x - centre
    if prior is not None:
        prior = prior._replace(mean_prior=prior.mean_prior - centre)
    reseed_covariance = _reseed_covariance(centred, covariance_type, reg_covar)
    step_fn = partial(
        _em_step,
        x=centred,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        prior=prior,
        reseed_covariance=reseed_covariance,
    )

    def one_restart(key, start):
        if start is None:
            start = _initial_params(
                key, centred, num_components, covariance_type, init_method,
                reg_covar, prior,
            )
        else:
            start = start._replace(means=start.means - centre)
        state, num_iters, converged, trace = run_em(
            step_fn,
            _State(start, jnp.zeros((), jnp.int32)),
            max_iters=max_iters,
            tol=tol,
            dtype=centred.dtype,
        )
        params = state.params
        value = objective(params, centred, covariance_type, prior)
        finite_params = jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in params])
        )
        failed = ~(jnp.isfinite(value) & finite_params)
        params = params._replace(means=params.means + centre)
        result = EMResult(params, value, num_iters, converged & ~failed, trace)
        return result, state.num_reseeds, failed

    return jax.vmap(one_restart)(keys, init_params)


# ------------------------------------------------------------- Python boundary


def _check_data(x, num_components, covariance_type, reg_covar, prior):
    """Validate x and warn about data that fit but deserve attention."""
    x = check_matrix("x", x, min_rows=2, min_cols=1)
    num_rows, num_features = x.shape
    if num_components > num_rows:
        raise ValueError(
            f"num_components={num_components} exceeds the number of rows of x "
            f"({num_rows}); every component needs data: use num_components <= "
            f"{num_rows}"
        )
    constant = np.flatnonzero(np.ptp(x, axis=0) == 0).tolist()
    if constant:
        if reg_covar == 0 and prior is None:
            raise ValueError(
                f"x has constant column(s) {constant}: their variance is 0 and, "
                f"with reg_covar=0, the covariances are singular. Drop the "
                f"column(s), set reg_covar > 0 or give a prior"
            )
        warnings.warn(
            f"x has constant column(s) {constant}: their variance in every "
            f"component is the floor (reg_covar={reg_covar} or the prior); "
            f"consider dropping them",
            DataWarning,
            stacklevel=4,
        )
    # A column with >= k distinct values proves >= k distinct rows; only fall
    # back to the (slower) row-wise unique when no column does.
    if not any(len(np.unique(x[:, j])) >= num_components for j in range(num_features)):
        num_distinct = len(np.unique(x, axis=0))
        if num_distinct < num_components:
            warnings.warn(
                f"x has only {num_distinct} distinct row(s) for num_components="
                f"{num_components}: some components will be empty (reseeded) or "
                f"collapse onto single points; lower num_components",
                DataWarning,
                stacklevel=4,
            )
    return x


def _check_init(init, num_features, covariance_type, num_restarts, dtype):
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


def fit_gaussian_mixture_restarts(
    x,
    num_components: int,
    *,
    covariance_type: str = "full",
    init="kmeans++",
    num_restarts: int = 1,
    max_iters: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    prior: GMMPrior | None = None,
    rng_key=None,
) -> GMMRestarts:
    """Run every restart of ``fit_gaussian_mixture`` and return them all.

    Same arguments as ``fit_gaussian_mixture``; nothing is raised when restarts
    fail (``failed``, ``best_index == -1``), and only data warnings are emitted.
    """
    num_components = check_int("num_components", num_components, minimum=1)
    check_covariance_type(covariance_type)
    num_restarts = check_int("num_restarts", num_restarts, minimum=1)
    max_iters = check_int("max_iters", max_iters, minimum=0)
    check_nonnegative("tol", tol)
    check_nonnegative("reg_covar", reg_covar)
    x = _check_data(x, num_components, covariance_type, reg_covar, prior)
    num_rows, num_features = x.shape
    x = jnp.asarray(x)
    dtype = x.dtype
    if prior is not None:
        prior = check_prior(prior, num_components, num_features, for_map=True)
        prior = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), prior)
        prior = prior._replace(
            weight_concentration=jnp.broadcast_to(
                prior.weight_concentration, (num_components,)
            )
        )
    init_method, init_params, num_restarts = _check_init(
        init, num_features, covariance_type, num_restarts, dtype
    )
    if rng_key is None:
        if init_method != "params":
            raise ValueError(
                f"rng_key is required for init={init!r}; pass e.g. "
                f"rng_key=jax.random.key(0)"
            )
        rng_key = jax.random.key(0)
    keys = jax.random.split(rng_key, num_restarts)
    results, num_reseeds, failed = _fit(
        x,
        init_params,
        keys,
        jnp.asarray(tol, dtype),
        jnp.asarray(reg_covar, dtype),
        prior,
        num_components=num_components,
        covariance_type=covariance_type,
        init_method=init_method,
        max_iters=max_iters,
    )
    failed = np.asarray(failed)
    scores = np.where(failed, -np.inf, np.asarray(results.log_likelihood))
    best_index = -1 if failed.all() else int(np.argmax(scores))
    return GMMRestarts(results, np.asarray(num_reseeds), failed, best_index)


def fit_gaussian_mixture(
    x,
    num_components: int,
    *,
    covariance_type: str = "full",
    init="kmeans++",
    num_restarts: int = 1,
    max_iters: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    prior: GMMPrior | None = None,
    rng_key=None,
) -> EMResult:
    """Fit a Gaussian mixture by EM (maximum likelihood, or MAP with ``prior``).

    One jit-compiled call runs every restart (vmap) and every iteration
    (lax.while_loop); calling again with data of the same shape, dtype and static
    options (num_components, covariance_type, init method, max_iters, prior or
    not) reuses the compiled code, whatever tol, reg_covar, the data values, the
    prior's values or the key.

    Args:
      x: (n, d) data, n >= 2; float32 stays float32, integers become float64.
      num_components: k, 1 <= k <= n.
      covariance_type: "full", "tied", "diag" or "spherical".
      init: "kmeans++" (k-means++ seeding plus 10 Lloyd steps, in JAX) or
        "random_from_data" (k distinct random rows): the start is then one
        M-step from the hard assignments of the rows to those centres. Or a
        GMMParams used as given ((k,) leaves, or (r, k) leaves for r stacked
        starts), e.g. to start from scikit-learn's or another fit's parameters.
      num_restarts: independent starts; the best finite one is returned.
      max_iters: bound on EM iterations (sizes ``trace``); 0 returns the start.
      tol: stopping rule (scikit-learn's): stop after iteration t >= 2 once
        |trace[t] - trace[t-1]| < tol, the objective being the mean per-row
        log-likelihood (log posterior with a prior). tol=0 runs exactly
        max_iters iterations (and warns that EM did not converge).
      reg_covar: added to every variance after each M-step (scikit-learn's floor).
      prior: a GMMPrior for MAP-EM with the prior of ``models.gaussian_mixture
        .model`` (then the objective is the mean log posterior per row); None for
        maximum likelihood.
      rng_key: JAX PRNG key; required unless ``init`` is a GMMParams.

    Returns:
      EMResult of the best restart: ``params`` (GMMParams in the units of x),
      ``log_likelihood`` (the objective recomputed at ``params``: mean per-row
      log-likelihood, or mean per-row log posterior with a prior), ``num_iters``,
      ``converged`` and ``trace``.

    Raises:
      FloatingPointError: every restart's objective turned non-finite.

    Warns:
      ConvergenceWarning: the best restart reached max_iters (max_iters > 0).
      DataWarning: constant columns, fewer distinct rows than components, empty
        components reseeded, or components collapsed onto the reg_covar floor.
    """
    restarts = fit_gaussian_mixture_restarts(
        x,
        num_components,
        covariance_type=covariance_type,
        init=init,
        num_restarts=num_restarts,
        max_iters=max_iters,
        tol=tol,
        reg_covar=reg_covar,
        prior=prior,
        rng_key=rng_key,
    )
    if restarts.best_index < 0:
        raise FloatingPointError(
            f"all {len(restarts.failed)} EM restart(s) produced a non-finite "
            f"objective (a covariance became singular). Increase reg_covar "
            f"(now {reg_covar}), give a prior, lower num_components, or scale "
            f"the data"
        )
    best = jax.tree_util.tree_map(lambda a: a[restarts.best_index], restarts.results)
    # Constant columns were warned about already; their variance is the floor by
    # construction and must not be reported as a collapse.
    varying = np.ptp(np.asarray(x), axis=0) > 0
    _warn_about_fit(restarts, best, covariance_type, reg_covar, max_iters, tol,
                    varying)
    return best


def _warn_about_fit(restarts, best, covariance_type, reg_covar, max_iters, tol,
                    varying):
    """Turn the per-restart diagnostics of the jitted core into warnings."""
    num_failed = int(restarts.failed.sum())
    if num_failed:
        warnings.warn(
            f"{num_failed} of {len(restarts.failed)} EM restart(s) produced a "
            f"non-finite objective and were discarded",
            DataWarning,
            stacklevel=3,
        )
    reseeds = int(restarts.num_reseeds[restarts.best_index])
    if reseeds:
        warnings.warn(
            f"the best EM restart reseeded an empty component {reseeds} time(s) "
            f"(total responsibility < {EMPTY_COMPONENT_COUNT}); the data may "
            f"support fewer components",
            DataWarning,
            stacklevel=3,
        )
    if reg_covar > 0 and varying.any():
        params = best.params
        if covariance_type in ("full", "tied"):
            covariances = np.asarray(params.covariances)[:, varying][:, :, varying]
            smallest = np.linalg.eigvalsh(covariances)[:, 0]
        else:
            variances = np.asarray(_variances(params, covariance_type))
            smallest = variances[:, varying].min(axis=1)
        collapsed = np.flatnonzero(smallest <= 10 * reg_covar).tolist()
        if collapsed:
            warnings.warn(
                f"component(s) {collapsed} collapsed: a variance sits at the "
                f"reg_covar floor ({reg_covar}), so the likelihood is inflated by "
                f"a near-singular component. Lower num_components, increase "
                f"reg_covar or give a prior",
                DataWarning,
                stacklevel=3,
            )
    if max_iters > 0 and not bool(best.converged):
        warnings.warn(
            f"EM did not converge in max_iters={max_iters} iterations (tol={tol}); "
            f"increase max_iters or tol, try other starts, or check for degenerate "
            f"data",
            ConvergenceWarning,
            stacklevel=3,
        )

