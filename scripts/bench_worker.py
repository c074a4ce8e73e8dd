"""One timed library in a process of its own (run by ``benchmark.py``).

    python -m latentmix.scripts.bench_worker '{"task": "gmm", ...}'

prints one line of JSON. Each library is timed in its own process because the
thread pools of XLA, OpenBLAS and PyTorch slow one another down when they live
in one process (measured here: scikit-learn's fit once took 57 s instead of
10 s right after one of ours). ``benchmark.py`` alternates the processes of
the libraries it compares, so that all of them see the same background load.

Tasks (the JSON's ``task``):

  "gemm"  {"library": "numpy" | "xla", "dtypes", "size", "repeats", "device"}:
          an n x n by n x n matrix product, 2 n^3 flops, in each dtype, timed
          ``repeats`` times after a warm-up; returns {dtype: {"gflops": median,
          "best": fastest}}. The machine's GEMM throughput, the yardstick of
          every other row.
  "gmm"   {"library": "ours" | "sklearn" | "gmmx" | "torchgmm", "n", "d",
          "k", "covariance_type", "dtype", "iters", "repeats", "seed",
          "device"}: simulated rows (``bench.simulate``) and one start
          (``bench.start_params``), a first call (ours compiles there), then
          ``repeats`` timed calls of ``iters`` EM iterations from that start;
          returns {"first": s, "times": [s, ...], "log_likelihood": mean
          log-likelihood at the final parameters, "iters": iterations run,
          "dtype": what the library computed in} or {"unavailable": why}.
"""

import json
import sys
import warnings

import numpy as np

from latentmix.scripts.bench import simulate, start_params, timed

__all__ = ["main", "run_task"]


def run_task(spec: dict) -> dict:
    """Run one task spec (module docstring) and return its JSON-able result."""
    task = spec["task"]
    if task == "gemm":
        return _gemm(spec)
    if task == "gmm":
        return _gmm(spec)
    raise ValueError(f"unknown task {task!r}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(run_task(json.loads(argv[0]))), flush=True)
    return 0


def _configure(spec):
    """JAX's platform (``--device``) and 64-bit mode, before any JAX work."""
    from latentmix.scripts import device

    device.configure(spec.get("device", "cpu"), "float64")


def _gemm(spec):
    if spec["library"] != "numpy":
        _configure(spec)
    return {dtype: _gemm_rate(spec["library"], dtype, int(spec["size"]),
                              int(spec["repeats"])) for dtype in spec["dtypes"]}


def _gemm_rate(library, dtype, size, repeats):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(size, size)).astype(dtype)
    b = rng.normal(size=(size, size)).astype(dtype)
    if library == "numpy":
        product = lambda: a @ b
    else:
        import jax
        import jax.numpy as jnp

        lhs, rhs = jnp.asarray(a), jnp.asarray(b)
        compiled = jax.jit(lambda p, q: jnp.matmul(
            p, q, precision=jax.lax.Precision.HIGHEST))
        product = lambda: jax.block_until_ready(compiled(lhs, rhs))
    product()
    times = [timed(product)[0] for _ in range(max(3, repeats))]
    flops = 2.0 * size**3
    return {"gflops": flops / float(np.median(times)) / 1e9,
            "best": flops / min(times) / 1e9}


def _gmm(spec):
    library = spec["library"]
    x = simulate(spec["n"], spec["d"], spec["k"], spec["dtype"], spec["seed"])
    start = start_params(x, spec["k"], spec["covariance_type"], spec["seed"])
    if library in ("ours", "gmmx"):
        _configure(spec)
    if library == "ours":
        fit = lambda: _fit_ours(x, start, spec["covariance_type"], spec["iters"])
    else:
        from latentmix.scripts.peers import PeerUnavailable, fit_peer

        fit = lambda: fit_peer(library, x, start, spec["covariance_type"],
                               spec["iters"])
        try:
            first, result = timed(fit)
        except PeerUnavailable as error:
            return {"unavailable": str(error)}
        return _gmm_result(first, fit, spec, x, result)
    first, result = timed(fit)
    return _gmm_result(first, fit, spec, x, result)


def _gmm_result(first, fit, spec, x, result):
    times = []
    for _ in range(int(spec["repeats"])):
        elapsed, result = timed(fit)
        times.append(elapsed)
    if spec["library"] == "ours":
        value, iters, dtype = (float(result.log_likelihood), int(result.num_iters),
                               str(result.params.means.dtype))
    else:
        from latentmix.scripts.peers import peer_log_likelihood

        value = peer_log_likelihood(result.params, x)
        iters, dtype = result.num_iters, result.dtype
    return {"first": first, "times": times, "log_likelihood": value,
            "iters": iters, "dtype": dtype}


def _fit_ours(x, start, covariance_type, iters):
    import jax

    from latentmix.inference.em import ConvergenceWarning, fit_gaussian_mixture

    with warnings.catch_warnings():
        # tol=0 never "converges": the ConvergenceWarning is expected here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = fit_gaussian_mixture(x, start.weights.shape[0],
                                      covariance_type=covariance_type, init=start,
                                      max_iters=iters, tol=0.0, reg_covar=1e-6)
    return jax.block_until_ready(result)


if __name__ == "__main__":
    sys.exit(main())
