"""Interpreting a fitted multinomial mixture of baskets (article 4.6-4.7).

Everything here is post-processing of ``MultinomialMixtureParams(weights, probs)``
(``probs`` (k, c): P(category | segment); ``weights`` (k,) for the global model or
(g, k) per household for the grouped one) in NumPy and scipy.sparse, vectorised
over baskets and households:

* ``category_lift`` / ``top_categories``: lift = P(c | k) / P(c) with support filters;
  ``segment_distribution`` gives P(c | k) at a finer category level from
  responsibilities.
* ``segment_profiles``: one row per segment (weight, basket size, top categories).
* ``segment_map`` / ``plot_segment_map``: classical MDS of the L1 distances between
  segments, bubbles sized by weight.
* ``household_profiles``, ``profile_l1_error``, ``compare_global_grouped``: predictive
  category distributions of households against their held-out baskets.
* ``visit_instability``: how often a household's successive visits change their
  most likely segment (the motivation of the grouped model, article 4.6).

Functions that need only ``probs`` or ``weights`` accept either the params tuple or
the arrays; any object with ``weights`` and ``probs`` attributes works as params.

References:
    1. Cadez, Smyth, Ip & Mannila (2001), Predictive profiles for transaction data
       using finite mixture models, UCI technical report 01-67.
    2. Torgerson (1952), Multidimensional scaling: I. Theory and method; Gower
       (1966), the double-centring of squared distances.
"""

from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from latentmix.data.validation import check_nonnegative
from latentmix.models.multinomial_mixture import MultinomialMixtureParams

__all__ = [
    "HouseholdProfiles",
    "ProfileComparison",
    "overall_distribution",
    "category_lift",
    "segment_distribution",
    "top_categories",
    "segment_weights",
    "segment_profiles",
    "l1_distances",
    "classical_mds",
    "segment_map",
    "plot_segment_map",
    "household_indicator",
    "household_profiles",
    "empirical_profiles",
    "profile_l1_error",
    "compare_global_grouped",
    "VisitInstability",
    "visit_instability",
]


class HouseholdProfiles(NamedTuple):
    """Category distributions of households.

    Attributes:
        households: (g,) household ids, sorted.
        profiles: (g, c) rows on the simplex (NaN rows for a household with no lines).
    """

    households: np.ndarray
    profiles: np.ndarray


class ProfileComparison(NamedTuple):
    """Global vs grouped predictive profiles on held-out baskets.

    Attributes:
        table: one row per test household: household, num_baskets, num_lines,
            global_l1, grouped_l1, grouped_better (strictly lower error).
        share_grouped_better: fraction of test households (those with test lines)
            where the grouped model's L1 error is strictly lower (ties count as not
            better).
    """

    table: pd.DataFrame
    share_grouped_better: float


def _unpack_params(params) -> tuple[np.ndarray, np.ndarray]:
    """(weights, probs) of MultinomialMixtureParams or of a (weights, probs) pair."""
    if hasattr(params, "weights") and hasattr(params, "probs"):
        return params.weights, params.probs
    if isinstance(params, tuple) and len(params) == 2:
        return params
    raise TypeError(
        f"params must be MultinomialMixtureParams(weights, probs) or a (weights, "
        f"probs) pair, got {type(params).__name__}"
    )


def _probs_of(params_or_probs) -> np.ndarray:
    probs = getattr(params_or_probs, "probs", params_or_probs)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(
            f"probs must be 2-D with shape (num_components, num_categories), got "
            f"shape {probs.shape}"
        )
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("probs must be finite and >= 0 (rows on the simplex)")
    row_sums = probs.sum(axis=1)
    if not np.allclose(row_sums, 1.0, atol=1e-6):
        worst = int(np.argmax(np.abs(row_sums - 1.0)))
        raise ValueError(
            f"each row of probs should sum to 1, but row {worst} sums to "
            f"{row_sums[worst]:.6f}; normalise with probs / probs.sum(1, keepdims=True)"
        )
    return probs


def _check_resp(resp, num_rows: int | None, num_components: int | None) -> np.ndarray:
    resp = np.asarray(resp, dtype=np.float64)
    if resp.ndim != 2 or resp.shape[1] != (num_components or resp.shape[1]):
        expected = "num_components" if num_components is None else num_components
        raise ValueError(
            f"resp must have shape (num_baskets, {expected}), got {resp.shape}"
        )
    if num_rows is not None and resp.shape[0] != num_rows:
        raise ValueError(
            f"resp has {resp.shape[0]} rows but there are {num_rows} baskets; pass the "
            f"responsibilities of the same baskets, in the same order"
        )
    if not np.all(np.isfinite(resp)) or np.any(resp < 0):
        raise ValueError(
            "resp must be finite and >= 0; pass probabilities, not log "
            "responsibilities (use np.exp(log_resp))"
        )
    if not np.allclose(resp.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError(
            "each row of resp should sum to 1; pass probabilities, not log "
            "responsibilities (use np.exp(log_resp))"
        )
    return resp


def _column_sums(counts) -> np.ndarray:
    if sp.issparse(counts):
        return np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
    return np.asarray(counts, dtype=np.float64).sum(axis=0)


def _row_sums(counts) -> np.ndarray:
    if sp.issparse(counts):
        return np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    return np.asarray(counts, dtype=np.float64).sum(axis=1)


def overall_distribution(counts) -> np.ndarray:
    """P(c) = sum_i x_ic / sum_ic x_ic: each category's share of all lines.

    This is the empirical marginal the reference divided by. The model's own
    marginal per *basket*, sum_k alpha_k probs_k, weights segments by baskets, not
    by lines, and differs when segments differ in basket size.

    Args:
        counts: (n, c) dense or sparse counts, or a (c,) vector of category totals.
    """
    totals = (
        np.asarray(counts, dtype=np.float64)
        if not sp.issparse(counts) and np.ndim(counts) == 1
        else _column_sums(counts)
    )
    if not np.all(np.isfinite(totals)) or np.any(totals < 0) or totals.sum() <= 0:
        raise ValueError(
            "counts must be finite, >= 0 and not all zero to define P(category)"
        )
    return totals / totals.sum()


def category_lift(probs, overall) -> np.ndarray:
    """lift_kc = P(c | k) / P(c), shape (k, c).

    Args:
        probs: (k, c) segment probabilities, or params with a ``probs`` field.
        overall: P(c) as a (c,) distribution or category totals, or an (n, c)
            count matrix (dense or sparse) whose line shares define P(c).

    Returns:
        (k, c) lifts; NaN for a category with P(c) = 0 (lift undefined).
    """
    probs = _probs_of(probs)
    overall = overall_distribution(overall)
    if overall.shape != (probs.shape[1],):
        raise ValueError(
            f"overall has {overall.shape[0]} categories but probs has "
            f"{probs.shape[1]}; both must index the same categories"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            overall > 0, probs / np.where(overall > 0, overall, 1.0), np.nan
        )


def segment_distribution(resp, counts) -> np.ndarray:
    """P(c | k) = sum_i gamma_ik x_ic / sum_i gamma_ik n_i from responsibilities.

    On the counts the model was fitted to this is the M-step of ``probs``; on a
    finer matrix of the same baskets (``level="product_type"``) it gives the
    product-level profiles the reference ranked by lift. The reference divided by
    sum_i gamma_ik (baskets) instead of sum_i gamma_ik n_i (lines), which scales
    each segment's lifts by its mean basket size; this keeps a distribution.

    Args:
        resp: (n, k) responsibilities of the baskets.
        counts: (n, c) dense or sparse counts of the same baskets.

    Returns:
        (k, c) rows on the simplex (NaN for a segment with no mass).
    """
    resp = _check_resp(resp, counts.shape[0], None)
    weighted = (
        (counts.T @ resp).T
        if sp.issparse(counts)
        else resp.T @ np.asarray(counts, dtype=np.float64)
    )
    return _normalise_rows(np.asarray(weighted, dtype=np.float64))


def _category_names(categories, num_categories: int) -> np.ndarray:
    if categories is None:
        return np.array([str(c) for c in range(num_categories)], dtype=object)
    names = np.asarray(categories, dtype=object)
    if names.shape != (num_categories,):
        raise ValueError(
            f"categories has shape {names.shape} but probs has {num_categories} "
            f"categories"
        )
    return names


def top_categories(
    params: MultinomialMixtureParams,
    categories,
    overall,
    *,
    num_top: int = 10,
    min_support: float = 1e-4,
    min_lift: float = 1.0,
) -> pd.DataFrame:
    """Each segment's categories ranked by lift, after support filters.

    A category is eligible when its overall share P(c) exceeds ``min_support`` (the
    reference kept products with P > 1e-4: a lift over a tiny base rate is noise)
    and its lift is at least ``min_lift``. The ``num_top`` highest lifts per
    segment are kept; ties go to the lower category index.

    Args:
        params: MultinomialMixtureParams, or the (k, c) ``probs`` array.
        categories: (c,) names, or None for "0", "1", ...
        overall: P(c), category totals or a count matrix (see ``category_lift``).

    Returns:
        Long DataFrame: segment, rank (1-based), category, prob (P(c|k)),
        overall (P(c)), lift; sorted by segment then rank.
    """
    probs = _probs_of(params)
    names = _category_names(categories, probs.shape[1])
    if isinstance(num_top, bool) or not isinstance(num_top, int | np.integer):
        raise ValueError(f"num_top must be an integer >= 1, got {num_top!r}")
    if num_top < 1:
        raise ValueError(f"num_top must be an integer >= 1, got {num_top}")
    check_nonnegative("min_support", min_support)
    check_nonnegative("min_lift", min_lift)
    base = overall_distribution(overall)
    lift = category_lift(probs, base)
    eligible = (base > min_support)[None, :] & (lift >= min_lift)
    # Ineligible cells sort last; a stable argsort keeps equal lifts in index order.
    sort_key = np.where(eligible, -lift, np.inf)
    order = np.argsort(sort_key, axis=1, kind="stable")[:, :num_top]
    segment = np.repeat(np.arange(probs.shape[0]), order.shape[1])
    category = order.ravel()
    keep = eligible[segment, category]
    segment, category = segment[keep], category[keep]
    rank = np.concatenate(
        [np.arange(1, n + 1) for n in np.bincount(segment, minlength=probs.shape[0])]
    ).astype(np.int64)
    return pd.DataFrame(
        {
            "segment": segment,
            "rank": rank,
            "category": names[category],
            "prob": probs[segment, category],
            "overall": base[category],
            "lift": lift[segment, category],
        }
    )


def segment_weights(weights) -> np.ndarray:
    """Segment sizes: the weights (k,), or the mean over household rows of (g, k).

    The mean over households is how the reference sized the grouped model's
    segments; it counts every household once, whatever its number of baskets.
    """
    weights = np.asarray(getattr(weights, "weights", weights), dtype=np.float64)
    if weights.ndim == 2:
        weights = weights.mean(axis=0)
    if weights.ndim != 1:
        raise ValueError(f"weights must be (k,) or (g, k), got shape {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights must be finite and >= 0")
    return weights


def segment_profiles(
    params: MultinomialMixtureParams,
    categories,
    overall,
    *,
    resp=None,
    counts=None,
    num_top: int = 5,
    min_support: float = 1e-4,
) -> pd.DataFrame:
    """One row per segment: its weight, basket statistics and top categories.

    ``params`` is MultinomialMixtureParams or a (weights, probs) pair; weights
    (g, k) are averaged over households (``segment_weights``).

    Columns: segment; weight; with ``resp`` (n, k) and ``counts`` (n, c) of the
    training baskets also num_baskets = sum_i gamma_ik and basket_size =
    sum_i gamma_ik n_i / sum_i gamma_ik (the responsibility-weighted mean number
    of lines, n_i = sum_c x_ic); then top_by_lift and top_by_prob, the ``num_top``
    category names joined by ", " (lift ranking as in ``top_categories`` with
    ``min_lift=1``; the probability ranking is unfiltered).
    """
    weights, probs = _unpack_params(params)
    probs = _probs_of(probs)
    names = _category_names(categories, probs.shape[1])
    weights = segment_weights(weights)
    if weights.shape != (probs.shape[0],):
        raise ValueError(
            f"weights describe {weights.shape[0]} segments but probs has "
            f"{probs.shape[0]}"
        )
    table = pd.DataFrame({"segment": np.arange(probs.shape[0]), "weight": weights})
    if (resp is None) != (counts is None):
        raise ValueError("pass resp and counts together (or neither)")
    if resp is not None:
        row_totals = _row_sums(counts)
        resp = _check_resp(resp, row_totals.shape[0], probs.shape[0])
        mass = resp.sum(axis=0)
        table["num_baskets"] = mass
        with np.errstate(invalid="ignore", divide="ignore"):
            table["basket_size"] = (resp.T @ row_totals) / mass
    top = top_categories(
        probs, names, overall, num_top=num_top, min_support=min_support, min_lift=1.0
    )
    by_lift = top.groupby("segment")["category"].agg(", ".join)
    table["top_by_lift"] = by_lift.reindex(table["segment"]).fillna("").to_numpy()
    by_prob = np.argsort(-probs, axis=1, kind="stable")[:, :num_top]
    table["top_by_prob"] = [", ".join(names[row]) for row in by_prob]
    return table


def l1_distances(probs) -> np.ndarray:
    """D_kl = sum_c |probs_kc - probs_lc|, the (k, k) Manhattan distances."""
    probs = _probs_of(probs)
    return np.abs(probs[:, None, :] - probs[None, :, :]).sum(axis=-1)


def classical_mds(distances, *, num_dims: int = 2, weights=None) -> np.ndarray:
    """Classical (Torgerson-Gower) scaling of a distance matrix.

    B = -1/2 J D^(2) J^T with J = I - 1 w^T (w uniform, or the given weights so that
    the weighted centroid sits at the origin); the coordinates are the top
    ``num_dims`` eigenvectors of B scaled by sqrt(eigenvalue), negative
    eigenvalues (a non-Euclidean D, as L1 distances can be) clipped to 0. For a
    Euclidean D the coordinates reproduce D exactly, up to rotation and
    reflection. Signs are fixed so each axis's largest-magnitude coordinate is
    positive, which makes the map deterministic.

    Returns:
        (k, num_dims) coordinates.
    """
    distances = np.asarray(distances, dtype=np.float64)
    num_points = distances.shape[0]
    if distances.ndim != 2 or distances.shape[1] != num_points:
        raise ValueError(f"distances must be square, got shape {distances.shape}")
    if not np.allclose(distances, distances.T) or np.any(np.diag(distances) != 0):
        raise ValueError("distances must be symmetric with a zero diagonal")
    if not 1 <= num_dims <= num_points:
        raise ValueError(
            f"num_dims must be between 1 and the number of points {num_points}, got "
            f"{num_dims}"
        )
    if weights is None:
        centre = np.full(num_points, 1.0 / num_points)
    else:
        centre = segment_weights(weights)
        if centre.shape != (num_points,) or centre.sum() <= 0:
            raise ValueError(
                f"weights must have {num_points} nonnegative entries with a positive "
                f"sum, got shape {centre.shape}"
            )
        centre = centre / centre.sum()
    centring = np.eye(num_points) - np.outer(np.ones(num_points), centre)
    gram = -0.5 * centring @ (distances**2) @ centring.T
    eigenvalues, eigenvectors = np.linalg.eigh((gram + gram.T) / 2)
    top = np.argsort(eigenvalues)[::-1][:num_dims]
    coords = eigenvectors[:, top] * np.sqrt(np.clip(eigenvalues[top], 0.0, None))
    largest = np.argmax(np.abs(coords), axis=0)
    signs = np.sign(coords[largest, np.arange(num_dims)])
    return coords * np.where(signs == 0, 1.0, signs)


def segment_map(probs, weights=None) -> np.ndarray:
    """2-D map of segments: classical MDS of the L1 distances between probs rows.

    The reference drew the same map (sklearn's iterative metric MDS on Manhattan
    distances between beta_k). With ``weights`` (k,) or (g, k) the map is
    centred on the weighted mean segment, the "average basket"; the distances
    are approximated the same way either way.

    Returns:
        (k, 2) coordinates.
    """
    if weights is None and hasattr(probs, "weights"):
        weights = probs.weights
    return classical_mds(l1_distances(probs), num_dims=2, weights=weights)


def plot_segment_map(
    coords, weights, labels=None, ax=None, *, max_size: float = 2000.0
):
    """Scatter the segment map with bubble areas proportional to the weights.

    Args:
        coords: (k, 2) from ``segment_map``.
        weights: (k,) or (g, k) segment weights (colour and bubble area).
        labels: (k,) texts written on the bubbles; default the segment indices.
        ax: matplotlib axes to draw on; a new figure when None.
        max_size: marker area (points^2) of the heaviest segment.

    Returns:
        The matplotlib axes.
    """
    import matplotlib.pyplot as plt

    coords = np.asarray(coords, dtype=np.float64)
    sizes = segment_weights(weights)
    if coords.ndim != 2 or coords.shape != (sizes.shape[0], 2):
        raise ValueError(
            f"coords must have shape ({sizes.shape[0]}, 2) to match the weights, got "
            f"{coords.shape}"
        )
    if labels is None:
        labels = [str(k) for k in range(coords.shape[0])]
    if len(labels) != coords.shape[0]:
        raise ValueError(
            f"labels has {len(labels)} entries for {coords.shape[0]} segments"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    area = max_size * sizes / max(sizes.max(), np.finfo(float).tiny)
    points = ax.scatter(
        coords[:, 0],
        coords[:, 1],
        s=area,
        c=sizes,
        cmap="viridis",
        alpha=0.7,
        edgecolors="black",
        linewidths=0.5,
    )
    for (x, y), label in zip(coords, labels, strict=True):
        ax.annotate(str(label), (x, y), ha="center", va="center", fontsize=8)
    ax.figure.colorbar(points, ax=ax, label="segment weight")
    ax.set_xlabel("MDS 1")
    ax.set_ylabel("MDS 2")
    ax.set_title("Segment map (classical MDS of L1 distances)")
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def household_indicator(
    household_ids, households=None
) -> tuple[np.ndarray, sp.csr_matrix]:
    """The (g, n) 0/1 matrix S with S[h, i] = 1 when basket i belongs to household h.

    S @ values sums any per-basket quantity within households in one sparse product.

    Args:
        household_ids: (n,) household of each basket.
        households: the row labels of S; default the sorted distinct ids. Every
            id must be among them.

    Returns:
        (households, S).
    """
    household_ids = np.asarray(household_ids)
    if households is None:
        households, rows = np.unique(household_ids, return_inverse=True)
    else:
        households = np.asarray(households)
        rows = pd.Index(households).get_indexer(household_ids)
        if np.any(rows < 0):
            unknown = np.unique(household_ids[rows < 0])
            raise ValueError(
                f"{unknown.size} household id(s) are not among `households`, e.g. "
                f"{unknown[:5].tolist()}"
            )
    num_baskets = household_ids.shape[0]
    indicator = sp.csr_matrix(
        (np.ones(num_baskets), (rows, np.arange(num_baskets))),
        shape=(households.shape[0], num_baskets),
    )
    return households, indicator


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.where(totals > 0, totals, 1.0), np.nan)


def household_profiles(
    probs,
    *,
    resp=None,
    household_ids=None,
    group_weights=None,
    households=None,
) -> HouseholdProfiles:
    """Predictive category distribution of each household.

    Global model (``resp`` (n, k) and ``household_ids`` (n,) of the training
    baskets):

        profile_h ∝ sum_{i in h} sum_k gamma_ik probs_k = |B_h| sum_k gbar_hk probs_k,

    with gbar_h the household's mean responsibility, which is also the grouped
    model's M-step weight. The reference multiplied gamma_ik by alpha_k again;
    gamma already contains alpha (gamma_ik ∝ alpha_k Mult(x_i | probs_k)), so that
    counted the prior twice and is not repeated here.

    Grouped model (``group_weights`` (g, k), rows labelled by ``households``):

        profile_h = sum_k w_hk probs_k      (Cadez et al. 2001).

    Args:
        probs: (k, c) or params with a ``probs`` field.

    Returns:
        HouseholdProfiles(households sorted, profiles (g, c)).
    """
    probs = _probs_of(probs)
    if (resp is None) == (group_weights is None):
        raise ValueError(
            "pass either resp with household_ids (global model) or group_weights "
            "with households (grouped model)"
        )
    if resp is not None:
        if household_ids is None:
            raise ValueError("resp needs household_ids, the household of each basket")
        household_ids = np.asarray(household_ids)
        resp = _check_resp(resp, household_ids.shape[0], probs.shape[0])
        labels, indicator = household_indicator(household_ids)
        mixing = np.asarray(indicator @ resp)
    else:
        group_weights = np.asarray(
            getattr(group_weights, "weights", group_weights), dtype=np.float64
        )
        if group_weights.ndim != 2 or group_weights.shape[1] != probs.shape[0]:
            raise ValueError(
                f"group_weights must have shape (num_households, {probs.shape[0]}), "
                f"got {group_weights.shape}"
            )
        if households is None:
            raise ValueError("group_weights needs households, the label of each row")
        labels = np.asarray(households)
        if labels.shape != (group_weights.shape[0],):
            raise ValueError(
                f"households has shape {labels.shape} but group_weights has "
                f"{group_weights.shape[0]} rows"
            )
        if np.unique(labels).size != labels.size:
            raise ValueError("households must not contain duplicate ids")
        order = np.argsort(labels, kind="stable")
        labels, mixing = labels[order], group_weights[order]
    return HouseholdProfiles(labels, _normalise_rows(mixing @ probs))


def empirical_profiles(counts, household_ids) -> HouseholdProfiles:
    """Each household's category shares over its baskets: S X row-normalised."""
    household_ids = np.asarray(household_ids)
    if counts.shape[0] != household_ids.shape[0]:
        raise ValueError(
            f"counts has {counts.shape[0]} rows but household_ids has "
            f"{household_ids.shape[0]}"
        )
    labels, indicator = household_indicator(household_ids)
    totals = indicator @ (counts if sp.issparse(counts) else np.asarray(counts, float))
    totals = totals.toarray() if sp.issparse(totals) else np.asarray(totals)
    return HouseholdProfiles(labels, _normalise_rows(totals.astype(np.float64)))


def profile_l1_error(profile, test_counts) -> np.ndarray:
    """L1 distance sum_c |profile_hc - y_hc / sum_c' y_hc'| per household.

    Args:
        profile: (g, c) predicted category distributions.
        test_counts: (g, c) held-out category counts of the same households, in
            the same order (dense or sparse).

    Returns:
        (g,) errors in [0, 2]; NaN for a household without test lines.
    """
    profile = np.asarray(profile, dtype=np.float64)
    test = (
        test_counts.toarray() if sp.issparse(test_counts) else np.asarray(test_counts)
    )
    if profile.shape != test.shape:
        raise ValueError(
            f"profile has shape {profile.shape} but test_counts has {test.shape}; "
            f"rows must be the same households in the same order"
        )
    return np.abs(profile - _normalise_rows(test.astype(np.float64))).sum(axis=1)


def _align(
    profiles: HouseholdProfiles, households: np.ndarray, name: str
) -> np.ndarray:
    rows = pd.Index(profiles.households).get_indexer(households)
    if np.any(rows < 0):
        missing = households[rows < 0]
        raise ValueError(
            f"{missing.size} test household(s) have no {name} profile, e.g. "
            f"{missing[:5].tolist()}; drop test baskets of households unseen in "
            f"training (split_by_time does)"
        )
    return profiles.profiles[rows]


def compare_global_grouped(
    global_profiles: HouseholdProfiles,
    grouped_profiles: HouseholdProfiles,
    test_counts,
    test_household_ids,
) -> ProfileComparison:
    """Per-household L1 errors of both models on held-out baskets (article 4.7).

    Each test household's empirical category distribution (its test lines, summed
    over its test baskets) is compared with both predicted profiles; the share of
    households where the grouped model's error is strictly lower is the
    reference's 61.6% statistic.
    """
    households, empirical = empirical_profiles(test_counts, test_household_ids)
    _, indicator = household_indicator(test_household_ids, households)
    global_error = np.abs(
        _align(global_profiles, households, "global") - empirical
    ).sum(1)
    grouped_error = np.abs(
        _align(grouped_profiles, households, "grouped") - empirical
    ).sum(1)
    table = pd.DataFrame(
        {
            "household": households,
            "num_baskets": np.asarray(indicator.sum(axis=1)).ravel().astype(np.int64),
            "num_lines": np.asarray(indicator @ _row_sums(test_counts)).ravel(),
            "global_l1": global_error,
            "grouped_l1": grouped_error,
            "grouped_better": grouped_error < global_error,
        }
    )
    # A household whose test baskets hold no lines has no empirical distribution.
    scored = np.isfinite(global_error) & np.isfinite(grouped_error)
    if not scored.any():
        raise ValueError("no test household has any lines to compare profiles on")
    share = float(np.mean(table["grouped_better"].to_numpy()[scored]))
    return ProfileComparison(table, share)


class VisitInstability(NamedTuple):
    """How stable the basket-level segments of a household's visits are.

    switch_share: share of successive visit pairs of one household (rows i-1, i
        of the same household) whose most likely segments differ.
    num_pairs: number of such pairs (sum over households of visits - 1).
    mean_max_responsibility: mean over baskets of max_k gamma_ik (1 when every
        basket is assigned with certainty).
    """

    switch_share: float
    num_pairs: int
    mean_max_responsibility: float


def visit_instability(resp, household_ids) -> VisitInstability:
    """Share of successive visits of a household that switch segment (article 4.6).

    Rows must list each household's baskets together and in time order (as
    ``data.shoppers`` does). With labels l_i = argmax_k gamma_ik (ties to the
    lowest k) and P the set of neighbouring pairs (i-1, i) of one household:

        switch_share = |{(i-1, i) in P : l_i != l_{i-1}}| / |P|

    Raises ValueError when a household's rows are not contiguous (the pairs
    would not be successive visits) or when no household has two visits.
    """
    household_ids = np.asarray(household_ids)
    resp = _check_resp(resp, household_ids.shape[0], None)
    change = household_ids[1:] != household_ids[:-1]
    starts = household_ids[np.r_[True, change]]
    if np.unique(starts).size != starts.size:
        raise ValueError(
            "each household's baskets must be contiguous rows (sorted by household, "
            "then time), so that neighbouring rows are successive visits"
        )
    same = ~change
    if not same.any():
        raise ValueError("no household has two visits: nothing to compare")
    labels = resp.argmax(axis=1)
    switched = labels[1:] != labels[:-1]
    return VisitInstability(float(switched[same].mean()), int(same.sum()),
                            float(resp.max(axis=1).mean()))
