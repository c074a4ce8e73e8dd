"""data.tables: every malformed file gives a DataError naming file, column, row."""

import numpy as np
import pandas as pd
import pytest

from latentmix.data.tables import DataError, count_matrix, numeric_matrix, read_table


def write(tmp_path, text, name="input.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_clean_csv_and_strips_header_spaces_and_bom(tmp_path):
    path = write(tmp_path, "\ufeff a ,b\n1,2\n3,4\n")
    frame = read_table(path)
    assert list(frame.columns) == ["a", "b"]
    np.testing.assert_array_equal(numeric_matrix(frame, ["a", "b"], path=path),
                                  [[1, 2], [3, 4]])


def test_semicolon_delimiter_is_detected(tmp_path):
    path = write(tmp_path, "a;b\n1;2\n3;4\n")
    assert list(read_table(path).columns) == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", "is empty"),
        ("a,b\n", "header but no data rows"),
        ("a,a\n1,2\n", "'a' appears twice"),
        ("a,b\n1,2,3\n4,5\n", "data row 1 has 3 fields"),
        ("a,b\n1,2\n4,5,6\n", "data row 2 has 3 fields"),
        ("a,,c\n1,2,3\n", r"column\(s\) \[2\] have no name"),
    ],
)
def test_malformed_files(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=pattern):
        read_table(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_table(tmp_path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("name,value\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        read_table(path)


@pytest.mark.parametrize(
    ("cell", "pattern"),
    [
        ("abc", r"column 'b', row 2: value 'abc' is not a number"),
        ('"1,000"', "thousands separator"),
        ("", r"column 'b' has 1 missing value\(s\), first at row 2"),
        ("inf", r"column 'b', row 2: value inf is infinite"),
    ],
)
def test_bad_numeric_cells(tmp_path, cell, pattern):
    path = write(tmp_path, f"a,b\n1,2\n3,{cell}\n")
    frame = read_table(path)
    with pytest.raises(DataError, match=pattern):
        numeric_matrix(frame, ["a", "b"], path=path)


def test_missing_column_suggests_close_match(tmp_path):
    path = write(tmp_path, "height,weight\n1,2\n")
    with pytest.raises(DataError, match="did you mean 'weight'"):
        numeric_matrix(read_table(path), ["wieght"], path=path)


@pytest.mark.parametrize(
    ("cell", "pattern"),
    [("-1", "has count -1; counts must be >= 0"),
     ("2.5", "has count 2.5; counts must be whole numbers")],
)
def test_bad_counts(tmp_path, cell, pattern):
    path = write(tmp_path, f"milk,bread\n1,2\n{cell},0\n")
    with pytest.raises(DataError, match=f"column 'milk', row 2 {pattern}"):
        count_matrix(read_table(path), ["milk", "bread"], path=path)


def test_counts_stored_as_floats_are_accepted_as_integers(tmp_path):
    path = write(tmp_path, "milk,bread\n1.0,2\n0,3.0\n")
    counts = count_matrix(read_table(path), ["milk", "bread"], path=path)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [[1, 2], [0, 3]])


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "input.parquet"
    pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]}).to_parquet(path)
    frame = read_table(path)
    np.testing.assert_array_equal(numeric_matrix(frame, ["a", "b"], path=path),
                                  [[1, 3], [2, 4]])
