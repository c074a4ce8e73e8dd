"""Full-covariance E- and M-step statistics in row blocks, at matrix-product speed.

Used when the per-row products x_i x_i^T do not fit in memory for a whole fit
(``restarts.PRODUCTS_MAX_ELEMENTS``), out of core, and for the final objective.
A ``lax.fori_loop`` runs over blocks of B rows and sums the statistics (row
sums add up over blocks as over chunks and devices); padding rows (weight 0)
fill the last block and count nowhere. Per block, every n x k x d^2 quantity is
one matrix product, in the layout that XLA's CPU dot runs near the machine's
peak (the contracted axis last on the left, first on the right; a product that
contracted the first axis of its left operand ran 3-5x slower here). Two
routes (``full_route``), measured on a 2-core CPU in CPU seconds per EM
iteration at n = 1e5:

  "pairs"     the per-row products of ``pairs`` built for the block, (w, B)
              with w ~ d^2 / 2, then the E-step's quadratic forms
              (x - mu_c)^T P_c (x - mu_c) = c_c . pairs(x) - 2 x^T P_c mu_c +
              mu_c^T P_c mu_c as one (k, w + d) (w + d, B) product and the
              M-step's sum_i v_i gamma_ic [x_i x_i^T, x_i] as one (k, B)
              (B, w + d) product: 2 n k (w + d) flops each, about half of
              "whiten"'s; the statistics are about the origin (shift 0: the
              data are centred), as with the products kept for a whole fit.
  "whiten"    z = W x_b^T - b, (k d, B), with W the stacked L_c^-1 and b_c =
              L_c^-1 mu_c, so that ||z_c,i||^2 is the quadratic form, then
              A = Y x_b with the rows of Y the v_i gamma_ic (x_i - s_c) (shift
              s = the current means) and second_c = A_c - sums_c s_c^T: 4 n k d^2
              flops, but its (k d, B) products have k d rows, which XLA's dot
              runs at 1.5-3x the rate of the k-row products of "pairs".

Per row, "whiten" writes and reads 2 k d intermediates, "pairs" w ~ d^2 / 2:
"whiten" when 2 k d <= w, "pairs" otherwise. Measured (CPU s per iteration,
float64, load 6-11 on 2 cores): d = 64, k = 16: whiten 0.52-0.66, pairs
0.58-0.71; k = 32: 1.31 against 0.94; k = 64: 2.17-2.52 against 1.16-1.39;
d = 16, k = 16: 0.104 against 0.054; d = 32, k = 16: 0.235 against 0.188.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from latentmix.inference.em.gaussian_mixture.pairs import (
    pair_coefficients,
    pair_layout,
    pairs_of_columns,
    unpack_pairs,
)

__all__ = ["BLOCK_BYTES", "BlockedRows", "block_rows", "full_block_statistics",
           "full_route", "lay_out_blocks", "scaled_exponentials"]

# Bytes of one block's largest intermediate ((k d, B) for "whiten", (w, B) for
# "pairs"): near the 2 MiB of L2 per core of the machine this was tuned on.
BLOCK_BYTES = 1 << 22

_HIGHEST = jax.lax.Precision.HIGHEST


def scaled_exponentials(weighted, axis):
    """exp(weighted - peak), its sum and the log of that sum plus the peak.

    For w_ic = log weights_c + log N(x_i | mu_c, S_c) along the components'
    ``axis``: e_ic = exp(w_ic - m_i) with m_i = max_c w_ic, s_i = sum_c e_ic,
    log p(x_i | theta) = m_i + log s_i and gamma_ic = e_ic / s_i. One
    exponential per entry, where ``logsumexp`` followed by exp(log gamma) takes
    two (the time of a diagonal iteration did not move with it at n = 1e5,
    d = k = 16: passes over memory and the products dominate there). Shared
    by the row blocks and ``steps.statistics``. A row whose peak is not
    finite keeps peak 0 (no inf - inf).
    Returns (e, s, log p(x | theta)), s and log p without ``axis``.
    """
    peak = jnp.max(weighted, axis=axis, keepdims=True)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    scaled = jnp.exp(weighted - peak)
    norm = jnp.sum(scaled, axis=axis)
    return scaled, norm, jnp.squeeze(peak, axis) + jnp.log(norm)


def full_route(num_components: int, num_features: int) -> str:
    """"whiten" when 2 k d <= w (the width of ``pairs``), else "pairs"."""
    width = pair_layout(num_features).left.shape[0]
    return "whiten" if 2 * num_components * num_features <= width else "pairs"


def block_rows(row_elements: int, num_rows: int, itemsize: int = 8) -> int:
    """Rows per block B: a power of two with ``row_elements`` x B x itemsize
    near ``BLOCK_BYTES``, between 64 and 8192, and at most the rows (rounded up
    to a multiple of 8)."""
    target = BLOCK_BYTES // max(1, row_elements * itemsize)
    rows = 1 << max(6, min(13, int(math.log2(max(1, target)))))
    return max(8, min(rows, -(-num_rows // 8) * 8))


class BlockedRows(NamedTuple):
    """The rows laid out in blocks of B for ``full_block_statistics``.

    rows: (blocks, B, d), x padded with zero rows; columns: (blocks, d, B), the
    same transposed (the right operand of the blocks' products); weights:
    (blocks, B), the row weights, 0 on padding. Built once per fit
    (``lay_out_blocks``): built inside the EM loop, the transposed copy was
    made again every iteration (seen in the optimised HLO; the fit's time moved
    within this machine's spread, 1.95-2.05 -> 1.95-1.99 s at n = 1e5, d = 64,
    k = 16, 5 iterations).
    """

    rows: jax.Array
    columns: jax.Array
    weights: jax.Array


def lay_out_blocks(x, row_weights, num_components: int) -> BlockedRows:
    """x (n, d) and its row weights in the blocks ``full_block_statistics``
    uses for ``num_components`` components."""
    num_rows, num_features = x.shape
    size = _block_size(num_components, num_features, num_rows, x.dtype.itemsize)
    num_blocks = -(-num_rows // size)
    padding = num_blocks * size - num_rows
    rows = jnp.pad(x, ((0, padding), (0, 0))).reshape(num_blocks, size, num_features)
    weights = jnp.pad(row_weights, (0, padding)).reshape(num_blocks, size)
    return BlockedRows(rows, jnp.swapaxes(rows, 1, 2), weights)


def full_block_statistics(means, covariances, log_weights, x, row_weights, shift,
                          *, with_second: bool = True, blocks=None):
    """Row sums of one full-covariance E-step, computed block by block.

    With gamma_ic the responsibilities at (weights, ``means``, ``covariances``),
    v_i the row weights and s the shift returned, returns the tuple

        counts        sum_i v_i gamma_ic                             (k,)
        sums          sum_i v_i gamma_ic (x_i - s_c)                 (k, d)
        second        sum_i v_i gamma_ic (x_i - s_c)(x_i - s_c)^T    (k, d, d)
                      (sums and second are None without ``with_second``)
        log_likelihood       sum_i v_i log p(x_i | theta)            ()
        worst_log_likelihood min_i log p(x_i | theta) over real rows ()
        worst_row            that row                                (d,)
        shift         s: ``shift`` for "whiten", 0 for "pairs"       (k, d)

    ``log_weights`` (k,): log weights_c, -inf for a padding component.
    ``blocks``: ``lay_out_blocks(x, row_weights, k)`` when the caller keeps it
    (else it is built here).
    """
    num_features = x.shape[1]
    num_components = means.shape[0]
    if blocks is None:
        blocks = lay_out_blocks(x, row_weights, num_components)
    route = full_route(num_components, num_features)
    chol = jnp.linalg.cholesky(covariances)
    eye = jnp.broadcast_to(jnp.eye(num_features, dtype=x.dtype), chol.shape)
    inv_chol = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    offsets = log_weights - half_log_det - 0.5 * num_features * math.log(2 * math.pi)
    if route == "pairs":
        shift = jnp.zeros_like(means)
        layout = pair_layout(num_features)
        width = layout.left.shape[0]
        precisions = jnp.matmul(jnp.swapaxes(inv_chol, -1, -2), inv_chol,
                                precision=_HIGHEST)
        precision_means = jnp.einsum("kde,ke->kd", precisions, means,
                                     precision=_HIGHEST)
        coefficients = jnp.concatenate(
            [pair_coefficients(precisions, layout), -2.0 * precision_means], axis=1)
        mean_terms = jnp.sum(means * precision_means, axis=-1)[:, None]

        def squares_and_products(x_b, x_t):
            # [pairs(x); x] for the block: (w + d, B).
            products = jnp.concatenate([pairs_of_columns(x_t, layout), x_t], axis=0)
            squared = jnp.matmul(coefficients, products, precision=_HIGHEST)
            return squared + mean_terms, products

        def statistic(resp, x_b, x_t, products):
            return jnp.matmul(resp, products.T, precision=_HIGHEST)

        second_shape = (num_components, width + num_features)
    else:
        whitening = inv_chol.reshape(num_components * num_features, num_features)
        whitened_means = jnp.einsum("ked,kd->ke", inv_chol, means,
                                    precision=_HIGHEST).reshape(-1, 1)

        def squares_and_products(x_b, x_t):
            z = jnp.matmul(whitening, x_t, precision=_HIGHEST) - whitened_means
            return jnp.sum((z * z).reshape(num_components, num_features, -1), 1), None

        def statistic(resp, x_b, x_t, products):
            # [sum_i v gamma (x_i - s_c) x_i^T (k d, d) | sum_i v gamma x_i (k, d)]
            lhs = resp[:, None, :] * (x_t[None] - shift[:, :, None])
            moment = jnp.matmul(lhs.reshape(num_components * num_features, -1), x_b,
                                precision=_HIGHEST)
            sums = jnp.matmul(resp, x_b, precision=_HIGHEST)
            return jnp.concatenate(
                [moment.reshape(num_components, num_features * num_features), sums],
                axis=1)

        second_shape = (num_components, num_features * num_features + num_features)
    total, worst, worst_row, counts, moments = _over_blocks(
        blocks, offsets, squares_and_products,
        statistic if with_second else None, second_shape)
    if not with_second:
        return counts, None, None, total, worst, worst_row, shift
    if route == "pairs":
        sums = moments[:, width:]
        second = unpack_pairs(moments[:, :width], layout, num_features)
    else:
        sums = moments[:, num_features * num_features:] - counts[:, None] * shift
        second = (moments[:, :num_features * num_features].reshape(
            num_components, num_features, num_features)
            - sums[:, :, None] * shift[:, None, :])
    return counts, sums, second, total, worst, worst_row, shift


def _block_size(num_components, num_features, num_rows, itemsize):
    """B for ``full_route``'s largest per-row intermediate (``block_rows``)."""
    if full_route(num_components, num_features) == "pairs":
        width = pair_layout(num_features).left.shape[0] + num_features
    else:
        width = num_components * num_features
    return block_rows(width, num_rows, itemsize)


def _over_blocks(blocks: BlockedRows, offsets, squares_and_products, statistic,
                 statistic_shape):
    """The loop over row blocks: log-likelihood, worst row, counts and the
    summed ``statistic`` (zeros when None: only the log-likelihood is wanted).

    Per block: squared (k, B) Mahalanobis distances from
    ``squares_and_products``, log p(x_i) = logsumexp_c (offsets_c - squared_ci
    / 2) along the components (axis 0, contiguous rows), responsibilities
    v_i gamma_ic (k, B), then ``statistic(resp, x_b, x_t, products)``.
    """
    rows, columns, weights = blocks
    num_blocks = rows.shape[0]
    offsets = offsets[:, None]
    dtype = rows.dtype

    def block(index, carry):
        total, worst, worst_row, counts, moments = carry
        x_b, x_t, v = rows[index], columns[index], weights[index]
        squared, products = squares_and_products(x_b, x_t)
        weighted = offsets - 0.5 * jnp.maximum(squared, 0.0)
        # log p(x_i | theta), (B,)
        scaled, norm, log_norm = scaled_exponentials(weighted, axis=0)
        real = v > 0
        resp = scaled * (jnp.where(real, v, 0.0) / norm)  # v_i gamma_ic, (k, B)
        # where, not a product: a padding row's log-density times 0 must not
        # be NaN.
        total = total + jnp.sum(jnp.where(real, v * log_norm, 0.0))
        masked = jnp.where(real, log_norm, jnp.inf)
        at = jnp.argmin(masked)
        better = masked[at] < worst
        worst = jnp.where(better, masked[at], worst)
        worst_row = jnp.where(better, x_b[at], worst_row)
        if statistic is not None:
            counts = counts + jnp.sum(resp, axis=1)
            moments = moments + statistic(resp, x_b, x_t, products)
        return total, worst, worst_row, counts, moments

    num_components = offsets.shape[0]
    carry = (jnp.zeros((), dtype), jnp.asarray(jnp.inf, dtype), rows[0, 0],
             jnp.zeros((num_components,), dtype),
             jnp.zeros(statistic_shape if statistic is not None else (1, 1), dtype))
    return jax.lax.fori_loop(0, num_blocks, block, carry)
