"""One BLAS thread while a Gaussian-mixture EM program runs.

XLA's CPU programs factor the covariances (Cholesky, triangular solves) by
calling LAPACK, which jaxlib takes from SciPy's OpenBLAS. From a few dozen
features on, OpenBLAS runs such a call on all its threads, and after the call
those threads keep spinning, waiting for more work, while XLA's own threads
run the E- and M-step products next to them: on a 2-core CPU the spinning
threads took a core from XLA's. Measured (float64, n = 1e5, d = 64, k = 16,
same start): one blocked E-step 190 -> 127 ms, one E- and M-step 327 -> 247
ms, a fit of 5 iterations 1.88 -> 1.50 s with OpenBLAS on one thread; no
change at d = 16 (its factorisations are too small to be threaded).

``blas_on_one_thread`` limits every BLAS library of the process to one thread
(threadpoolctl, scikit-learn's own dependency) for the duration of a fit and
restores the user's settings afterwards; the matrix products of the fit are
XLA's and keep all cores. It is a decorator as well as a context manager.
"""

import contextlib
import functools

from threadpoolctl import ThreadpoolController

__all__ = ["blas_on_one_thread"]


@contextlib.contextmanager
def blas_on_one_thread():
    """BLAS (OpenBLAS, MKL, BLIS) on one thread inside the block."""
    with _controller().limit(limits=1, user_api="blas"):
        yield


@functools.cache
def _controller() -> ThreadpoolController:
    # Scanning the loaded libraries costs 0.5 ms; once per process (jax, which
    # loads SciPy's OpenBLAS, is imported before any fit can run).
    return ThreadpoolController()
