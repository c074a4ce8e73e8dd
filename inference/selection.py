"""Model selection: information criteria on the -2 log-likelihood scale.

All criteria take the *total* log-likelihood sum_i log p(x_i | theta_hat) of the
data they are computed on, and are "lower is better":

    AIC = -2 LL + 2 p
    BIC = -2 LL + p ln N                       (Schwarz 1978)
    ICL = BIC + 2 EN(gamma),  EN = -sum_i sum_k gamma_ik ln gamma_ik   (Biernacki,
          Celeux & Govaert 2000), the soft classification entropy, so ICL >= BIC.

p is the number of free parameters; each model module states its count.
The tutorial's reference code used K(K-1) instead of K(C-1) in p, mixed the half
and full scales, and subtracted the entropy; none of that is repeated here.
"""

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

__all__ = ["aic", "bic", "icl", "classification_entropy"]


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
