"""Model selection: information criteria on the -2 log-likelihood scale.

All criteria take the *total* log-likelihood sum_i log p(x_i | theta_hat) of the
data they are computed on, and are "lower is better":

    AIC = -2 LL + 2 p
    BIC = -2 LL + p ln N                       (Schwarz 1978)
    ICL = BIC + 2 EN(gamma),  EN = -sum_i sum_k gamma_ik ln gamma_ik   (Biernacki,
          Celeux & Govaert 2000), the soft classification entropy, so ICL >= BIC.

p is the number of free parameters; each model module states its count.

Gaussian mixtures: ``gmm_aic``, ``gmm_bic`` and ``gmm_icl`` evaluate the criteria
at given parameters with scikit-learn's parameter counts
(``models.gaussian_mixture.num_parameters``), so ``gmm_bic`` equals
``GaussianMixture.bic``; ``select_num_components`` fits every K by EM with
restarts and tabulates the three criteria.

Multinomial mixtures: ``multinomial_bic``, ``multinomial_icl`` and
``heldout_log_likelihood`` at given parameters, with p = (K-1) + K(C-1)
(``models.multinomial_mixture.num_parameters``); ``select_num_components_multinomial``
sweeps K with EM restarts (see the section comment below).

The tutorial's reference code used K(K-1) instead of K(C-1) in p, mixed the half
and full scales, and subtracted the entropy; none of that is repeated here.
"""

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import xlogy

from latentmix.data.validation import DataWarning, check_int, check_matrix, warn
from latentmix.inference.em.driver import EMResult
from latentmix.inference.em.gaussian_mixture import (
    e_step,
    fit_gaussian_mixture,
    fit_gaussian_mixture_sweep,
)
from latentmix.inference.em.multinomial_mixture import (
    fit_multinomial_mixture,
    fit_multinomial_mixture_sweep,
)
from latentmix.inference.precision import follows_input_precision
from latentmix.models import multinomial_mixture
from latentmix.models.gaussian_mixture import GMMParams, num_parameters

__all__ = [
    "aic",
    "bic",
    "icl",
    "classification_entropy",
    "gmm_aic",
    "gmm_bic",
    "gmm_icl",
    "ComponentSelection",
    "CRITERIA",
    "select_num_components",
    "MULTINOMIAL_CRITERIA",
    "multinomial_bic",
    "multinomial_icl",
    "heldout_log_likelihood",
    "select_num_components_multinomial",
]

CRITERIA = ("bic", "aic", "icl", "heldout")


def aic(total_log_likelihood, num_parameters) -> jax.Array:
    """Akaike information criterion, -2 LL + 2 p."""
    return -2.0 * total_log_likelihood + 2.0 * num_parameters


def bic(total_log_likelihood, num_parameters, num_rows) -> jax.Array:
    """Bayesian information criterion, -2 LL + p ln N."""
    return -2.0 * total_log_likelihood + num_parameters * jnp.log(num_rows)


def classification_entropy(log_resp) -> jax.Array:
    """EN = -sum_ik gamma_ik ln gamma_ik >= 0 from log responsibilities (n, k)."""
    resp = jnp.exp(log_resp)
    return -jnp.sum(xlogy(resp, resp))


def icl(total_log_likelihood, num_parameters, num_rows, log_resp) -> jax.Array:
    """Integrated completed likelihood, BIC + 2 EN (never below BIC)."""
    return bic(total_log_likelihood, num_parameters, num_rows) + 2.0 * (
        classification_entropy(log_resp)
    )


# ------------------------------------------------------------- Gaussian mixtures


def _gmm_terms(params: GMMParams, x, covariance_type: str):
    """(total log-likelihood, free parameter count, n, log responsibilities)."""
    x = jnp.asarray(check_matrix("x", x))
    log_resp, log_norm = e_step(params, x, covariance_type)
    count = num_parameters(params.means.shape[0], x.shape[1], covariance_type)
    return jnp.sum(log_norm), count, x.shape[0], log_resp


def gmm_aic(params: GMMParams, x, covariance_type: str = "full") -> jax.Array:
    """AIC of a Gaussian mixture on x (scikit-learn's ``GaussianMixture.aic``)."""
    total, count, _, _ = _gmm_terms(params, x, covariance_type)
    return aic(total, count)


def gmm_bic(params: GMMParams, x, covariance_type: str = "full") -> jax.Array:
    """BIC of a Gaussian mixture on x (scikit-learn's ``GaussianMixture.bic``)."""
    total, count, num_rows, _ = _gmm_terms(params, x, covariance_type)
    return bic(total, count, num_rows)


def gmm_icl(params: GMMParams, x, covariance_type: str = "full") -> jax.Array:
    """ICL of a Gaussian mixture on x: BIC + 2 x (soft classification entropy)."""
    total, count, num_rows, log_resp = _gmm_terms(params, x, covariance_type)
    return icl(total, count, num_rows, log_resp)


def _sweep_line(row: dict, done: int, total: int) -> str:
    """One progress line of a K sweep: K, mean log-likelihood, BIC."""
    return (
        f"K = {row['num_components']} ({done}/{total}): mean log-likelihood "
        f"{row['log_likelihood']:.4f}, BIC {row['bic']:.1f}"
    )


class ComponentSelection(NamedTuple):
    """Result of ``select_num_components``.

    table: one row per K: num_components, log_likelihood (mean per row),
        num_parameters, aic, bic, icl, heldout_log_likelihood (total; GMM: only
        with held-out rows, multinomial: NaN without them), converged (the
        multinomial table adds num_iters).
    best_num_components: the K minimising the chosen criterion.
    fits: K -> EMResult of the best restart at that K.
    """

    table: pd.DataFrame
    best_num_components: int
    fits: dict


@follows_input_precision
def select_num_components(
    x,
    k_values,
    *,
    criterion: str = "bic",
    covariance_type: str = "full",
    num_restarts: int = 5,
    rng_key,
    heldout_x=None,
    progress_fn=None,
    result_fn=None,
    one_program: bool = True,
    **fit_kwargs,
) -> ComponentSelection:
    """Fit a Gaussian mixture by EM for every K and pick the K minimising a criterion.

    Each K gets ``num_restarts`` restarts (``fit_gaussian_mixture``, maximum
    likelihood unless ``fit_kwargs`` holds a prior; other fit options pass through
    ``fit_kwargs``). With ``one_program`` (the default) and no prior, every K
    runs in one compiled program (``fit_gaussian_mixture_sweep``: the same starts
    and results up to rounding; on Old Faithful, K = 1..8, 5 to 10 times faster
    than compiling each K). Otherwise each K is a new shape, hence one
    compilation per K, which is cheaper when the data are large (the padded
    sweep costs each K what the largest K costs).

    Args:
      x: (n, d) data.
      k_values: the candidate numbers of components (distinct integers >= 1).
      criterion: "bic", "aic" or "icl" (all lower-is-better, on x), or
        "heldout" (the total log-likelihood of ``heldout_x``, maximised).
      covariance_type: as in ``fit_gaussian_mixture``.
      num_restarts: restarts per K.
      rng_key: JAX PRNG key, split into one key per K.
      heldout_x: optional (m, d) held-out rows, scored at every K's fit
        (then the table has a column ``heldout_log_likelihood``).
      progress_fn: optional callable receiving one line of text per finished K
        (long sweeps show their progress; the library itself never prints).
        A one-program sweep reports every K once the program has finished.
      result_fn: optional callable receiving each finished K's table row (a
        dict), e.g. to keep the K values already done if the sweep is stopped.
      one_program: compile all K into one program (see above).

    Raises:
      FloatingPointError: the criterion is not finite for any K (a K whose
        value is not finite is skipped, with a warning, when others are).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "heldout" and heldout_x is None:
        raise ValueError("criterion='heldout' needs heldout_x")
    x = check_matrix("x", x, min_rows=2)
    if heldout_x is not None:
        heldout_x = check_matrix("heldout_x", heldout_x)
    k_values = [check_int("k_values entries", k, minimum=1) for k in k_values]
    if not k_values or len(set(k_values)) != len(k_values):
        raise ValueError(f"k_values must be distinct integers >= 1, got {k_values}")
    keys = jax.random.split(rng_key, len(k_values))
    swept = None
    if one_program and fit_kwargs.get("prior") is None:
        options = {key: value for key, value in fit_kwargs.items() if key != "prior"}
        swept = fit_gaussian_mixture_sweep(
            x, k_values, covariance_type=covariance_type,
            num_restarts=num_restarts, rng_key=rng_key, **options,
        )
    rows, fits = [], {}
    for index, (key, num_components) in enumerate(zip(keys, k_values, strict=True)):
        if swept is not None:
            result: EMResult = swept[index]
        else:
            result = fit_gaussian_mixture(
                x,
                num_components,
                covariance_type=covariance_type,
                num_restarts=num_restarts,
                rng_key=key,
                **fit_kwargs,
            )
        fits[num_components] = result
        total, count, num_rows, log_resp = _gmm_terms(
            result.params, x, covariance_type
        )
        row = {
            "num_components": num_components,
            "log_likelihood": float(total) / num_rows,
            "num_parameters": count,
            "aic": float(aic(total, count)),
            "bic": float(bic(total, count, num_rows)),
            "icl": float(icl(total, count, num_rows, log_resp)),
        }
        if heldout_x is not None:
            row["heldout_log_likelihood"] = float(
                _gmm_terms(result.params, heldout_x, covariance_type)[0])
        rows.append({**row, "converged": bool(result.converged)})
        if result_fn is not None:
            result_fn(rows[-1])
        if progress_fn is not None:
            progress_fn(_sweep_line(rows[-1], len(rows), len(k_values)))
    table = pd.DataFrame(rows)
    best = _best_k(table, criterion, "heldout_x holds rows far outside every "
                   "fitted component; check that it comes from the same source")
    return ComponentSelection(table, best, fits)


# --------------------------------------------------------- multinomial mixtures
#
# BIC and ICL are computed on the data passed in (the training data in
# ``select_num_components_multinomial``), with N = its number of non-empty rows
# and p = (K-1) + K(C-1), or G(K-1) + K(C-1) with per-group weights
# (``models.multinomial_mixture.num_parameters``). The reference code instead
# put the *test* log-likelihood with N = test rows into BIC, counted K(K-1) for
# K(C-1) in one notebook, and added a training-set entropy to a test-set BIC
# with the wrong sign; the entropy here is the soft one, -sum gamma ln gamma, of
# the same rows as the log-likelihood. Empty rows (all counts zero) have
# log-likelihood 0 under every parameter value and are left out of N and EN.

MULTINOMIAL_CRITERIA = ("bic", "icl", "heldout")


@jax.jit
def _multinomial_criteria(joint, nonempty, num_parameters, num_rows):
    """(total log-likelihood, BIC, ICL) from the (n, k) log joint, in one compile."""
    log_lik = jax.nn.logsumexp(joint, axis=-1)
    # An empty row's responsibilities are the weights, not a classification: a
    # log responsibility of 0 makes its entropy term xlogy(1, 1) = 0.
    log_resp = jnp.where(nonempty[:, None], joint - log_lik[:, None], 0.0)
    total = jnp.sum(log_lik)
    return (
        total,
        bic(total, num_parameters, num_rows),
        icl(total, num_parameters, num_rows, log_resp),
    )


def _multinomial_terms(params, counts, groups):
    """(total log-likelihood, free parameter count, N, BIC, ICL)."""
    params = multinomial_mixture.MultinomialMixtureParams(
        *map(jnp.asarray, params)
    )
    counts = multinomial_mixture.check_counts(counts)
    nonempty = np.asarray(counts.sum(axis=1)).ravel() > 0
    joint = multinomial_mixture.log_joint(params, counts, groups)
    num_components, num_categories = params.probs.shape
    num_groups = params.weights.shape[0] if params.weights.ndim == 2 else None
    count = multinomial_mixture.num_parameters(
        num_components, num_categories, num_groups
    )
    num_rows = int(nonempty.sum())
    total, bic_value, icl_value = _multinomial_criteria(
        joint, jnp.asarray(nonempty), count, num_rows
    )
    return total, count, num_rows, bic_value, icl_value


def multinomial_bic(params, counts, groups=None) -> jax.Array:
    """BIC = -2 LL + p ln N of a multinomial mixture on ``counts``.

    ``groups``: codes 0..g-1 of each row when ``params.weights`` is (g, k).
    """
    return _multinomial_terms(params, counts, groups)[3]


def multinomial_icl(params, counts, groups=None) -> jax.Array:
    """ICL = BIC + 2 EN(gamma) on ``counts`` (soft entropy, so never below BIC)."""
    return _multinomial_terms(params, counts, groups)[4]


def heldout_log_likelihood(params, counts, groups=None, *, group_labels=None):
    """Total log-likelihood sum_i log p(x_i | params) of held-out ``counts``.

    ``groups`` are codes 0..g-1 or, with ``group_labels`` (the labels of a
    grouped fit, ``np.unique`` of its training groups), labels mapped onto them.
    A held-out row with a positive count in a category of probability 0 in
    every component gives -inf (fit with a Dirichlet prior to avoid it).
    """
    if groups is not None and group_labels is not None:
        groups, _ = multinomial_mixture.encode_groups(groups, group_labels)
    params = multinomial_mixture.MultinomialMixtureParams(
        *map(jnp.asarray, params)
    )
    return jnp.sum(multinomial_mixture.log_likelihood(params, counts, groups))


@follows_input_precision
def select_num_components_multinomial(
    counts,
    k_values,
    *,
    num_restarts: int = 5,
    criterion: str = "bic",
    heldout_counts=None,
    rng_key,
    groups=None,
    heldout_groups=None,
    progress_fn=None,
    result_fn=None,
    one_program: bool = False,
    **fit_kwargs,
) -> ComponentSelection:
    """Fit the multinomial mixture by EM for every K; tabulate and pick K.

    Each K is one call of ``fit_multinomial_mixture`` (one compilation per K, as
    K sets shapes; the ``num_restarts`` restarts of a K share it under vmap, and
    calling the sweep again on data of the same folded size reuses every
    compiled K). ``fit_kwargs`` pass through (prior, tol, rtol, max_iters, ...).

    With ``one_program=True`` (global model only) every K and restart runs in
    one compiled program instead (``fit_multinomial_mixture_sweep``: components
    padded to the largest K and masked). It draws the same random starts from
    the same per-K keys, so the table is the same up to floating-point
    summation order. One compilation instead of one per K, but each iteration
    costs len(k_values) x num_restarts fits of the largest K and the batch runs
    until its slowest fit stops: worth it when compilation dominates (small or
    heavily folded data) or on an accelerator; on a CPU with thousands of
    distinct rows the per-K fits are faster once compiled.

    Args:
      counts: (n, c) training counts, dense or sparse.
      k_values: candidate K (distinct integers >= 1).
      num_restarts: restarts per K.
      criterion: "bic" or "icl" (minimised, on the training data) or "heldout"
        (maximised held-out log-likelihood; needs ``heldout_counts``).
      heldout_counts: optional (m, c) held-out counts.
      rng_key: JAX PRNG key, split into one key per K.
      progress_fn: optional callable receiving one line of text per finished K
        (long sweeps show their progress; the library itself never prints).
      groups, heldout_groups: group labels for the individualized model; every
        held-out label must occur in ``groups``.
      result_fn: optional callable receiving each finished K's table row (a
        dict), e.g. to keep the K values already done if the sweep is stopped.
      one_program: fit all K in one compiled program (see above); not with
        ``groups``.

    Warnings raised by the per-K fits (e.g. categories never observed) are
    emitted once for the sweep, not once per K.

    Returns:
      ComponentSelection whose table has one row per K: num_components,
      num_parameters, log_likelihood (mean per non-empty training row),
      bic, icl, heldout_log_likelihood (total; NaN without held-out data),
      num_iters and converged.

    Raises:
      FloatingPointError: the criterion is not finite for any K (e.g. a
        held-out basket holds a category never seen in training, whose
        maximum-likelihood probability is 0: fit with a prior,
        ``MultinomialMixturePrior(probs_concentration=1 + pseudocount)``).
    """
    if criterion not in MULTINOMIAL_CRITERIA:
        raise ValueError(
            f"criterion must be one of {MULTINOMIAL_CRITERIA}, got {criterion!r}"
        )
    if criterion == "heldout" and heldout_counts is None:
        raise ValueError("criterion='heldout' needs heldout_counts")
    if (groups is None) != (heldout_groups is None) and heldout_counts is not None:
        raise ValueError("pass heldout_groups exactly when groups are given")
    k_values = [check_int("k_values entries", k, minimum=1) for k in k_values]
    if not k_values or len(set(k_values)) != len(k_values):
        raise ValueError(f"k_values must be distinct integers >= 1, got {k_values}")
    counts = multinomial_mixture.check_counts(counts)
    codes = heldout_codes = None
    if groups is not None:
        codes, labels = multinomial_mixture.encode_groups(groups)
        if heldout_counts is not None:
            heldout_codes, _ = multinomial_mixture.encode_groups(
                heldout_groups, labels
            )
    if heldout_counts is not None:
        heldout_counts = multinomial_mixture.check_counts(heldout_counts)
    if one_program and groups is not None:
        raise ValueError(
            "one_program=True fits the global model only; pass one_program=False "
            "to sweep K with groups"
        )
    swept = None
    seen = _OnceWarnings()
    if one_program:
        # Same per-K keys as the loop below (split(rng_key, len(k_values))).
        with seen:
            swept = fit_multinomial_mixture_sweep(
                counts, k_values, num_restarts=num_restarts, rng_key=rng_key,
                **fit_kwargs,
            )
    keys = jax.random.split(rng_key, len(k_values))
    rows, fits = [], {}
    for index, (key, num_components) in enumerate(
        zip(keys, k_values, strict=True)
    ):
        if swept is not None:
            result: EMResult = swept[index]
        else:
            with seen:
                result = fit_multinomial_mixture(
                    counts,
                    num_components,
                    groups=groups,
                    num_restarts=num_restarts,
                    rng_key=key,
                    **fit_kwargs,
                )
        fits[num_components] = result
        total, count, num_rows, bic_value, icl_value = _multinomial_terms(
            result.params, counts, codes
        )
        heldout = np.nan
        if heldout_counts is not None:
            heldout = float(
                heldout_log_likelihood(result.params, heldout_counts, heldout_codes)
            )
        rows.append(
            {
                "num_components": num_components,
                "num_parameters": count,
                "log_likelihood": float(total) / num_rows,
                "bic": float(bic_value),
                "icl": float(icl_value),
                "heldout_log_likelihood": heldout,
                "num_iters": int(result.num_iters),
                "converged": bool(result.converged),
            }
        )
        if result_fn is not None:
            result_fn(rows[-1])
        if progress_fn is not None:
            progress_fn(_sweep_line(rows[-1], len(rows), len(k_values)))
    seen.emit()
    table = pd.DataFrame(rows)
    best = _best_k(table, criterion,
                   "a held-out basket holds a category never seen in the training "
                   "baskets, whose maximum-likelihood probability is 0; fit with "
                   "prior=MultinomialMixturePrior(probs_concentration=1 + "
                   "pseudocount), e.g. 1.01")
    return ComponentSelection(table, best, fits)


class _OnceWarnings:
    """Collect the warnings of repeated fits; ``emit`` re-raises each once."""

    def __init__(self):
        self.caught: dict = {}

    def __enter__(self):
        self._context = warnings.catch_warnings(record=True)
        self._records = self._context.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._context.__exit__(*exc)
        for record in self._records:
            self.caught.setdefault(str(record.message), record.category)

    def emit(self) -> None:
        for message, category in self.caught.items():
            warn(message, category)


def _best_k(table: pd.DataFrame, criterion: str, cause: str) -> int:
    """The K that the criterion picks among its finite values.

    Held-out log-likelihood is maximised, the information criteria minimised;
    a non-finite value never wins (it is skipped with a warning), and a
    criterion that is finite for no K is an error naming ``cause``.
    """
    column = "heldout_log_likelihood" if criterion == "heldout" else criterion
    values = table[column].to_numpy(dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        by_k = dict(zip(table["num_components"].tolist(), values.tolist(),
                        strict=True))
        raise FloatingPointError(
            f"the {criterion} criterion is not finite for any K ({by_k}); likely "
            f"cause: {cause}")
    if not finite.all():
        skipped = table["num_components"][~finite].tolist()
        warn(f"the {criterion} criterion is not finite for K = {skipped}; those K "
             f"are skipped (likely cause: {cause})", DataWarning)
    scores = np.where(finite, values, np.nan)
    best_row = int(np.nanargmax(scores) if criterion == "heldout"
                   else np.nanargmin(scores))
    return int(table["num_components"].iloc[best_row])
