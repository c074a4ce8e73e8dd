"""``GaussianMixture``: scikit-learn's class, fitted by latentmix's jitted EM.

A drop-in for ``sklearn.mixture.GaussianMixture``: the same constructor
parameters with the same meanings and defaults, the same fitted attributes in
the same shapes, the same methods, the same ConvergenceWarning and verbose
messages; code written for scikit-learn's class runs unchanged. It is a thin
layer over the functional API: ``fit`` calls
``inference.em.fit_gaussian_mixture_weighted_restarts`` (every restart in one
compiled program, under ``vmap``), ``predict``/``score_samples`` one compiled
E-step (``models.gaussian_mixture.component_log_prob``).

The same numbers from the same start. EM is scikit-learn's, step for step (the
same E- and M-steps, the same ``reg_covar`` floor, the same stopping rule on
the mean log-likelihood, the same ``n_iter_``, ``lower_bound_`` and
``lower_bounds_``): from ``weights_init``, ``means_init`` and
``precisions_init`` both give the same parameters up to float64 rounding
(tests compare at 1e-10). Starts drawn at random are drawn differently:

  ===================  ==========================================================
  ``init_params``      what runs here
  ===================  ==========================================================
  "kmeans" (default)   latentmix's default start, "kmeans++": k-means++
                       seeding and 10 Lloyd iterations, in JAX, then one
                       M-step from the hard assignments (scikit-learn runs
                       ``KMeans(n_init=1)`` to convergence). latentmix's EM
                       also offers that, ``init="kmeans"``, but its
                       best-of-10 fits were measured no better than
                       scikit-learn's in fewer configurations (16 of 24 against
                       19 of 24 for "kmeans++"; ``benchmark.py starts``,
                       docs/benchmarks.md), so the default stays "kmeans++".
  "k-means++"          latentmix's "kmeans++": k-means++ seeds, 10 Lloyd steps,
                       M-step from the hard assignments. scikit-learn starts
                       from point masses (variance ``reg_covar``) at the seeds,
                       which its first E-step turns into the same hard
                       assignments (without the Lloyd steps): no exact
                       equivalent.
  "random"             exactly scikit-learn's: uniform random responsibilities
                       drawn from ``random_state`` (the same NumPy draws), then
                       one M-step; the same ``random_state`` gives the same
                       start and the same fit.
  "random_from_data"   latentmix's "random_from_data": k distinct rows (drawn in
                       JAX), M-step from the hard assignments to them;
                       scikit-learn's point masses at k rows reach the same
                       assignments after one E-step. Other rows are drawn.
  ===================  ==========================================================

A given ``random_state`` (an int) makes every fit reproducible, but, except for
"random", not equal to scikit-learn's fit with that seed.

Beyond scikit-learn: ``fit(X, sample_weight=...)`` (a weight per row, exactly
EM on repeated rows), ``prior`` (MAP-EM with ``models.gaussian_mixture
.GMMPrior``), ``devices`` (rows sharded over accelerators), ``screen_iters``
(em-EM screening of restarts), ``rtol``; ``sample_posterior`` (NUTS, VI or MAP
as ArviZ InferenceData relabelled to the EM fit), ``crosscheck``, ``save``.
Differences: the restarts run together, so ``verbose`` prints after the fit
(each iteration's "time lapse" is the run's average); restarts whose objective
turns non-finite are discarded with a warning instead of ending the fit (a
``FitFailedError``, a ValueError, when all do).
"""

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.scipy.special import logsumexp
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from latentmix.data.validation import warn
from latentmix.inference.em.gaussian_mixture import INIT_METHODS
from latentmix.inference.em.gaussian_mixture.checks import prepare_prior
from latentmix.inference.em.gaussian_mixture.online import online_start, online_step
from latentmix.inference.em.gaussian_mixture.steps import m_step
from latentmix.inference.em.gaussian_mixture_weighted import (
    check_sample_weight,
    fit_gaussian_mixture_weighted_restarts,
)
from latentmix.inference.estimators.common import (
    ConvergenceWarning,
    FitFailedError,
    computing_in,
    print_em_progress,
    rng_key_from,
    row_bucket,
    to_numpy,
)
from latentmix.inference.estimators.posterior import gmm_posterior
from latentmix.inference.estimators.saving import register, save_estimator
from latentmix.models import gaussian_mixture as gm

__all__ = [
    "GaussianMixture",
    "from_sklearn_shapes",
    "precisions_cholesky",
    "sklearn_covariances",
]

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


def latentmix_init(init_params: str) -> str:
    """Our start method for scikit-learn's ``init_params`` (module docstring)."""
    if init_params in ("kmeans", "k-means++"):
        return "kmeans++"
    return init_params


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by jit-compiled EM; scikit-learn's interface.

    Parameters are ``sklearn.mixture.GaussianMixture``'s (same meanings and
    defaults; ``init_params`` as the module docstring says), plus:

    prior : GMMPrior or None, default=None
        Conjugate prior for MAP-EM (``models.gaussian_mixture.GMMPrior``);
        ``lower_bound_`` is then the mean per-row log posterior. Also the prior
        of ``sample_posterior`` (None there means ``default_prior(X, K)``).
    devices : None, int or list of jax devices, default=None
        Shard the rows over several devices (``inference.sharding``).
    screen_iters : int, default=0
        With n_init > 1: run every restart this many iterations, continue only
        the best (``inference.em.fit_gaussian_mixture``).
    rtol : float, default=0.0
        Relative tolerance added to ``tol`` (``inference.em.driver``).
    step_size_offset, step_size_power : float, default=2.0, 0.6
        tau and kappa of ``partial_fit``'s step (t + tau)^(-kappa)
        (``inference.em.gaussian_mixture.online``).

    Attributes are scikit-learn's: ``weights_``, ``means_``, ``covariances_``,
    ``precisions_``, ``precisions_cholesky_`` (shapes per covariance type),
    ``converged_``, ``n_iter_``, ``lower_bound_``, ``lower_bounds_``,
    ``n_features_in_``, ``feature_names_in_``; ``params_`` gives the fit as
    ``GMMParams`` (full (k, d, d) covariances) for the functional API.
    """

    # What ``save`` writes (``saving``); lists come back as lists.
    _saved_attributes = ("weights_", "means_", "covariances_", "precisions_",
                         "precisions_cholesky_", "converged_", "n_iter_",
                         "lower_bound_", "lower_bounds_", "n_features_in_")
    _list_attributes = ("lower_bounds_",)

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3,
                 reg_covar=1e-6, max_iter=100, n_init=1, init_params="kmeans",
                 weights_init=None, means_init=None, precisions_init=None,
                 random_state=None, warm_start=False, verbose=0,
                 verbose_interval=10, prior=None, devices=None, screen_iters=0,
                 rtol=0.0, step_size_offset=2.0, step_size_power=0.6):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.prior = prior
        self.devices = devices
        self.screen_iters = screen_iters
        self.rtol = rtol
        self.step_size_offset = step_size_offset
        self.step_size_power = step_size_power

    @classmethod
    def from_result(cls, result, *, covariance_type="full", feature_names=None,
                    **params):
        """A fitted estimator from a functional fit's ``EMResult`` (e.g. of
        ``inference.em.fit_gaussian_mixture``), without refitting.

        ``feature_names``: the column names (``feature_names_in_``);
        ``params``: other constructor parameters (n_components is read off).
        """
        weights = np.asarray(result.params.weights)
        est = cls(n_components=weights.shape[0], covariance_type=covariance_type,
                  **params)
        dtype = np.asarray(result.params.means).dtype
        est._set_fitted(gm.GMMParams(*to_numpy(result.params)), dtype)
        num_iters = int(result.num_iters)
        trace = np.asarray(result.trace)
        est.n_iter_ = num_iters
        est.converged_ = bool(result.converged)
        est.lower_bounds_ = [float(value) for value in trace[:num_iters]]
        est.lower_bound_ = est.lower_bounds_[-1] if num_iters else -np.inf
        est.n_features_in_ = est.means_.shape[1]
        if feature_names is not None:
            est.feature_names_in_ = np.asarray([str(n) for n in feature_names],
                                               dtype=object)
        return est

    # ------------------------------------------------------------------ fit

    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters by EM (``n_init`` starts, the best kept).

        ``sample_weight`` (n,): a weight per row, as if row i were repeated
        ``sample_weight[i]`` times (scikit-learn's GaussianMixture has none).
        Returns self.
        """
        self.fit_predict(X, y, sample_weight=sample_weight)
        return self

    def partial_fit(self, X, y=None):
        """One step of online (stepwise) EM on the batch X; returns self.

        The running per-row sufficient statistics move toward X's at the
        current parameters by gamma_t = (t + step_size_offset)^(-step_size_power),
        then one M-step (``inference.em.gaussian_mixture.online``; gamma_0 = 1).
        The first call starts from the fit when the estimator was fitted, from
        weights_init/means_init/precisions_init when all three are given, else
        from a start drawn on X (``init_params``; "random" is drawn as
        "random_from_data"). ``online_state_`` holds the state (``fit`` drops
        it), ``n_iter_`` counts the batches, ``lower_bound_`` is the mean
        log-likelihood of X at the parameters before this step, ``converged_``
        stays False. Maximum likelihood only: a ``prior`` is refused.
        """
        state = getattr(self, "online_state_", None)
        X = validate_data(self, X, dtype=[np.float64, np.float32],
                          reset=not hasattr(self, "means_"))
        if self.prior is not None:
            raise ValueError("partial_fit is maximum likelihood only; set prior=None")
        if state is None:
            self._check_parameters(X)
            state = online_start(
                X, self.n_components, covariance_type=self.covariance_type,
                init=self._online_init(X.dtype), reg_covar=self.reg_covar,
                rng_key=rng_key_from(self.random_state),
                step_size_offset=self.step_size_offset,
                step_size_power=self.step_size_power)
            bounds = []
        else:
            bounds = list(self.lower_bounds_)
        state = online_step(state, X)
        if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in state.params):
            raise FitFailedError(
                "partial_fit: the parameters turned non-finite (a covariance "
                "became singular); increase reg_covar or the batch size")
        self.online_state_ = state
        self._set_fitted(state.params, state.centre.dtype)
        self.n_iter_ = state.num_steps
        self.converged_ = False
        self.lower_bound_ = float(state.log_likelihood)
        self.lower_bounds_ = bounds + [self.lower_bound_]
        return self

    def _online_init(self, dtype):
        """partial_fit's first start (its docstring)."""
        if hasattr(self, "means_"):
            return self.params_
        user = (self.weights_init, self.means_init, self.precisions_init)
        if all(value is not None for value in user):
            return from_sklearn_shapes(*user, self.covariance_type,
                                       precisions=True, dtype=dtype)
        method = latentmix_init(self.init_params)
        return method if method in INIT_METHODS else "random_from_data"

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of every row of X."""
        X = validate_data(self, X, dtype=[np.float64, np.float32],
                          ensure_min_samples=2)
        self._check_parameters(X)
        if hasattr(self, "online_state_"):
            del self.online_state_  # fit starts afresh (or warm, from the fit)
        num_rows = X.shape[0]
        if num_rows < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {num_rows}"
            )
        weights = check_sample_weight(sample_weight, num_rows, X.dtype)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        previous = -np.inf if do_init else self.lower_bound_
        random_state = check_random_state(self.random_state)
        init, num_starts = self._starts(X, weights, do_init, random_state)
        options = self._em_options(X, weights, random_state)
        started = time.perf_counter()
        restarts = fit_gaussian_mixture_weighted_restarts(
            X, self.n_components, init=init, num_restarts=num_starts,
            max_iters=self.max_iter, screen_iters=self.screen_iters, **options)
        seconds = time.perf_counter() - started
        results = to_numpy(restarts.results)
        failed = np.asarray(restarts.failed)
        if failed.all():
            raise FitFailedError(
                "Fitting the mixture model failed because some components have "
                "ill-defined empirical covariance (for instance caused by "
                "singleton or collapsed samples): every start's log-likelihood "
                "turned non-finite. Try to decrease the number of components, "
                "increase reg_covar, or scale the input data."
            )
        if failed.any():
            warn(f"{int(failed.sum())} of {len(failed)} EM start(s) produced a "
                 f"non-finite log-likelihood and were discarded", RuntimeWarning)
        for index in range(len(failed)):
            print_em_progress(
                results.trace[index], int(results.num_iters[index]),
                bool(results.converged[index]), init=index, verbose=self.verbose,
                verbose_interval=self.verbose_interval,
                seconds=seconds / len(failed), previous=previous)
        best = self._best_start(results, failed)
        params = gm.GMMParams(*(leaf[best] for leaf in results.params))
        num_iters = int(results.num_iters[best])
        converged = bool(results.converged[best])
        trace = results.trace[best]
        if not do_init and self.max_iter > 0 and abs(trace[0] - previous) < self.tol:
            # scikit-learn compares a warm start's first objective with the last
            # fit's lower bound, so it stops after one iteration here.
            converged = True
            if num_iters > 1:
                one = fit_gaussian_mixture_weighted_restarts(
                    X, self.n_components, init=init, num_restarts=1, max_iters=1,
                    **options)
                params = gm.GMMParams(*(np.asarray(leaf[0])
                                        for leaf in one.results.params))
                num_iters = 1
        self._set_fitted(params, X.dtype)
        self.n_iter_ = num_iters
        self.converged_ = converged
        if self.max_iter == 0:
            self.lower_bound_, self.lower_bounds_ = -np.inf, []
        else:
            self.lower_bounds_ = [float(value) for value in trace[:num_iters]]
            self.lower_bound_ = self.lower_bounds_[-1]
        if not self.converged_ and self.max_iter > 0:
            warn("Best performing initialization did not converge. Try different "
                 "init parameters, or increase max_iter, tol, or check for "
                 "degenerate data.", ConvergenceWarning)
        # As scikit-learn: labels from a final E-step, consistent with predict.
        return self.predict(X)

    def _check_parameters(self, X):
        """scikit-learn's parameter checks, with its messages."""
        _check_int("n_components", self.n_components, 1)
        gm.check_covariance_type(self.covariance_type)
        _check_real("tol", self.tol)
        _check_real("reg_covar", self.reg_covar)
        _check_int("max_iter", self.max_iter, 0)
        _check_int("n_init", self.n_init, 1)
        _check_int("verbose_interval", self.verbose_interval, 1)
        if self.init_params not in INIT_PARAMS:
            raise ValueError(
                f"The 'init_params' parameter of GaussianMixture must be a str "
                f"among {set(INIT_PARAMS)}. Got {self.init_params!r} instead."
            )
        num_features = X.shape[1]
        if self.weights_init is not None:
            check_weights(self.weights_init, self.n_components)
        if self.means_init is not None:
            _check_shape(np.asarray(self.means_init, float),
                         (self.n_components, num_features), "means")
        if self.precisions_init is not None:
            check_precisions(self.precisions_init, self.covariance_type,
                             self.n_components, num_features)

    def _em_options(self, X, weights, random_state) -> dict:
        return {"sample_weight": weights, "covariance_type": self.covariance_type,
                "tol": self.tol, "rtol": self.rtol, "reg_covar": self.reg_covar,
                "prior": self.prior, "rng_key": rng_key_from(random_state),
                "devices": self.devices, "pad_to": row_bucket(X.shape[0])}

    def _starts(self, X, weights, do_init, random_state):
        """(init for the functional fit, number of starts)."""
        if not do_init:
            return self.params_, 1
        user = (self.weights_init, self.means_init, self.precisions_init)
        given = [value is not None for value in user]
        dtype = X.dtype
        if all(given):
            # Every start is the same: scikit-learn runs n_init copies of it.
            return from_sklearn_shapes(self.weights_init, self.means_init,
                                       self.precisions_init, self.covariance_type,
                                       precisions=True, dtype=dtype), 1
        if self.init_params == "random":
            starts = self._random_starts(X, weights, random_state)
        elif any(given):
            key = rng_key_from(random_state)
            restarts = fit_gaussian_mixture_weighted_restarts(
                X, self.n_components, sample_weight=weights,
                covariance_type=self.covariance_type,
                init=latentmix_init(self.init_params), num_restarts=self.n_init,
                max_iters=0, reg_covar=self.reg_covar, prior=self.prior,
                rng_key=key, devices=self.devices, pad_to=row_bucket(X.shape[0]))
            starts = gm.GMMParams(*to_numpy(restarts.results.params))
        else:
            return latentmix_init(self.init_params), self.n_init
        return self._override(starts, dtype), self.n_init

    def _override(self, starts: gm.GMMParams, dtype) -> gm.GMMParams:
        """The given parts of the user's start replace the drawn ones."""
        count = starts.weights.shape[0]
        weights, means, covariances = (np.asarray(leaf) for leaf in starts)
        if self.weights_init is not None:
            weights = np.broadcast_to(np.asarray(self.weights_init, dtype),
                                      weights.shape).copy()
        if self.means_init is not None:
            means = np.broadcast_to(np.asarray(self.means_init, dtype),
                                    means.shape).copy()
        if self.precisions_init is not None:
            user = from_sklearn_shapes(
                np.full(self.n_components, 1.0 / self.n_components),
                means[0], self.precisions_init, self.covariance_type,
                precisions=True, dtype=dtype)
            covariances = np.broadcast_to(user.covariances,
                                          (count,) + user.covariances.shape).copy()
        return gm.GMMParams(weights, means, covariances)

    def _random_starts(self, X, weights, random_state) -> gm.GMMParams:
        """scikit-learn's "random" starts: uniform responsibilities from
        ``random_state`` (its draws, in its order), then one M-step each."""
        num_rows = X.shape[0]
        resps = []
        for _ in range(self.n_init):
            resp = random_state.uniform(size=(num_rows, self.n_components))
            resps.append(resp / resp.sum(axis=1)[:, None])
        resps = np.stack(resps).astype(X.dtype)
        total = row_bucket(num_rows)
        x = np.concatenate([X, np.repeat(X[:1], total - num_rows, axis=0)])
        row_weights = np.concatenate([weights, np.zeros(total - num_rows)])
        resps = np.concatenate(
            [resps, np.full((self.n_init, total - num_rows, self.n_components),
                            1.0 / self.n_components, X.dtype)], axis=1)
        with computing_in(X.dtype):
            prior = prepare_prior(self.prior, self.n_components, X.shape[1],
                                  jnp.dtype(X.dtype))
            starts = _starts_from_responsibilities(
                jnp.asarray(x), jnp.asarray(resps),
                jnp.asarray(row_weights, X.dtype),
                jnp.asarray(self.reg_covar, X.dtype), prior,
                covariance_type=self.covariance_type)
            return gm.GMMParams(*to_numpy(starts))

    def _best_start(self, results, failed) -> int:
        """scikit-learn's choice: the highest final lower bound (the first of
        ties); with max_iter=0 the last start."""
        if self.max_iter == 0:
            return int(np.flatnonzero(~failed)[-1])
        last = np.maximum(np.asarray(results.num_iters) - 1, 0)
        lower = np.asarray(results.trace)[np.arange(len(last)), last]
        lower = np.where(failed | ~np.isfinite(lower), -np.inf, lower)
        return int(np.argmax(lower))

    def _set_fitted(self, params: gm.GMMParams, dtype) -> None:
        """scikit-learn's attributes from GMMParams (full covariances)."""
        params = gm.GMMParams(*(np.asarray(leaf, dtype) for leaf in params))
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = sklearn_covariances(params.covariances,
                                                self.covariance_type)
        self.precisions_cholesky_ = precisions_cholesky(self.covariances_,
                                                        self.covariance_type)
        if self.covariance_type in ("full", "tied"):
            chol = self.precisions_cholesky_
            self.precisions_ = chol @ np.swapaxes(chol, -1, -2)
        else:
            self.precisions_ = self.precisions_cholesky_**2

    # ------------------------------------------------------------- predict

    @property
    def params_(self) -> gm.GMMParams:
        """The fit as GMMParams with full (k, d, d) covariances."""
        check_is_fitted(self)
        return from_sklearn_shapes(self.weights_, self.means_, self.covariances_,
                                   self.covariance_type)

    def _log_prob_resp(self, X):
        """(log p(x_i) (n,), log responsibilities (n, k)) by one compiled E-step."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        dtype = np.result_type(X.dtype, self.means_.dtype)
        num_rows = X.shape[0]
        total = row_bucket(num_rows)
        padded = np.concatenate([X, np.repeat(X[:1], total - num_rows, axis=0)])
        with computing_in(dtype):
            params = gm.GMMParams(*(jnp.asarray(leaf, dtype) for leaf in self.params_))
            log_norm, log_resp = _e_step(params, jnp.asarray(padded, dtype),
                                         covariance_type=self.covariance_type)
            return (np.asarray(log_norm)[:num_rows],
                    np.asarray(log_resp)[:num_rows])

    def score_samples(self, X):
        """log p(x_i) of every row of X under the fitted mixture, (n,)."""
        return self._log_prob_resp(X)[0]

    def score(self, X, y=None):
        """Mean per-row log-likelihood of X."""
        return float(np.mean(self.score_samples(X)))

    def predict(self, X):
        """The most probable component of every row of X, (n,)."""
        return np.argmax(self._log_prob_resp(X)[1], axis=1)

    def predict_proba(self, X):
        """Responsibilities p(component k | x_i), (n, k), rows summing to 1."""
        return np.exp(self._log_prob_resp(X)[1])

    def sample(self, n_samples=1):
        """Draw (X, y) from the fitted mixture with scikit-learn's NumPy draws
        (``random_state``), so the same fit gives the same sample as there."""
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling "
                f"requires at least one sample."
            )
        _, num_features = self.means_.shape
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        if self.covariance_type == "full":
            X = np.vstack([rng.multivariate_normal(mean, covariance, int(count))
                           for (mean, covariance, count) in zip(
                               self.means_, self.covariances_, counts, strict=True)])
        elif self.covariance_type == "tied":
            X = np.vstack([rng.multivariate_normal(mean, self.covariances_,
                                                   int(count))
                           for (mean, count) in zip(self.means_, counts,
                                                    strict=True)])
        else:
            X = np.vstack([
                mean + rng.standard_normal(size=(count, num_features))
                * np.sqrt(covariance)
                for (mean, covariance, count) in zip(
                    self.means_, self.covariances_, counts, strict=True)])
        y = np.concatenate([np.full(count, j, dtype=int)
                            for j, count in enumerate(counts)])
        return X, y

    def _n_parameters(self) -> int:
        """Free parameters (scikit-learn's ``_n_parameters``)."""
        num_features = self.means_.shape[1]
        return gm.num_parameters(self.n_components, num_features,
                                 self.covariance_type)

    def bic(self, X):
        """Bayesian information criterion, -2 log L + p log n (lower is better)."""
        num_rows = np.shape(X)[0]
        return (-2 * self.score(X) * num_rows
                + self._n_parameters() * np.log(num_rows))

    def aic(self, X):
        """Akaike information criterion, -2 log L + 2 p (lower is better)."""
        num_rows = np.shape(X)[0]
        return -2 * self.score(X) * num_rows + 2 * self._n_parameters()

    # ---------------------------------------------------- Bayesian, saving

    def sample_posterior(self, X, method="nuts", *, num_chains=4, num_warmup=500,
                         num_samples=500, random_state=None, prior=None,
                         posterior_predictive=False, num_steps=None):
        """The posterior of the mixture's parameters as ArviZ InferenceData.

        ``method``: "nuts" (started at the EM fit), "vi" (mean-field, from the
        EM fit; num_chains x num_samples independent draws) or "map"
        (AutoDelta, one draw), all in standardised coordinates
        (``inference.posterior``), so they run on unscaled data. Draws are
        relabelled to the fitted EM solution (``inference.align
        .relabel_samples``). Groups: ``posterior`` (the model's sites in the
        data's units), ``sample_stats``, ``observed_data`` ("x"),
        ``log_likelihood`` ("x": log p(x_i | theta) per draw and row, for
        ``az.loo``/``az.waic``/``az.compare``) and, with
        ``posterior_predictive=True``, ``posterior_predictive`` ("x": one
        replicated data set per draw). ``prior``: default this estimator's
        ``prior``, else ``default_prior(X, K)``. ``num_steps``: SVI steps of
        "vi"/"map" (default ``inference.posterior``'s). The posterior is that
        of X's rows, each counted once (the NumPyro model has no row weights,
        whatever ``sample_weight`` the EM fit had).
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        prior = prior if prior is not None else self.prior
        with computing_in(np.float64):
            return gmm_posterior(
                X, self.params_, self.covariance_type, method=method, prior=prior,
                rng_key=rng_key_from(random_state), num_chains=num_chains,
                num_warmup=num_warmup, num_samples=num_samples,
                posterior_predictive=posterior_predictive, num_steps=num_steps)

    def crosscheck(self, X, *, methods=("map", "vi", "nuts"), random_state=None,
                   **options):
        """EM against scikit-learn, MAP-EM, AutoDelta MAP, VI and NUTS on X:
        ``inference.crosscheck.crosscheck_gaussian_mixture`` with this
        estimator's K, covariance type, reg_covar and prior (``options`` go to
        it, e.g. num_samples); returns its ``CrossCheck``."""
        from latentmix.inference.crosscheck import crosscheck_gaussian_mixture

        X = validate_data(self, X, reset=not hasattr(self, "n_features_in_"),
                          dtype=np.float64)
        return crosscheck_gaussian_mixture(
            X, self.n_components, covariance_type=self.covariance_type,
            rng_key=rng_key_from(random_state), methods=methods,
            reg_covar=self.reg_covar, prior=self.prior, **options)

    def save(self, path, *, metadata=None):
        """Write the fitted model to the folder ``path`` (``inference.load``
        reads it): model.json and arrays.npz, no pickle (``saving``);
        ``metadata``: JSON values stored with it."""
        check_is_fitted(self)
        return save_estimator(self, path, metadata=metadata)


# ------------------------------------------------------------------ helpers


@partial(jax.jit, static_argnames="covariance_type")
def _e_step(params, x, *, covariance_type):
    """(log p(x_i), log responsibilities) of every row (PRML eq. 9.23)."""
    weighted = jnp.log(params.weights) + gm.component_log_prob(params, x,
                                                              covariance_type)
    log_norm = logsumexp(weighted, axis=1)
    return log_norm, weighted - log_norm[:, None]


@partial(jax.jit, static_argnames="covariance_type")
def _starts_from_responsibilities(x, resps, row_weights, reg_covar, prior, *,
                                  covariance_type):
    """One (MAP-)M-step per stack of responsibilities (r, n, k): r GMMParams."""
    return jax.vmap(lambda resp: m_step(
        x, resp, covariance_type, reg_covar=reg_covar, prior=prior,
        row_weights=row_weights))(resps)


def sklearn_covariances(covariances, covariance_type: str) -> np.ndarray:
    """Full (k, d, d) covariances in scikit-learn's shape for the type."""
    covariances = np.asarray(covariances)
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return covariances[0]
    diagonal = np.diagonal(covariances, axis1=-2, axis2=-1).copy()
    return diagonal if covariance_type == "diag" else diagonal[:, 0]


def precisions_cholesky(covariances, covariance_type: str) -> np.ndarray:
    """scikit-learn's ``precisions_cholesky_``: U upper triangular with
    precision = U U^T (full, tied), or 1 / sqrt(variance) (diag, spherical)."""
    covariances = np.asarray(covariances)
    if covariance_type in ("diag", "spherical"):
        return 1.0 / np.sqrt(covariances)
    matrices = covariances if covariance_type == "full" else covariances[None]
    eye = np.eye(matrices.shape[-1], dtype=matrices.dtype)
    factors = np.empty_like(matrices)
    for index, matrix in enumerate(matrices):
        lower = np.linalg.cholesky(matrix)
        # L^-1 by a triangular solve, transposed: U = L^-T, so U U^T = S^-1.
        factors[index] = scipy.linalg.solve_triangular(lower, eye, lower=True).T
    return factors if covariance_type == "full" else factors[0]


def from_sklearn_shapes(weights, means, matrices, covariance_type: str, *,
                        precisions: bool = False, dtype=np.float64) -> gm.GMMParams:
    """GMMParams (full covariances) from scikit-learn-shaped covariances, or
    precisions with ``precisions=True`` (inverted)."""
    weights = np.asarray(weights, dtype)
    means = np.asarray(means, dtype)
    num_components, num_features = means.shape
    matrices = np.asarray(matrices, np.float64)
    eye = np.eye(num_features)
    if covariance_type == "full":
        full = np.linalg.inv(matrices) if precisions else matrices
    elif covariance_type == "tied":
        shared = np.linalg.inv(matrices) if precisions else matrices
        full = np.broadcast_to(shared, (num_components, num_features, num_features))
    else:
        variances = 1.0 / matrices if precisions else matrices
        if covariance_type == "spherical":
            variances = np.broadcast_to(variances[:, None],
                                        (num_components, num_features))
        full = variances[:, :, None] * eye
    if covariance_type in ("full", "tied"):
        full = 0.5 * (full + np.swapaxes(full, -1, -2))  # exact symmetry
    return gm.GMMParams(weights, means, np.asarray(full, dtype))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or (
            value < minimum):
        raise ValueError(
            f"The {name!r} parameter of GaussianMixture must be an int in the "
            f"range [{minimum}, inf). Got {value!r} instead."
        )


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or (
            not value >= 0):
        raise ValueError(
            f"The {name!r} parameter of GaussianMixture must be a float in the "
            f"range [0.0, inf). Got {value!r} instead."
        )


def _check_shape(array, shape, name):
    if array.shape != shape:
        raise ValueError(
            f"The parameter '{name}' should have the shape of {shape}, but got "
            f"{array.shape}"
        )


def check_weights(weights, num_components: int) -> np.ndarray:
    """scikit-learn's checks of ``weights_init`` (range, shape, normalisation)."""
    weights = np.asarray(weights, dtype=np.float64)
    _check_shape(weights, (num_components,), "weights")
    if np.any(weights < 0.0) or np.any(weights > 1.0):
        raise ValueError(
            f"The parameter 'weights' should be in the range [0, 1], but got max "
            f"value {np.max(weights):.5f}, min value {np.min(weights):.5f}"
        )
    if not np.allclose(abs(1.0 - np.sum(weights)), 0.0, atol=1e-8):
        raise ValueError(
            f"The parameter 'weights' should be normalized, but got sum(weights) "
            f"= {np.sum(weights):.5f}"
        )
    return weights


def check_precisions(precisions, covariance_type: str, num_components: int,
                     num_features: int) -> np.ndarray:
    """scikit-learn's checks of ``precisions_init`` (shape, positivity)."""
    precisions = np.asarray(precisions, dtype=np.float64)
    shape = {"full": (num_components, num_features, num_features),
             "tied": (num_features, num_features),
             "diag": (num_components, num_features),
             "spherical": (num_components,)}[covariance_type]
    _check_shape(precisions, shape, f"{covariance_type} precision")
    if covariance_type in ("full", "tied"):
        matrices = precisions if covariance_type == "full" else precisions[None]
        for matrix in matrices:
            if not (np.allclose(matrix, matrix.T)
                    and np.all(np.linalg.eigvalsh(matrix) > 0.0)):
                raise ValueError(f"'{covariance_type} precision' should be "
                                 f"symmetric, positive-definite")
    elif np.any(precisions <= 0.0):
        raise ValueError(f"'{covariance_type} precision' should be positive")
    return precisions


register(GaussianMixture, gm.GMMPrior)
