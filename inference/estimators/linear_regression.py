"""``BayesianLinearRegression``: a regressor in the manner of ``BayesianRidge``.

Model (docs/linear_regression.md): w ~ N(0, 1/lambda I), y ~ N(X w + b, 1/alpha),
with scikit-learn's names: ``alpha_`` the noise precision, ``lambda_`` the
weights' precision. ``fit`` maximises the evidence over both by EM
(``inference.em.fit_linear_regression``, a thin layer over it), and keeps the
Gaussian posterior of w at those precisions: ``coef_`` its mean, ``sigma_`` its
covariance, ``scores_`` the log evidence per iteration, ``predict(X,
return_std=True)`` the posterior predictive mean and sd.

The intercept b (``fit_intercept=True``):
  * ``penalize_intercept=False`` (default, BayesianRidge's): X and y are
    centred, the model fitted without intercept, and b = mean(y) - mean(X) coef_
    (an unpenalised intercept); predictions then equal BayesianRidge's at its
    precisions (its fixed point is the same, up to its Gamma(1e-6, 1e-6)
    hyperpriors); the predictive variance is 1/alpha + (x - mean(X))^T sigma_
    (x - mean(X)), as scikit-learn computes it;
  * ``penalize_intercept=True`` (``scripts/fit.py``'s model): a column of ones
    is prepended and its weight gets the same N(0, 1/lambda) prior as the
    others; ``intercept_`` is that weight's posterior mean and the predictive
    variance uses the whole posterior covariance (``posterior_cov_``).

Feature maps for curves y = f(x) are ``PolynomialBasis`` and ``GaussianBasis``
(``basis``), usable in a ``sklearn.pipeline.Pipeline`` before this estimator.
"""

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from latentmix.data.validation import warn
from latentmix.inference.em import fit_linear_regression
from latentmix.inference.em.driver import ConvergenceWarning as EMConvergenceWarning
from latentmix.inference.estimators.common import (
    ConvergenceWarning,
    computing_in,
    rng_key_from,
)
from latentmix.inference.estimators.posterior import regression_posterior
from latentmix.inference.estimators.saving import register, save_estimator

__all__ = ["BayesianLinearRegression"]


class BayesianLinearRegression(RegressorMixin, BaseEstimator):
    """Bayesian linear regression with evidence-maximised precisions.

    Parameters
    ----------
    fit_intercept : bool, default=True
    penalize_intercept : bool, default=False
        The intercept's treatment (module docstring).
    max_iter : int, default=10000
        EM iterations (EM converges linearly here; each is cheap).
    tol : float, default=1e-10
        Stop when the log evidence (nats) changes by less.
    alpha_init, lambda_init : float or None
        Starting noise precision (default 1 / var(y), as BayesianRidge) and
        weights precision (default 1).

    Attributes
    ----------
    coef_ : (p,) posterior mean of the weights
    intercept_ : float
    sigma_ : (p, p) posterior covariance of coef_
    alpha_, lambda_ : noise and weights precisions
    scores_ : (n_iter_,) log evidence at the start of each EM iteration
    log_evidence_ : the log evidence at the returned precisions
    n_iter_, converged_
    posterior_mean_, posterior_cov_ : the posterior of the model's whole weight
        vector (with the bias first when ``penalize_intercept``)
    X_offset_, y_offset_ : the centring (zeros unless the intercept is
        unpenalised)
    n_features_in_, feature_names_in_
    """

    _saved_attributes = ("coef_", "intercept_", "sigma_", "alpha_", "lambda_",
                         "scores_", "log_evidence_", "n_iter_", "converged_",
                         "posterior_mean_", "posterior_cov_", "X_offset_",
                         "y_offset_", "n_features_in_")

    def __init__(self, *, fit_intercept=True, penalize_intercept=False,
                 max_iter=10_000, tol=1e-10, alpha_init=None, lambda_init=None):
        self.fit_intercept = fit_intercept
        self.penalize_intercept = penalize_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_init = alpha_init
        self.lambda_init = lambda_init

    @classmethod
    def from_result(cls, result, *, fit_intercept=True, penalize_intercept=True,
                    feature_names=None, **params):
        """A fitted estimator from ``fit_linear_regression``'s EMResult on a
        design matrix whose first column is the bias (with ``fit_intercept``
        and ``penalize_intercept``) or has no bias column (``fit_intercept=
        False``); ``feature_names`` name the columns without the bias."""
        if fit_intercept and not penalize_intercept:
            raise ValueError("from_result reads a fit on the design matrix itself: "
                             "use penalize_intercept=True or fit_intercept=False")
        est = cls(fit_intercept=fit_intercept, penalize_intercept=penalize_intercept,
                  **params)
        mean = np.asarray(result.params.mean)
        num_features = mean.shape[0] - int(fit_intercept)
        est._set_fitted(result, np.zeros(num_features), 0.0)
        if feature_names is not None:
            est.feature_names_in_ = np.asarray([str(n) for n in feature_names],
                                               dtype=object)
        return est

    def fit(self, X, y):
        """Fit the precisions by EM and the posterior of the weights. Returns self."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32],
                             y_numeric=True, ensure_min_samples=2)
        # One dtype for both: the EM's loop carry takes X's (float32 X with a
        # float64 y would mix them).
        y = np.asarray(y, X.dtype)
        _check_int("max_iter", self.max_iter, 0)
        design, y_fit, X_offset, y_offset = self._design(X, y)
        options = {}
        if self.lambda_init is not None:
            options["init_prior_precision"] = self.lambda_init
        if self.alpha_init is not None:
            options["init_noise_precision"] = self.alpha_init
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EMConvergenceWarning)
            result = fit_linear_regression(design, y_fit, max_iters=self.max_iter,
                                           tol=self.tol, **options)
        for item in caught:
            if not issubclass(item.category, EMConvergenceWarning):
                warnings.warn_explicit(item.message, item.category, item.filename,
                                       item.lineno)
        self._set_fitted(result, X_offset, y_offset)
        if not self.converged_ and self.max_iter > 0:
            warn(f"EM for the precisions did not converge in max_iter="
                 f"{self.max_iter} iterations (tol={self.tol}); increase max_iter "
                 f"or tol", ConvergenceWarning)
        return self

    def _design(self, X, y=None):
        """(design matrix, target, X offset, y offset) of the model."""
        X = np.asarray(X)
        num_features = X.shape[1]
        if self.fit_intercept and self.penalize_intercept:
            design = np.column_stack([np.ones(len(X), X.dtype), X])
            return design, y, np.zeros(num_features, X.dtype), 0.0
        if self.fit_intercept:
            X_offset = X.mean(axis=0)
            y_offset = float(np.mean(y)) if y is not None else 0.0
            return X - X_offset, None if y is None else y - y_offset, X_offset, y_offset
        return X, y, np.zeros(num_features, X.dtype), 0.0

    def _set_fitted(self, result, X_offset, y_offset) -> None:
        params = result.params
        mean, cov = np.asarray(params.mean), np.asarray(params.cov)
        bias = self.fit_intercept and self.penalize_intercept
        self.posterior_mean_, self.posterior_cov_ = mean, cov
        self.coef_ = mean[1:] if bias else mean
        self.sigma_ = cov[1:, 1:] if bias else cov
        self.X_offset_ = np.asarray(X_offset, mean.dtype)
        self.y_offset_ = float(y_offset)
        if bias:
            self.intercept_ = float(mean[0])
        elif self.fit_intercept:
            self.intercept_ = float(self.y_offset_ - self.X_offset_ @ self.coef_)
        else:
            self.intercept_ = 0.0
        self.alpha_ = float(params.noise_precision)
        self.lambda_ = float(params.prior_precision)
        num_iters = int(result.num_iters)
        self.n_iter_ = num_iters
        self.converged_ = bool(result.converged)
        self.scores_ = np.asarray(result.trace)[:num_iters]
        self.log_evidence_ = float(result.log_likelihood)
        self.n_features_in_ = self.coef_.shape[0]

    def predict(self, X, return_std=False):
        """Posterior predictive mean (and sd with ``return_std``) for X's rows."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        mean = X @ self.coef_ + self.intercept_
        if not return_std:
            return mean
        if self.fit_intercept and self.penalize_intercept:
            rows = np.column_stack([np.ones(len(X)), X])
            cov = self.posterior_cov_
        else:
            rows, cov = X - self.X_offset_, self.sigma_
        variance = np.einsum("ij,jk,ik->i", rows, cov, rows) + 1.0 / self.alpha_
        return mean, np.sqrt(variance)

    def sample_posterior(self, X, y, method="nuts", *, num_chains=4, num_warmup=500,
                         num_samples=500, random_state=None, sample_precisions=False,
                         posterior_predictive=False, num_steps=None):
        """The posterior of the weights as ArviZ InferenceData.

        "nuts", "vi" (full-rank Gaussian, in the posterior precision's whitened
        coordinates) or "map", with the precisions fixed at the EM estimate
        (the posterior the closed form gives); ``sample_precisions=True``
        (NUTS) samples them too under their Gamma(1e-6, 1e-6) hyperpriors.
        Posterior sites "coef" and "intercept" (and "prior_precision",
        "noise_precision" when sampled); observed_data and log_likelihood "y"
        (log N(y_i | x_i^T w + b, 1/alpha) per draw and row).
        """
        check_is_fitted(self)
        X, y = validate_data(self, X, y, reset=False, dtype=np.float64,
                             y_numeric=True)
        design, y_fit, _, _ = self._design(X, y)
        if self.fit_intercept and not self.penalize_intercept:
            # The fitted centring, so that the draws belong to the fitted model.
            design, y_fit = X - self.X_offset_, y - self.y_offset_
        with computing_in(np.float64):
            return regression_posterior(
                design, y_fit, observed=y, prior_precision=self.lambda_,
                noise_precision=self.alpha_, method=method,
                rng_key=rng_key_from(random_state), num_chains=num_chains,
                num_warmup=num_warmup, num_samples=num_samples,
                posterior_predictive=posterior_predictive,
                sample_precisions=sample_precisions, derived=self._derived,
                num_steps=num_steps)

    def _derived(self, w) -> dict:
        """The shown sites of draws of the model's weights w (..., p)."""
        if self.fit_intercept and self.penalize_intercept:
            return {"coef": w[..., 1:], "intercept": w[..., 0]}
        if self.fit_intercept:
            return {"coef": w, "intercept": self.y_offset_ - w @ self.X_offset_}
        return {"coef": w}

    def crosscheck(self, X, y, *, methods=None, random_state=None, **options):
        """``inference.crosscheck.crosscheck_linear_regression`` on the model's
        design matrix (centred, or with the bias column); returns its
        ``CrossCheck``."""
        from latentmix.inference.crosscheck import crosscheck_linear_regression
        from latentmix.inference.crosscheck.linear_regression import (
            DEFAULT_METHODS,
        )

        X, y = validate_data(self, X, y, reset=not hasattr(self, "n_features_in_"),
                             dtype=np.float64, y_numeric=True)
        design, y_fit, _, _ = self._design(X, y)
        names = [f"x{j}" for j in range(X.shape[1])]
        if self.fit_intercept and self.penalize_intercept:
            names = ["bias", *names]
        return crosscheck_linear_regression(
            design, y_fit, rng_key=rng_key_from(random_state),
            methods=DEFAULT_METHODS if methods is None else methods,
            feature_names=names, **options)

    def save(self, path, *, metadata=None):
        """Write the fitted model to the folder ``path`` (``inference.load``)."""
        check_is_fitted(self)
        return save_estimator(self, path, metadata=metadata)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or (
            value < minimum):
        raise ValueError(
            f"The {name!r} parameter of BayesianLinearRegression must be an int in "
            f"the range [{minimum}, inf). Got {value!r} instead."
        )


register(BayesianLinearRegression)
