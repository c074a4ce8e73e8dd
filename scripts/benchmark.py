"""Benchmarks of the jit-compiled EM against reference libraries on this machine.

    python scripts/benchmark.py gmm [--n 10000,100000] [--d 16] [--k 16]
        [--covariance-types full,tied,diag,spherical] [--dtypes float64,float32]
        [--iters 10] [--repeats 3] [--restarts 10] [--restart-n 10000]
        [--restart-iters 100] [--screen-iters 5] [--full]
        [--out out/benchmark_gmm.md] [--seed 0] [--quiet]
    python scripts/benchmark.py multinomial [--quick] [...]
    python scripts/benchmark.py scale [--quick] [--full] [--device auto] [...]

``multinomial``: our multinomial-mixture EM against the reference tutorial's
algorithm on the Complete Journey, and the reference's whole K-sweep protocol;
see ``scripts/benchmark_multinomial.py``.

``scale``: time per iteration and peak memory against the number of rows
(in memory and out of core), sharded against single-device fits, sparse against
dense multinomial EM, and K sweeps in one program against separate fits; see
``scripts/benchmark_scale.py``.

``gmm``: ``inference.em.fit_gaussian_mixture`` against scikit-learn's
``GaussianMixture``, both started from the same parameters (``weights_init``,
``means_init``, ``precisions_init`` on the scikit-learn side, ``init=GMMParams``
on ours) and run for exactly ``--iters`` EM iterations (``tol=0``: scikit-learn's
``max_iter=iters``, our ``max_iters=iters``), float64 against float64 and float32
against float32 (scikit-learn keeps float32 data in float32). Our first call
compiles; the compile time is reported as the first call minus the median fit, and
the fit time is the median of ``--repeats`` further calls (results forced with
``block_until_ready``). scikit-learn's time is the median of ``--repeats`` calls,
made in turn with ours so that both see the same background load.
Both are timed around the public call a user makes, input validation included,
with ``time.perf_counter``, on the same threads (XLA's and the BLAS's thread pools
both use every core). The final mean log-likelihoods of both are compared, to
show that the same computation was timed. The report records the machine's load
average: other processes on a shared machine slow both sides, not equally.

The restart table times ``num_restarts=1`` against ``--restarts`` restarts
(k-means++ starts, run under ``vmap`` in one compiled call) for every (d, K) of
the grid at N = ``--restart-n`` (default: the smallest N of the grid; ten
restarts at N = 1e5 take minutes on 2 cores), with the first covariance type and
dtype given, each fit running ``--restart-iters`` iterations (tol = 0). It also
times the screened restarts (``screen_iters=--screen-iters``: every restart runs
that many iterations, then only the best continues), which is how restarts cost
a small multiple of one fit on a CPU, where vmap cannot make ten restarts'
arithmetic cheaper than ten times one.

Default grid: N in {1e4, 1e5}, d = 16, K = 16, every covariance type, float64
and float32 (a few minutes on 2 cores). ``--full`` is the grid of issue 3:
N in {1e4, 1e5, 1e6}, d in {2, 16, 64}, K in {4, 16, 64}, every covariance type
and both dtypes (hours on 2 cores: scikit-learn alone needs minutes per fit at
N = 1e6, d = K = 64). Options given with ``--full`` narrow it.

Writes a markdown table (times and ratios) to ``--out`` and prints it.
Exit status: 0 ok, 2 bad arguments, 5 output not writable.
"""

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture

from latentmix.inference.em import ConvergenceWarning, fit_gaussian_mixture
from latentmix.models.gaussian_mixture import COVARIANCE_TYPES, GMMParams
from latentmix.scripts import benchmark_multinomial, benchmark_scale, device
from latentmix.scripts import runtime as rt
from latentmix.scripts.bench import (
    choice_list,
    int_list,
    simulate,  # noqa: F401 (part of this module's interface, used by tests)
    start_params,
    timed,
)

DTYPES = ("float64", "float32")
FULL_GRID = {"n": (10_000, 100_000, 1_000_000), "d": (2, 16, 64), "k": (4, 16, 64),
             "covariance_types": COVARIANCE_TYPES, "dtypes": DTYPES}
DEFAULT_GRID = {"n": (10_000, 100_000), "d": (16,), "k": (16,),
                "covariance_types": COVARIANCE_TYPES, "dtypes": DTYPES}
REG_COVAR = 1e-6  # scikit-learn's default, on both sides
SPEEDUP_TARGET = 5.0  # issue 3: at least 5x scikit-learn for N >= 1e5 on CPU
RESTART_TARGET = 3.0  # issue 3: 10 restarts at most 3x one restart
SETTLE_SECONDS = 0.3  # pause before every timed call (interleaved_medians)


# --- gmm: problem set-up ----------------------------------------------------------


def sklearn_precisions(params: GMMParams, covariance_type):
    """``precisions_init`` in scikit-learn's shape for each covariance type."""
    covariances = np.asarray(params.covariances, np.float64)
    if covariance_type == "full":
        return np.linalg.inv(covariances)
    if covariance_type == "tied":
        return np.linalg.inv(covariances[0])
    variances = np.diagonal(covariances, axis1=1, axis2=2)
    return 1.0 / (variances if covariance_type == "diag" else variances[:, 0])


def fit_ours(x, start, covariance_type, iters):
    with warnings.catch_warnings():
        # tol=0 never "converges": the ConvergenceWarning is expected here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = fit_gaussian_mixture(x, start.weights.shape[0],
                                      covariance_type=covariance_type, init=start,
                                      max_iters=iters, tol=0.0, reg_covar=REG_COVAR)
    return jax.block_until_ready(result)


def fit_sklearn(x, start, covariance_type, iters):
    model = GaussianMixture(
        start.weights.shape[0], covariance_type=covariance_type, tol=0.0,
        max_iter=iters, reg_covar=REG_COVAR, weights_init=start.weights,
        means_init=start.means,
        precisions_init=sklearn_precisions(start, covariance_type).astype(x.dtype),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        return model.fit(x)


def fit_restarts(x, num_components, covariance_type, iters, num_restarts, seed,
                 screen_iters=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = fit_gaussian_mixture(x, num_components,
                                      covariance_type=covariance_type,
                                      num_restarts=num_restarts, max_iters=iters,
                                      tol=0.0, reg_covar=REG_COVAR,
                                      rng_key=jax.random.key(seed),
                                      screen_iters=screen_iters)
    return jax.block_until_ready(result)


def interleaved_medians(fns, repeats):
    """Median time of each function, calling them in turn ``repeats`` times.

    Alternating the calls exposes every function to the same background load
    on a shared machine. Each call waits ``SETTLE_SECONDS`` first: a BLAS or
    XLA thread pool keeps spinning for a moment after a call returns, and
    measured on this machine it slowed the next call of the *other* library by
    a third (ours: 0.145 s alone, 0.195 s right after scikit-learn, 0.16 s
    after a 0.3 s pause). Returns (medians, the last value of each function).
    """
    times = [[] for _ in fns]
    values = [None] * len(fns)
    for _ in range(repeats):
        for index, fn in enumerate(fns):
            time.sleep(SETTLE_SECONDS)
            elapsed, values[index] = timed(fn)
            times[index].append(elapsed)
    return [statistics.median(series) for series in times], values


# --- gmm: one configuration -------------------------------------------------------


def bench_config(n, d, k, covariance_type, dtype, args):
    x = simulate(n, d, k, dtype, args.seed)
    start = start_params(x, k, covariance_type, args.seed)
    first, _ = timed(lambda: fit_ours(x, start, covariance_type, args.iters))
    (ours_time, sklearn_time), (ours, reference) = interleaved_medians(
        [lambda: fit_ours(x, start, covariance_type, args.iters),
         lambda: fit_sklearn(x, start, covariance_type, args.iters)], args.repeats)
    return {"n": n, "d": d, "k": k, "covariance_type": covariance_type,
            "dtype": dtype, "compile_s": max(first - ours_time, 0.0),
            "ours_s": ours_time, "sklearn_s": sklearn_time,
            "speedup": sklearn_time / ours_time,
            "loglik_diff": abs(float(ours.log_likelihood) - reference.score(x)),
            "iters": (int(ours.num_iters), int(reference.n_iter_))}


def bench_restarts(n, d, k, covariance_type, dtype, args):
    x = simulate(n, d, k, dtype, args.seed)
    calls = [lambda count=count, screen=screen: fit_restarts(
                 x, k, covariance_type, args.restart_iters, count, args.seed, screen)
             for count, screen in ((1, 0), (args.restarts, 0),
                                   (args.restarts, args.screen_iters))]
    for call in calls:
        call()  # compile
    (one, many, screened), _ = interleaved_medians(calls, args.repeats)
    return {"n": n, "d": d, "k": k, "covariance_type": covariance_type,
            "dtype": dtype, "one_s": one, "many_s": many, "ratio": many / one,
            "screened_s": screened, "screened_ratio": screened / one}


# --- gmm: report ------------------------------------------------------------------


def _rows(n):
    """1e+05 -> 1e5: the row counts of the grid are powers of ten."""
    mantissa, exponent = f"{n:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}" if float(f"{n:.0e}") == n else str(n)


def machine_description():
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores "
            f"({platform.processor() or platform.platform()}), JAX backend "
            f"{jax.default_backend()} ({jax.devices()[0].device_kind}); jax "
            f"{jax.__version__}, numpy {np.__version__}, scikit-learn "
            f"{_version('scikit-learn')}")


def _version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def markdown_report(rows, restart_rows, args, command, elapsed, load):
    backend = jax.default_backend()
    lines = [
        "# Gaussian-mixture EM: latentmix against scikit-learn",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_description()}. Load average (1 min) {load[0]:.1f} "
        f"at the start, {load[1]:.1f} at the end.",
        "",
        f"Both libraries start from the same parameters and run exactly "
        f"{args.iters} EM iterations (tol = 0), reg_covar = {REG_COVAR}. Times in "
        f"seconds: ours is the median of {args.repeats} calls after a first, "
        f"compiling call (compile = first call minus that median); scikit-learn "
        f"the median of {args.repeats} calls, alternating with ours. Speedup = "
        f"scikit-learn / ours. "
        f"|dLL| = difference of the final mean log-likelihoods (same computation).",
        "",
        f"| N | d | K | covariance | dtype | compile | ours ({backend}) | "
        f"scikit-learn | speedup | \\|dLL\\| |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {_rows(r['n'])} | {r['d']} | {r['k']} | {r['covariance_type']} | "
            f"{r['dtype']} | {r['compile_s']:.2f} | {r['ours_s']:.3f} | "
            f"{r['sklearn_s']:.3f} | {r['speedup']:.1f}x | {r['loglik_diff']:.1e} |")
    large = [r["speedup"] for r in rows if r["n"] >= 100_000]
    lines.append("")
    if large:
        lines.append(
            f"N >= 1e5: speedup min {min(large):.1f}x, median "
            f"{statistics.median(large):.1f}x, max {max(large):.1f}x (target >= "
            f"{SPEEDUP_TARGET:.0f}x; {sum(s >= SPEEDUP_TARGET for s in large)} of "
            f"{len(large)} configurations meet it).")
    if restart_rows:
        lines += [
            "",
            f"Restarts: {args.restarts} k-means++ restarts under vmap in one call "
            f"against one restart, {args.restart_iters} iterations (tol = 0) for "
            f"the restart that runs longest (target <= {RESTART_TARGET:.0f}x). "
            f"'all' runs every restart to the end (scikit-learn's n_init); "
            f"'screened' runs each {args.screen_iters} iterations and only the "
            f"best on (``screen_iters={args.screen_iters}``).",
            "",
            f"| N | d | K | covariance | dtype | 1 restart (s) | {args.restarts} "
            f"all (s) | ratio | {args.restarts} screened (s) | ratio |",
            "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in restart_rows:
            lines.append(
                f"| {_rows(r['n'])} | {r['d']} | {r['k']} | {r['covariance_type']} | "
                f"{r['dtype']} | {r['one_s']:.3f} | {r['many_s']:.3f} | "
                f"{r['ratio']:.1f}x | {r['screened_s']:.3f} | "
                f"{r['screened_ratio']:.1f}x |")
    lines += ["", f"Total benchmark time: {elapsed:.0f} s.", ""]
    return "\n".join(lines)


def run_gmm(args, command) -> int:
    # Our column runs where --device says (scikit-learn always on the CPU);
    # --dtypes stays explicit, so the device's default precision is not used.
    device.configure(args.device)
    grid = FULL_GRID if args.full else DEFAULT_GRID
    grid = {name: getattr(args, name) or values for name, values in grid.items()}
    out = Path(args.out)
    rt.prepare_output_dir(out.parent, overwrite=True, marker=out.name)
    progress = rt.Progress(quiet=args.quiet)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows, restart_rows = [], []
    for n in grid["n"]:
        for d in grid["d"]:
            for k in grid["k"]:
                if k > n:
                    continue
                for covariance_type in grid["covariance_types"]:
                    for dtype in grid["dtypes"]:
                        label = f"N={n} d={d} K={k} {covariance_type} {dtype}"
                        with progress.step(label):
                            rows.append(bench_config(n, d, k, covariance_type,
                                                     dtype, args))
    if args.restarts > 1:
        restart_n = args.restart_n or min(grid["n"])
        covariance_type, dtype = grid["covariance_types"][0], grid["dtypes"][0]
        for d in grid["d"]:
            for k in grid["k"]:
                if k > restart_n:
                    continue
                with progress.step(f"N={restart_n} d={d} K={k} restarts"):
                    restart_rows.append(bench_restarts(
                        restart_n, d, k, covariance_type, dtype, args))
    load = (load_before, os.getloadavg()[0])
    report = markdown_report(rows, restart_rows, args, command,
                             time.perf_counter() - started, load)
    rt.atomic_write_text(out, report)
    if not args.quiet:
        print(report)
    return rt.EXIT_OK


# --- command line -----------------------------------------------------------------


def add_gmm_parser(subparsers):
    parser = subparsers.add_parser(
        "gmm", help="Gaussian-mixture EM against scikit-learn's GaussianMixture",
        description="Gaussian-mixture EM against scikit-learn's GaussianMixture "
        "(module docstring for the protocol).")
    parser.add_argument("--n", type=int_list, help="rows, e.g. 10000,1e5 "
                        "(default 1e4,1e5; --full: 1e4,1e5,1e6)")
    parser.add_argument("--d", type=int_list,
                        help="features (default 16; --full: 2,16,64)")
    parser.add_argument("--k", type=int_list,
                        help="components (default 16; --full: 4,16,64)")
    parser.add_argument("--covariance-types", type=choice_list(COVARIANCE_TYPES),
                        help="default: all of " + ",".join(COVARIANCE_TYPES))
    parser.add_argument("--dtypes", type=choice_list(DTYPES),
                        help="default: float64,float32")
    parser.add_argument("--full", action="store_true",
                        help="the full grid of issue 3 (hours on 2 cores)")
    parser.add_argument("--iters", type=int, default=10,
                        help="EM iterations per fit, both libraries (default 10)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per measurement; the median is reported "
                        "(default 3)")
    parser.add_argument("--restarts", type=int, default=10,
                        help="restarts timed against one restart (default 10; "
                        "0 or 1 skips that table)")
    parser.add_argument("--restart-n", type=int, default=None,
                        help="N of the restart table (default: smallest N)")
    parser.add_argument("--restart-iters", type=int, default=100,
                        help="EM iterations of the restart table (default 100, "
                             "scikit-learn's max_iter)")
    parser.add_argument("--screen-iters", type=int, default=5,
                        help="screen_iters of the screened restarts (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="data and start seed")
    parser.add_argument("--out", default="out/benchmark_gmm.md",
                        help="markdown output (default out/benchmark_gmm.md)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress messages, no printed table")
    device.add_arguments(parser)
    parser.set_defaults(run=run_gmm)
    return parser


def parse_args(argv=None, prog: str | None = None):
    parser = argparse.ArgumentParser(prog=prog,
                                     description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    gmm = add_gmm_parser(subparsers)
    benchmark_multinomial.add_multinomial_parser(subparsers)
    benchmark_scale.add_scale_parser(subparsers)
    args = parser.parse_args(argv)
    if args.benchmark != "gmm":  # the other parsers validate their own options
        return args
    for name in ("iters", "repeats"):
        if getattr(args, name) < 1:
            gmm.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.restarts < 0:
        gmm.error(f"--restarts must be >= 0, got {args.restarts}")
    if args.restart_n is not None and args.restart_n < 2:
        gmm.error(f"--restart-n must be >= 2, got {args.restart_n}")
    if not 0 <= args.screen_iters < args.restart_iters:
        gmm.error(f"--screen-iters must be in [0, --restart-iters), got "
                  f"{args.screen_iters}")
    return args


def main(argv=None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    # float64 runs need JAX's 64-bit mode; float32 data stay float32. Each
    # subcommand picks its platform itself (--device) before any JAX work.
    jax.config.update("jax_enable_x64", True)
    command = "python scripts/benchmark.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args, command)
    except rt.UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return rt.EXIT_USAGE
    except rt.OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return rt.EXIT_OUTPUT


if __name__ == "__main__":
    sys.exit(main())
