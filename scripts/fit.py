"""Fit a latentmix model to your own CSV or parquet file.

Examples:
  python scripts/fit.py linear-regression --data houses.csv --target price \\
      --columns area,rooms --method all --out out/houses
  python scripts/fit.py gaussian-mixture --data faithful.csv --k-range 1:6 \\
      --criterion bic --covariance-type full --restarts 5 --out out/faithful
  python scripts/fit.py multinomial-mixture --data lines.csv --format long \\
      --basket-column basket --category-column category --groups household \\
      --k 8 --out out/baskets
  python scripts/fit.py gaussian-mixture --data big.parquet --k 16 \\
      --device gpu --dtype float32 --out out/big

--device auto (default) uses a GPU when JAX finds one, else the CPU; --device
gpu fails with exit status 2 when there is none. --dtype auto is float64 on the
CPU and float32 on a GPU.

--method map, vi, nuts or all runs the cross-check of the library
(latentmix.inference.crosscheck): a table with a tolerance and a pass column,
a one-line verdict on the terminal and in params.json; a failed check is a
warning and status "check_failed" (exit status 4 with --strict).

Exit status: 0 ok (warnings allowed), 2 bad arguments, 3 invalid data,
4 numerical failure (or a failed cross-check with --strict), 5 output/IO
failure, 130 interrupted (Ctrl-C or SIGTERM; what was computed is written with
status "interrupted").
"""

import sys

if __name__ == "__main__":  # before JAX's import: a Ctrl-C meanwhile is kept
    from latentmix.scripts.runtime import catch_early_interrupts

    catch_early_interrupts()

import argparse
import math
import os
import traceback
import warnings

import jax
import numpy as np
import pandas as pd

from latentmix.scripts import device, fit_report
from latentmix.scripts import runtime as rt
from latentmix.scripts.fit_report import Outcome, Run

MODELS = ("linear-regression", "gaussian-mixture", "multinomial-mixture")
METHODS = ("em", "map", "vi", "nuts", "all")
MAX_K_VALUES = 1000  # fits in one --k-range sweep
# --max-iters by default: the mixtures' EM, and the regression's evidence EM
# (slower to converge: its fixed point is a ratio of traces).
MIXTURE_MAX_ITERS = 500
REGRESSION_MAX_ITERS = 10_000
MAX_SEED = 2**63 - 1  # jax.random.key takes a 64-bit integer
# Pseudo-counts per segment and category when held-out baskets are scored: a
# category absent from the training rows would otherwise get probability 0 and
# a held-out basket holding it log-likelihood -inf (the shopper story's choice).
HELDOUT_PSEUDOCOUNT = 0.01
# Share of the memory available when the run starts that a fit may plan to use.
MEMORY_SHARE = 0.8


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
    count = (stop - start) // step + 1
    if count > MAX_K_VALUES:
        raise argparse.ArgumentTypeError(
            f"--k-range {text} asks for {count} fits, one per K; a sweep takes at "
            f"most {MAX_K_VALUES} K values: narrow the range or add a STEP"
        )
    return list(range(start, stop + 1, step))


def _int_in_range(minimum: int, maximum: int | None = None):
    """argparse type: an integer in [minimum, maximum], with a message naming both."""

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
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(
                f"expected an integer <= {maximum}, got {value}"
            )
        return value

    return parse


positive_int = _int_in_range(1)
nonnegative_int = _int_in_range(0)
seed_int = _int_in_range(0, MAX_SEED)


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def separator(text: str) -> str:
    """One character; escapes typed literally ('\\t' for a tab) are decoded."""
    decoded = {"\\t": "\t", "tab": "\t", "\\s": " ", "space": " "}.get(text, text)
    if len(decoded) != 1:
        raise argparse.ArgumentTypeError(
            f"--sep must be a single character (',' ';' '|' or '\\t' for a tab), "
            f"got {text!r}"
        )
    return decoded


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
    parser.add_argument("--sep", type=separator, default=None,
                        help="CSV delimiter, one character; '\\t' for a tab "
                             "(default: detected among , ; tab |)")
    parser.add_argument("--columns", type=column_list, default=None,
                        help="comma-separated feature/count columns "
                             "(default: all columns except target/groups)")
    parser.add_argument("--target", default=None,
                        help="linear regression: the response column")
    parser.add_argument("--no-bias", action="store_true",
                        help="linear regression: do not add an intercept column")
    parser.add_argument("--groups", default=None,
                        help="multinomial mixture: column with a group id (household) "
                             "for per-group mixture weights")
    parser.add_argument("--shrinkage", type=nonnegative_float, default=0.0,
                        help="multinomial mixture with --groups: pseudo-baskets of "
                             "the population mix added to every group's weights "
                             "(0: free per-group weights; 5 is the shopper story's)")
    parser.add_argument("--pseudocount", type=nonnegative_float, default=None,
                        help="multinomial mixture: Dirichlet pseudo-counts per "
                             "segment and category, so a category unseen in the "
                             "training rows keeps a probability above 0 (default: "
                             f"{HELDOUT_PSEUDOCOUNT} with --criterion heldout, "
                             "else 0: maximum likelihood)")
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
    parser.add_argument("--covariance-type", default=None,
                        choices=("full", "diag", "spherical", "tied"),
                        help="Gaussian mixture covariance structure (default full)")
    parser.add_argument("--restarts", type=positive_int, default=5,
                        help="EM restarts (best kept)")
    parser.add_argument("--max-iters", type=nonnegative_int, default=None,
                        help="bound on EM iterations (default 500 for the "
                             "mixtures, 10000 for the regression's evidence EM)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--num-samples", type=positive_int, default=1000,
                        help="NUTS draws per chain")
    parser.add_argument("--num-warmup", type=positive_int, default=1000)
    parser.add_argument("--num-chains", type=positive_int, default=4)
    device.add_arguments(parser, dtype=True)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results already in --out")
    parser.add_argument("--strict", action="store_true",
                        help="a failed cross-check (a disagreement between methods "
                             "or a NUTS diagnostics problem) becomes exit status 4")
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
    if args.shrinkage and args.groups is None:
        raise rt.UsageError("--shrinkage needs --groups (it shrinks per-group "
                            "weights towards the population mix)")
    if args.pseudocount is not None and args.model != "multinomial-mixture":
        raise rt.UsageError("--pseudocount applies to multinomial-mixture only")
    if args.criterion == "heldout" and args.k_range is None:
        raise rt.UsageError("--criterion heldout needs --k-range")
    if args.covariance_type is not None and args.model != "gaussian-mixture":
        raise rt.UsageError("--covariance-type applies to gaussian-mixture only")
    if args.covariance_type is None:
        args.covariance_type = "full"
    if args.max_iters is None:
        args.max_iters = (REGRESSION_MAX_ITERS if args.model == "linear-regression"
                          else MIXTURE_MAX_ITERS)


def configure_jax(args) -> None:
    """Pick host devices, platform and precision before JAX starts (once per
    process); ``args.dtype`` becomes the concrete dtype ("float32"/"float64")."""
    # NUTS runs its chains in parallel on that many CPU devices.
    choice = device.configure(args.device, args.dtype,
                              host_devices=max(args.num_chains, 1))
    args.dtype = choice.dtype


def run(args, progress: rt.Progress, run_state: Run) -> int:
    """Validate, fit, write. Returns the exit status (exceptions map in main)."""
    from latentmix.data.tables import DataError, check_input_file, read_table

    rt.check_interrupt()  # one that came while JAX was imported
    check_input_file(args.data)  # before JAX starts and before any output
    configure_jax(args)  # a missing GPU is a usage error: before any output
    from latentmix.inference.mcmc import SamplingInterrupted
    with rt.OutputFolder(args.out, overwrite=args.overwrite) as folder:
        run_state.start(folder.path)
        rt.on_abort(lambda: run_state.started and run_state.write_params(
            "interrupted"))
        fitter = {"linear-regression": fit_linear_regression,
                  "gaussian-mixture": fit_gaussian_mixture,
                  "multinomial-mixture": fit_multinomial_mixture}[args.model]
        # Failures are recorded in params.json while the folder is still held.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = warning_printer(args, run_state)
                frame = read_table(args.data, sep=args.sep)
                outcome = fitter(args, frame, progress, run_state)
            rt.check_interrupt()  # one requested during a step without chunks
        except KeyboardInterrupt as interrupt:
            idata = (interrupt.idata if isinstance(interrupt, SamplingInterrupted)
                     else None)
            write_interrupted(run_state, idata)
            raise
        except FloatingPointError as error:
            record_failure(run_state, "numerical_failure", error)
            raise
        except (MemoryError, RuntimeError) as error:
            record_failure(run_state, "out_of_memory" if _out_of_memory(error)
                           else "failed", error)
            raise
        except (DataError, ValueError) as error:
            record_failure(run_state, "invalid_data", error)
            raise
        except rt.OutputError as error:
            record_failure(run_state, "output_failed", error)
            raise
        except Exception as error:
            record_failure(run_state, "failed", error)
            raise
        status = "check_failed" if outcome.checks_failed else "ok"
        fit_report.finish(run_state, outcome, status)
    summary(args, outcome, run_state)
    if args.strict and outcome.checks_failed:
        print("error: cross-check failed (--strict): "
              + "; ".join(outcome.check_messages), file=sys.stderr)
        return rt.EXIT_NUMERIC
    return rt.EXIT_OK


def warning_printer(args, run_state: Run):
    """A ``warnings.showwarning`` that prints each warning once, as it happens,
    and records it for params.json; the library's advice about never-observed
    categories is replaced by the command line's (which names them and gives
    the flag)."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = (f"{category.__name__}: "
                f"{in_cli_terms(str(message), run_state.column_names)}")
        if "are never observed" in text and args.model == "multinomial-mixture":
            return  # said by fit_multinomial_mixture's caller, with names
        if text in run_state.notes:
            return
        run_state.notes.append(text)
        print(f"warning: {text}", file=sys.stderr)

    return show


def summary(args, outcome: Outcome, run_state: Run) -> None:
    """The result on the terminal: verdict, chosen K, the output folder."""
    lines = []
    payload = outcome.payload
    if "selection" in payload and "num_components" in payload:
        table = pd.DataFrame(payload["selection"])
        column = ("heldout_log_likelihood" if args.criterion == "heldout"
                  else args.criterion)
        values = ", ".join(f"K={k}: {v:.6g}" for k, v in
                           zip(table["num_components"], table[column], strict=True))
        lines.append(f"chosen K = {payload['num_components']} by {args.criterion} "
                     f"({values})")
    if outcome.verdict:
        lines.append(f"cross-check: {outcome.verdict}")
    lines.append(f"results in {run_state.out}")
    for line in lines:
        if not args.quiet or (outcome.checks_failed and line.startswith("cross")):
            print(line, file=sys.stderr)


def main(argv=None, prog: str = "fit.py") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)  # exits 2 on a bad option
    progress = rt.Progress(quiet=args.quiet)
    rt.use_agg_backend()
    from latentmix.data.tables import DataError

    run_state = Run(args)
    try:
        check_arguments(args)
        with rt.interrupts():
            return run(args, progress, run_state)
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
        print(f"error: numerical failure: {in_cli_terms(str(error))}",
              file=sys.stderr)
        return rt.EXIT_NUMERIC
    except KeyboardInterrupt:
        print("interrupted: partial results written with status 'interrupted'"
              if run_state.started else "interrupted", file=sys.stderr)
        return rt.EXIT_INTERRUPTED
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        print(f"error: out of memory: {str(error).splitlines()[0][:300]}; lower "
              f"--restarts, --k, --num-chains or the number of rows, or use "
              f"--dtype float32", file=sys.stderr)
        return rt.EXIT_NUMERIC
    except ValueError as error:
        if not _raised_by_our_checks(error):
            raise  # not the data's fault: a traceback (exit 1), not "invalid data"
        if os.environ.get("LATENTMIX_DEBUG"):
            traceback.print_exc()
        print(f"error: invalid data: {in_cli_terms(str(error))}", file=sys.stderr)
        return rt.EXIT_DATA


# The library's argument names as this command's flags, for its messages.
CLI_NAMES = {"num_components": "--k", "max_iters": "--max-iters",
             "num_restarts": "--restarts", "n_components": "--k",
             "num_chains": "--num-chains", "num_samples": "--num-samples",
             "num_warmup": "--num-warmup", "pseudocount": "--pseudocount"}


def in_cli_terms(message: str, column_names=None) -> str:
    """A library message with argument names replaced by the flags that set
    them (``num_components=5`` reads ``--k 5``); the convergence tolerance,
    which the command does not expose, is left out; with ``column_names`` (the
    columns of the array the library saw), columns given by position
    ("constant column(s) [2]", "identical columns [[1, 4]]") are named."""
    import ast
    import re

    if column_names is not None:

        def named(match):
            def name(value):
                if isinstance(value, list):
                    return [name(item) for item in value]
                if isinstance(value, int) and 0 <= value < len(column_names):
                    return str(column_names[value])
                return value

            try:
                positions = ast.literal_eval(match.group(2))
            except (ValueError, SyntaxError):
                return match.group(0)
            return f"{match.group(1)} {name(positions)}"

        message = re.sub(r"\b(column\(s\)|columns) (\[[\d, \[\]]*\])", named,
                         message)

    message = re.sub(r",? ?\btol=[^,);]*(, rtol=[^,);]*)?", "", message)
    message = message.replace(" ()", "").replace(" or tol", "")

    message = re.sub(
        r"prior=MultinomialMixturePrior\(probs_concentration=1 \+\s*pseudocount\)"
        r"(, e\.g\. 1\.01)?", "--pseudocount 0.01 (a Dirichlet pseudocount)",
        message)
    message = message.replace(
        "models.multinomial_mixture.assignments labels them EMPTY_LABEL (-1)",
        "assignments.csv labels them 'empty'")
    for name, flag in CLI_NAMES.items():
        message = re.sub(rf"\b{name}=", f"{flag} ", message)
        message = re.sub(rf"\b{name}\b", flag, message)
    return message


def record_failure(run_state: Run, status: str, error) -> None:
    """params.json says why the run failed, once fitting had started."""
    if run_state.started:
        try:
            run_state.write_params(status, error=str(error))
        except rt.OutputError:
            pass


def write_interrupted(run_state: Run, idata) -> None:
    """What an interrupted run had: params.json (and the draws made so far)."""
    if not run_state.started:
        return
    try:
        if idata is not None:
            fit_report.write_posterior(run_state, idata)
        run_state.write_params("interrupted")
    except rt.OutputError as error:
        print(f"warning: could not write partial results: {error}", file=sys.stderr)


def _out_of_memory(error) -> bool:
    text = str(error)
    return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in text or (
        "Out of memory" in text)


def _raised_by_our_checks(error: ValueError) -> bool:
    """A ValueError raised in latentmix's own code (a validator naming the
    argument), not in another package (e.g. matplotlib refusing an
    environment setting): only the former means invalid data."""
    from latentmix.data import validation

    root = os.path.dirname(os.path.dirname(os.path.abspath(validation.__file__)))
    ours = tuple(os.path.join(root, name, "") for name in
                 ("data", "models", "inference", "scripts"))
    frame, last = error.__traceback__, None
    while frame is not None:
        last, frame = frame, frame.tb_next
    return last is not None and os.path.abspath(
        last.tb_frame.f_code.co_filename).startswith(ours)


# ------------------------------------------------------------------ the models


def bayesian_methods(method: str) -> tuple:
    """The methods beyond EM that ``--method`` asks for."""
    return ("map", "vi", "nuts") if method == "all" else (
        () if method == "em" else (method,))


def record_crosscheck(check, outcome: Outcome, payload: dict) -> None:
    """The cross-check's table into the report and params.json; failed rows
    (a disagreement, or a NUTS diagnostics problem) into the messages."""
    from latentmix.inference.crosscheck import verdict, warn_failed

    table = check.table
    outcome.tables.insert(0, ("Cross-check (tolerance and rule per row)", table))
    payload["cross_check"] = table.to_dict(orient="list")
    outcome.verdict = verdict(table)
    failed = table.loc[~table["passed"]]
    if not failed.empty:
        outcome.checks_failed = True
        outcome.check_messages += [
            f"{row.method}: {row.check}: {row.statistic:.3g} against tolerance "
            f"{row.tolerance:.3g} ({row.rule})" for row in failed.itertuples()]
        warn_failed(table)
    if check.idata is not None:
        outcome.idata = check.idata


def check_memory(args, num_rows: int, num_columns: int, num_components: int,
                 products: int = 0) -> None:
    """Refuse (exit 2) a fit whose restarts would not fit in memory.

    Per restart the EM keeps about four (n, K) arrays (responsibilities and
    their logs, the weighted ones) and its parameters; the data and per-row
    products are shared. The estimate is compared with the memory available
    when the run starts.
    """
    bytes_per = 4 if args.dtype == "float32" else 8
    per_restart = (4 * num_rows * num_components
                   + num_components * num_columns * (num_columns + 2)) * bytes_per
    shared = num_rows * (num_columns + products) * bytes_per * 2
    need = args.restarts * per_restart + shared
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > MEMORY_SHARE * available:
        raise rt.UsageError(
            f"--restarts {args.restarts} with K = {num_components} on {num_rows} "
            f"rows needs about {need / 2**30:.1f} GiB, but {available / 2**30:.1f} "
            f"GiB are available; lower --restarts (restarts run together) or K")


def fit_linear_regression(args, frame, progress, run_state: Run) -> Outcome:
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
    require_rows(len(y), args.data)
    names = list(features)
    if not args.no_bias:
        X = np.column_stack([np.ones(len(X)), X])
        names = ["bias", *names]
    run_state.column_names = names
    run_state.begin({"model": "linear-regression", "features": names,
                     "target": args.target})
    with progress.step("EM for the prior and noise precisions"):
        result = em_fit(X, y, max_iters=args.max_iters)
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
    rows = pd.DataFrame({"row": np.arange(1, len(y) + 1), "y": y,
                         "predicted_mean": np.asarray(mean),
                         "predicted_sd": np.sqrt(np.asarray(variance))})
    rows["residual"] = rows["y"] - rows["predicted_mean"]
    outcome = Outcome(payload, rows, "predictions.csv")
    outcome.model = BayesianLinearRegression.from_result(
        result, fit_intercept=not args.no_bias, penalize_intercept=True,
        feature_names=features)
    outcome.model_metadata = {"target": args.target}
    _checkpoint(run_state, outcome)
    methods = bayesian_methods(args.method)
    if methods:
        check = crosscheck_linear_regression(
            X, y, rng_key=jax.random.key(args.seed), methods=methods,
            feature_names=names, num_chains=args.num_chains,
            num_warmup=args.num_warmup, num_samples=args.num_samples,
            progress_fn=progress, callback=rt.chunk_callback(progress, "  steps done"))
        record_crosscheck(check, outcome, payload)
    outcome.figures.append(lambda out: fit_report.predictions_figure(rows, out))
    return outcome


def require_rows(num_rows: int, path) -> None:
    """At least 2 data rows (RELIABILITY b2.15): one row determines no
    variance (GMM) and no noise precision (regression)."""
    from latentmix.data.tables import DataError

    if num_rows < 2:
        raise DataError(f"{path}: need at least 2 rows, got {num_rows}")


def _checkpoint(run_state: Run, outcome: Outcome) -> None:
    """Write what exists (params.json, the per-row CSV, the model) before
    slower steps."""
    run_state.payload = dict(outcome.payload)
    run_state.write_rows(outcome)
    if outcome.model is not None:
        fit_report.write_model(run_state, outcome)
    run_state.write_params("running")


def choose_k(args, data, select, progress, run_state: Run, outcome: Outcome, key):
    """--k, or the K of a --k-range sweep by --criterion (selection table kept;
    every finished K is in params.json at once, for an interrupted sweep)."""
    if args.k_range is None:
        return args.k
    done = []

    def result_fn(row):
        done.append(row)
        run_state.payload = {**outcome.payload, "selection": list(done)}
        run_state.write_params("running")

    with progress.step(f"sweeping K over {args.k_range}"):
        selection = select(data, args.k_range, key, result_fn)
    table = selection.table
    outcome.payload["selection"] = table.to_dict(orient="list")
    outcome.tables.append((f"Choice of K by {args.criterion}", table))
    outcome.figures.append(lambda out: fit_report.selection_figure(
        table, args.criterion, out, "selection.png"))
    return selection.best_num_components


def fit_gaussian_mixture(args, frame, progress, run_state: Run) -> Outcome:
    from latentmix.data.tables import (
        DataError,
        default_columns,
        heldout_split,
        numeric_matrix,
    )
    from latentmix.inference import GaussianMixture
    from latentmix.inference.crosscheck import crosscheck_gaussian_mixture
    from latentmix.inference.em import fit_gaussian_mixture as em_fit
    from latentmix.inference.em.gaussian_mixture.checks import check_representable
    from latentmix.inference.selection import gmm_bic, select_num_components
    from latentmix.models import gaussian_mixture as gm

    columns = args.columns or default_columns(frame, set())
    raw = numeric_matrix(frame, columns, path=args.data)
    run_state.column_names = list(columns)
    require_rows(len(raw), args.data)
    try:  # before the floor below, which squares the data
        check_representable(raw, names=columns)
    except ValueError as error:
        raise DataError(str(error)) from None
    # float32 loses the digits of data far from 0 (an offset of 1e6 leaves a
    # resolution of 0.06): centre in float64 first, fit the centred data in the
    # requested dtype (EM is translation invariant), shift the means back.
    centre = raw.mean(axis=0) if args.dtype == "float32" else np.zeros(raw.shape[1])
    x = (raw - centre).astype(args.dtype)
    key_select, key_fit = jax.random.split(jax.random.key(args.seed))
    payload = {"model": "gaussian-mixture", "columns": columns,
               "covariance_type": args.covariance_type}
    outcome = Outcome(payload, pd.DataFrame(), "assignments.csv")
    # The variance floor relative to the data (1e-6 of the smallest column
    # variance), as in the cross-check: negligible in any units.
    fit_options = {"covariance_type": args.covariance_type,
                   "num_restarts": args.restarts, "max_iters": args.max_iters,
                   "reg_covar": gm.relative_floor(raw)}
    largest = args.k if args.k_range is None else max(args.k_range)
    check_memory(args, len(x), x.shape[1], min(largest, len(x)),
                 products=x.shape[1] * (x.shape[1] + 1) // 2)
    run_state.begin(payload)

    def select(x, k_range, key, result_fn):
        k_values = [k for k in k_range if k <= len(x)]
        if not k_values:
            raise DataError(f"every K in --k-range exceeds the {len(x)} rows")
        heldout = {}
        if args.criterion == "heldout":
            train, test = heldout_split(len(x), seed=args.seed)
            x, heldout = x[train], {"heldout_x": x[test]}
        return select_num_components(x, k_values, criterion=args.criterion,
                                     rng_key=key, progress_fn=progress,
                                     result_fn=result_fn, **heldout, **fit_options)

    num_components = choose_k(args, x, select, progress, run_state, outcome,
                              key_select)
    if num_components > len(x):
        raise DataError(f"--k {num_components} exceeds the number of rows {len(x)}")

    def finish_em(result, shift=centre):
        """The EM fit into the outcome (and on disk) as soon as it exists;
        ``shift`` undoes the centring of float32 data."""
        params = result.params._replace(
            means=np.asarray(result.params.means) + shift)
        payload.update({
            "num_components": num_components,
            "log_likelihood_per_row": float(result.log_likelihood),
            "bic": float(gmm_bic(params, raw, args.covariance_type)),
            "em": {"num_iters": int(result.num_iters),
                   "converged": bool(result.converged)},
            "weights": params.weights, "means": params.means,
            "covariances": params.covariances,
        })
        resp = np.asarray(gm.responsibilities(params, raw, args.covariance_type))
        rows = pd.DataFrame({"row": np.arange(1, len(x) + 1),
                             "component": resp.argmax(1),
                             "probability": resp.max(1)})
        for k in range(num_components):
            rows[f"resp_{k}"] = resp[:, k]
        outcome.rows = rows
        outcome.model = GaussianMixture.from_result(
            result._replace(params=params), covariance_type=args.covariance_type,
            feature_names=columns)
        _checkpoint(run_state, outcome)
        if x.shape[1] >= 2:
            outcome.figures.append(lambda out: fit_report.gmm_scatter_figure(
                raw, columns, params, resp, out))

    methods = bayesian_methods(args.method)
    if methods:
        # The cross-check computes in float64 whatever --dtype says (its
        # tolerances assume it), on the data as read.
        check = crosscheck_gaussian_mixture(
            raw, num_components, covariance_type=args.covariance_type,
            rng_key=key_fit, methods=methods, num_restarts=args.restarts,
            max_iters=max(args.max_iters, 1), num_chains=args.num_chains,
            num_warmup=args.num_warmup, num_samples=args.num_samples,
            progress_fn=progress, callback=rt.chunk_callback(progress, "  steps done"),
            em_fn=lambda result: finish_em(result, shift=0.0))
        for name in ("map", "vi"):
            if name in check.fits:
                payload[name] = check.fits[name].params
        record_crosscheck(check, outcome, payload)
    else:
        with progress.step(f"EM with K = {num_components}"):
            finish_em(em_fit(x, num_components, rng_key=key_fit, **fit_options))
    return outcome


def fit_multinomial_mixture(args, frame, progress, run_state: Run) -> Outcome:
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
    outcome = Outcome(payload, pd.DataFrame(), "assignments.csv")
    pseudocount = args.pseudocount
    if pseudocount is None:
        pseudocount = HELDOUT_PSEUDOCOUNT if args.criterion == "heldout" else 0.0
    prior = (mm.MultinomialMixturePrior(probs_concentration=1.0 + pseudocount)
             if pseudocount > 0 else None)
    payload["pseudocount"] = pseudocount
    fit_options = {"num_restarts": args.restarts, "max_iters": args.max_iters,
                   "dtype": args.dtype, "prior": prior}
    largest = args.k if args.k_range is None else max(args.k_range)
    check_memory(args, counts.shape[0], counts.shape[1], largest)
    run_state.begin(payload)
    _warn_unobserved(counts, categories, pseudocount, run_state)

    def select(counts, k_range, key, result_fn):
        heldout, train_counts, train_groups = {}, counts, groups
        if args.criterion == "heldout":
            train, test = heldout_split(counts.shape[0], seed=args.seed)
            train_counts, heldout["heldout_counts"] = counts[train], counts[test]
            _warn_unobserved(train_counts, categories, pseudocount, run_state,
                             "training")
            if groups is not None:
                train_groups = groups[train]
                known = np.isin(groups[test], train_groups)
                heldout["heldout_counts"] = heldout["heldout_counts"][known]
                heldout["heldout_groups"] = groups[test][known]
        return select_num_components_multinomial(
            train_counts, k_range, criterion=args.criterion, rng_key=key,
            groups=train_groups, progress_fn=progress, result_fn=result_fn,
            **heldout, **fit_options)

    num_components = choose_k(args, counts, select, progress, run_state, outcome,
                              key_select)
    methods = bayesian_methods(args.method)
    if groups is not None and "map" in methods:
        methods = tuple(m for m in methods if m != "map")
        outcome.check_messages.append(
            "MAP skipped: the hierarchical (per-group) model has no posterior mode; "
            "VI and NUTS sample it")
    codes = None if groups is None else mm.encode_groups(groups)[0]

    def finish_em(result):
        """The EM fit into the outcome (and on disk) as soon as it exists."""
        params = result.params
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
            payload["shrinkage"] = args.shrinkage
        resp = np.asarray(mm.responsibilities(params, counts, codes))
        labels = np.asarray(mm.assignments(params, counts, codes))
        rows = pd.DataFrame({"row": table.row_ids, "component": labels,
                             "probability": np.where(labels >= 0, resp.max(1),
                                                     np.nan)})
        rows["component"] = rows["component"].astype(object).where(labels >= 0,
                                                                   "empty")
        for k in range(num_components):
            rows[f"resp_{k}"] = np.where(labels >= 0, resp[:, k], np.nan)
        outcome.rows = rows
        totals = np.asarray(counts.sum(axis=1)).ravel()
        outcome.model = MultinomialMixture.from_result(
            result, feature_names=categories,
            median_total=np.median(totals[totals > 0]),
            group_labels=payload.get("group_labels"))
        outcome.model_metadata = {
            "format": args.format, "groups": args.groups,
            "basket_column": args.basket_column,
            "category_column": args.category_column,
            "quantity_column": args.quantity_column}
        _checkpoint(run_state, outcome)
        overall = np.asarray(counts.sum(axis=0)).ravel()
        outcome.tables.append(("Top categories per segment (by lift)",
                               top_categories(params, categories,
                                              overall / overall.sum())))
        mean_weights = np.asarray(params.weights).reshape(-1, num_components).mean(0)
        if num_components >= 3:
            outcome.figures.append(lambda out: fit_report.segment_map_figure(
                segment_map(np.asarray(params.probs), mean_weights), mean_weights,
                out))

    if methods:
        check = crosscheck_multinomial_mixture(
            counts, num_components, groups=groups, rng_key=key_fit, methods=methods,
            num_restarts=args.restarts, prior=prior, num_chains=args.num_chains,
            num_warmup=args.num_warmup, num_samples=args.num_samples,
            progress_fn=progress, callback=rt.chunk_callback(progress, "  steps done"),
            em_fn=finish_em)
        for name in ("map", "vi"):
            if name in check.fits:
                payload[name] = check.fits[name].params
        record_crosscheck(check, outcome, payload)
    else:
        with progress.step(f"EM with K = {num_components}"):
            finish_em(_fit_counts(em_fit, counts, num_components, groups, key_fit,
                                  fit_options, args.shrinkage))
    return outcome


def _fit_counts(em_fit, counts, num_components, groups, key, fit_options, shrinkage):
    """EM of the global model, or of per-group weights shrunk towards the
    population mix by ``shrinkage`` pseudo-baskets (the global fit first, then
    MAP-EM of the groups from it: ``models.multinomial_mixture.shrinkage_prior``)."""
    from latentmix.models import multinomial_mixture as mm

    if groups is None or not shrinkage:
        return em_fit(counts, num_components, groups=groups, rng_key=key,
                      **fit_options)
    population = em_fit(counts, num_components, rng_key=key, **fit_options)
    num_groups = len(mm.encode_groups(groups)[1])
    start = mm.MultinomialMixtureParams(
        np.tile(np.asarray(population.params.weights), (num_groups, 1)),
        np.asarray(population.params.probs))
    options = {**fit_options, "num_restarts": 1,
               "prior": mm.shrinkage_prior(population.params.weights, shrinkage,
                                           fit_options["prior"])}
    return em_fit(counts, num_components, groups=groups, init=start, **options)


def _warn_unobserved(counts, categories, pseudocount, run_state: Run,
                     rows: str = "input") -> None:
    """One note naming the categories that no row of ``counts`` holds."""
    totals = np.asarray(counts.sum(axis=0)).ravel()
    missing = [str(categories[j]) for j in np.flatnonzero(totals == 0)]
    if not missing or pseudocount > 0 or not totals.any():  # all empty: an error
        return
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more"
                                       if len(missing) > 10 else "")
    noun = "category" if len(missing) == 1 else "categories"
    message = (f"DataWarning: {len(missing)} {noun}"
               f" never observed in the {rows} rows ({shown}): without smoothing "
               f"their probability is 0 in every segment, and a basket holding one "
               f"has log-likelihood -inf; pass --pseudocount {HELDOUT_PSEUDOCOUNT} "
               f"to smooth them")
    run_state.notes.append(message)
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
