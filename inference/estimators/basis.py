"""Feature maps of the input columns, as scikit-learn transformers.

``PolynomialBasis(degree)`` and ``GaussianBasis(centers, width)`` wrap
``models.linear_regression.polynomial_features`` and ``gaussian_features``
(article 1's bases) so that a curve fit is a Pipeline:

    Pipeline([("basis", PolynomialBasis(3)),
              ("regression", BayesianLinearRegression(fit_intercept=False))])

Each input column is expanded on its own and the expansions are put side by
side (an additive model, as scikit-learn's ``SplineTransformer`` does), after
one bias column when ``include_bias=True`` (the default, as the model
functions): pair them with ``BayesianLinearRegression(fit_intercept=False)``
(the bias weight then has the prior of the others), or pass
``include_bias=False`` to let the regressor fit the intercept. With one input
column the output is exactly the model function's design matrix.
"""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from latentmix.inference.estimators.common import computing_in
from latentmix.models.linear_regression import gaussian_features, polynomial_features

__all__ = ["GaussianBasis", "PolynomialBasis"]


class PolynomialBasis(TransformerMixin, BaseEstimator):
    """[1, x_j, x_j^2, ..., x_j^degree for every column j]."""

    def __init__(self, degree=3, *, include_bias=True):
        self.degree = degree
        self.include_bias = include_bias

    def fit(self, X, y=None):
        """Check X; nothing to learn. Returns self."""
        validate_data(self, X, dtype=np.float64)
        return self

    def transform(self, X):
        """(n, 1 + d degree) design matrix (d degree columns without bias)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with computing_in(np.float64):
            blocks = [np.asarray(polynomial_features(X[:, j], self.degree))[:, 1:]
                      for j in range(X.shape[1])]
        return _with_bias(blocks, len(X), self.include_bias)


class GaussianBasis(TransformerMixin, BaseEstimator):
    """[1, exp(-(x_j - c_jm)^2 / (2 width_j^2)) for every column j and centre m].

    ``centers``: the bump centres of every column (a 1-D array), or None for
    ``num_centers`` evenly spaced over each column's training range;
    ``width``: None for the spacing of the centres.
    """

    def __init__(self, centers=None, *, num_centers=9, width=None,
                 include_bias=True):
        self.centers = centers
        self.num_centers = num_centers
        self.width = width
        self.include_bias = include_bias

    def fit(self, X, y=None):
        """Place the centres (unless given) and the widths. Returns self."""
        X = validate_data(self, X, dtype=np.float64)
        if self.centers is None:
            self.centers_ = np.linspace(X.min(axis=0), X.max(axis=0),
                                        self.num_centers).T
        else:
            centers = np.asarray(self.centers, dtype=np.float64).ravel()
            self.centers_ = np.broadcast_to(centers, (X.shape[1], centers.size))
        if self.width is not None:
            self.width_ = np.full(X.shape[1], float(self.width))
        else:
            self.width_ = np.array([_spacing(row) for row in self.centers_])
        return self

    def transform(self, X):
        """(n, 1 + d x centres) design matrix (without the bias: d x centres)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with computing_in(np.float64):
            blocks = [np.asarray(gaussian_features(X[:, j], self.centers_[j],
                                                   self.width_[j]))[:, 1:]
                      for j in range(X.shape[1])]
        return _with_bias(blocks, len(X), self.include_bias)


def _spacing(centers) -> float:
    """Mean spacing of the distinct centres (1 when there is only one)."""
    steps = np.diff(np.unique(centers))
    return float(steps.mean()) if steps.size else 1.0


def _with_bias(blocks, num_rows: int, include_bias: bool) -> np.ndarray:
    columns = ([np.ones((num_rows, 1))] if include_bias else []) + blocks
    return np.concatenate(columns, axis=1)
