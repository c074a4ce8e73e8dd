"""``MultinomialMixture``: a mixture of multinomials over count rows, sklearn-style.

A thin layer over ``inference.em.fit_multinomial_mixture_restarts`` (every
restart in one compiled program; rows folded and padded to size buckets, so
data of similar sizes reuse it) and the densities of
``models.multinomial_mixture``. Counts are dense or ``scipy.sparse``,
non-negative whole numbers; ``fit(X, groups=...)`` fits the individualized
model (one weight vector per group, e.g. per household; Cadez et al. 2001),
whose ``weights_`` are (g, k) in the order of ``groups_`` (``np.unique`` of the
labels). Rows whose counts are all zero carry no information: EM leaves them
out, ``predict`` labels them -1 and ``score_samples`` gives them 0.

Defaults are the functional API's (max_iter=1000, tol=1e-6 nats per row,
``inference.em.multinomial_mixture`` says why), not the Gaussian mixture's.
"""

import time

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import (
    check_is_fitted,
    check_non_negative,
    validate_data,
)

from latentmix.data.validation import warn
from latentmix.inference.em.multinomial_mixture import fit_multinomial_mixture_restarts
from latentmix.inference.em.multinomial_mixture.online import (
    multinomial_online_start,
    multinomial_online_step,
)
from latentmix.inference.estimators.common import (
    ConvergenceWarning,
    FitFailedError,
    computing_in,
    print_em_progress,
    rng_key_from,
    to_numpy,
)
from latentmix.inference.estimators.posterior import multinomial_posterior
from latentmix.inference.estimators.saving import register, save_estimator
from latentmix.inference.selection import (
    heldout_log_likelihood,
    multinomial_bic,
    multinomial_icl,
)
from latentmix.models import multinomial_mixture as mm

__all__ = ["MultinomialMixture"]


class MultinomialMixture(DensityMixin, BaseEstimator):
    """Mixture of multinomials fitted by jit-compiled (MAP-)EM.

    Parameters
    ----------
    n_components : int, default=1
    n_init : int, default=1
        Random starts (probs ~ Dirichlet(2C), uniform weights), run together;
        the one with the highest final mean log-likelihood is kept.
    max_iter : int, default=1000
    tol : float, default=1e-6
        Stop when the mean per-row log-likelihood (nats) changes by less.
    rtol : float, default=0.0
        Relative tolerance added to ``tol``.
    prior : MultinomialMixturePrior or None, default=None
        Dirichlet pseudocounts for MAP-EM (and the prior of
        ``sample_posterior``); None: maximum likelihood (flat Dirichlets).
    random_state : None, int or RandomState, default=None
    devices : None, int or list of jax devices, default=None
        Rows sharded over several devices (dense layout).
    screen_iters : int, default=0
        With n_init > 1 (global model): screen the starts, continue the best.
    verbose, verbose_interval : int, default=0, 10
        scikit-learn's EM messages (printed after the compiled fit).

    Attributes
    ----------
    weights_ : (k,) or (g, k) with groups
    probs_ : (k, c) category probabilities of each component
    groups_ : (g,) the group labels (grouped fits only)
    converged_, n_iter_, lower_bound_, lower_bounds_ : as GaussianMixture
        (the objective is the mean log-likelihood per non-empty row,
        multinomial coefficient included; plus log prior / N for MAP-EM)
    median_total_ : the median row total of the training counts (the default
        row total of ``sample``)
    n_features_in_, feature_names_in_
    """

    _saved_attributes = ("weights_", "probs_", "groups_", "converged_", "n_iter_",
                         "lower_bound_", "lower_bounds_", "median_total_",
                         "n_features_in_")
    _list_attributes = ("lower_bounds_",)

    def __init__(self, n_components=1, *, n_init=1, max_iter=1000, tol=1e-6,
                 rtol=0.0, prior=None, random_state=None, devices=None,
                 screen_iters=0, verbose=0, verbose_interval=10,
                 step_size_offset=2.0, step_size_power=0.6):
        self.n_components = n_components
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.rtol = rtol
        self.prior = prior
        self.random_state = random_state
        self.devices = devices
        self.screen_iters = screen_iters
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.step_size_offset = step_size_offset
        self.step_size_power = step_size_power

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        # Counts: scikit-learn's checks then give whole numbers >= 0.
        tags.input_tags.categorical = True
        return tags

    @classmethod
    def from_result(cls, result, *, group_labels=None, feature_names=None,
                    median_total=1, **params):
        """A fitted estimator from ``fit_multinomial_mixture``'s EMResult
        (``group_labels``: the labels of a grouped fit's weight rows)."""
        probs = np.asarray(result.params.probs)
        est = cls(n_components=probs.shape[0], **params)
        est._set_fitted(result, group_labels, probs.shape[1])
        est.median_total_ = int(median_total)
        if feature_names is not None:
            est.feature_names_in_ = np.asarray([str(n) for n in feature_names],
                                               dtype=object)
        return est

    # ------------------------------------------------------------------ fit

    def fit(self, X, y=None, groups=None):
        """Fit by EM. ``X``: (n, c) counts, dense or sparse; ``groups``: (n,)
        labels for per-group weights. Returns self."""
        X = self._validate(X, reset=True)
        if hasattr(self, "online_state_"):
            del self.online_state_  # fit starts afresh
        _check_int("n_components", self.n_components, 1)
        _check_int("n_init", self.n_init, 1)
        _check_int("max_iter", self.max_iter, 0)
        _check_int("verbose_interval", self.verbose_interval, 1)
        totals = np.asarray(X.sum(axis=1)).ravel()
        if not (totals > 0).any():
            raise ValueError("every row of X is all zeros: there is nothing to fit")
        started = time.perf_counter()
        restarts = fit_multinomial_mixture_restarts(
            X, self.n_components, groups=groups, num_restarts=self.n_init,
            max_iters=self.max_iter, tol=self.tol, rtol=self.rtol, prior=self.prior,
            rng_key=rng_key_from(self.random_state), devices=self.devices,
            screen_iters=self.screen_iters)
        seconds = time.perf_counter() - started
        if restarts.best_index < 0:
            raise FitFailedError(
                "every EM start ended with a non-finite log-likelihood (a row "
                "impossible under every component); give a prior with "
                "pseudocounts (MultinomialMixturePrior(probs_concentration=1.01))"
            )
        results = to_numpy(restarts.results)
        for index in range(len(restarts.failed)):
            print_em_progress(results.trace[index], int(results.num_iters[index]),
                              bool(results.converged[index]), init=index,
                              verbose=self.verbose,
                              verbose_interval=self.verbose_interval,
                              seconds=seconds / len(restarts.failed))
        best = _select(results, restarts.best_index)
        labels = None if groups is None else mm.encode_groups(groups)[1]
        self._set_fitted(best, labels, X.shape[1])
        self.median_total_ = int(np.median(totals[totals > 0]))
        if not self.converged_ and self.max_iter > 0:
            warn(f"EM did not converge in max_iter={self.max_iter} iterations; "
                 f"increase max_iter or tol", ConvergenceWarning)
        return self

    def partial_fit(self, X, y=None):
        """One step of online (stepwise) EM on the batch of counts X; returns self.

        The running per-row statistics move toward X's at the current
        parameters by gamma_t = (t + step_size_offset)^(-step_size_power), then
        one maximum-likelihood M-step (``inference.em.multinomial_mixture
        .online``; gamma_0 = 1). The first call starts from the fit when the
        estimator was fitted (global weights only), else from a random start
        (``random_state``). ``online_state_`` holds the state (``fit`` drops
        it), ``n_iter_`` counts the batches, ``lower_bound_`` is the mean
        log-likelihood (without the multinomial coefficient) of X's non-empty
        rows at the parameters before this step, ``converged_`` stays False.
        No groups, no prior.
        """
        state = getattr(self, "online_state_", None)
        X = self._validate(X, reset=not hasattr(self, "probs_"))
        counts = X.toarray() if scipy.sparse.issparse(X) else np.asarray(X)
        dtype = np.float32 if counts.dtype == np.float32 else np.float64
        if self.prior is not None:
            raise ValueError("partial_fit is maximum likelihood only; set prior=None")
        with computing_in(dtype):
            if state is None:
                _check_int("n_components", self.n_components, 1)
                if hasattr(self, "probs_") and np.ndim(self.weights_) == 2:
                    raise ValueError("partial_fit continues a global fit only; this "
                                     "model was fitted with groups")
                init = self.params_ if hasattr(self, "probs_") else "random"
                state = multinomial_online_start(
                    self.n_components, counts.shape[1], init=init,
                    rng_key=rng_key_from(self.random_state), dtype=dtype,
                    step_size_offset=self.step_size_offset,
                    step_size_power=self.step_size_power)
                bounds = []
            else:
                bounds = list(self.lower_bounds_)
            state = multinomial_online_step(state, counts)
            params = to_numpy(state.params)
        self.online_state_ = state
        self.weights_, self.probs_ = params.weights, params.probs
        if hasattr(self, "groups_"):
            del self.groups_
        self.n_iter_ = state.num_steps
        self.converged_ = False
        self.lower_bound_ = float(state.log_likelihood)
        self.lower_bounds_ = bounds + [self.lower_bound_]
        totals = counts.sum(axis=1)
        if (totals > 0).any():
            self.median_total_ = int(np.median(totals[totals > 0]))
        return self

    def fit_predict(self, X, y=None, groups=None):
        """Fit, then return the component of every row (-1 for empty rows)."""
        return self.fit(X, groups=groups).predict(X, groups=groups)

    def _set_fitted(self, result, group_labels, num_categories) -> None:
        self.weights_ = np.asarray(result.params.weights)
        self.probs_ = np.asarray(result.params.probs)
        if group_labels is not None:
            self.groups_ = np.asarray(group_labels)
        elif hasattr(self, "groups_"):
            del self.groups_
        num_iters = int(result.num_iters)
        trace = np.asarray(result.trace)
        self.n_iter_ = num_iters
        self.converged_ = bool(result.converged)
        self.lower_bounds_ = [float(value) for value in trace[:num_iters]]
        self.lower_bound_ = self.lower_bounds_[-1] if num_iters else -np.inf
        self.n_features_in_ = num_categories

    def _validate(self, X, reset: bool):
        X = validate_data(self, X, reset=reset,
                          accept_sparse=("csr", "csc", "coo"), dtype="numeric")
        check_non_negative(X, "MultinomialMixture (counts must be >= 0)")
        if X.shape[1] < 2:
            raise ValueError(
                f"MultinomialMixture needs at least 2 count columns (categories), "
                f"got n_features = {X.shape[1]}: with one, every row has "
                f"probability 1 under every parameter value"
            )
        return X

    # ------------------------------------------------------------- predict

    @property
    def params_(self) -> mm.MultinomialMixtureParams:
        """The fit as MultinomialMixtureParams."""
        check_is_fitted(self)
        return mm.MultinomialMixtureParams(self.weights_, self.probs_)

    def _prepared(self, X, groups):
        """(validated X, params, group codes or None) for the densities.

        A grouped fit without ``groups`` uses the mean of the group weights
        (the average group); ``groups`` of a global fit are refused.
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        params = self.params_
        grouped = np.ndim(self.weights_) == 2
        if groups is None:
            if grouped:
                params = params._replace(weights=self.weights_.mean(axis=0))
            return X, params, None
        if not grouped:
            raise ValueError("groups were given but the model was fitted without "
                             "groups (global weights)")
        return X, params, mm.encode_groups(groups, self.groups_)[0]

    def score_samples(self, X, groups=None):
        """log p(x_i) of every row (coefficient included; 0 for empty rows)."""
        X, params, codes = self._prepared(X, groups)
        with computing_in(np.float64):
            return np.asarray(mm.log_likelihood(params, X, codes))

    def score(self, X, y=None, groups=None):
        """Mean per-row log-likelihood of X."""
        return float(np.mean(self.score_samples(X, groups)))

    def predict_proba(self, X, groups=None):
        """Responsibilities (n, k); an empty row gets its weights."""
        X, params, codes = self._prepared(X, groups)
        with computing_in(np.float64):
            return np.asarray(mm.responsibilities(params, X, codes))

    def predict(self, X, groups=None):
        """The most probable component of every row; -1 for all-zero rows."""
        X, params, codes = self._prepared(X, groups)
        with computing_in(np.float64):
            return np.asarray(mm.assignments(params, X, codes))

    def sample(self, n_samples=1, *, total_count=None, groups=None):
        """Draw (counts (n, c), components (n,)) with row totals ``total_count``
        (an int or (n,) ints; default ``median_total_``); ``groups``: the
        labels of each drawn row's group (grouped fits)."""
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        totals = self.median_total_ if total_count is None else total_count
        totals = np.broadcast_to(np.asarray(totals, dtype=np.int64), (n_samples,))
        params = self.params_
        codes = None
        if np.ndim(self.weights_) == 2:
            if groups is None:
                params = params._replace(weights=self.weights_.mean(axis=0))
            else:
                codes = mm.encode_groups(np.broadcast_to(groups, (n_samples,)),
                                         self.groups_)[0]
        counts, labels = mm.sample(params, totals, rng_key=rng_key_from(
            self.random_state), groups=codes)
        return np.asarray(counts), np.asarray(labels)

    def bic(self, X, groups=None):
        """BIC = -2 log L + p log N on X (N the non-empty rows; lower is better)."""
        X, params, codes = self._prepared(X, groups)
        with computing_in(np.float64):
            return float(multinomial_bic(params, X, codes))

    def icl(self, X, groups=None):
        """ICL = BIC + 2 x classification entropy (never below BIC)."""
        X, params, codes = self._prepared(X, groups)
        with computing_in(np.float64):
            return float(multinomial_icl(params, X, codes))

    def heldout_log_likelihood(self, X, groups=None):
        """Total log-likelihood sum_i log p(x_i) of (held-out) rows X."""
        X, params, codes = self._prepared(X, groups)
        with computing_in(np.float64):
            return float(heldout_log_likelihood(params, X, codes))

    # ---------------------------------------------------- Bayesian, saving

    def sample_posterior(self, X, method="nuts", *, groups=None, num_chains=4,
                         num_warmup=500, num_samples=500, random_state=None,
                         prior=None, posterior_predictive=False, num_steps=None):
        """The posterior as ArviZ InferenceData (``GaussianMixture
        .sample_posterior``): "nuts", "vi" or "map" (global model only), started
        at and relabelled to the EM fit. With ``groups`` (a grouped fit) the
        hierarchical model: group weights ~ Dirichlet(concentration x weights).
        observed_data "counts" (dense), log_likelihood "counts" per draw and
        row (coefficient included)."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        codes = None
        if groups is not None:
            if np.ndim(self.weights_) != 2:
                raise ValueError("groups need a model fitted with groups")
            codes = mm.encode_groups(groups, self.groups_)[0]
        elif np.ndim(self.weights_) == 2:
            raise ValueError("this model was fitted with groups: pass groups")
        with computing_in(np.float64):
            return multinomial_posterior(
                X, self.params_, codes=codes, method=method,
                prior=self.prior if prior is None else prior,
                rng_key=rng_key_from(random_state), num_chains=num_chains,
                num_warmup=num_warmup, num_samples=num_samples,
                posterior_predictive=posterior_predictive, num_steps=num_steps)

    def crosscheck(self, X, *, groups=None, methods=None, random_state=None,
                   **options):
        """``inference.crosscheck.crosscheck_multinomial_mixture`` on X with this
        estimator's K and prior (methods default ("map", "vi", "nuts"), or
        ("vi", "nuts") with groups); returns its ``CrossCheck``."""
        from latentmix.inference.crosscheck import crosscheck_multinomial_mixture

        X = self._validate(X, reset=not hasattr(self, "n_features_in_"))
        if methods is None:
            methods = ("vi", "nuts") if groups is not None else ("map", "vi", "nuts")
        return crosscheck_multinomial_mixture(
            X, self.n_components, groups=groups, rng_key=rng_key_from(random_state),
            methods=methods, prior=self.prior, **options)

    def save(self, path, *, metadata=None):
        """Write the fitted model to the folder ``path`` (``inference.load``)."""
        check_is_fitted(self)
        return save_estimator(self, path, metadata=metadata)


def _select(results, index: int):
    """One restart of an EMResult with a leading restart axis."""
    return type(results)(*(np.asarray(leaf)[index] if not hasattr(leaf, "_fields")
                           else type(leaf)(*(np.asarray(x)[index] for x in leaf))
                           for leaf in results))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or (
            value < minimum):
        raise ValueError(
            f"The {name!r} parameter of MultinomialMixture must be an int in the "
            f"range [{minimum}, inf). Got {value!r} instead."
        )


register(MultinomialMixture, mm.MultinomialMixturePrior)
