"""EM for the multinomial mixture, global or with per-group weights.

Model and notation: ``models.multinomial_mixture`` (article 4, §4.2 and §4.7).

The package, in reading order (each module imports only those below it):

* ``fit``      the public fits: ``fit_multinomial_mixture`` (the best restart)
               and ``fit_multinomial_mixture_restarts`` (every restart).
* ``sweep``    ``fit_multinomial_mixture_sweep``: a K sweep in one compiled
               program (components padded to K_max and masked).
* ``chunked``  ``fit_multinomial_mixture_chunked``: out-of-core EM over a
               ``data.chunks.ChunkedRows``, one pass over the rows per iteration.
* ``online``   ``fit_multinomial_mixture_online``: stepwise EM over batches;
               ``MultinomialOnlineState`` and ``multinomial_online_step``.
* ``restarts`` random starts, ``run_restarts`` (the one jitted program: every
               restart under vmap, global stage then grouped stage, optional
               screening), the best restart and what a fit warns or raises.
* ``counts``   host-side preparation: validation, empty rows, groups, exact
               row folding, ``choose_layout``, size buckets, device data and
               sharding.
* ``checks``   argument checks: options, dtype (float32's exact-count range),
               prior, init (one start or stacked starts), layout.
* ``steps``    the maths, importing no sibling: the E-step (log kernel,
               responsibilities, objective with the masked log prior of a
               padded sweep) and the (MAP) M-step (sufficient statistics,
               update), for the dense and sparse layouts.

A call of ``fit_multinomial_mixture`` goes down: fit -> restarts.run_restarts
-> restarts.run_stage -> steps.e_step / steps.m_step.

Derivation (details in each module). Distinct non-empty rows are folded into
weighted rows: row i has multiplicity v_i (how many baskets share its counts,
and its group in the grouped model), and N = sum_i v_i is the number of
non-empty baskets. Folding is exact: every sum below is the same sum over the
original rows, grouped differently.

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
tol + rtol |objective_t|. The defaults, max_iters = 1000, tol = 1e-6 nats per
basket (absolute) and rtol = 0, differ on purpose from the Gaussian mixture's
scikit-learn defaults (max_iters = 100, tol = 1e-3): the tutorial's rtol = 1e-4
on ~20 nats per basket allows changes of 2e-3 nats per basket, i.e. hundreds of
nats over 10^5 baskets, which is more than the BIC differences it is used to
compare, so the rule here is absolute and much tighter, and EM, slow near a flat
optimum, gets the iterations to meet it. Pass rtol=1e-4, tol=0 to reproduce the
reference protocol.

Zero probabilities. Maximum-likelihood EM sets p_kc = 0 when no basket of
component k holds category c. The inner loop writes log 0 as LOG_ZERO = -1e30 so
that the matrix product sum_c x_ic log p_kc stays exact where x_ic = 0 (a true
-inf would give 0 * -inf = NaN); where x_ic > 0 the row's log-density for
component k falls below -1e30, so its responsibility is exactly 0, as with -inf.
A row impossible under every component gets log p(x_i) = -inf, and the
objective turns non-finite: such a restart has failed and is never reported as
converged; when every restart fails, ``fit_multinomial_mixture`` raises
``driver.AllRestartsFailedError`` (a FloatingPointError).

Layout (``counts``). The E-step needs X @ log(P).T and the M-step
(v gamma).T @ X: BLAS matmuls on a dense matrix, or a gather and segment_sum
over the non-zeros. A stored entry costs about 40 times a dense cell, so
``choose_layout`` picks the sparse path only below 2% non-zero cells
(SPARSE_DENSITY_THRESHOLD) or when the dense matrix would exceed 2 GiB
(DENSE_MAX_BYTES). The choice depends only on the folded rows, never on the input
format, so dense and sparse inputs of the same counts give bit-identical fits.
Rows are padded with zero-weight rows to a size bucket (at most 1/8 larger), so
data sets of similar size reuse the compiled core.

Devices (``devices=``, issue 6 §2; ``counts``). N_k, S_kc and the objective are
sums over rows, so the folded rows are padded to a multiple of the device count
and sharded over a one-axis mesh (``inference.sharding``), the parameters are
replicated, and the *same* jitted core runs: GSPMD turns each contraction over
rows into per-device partial sums plus an all-reduce. The result equals the
single-device fit up to the order of floating-point summation. Only the dense
layout is sharded.

Restarts (``restarts``) run under ``vmap``; each restart's while loop stops on
its own rule, and the restart with the highest finite final objective is
returned. With ``screen_iters`` = s > 0 (global model only) every restart runs
s iterations and only the best continues.

References:
  1. Dempster, Laird & Rubin (1977), Maximum likelihood from incomplete data via
     the EM algorithm.
  2. Cadez, Smyth, Ip & Mannila (2001), Predictive profiles for transaction data
     using finite mixture models (UCI TR 01-67).
  3. Biernacki, Celeux & Govaert (2003), Choosing starting values for the EM
     algorithm for getting the highest likelihood in multivariate Gaussian
     mixture models.
"""

from latentmix.inference.em.multinomial_mixture.checks import FLOAT32_MAX_EXACT
from latentmix.inference.em.multinomial_mixture.chunked import (
    ChunkSummary,
    fit_multinomial_mixture_chunked,
    summarise_chunks,
)
from latentmix.inference.em.multinomial_mixture.counts import (
    DENSE_MAX_BYTES,
    SPARSE_DENSITY_THRESHOLD,
    choose_layout,
)
from latentmix.inference.em.multinomial_mixture.fit import (
    fit_multinomial_mixture,
    fit_multinomial_mixture_restarts,
)
from latentmix.inference.em.multinomial_mixture.online import (
    MultinomialOnlineResult,
    MultinomialOnlineState,
    fit_multinomial_mixture_online,
    multinomial_online_start,
    multinomial_online_step,
)
from latentmix.inference.em.multinomial_mixture.steps import LOG_ZERO
from latentmix.inference.em.multinomial_mixture.sweep import (
    fit_multinomial_mixture_sweep,
)

__all__ = [
    "DENSE_MAX_BYTES",
    "FLOAT32_MAX_EXACT",
    "LOG_ZERO",
    "SPARSE_DENSITY_THRESHOLD",
    "ChunkSummary",
    "MultinomialOnlineResult",
    "MultinomialOnlineState",
    "choose_layout",
    "fit_multinomial_mixture",
    "fit_multinomial_mixture_chunked",
    "fit_multinomial_mixture_online",
    "fit_multinomial_mixture_restarts",
    "fit_multinomial_mixture_sweep",
    "multinomial_online_start",
    "multinomial_online_step",
    "summarise_chunks",
]
