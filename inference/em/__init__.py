"""EM fitters: the generic driver and one module per model.

Public: ``EMResult``, ``ConvergenceWarning``, ``fit_linear_regression``,
``fit_gaussian_mixture`` (with ``GMMPrior`` for MAP-EM; rows sharded over
``devices``, or out of core from a ``data.chunks.ChunkedRows``),
``fit_gaussian_mixture_sweep`` (a K sweep in one compiled program),
``fit_multinomial_mixture`` (with ``MultinomialMixturePrior`` for MAP-EM; also
out of core from a ``data.chunks.ChunkedRows``) and
``fit_multinomial_mixture_sweep`` (a K sweep in one compiled program).
"""

from latentmix.inference.em.driver import ConvergenceWarning, EMResult, run_em
from latentmix.inference.em.gaussian_mixture import (
    GMMPrior,
    GMMRestarts,
    fit_gaussian_mixture,
    fit_gaussian_mixture_restarts,
    fit_gaussian_mixture_sweep,
)
from latentmix.inference.em.linear_regression import (
    LinearRegressionParams,
    fit_linear_regression,
)
from latentmix.inference.em.multinomial_mixture import (
    fit_multinomial_mixture,
    fit_multinomial_mixture_chunked,
    fit_multinomial_mixture_restarts,
    fit_multinomial_mixture_sweep,
)
from latentmix.models.multinomial_mixture import (
    MultinomialMixtureParams,
    MultinomialMixturePrior,
)

__all__ = [
    "ConvergenceWarning",
    "EMResult",
    "GMMPrior",
    "GMMRestarts",
    "LinearRegressionParams",
    "MultinomialMixtureParams",
    "MultinomialMixturePrior",
    "fit_gaussian_mixture",
    "fit_gaussian_mixture_restarts",
    "fit_gaussian_mixture_sweep",
    "fit_linear_regression",
    "fit_multinomial_mixture",
    "fit_multinomial_mixture_chunked",
    "fit_multinomial_mixture_restarts",
    "fit_multinomial_mixture_sweep",
    "run_em",
]
