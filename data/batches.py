"""Fixed-size batches of rows for online (stepwise) EM, from an array or chunks.

One pass over the data yields (batch, weights) pairs, every batch exactly
``batch_size`` rows (so one compiled program serves them all): the last one is
padded with rows of zeros of weight 0. ``array_batches`` visits the rows of an
array in a given order (a permutation for a shuffled pass); ``chunk_batches``
cuts a ``chunks.ChunkedRows`` into batches in order, holding at most one chunk
and one batch.
"""

import numpy as np

from latentmix.data.chunks import ChunkedRows

__all__ = ["array_batches", "chunk_batches", "padded_batch"]


def array_batches(x, batch_size: int, order=None):
    """(batch, weights) pairs of one pass over the rows of ``x``.

    ``order``: the row order (default 0..n-1); batches hold min(batch_size, n)
    rows."""
    num_rows = x.shape[0]
    order = np.arange(num_rows) if order is None else np.asarray(order)
    size = min(batch_size, num_rows)
    for start in range(0, num_rows, size):
        yield padded_batch(x[order[start:start + size]], size)


def chunk_batches(source: ChunkedRows, batch_size: int):
    """(batch, weights) pairs of one pass over ``source``, cut in order."""
    pending, held = [], 0
    for chunk in source:
        pending.append(np.asarray(chunk))
        held += len(chunk)
        while held >= batch_size:
            rows = np.concatenate(pending)
            yield padded_batch(rows[:batch_size], batch_size)
            pending, held = [rows[batch_size:]], held - batch_size
    if held:
        yield padded_batch(np.concatenate(pending), batch_size)


def padded_batch(rows, size: int):
    """(rows padded with zero rows to ``size``, weights: 1 real, 0 padding)."""
    rows = np.asarray(rows)
    weights = np.zeros(size, rows.dtype if rows.dtype.kind == "f" else np.float64)
    weights[:len(rows)] = 1.0
    if len(rows) < size:
        rows = np.concatenate([rows, np.zeros((size - len(rows),) + rows.shape[1:],
                                              rows.dtype)])
    return rows, weights
