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

from latentmix.scripts import device
from latentmix.scripts import runtime as rt

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


def run(args, progress: rt.Progress) -> int:
    """Validate, fit, write. Returns the exit status (exceptions map in main)."""
    import warnings

    from latentmix.data.tables import read_table

    configure_jax(args)  # a missing GPU is a usage error: before any output
    out = rt.prepare_output_dir(args.out, overwrite=args.overwrite)
    notes: list[str] = []
    frame = read_table(args.data, sep=args.sep)

    from latentmix.scripts import fitting

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = fitting.fit(args, frame, out, progress, notes)
    for warning in caught:
        notes.append(f"{warning.category.__name__}: {warning.message}")
    fitting.finish(args, out, outcome, notes, status="ok")
    if args.strict and outcome.diagnostics_failed:
        print("error: NUTS diagnostics failed (--strict): "
              + "; ".join(outcome.diagnostic_messages), file=sys.stderr)
        return rt.EXIT_NUMERIC
    return rt.EXIT_OK


def main(argv=None, prog: str = "fit.py") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)  # exits 2 on a bad option
    progress = rt.Progress(quiet=args.quiet)
    rt.use_agg_backend()
    from latentmix.data.tables import DataError

    try:
        check_arguments(args)
        with rt.interrupt_as_keyboard_interrupt():
            return run(args, progress)
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
        from latentmix.scripts import fitting

        fitting.write_interrupted(args)
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


if __name__ == "__main__":
    sys.exit(main())
