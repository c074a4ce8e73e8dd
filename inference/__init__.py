"""Inference for latentmix's models: EM, MAP, VI, NUTS, cross-checks, estimators.

The scikit-learn estimators and ``load`` are importable from here:

    from latentmix.inference import GaussianMixture, MultinomialMixture
    from latentmix.inference import BayesianLinearRegression, load

(``inference.estimators``). They load on first use, so importing a submodule
(``latentmix.inference.em``) does not pay for scikit-learn and ArviZ.
"""

import importlib

__all__ = [
    "BayesianLinearRegression",
    "GaussianBasis",
    "GaussianMixture",
    "MultinomialMixture",
    "PolynomialBasis",
    "load",
]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("latentmix.inference.estimators"),
                       name)
    raise AttributeError(f"module 'latentmix.inference' has no attribute {name!r}")
