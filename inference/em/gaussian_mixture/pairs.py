"""Per-row products x_ij x_il (j <= l) laid out so that XLA builds them fast.

The statistics of full covariances are linear in the products x_i x_i^T: the
E-step's quadratic forms (x - mu)^T P (x - mu) = sum_{j<=l} c_jl x_j x_l
- 2 x^T P mu + mu^T P mu (c_jl = P_jl, doubled off the diagonal) and the
M-step's second moments sum_i gamma_ic x_i x_i^T. Each is then one matrix
product with the (n, ~d^2/2) products, half the flops of a whitening or of k
scatters (``steps.row_products`` keeps them for a whole fit when they fit in
memory; ``blocked`` builds them block by block).

Layout. Gathering the d (d + 1) / 2 pairs (j, l) one by one runs at a few ns per
element on a CPU (an XLA gather, or a concatenation of d slices). Here the
features are halved recursively: at level t = 0 .. L-1 the 2^t blocks of
size s = d'/2^(t+1) pair up (even, odd) and give the outer products of the
halves, one broadcast multiply per level, (2^t, s, s); the 2^L diagonal blocks
of size m = d' / 2^L give full m x m outer products, both (j, l) and (l, j)
(d' = 2^L m >= d, the features padded with zeros). Every pair j < l appears
once in a cross block (coefficient 2 P_jl) or twice in a diagonal block
(coefficient P_jl each), and j = l once in a diagonal block. With L chosen to
minimise the width, d = 64 gives 2112 columns instead of 2080 (d (d + 1) / 2),
d = 16 gives 144 instead of 136: L + 1 broadcast multiplies and one
concatenation instead of a gather.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["PairLayout", "pair_coefficients", "pair_layout", "pairs_of_columns",
           "unpack_pairs"]


class PairLayout(NamedTuple):
    """Where every column of the products comes from (static numpy arrays).

    levels: L; block: m, the size of a diagonal block; padded: d' = 2^L m;
    left, right: (width,) feature indices j, l of each column (in the padded
    features); weight: (width,) 2 for a cross pair, 1 in a diagonal block;
    real: (width,) False for a column that involves a padding feature.
    """

    levels: int
    block: int
    padded: int
    left: np.ndarray
    right: np.ndarray
    weight: np.ndarray
    real: np.ndarray


def pair_layout(num_features: int) -> PairLayout:
    """The layout of least width for d features (module docstring)."""
    best = None
    for levels in range(0, 8):
        block = -(-num_features // 2**levels)
        if block < 1 or (levels and block < 2):
            break
        width = _width(levels, block)
        if best is None or width < best[0]:
            best = (width, levels, block)
    _, levels, block = best
    padded = block * 2**levels
    left, right, weight = [], [], []
    for level in range(levels):
        size = padded // 2 ** (level + 1)
        for pair in range(2**level):
            base = pair * 2 * size
            rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
            left.append(base + rows.ravel())
            right.append(base + size + cols.ravel())
            weight.append(np.full(size * size, 2.0))
    for index in range(2**levels):
        base = index * block
        rows, cols = np.meshgrid(np.arange(block), np.arange(block), indexing="ij")
        left.append(base + rows.ravel())
        right.append(base + cols.ravel())
        weight.append(np.ones(block * block))
    left, right = np.concatenate(left), np.concatenate(right)
    real = (left < num_features) & (right < num_features)
    return PairLayout(levels, block, padded, left, right, np.concatenate(weight),
                      real)


def pairs_of_columns(x_t, layout: PairLayout):
    """The products of ``layout`` for the columns of x_t (d, B): (width, B).

    Row p is x_t[left_p] * x_t[right_p] (rows contiguous along B, the layout of
    a matrix product's right operand)."""
    num_features, size = x_t.shape
    if layout.padded > num_features:
        x_t = jnp.pad(x_t, ((0, layout.padded - num_features), (0, 0)))
    pieces = []
    for level in range(layout.levels):
        half = layout.padded // 2 ** (level + 1)
        halves = x_t.reshape(2**level, 2, half, size)
        outer = halves[:, 0, :, None, :] * halves[:, 1, None, :, :]
        pieces.append(outer.reshape(-1, size))
    blocks = x_t.reshape(2**layout.levels, layout.block, size)
    pieces.append((blocks[:, :, None, :] * blocks[:, None, :, :]).reshape(-1, size))
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=0)


def pair_coefficients(precisions, layout: PairLayout):
    """(k, width) c_p = weight_p P[left_p, right_p], so that the quadratic form
    x^T P x = sum_p c_p (x_left_p x_right_p); 0 on padding columns."""
    num_features = precisions.shape[-1]
    left = np.minimum(layout.left, num_features - 1)
    right = np.minimum(layout.right, num_features - 1)
    weight = np.where(layout.real, layout.weight, 0.0).astype(precisions.dtype)
    return precisions[..., left, right] * weight


def unpack_pairs(packed, layout: PairLayout, num_features: int):
    """(..., width) sums of products -> symmetric (..., d, d) matrices."""
    left, right = layout.left[layout.real], layout.right[layout.real]
    values = packed[..., np.flatnonzero(layout.real)]
    full = jnp.zeros(packed.shape[:-1] + (num_features, num_features), packed.dtype)
    full = full.at[..., left, right].set(values)
    return full.at[..., right, left].set(values)


def _width(levels, block):
    padded = block * 2**levels
    cross = sum(2**level * (padded // 2 ** (level + 1)) ** 2 for level in range(levels))
    return cross + 2**levels * block * block
