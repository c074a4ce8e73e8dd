"""``benchmark.py starts``: which start gives the best best-of-n fit on real data.

    python scripts/benchmark.py starts [--datasets wine,breast_cancer,digits]
        [--k 2,3,4,5] [--covariance-types full,tied,diag,spherical]
        [--inits kmeans,kmeans++,random_from_data] [--seeds 20] [--restarts 10]
        [--out out/benchmark_starts.md] [--quick] [--quiet]

For every data set, K, covariance type and seed s, scikit-learn's
``GaussianMixture(K, n_init=restarts, random_state=s)`` (its default start:
k-means, then one M-step) and our ``fit_gaussian_mixture(x, K,
num_restarts=restarts, init=..., rng_key=key(s))`` for every start method, both
with their defaults otherwise (tol = 1e-3 on the mean log-likelihood, at most
100 iterations, reg_covar = 1e-6): the best-of-n mean log-likelihood of each.
The table gives the median over the seeds of each start and of scikit-learn's,
and the summary counts the configurations where each start's median is at
least scikit-learn's (less 1e-6, the stopping rule's slack). The data are small
and high-dimensional, where starts matter most (few rows per parameter):
scikit-learn's bundled wine (178 x 13), breast cancer (569 x 30) and the first
400 handwritten digits (400 x 64; 8 pixel columns are constant there, so the
fits lean on reg_covar), in their raw units. scikit-learn runs with one BLAS
thread (threadpoolctl): on 2 shared cores its threads oversubscribe; the
results do not depend on it.

``--quick``: wine only, K = 2, 3 seeds (a test of the plumbing).
Exit status: 0 ok, 2 bad arguments, 5 output not writable.
"""

import contextlib
import os
import statistics
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from latentmix.data.validation import DataWarning
from latentmix.inference.em import ConvergenceWarning, fit_gaussian_mixture
from latentmix.inference.em.gaussian_mixture import INIT_METHODS
from latentmix.models.gaussian_mixture import COVARIANCE_TYPES
from latentmix.scripts import runtime as rt
from latentmix.scripts.bench import choice_list, int_list

__all__ = ["DATASETS", "add_starts_parser", "load_dataset", "run_starts",
           "starts_table"]

DATASETS = ("wine", "breast_cancer", "digits")
SLACK = 1e-6  # both stop at a change < 1e-3 per iteration; see the test


def load_dataset(name: str) -> np.ndarray:
    """A data set bundled with scikit-learn, as float64 rows (raw units)."""
    from sklearn import datasets

    if name == "wine":
        return datasets.load_wine().data.astype(np.float64)
    if name == "breast_cancer":
        return datasets.load_breast_cancer().data.astype(np.float64)
    if name == "digits":
        return datasets.load_digits().data[:400].astype(np.float64)
    raise ValueError(f"unknown data set {name!r}; expected one of {DATASETS}")


def best_of_n(x, num_components, covariance_type, init, restarts, seed) -> float:
    """Our best-of-``restarts`` mean log-likelihood from start ``init``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", DataWarning)
        result = fit_gaussian_mixture(x, num_components,
                                      covariance_type=covariance_type, init=init,
                                      num_restarts=restarts,
                                      rng_key=jax.random.key(seed))
    return float(result.log_likelihood)


def sklearn_best_of_n(x, num_components, covariance_type, restarts, seed) -> float:
    """scikit-learn's best-of-``restarts`` with its default (k-means) start."""
    import threadpoolctl
    from sklearn.mixture import GaussianMixture

    with threadpoolctl.threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GaussianMixture(num_components, covariance_type=covariance_type,
                                n_init=restarts, random_state=seed).fit(x)
    return float(model.score(x))


def starts_table(args, progress=None):
    """One row per (data set, K, covariance type): medians over the seeds."""
    rows = []
    for name in args.datasets:
        x = load_dataset(name)
        for num_components in args.k:
            for covariance_type in args.covariance_types:
                label = f"{name} K={num_components} {covariance_type}"
                timer = progress.step(label) if progress else contextlib.nullcontext()
                with timer:
                    theirs = [sklearn_best_of_n(x, num_components, covariance_type,
                                                args.restarts, seed)
                              for seed in range(args.seeds)]
                    ours = {init: [best_of_n(x, num_components, covariance_type,
                                             init, args.restarts, seed)
                                   for seed in range(args.seeds)]
                            for init in args.inits}
                rows.append({
                    "dataset": name, "shape": x.shape, "k": num_components,
                    "covariance_type": covariance_type,
                    "sklearn": statistics.median(theirs),
                    "ours": {init: statistics.median(values)
                             for init, values in ours.items()},
                    "wins": {init: sum(a >= b - SLACK for a, b in zip(
                        values, theirs, strict=True)) for init, values in ours.items()},
                })
    return rows


def markdown_report(rows, args, command, elapsed, load):
    inits = list(args.inits)
    lines = [
        "# Starts: best-of-n log-likelihood against scikit-learn's default",
        "",
        f"Command: `{command}`",
        "",
        f"Load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end "
        f"(timing plays no part here).",
        "",
        f"Median over {args.seeds} seeds of the best-of-{args.restarts} mean "
        f"log-likelihood per row (defaults otherwise: tol 1e-3, at most 100 "
        f"iterations, reg_covar 1e-6); 'wins' = seeds where that start's best "
        f"is at least scikit-learn's (less {SLACK:g}).",
        "",
        "| data | n x d | K | covariance | scikit-learn (k-means) | "
        + " | ".join(f"{init} | - sklearn | wins" for init in inits) + " |",
        "|---|---|---:|---|---:|" + "---:|---:|---:|" * len(inits),
    ]
    for r in rows:
        cells = []
        for init in inits:
            value = r["ours"][init]
            cells.append(f"{value:.4f} | {value - r['sklearn']:+.4f} | "
                         f"{r['wins'][init]}/{args.seeds}")
        lines.append(
            f"| {r['dataset']} | {r['shape'][0]} x {r['shape'][1]} | {r['k']} | "
            f"{r['covariance_type']} | {r['sklearn']:.4f} | " + " | ".join(cells)
            + " |")
    lines += ["", "Summary (configurations where the median is at least "
              "scikit-learn's, less 1e-6; mean and worst difference of medians):", ""]
    for init in inits:
        differences = [r["ours"][init] - r["sklearn"] for r in rows]
        met = sum(d >= -SLACK for d in differences)
        lines.append(f"* {init}: {met} of {len(rows)}; mean "
                     f"{np.mean(differences):+.4f}, worst {min(differences):+.4f} "
                     f"nats per row.")
    lines += ["", f"Total time: {elapsed:.0f} s.", ""]
    return "\n".join(lines)


def run_starts(args, command) -> int:
    from latentmix.scripts import device

    device.configure("cpu")  # tiny data: the CPU; float64 throughout
    jax.config.update("jax_enable_x64", True)
    if args.quick:
        args.datasets, args.k, args.seeds = ("wine",), (2,), 3
    out = Path(args.out)
    rt.prepare_output_dir(out.parent, overwrite=True, marker=out.name)
    progress = rt.Progress(quiet=args.quiet)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows = starts_table(args, progress)
    report = markdown_report(rows, args, command, time.perf_counter() - started,
                             (load_before, os.getloadavg()[0]))
    rt.atomic_write_text(out, report)
    if not args.quiet:
        print(report)
    return rt.EXIT_OK


def add_starts_parser(subparsers):
    parser = subparsers.add_parser(
        "starts", help="best-of-n fits of each start method against scikit-learn",
        description="Best-of-n log-likelihood of every start method against "
        "scikit-learn's default on small, high-dimensional real data (module "
        "docstring of scripts/benchmark_starts.py).")
    parser.add_argument("--datasets", type=choice_list(DATASETS), default=DATASETS,
                        help="comma-separated subset of " + ",".join(DATASETS))
    parser.add_argument("--k", type=int_list, default=(2, 3, 4, 5),
                        help="components (default 2,3,4,5)")
    parser.add_argument("--covariance-types", type=choice_list(COVARIANCE_TYPES),
                        default=COVARIANCE_TYPES)
    parser.add_argument("--inits", type=choice_list(INIT_METHODS),
                        default=INIT_METHODS,
                        help="our start methods (default all: "
                             + ",".join(INIT_METHODS) + ")")
    parser.add_argument("--seeds", type=int, default=20,
                        help="seeds per configuration (default 20)")
    parser.add_argument("--restarts", type=int, default=10,
                        help="n of best-of-n, both libraries (default 10)")
    parser.add_argument("--quick", action="store_true",
                        help="wine, K = 2, 3 seeds (a test of the plumbing)")
    parser.add_argument("--out", default="out/benchmark_starts.md",
                        help="markdown output (default out/benchmark_starts.md)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress messages, no printed report")
    parser.set_defaults(run=run_starts)
    return parser

