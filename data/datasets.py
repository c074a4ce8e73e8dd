"""Real data sets that load offline: bundled in this package or shipped by an
installed package. Licences are recorded in ``data/DATA_LICENSES.md``.
"""

from importlib.resources import files

import numpy as np
import pandas as pd

__all__ = ["load_diabetes", "load_old_faithful", "load_penguins"]


def load_diabetes(*, add_bias: bool = True):
    """Diabetes regression data (Efron et al. 2004), shipped by scikit-learn.

    Returns (X, y, feature_names): X (442, 10) in scikit-learn's scaled units
    (each column centred and scaled to unit norm), with a leading column of ones
    when ``add_bias``; y (442,) disease progression after one year.
    """
    from sklearn.datasets import load_diabetes as _load

    bunch = _load()
    X = np.asarray(bunch.data, dtype=np.float64)
    names = list(bunch.feature_names)
    if add_bias:
        X = np.column_stack([np.ones(len(X)), X])
        names = ["bias", *names]
    return X, np.asarray(bunch.target, dtype=np.float64), names


def load_old_faithful() -> pd.DataFrame:
    """Old Faithful geyser eruptions (Haerdle 1991; R's ``datasets::faithful``).

    272 rows, columns ``eruptions`` (duration, minutes) and ``waiting`` (minutes
    to the next eruption). Bundled as ``data/faithful.csv``.
    """
    path = files("latentmix.data").joinpath("faithful.csv")
    with path.open("r") as handle:
        return pd.read_csv(handle, dtype={"eruptions": float, "waiting": float})


PENGUIN_FEATURES = [
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
]


def load_penguins() -> pd.DataFrame:
    """Palmer penguins (Gorman, Williams & Fraser 2014), from ``palmerpenguins``.

    The 342 rows with all four body measurements (2 incomplete rows dropped);
    columns ``species`` and the four numeric measurements.
    """
    from palmerpenguins import load_penguins as _load

    frame = _load()[["species", *PENGUIN_FEATURES]].dropna()
    return frame.reset_index(drop=True)
