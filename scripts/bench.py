"""Pieces shared by the benchmark scripts (``benchmark.py`` and its subcommands).

Timing, argument parsers for comma-separated lists, the machine's GEMM
throughput (each library in its own ``bench_worker`` process), and the
Gaussian-mixture test problem: simulated rows and one start that both
libraries (or both code paths) begin from.
"""

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from latentmix.models.gaussian_mixture import GMMParams

GEMM_DTYPES = ("float64", "float32")


def timed(fn):
    """(seconds, value) of ``fn()``, timed with ``time.perf_counter``."""
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


# --- flop counts ------------------------------------------------------------------


def gmm_flops(num_rows, num_features, num_components, covariance_type) -> float:
    """Matrix-product flops of one Gaussian-mixture EM iteration (n rows, d, k).

    The yardstick of the benchmark's GFLOP/s columns, the same count for every
    library (each multiply-add is 2 flops):

      "full"       4 n k d^2: the E-step's whitening L_c^-1 (x_i - mu_c) of every
                   row by every component (2 n k d^2) and the M-step's k
                   scatters sum_i gamma_ic x_i x_i^T (2 n k d^2);
      "tied"       2 n d^2 + 4 n k d: one whitening by the shared factor, the
                   cross term with k whitened means, and the k weighted sums;
      "diag"       8 n k d: [x, x^2] against k (2 d) coefficients in the E-step,
                   gamma^T [x, x^2] in the M-step;
      "spherical"  4 n k (d + 1): the same with [x, ||x||^2].

    Exponentials, logarithms and the d^3 factorisations are not counted.
    """
    n, d, k = float(num_rows), float(num_features), float(num_components)
    return {"full": 4 * n * k * d * d, "tied": 2 * n * d * d + 4 * n * k * d,
            "diag": 8 * n * k * d, "spherical": 4 * n * k * (d + 1)}[
        covariance_type]


def multinomial_flops(num_rows, num_categories, num_components) -> float:
    """Matrix-product flops of one multinomial-mixture EM iteration: 4 n k c.

    E-step counts (n, c) x log-probabilities (c, k) and M-step gamma^T (k, n) x
    counts (n, c), 2 n k c each."""
    return 4.0 * num_rows * num_categories * num_components


# --- argument parsers -------------------------------------------------------------


def int_list(text):
    """argparse type: distinct integers >= 1, comma-separated; 1e5 is allowed."""
    values = []
    for item in (item.strip() for item in text.split(",")):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            value = float("nan")
        if not value.is_integer():
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers such as 2,10 or 10000,1e5, got "
                f"{text!r}")
        values.append(int(value))
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"expected distinct integers >= 1, got {text!r}")
    return tuple(values)


def choice_list(allowed):
    """argparse type: a non-empty comma-separated subset of ``allowed``."""
    def parse(text):
        values = tuple(item for item in text.split(",") if item)
        unknown = [item for item in values if item not in allowed]
        if not values or unknown:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(allowed)}, got "
                f"{text!r}")
        return values

    return parse


def positive(kind):
    """argparse type: a number of type ``kind`` (int or float) > 0."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a value > 0, got {text!r}")
        return value

    return parse


# --- the Gaussian-mixture problem -------------------------------------------------


def _mixture_rows(rng, centres, num_rows):
    """Rows x = centres[t] + e, t uniform over components, e ~ N(0, I)."""
    labels = rng.integers(0, centres.shape[0], num_rows)
    return centres[labels] + rng.normal(size=(num_rows, centres.shape[1]))


def _centres(rng, num_components, num_features):
    return rng.normal(0.0, 3.0, (num_components, num_features))


def simulate(num_rows, num_features, num_components, dtype, seed):
    """Rows of a random mixture: means ~ N(0, 3^2 I), unit-variance components."""
    rng = np.random.default_rng(seed)
    centres = _centres(rng, num_components, num_features)
    return _mixture_rows(rng, centres, num_rows).astype(dtype)


def simulate_to_npy(path, num_rows, num_features, num_components, dtype, seed,
                    chunk_rows=1 << 16):
    """``simulate``'s model written to a ``.npy`` file ``chunk_rows`` at a time.

    Memory stays at one chunk however many rows are written (the rows differ from
    ``simulate``'s for the same seed: the random stream is consumed per chunk).
    """
    rng = np.random.default_rng(seed)
    centres = _centres(rng, num_components, num_features)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype),
                                    shape=(num_rows, num_features))
    for start in range(0, num_rows, chunk_rows):
        stop = min(start + chunk_rows, num_rows)
        out[start:stop] = _mixture_rows(rng, centres, stop - start)
    out.flush()
    del out


def start_params(x, num_components, covariance_type, seed) -> GMMParams:
    """One start for both libraries: k distinct rows as means, the data covariance
    in the covariance type's form, equal weights (as GMMParams: full matrices)."""
    rng = np.random.default_rng(seed + 1)
    num_features = x.shape[1]
    rows = rng.choice(len(x), num_components, replace=False)
    covariance = np.cov(x.T.astype(np.float64), bias=True).reshape(
        num_features, num_features)
    if covariance_type == "diag":
        covariance = np.diag(np.diag(covariance))
    elif covariance_type == "spherical":
        covariance = np.mean(np.diag(covariance)) * np.eye(num_features)
    covariances = np.broadcast_to(covariance, (num_components,) + covariance.shape)
    return GMMParams(np.full(num_components, 1.0 / num_components, x.dtype),
                     x[rows].copy(), covariances.astype(x.dtype).copy())


# --- the machine's GEMM throughput ------------------------------------------------


def run_worker(spec, timeout=None):
    """Run one ``bench_worker`` task in a fresh Python process; its JSON result.

    A library timed in its own process keeps its thread pools to itself
    (``bench_worker``); the child inherits the environment (``JAX_PLATFORMS``,
    thread settings)."""
    completed = subprocess.run(
        [sys.executable, "-m", "latentmix.scripts.bench_worker", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark worker failed on {spec}:\n"
                           f"{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_gemm(device_name, size, repeats):
    """GEMM GFLOP/s of numpy and XLA in float64 and float32, each process alone.

    Returns {(library, dtype): GFLOP/s (median of ``repeats``)}; numpy always
    runs on the CPU, XLA on ``device_name``."""
    rates = {}
    for library in ("numpy", "xla"):
        result = run_worker({"task": "gemm", "library": library,
                             "dtypes": list(GEMM_DTYPES), "size": size,
                             "repeats": repeats, "device": device_name})
        for dtype in GEMM_DTYPES:
            rates[(library, dtype)] = result[dtype]["gflops"]
    return rates


def gemm_peak(measurements, dtype, platform_name="cpu"):
    """The machine's GEMM throughput in ``dtype``: the best of numpy and XLA over
    every measurement of the run (on a GPU, XLA's: numpy runs on the CPU)."""
    libraries = ("numpy", "xla") if platform_name == "cpu" else ("xla",)
    return max(rates[(library, dtype)] for rates in measurements
               for library in libraries)
