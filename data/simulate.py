"""Simulators: draw synthetic data sets from known parameters.

The data layer sits below the models (imports flow data -> models -> inference), so
the simulators take parameters by duck typing (any object with the named array
fields) instead of importing the models' NamedTuples. ``models.gaussian_mixture
.sample`` validates its parameters and calls ``simulate_gaussian_mixture``, so the
generative process is written once.
"""

import jax
import jax.numpy as jnp

__all__ = ["simulate_gaussian_mixture"]


def simulate_gaussian_mixture(rng_key, params, num_samples: int):
    """Draw ``num_samples`` rows from a Gaussian mixture (ancestral sampling).

    t_i ~ Categorical(weights), x_i | t_i = c ~ N(means_c, covariances_c).

    Args:
      rng_key: a JAX PRNG key.
      params: object with ``weights`` (k,), ``means`` (k, d) and ``covariances``
        (k, d, d) (e.g. ``models.gaussian_mixture.GMMParams``).
      num_samples: number of rows n.

    Returns:
      ``(x, labels)``: x (n, d) in the dtype of ``params.means`` and the component
      label of each row (n,), as ``sklearn.mixture.GaussianMixture.sample``.
    """
    weights = jnp.asarray(params.weights)
    means = jnp.asarray(params.means)
    covariances = jnp.asarray(params.covariances, means.dtype)
    key_labels, key_noise = jax.random.split(rng_key)
    labels = jax.random.categorical(
        key_labels, jnp.log(weights), shape=(int(num_samples),)
    )
    shape = (int(num_samples), means.shape[1])
    noise = jax.random.normal(key_noise, shape, means.dtype)
    # Cholesky factors map standard normal noise to N(0, covariance): x = mu + L z.
    chol = jnp.linalg.cholesky(covariances)
    x = means[labels] + jnp.einsum("nij,nj->ni", chol[labels], noise)
    return x, labels
