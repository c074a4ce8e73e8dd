"""Input validation at the Python boundary, before anything is jit-compiled.

Every check raises ``ValueError`` (``TypeError`` for a wrong dtype) whose message
names the argument, says what was expected and what was received, and proposes a
fix, in the style of scikit-learn's validators. Values that are JAX tracers (the
function is being traced inside ``jit``) are only shape-checked: a value check on a
tracer is impossible and would be meaningless.
"""

import inspect
import os
import warnings

import jax
import numpy as np

__all__ = [
    "DataWarning",
    "as_float_array",
    "check_finite",
    "check_positive",
    "check_matrix",
    "check_vector",
    "check_same_rows",
    "check_int",
    "check_nonnegative",
    "find_stack_level",
    "is_traced",
    "warn",
]


class DataWarning(UserWarning):
    """Data that can be fitted but deserves the user's attention."""


def is_traced(value) -> bool:
    """True when `value` is an abstract JAX value (inside jit/vmap/grad tracing)."""
    return isinstance(value, jax.core.Tracer)


def as_float_array(name: str, value, *, dtype=None):
    """Return `value` as a float NumPy array (or the tracer untouched).

    Rejects object, string and complex dtypes with a TypeError naming `name`;
    booleans and integers are converted to float (they are exact there).
    """
    if is_traced(value) or isinstance(value, jax.Array):
        if not np.issubdtype(value.dtype, np.number) and value.dtype != bool:
            raise TypeError(f"{name} must be numeric, got dtype {value.dtype}")
        if np.issubdtype(value.dtype, np.complexfloating):
            raise TypeError(f"{name} must be real, got complex dtype {value.dtype}")
        return value
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "USV":
        raise TypeError(
            f"{name} must be a numeric array, got dtype {array.dtype}; convert it "
            f"with np.asarray({name}, dtype=float) after removing non-numeric entries"
        )
    if array.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {array.dtype}")
    if array.dtype.kind == "f" and array.dtype.itemsize < 4:
        raise TypeError(
            f"{name} has dtype {array.dtype}, whose ~3 significant digits cannot "
            f"hold a covariance or a log-likelihood (and LAPACK has no {array.dtype}"
            f" routines); convert it with {name}.astype(np.float32) or float64"
        )
    if dtype is None:
        dtype = array.dtype if array.dtype.kind == "f" else np.float64
    return array.astype(dtype, copy=False)


def check_finite(name: str, array) -> None:
    """Raise ValueError naming the first non-finite entry of `array`."""
    if is_traced(array):
        return
    values = np.asarray(array)
    # One pass without a temporary: NaN and infinities carry through a sum, so
    # a finite sum proves every entry finite (3x faster than isfinite().all()
    # at 1e5 x 64); a sum that overflows takes the exact path, which names the
    # first bad entry.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(values)):
            return
    bad = ~np.isfinite(values)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(values[index]) else "infinity"
        raise ValueError(
            f"{name} contains {kind} at index {index} ({int(bad.sum())} non-finite "
            f"value(s) in all); remove or impute those rows before fitting"
        )


def check_matrix(name: str, value, *, min_rows: int = 1, min_cols: int = 1):
    """A finite 2-D float array with at least `min_rows` rows and `min_cols` columns."""
    array = as_float_array(name, value)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n, d), got shape {tuple(array.shape)}; "
            f"reshape a single feature with {name}.reshape(-1, 1)"
        )
    if array.shape[0] < min_rows:
        raise ValueError(
            f"{name} needs at least {min_rows} row(s), got {array.shape[0]}"
        )
    if array.shape[1] < min_cols:
        raise ValueError(
            f"{name} has {array.shape[1]} column(s) (shape={tuple(array.shape)}) "
            f"while a minimum of {min_cols} is required"
        )
    check_finite(name, array)
    return array


def check_vector(name: str, value, *, length: int | None = None):
    """A finite 1-D float array, optionally of a given length."""
    array = as_float_array(name, value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D with shape (n,), got shape {array.shape}")
    if length is not None and array.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {array.shape[0]}")
    check_finite(name, array)
    return array


def check_same_rows(name_a: str, a, name_b: str, b) -> None:
    """Raise when two arrays disagree on their number of rows."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same number of rows, got "
            f"{name_a}.shape={tuple(a.shape)} and {name_b}.shape={tuple(b.shape)}"
        )


def check_positive(name: str, value):
    """A finite, strictly positive scalar (or array of them)."""
    if is_traced(value):
        return value
    array = as_float_array(name, value)
    if not np.all(np.isfinite(array)) or not np.all(array > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


def check_nonnegative(name: str, value):
    """A finite scalar >= 0."""
    if is_traced(value):
        return value
    array = np.asarray(value)
    valid = array.dtype != object and np.all(np.isfinite(array)) and np.all(array >= 0)
    if not valid:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_int(name: str, value, *, minimum: int) -> int:
    """A Python/NumPy integer >= `minimum`, returned as int."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _library_folders() -> tuple[str, ...]:
    """Folders whose frames a warning skips: latentmix's library packages and the
    JAX/NumPyro code a jitted or traced call runs through on its way to ours."""
    import numpyro

    # latentmix.data, .models and .inference are sibling folders, in the
    # source tree (editable installs) as in site-packages/latentmix.
    parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folders = [os.path.join(parent, name) for name in ("data", "models", "inference")]
    folders += [os.path.dirname(jax.__file__), os.path.dirname(numpyro.__file__)]
    return tuple(os.path.join(os.path.abspath(folder), "") for folder in folders)


def find_stack_level() -> int:
    """The ``stacklevel`` that attributes a warning to the user's line.

    Counts the frames, from the caller of ``find_stack_level`` outwards, that
    belong to latentmix's library (``data``, ``models``, ``inference``) or to
    JAX/NumPyro (a warning raised while our jitted core is traced sits below
    ``jax.jit``'s frames), and stops at the first other frame: the user's code,
    a script of ours, or a test. As NumPyro's ``numpyro.util.find_stack_level``,
    so no call site hand-counts its depth.
    """
    folders = _library_folders()
    frame = inspect.currentframe().f_back  # the function that will warn: level 1
    level = 1
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(folders):
            break
        frame = frame.f_back
        level += 1
    return level


def warn(message: str, category=DataWarning) -> None:
    """Emit a warning attributed to the first line outside the library."""
    warnings.warn(message, category, stacklevel=find_stack_level())
