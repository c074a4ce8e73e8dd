"""Compute in the precision the user's data ask for, whatever JAX's global mode.

JAX runs in 32-bit mode unless ``jax_enable_x64`` is set, and then silently
turns a float64 array into float32; a fit on data whose columns span several
orders of magnitude can then fail with a numerical error that never mentions the
dtype. Every public fitter is wrapped in ``follows_input_precision``: when its
data are float64 (or integers, or a Python list, which NumPy makes float64 or
int64) and ``dtype`` does not ask for float32, the call runs with 64-bit mode
switched on for its duration (``jax.enable_x64(True)``), so the result is the
float64 computation; float32 data keep computing in float32. Arrays returned
keep their float64 dtype after the call.
"""

import functools

import jax
import numpy as np

from latentmix.data.chunks import ChunkedRows

__all__ = ["follows_input_precision", "wants_float64"]


def wants_float64(data, dtype=None) -> bool:
    """True when ``data`` (an array, list, sparse matrix or ChunkedRows) and the
    ``dtype`` option ask for float64: anything but float32/16 data or dtype."""
    if dtype is not None:
        return np.dtype(dtype) == np.float64
    if isinstance(data, ChunkedRows):
        first = next(iter(data), None)  # one chunk read to learn the dtype
        return first is None or wants_float64(first)
    data_dtype = getattr(data, "dtype", None)
    if data_dtype is None:
        try:
            data_dtype = np.asarray(data).dtype
        except (TypeError, ValueError):
            return True
    data_dtype = np.dtype(data_dtype)
    return not (data_dtype.kind == "f" and data_dtype.itemsize < 8)


def follows_input_precision(fn):
    """Run ``fn(data, ...)`` in 64-bit mode when ``wants_float64(data, dtype)``."""

    @functools.wraps(fn)
    def wrapper(data, *args, **kwargs):
        if jax.config.jax_enable_x64 or not wants_float64(data, kwargs.get("dtype")):
            return fn(data, *args, **kwargs)
        with jax.enable_x64(True):
            return fn(data, *args, **kwargs)

    return wrapper
