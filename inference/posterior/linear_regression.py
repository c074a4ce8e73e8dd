"""MAP, VI and NUTS for Bayesian linear regression, in standardised coordinates.

The model samples w_std = A w + c and records w itself; the posterior of w is
exactly the model's. With both precisions fixed, MAP, VI and NUTS run in the
whitened coordinates L^T w of the posterior precision alpha I + beta X^T X
(``whitening_map``), where the posterior is N(L^T m, I) whatever the units and
correlations of the columns (standardising X and y is not enough when the
prior, not the data, sets a weight's scale: a target offset of 1e7 with a
penalised bias left MAP 7e6 posterior sds off). NUTS with sampled precisions
uses the coordinates in which X and y are standardised
(``models.linear_regression.standardising_map``) and a dense mass matrix. A variational
Gaussian q(w_std) = N(m', S') is q(w) = N(A^-1 (m' - c), A^-1 S' A^-T) in the
data's units (``vi_moments``).
"""

import numpy as np

from latentmix.inference.mcmc import SamplingInterrupted, run_nuts
from latentmix.inference.posterior.pointwise import (
    add_log_likelihood,
    regression_log_likelihood,
)
from latentmix.inference.posterior.sizes import DENSE_MASS_MAX_DIM
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.svi import fit_map, fit_vi
from latentmix.models.linear_regression import (
    WeightsMap,
    model,
    posterior,
    standardising_map,
    whitening_map,
)

__all__ = ["regression_map", "regression_nuts", "regression_vi", "vi_moments"]


@follows_input_precision
def regression_map(X, y, *, prior_precision, noise_precision, rng_key,
                   num_steps: int = 3000, callback=None):
    """AutoDelta MAP of w with the precisions fixed; returns (SVIResult, w).

    The SVIResult's ``params`` hold "w" in the data's units (and "w_std"); its
    guide works in the posterior precision's whitened coordinates.
    """
    # Whitened coordinates (the posterior precision's Cholesky factor): the
    # objective is exactly a unit quadratic there whatever the units or the
    # correlations of the columns, so the BFGS polish lands on the mode. (The
    # standardising map is not enough when the prior, not the data, sets a
    # weight's scale: a target offset of 1e7 with a penalised bias.)
    weights_map = whitening_map(X, prior_precision, noise_precision)
    fit = fit_map(model, X, y, rng_key=rng_key, num_steps=num_steps,
                  learning_rate=0.05, final_lr_ratio=1e-2,
                  init_params={"w_std": np.asarray(weights_map.offset)},
                  prior_precision=prior_precision, noise_precision=noise_precision,
                  weights_map=weights_map, callback=callback)
    w = _weights(fit.params["w_std"], weights_map)
    return fit._replace(params={**fit.params, "w": w}), w


@follows_input_precision
def regression_vi(X, y, *, prior_precision, noise_precision, rng_key,
                  guide: str = "mvn", num_steps: int = 2000, num_particles: int = 32,
                  final_lr_ratio: float = 1e-3, callback=None):
    """Gaussian VI of w with the precisions fixed; returns (SVIResult, WeightsMap).

    ``vi_moments(fit, weights_map)`` gives the variational mean and covariance
    of w in the data's units.
    """
    weights_map = whitening_map(X, prior_precision, noise_precision)
    # Started at the MAP (the mode of this Gaussian posterior, in closed form),
    # as NUTS starts at the EM fit: in whitened coordinates the prior mean lies
    # ~sqrt(n) posterior sds away, too far for Adam's decaying steps.
    mode = np.asarray(posterior(X, y, prior_precision, noise_precision).mean)
    fit = fit_vi(model, X, y, rng_key=rng_key, guide=guide, learning_rate=0.05,
                 num_steps=num_steps, num_particles=num_particles,
                 final_lr_ratio=final_lr_ratio,
                 init_params={"w_std": np.asarray(weights_map.matrix) @ mode},
                 prior_precision=prior_precision, noise_precision=noise_precision,
                 weights_map=weights_map, callback=callback)
    return fit, weights_map


def vi_moments(fit, weights_map: WeightsMap, standardised: bool = False):
    """(mean, covariance) of the variational Gaussian: of w, or of w_std."""
    if "w_std_auto_loc" in fit.guide_params and "w_std_auto_scale" in fit.guide_params:
        mean = np.asarray(fit.guide_params["w_std_auto_loc"])
        cov = np.diag(np.asarray(fit.guide_params["w_std_auto_scale"]) ** 2)
    else:
        q = fit.guide.get_posterior(fit.guide_params)  # w_std space = unconstrained
        mean, cov = np.asarray(q.loc), np.asarray(q.covariance_matrix)
    if standardised:
        return mean, cov
    inverse = np.linalg.inv(np.asarray(weights_map.matrix))
    return inverse @ (mean - np.asarray(weights_map.offset)), inverse @ cov @ inverse.T


@follows_input_precision
def regression_nuts(X, y, *, prior_precision=None, noise_precision=None, rng_key,
                    init_precisions=None, num_chains: int = 4, num_warmup: int = 500,
                    num_samples: int = 1000, callback=None):
    """NUTS on w (and the precisions left as None), in standardised coordinates.

    ``init_precisions`` (prior, noise) starts sampled precisions there (e.g. the
    EM estimate); w starts at the prior mean. The posterior group holds "w"
    (and the sampled precisions) in the data's units; log_likelihood "y" holds
    log N(y_i | x_i^T w, 1 / beta) per draw and row (``pointwise``).
    """
    if prior_precision is not None and noise_precision is not None:
        # Fixed precisions: the posterior of w is Gaussian, N(L^T m, I) in the
        # whitened coordinates of its precision (unit mass matrix is exact).
        weights_map = whitening_map(X, prior_precision, noise_precision)
    else:
        weights_map = standardising_map(X, y)
    start = {"w_std": np.asarray(weights_map.offset)}
    if init_precisions is not None:
        for name, value, fixed in zip(("prior_precision", "noise_precision"),
                                      init_precisions,
                                      (prior_precision, noise_precision), strict=True):
            if fixed is None:
                start[name] = np.asarray(value)
    dense = np.asarray(X).shape[1] + 2 <= DENSE_MASS_MAX_DIM
    try:
        idata = run_nuts(model, X, y, rng_key=rng_key, num_chains=num_chains,
                         num_warmup=num_warmup, num_samples=num_samples,
                         init_params=start, dense_mass=dense, callback=callback,
                         drop_sites=("w_std",), prior_precision=prior_precision,
                         noise_precision=noise_precision, weights_map=weights_map)
    except SamplingInterrupted as interrupt:
        interrupt.idata = _with_log_likelihood(interrupt.idata, X, y,
                                               noise_precision)
        raise
    return _with_log_likelihood(idata, X, y, noise_precision)


def _with_log_likelihood(idata, X, y, noise_precision):
    if idata is None:
        return None
    draws = {name: idata.posterior[name].values for name in idata.posterior}
    return add_log_likelihood(idata, "y", regression_log_likelihood(
        draws, np.asarray(X), np.asarray(y), noise_precision))


def _weights(w_std, weights_map: WeightsMap) -> np.ndarray:
    return np.linalg.solve(np.asarray(weights_map.matrix),
                           np.asarray(w_std) - np.asarray(weights_map.offset))
