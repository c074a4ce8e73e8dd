"""When NUTS can afford a dense mass matrix."""

import numpy as np

__all__ = ["DENSE_MASS_MAX_DIM", "use_dense_mass"]

# A dense mass matrix costs a p x p Cholesky per adaptation window and p^2 per
# leapfrog step; up to a few hundred values that is noise next to the model's
# gradient, and it removes the correlations (a mixture's means and covariances,
# regression weights) that slow a diagonal NUTS down.
DENSE_MASS_MAX_DIM = 400


def use_dense_mass(sites: dict) -> bool:
    """True when the sites hold at most ``DENSE_MASS_MAX_DIM`` values in all."""
    return sum(int(np.size(value)) for value in sites.values()) <= DENSE_MASS_MAX_DIM
