"""Fit a latentmix model to your own CSV or parquet file.

Examples:
  python scripts/fit.py linear-regression --data houses.csv --target price \\
      --columns area,rooms --method all --out out/houses
  python scripts/fit.py gaussian-mixture --data faithful.csv --k-range 1:6 \\
      --criterion bic --covariance-type full --restarts 5 --out out/faithful
  python scripts/fit.py multinomial-mixture --data lines.csv --format long \\
      --basket-column basket --category-column category --groups household \\
      --k 8 --out out/baskets
  python scripts/fit.py gaussian-mixture --data big.parquet --k 16 \
      --device gpu --dtype float32 --out out/big

--device auto (default) uses a GPU when JAX finds one, else the CPU; --device
gpu fails with exit status 2 when there is none. --dtype auto is float64 on the
CPU and float32 on a GPU.

Exit status: 0 ok (warnings allowed), 2 bad arguments, 3 invalid data,
4 numerical failure (or a failed NUTS diagnostic with --strict), 5 output/IO
failure, 130 interrupted (Ctrl-C or SIGTERM; what was computed is written with
status "interrupted").
"""

import argparse
import os
import sys
import traceback
import warnings

import jax
import numpy as np
import pandas as pd

from latentmix.scripts import device, fit_report
from latentmix.scripts import runtime as rt
from latentmix.scripts.fit_report import Outcome, Partial

MODELS = ("linear-regression", "gaussian-mixture", "multinomial-mixture")
METHODS = ("em", "map", "vi", "nuts", "all")


def parse_k_range(text: str) -> list[int]:
    """'2:20' -> [2, ..., 20]; '2:20:2' -> [2, 4, ..., 20]."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"--k-range must look like START:STOP or START:STOP:STEP with positive "
            f"integers, got {text!r}"
        )
    start, stop = int(parts[0]), int(parts[1])
    step = int(parts[2]) if len(parts) == 3 else 1
    if start < 1 or stop < start or step < 1:
        raise argparse.ArgumentTypeError(
            f"--k-range needs 1 <= START <= STOP and STEP >= 1, got {text!r}"
        )
    return list(range(start, stop + 1, step))


def _int_at_least(minimum: int):
    """argparse type: an integer >= minimum, with a message naming both."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {value}"
            )
        return value

    return parse


positive_int = _int_at_least(1)
nonnegative_int = _int_at_least(0)


def column_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"--columns must be comma-separated names without empty entries, "
            f"got {text!r}"
        )
    return names


def build_parser(prog: str = "fit.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", choices=MODELS, help="which model to fit")
    parser.add_argument("--data", required=True, help="input CSV or parquet file")
    parser.add_argument("--sep", default=None,
                        help="CSV delimiter (default: detected among , ; tab |)")
    parser.add_argument("--columns", type=column_list, default=None,
                        help="comma-separated feature/count columns "
                             "(default: all numeric columns except target/groups)")
    parser.add_argument("--target", default=None,
                        help="linear regression: the response column")
    parser.add_argument("--no-bias", action="store_true",
                        help="linear regression: do not add an intercept column")
    parser.add_argument("--groups", default=None,
                        help="multinomial mixture: column with a group id (household) "
                             "for per-group mixture weights")
    parser.add_argument("--format", choices=("wide", "long"), default="wide",
                        help="multinomial mixture: 'wide' = one row per basket with a "
                             "count column per category; 'long' = one row per line "
                             "item (basket, category[, quantity])")
    parser.add_argument("--basket-column", default="basket",
                        help="long format: basket id column (default: basket)")
    parser.add_argument("--category-column", default="category",
                        help="long format: category column (default: category)")
    parser.add_argument("--quantity-column", default=None,
                        help="long format: sum this column instead of counting lines")
    k_group = parser.add_mutually_exclusive_group()
    k_group.add_argument("--k", type=positive_int, default=None,
                         help="number of mixture components")
    k_group.add_argument("--k-range", type=parse_k_range, default=None,
                         help="sweep K over START:STOP[:STEP] and pick by --criterion")
    parser.add_argument("--criterion", choices=("bic", "icl", "heldout"),
                        default="bic", help="model-selection criterion for --k-range")
    parser.add_argument("--method", choices=METHODS, default="em",
                        help="em (default), map, vi, nuts, or all (writes the "
                             "cross-check table)")
    parser.add_argument("--covariance-type", default="full",
                        choices=("full", "diag", "spherical", "tied"),
                        help="Gaussian mixture covariance structure")
    parser.add_argument("--restarts", type=positive_int, default=5,
                        help="EM restarts (best kept)")
    parser.add_argument("--max-iters", type=nonnegative_int, default=500)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--num-samples", type=positive_int, default=1000,
                        help="NUTS draws per chain")
    parser.add_argument("--num-warmup", type=positive_int, default=1000)
    parser.add_argument("--num-chains", type=positive_int, default=4)
    device.add_arguments(parser, dtype=True)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results already in --out")
    parser.add_argument("--strict", action="store_true",
                        help="NUTS diagnostics problems become exit status 4")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def check_arguments(args) -> None:
    """Cross-option checks argparse cannot express (raise UsageError -> exit 2)."""
    if args.model == "linear-regression":
        if args.target is None:
            raise rt.UsageError("linear-regression needs --target COLUMN")
        if args.k is not None or args.k_range is not None:
            raise rt.UsageError("--k/--k-range apply to mixtures only")
    else:
        if args.target is not None:
            raise rt.UsageError("--target applies to linear-regression only")
        if args.k is None and args.k_range is None:
            raise rt.UsageError(f"{args.model} needs --k K or --k-range START:STOP")
    if args.groups is not None and args.model != "multinomial-mixture":
        raise rt.UsageError("--groups applies to multinomial-mixture only")
    if args.criterion == "heldout" and args.k_range is None:
        raise rt.UsageError("--criterion heldout needs --k-range")


def configure_jax(args) -> None:
    """Pick host devices, platform and precision before JAX starts (once per
    process); ``args.dtype`` becomes the concrete dtype ("float32"/"float64")."""
    # NUTS runs its chains in parallel on that many CPU devices.
    choice = device.configure(args.device, args.dtype,
                              host_devices=max(args.num_chains, 1))
    args.dtype = choice.dtype


def run(args, progress: rt.Progress, partial: Partial) -> int:
    """Validate, fit, write. Returns the exit status (exceptions map in main)."""
    from latentmix.data.tables import read_table

    configure_jax(args)  # a missing GPU is a usage error: before any output
    out = rt.prepare_output_dir(args.out, overwrite=args.overwrite)
    partial.out = out
    partial.payload = {"model": args.model}
    notes: list[str] = []
    frame = read_table(args.data, sep=args.sep)
    fitter = {"linear-regression": fit_linear_regression,
              "gaussian-mixture": fit_gaussian_mixture,
              "multinomial-mixture": fit_multinomial_mixture}[args.model]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = fitter(args, frame, progress, partial)
    for warning in caught:
        notes.append(f"{warning.category.__name__}: {warning.message}")
    fit_report.finish(args, out, outcome, notes, status="ok")
    if args.strict and outcome.checks_failed:
        print("error: NUTS diagnostics failed (--strict): "
              + "; ".join(outcome.check_messages), file=sys.stderr)
        return rt.EXIT_NUMERIC
    return rt.EXIT_OK


def main(argv=None, prog: str = "fit.py") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)  # exits 2 on a bad option
    progress = rt.Progress(quiet=args.quiet)
    rt.use_agg_backend()
    from latentmix.data.tables import DataError

    partial = Partial()
    try:
        check_arguments(args)
        with rt.interrupt_as_keyboard_interrupt():
            return run(args, progress, partial)
    except rt.UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return rt.EXIT_USAGE
    except DataError as error:
        print(f"error: invalid data: {error}", file=sys.stderr)
        return rt.EXIT_DATA
    except rt.OutputError as error:
        print(f"error: output: {error}", file=sys.stderr)
        return rt.EXIT_OUTPUT
    except FloatingPointError as error:
        print(f"error: numerical failure: {error}", file=sys.stderr)
        return rt.EXIT_NUMERIC
    except KeyboardInterrupt:
        fit_report.write_interrupted(args, partial)
        print("interrupted: partial results written with status 'interrupted'",
              file=sys.stderr)
        return rt.EXIT_INTERRUPTED
    except ValueError as error:
        # Validators of the library raise ValueError naming the argument: the
        # input data did not fit the model.
        if os.environ.get("LATENTMIX_DEBUG"):
            traceback.print_exc()
        print(f"error: invalid data: {error}", file=sys.stderr)
        return rt.EXIT_DATA


# ------------------------------------------------------------------ the models


def bayesian_methods(method: str) -> tuple:
    """The methods beyond EM that ``--method`` asks for."""
    return ("map", "vi", "nuts") if method == "all" else (
        () if method == "em" else (method,))


def record_crosscheck(check, outcome: Outcome, payload: dict) -> None:
    """The cross-check's table into the report and params.json; failed rows
    (a disagreement, or a NUTS diagnostics problem) into the messages."""
    table = check.table
    outcome.tables.insert(0, ("Cross-check (tolerance and rule per row)", table))
    payload["cross_check"] = table.to_dict(orient="list")
    failed = table.loc[~table["passed"]]
    if not failed.empty:
        outcome.checks_failed = True
        outcome.check_messages += [
            f"{row.method}: {row.check}: {row.statistic:.3g} against tolerance "
            f"{row.tolerance:.3g} ({row.rule})" for row in failed.itertuples()]
    if check.idata is not None:
        outcome.idata = check.idata


def fit_linear_regression(args, frame, progress, partial: Partial) -> Outcome:
    from latentmix.data.tables import default_columns, numeric_matrix, require_columns
    from latentmix.inference import BayesianLinearRegression
    from latentmix.inference.crosscheck import crosscheck_linear_regression
    from latentmix.inference.em import fit_linear_regression as em_fit
    from latentmix.models import linear_regression as lr

    require_columns(frame, [args.target], path=args.data, role="target column")
    features = args.columns or default_columns(frame, {args.target})
    if args.target in features:
        raise rt.UsageError(f"--target {args.target!r} is also listed in --columns")
    X = numeric_matrix(frame, features, path=args.data).astype(args.dtype)
    y = numeric_matrix(frame, [args.target], path=args.data)[:, 0].astype(args.dtype)
    names = list(features)
    if not args.no_bias:
        X = np.column_stack([np.ones(len(X)), X])
        names = ["bias", *names]
    with progress.step("EM for the prior and noise precisions"):
        result = em_fit(X, y, max_iters=max(args.max_iters, 1) * 20)
    beta = float(result.params.noise_precision)
    mean, variance = lr.predictive(
        lr.GaussianPosterior(result.params.mean, result.params.cov), X, beta)
    payload = {
        "model": "linear-regression", "features": names, "target": args.target,
        "prior_precision": float(result.params.prior_precision),
        "noise_precision": beta, "log_evidence": float(result.log_likelihood),
        "em": {"num_iters": int(result.num_iters),
               "converged": bool(result.converged)},
        "posterior_mean": dict(zip(names, np.asarray(result.params.mean).tolist(),
                                   strict=True)),
        "posterior_sd": dict(zip(names, np.sqrt(np.diag(result.params.cov)).tolist(),
                                 strict=True)),
    }
    partial.payload = payload
    rows = pd.DataFrame({"row": np.arange(1, len(y) + 1), "y": y,
                         "predicted_mean": np.asarray(mean),
                         "predicted_sd": np.sqrt(np.asarray(variance))})
    rows["residual"] = rows["y"] - rows["predicted_mean"]
    outcome = Outcome(payload, rows, "predictions.csv")
    outcome.model = BayesianLinearRegression.from_result(
        result, fit_intercept=not args.no_bias, penalize_intercept=True,
        feature_names=features)
    outcome.model_metadata = {"target": args.target}
    methods = bayesian_methods(args.method)
    if methods:
        check = crosscheck_linear_regression(
            X, y, rng_key=jax.random.key(args.seed), methods=methods,
            feature_names=names, num_chains=args.num_chains,
            num_warmup=args.num_warmup, num_samples=args.num_samples,
            progress_fn=progress)
        record_crosscheck(check, outcome, payload)
    outcome.figures.append(lambda out: fit_report.predictions_figure(rows, out))
    return outcome


def choose_k(args, data, select, progress, partial: Partial, outcome: Outcome, key):
    """--k, or the K of a --k-range sweep by --criterion (selection table kept)."""
    if args.k_range is None:
        return args.k
    with progress.step(f"sweeping K over {args.k_range}"):
        selection = select(data, args.k_range, key)
    table = selection.table
    outcome.payload["selection"] = table.to_dict(orient="list")
    partial.payload = outcome.payload
    outcome.tables.append((f"Choice of K by {args.criterion}", table))
    outcome.figures.append(lambda out: fit_report.selection_figure(
        table, args.criterion, out, "selection.png"))
    return selection.best_num_components


def fit_gaussian_mixture(args, frame, progress, partial: Partial) -> Outcome:
    from latentmix.data.tables import (
        DataError,
        default_columns,
        heldout_split,
        numeric_matrix,
    )
    from latentmix.inference import GaussianMixture
    from latentmix.inference.crosscheck import crosscheck_gaussian_mixture
    from latentmix.inference.em import fit_gaussian_mixture as em_fit
    from latentmix.inference.selection import gmm_bic, select_num_components
    from latentmix.models import gaussian_mixture as gm

    columns = args.columns or default_columns(frame, set())
    # The EM keeps the data's dtype: this is where --dtype reaches it.
    x = numeric_matrix(frame, columns, path=args.data).astype(args.dtype)
    key_select, key_fit = jax.random.split(jax.random.key(args.seed))
    payload = {"model": "gaussian-mixture", "columns": columns,
               "covariance_type": args.covariance_type}
    partial.payload = payload
    outcome = Outcome(payload, pd.DataFrame(), "assignments.csv")
    fit_options = {"covariance_type": args.covariance_type,
                   "num_restarts": args.restarts, "max_iters": args.max_iters}

    def select(x, k_range, key):
        k_values = [k for k in k_range if k <= len(x)]
        if not k_values:
            raise DataError(f"every K in --k-range exceeds the {len(x)} rows")
        heldout = {}
        if args.criterion == "heldout":
            train, test = heldout_split(len(x), seed=args.seed)
            x, heldout = x[train], {"heldout_x": x[test]}
        return select_num_components(x, k_values, criterion=args.criterion,
                                     rng_key=key, progress_fn=progress,
                                     **heldout, **fit_options)

    num_components = choose_k(args, x, select, progress, partial, outcome,
                              key_select)
    if num_components > len(x):
        raise DataError(f"--k {num_components} exceeds the number of rows {len(x)}")
    methods = bayesian_methods(args.method)
    if methods:
        check = crosscheck_gaussian_mixture(
            x, num_components, covariance_type=args.covariance_type,
            rng_key=key_fit, methods=methods, num_restarts=args.restarts,
            max_iters=max(args.max_iters, 1), num_chains=args.num_chains,
            num_warmup=args.num_warmup, num_samples=args.num_samples,
            progress_fn=progress)
        result = check.fits["em"]
    else:
        with progress.step(f"EM with K = {num_components}"):
            result = em_fit(x, num_components, rng_key=key_fit, **fit_options)
    params = result.params
    payload.update({
        "num_components": num_components,
        "log_likelihood_per_row": float(result.log_likelihood),
        "bic": float(gmm_bic(params, x, args.covariance_type)),
        "em": {"num_iters": int(result.num_iters),
               "converged": bool(result.converged)},
        "weights": params.weights, "means": params.means,
        "covariances": params.covariances,
    })
    resp = np.asarray(gm.responsibilities(params, x, args.covariance_type))
    rows = pd.DataFrame({"row": np.arange(1, len(x) + 1),
                         "component": resp.argmax(1),
                         "probability": resp.max(1)})
    for k in range(num_components):
        rows[f"resp_{k}"] = resp[:, k]
    outcome.rows = rows
    outcome.model = GaussianMixture.from_result(
        result, covariance_type=args.covariance_type, feature_names=columns)
    if methods:
        for name in ("map", "vi"):
            if name in check.fits:
                payload[name] = check.fits[name].params
        record_crosscheck(check, outcome, payload)
    if x.shape[1] >= 2:
        outcome.figures.append(lambda out: fit_report.gmm_scatter_figure(
            x, columns, params, resp, out))
    return outcome


def fit_multinomial_mixture(args, frame, progress, partial: Partial) -> Outcome:
    from latentmix.data.tables import basket_table, heldout_split
    from latentmix.inference import MultinomialMixture
    from latentmix.inference.crosscheck import crosscheck_multinomial_mixture
    from latentmix.inference.em import fit_multinomial_mixture as em_fit
    from latentmix.inference.segments import segment_map, top_categories
    from latentmix.inference.selection import (
        multinomial_bic,
        select_num_components_multinomial,
    )
    from latentmix.models import multinomial_mixture as mm

    table = basket_table(frame, path=args.data, table_format=args.format,
                         columns=args.columns, groups=args.groups,
                         basket_column=args.basket_column,
                         category_column=args.category_column,
                         quantity_column=args.quantity_column)
    counts, groups, categories = table.counts, table.groups, table.categories
    key_select, key_fit = jax.random.split(jax.random.key(args.seed))
    payload = {"model": "multinomial-mixture", "categories": categories,
               "num_rows": int(counts.shape[0]), "groups_column": args.groups}
    partial.payload = payload
    outcome = Outcome(payload, pd.DataFrame(), "assignments.csv")
    fit_options = {"num_restarts": args.restarts, "max_iters": args.max_iters,
                   "dtype": args.dtype}

    def select(counts, k_range, key):
        heldout, train_counts, train_groups = {}, counts, groups
        if args.criterion == "heldout":
            train, test = heldout_split(counts.shape[0], seed=args.seed)
            train_counts, heldout["heldout_counts"] = counts[train], counts[test]
            if groups is not None:
                train_groups = groups[train]
                known = np.isin(groups[test], train_groups)
                heldout["heldout_counts"] = heldout["heldout_counts"][known]
                heldout["heldout_groups"] = groups[test][known]
        return select_num_components_multinomial(
            train_counts, k_range, criterion=args.criterion, rng_key=key,
            groups=train_groups, progress_fn=progress, **heldout, **fit_options)

    num_components = choose_k(args, counts, select, progress, partial, outcome,
                              key_select)
    methods = bayesian_methods(args.method)
    if groups is not None and "map" in methods:
        methods = tuple(m for m in methods if m != "map")
        outcome.check_messages.append(
            "MAP skipped: the hierarchical (per-group) model has no posterior mode; "
            "VI and NUTS sample it")
    if methods:
        check = crosscheck_multinomial_mixture(
            counts, num_components, groups=groups, rng_key=key_fit, methods=methods,
            num_restarts=args.restarts, num_chains=args.num_chains,
            num_warmup=args.num_warmup, num_samples=args.num_samples,
            progress_fn=progress)
        result = check.fits["em"]
    else:
        with progress.step(f"EM with K = {num_components}"):
            result = em_fit(counts, num_components, groups=groups, rng_key=key_fit,
                            **fit_options)
    params = result.params
    codes = None if groups is None else mm.encode_groups(groups)[0]
    payload.update({
        "num_components": num_components,
        "log_likelihood_per_row": float(result.log_likelihood),
        "bic": float(multinomial_bic(params, counts, codes)),
        "em": {"num_iters": int(result.num_iters),
               "converged": bool(result.converged)},
        "weights": params.weights, "probs": params.probs,
    })
    if groups is not None:
        payload["group_labels"] = mm.encode_groups(groups)[1]
    resp = np.asarray(mm.responsibilities(params, counts, codes))
    labels = np.asarray(mm.assignments(params, counts, codes))
    rows = pd.DataFrame({"row": table.row_ids, "component": labels,
                         "probability": np.where(labels >= 0, resp.max(1), np.nan)})
    rows["component"] = rows["component"].astype(object).where(labels >= 0, "empty")
    for k in range(num_components):
        rows[f"resp_{k}"] = np.where(labels >= 0, resp[:, k], np.nan)
    outcome.rows = rows
    totals = np.asarray(counts.sum(axis=1)).ravel()
    outcome.model = MultinomialMixture.from_result(
        result, feature_names=categories, median_total=np.median(totals[totals > 0]),
        group_labels=payload.get("group_labels"))
    outcome.model_metadata = {
        "format": args.format, "groups": args.groups,
        "basket_column": args.basket_column,
        "category_column": args.category_column,
        "quantity_column": args.quantity_column}
    overall = np.asarray(counts.sum(axis=0)).ravel()
    outcome.tables.append(("Top categories per segment (by lift)",
                           top_categories(params, categories, overall / overall.sum())))
    mean_weights = np.asarray(params.weights).reshape(-1, num_components).mean(0)
    if num_components >= 3:
        outcome.figures.append(lambda out: fit_report.segment_map_figure(
            segment_map(np.asarray(params.probs), mean_weights), mean_weights, out))
    if methods:
        for name in ("map", "vi"):
            if name in check.fits:
                payload[name] = check.fits[name].params
        record_crosscheck(check, outcome, payload)
    return outcome


if __name__ == "__main__":
    sys.exit(main())
