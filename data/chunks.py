"""Row chunks of a data set too large for memory: the input of out-of-core EM.

EM's sufficient statistics are sums over rows, so one EM iteration can stream the
rows in chunks and add up each chunk's statistics; the result is the in-memory
iteration, summed in a different order. A ``ChunkedRows`` is a *re-iterable*
source: every EM iteration calls ``iter(source)`` and reads the data again, so
only one chunk is in memory at a time.

Sources:
  * ``chunks_from_array``: a NumPy array or a memory-mapped one
    (``np.load(path, mmap_mode="r")``), sliced ``chunk_rows`` rows at a time;
  * ``chunks_from_npy``: a ``.npy`` file, read chunk by chunk at its offsets;
  * ``chunks_from_parquet``: numeric columns of a parquet file, read in record
    batches of ``chunk_rows`` rows (pyarrow; a row group is never read whole);
  * ``chunks_from_factory``: any ``factory()`` returning a fresh iterator of 2-D
    arrays (a database cursor, a generator over CSV files, ...).

Every chunk is checked as it arrives (2-D, numeric, finite, the right width):
an error names the chunk and the row in the whole data set, so a bad row deep in
a file is found on the first pass, before any result is written.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "ChunkedRows",
    "chunks_from_array",
    "chunks_from_factory",
    "chunks_from_npy",
    "chunks_from_parquet",
    "DEFAULT_CHUNK_ROWS",
]

# 65,536 rows of 64 float64 features are 32 MiB: large enough that per-chunk
# dispatch is negligible, small enough for any machine.
DEFAULT_CHUNK_ROWS = 1 << 16


class ChunkedRows:
    """A re-iterable source of row chunks with a fixed number of columns.

    Attributes:
      num_columns: d, the width of every chunk.
      chunk_rows: the largest number of rows in a chunk; out-of-core fitters pad
        every chunk to this many rows, so one compiled program serves them all.
      num_rows: total rows, or None until a first pass has counted them.
      description: where the rows come from (for messages).
    """

    def __init__(
        self,
        factory: Callable[[], Iterator],
        *,
        num_columns: int,
        chunk_rows: int,
        num_rows: int | None = None,
        description: str = "chunks",
    ):
        self._factory = factory
        self.num_columns = _positive_int("num_columns", num_columns)
        self.chunk_rows = _positive_int("chunk_rows", chunk_rows)
        self.num_rows = num_rows
        self.description = description

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield validated float chunks; counts the rows on the first full pass."""
        start = 0
        for index, chunk in enumerate(self._factory()):
            chunk = _check_chunk(chunk, index, start, self)
            start += chunk.shape[0]
            if chunk.shape[0]:
                yield chunk
        if self.num_rows is None:
            self.num_rows = start
        elif start != self.num_rows:
            raise ValueError(
                f"{self.description} yielded {start} rows on this pass but "
                f"{self.num_rows} before; an out-of-core fit needs the same rows "
                f"on every pass (is the factory returning a fresh iterator?)"
            )

    def count_rows(self) -> int:
        """Number of rows, reading the source once if it is not known yet."""
        if self.num_rows is None:
            for _ in self:
                pass
        return self.num_rows

    def __repr__(self) -> str:
        return (
            f"ChunkedRows({self.description}, num_rows={self.num_rows}, "
            f"num_columns={self.num_columns}, chunk_rows={self.chunk_rows})"
        )


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_chunk(chunk, index: int, start: int, source: ChunkedRows) -> np.ndarray:
    """A finite float 2-D array of the source's width, or a ValueError naming it."""
    where = f"chunk {index} of {source.description} (rows {start}..)"
    array = np.asarray(chunk)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise TypeError(
            f"{where} has dtype {array.dtype}; chunks must be numeric (convert or "
            f"drop non-numeric columns)"
        )
    if array.ndim != 2 or array.shape[1] != source.num_columns:
        raise ValueError(
            f"{where} has shape {array.shape}; every chunk must be 2-D with "
            f"{source.num_columns} columns"
        )
    if array.shape[0] > source.chunk_rows:
        raise ValueError(
            f"{where} has {array.shape[0]} rows, more than chunk_rows="
            f"{source.chunk_rows}; raise chunk_rows or yield smaller chunks"
        )
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{where} holds a non-finite value at row {start + row}, column "
            f"{column}; remove or impute those rows before fitting"
        )
    return array


def chunks_from_array(array, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ChunkedRows:
    """Slices of ``chunk_rows`` rows of a 2-D array (a memory map reads lazily)."""
    if not hasattr(array, "shape") or len(array.shape) != 2:
        raise ValueError(
            f"chunks_from_array needs a 2-D array, got "
            f"{getattr(array, 'shape', type(array).__name__)}"
        )
    chunk_rows = _positive_int("chunk_rows", chunk_rows)
    num_rows = array.shape[0]

    def factory():
        for start in range(0, num_rows, chunk_rows):
            yield array[start : start + chunk_rows]

    return ChunkedRows(
        factory,
        num_columns=array.shape[1],
        chunk_rows=min(chunk_rows, max(num_rows, 1)),
        num_rows=num_rows,
        description=f"array {array.shape}",
    )


def chunks_from_npy(path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ChunkedRows:
    """A 2-D C-order ``.npy`` file, read ``chunk_rows`` rows at a time.

    Each chunk is read with ``np.fromfile`` at its offset, not through a memory
    map: mapped pages stay resident (and counted in the process's memory) until
    the map closes, so a memory map would let memory grow with the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no .npy file at {path}")
    with path.open("rb") as handle:
        major, _ = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(handle)
        offset = handle.tell()
    if len(shape) != 2 or fortran_order:
        raise ValueError(
            f"{path} holds an array of shape {shape}"
            f"{' in Fortran order' if fortran_order else ''}; out-of-core fits "
            f"need a 2-D C-order array (save with np.save(path, "
            f"np.ascontiguousarray(x)))"
        )
    chunk_rows = _positive_int("chunk_rows", chunk_rows)
    num_rows, num_columns = shape
    row_bytes = num_columns * dtype.itemsize

    def factory():
        with path.open("rb") as handle:
            for start in range(0, num_rows, chunk_rows):
                count = min(chunk_rows, num_rows - start) * num_columns
                chunk = np.fromfile(
                    handle, dtype=dtype, count=count,
                    offset=offset + start * row_bytes - handle.tell(),
                )
                yield chunk.reshape(-1, num_columns)

    return ChunkedRows(
        factory,
        num_columns=num_columns,
        chunk_rows=min(chunk_rows, max(num_rows, 1)),
        num_rows=num_rows,
        description=str(path),
    )


def chunks_from_parquet(
    path, columns=None, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> ChunkedRows:
    """Numeric ``columns`` (default: all) of a parquet file in record batches."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no parquet file at {path}")
    schema = pq.ParquetFile(path).schema_arrow
    names = list(schema.names) if columns is None else list(columns)
    missing = [name for name in names if name not in schema.names]
    if missing:
        raise ValueError(
            f"{path} has no column(s) {missing}; it has {list(schema.names)}"
        )
    chunk_rows = _positive_int("chunk_rows", chunk_rows)

    def factory():
        with pq.ParquetFile(path) as handle:
            for batch in handle.iter_batches(batch_size=chunk_rows, columns=names):
                yield np.column_stack(
                    [batch.column(name).to_numpy(zero_copy_only=False)
                     for name in names]
                )

    return ChunkedRows(
        factory,
        num_columns=len(names),
        chunk_rows=chunk_rows,
        num_rows=pq.ParquetFile(path).metadata.num_rows,
        description=str(path),
    )


def chunks_from_factory(
    factory: Callable[[], Iterator], *, num_columns: int, chunk_rows: int
) -> ChunkedRows:
    """Chunks from ``factory()``, which must return a fresh iterator each call."""
    if not callable(factory):
        raise TypeError(
            "factory must be a callable returning a fresh iterator of chunks, got "
            f"{type(factory).__name__}; wrap a generator in a function"
        )
    return ChunkedRows(
        factory, num_columns=num_columns, chunk_rows=chunk_rows,
        description="factory",
    )
