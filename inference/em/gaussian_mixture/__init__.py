"""EM for the Gaussian mixture: maximum likelihood or MAP, four covariance types.

Map of the package, in reading order (each module imports only those below it):

  fit.py       ``fit_gaussian_mixture`` (the best restart, with warnings about
               the fit) and ``fit_gaussian_mixture_restarts`` (every restart);
  chunked.py   ``fit_gaussian_mixture_chunked``: out of core, every iteration
               streams a ``data.chunks.ChunkedRows``;
  online.py    ``fit_gaussian_mixture_online``: stepwise EM over batches, one
               M-step per batch; ``OnlineState`` and ``online_step`` (what an
               estimator's ``partial_fit`` calls);
  outcome.py   the best restart of a fit and the warnings about it (shared by
               fit.py and chunked.py);
  sweep.py     ``fit_gaussian_mixture_sweep``: a whole K sweep as one program;
  restarts.py  the jitted core: the problem every restart shares (centred data,
               per-row products), one restart (start, ``driver.run_em``,
               finish), every restart under one vmap, screening;
  checks.py    checks at the Python boundary: data, options, init, prior;
  starts.py    k-means++ / Lloyd / "random_from_data" starts (``INIT_METHODS``);
  steps.py     the maths: E-step, sufficient statistics ``GMMStats``, M-step
               (one function per covariance type), reseeding, objective;
  blocked.py   full-covariance statistics in row blocks, two matrix products
               per block (when the per-row products do not fit in memory);
  pairs.py     the per-row products x_ij x_il laid out for fast building.

A call of ``fit_gaussian_mixture`` walks down fit.py -> restarts.py -> steps.py.

E-step (article 2, step 3; PRML eq. 9.23): responsibilities
    gamma_ic = weights_c N(x_i | mu_c, S_c) / sum_j weights_j N(x_i | mu_j, S_j),
computed in log space (``steps.e_step``).

M-step (article 3; PRML eq. 9.24-9.27) with N_c = sum_i gamma_ic, xbar_c the
gamma-weighted mean and W_c = sum_i gamma_ic (x_i - mu_c)(x_i - mu_c)^T the
weighted scatter about the *new* mean, both read off the sufficient statistics
``GMMStats`` (sums over rows, so they add up over chunks and devices):

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
gets ``10 * eps`` so an empty component never divides by zero
(``steps.m_step_from_statistics``: one function per covariance row of the table).

Objective and stopping rule. Without a prior the objective is the mean per-row
log-likelihood (1/n) sum_i log p(x_i | theta), as scikit-learn's ``lower_bound_``;
with a prior it is the mean per-row log posterior (1/n)[sum_i log p(x_i | theta) +
log p(theta)] (the NumPyro model's log joint divided by n). EM never decreases
either. ``trace[t]`` is the objective at the parameters entering iteration t + 1;
the loop stops after iteration t >= 2 once |trace[t] - trace[t - 1]| < tol +
rtol |trace[t]|, when the objective turns non-finite (that restart is then
failed, never converged) or at ``max_iters`` (``inference.em.driver.run_em``).

Defaults: max_iters=100, tol=1e-3 and rtol=0 are scikit-learn's
(``GaussianMixture``'s max_iter and tol), since its users expect them; the
objective being a mean per row, tol=1e-3 is an absolute change of a thousandth
of a nat per row, whatever n. (The multinomial mixture keeps 1000 / 1e-6 for
the reasons its module gives.) When every restart fails,
``driver.AllRestartsFailedError`` (a FloatingPointError) names the cause and
what to change.

Numerics and speed: ``steps`` (matrix products, expanded squares, the collapse
check, reseeding) and ``restarts`` (centring); every program that reads the
rows is compiled by ``inference.compiler.em_jit`` and every fit runs with BLAS
on one thread (``inference.threads``), both measured in docs/benchmarks.md.
Scale: rows carry weights (0 for
padding), so the same core runs with the rows sharded over several devices
(``devices``, ``inference.sharding``), out of core over chunks (``chunked``),
and with masked padding components in a one-program K sweep (``sweep``).
"""

from latentmix.inference.em.driver import EMRestarts
from latentmix.inference.em.gaussian_mixture.chunked import (
    fit_gaussian_mixture_chunked,
)
from latentmix.inference.em.gaussian_mixture.fit import (
    fit_gaussian_mixture,
    fit_gaussian_mixture_restarts,
)
from latentmix.inference.em.gaussian_mixture.online import (
    OnlineOptions,
    OnlineResult,
    OnlineState,
    fit_gaussian_mixture_online,
    online_start,
    online_step,
)
from latentmix.inference.em.gaussian_mixture.restarts import PRODUCTS_MAX_ELEMENTS
from latentmix.inference.em.gaussian_mixture.starts import INIT_METHODS
from latentmix.inference.em.gaussian_mixture.steps import (
    EMPTY_COMPONENT_COUNT,
    GMMStats,
    add_statistics,
    e_step,
    elbo,
    m_step,
    m_step_from_statistics,
    objective,
    row_products,
    statistics,
)
from latentmix.inference.em.gaussian_mixture.sweep import fit_gaussian_mixture_sweep
from latentmix.models.gaussian_mixture import GMMPrior

# Every restart of a fit: the driver's EMRestarts, under the name it always had.
GMMRestarts = EMRestarts

__all__ = [
    "EMPTY_COMPONENT_COUNT",
    "GMMPrior",
    "GMMRestarts",
    "GMMStats",
    "INIT_METHODS",
    "OnlineOptions",
    "OnlineResult",
    "OnlineState",
    "PRODUCTS_MAX_ELEMENTS",
    "add_statistics",
    "e_step",
    "elbo",
    "fit_gaussian_mixture",
    "fit_gaussian_mixture_chunked",
    "fit_gaussian_mixture_online",
    "fit_gaussian_mixture_restarts",
    "fit_gaussian_mixture_sweep",
    "m_step",
    "m_step_from_statistics",
    "objective",
    "online_start",
    "online_step",
    "row_products",
    "statistics",
]
