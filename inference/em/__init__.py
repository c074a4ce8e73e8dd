"""EM fitters: the generic driver and one module per model.

Public: ``EMResult``, ``ConvergenceWarning``, ``fit_linear_regression``.
"""

from inference.em.driver import ConvergenceWarning, EMResult, run_em
from inference.em.linear_regression import (
    LinearRegressionParams,
    fit_linear_regression,
)

__all__ = [
    "ConvergenceWarning",
    "EMResult",
    "LinearRegressionParams",
    "fit_linear_regression",
    "run_em",
]
