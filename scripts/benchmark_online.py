"""``benchmark.py online``: log-likelihood against time and passes, three ways.

    python scripts/benchmark.py online [--n 1e7] [--d 8] [--k 8]
        [--covariance-type full] [--iters 10] [--epochs 3] [--batch-size 10000]
        [--chunk-rows 262144] [--out out/benchmark_online.md] [--seed 0] [--quick]

Rows of ``bench.simulate``'s mixture are written to a ``.npy`` file (chunk by
chunk), and the same start (``bench.start_params`` on the first 100,000 rows)
is fitted three ways, float64:

  batch EM        ``fit_gaussian_mixture`` on the rows loaded in memory, tol 0:
                  one pass over the rows per iteration;
  out-of-core EM  the same EM streaming ``data.chunks.chunks_from_npy`` every
                  iteration (one pass per iteration, plus one first pass for the
                  centre and covariance);
  online EM       ``fit_gaussian_mixture_online`` on the rows in memory
                  (``--batch-size`` rows per M-step, shuffled passes; default
                  step size (t + 2)^(-0.6)).

For batch and out-of-core EM, a call of ``--iters`` iterations and a call of 1
iteration give the time per pass ((T - one) / (iters - 1)) and the fixed cost
(one call minus one pass: validation, transfer, centring; compilation is
excluded by a warm-up call of each); the trace gives the mean log-likelihood after
every pass, placed at fixed + passes x time per pass. Online EM reports, after
every pass, the wall time so far (the scoring pass excluded) and the mean
log-likelihood of all rows at its parameters. Every row ends with its
difference to batch EM's final value.

``--quick``: N = 20,000 (a test of the plumbing).
"""

import contextlib
import os
import tempfile
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from latentmix.data.batches import array_batches
from latentmix.data.chunks import chunks_from_npy
from latentmix.inference.em import (
    ConvergenceWarning,
    fit_gaussian_mixture,
    fit_gaussian_mixture_online,
)
from latentmix.inference.em.gaussian_mixture.online import score_online
from latentmix.models.gaussian_mixture import COVARIANCE_TYPES
from latentmix.scripts import runtime as rt
from latentmix.scripts.bench import int_list, simulate_to_npy, start_params, timed

__all__ = ["add_online_parser", "online_curves", "run_online"]


def online_curves(args, progress=None):
    """{method: [(passes, seconds, mean log-likelihood), ...]} for the three."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.npy"
        simulate_to_npy(path, args.n, args.d, args.k, "float64", args.seed)
        x = np.load(path)
        start = start_params(x[:100_000], args.k, args.covariance_type, args.seed)
        curves = {}
        with _step(progress, "batch EM (in memory)"):
            curves["batch EM"] = _em_curve(x, start, args)
        with _step(progress, "out-of-core EM"):
            chunks = chunks_from_npy(path, chunk_rows=args.chunk_rows)
            curves["out-of-core EM"] = _em_curve(chunks, start, args, extra_passes=1)
        with _step(progress, "online EM"):
            curves["online EM"] = _online_curve(x, start, args)
    return curves


def _em_curve(source, start, args, extra_passes=0):
    def fit(iters):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return jax.block_until_ready(fit_gaussian_mixture(
                source, args.k, covariance_type=args.covariance_type, init=start,
                tol=0.0, max_iters=iters))

    fit(1)  # compile both programs (max_iters is static)
    fit(args.iters)
    one, _ = timed(lambda: fit(1))
    total, result = timed(lambda: fit(args.iters))
    per_pass = max(total - one, 0.0) / max(args.iters - 1, 1)
    fixed = max(one - per_pass, 0.0)
    trace = list(np.asarray(result.trace)) + [float(result.log_likelihood)]
    return [(t + extra_passes, fixed + t * per_pass, float(value))
            for t, value in enumerate(trace) if t > 0]


def _online_curve(x, start, args):
    points = []
    clock = {"spent": 0.0, "since": time.perf_counter()}

    def after_pass(epoch, state):
        clock["spent"] += time.perf_counter() - clock["since"]
        value = float(score_online(state, array_batches(x, args.batch_size)))
        points.append((epoch + 1, clock["spent"], value))
        clock["since"] = time.perf_counter()

    # Compile on a small slice first (the timed run reuses the programs), and
    # the shuffle's permutation of N (compiled per length).
    fit_gaussian_mixture_online(x[:2 * args.batch_size], args.k, init=start,
                                covariance_type=args.covariance_type,
                                batch_size=args.batch_size, num_epochs=1,
                                rng_key=jax.random.key(args.seed), score=False)
    jax.block_until_ready(jax.random.permutation(jax.random.key(0), x.shape[0]))
    clock["since"] = time.perf_counter()
    fit_gaussian_mixture_online(x, args.k, init=start,
                                covariance_type=args.covariance_type,
                                batch_size=args.batch_size, num_epochs=args.epochs,
                                rng_key=jax.random.key(args.seed), score=False,
                                callback=after_pass)
    return points


def markdown_report(curves, args, command, elapsed, load):
    reference = curves["batch EM"][-1][2]
    lines = [
        "# Batch, out-of-core and online EM: log-likelihood against time and passes",
        "",
        f"Command: `{command}`",
        "",
        f"N = {args.n:,} rows, d = {args.d}, K = {args.k}, {args.covariance_type} "
        f"covariances, float64, the same start for all three. Load average (1 "
        f"min) {load[0]:.1f} at the start, {load[1]:.1f} at the end"
        + (" (a loaded machine: times are inflated)" if max(load) > 2.5 else "")
        + ".",
        "",
        "| method | passes | seconds | mean log-likelihood | - batch EM's final |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, points in curves.items():
        for passes, seconds, value in points:
            lines.append(f"| {method} | {passes} | {seconds:.2f} | {value:.6f} | "
                         f"{value - reference:+.2e} |")
    lines += ["", f"Total benchmark time: {elapsed:.0f} s.", ""]
    return "\n".join(lines)


def run_online(args, command) -> int:
    from latentmix.scripts import device

    device.configure("cpu", "float64")
    if args.quick:
        args.n, args.batch_size, args.chunk_rows = 20_000, 1000, 4096
    out = Path(args.out)
    rt.prepare_output_dir(out.parent, overwrite=True, marker=out.name)
    progress = rt.Progress(quiet=args.quiet)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    curves = online_curves(args, progress)
    report = markdown_report(curves, args, command, time.perf_counter() - started,
                             (load_before, os.getloadavg()[0]))
    rt.atomic_write_text(out, report)
    if not args.quiet:
        print(report)
    return rt.EXIT_OK


def add_online_parser(subparsers):
    parser = subparsers.add_parser(
        "online", help="batch, out-of-core and online EM: log-likelihood against "
        "time and passes",
        description="Log-likelihood against wall time and passes for batch, "
        "out-of-core and online EM (module docstring of "
        "scripts/benchmark_online.py).")
    parser.add_argument("--n", type=lambda text: int_list(text)[0],
                        default=10_000_000, help="rows (default 1e7)")
    parser.add_argument("--d", type=int, default=8, help="features (default 8)")
    parser.add_argument("--k", type=int, default=8, help="components (default 8)")
    parser.add_argument("--covariance-type", choices=COVARIANCE_TYPES,
                        default="full")
    parser.add_argument("--iters", type=int, default=10,
                        help="EM iterations of batch and out-of-core EM (10)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="passes of online EM (default 3)")
    parser.add_argument("--batch-size", type=int, default=10_000,
                        help="rows per online M-step (default 10000)")
    parser.add_argument("--chunk-rows", type=int, default=1 << 18,
                        help="rows per out-of-core chunk (default 262144)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="N = 20,000 (a test of the plumbing)")
    parser.add_argument("--out", default="out/benchmark_online.md")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=run_online)
    return parser


def _step(progress, label):
    return progress.step(label) if progress else contextlib.nullcontext()
