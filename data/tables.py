"""Reading users' tables (CSV or parquet) with validation before any fitting.

Every problem raises ``DataError`` whose message names the file, the column, the
1-based data row (header excluded), the offending value and a fix
(RELIABILITY.md, section b1-b3). pandas' silent behaviours are switched off or
checked: an extra field in the first row must not become an index
(``index_col=False``), duplicate headers must not be renamed ``a.1``, a wrong
delimiter must not give one column named ``"a;b"``.
"""

import csv
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse

from latentmix.data.validation import warn

__all__ = [
    "BasketTable",
    "DataError",
    "basket_table",
    "check_input_file",
    "count_matrix",
    "default_columns",
    "heldout_split",
    "numeric_matrix",
    "read_table",
    "require_columns",
]


class DataError(ValueError):
    """Invalid input data (the command-line scripts exit with status 3)."""


def check_input_file(path) -> None:
    """The input exists, is a readable non-empty file (DataError otherwise)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"input file not found: {path}; check the --data path")
    if path.is_dir():
        raise DataError(f"input path is a directory, not a file: {path}")
    if not os.access(path, os.R_OK):
        raise DataError(f"input file is not readable: {path}; check its permissions")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes); pass a CSV with a header row")


def _read_header(path: Path, sep: str) -> list[str]:
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle, delimiter=sep), [])


def _sniff_delimiter(path: Path) -> str:
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        sample = handle.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _check_ragged(path: Path, sep: str, num_columns: int) -> None:
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=sep)
        next(reader, None)
        for row_number, row in enumerate(reader, start=1):
            if row and len(row) != num_columns:
                raise DataError(
                    f"{path}: data row {row_number} has {len(row)} fields but the "
                    f"header has {num_columns}; fix the row or quote fields that "
                    f"contain the delimiter {sep!r}"
                )


def _check_not_compressed(path: Path) -> None:
    """A compressed or binary file gets its name, not a text-decoding error."""
    with path.open("rb") as handle:
        magic = handle.read(8)
    kinds = {b"\x1f\x8b": ("gzip", "gunzip it (gzip -d)"),
             b"PK\x03\x04": ("zip (or an Excel .xlsx)",
                              "unzip it, or export the sheet as CSV"),
             b"BZh": ("bzip2", "decompress it (bzip2 -d)"),
             b"\xfd7zXZ": ("xz", "decompress it (xz -d)"),
             b"PAR1": ("parquet", "give it the .parquet suffix"),
             b"\xd0\xcf\x11\xe0": ("Excel .xls", "export the sheet as CSV")}
    for prefix, (kind, fix) in kinds.items():
        if magic.startswith(prefix):
            raise DataError(f"{path} is a {kind} file, not a CSV; {fix} first")


def read_table(path, *, sep: str | None = None) -> pd.DataFrame:
    """Read a CSV (any delimiter among , ; tab |) or parquet file, validated.

    Checks: the file exists, is readable and non-empty; it decodes as UTF-8; it
    has data rows; no duplicate or blank column names; no ragged rows; more
    than one column unless the file has a single column on purpose. Column
    names are stripped of surrounding spaces and a byte-order mark.
    """
    path = Path(path)
    check_input_file(path)
    if path.suffix.lower() in {".parquet", ".pq"}:
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several exception types
            raise DataError(f"{path} is not a readable parquet file: {error}") from None
        columns = [str(name) for name in frame.columns]
    else:
        _check_not_compressed(path)
        try:
            sep = sep or _sniff_delimiter(path)
            columns = _read_header(path, sep)
        except UnicodeDecodeError as error:
            raise DataError(
                f"cannot decode {path} as UTF-8 at byte {error.start}; re-save the "
                f"file as UTF-8"
            ) from None
        _check_ragged(path, sep, len(columns))
        try:
            frame = pd.read_csv(
                path, sep=sep, index_col=False, encoding="utf-8-sig",
                skipinitialspace=True,
            )
        except pd.errors.ParserError as error:
            raise DataError(f"{path} could not be parsed: {error}") from None
    stripped = [name.strip().lstrip("\ufeff").strip() for name in columns]
    renamed = [f"{old!r} -> {new!r}" for old, new in zip(columns, stripped,
                                                        strict=True) if old != new]
    if renamed:
        warn(f"{path}: column names stripped of surrounding spaces or a "
             f"byte-order mark: {', '.join(renamed[:10])}")
    if len(stripped) > 1 and not stripped[0] and all(stripped[1:]):
        # pandas' to_csv writes the row index as a first column without a name
        warn(f"{path}: the first column has no name: read as a saved row index "
             f"(pandas' to_csv default) and left out")
        frame = frame.iloc[:, 1:]
        stripped = stripped[1:]
    blanks = [i + 1 for i, name in enumerate(stripped) if not name]
    if blanks:
        raise DataError(f"{path}: column(s) {blanks} have no name; name every column")
    seen = set()
    for name in stripped:
        if name in seen:
            raise DataError(
                f"{path}: column {name!r} appears twice; rename one of them"
            )
        seen.add(name)
    frame.columns = stripped
    if len(frame) == 0:
        raise DataError(f"{path} has a header but no data rows")
    if len(stripped) == 1 and path.suffix.lower() not in {".parquet", ".pq"}:
        for candidate in ";\t|,":
            if candidate in stripped[0]:
                raise DataError(
                    f"{path}: only 1 column parsed, named {stripped[0]!r}; the "
                    f"delimiter looks like {candidate!r}: pass --sep {candidate!r}"
                )
    return frame


def require_columns(frame: pd.DataFrame, columns, *, path, role: str = "column"):
    """Raise DataError listing missing columns, the available ones and near matches."""
    import difflib

    missing = [name for name in columns if name not in frame.columns]
    if missing:
        hints = {
            name: difflib.get_close_matches(name, list(frame.columns), n=1)
            for name in missing
        }
        hint_text = ", ".join(
            f"{name!r} -> did you mean {match[0]!r}?"
            for name, match in hints.items()
            if match
        )
        raise DataError(
            f"{path}: {role}(s) {missing} not found; available columns: "
            f"{list(frame.columns)}" + (f" ({hint_text})" if hint_text else "")
        )


def _number_hint(value) -> str:
    """What a non-number probably is: a decimal comma or a thousands separator."""
    import re

    if not isinstance(value, str):
        return ""
    text = value.strip()
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", text):
        return "; it looks like a thousands separator: remove the commas"
    if re.fullmatch(r"[-+]?\d*,\d+", text):
        return ("; it looks like a decimal comma: save the file with decimal "
                "points (or a ';'-separated file with ',' decimals converted)")
    if re.fullmatch(r"[-+]?\d{1,3}(\.\d{3})+,\d+", text):
        return ("; it looks like '.' thousands and ',' decimals: save the file "
                "with decimal points and no thousands separators")
    return ""


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def numeric_matrix(frame: pd.DataFrame, columns, *, path) -> np.ndarray:
    """float64 (n, len(columns)) array; errors name column, 1-based row and value."""
    require_columns(frame, columns, path=path)
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        raw = frame[name]
        kind = getattr(raw.dtype, "kind", "O")
        if kind in "mM" or isinstance(raw.dtype, pd.DatetimeTZDtype):
            raise DataError(
                f"{path}: column {name!r} holds dates or times ({raw.dtype}); "
                f"leave it out of --columns, or convert it to a number yourself "
                f"(e.g. days since the first date) if that is what you mean"
            )
        if raw.dtype == bool:
            values = raw.to_numpy(dtype=np.float64)
        else:
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
            not_numeric = np.isnan(values) & raw.notna().to_numpy()
            if not_numeric.any():
                row = _first_bad(not_numeric)
                value = raw.iloc[row]
                hint = _number_hint(value)
                raise DataError(
                    f"{path}: column {name!r}, row {row + 1}: value {value!r} is "
                    f"not a number{hint}"
                )
        missing = np.isnan(values)
        if missing.any():
            raise DataError(
                f"{path}: column {name!r} has {int(missing.sum())} missing value(s), "
                f"first at row {_first_bad(missing) + 1}; drop or impute those rows"
            )
        infinite = np.isinf(values)
        if infinite.any():
            row = _first_bad(infinite)
            raise DataError(
                f"{path}: column {name!r}, row {row + 1}: value {values[row]} is "
                f"infinite; remove the row"
            )
        out[:, j] = values
    return out


def count_matrix(frame: pd.DataFrame, columns, *, path) -> np.ndarray:
    """int64 (n, len(columns)) array of counts: finite, >= 0, whole numbers."""
    values = numeric_matrix(frame, columns, path=path)
    for j, name in enumerate(columns):
        negative = values[:, j] < 0
        if negative.any():
            row = _first_bad(negative)
            raise DataError(
                f"{path}: column {name!r}, row {row + 1} has count {values[row, j]:g}; "
                f"counts must be >= 0"
            )
        fractional = values[:, j] != np.round(values[:, j])
        if fractional.any():
            row = _first_bad(fractional)
            raise DataError(
                f"{path}: column {name!r}, row {row + 1} has count {values[row, j]:g}; "
                f"counts must be whole numbers"
            )
        if np.any(values[:, j] > 2**53):
            raise DataError(
                f"{path}: column {name!r} has counts above 2**53, beyond exact "
                f"float64 integers; rescale the counts"
            )
    return values.astype(np.int64)


def default_columns(frame: pd.DataFrame, exclude) -> list[str]:
    """Every column except ``exclude`` (e.g. the target or the group column).

    Non-numeric columns are kept, so that the validators report them (naming
    column, row and value) instead of dropping them silently.
    """
    names = [name for name in frame.columns if name not in exclude]
    if not names:
        raise DataError(f"no columns to use besides {sorted(exclude)}; add columns")
    return names


class BasketTable(NamedTuple):
    """Counts of a multinomial mixture read from a user's table.

    counts: (n, c) int64 counts (scipy CSR for the long format).
    row_ids: (n,) a basket id per row (the 1-based row number for wide tables).
    groups: (n,) group labels (e.g. households), or None.
    categories: the c category names, in column order.
    """

    counts: object
    row_ids: np.ndarray
    groups: np.ndarray | None
    categories: list


def basket_table(frame: pd.DataFrame, *, path, table_format: str = "wide",
                 columns=None, groups: str | None = None,
                 basket_column: str = "basket", category_column: str = "category",
                 quantity_column: str | None = None) -> BasketTable:
    """Baskets x categories counts from a wide or long table.

    "wide": one row per basket, one count column per category (``columns``, or
        every column but ``groups``).
    "long": one row per line item with ``basket_column`` and
        ``category_column`` (and ``groups``): lines are counted per basket and
        category, or ``quantity_column`` is summed
        (``data.shoppers.baskets_from_lines``).
    """
    if table_format not in ("wide", "long"):
        raise ValueError(f"table_format must be 'wide' or 'long', got "
                         f"{table_format!r}")
    if table_format == "long":
        from latentmix.data.shoppers import baskets_from_lines

        needed = [basket_column, category_column]
        needed += [name for name in (groups, quantity_column) if name]
        require_columns(frame, needed, path=path)
        lines = frame.copy()
        if quantity_column:
            lines[quantity_column] = numeric_matrix(frame, [quantity_column],
                                                    path=path)[:, 0]
        household = groups or "__household__"
        if not groups:
            lines[household] = 0
        baskets = baskets_from_lines(
            lines, basket_column=basket_column, household_column=household,
            category_column=category_column, quantity_column=quantity_column,
            value="quantity" if quantity_column else "lines", source=str(path))
        return BasketTable(scipy.sparse.csr_matrix(baskets.counts),
                           np.asarray(baskets.basket_ids),
                           np.asarray(baskets.household_ids) if groups else None,
                           [str(c) for c in baskets.categories])
    exclude = {groups} if groups else set()
    columns = list(columns) if columns else default_columns(frame, exclude)
    if len(columns) < 2:
        raise DataError(
            f"a multinomial mixture needs at least 2 count columns, got {columns}"
        )
    counts = count_matrix(frame, columns, path=path)
    labels = None
    if groups:
        require_columns(frame, [groups], path=path, role="group column")
        missing = frame[groups].isna().to_numpy()
        if missing.any():
            raise DataError(f"{path}: column {groups!r}, row "
                            f"{_first_bad(missing) + 1} is empty; every row needs "
                            f"a group id")
        labels = frame[groups].astype(str).to_numpy()
    return BasketTable(counts, np.arange(1, len(counts) + 1), labels, columns)


def heldout_split(num_rows: int, *, fraction: float = 0.2, seed: int = 0):
    """Shuffled (train, held-out) row indices, each sorted; held-out gets
    round(fraction x n) rows (at least 1) and train the rest."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(num_rows)
    cut = num_rows - max(1, int(round(fraction * num_rows)))
    if cut < 1:
        raise DataError(f"a held-out split needs at least 2 rows, got {num_rows}")
    return np.sort(order[:cut]), np.sort(order[cut:])
