"""Benchmarks of the jit-compiled EM against reference libraries on this machine.

    python scripts/benchmark.py gmm [--n 10000,100000] [--d 16] [--k 16]
        [--covariance-types full,tied,diag,spherical] [--dtypes float64,float32]
        [--iters 10] [--repeats 3] [--restarts 10] [--restart-n 10000]
        [--restart-iters 100] [--screen-iters 5] [--full]
        [--peers sklearn,gmmx,torchgmm] [--rounds 2] [--gemm-size 2048]
        [--device auto|cpu|gpu] [--out out/benchmark_gmm.md] [--seed 0] [--quiet]
    python scripts/benchmark.py multinomial [--quick] [...]
    python scripts/benchmark.py scale [--quick] [--full] [--device auto] [...]
    python scripts/benchmark.py starts [--quick] [...]
    python scripts/benchmark.py online [--quick] [--n 1e7] [...]

``multinomial``: our multinomial-mixture EM against the reference tutorial's
algorithm on the Complete Journey, and the reference's whole K-sweep protocol;
see ``scripts/benchmark_multinomial.py``.

``starts``: the best-of-n log-likelihood of every start method against
scikit-learn's default start on small, high-dimensional real data; see
``scripts/benchmark_starts.py``.

``online``: log-likelihood against wall time and passes for batch, out-of-core
and online (stepwise) EM; see ``scripts/benchmark_online.py``.

``scale``: time per iteration and peak memory against the number of rows
(in memory and out of core), sharded against single-device fits, sparse against
dense multinomial EM, and K sweeps in one program against separate fits; see
``scripts/benchmark_scale.py``.

``gmm``: ``inference.em.fit_gaussian_mixture`` against scikit-learn's
``GaussianMixture`` (and, with ``--peers``, gmmx and torchgmm: ``scripts/peers``),
all started from the same parameters (``weights_init``, ``means_init``,
``precisions_init`` on the scikit-learn side, ``init=GMMParams`` on ours; where
a library allows less, ``peers`` says what it does) and run for exactly
``--iters`` EM iterations (``tol=0``), float64 against float64 and float32
against float32 (scikit-learn keeps float32 data in float32; gmmx has only
float32). Every library runs in a process of its own (``bench_worker``: the
thread pools of XLA, OpenBLAS and PyTorch slow one another in one process), and
``--rounds`` rounds alternate the processes so that all see the same background
load. In each process a first call (ours compiles there; compile = first call
minus the median) is followed by ``--repeats`` timed calls of the public
function, input validation included, with ``time.perf_counter`` (results forced
with ``block_until_ready``); the reported time is the median of all timed calls.
The final mean log-likelihoods are compared (``|dLL|``), to show that the same
computation was timed.

Against the machine's limit: the same run measures this machine's GEMM
throughput (numpy and XLA, float64 and float32, an n x n product, each in its
own process, at the start and at the end), and every row prints the
matrix-product flops of the algorithm (``bench.gmm_flops``), the GFLOP/s of ours
and of scikit-learn by that count, and ours as a share of the GEMM peak of the
row's dtype. The report records the load average, flagged when high: other
processes on a shared machine slow every column, not equally.

With ``--device gpu`` our column runs on the GPU (peers on the CPU), the GEMM
is measured there too, and ours also runs on the CPU (``ours_cpu``) for the
GPU's speedup over our CPU.

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
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from latentmix.inference.em import ConvergenceWarning, fit_gaussian_mixture
from latentmix.models.gaussian_mixture import COVARIANCE_TYPES
from latentmix.scripts import (
    benchmark_multinomial,
    benchmark_online,
    benchmark_scale,
    benchmark_starts,
    device,
)
from latentmix.scripts import runtime as rt
from latentmix.scripts.bench import (
    choice_list,
    gemm_peak,
    gmm_flops,
    int_list,
    measure_gemm,
    run_worker,
    simulate,  # noqa: F401 (part of this module's interface, used by tests)
    start_params,  # noqa: F401 (part of this module's interface, used by tests)
    timed,
)
from latentmix.scripts.peers import PEERS, sklearn_precisions  # noqa: F401

DTYPES = ("float64", "float32")
FULL_GRID = {"n": (10_000, 100_000, 1_000_000), "d": (2, 16, 64), "k": (4, 16, 64),
             "covariance_types": COVARIANCE_TYPES, "dtypes": DTYPES}
DEFAULT_GRID = {"n": (10_000, 100_000), "d": (16,), "k": (16,),
                "covariance_types": COVARIANCE_TYPES, "dtypes": DTYPES}
REG_COVAR = 1e-6  # scikit-learn's default, on both sides
SPEEDUP_TARGET = 5.0  # issue 3: at least 5x scikit-learn for N >= 1e5 on CPU
RESTART_TARGET = 3.0  # issue 3: 10 restarts at most 3x one restart
SETTLE_SECONDS = 0.3  # pause before every timed call (interleaved_medians)
LOADED = 2.5  # a 1-minute load average above this is flagged in the report


# --- gmm: problem set-up ----------------------------------------------------------


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
    """Time ours and every peer in alternating processes (``--rounds`` rounds
    of ``--repeats`` timed calls each, after one untimed call per process)."""
    # On a GPU, ours also runs on the CPU (the GPU's speedup over our CPU).
    ours_cpu = ["ours_cpu"] if jax.default_backend() != "cpu" else []
    libraries = ["ours"] + ours_cpu + list(args.peers)
    times = {library: [] for library in libraries}
    firsts = {library: [] for library in libraries}
    results = {}
    for _ in range(args.rounds):
        for library in libraries:
            if results.get(library, {}).get("unavailable"):
                continue
            spec = {"task": "gmm", "library": library, "n": n, "d": d, "k": k,
                    "covariance_type": covariance_type, "dtype": dtype,
                    "iters": args.iters, "repeats": args.repeats,
                    "seed": args.seed,
                    "device": args.device if library == "ours" else "cpu"}
            if library == "ours_cpu":
                spec["library"] = "ours"
            result = run_peer(spec, args.peer_timeout if library in PEERS
                                and library != "sklearn" else None)
            results[library] = result
            if "unavailable" in result:
                continue
            times[library] += result["times"]
            firsts[library].append(result["first"])
    ours_time = statistics.median(times["ours"])
    flops = gmm_flops(n, d, k, covariance_type) * args.iters
    row = {"n": n, "d": d, "k": k, "covariance_type": covariance_type,
           "dtype": dtype,
           "compile_s": max(statistics.median(firsts["ours"]) - ours_time, 0.0),
           "ours_s": ours_time, "flops": flops,
           "iters": {"ours": results["ours"]["iters"]}, "peers": {}}
    for peer in ours_cpu + list(args.peers):
        result = results[peer]
        if "unavailable" in result:
            row["peers"][peer] = {"unavailable": result["unavailable"]}
            continue
        peer_time = statistics.median(times[peer])
        row["peers"][peer] = {
            "s": peer_time, "speedup": peer_time / ours_time,
            "gflops": flops / peer_time / 1e9, "dtype": result["dtype"],
            "iters": result["iters"],
            "loglik_diff": abs(results["ours"]["log_likelihood"]
                               - result["log_likelihood"])}
    sklearn = row["peers"]["sklearn"]
    row.update(sklearn_s=sklearn["s"], speedup=sklearn["speedup"],
               loglik_diff=sklearn["loglik_diff"], ours_gflops=flops / ours_time / 1e9)
    return row


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


def _gemm_lines(gemm, platform_name, size):
    """The GEMM yardstick: GFLOP/s per library and dtype, at the start and end."""
    lines = [
        f"GEMM throughput of this machine, measured in the same run (a {size} x "
        f"{size} matrix product, median of the repeats, each library in its own "
        f"process; "
        f"XLA on {platform_name}, numpy on the CPU), GFLOP/s at the start / end:",
        "",
        "| library | float64 | float32 |",
        "|---|---:|---:|",
    ]
    for library in ("numpy", "xla"):
        cells = [" / ".join(f"{rates[(library, dtype)]:.1f}" for rates in gemm)
                 for dtype in DTYPES]
        lines.append(f"| {library} | {cells[0]} | {cells[1]} |")
    peaks = ", ".join(f"{dtype} {gemm_peak(gemm, dtype, platform_name):.1f}"
                      for dtype in DTYPES)
    lines += ["", f"Peak used for the shares below (the best of these): {peaks} "
              f"GFLOP/s.", ""]
    return lines


def markdown_report(rows, restart_rows, args, command, elapsed, load, gemm):
    backend = jax.default_backend()
    peers = [peer for peer in args.peers if peer != "sklearn"]
    if rows and "ours_cpu" in rows[0]["peers"]:
        peers = ["ours_cpu"] + peers
    lines = [
        "# Gaussian-mixture EM: latentmix against scikit-learn"
        + (f" and {', '.join(peers)}" if peers else ""),
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_description()}. Load average (1 min) {load[0]:.1f} "
        f"at the start, {load[1]:.1f} at the end"
        + (" (a loaded machine: other processes slowed every column)"
           if max(load) > LOADED else "") + ".",
        "",
    ]
    lines += _gemm_lines(gemm, backend, args.gemm_size)
    lines += [
        f"Every library starts from the same parameters and runs exactly "
        f"{args.iters} EM iterations (tol = 0), reg_covar = {REG_COVAR}, each in "
        f"its own process; {args.rounds} rounds alternate the processes, each "
        f"process makes one untimed call (ours compiles there) and "
        f"{args.repeats} timed ones. Times in seconds, the median of the timed "
        f"calls; compile = first call minus that median. Speedup = scikit-learn "
        f"/ ours. |dLL| = difference of the final mean log-likelihoods (same "
        f"computation). GFLOP = matrix-product flops of the {args.iters} "
        f"iterations (``bench.gmm_flops``: full 4 n k d^2 per iteration, tied "
        f"2 n d^2 + 4 n k d, diag 8 n k d, spherical 4 n k (d + 1)), the same "
        f"count for both libraries; peak = the GEMM peak above in the row's "
        f"dtype.",
        "",
        f"| N | d | K | covariance | dtype | compile | ours ({backend}) | "
        f"scikit-learn | speedup | \\|dLL\\| | GFLOP | ours GFLOP/s | "
        f"scikit-learn GFLOP/s | ours % of peak |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peak = gemm_peak(gemm, r["dtype"], backend)
        lines.append(
            f"| {_rows(r['n'])} | {r['d']} | {r['k']} | {r['covariance_type']} | "
            f"{r['dtype']} | {r['compile_s']:.2f} | {r['ours_s']:.3f} | "
            f"{r['sklearn_s']:.3f} | {r['speedup']:.1f}x | {r['loglik_diff']:.1e} | "
            f"{r['flops'] / 1e9:.3g} | {r['ours_gflops']:.1f} | "
            f"{r['peers']['sklearn']['gflops']:.1f} | "
            f"{100 * r['ours_gflops'] / peak:.0f}% |")
    large = [r["speedup"] for r in rows if r["n"] >= 100_000]
    lines.append("")
    if large:
        lines.append(
            f"N >= 1e5: speedup min {min(large):.1f}x, median "
            f"{statistics.median(large):.1f}x, max {max(large):.1f}x (target >= "
            f"{SPEEDUP_TARGET:.0f}x; {sum(s >= SPEEDUP_TARGET for s in large)} of "
            f"{len(large)} configurations meet it).")
    if peers:
        lines += _peer_lines(rows, peers, gemm, backend)
    if restart_rows:
        lines += [
            "",
            f"Restarts: {args.restarts} restarts (default start) under vmap in one "
            f"call against one restart, {args.restart_iters} iterations (tol = 0) "
            f"for the restart that runs longest (target <= {RESTART_TARGET:.0f}x). "
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


def _peer_lines(rows, peers, gemm, backend):
    """The peers table: every other library of ``--peers`` on every row."""
    lines = [
        "",
        "Peers, timed like scikit-learn above (same start, same iterations, own "
        "process). 'computes in' is the dtype the library ran in: gmmx has no "
        "float64 (it runs the float64 rows in float32) and no tied or spherical "
        "covariances; torchgmm's estimator cannot start from given covariances, "
        "so its model's parameters are set to the start and its own training "
        "module runs the iterations (``scripts/peers.py``). ours / peer = the "
        "peer's time over ours. ours_cpu (on a GPU run only) is our fit on the "
        "CPU, so its ratio is the GPU's speedup over our CPU.",
        "",
        "| N | d | K | covariance | dtype | library | computes in | iterations | "
        "time (s) | ours / peer | GFLOP/s | % of peak | \\|dLL\\| |",
        "|---:|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for peer in peers:
            head = (f"| {_rows(r['n'])} | {r['d']} | {r['k']} | "
                    f"{r['covariance_type']} | {r['dtype']} | {peer} |")
            result = r["peers"][peer]
            if "unavailable" in result:
                lines.append(f"{head} n/a ({result['unavailable']}) | | | | | | |")
                continue
            peak = gemm_peak(gemm, result["dtype"], "cpu")  # peers: the CPU
            lines.append(
                f"{head} {result['dtype']} | {result['iters']} | {result['s']:.3f} | "
                f"{result['speedup']:.1f}x | {result['gflops']:.1f} | "
                f"{100 * result['gflops'] / peak:.0f}% | "
                f"{result['loglik_diff']:.1e} |")
    return lines


def run_gmm(args, command) -> int:
    # Our column runs where --device says (every peer on the CPU); --dtypes
    # stays explicit, so the device's default precision is not used. On a GPU
    # the worker processes share it: no process may grab most of its memory.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    device.configure(args.device)
    grid = FULL_GRID if args.full else DEFAULT_GRID
    grid = {name: getattr(args, name) or values for name, values in grid.items()}
    out = Path(args.out)
    rt.prepare_output_dir(out.parent, overwrite=True, marker=out.name)
    progress = rt.Progress(quiet=args.quiet)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    gemm = []
    with progress.step("GEMM throughput"):
        gemm.append(measure_gemm(args.device, args.gemm_size, args.repeats))
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
    with progress.step("GEMM throughput, again"):
        gemm.append(measure_gemm(args.device, args.gemm_size, args.repeats))
    load = (load_before, os.getloadavg()[0])
    report = markdown_report(rows, restart_rows, args, command,
                             time.perf_counter() - started, load, gemm)
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
    parser.add_argument("--peers", type=_peer_list, default=("sklearn",),
                        help="libraries timed against ours, comma-separated "
                             "subset of " + ",".join(PEERS) + " (default sklearn; "
                             "scikit-learn is always included; gmmx and torchgmm "
                             "come with pip install -e '.[bench]')")
    parser.add_argument("--peer-timeout", type=float, default=600.0,
                        help="seconds after which a peer other than scikit-learn "
                             "is stopped and reported as giving no result "
                             "(default 600)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds of one process per library "
                             "(default 2)")
    parser.add_argument("--gemm-size", type=int, default=2048,
                        help="n of the n x n GEMM that measures the machine's "
                             "throughput (default 2048)")
    parser.add_argument("--out", default="out/benchmark_gmm.md",
                        help="markdown output (default out/benchmark_gmm.md)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress messages, no printed table")
    device.add_arguments(parser)
    parser.set_defaults(run=run_gmm)
    return parser


def _peer_list(text):
    peers = choice_list(PEERS)(text)
    return ("sklearn",) + tuple(peer for peer in dict.fromkeys(peers)
                                if peer != "sklearn")



def run_peer(spec, timeout):
    """``run_worker``, with a peer that gives no result within ``timeout``
    seconds stopped and reported as unavailable (gmmx on jax 0.10 was seen to
    hang, every thread waiting, in its first call at d = 64)."""
    try:
        return run_worker(spec, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"unavailable": f"no result within --peer-timeout {timeout:g} s "
                               f"(stopped)"}

def parse_args(argv=None, prog: str | None = None):
    parser = argparse.ArgumentParser(prog=prog,
                                     description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    gmm = add_gmm_parser(subparsers)
    benchmark_multinomial.add_multinomial_parser(subparsers)
    benchmark_scale.add_scale_parser(subparsers)
    benchmark_starts.add_starts_parser(subparsers)
    benchmark_online.add_online_parser(subparsers)
    args = parser.parse_args(argv)
    if args.benchmark != "gmm":  # the other parsers validate their own options
        return args
    for name in ("iters", "repeats", "rounds", "gemm_size"):
        if getattr(args, name) < 1:
            gmm.error(f"--{name.replace('_', '-')} must be >= 1, got "
                      f"{getattr(args, name)}")
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
