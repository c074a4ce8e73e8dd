"""scikit-learn estimators over the functional API: fit, predict, save, posterior.

  ``GaussianMixture``           a drop-in for ``sklearn.mixture.GaussianMixture``
                                (``gaussian_mixture``);
  ``MultinomialMixture``        mixtures of multinomials over count rows, dense
                                or sparse, global or per group
                                (``multinomial_mixture``);
  ``BayesianLinearRegression``  a regressor in the manner of ``BayesianRidge``
                                (``linear_regression``), with ``PolynomialBasis``
                                and ``GaussianBasis`` for a Pipeline (``basis``);
  ``load``                      a model written by ``est.save(path)`` (``saving``
                                documents the format).

Each estimator also offers ``sample_posterior`` (NUTS, VI or MAP as ArviZ
InferenceData, ``posterior``) and ``crosscheck`` (``inference.crosscheck``).
Shared plumbing (random_state, precision, padding, warnings): ``common``.
"""

from latentmix.inference.estimators.basis import GaussianBasis, PolynomialBasis
from latentmix.inference.estimators.common import ConvergenceWarning, FitFailedError
from latentmix.inference.estimators.gaussian_mixture import GaussianMixture
from latentmix.inference.estimators.linear_regression import (
    BayesianLinearRegression,
)
from latentmix.inference.estimators.multinomial_mixture import MultinomialMixture
from latentmix.inference.estimators.saving import FORMAT_VERSION, load, read_metadata

__all__ = [
    "FORMAT_VERSION",
    "BayesianLinearRegression",
    "ConvergenceWarning",
    "FitFailedError",
    "GaussianBasis",
    "GaussianMixture",
    "MultinomialMixture",
    "PolynomialBasis",
    "load",
    "read_metadata",
]
