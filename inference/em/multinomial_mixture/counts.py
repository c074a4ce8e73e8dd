"""Host-side preparation of the counts: from the user's matrix to device ``Data``.

``prepare_counts`` validates the counts and groups, drops all-zero rows (a
DataWarning; ``models.multinomial_mixture.assignments`` labels them EMPTY_LABEL),
sums the multinomial coefficient in float64 and folds the rows; ``device_data``
lays them out for the jitted core.

Folding. Distinct non-empty rows are folded into weighted rows: row i has
multiplicity v_i (how many baskets share its counts, and its group in the
grouped model), and N = sum_i v_i is the number of non-empty baskets. Folding is
exact: every sum of the E- and M-step is the same sum over the original rows,
grouped differently. The folded rows come in an order that depends only on
their content, so permuting the input rows changes nothing.

Layout. The E-step needs X @ log(P).T and the M-step (v gamma).T @ X. Dense
matrices use BLAS matmuls; sparse ones a gather and segment_sum over the
non-zeros (``steps``). Measured on a 2-core CPU in float64, one E-step product
plus one M-step product (with the softmax between them) on 120,000 x 94 counts
at 5% density took, for K = 10: dense 39 ms, BCOO 51 ms, gather/segment_sum 38
ms; for K = 30: 76, 249 and 166 ms (BCOO's transposed product is the slow part).
Over c = 94..1000 and 0.5-16% density a stored entry cost about 40 times a dense
cell, so ``choose_layout`` picks the sparse path only when fewer than 2% of the
cells are non-zero (SPARSE_DENSITY_THRESHOLD), or when the dense matrix would
exceed 2 GiB (DENSE_MAX_BYTES); basket-by-category matrices (c = 94, ~5-10%
density) go dense. The choice depends only on the folded rows, never on the
input format, so dense and sparse inputs of the same counts give bit-identical
fits.

Shapes. Folded rows (and non-zeros) are padded with zero-weight rows up to a
size bucket (``size_bucket``: at most 1/8 larger), so data sets of similar size
reuse the compiled core.

Devices. N_k, S_kc and the objective are sums over rows, so the folded rows are
padded (with zero-weight rows) to a multiple of the device count and sharded
over a one-axis mesh (``inference.sharding``), and the scalars replicated; GSPMD
turns each contraction over rows into per-device partial sums plus an
all-reduce. Only the dense layout is sharded: the sparse layout's
gather/segment_sum would be partitioned by GSPMD without knowing that a device's
non-zeros belong to its own rows.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import scipy.sparse
from scipy.special import gammaln

from latentmix.data.validation import warn
from latentmix.inference.em.multinomial_mixture.steps import (
    Data,
    DenseCounts,
    SparseCounts,
)
from latentmix.inference.sharding import padded_rows, replicate, shard_rows
from latentmix.models.multinomial_mixture import check_counts, encode_groups

__all__ = [
    "DENSE_MAX_BYTES",
    "SPARSE_DENSITY_THRESHOLD",
    "Folded",
    "Prepared",
    "choose_layout",
    "device_data",
    "fold_rows",
    "prepare_counts",
    "resolve_layout",
    "size_bucket",
    "warn_empty_rows",
    "warn_unobserved",
]

SPARSE_DENSITY_THRESHOLD = 0.02  # measured break-even density, see docstring
DENSE_MAX_BYTES = 2**31


class Folded(NamedTuple):
    """Distinct non-empty rows with their multiplicities (host arrays)."""

    matrix: scipy.sparse.csr_matrix  # (m, c) distinct rows
    row_weights: np.ndarray  # (m,) multiplicity v_i
    group_codes: np.ndarray | None  # (m,) int32
    num_distinct: int  # distinct row contents, groups ignored


class Prepared(NamedTuple):
    """Validated, folded counts and the host-side constants of the objective."""

    folded: Folded
    num_rows: int  # N, the non-empty baskets
    num_categories: int
    num_groups: int | None
    max_row_total: float
    column_totals: np.ndarray  # (c,) total count of each category
    log_coefficient: float  # sum over baskets of log n_i! - sum_c log x_ic!

    @property
    def mean_log_coefficient(self) -> float:
        """(1/N) sum over baskets of log n_i! - sum_c log x_ic!."""
        return self.log_coefficient / self.num_rows


def prepare_counts(counts, groups, fold: bool) -> Prepared:
    """Validate counts and groups, drop empty rows (warning), fold the rest.

    log coefficient = sum_i [log n_i! - sum_c log x_ic!], in float64 (gammaln
    of the row totals and of the non-zeros). Warnings are attributed to the
    caller of the public function calling this.
    """
    matrix = check_counts(counts)
    if not scipy.sparse.issparse(matrix):
        matrix = scipy.sparse.csr_matrix(matrix)
    num_input_rows, num_categories = matrix.shape

    codes = labels = None
    if groups is not None:
        codes, labels = encode_groups(groups)
        if codes.shape[0] != num_input_rows:
            raise ValueError(
                f"groups must have one label per row of counts ({num_input_rows}), "
                f"got {codes.shape[0]}"
            )
    num_groups = None if labels is None else len(labels)

    row_totals = np.asarray(matrix.sum(axis=1)).ravel()
    empty = row_totals == 0
    if empty.all():
        raise ValueError("every row of counts is zero; there is nothing to fit")
    if empty.any():
        warn_empty_rows(int(empty.sum()), num_input_rows)
        matrix = matrix[~empty]
        codes = None if codes is None else codes[~empty]
        row_totals = row_totals[~empty]
    log_coefficient = gammaln(row_totals + 1.0).sum() - gammaln(matrix.data + 1.0).sum()
    return Prepared(
        folded=fold_rows(matrix, codes, fold),
        num_rows=matrix.shape[0],
        num_categories=num_categories,
        num_groups=num_groups,
        max_row_total=float(row_totals.max()),
        column_totals=np.asarray(matrix.sum(axis=0)).ravel(),
        log_coefficient=log_coefficient,
    )


def device_data(folded: Folded, layout: str, num_rows, mean_log_coef, dtype,
                devices=None) -> Data:
    """Padded device arrays; with ``devices``, rows sharded and scalars replicated."""
    matrix = folded.matrix
    # A sharded axis must split evenly: the bucket is rounded up to a multiple of
    # the device count, with more zero-weight rows.
    size = padded_rows(size_bucket(matrix.shape[0]), devices)
    pad = size - matrix.shape[0]
    row_weights = np.concatenate([folded.row_weights, np.zeros(pad)])
    codes = folded.group_codes
    codes = np.zeros(matrix.shape[0], np.int32) if codes is None else codes
    codes = np.concatenate([codes, np.zeros(pad, np.int32)])
    if devices is None:
        place_rows = jnp.asarray
    else:
        def place_rows(array, array_dtype):
            return shard_rows(np.asarray(array, array_dtype), devices)
    if layout == "dense":
        dense = np.zeros((size, matrix.shape[1]))
        dense[: matrix.shape[0]] = matrix.toarray()
        counts = DenseCounts(place_rows(dense, dtype))
    else:
        coo = matrix.tocoo()  # row-major order: rows sorted (CSR with sorted indices)
        nnz_size = size_bucket(coo.nnz)
        extra = nnz_size - coo.nnz
        # Padding entries hold 0 in the last row, so rows stay sorted and sums exact.
        counts = SparseCounts(
            jnp.asarray(np.concatenate([coo.row, np.full(extra, size - 1)]), jnp.int32),
            jnp.asarray(np.concatenate([coo.col, np.zeros(extra)]), jnp.int32),
            jnp.asarray(np.concatenate([coo.data, np.zeros(extra)]), dtype),
        )
    scalars = (jnp.asarray(num_rows, dtype), jnp.asarray(mean_log_coef, dtype))
    if devices is not None:
        scalars = replicate(scalars, devices)
    return Data(
        counts,
        place_rows(row_weights, dtype),
        place_rows(codes, jnp.int32),
        *scalars,
    )


def choose_layout(num_rows: int, num_categories: int, num_nonzero: int) -> str:
    """Return "sparse" below 2% non-zero cells or above 2 GiB dense, else "dense"."""
    cells = max(num_rows * num_categories, 1)
    if num_nonzero / cells < SPARSE_DENSITY_THRESHOLD or cells * 8 > DENSE_MAX_BYTES:
        return "sparse"
    return "dense"


def resolve_layout(layout: str, folded: Folded, devices, dtype) -> str:
    """``choose_layout`` on one device; the dense layout (the one sharded) on many."""
    if devices is None:
        if layout == "auto":
            return choose_layout(*folded.matrix.shape, folded.matrix.nnz)
        return layout
    if layout == "sparse":
        raise ValueError(
            "layout='sparse' cannot be sharded over devices (GSPMD would partition "
            "its gather/segment_sum without knowing which rows a device holds); "
            "use layout='dense' with devices, or devices=None for the sparse layout"
        )
    num_rows, num_categories = folded.matrix.shape
    per_device = num_rows * num_categories * jnp.dtype(dtype).itemsize / len(devices)
    if per_device > DENSE_MAX_BYTES:
        raise ValueError(
            f"the dense counts would take {per_device / 2**30:.1f} GiB per device "
            f"({num_rows} distinct rows x {num_categories} categories over "
            f"{len(devices)} devices); use more devices, or stream the rows with "
            f"a data.chunks.ChunkedRows source"
        )
    return "dense"


def size_bucket(size: int) -> int:
    """Round up to 16 or to the next multiple of 2**(floor(log2 size) - 3)."""
    if size <= 16:
        return 16
    step = 2 ** (int(np.floor(np.log2(size))) - 3)
    return int(-(-size // step) * step)


def fold_rows(matrix, codes, fold: bool) -> Folded:
    """Fold identical (row, group) pairs exactly; canonical order (by content).

    Rows are hashed by two random projections (with the group code as a third
    key) and grouped with np.unique; the grouping is then verified exactly (each
    row minus its representative must be zero), with an exact byte-key fallback
    should two different rows ever share a hash. The order of the distinct rows
    depends only on their content, so permuting the input rows changes nothing.
    """
    num_rows = matrix.shape[0]
    projections = np.random.default_rng(0).random((matrix.shape[1], 2)) + 1.0
    hashes = np.asarray(matrix @ projections)
    num_distinct = len(np.unique(hashes, axis=0))
    if not fold:
        group_codes = None if codes is None else codes.astype(np.int32)
        return Folded(matrix, np.ones(num_rows), group_codes, num_distinct)
    group_key = np.zeros(num_rows) if codes is None else codes.astype(np.float64)
    keys = np.column_stack([group_key, hashes])
    _, first, inverse, multiplicity = np.unique(
        keys, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.ravel()
    folded = matrix[first]
    difference = matrix - folded[inverse]
    difference.eliminate_zeros()
    if difference.nnz:
        return _fold_rows_exact(matrix, codes, num_distinct)
    group_codes = None if codes is None else codes[first].astype(np.int32)
    return Folded(folded, multiplicity.astype(np.float64), group_codes, num_distinct)


def warn_empty_rows(num_empty: int, num_input_rows: int) -> None:
    """The DataWarning for all-zero rows."""
    warn(
        f"{num_empty} of {num_input_rows} rows of counts are all zero "
        f"(empty baskets): they carry no information and are excluded from the "
        f"fit; models.multinomial_mixture.assignments labels them EMPTY_LABEL (-1)",
    )


def warn_unobserved(column_totals, prior_arrays) -> None:
    """Categories never observed get probability 0 under maximum likelihood."""
    unobserved = np.flatnonzero(np.asarray(column_totals) == 0)
    if unobserved.size and np.any(
        np.asarray(prior_arrays.probs_concentration)[:, unobserved] == 1.0
    ):
        warn(
            f"categories {unobserved.tolist()} are never observed: they are kept, "
            f"and their maximum-likelihood probability is 0 in every component, so "
            f"new baskets holding them get log-likelihood -inf; pass "
            f"prior=MultinomialMixturePrior(probs_concentration=1 + pseudocount) to "
            f"smooth them",
        )


def _fold_rows_exact(matrix, codes, num_distinct) -> Folded:
    """Byte-exact folding (slow path, used only after a hash collision)."""
    first_of = {}
    multiplicity = {}
    for row in range(matrix.shape[0]):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        key = (
            -1 if codes is None else int(codes[row]),
            matrix.indices[start:stop].tobytes(),
            matrix.data[start:stop].tobytes(),
        )
        first_of.setdefault(key, row)
        multiplicity[key] = multiplicity.get(key, 0) + 1
    ordered = sorted(first_of)
    first = np.array([first_of[key] for key in ordered])
    weights = np.array([multiplicity[key] for key in ordered], dtype=np.float64)
    group_codes = None if codes is None else codes[first].astype(np.int32)
    return Folded(matrix[first], weights, group_codes, num_distinct)
