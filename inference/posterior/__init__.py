"""Scale-free Bayesian inference: MAP, VI and NUTS in standardised coordinates.

Bayesian inference must not depend on the units of the user's columns, but its
algorithms do: Adam takes steps of the same size in every coordinate, and NUTS
starts its warmup with a unit mass matrix. On raw columns whose scales differ by
1e3 both fail (MAP and VI several posterior sds off; NUTS at its maximum tree
depth for hours). So every model is fitted in the coordinates that standardising
its data induces, with the prior mapped consistently, and the results mapped
back: the posterior in the original units is exactly the one the model defines
(an affine map has a constant Jacobian).

  ``linear_regression``: w_std = A w + c: the posterior precision's whitened
      coordinates with the precisions fixed (``whitening_map``), else those in
      which X and y are standardised (``standardising_map``); the model samples
      w_std and records w.
  ``gaussian_mixture``: the data are standardised column by column (one common
      scale for "spherical"), the conjugate prior mapped
      (``models.gaussian_mixture.standardise_prior``), draws and estimates
      mapped back (``unstandardise_sites``).
  ``multinomial_mixture``: counts have no units; the same entry points, no map.

Every entry point starts from the EM (or MAP-EM) estimate, uses a dense mass
matrix for NUTS when the model has at most ``DENSE_MASS_MAX_DIM`` values, and
passes ``callback`` to the chunked samplers and optimisers
(``inference.mcmc``, ``inference.svi``).
"""

from latentmix.inference.posterior.gaussian_mixture import gmm_map, gmm_nuts, gmm_vi
from latentmix.inference.posterior.linear_regression import (
    regression_map,
    regression_nuts,
    regression_vi,
)
from latentmix.inference.posterior.multinomial_mixture import (
    multinomial_map,
    multinomial_nuts,
    multinomial_vi,
)
from latentmix.inference.posterior.sizes import DENSE_MASS_MAX_DIM, use_dense_mass

__all__ = [
    "DENSE_MASS_MAX_DIM",
    "gmm_map",
    "gmm_nuts",
    "gmm_vi",
    "multinomial_map",
    "multinomial_nuts",
    "multinomial_vi",
    "regression_map",
    "regression_nuts",
    "regression_vi",
    "use_dense_mass",
]
