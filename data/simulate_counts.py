"""Simulated count data from mixtures of multinomials (article 4, §4.4).

``sample_multinomial_mixture`` draws baskets from a (possibly per-group) mixture:

    t_i ~ Cat(weights)            (weights[groups[i]] when groups are given)
    x_i | t_i = k ~ Mult(n_i, probs_k)

``make_dataset`` reproduces the tutorial's synthetic protocol: ``int(n * w_k)`` rows
from component k, stacked, then shuffled. ``TRINOMIAL_EXPERIMENTS`` holds its three
trinomial set-ups (C = 3 categories, 16 trials per row). Everything returns NumPy
int64 arrays; draws are reproducible from the explicit ``rng_key``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.util import multinomial

from latentmix.data.validation import check_int

__all__ = [
    "TrinomialExperiment",
    "TRINOMIAL_EXPERIMENTS",
    "sample_multinomial_mixture",
    "make_dataset",
    "random_split",
]


class TrinomialExperiment(NamedTuple):
    """One synthetic set-up of the tutorial's ``Runs on generate dataset`` notebook."""

    num_rows: int
    weights: np.ndarray  # (k,)
    probs: np.ndarray  # (k, 3)
    total_count: int


TRINOMIAL_EXPERIMENTS = {
    # Well separated, unequal weights: the 0.8 component sits at the X1 corner.
    "well_separated": TrinomialExperiment(
        10_000,
        np.array([0.1, 0.1, 0.8]),
        np.array([[0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]]),
        16,
    ),
    # Three heavily overlapping components; the reference's BIC picked K = 3.
    "overlapping": TrinomialExperiment(
        100_000,
        np.full(3, 1.0 / 3.0),
        np.array([[0.3, 0.4, 0.3], [0.3, 0.3, 0.4], [0.4, 0.3, 0.3]]),
        16,
    ),
    # Ten components on a grid of the simplex; the reference's BIC picked K = 11.
    "ten_components": TrinomialExperiment(
        100_000,
        np.full(10, 0.1),
        np.array(
            [
                [0.1, 0.1, 0.8],
                [0.1, 0.3, 0.6],
                [0.1, 0.5, 0.4],
                [0.1, 0.7, 0.2],
                [0.3, 0.1, 0.6],
                [0.3, 0.3, 0.4],
                [0.3, 0.5, 0.2],
                [0.5, 0.1, 0.4],
                [0.5, 0.3, 0.2],
                [0.7, 0.1, 0.2],
            ]
        ),
        16,
    ),
}


def _check_simplex(name: str, value, axis: int = -1) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {array.tolist()}")
    sums = array.sum(axis=axis)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=1e-6):
        raise ValueError(
            f"{name} must sum to 1 along its last axis, got sums {np.round(sums, 8)}; "
            f"divide by the sum first"
        )
    return array


def sample_multinomial_mixture(
    weights, probs, total_counts, *, rng_key, groups=None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one count vector per entry of ``total_counts``.

    Args:
      weights: (k,) mixture weights, or (g, k) per-group weights with ``groups``.
      probs: (k, c) category probabilities, one simplex row per component.
      total_counts: (n,) non-negative integer basket sizes n_i.
      rng_key: JAX PRNG key.
      groups: optional (n,) integer group codes in [0, g) indexing ``weights``.

    Returns:
      ``(counts, components)``: (n, c) int64 counts with row sums ``total_counts``
      and the (n,) int64 component each row was drawn from.
    """
    weights = _check_simplex("weights", weights)
    probs = _check_simplex("probs", probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (k, c), got {probs.shape}")
    totals = np.asarray(total_counts)
    if totals.ndim != 1 or not np.issubdtype(totals.dtype, np.integer):
        raise ValueError(
            f"total_counts must be a 1-D integer array, got dtype {totals.dtype} "
            f"and shape {totals.shape}"
        )
    if np.any(totals < 0):
        raise ValueError("total_counts must be >= 0")
    if groups is None:
        if weights.ndim != 1 or weights.shape[0] != probs.shape[0]:
            raise ValueError(
                f"weights must have shape ({probs.shape[0]},) to match probs, got "
                f"{weights.shape}"
            )
        row_weights = np.broadcast_to(weights, (len(totals), len(weights)))
    else:
        groups = np.asarray(groups)
        if groups.shape != totals.shape or not np.issubdtype(groups.dtype, np.integer):
            raise ValueError(
                f"groups must be integer codes with shape {totals.shape}, got dtype "
                f"{groups.dtype} and shape {groups.shape}"
            )
        if weights.ndim != 2 or weights.shape[1] != probs.shape[0]:
            raise ValueError(
                f"with groups, weights must have shape (g, {probs.shape[0]}), got "
                f"{weights.shape}"
            )
        if groups.size and (groups.min() < 0 or groups.max() >= weights.shape[0]):
            raise ValueError(f"groups must lie in [0, {weights.shape[0]})")
        row_weights = weights[groups]
    key_components, key_counts = jax.random.split(rng_key)
    with np.errstate(divide="ignore"):
        log_row_weights = np.log(row_weights)
    components = jax.random.categorical(key_components, jnp.asarray(log_row_weights))
    if len(totals) == 0:
        return np.zeros((0, probs.shape[1]), np.int64), np.zeros(0, np.int64)
    counts = multinomial(
        key_counts,
        jnp.asarray(probs)[components],
        jnp.asarray(totals),
        total_count_max=max(int(totals.max()), 1),
    )
    return np.asarray(counts, dtype=np.int64), np.asarray(components, dtype=np.int64)


def make_dataset(
    num_rows: int, weights, probs, total_count: int, *, rng_key
) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's ``make_dataset``: ``int(num_rows * w_k)`` rows from each k.

    Rows are drawn from Mult(total_count, probs_k), stacked component by component
    and shuffled, so component sizes are fixed rather than random (the total can
    be slightly below ``num_rows``: 99,999 rows for three weights of 1/3).

    Returns ``(counts, labels)``: (m, c) int64 counts and the (m,) true components.
    """
    num_rows = check_int("num_rows", num_rows, minimum=1)
    total_count = check_int("total_count", total_count, minimum=0)
    weights = _check_simplex("weights", weights)
    sizes = (num_rows * weights).astype(np.int64)
    labels = np.repeat(np.arange(len(weights)), sizes)
    key_counts, key_shuffle = jax.random.split(rng_key)
    # Each row's component is fixed; the weights passed to the sampler are one-hot.
    one_hot = np.eye(len(weights))
    counts, _ = sample_multinomial_mixture(
        one_hot,
        probs,
        np.full(len(labels), total_count, dtype=np.int64),
        rng_key=key_counts,
        groups=labels,
    )
    order = np.asarray(jax.random.permutation(key_shuffle, len(labels)))
    return counts[order], labels[order]


def random_split(num_rows: int, *, test_fraction: float = 0.2, rng_key):
    """Shuffled row indices split into (train, test), like the tutorial's 80/20."""
    num_rows = check_int("num_rows", num_rows, minimum=2)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    order = np.asarray(jax.random.permutation(rng_key, num_rows))
    num_test = int(round(num_rows * test_fraction))
    return np.sort(order[num_test:]), np.sort(order[:num_test])
