"""Apply a model saved by ``latentmix fit`` to new rows of a CSV or parquet file.

Examples:
  python scripts/predict.py --model out/faithful --data new_eruptions.csv \\
      --out out/faithful-new
  latentmix predict --model out/houses --data new_houses.csv --out out/new

--model is the --out folder of ``latentmix fit`` (or a folder written by
``est.save(path)``): its model.json names the model, the columns it was fitted
on and how to read a table. Mixtures write assignments.csv (row, component,
probability of that component, one responsibility column per component,
log_likelihood of the row); regression writes predictions.csv (row,
predicted_mean, predicted_sd, and y and residual when the file holds the
target column). The file's columns must be the model's (besides the target or
group column): a file with missing or extra columns is refused, naming them.

Exit status: 0 ok, 2 bad arguments, 3 invalid data (the file, its columns or
values, or the model folder), 4 numerical failure, 5 output/IO failure, 130
interrupted.
"""

import argparse
import os
import sys
import traceback

import numpy as np
import pandas as pd

from latentmix.scripts import runtime as rt

ROWS_FILES = {"GaussianMixture": "assignments.csv",
              "MultinomialMixture": "assignments.csv",
              "BayesianLinearRegression": "predictions.csv"}


def build_parser(prog: str = "predict.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="folder of a saved model (latentmix fit --out)")
    parser.add_argument("--data", required=True, help="input CSV or parquet file")
    parser.add_argument("--sep", default=None,
                        help="CSV delimiter (default: detected among , ; tab |)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def main(argv=None, prog: str = "predict.py") -> int:
    args = build_parser(prog).parse_args(argv)  # exits 2 on a bad option
    progress = rt.Progress(quiet=args.quiet)
    from latentmix.data.tables import DataError

    try:
        with rt.interrupts():
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
        print("interrupted", file=sys.stderr)
        return rt.EXIT_INTERRUPTED
    except ValueError as error:
        if os.environ.get("LATENTMIX_DEBUG"):
            traceback.print_exc()
        print(f"error: invalid data: {error}", file=sys.stderr)
        return rt.EXIT_DATA


def run(args, progress) -> int:
    """Read the model and the table, check the columns, predict, write."""
    from latentmix.data.tables import DataError, read_table
    from latentmix.inference.estimators.saving import read_metadata

    try:
        document = read_metadata(args.model)
    except (OSError, ValueError) as error:
        raise DataError(f"--model {args.model}: {error}") from None
    model_name = document["model"]
    if model_name not in ROWS_FILES:
        raise DataError(f"--model {args.model}: unknown model {model_name!r}")
    rows_name = ROWS_FILES[model_name]
    out = rt.prepare_output_dir(args.out, overwrite=args.overwrite,
                                marker=rows_name)
    frame = read_table(args.data, sep=args.sep)
    from latentmix.inference import load

    model = load(args.model)
    with progress.step(f"{model_name}: predicting {len(frame)} rows"):
        rows = {"GaussianMixture": gaussian_rows,
                "MultinomialMixture": multinomial_rows,
                "BayesianLinearRegression": regression_rows}[model_name](
                    model, frame, document, args.data)
    rt.atomic_write_text(out / rows_name, rows.to_csv(index=False))
    progress(f"wrote {out / rows_name}")
    return rt.EXIT_OK


def check_columns(frame: pd.DataFrame, expected, allowed, *, path) -> None:
    """The file's columns must be ``expected`` (plus any of ``allowed``):
    DataError naming the missing and the extra ones otherwise."""
    from latentmix.data.tables import DataError

    present = [str(name) for name in frame.columns]
    missing = [name for name in expected if name not in present]
    extra = [name for name in present
             if name not in expected and name not in allowed]
    if missing or extra:
        raise DataError(
            f"{path}: the columns differ from the model's: missing {missing}, "
            f"extra {extra}; the model was fitted on {list(expected)}"
        )


def mixture_rows(row_ids, resp, log_lik, labels=None) -> pd.DataFrame:
    """row, component, probability, resp_k, log_likelihood (fit.py's layout)."""
    labels = resp.argmax(1) if labels is None else labels
    valid = labels >= 0
    rows = pd.DataFrame({"row": row_ids, "component": labels,
                         "probability": np.where(valid, resp.max(1), np.nan)})
    if not valid.all():
        rows["component"] = rows["component"].astype(object).where(valid, "empty")
    for k in range(resp.shape[1]):
        rows[f"resp_{k}"] = np.where(valid, resp[:, k], np.nan)
    rows["log_likelihood"] = log_lik
    return rows


def gaussian_rows(model, frame, document, path) -> pd.DataFrame:
    from latentmix.data.tables import numeric_matrix

    columns = document["columns"]
    check_columns(frame, columns, (), path=path)
    x = pd.DataFrame(numeric_matrix(frame, columns, path=path), columns=columns)
    x = x.astype(document["dtype"])
    if not document.get("named_columns"):
        x = x.to_numpy()  # fitted on an array: no feature names to check
    resp = model.predict_proba(x)
    return mixture_rows(np.arange(1, len(x) + 1), resp, model.score_samples(x))


def multinomial_rows(model, frame, document, path) -> pd.DataFrame:
    from latentmix.data.tables import DataError, basket_table

    meta = document.get("metadata", {})
    categories = document["columns"]
    groups_column = meta.get("groups")
    table_format = meta.get("format", "wide")
    if table_format == "wide":
        allowed = (groups_column,) if groups_column else ()
        check_columns(frame, categories, allowed, path=path)
    table = basket_table(frame, path=path, table_format=table_format,
                         columns=categories if table_format == "wide" else None,
                         groups=groups_column,
                         basket_column=meta.get("basket_column", "basket"),
                         category_column=meta.get("category_column", "category"),
                         quantity_column=meta.get("quantity_column"))
    counts = table.counts
    if table_format == "long":
        # Long tables list the categories bought: unseen ones are refused,
        # absent ones are columns of zeros.
        extra = [c for c in table.categories if c not in categories]
        if extra:
            raise DataError(
                f"{path}: the categories differ from the model's: missing [], "
                f"extra {extra}; the model was fitted on {categories}")
        dense = np.asarray(counts.todense()) if hasattr(counts, "todense") else counts
        order = [table.categories.index(c) if c in table.categories else -1
                 for c in categories]
        counts = np.column_stack([dense[:, j] if j >= 0 else np.zeros(len(dense))
                                  for j in order])
    counts = np.asarray(counts)
    if document.get("named_columns"):
        counts = pd.DataFrame(counts, columns=categories)
    groups = table.groups
    if groups is not None:
        known = np.isin(groups.astype(str), np.asarray(model.groups_).astype(str))
        if not known.all():
            raise DataError(
                f"{path}: {int((~known).sum())} row(s) belong to groups the model "
                f"was not fitted on, the first {groups[~known][0]!r}; the "
                f"per-group weights exist only for the fitted groups")
        groups = groups.astype(str)
        model.groups_ = np.asarray(model.groups_).astype(str)
    resp = model.predict_proba(counts, groups=groups)
    labels = model.predict(counts, groups=groups)
    return mixture_rows(table.row_ids, resp,
                        model.score_samples(counts, groups=groups), labels)


def regression_rows(model, frame, document, path) -> pd.DataFrame:
    from latentmix.data.tables import numeric_matrix

    columns = document["columns"]
    target = document.get("metadata", {}).get("target")
    check_columns(frame, columns, (target,) if target else (), path=path)
    X = pd.DataFrame(numeric_matrix(frame, columns, path=path), columns=columns)
    X = X.astype(document["dtype"])
    if not document.get("named_columns"):
        X = X.to_numpy()
    mean, sd = model.predict(X, return_std=True)
    rows = pd.DataFrame({"row": np.arange(1, len(X) + 1),
                         "predicted_mean": mean, "predicted_sd": sd})
    if target and target in frame.columns:
        y = numeric_matrix(frame, [target], path=path)[:, 0]
        rows.insert(1, "y", y)
        rows["residual"] = y - mean
    return rows


if __name__ == "__main__":
    sys.exit(main())
