"""What the three estimators share: keys, precision, padding, warnings, printing.

* ``rng_key_from(random_state)``: scikit-learn's ``random_state`` (None, an int
  or a ``numpy.random.RandomState``) becomes a JAX key drawn from it, so an int
  gives the same fit every time and a RandomState advances as scikit-learn's.
* ``computing_in(dtype)``: float64 arrays are computed in float64 even when
  JAX's x64 mode is off (``inference.precision`` does this for the functional
  fitters; the estimators' own jitted helpers use this context).
* ``row_bucket(n)``: the padded row count of a fit (zero-weight rows) so data
  of similar sizes share one compiled program: at least ``MIN_ROW_BUCKET``
  rows, at most 1/8 more than n.
* ``ConvergenceWarning`` is both scikit-learn's and ours, and ``FitFailedError``
  both a ``ValueError`` (what scikit-learn raises for an ill-defined
  covariance) and our ``AllRestartsFailedError`` (a FloatingPointError), so
  code written against either keeps catching them.
"""

import contextlib

import jax
import numpy as np
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.utils import check_random_state

from latentmix.inference.em.driver import AllRestartsFailedError
from latentmix.inference.em.driver import ConvergenceWarning as EMConvergenceWarning

__all__ = [
    "MIN_ROW_BUCKET",
    "ConvergenceWarning",
    "FitFailedError",
    "computing_in",
    "wants_x64",
    "print_em_progress",
    "rng_key_from",
    "row_bucket",
    "to_numpy",
]

# Fits of up to this many rows share one compiled program per shape of the rest
# (scikit-learn's estimator checks fit tens of rows in dozens of shapes).
MIN_ROW_BUCKET = 64


class ConvergenceWarning(SklearnConvergenceWarning, EMConvergenceWarning):
    """EM stopped at max_iter: scikit-learn's and latentmix's warning at once."""


class FitFailedError(AllRestartsFailedError, ValueError):
    """Every start of a fit failed (non-finite objective): a ValueError, as
    scikit-learn's ill-defined-covariance error, and an AllRestartsFailedError."""


def rng_key_from(random_state):
    """A JAX PRNG key drawn from scikit-learn's ``random_state``."""
    rng = check_random_state(random_state)
    return jax.random.key(int(rng.randint(np.iinfo(np.int32).max)))


def wants_x64(dtype) -> bool:
    return np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64


@contextlib.contextmanager
def computing_in(dtype):
    """Run the block with JAX's 64-bit mode on when ``dtype`` is float64."""
    if wants_x64(dtype):
        with jax.enable_x64(True):
            yield
    else:
        yield


def row_bucket(num_rows: int) -> int:
    """Rows of the compiled fit: >= num_rows, >= MIN_ROW_BUCKET, <= 1.125 n.

    Above the minimum, rows round up to a multiple of 2^(bits(n - 1) - 4),
    i.e. at most 1/8 of n (so at most 16 buckets per doubling of n).
    """
    if num_rows <= MIN_ROW_BUCKET:
        return MIN_ROW_BUCKET
    step = 1 << max(0, (num_rows - 1).bit_length() - 4)
    return -(-num_rows // step) * step


def to_numpy(tree):
    """Every leaf of ``tree`` as a NumPy array (fitted attributes never hold
    JAX arrays, so estimators pickle and copy like scikit-learn's)."""
    return jax.tree_util.tree_map(np.asarray, tree)


def print_em_progress(trace, num_iters: int, converged: bool, *, init: int,
                      verbose: int, verbose_interval: int, seconds: float,
                      previous=-np.inf) -> None:
    """scikit-learn's verbose messages of one initialisation, from its trace.

    The EM loop runs compiled, so the messages come after it: "time lapse" is
    the run's time shared equally among the iterations. ``previous``: the
    objective before the first iteration (a warm start's last lower bound).
    """
    if verbose <= 0:
        return
    print(f"Initialization {init}")
    per_iteration = seconds / max(num_iters, 1)
    values = np.asarray(trace)[:num_iters]
    for n_iter in range(1, num_iters + 1):
        if n_iter % verbose_interval:
            continue
        change = values[n_iter - 1] - (values[n_iter - 2] if n_iter > 1 else previous)
        if verbose == 1:
            print(f"  Iteration {n_iter}")
        else:
            print(f"  Iteration {n_iter}\t time lapse "
                  f"{per_iteration * verbose_interval:.5f}s\t ll change {change:.5f}")
    message = "converged" if converged else "did not converge"
    if verbose == 1:
        print(f"Initialization {message}.")
    else:
        lower_bound = values[num_iters - 1] if num_iters else -np.inf
        print(f"Initialization {message}. time lapse {seconds:.5f}s\t lower bound"
              f" {lower_bound:.5f}.")
