"""Segment interpretation: lift, profiles, MDS map and household predictive profiles,
each checked against brute-force loops, hand computations, or scikit-learn."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.figure import Figure
from scipy.spatial.distance import cdist, pdist, squareform
from sklearn.manifold import ClassicalMDS

from latentmix.inference.segments import (
    HouseholdProfiles,
    category_lift,
    classical_mds,
    compare_global_grouped,
    empirical_profiles,
    household_profiles,
    l1_distances,
    overall_distribution,
    plot_segment_map,
    profile_l1_error,
    segment_distribution,
    segment_map,
    segment_profiles,
    segment_weights,
    top_categories,
)
from latentmix.models.multinomial_mixture import MultinomialMixtureParams

# Sums of at most a few hundred float64 terms: exact comparisons to 1e-12.
EXACT = 1e-12


def _random_problem(seed=0, num_components=4, num_categories=9, num_baskets=60):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(num_categories, 0.5), size=num_components)
    weights = rng.dirichlet(np.ones(num_components))
    counts = rng.poisson(1.5, size=(num_baskets, num_categories))
    counts[counts.sum(1) == 0, 0] = 1
    resp = rng.dirichlet(np.full(num_components, 0.3), size=num_baskets)
    households = rng.choice([7, 3, 11, 5, 20], size=num_baskets)
    names = np.array([f"cat{c}" for c in range(num_categories)], dtype=object)
    return MultinomialMixtureParams(weights, probs), counts, resp, households, names


def test_lift_against_loops():
    params, counts, *_ = _random_problem()
    lift = category_lift(params, sp.csr_matrix(counts))
    total = counts.sum()
    for k in range(params.probs.shape[0]):
        for c in range(params.probs.shape[1]):
            overall = counts[:, c].sum() / total
            assert abs(lift[k, c] - params.probs[k, c] / overall) < EXACT * lift[k, c]
    # a distribution, category totals and the count matrix define the same P(c)
    np.testing.assert_allclose(category_lift(params.probs, counts.sum(0)), lift)
    np.testing.assert_allclose(overall_distribution(counts), counts.sum(0) / total)


def test_segment_distribution_against_loops():
    _, counts, resp, _, _ = _random_problem(seed=10)
    result = segment_distribution(resp, sp.csr_matrix(counts))
    for k in range(resp.shape[1]):
        lines = sum(resp[i, k] * counts[i] for i in range(len(counts)))
        np.testing.assert_allclose(result[k], lines / lines.sum(), rtol=1e-12)
    np.testing.assert_allclose(segment_distribution(resp, counts), result, rtol=1e-12)
    with pytest.raises(ValueError, match="resp has 60 rows but there are 59"):
        segment_distribution(resp, counts[1:])


def test_lift_undefined_for_unseen_category():
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    lift = category_lift(probs, np.array([3, 1, 0]))
    np.testing.assert_allclose(
        lift[:, :2], [[0.5 / 0.75, 0.5 / 0.25], [0.2 / 0.75, 1.2]]
    )
    assert np.isnan(lift[:, 2]).all()


def _brute_force_top(probs, counts, names, num_top, min_support, min_lift):
    overall = counts.sum(0) / counts.sum()
    rows = []
    for k in range(probs.shape[0]):
        kept = []
        for c in range(probs.shape[1]):
            lift = probs[k, c] / overall[c]
            if overall[c] > min_support and lift >= min_lift:
                kept.append((-lift, c))
        for rank, (negative_lift, c) in enumerate(sorted(kept)[:num_top], start=1):
            rows.append((k, rank, names[c], probs[k, c], overall[c], -negative_lift))
    return pd.DataFrame(
        rows, columns=["segment", "rank", "category", "prob", "overall", "lift"]
    )


@pytest.mark.parametrize(
    "num_top, min_support, min_lift", [(3, 1e-4, 1.0), (10, 0.08, 1.2), (2, 0.0, 0.0)]
)
def test_top_categories_against_brute_force(num_top, min_support, min_lift):
    params, counts, _, _, names = _random_problem(seed=1)
    table = top_categories(
        params,
        names,
        counts,
        num_top=num_top,
        min_support=min_support,
        min_lift=min_lift,
    )
    expected = _brute_force_top(
        params.probs, counts, names, num_top, min_support, min_lift
    )
    pd.testing.assert_frame_equal(
        table.reset_index(drop=True), expected, check_dtype=False, rtol=EXACT
    )


def test_top_categories_support_filter_drops_rare_category():
    # category 2 has the highest lift in segment 0 but only 1 line in 10,001
    probs = np.array([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    overall = np.array([5000, 5000, 1])
    table = top_categories(probs, ["a", "b", "c"], overall, min_support=1e-3)
    assert "c" not in set(table["category"])
    relaxed = top_categories(probs, ["a", "b", "c"], overall, min_support=0.0)
    assert relaxed.iloc[0]["category"] == "c"


def test_segment_profiles_against_loops():
    params, counts, resp, _, names = _random_problem(seed=2)
    table = segment_profiles(params, names, counts, resp=resp, counts=counts, num_top=3)
    sizes = counts.sum(1)
    for k in range(params.probs.shape[0]):
        row = table.iloc[k]
        assert row["weight"] == params.weights[k]
        mass = sum(resp[i, k] for i in range(len(counts)))
        size = sum(resp[i, k] * sizes[i] for i in range(len(counts))) / mass
        assert abs(row["num_baskets"] - mass) < EXACT * mass
        assert abs(row["basket_size"] - size) < EXACT * size
        by_prob = sorted(range(len(names)), key=lambda c: -params.probs[k, c])[:3]
        assert row["top_by_prob"] == ", ".join(names[by_prob])
        top = _brute_force_top(params.probs, counts, names, 3, 1e-4, 1.0)
        assert row["top_by_lift"] == ", ".join(top[top["segment"] == k]["category"])

    # grouped weights (g, k): segments sized by the mean over households
    grouped = MultinomialMixtureParams(
        np.random.default_rng(3).dirichlet(np.ones(4), size=5), params.probs
    )
    table = segment_profiles(grouped, names, counts)
    np.testing.assert_allclose(table["weight"], grouped.weights.mean(0), rtol=EXACT)
    assert "basket_size" not in table


def test_segment_profiles_bad_input():
    params, counts, resp, _, names = _random_problem()
    with pytest.raises(ValueError, match="pass resp and counts together"):
        segment_profiles(params, names, counts, resp=resp)
    with pytest.raises(ValueError, match="not log"):
        segment_profiles(params, names, counts, resp=np.log(resp), counts=counts)
    with pytest.raises(ValueError, match="resp has 59 rows but there are 60"):
        segment_profiles(params, names, counts, resp=resp[1:], counts=counts)
    with pytest.raises(ValueError, match="row 1 sums to"):
        segment_profiles(
            (params.weights, params.probs * [[1], [2], [1], [1]]), names, counts
        )
    with pytest.raises(ValueError, match="categories has shape"):
        top_categories(params, names[:-1], counts)
    with pytest.raises(ValueError, match="min_support"):
        top_categories(params, names, counts, min_support=-1.0)
    with pytest.raises(TypeError, match="MultinomialMixtureParams"):
        segment_profiles(params.probs, names, counts)


def test_l1_distances_match_scipy():
    params, *_ = _random_problem(num_components=6)
    np.testing.assert_allclose(
        l1_distances(params), cdist(params.probs, params.probs, "cityblock"), rtol=EXACT
    )


def test_classical_mds_recovers_planar_geometry():
    points = np.random.default_rng(4).normal(size=(7, 2)) * [3.0, 1.0]
    distances = squareform(pdist(points))
    coords = classical_mds(distances)
    # exact Euclidean distances in 2-D are reproduced up to rotation/reflection;
    # eigh is accurate to ~1e-15 relative on this 7 x 7 matrix
    np.testing.assert_allclose(squareform(pdist(coords)), distances, atol=1e-10)
    # weighted centring moves the origin to the weighted centroid, nothing else
    weights = np.array([5.0, 1, 1, 1, 1, 1, 2])
    weighted = classical_mds(distances, weights=weights)
    np.testing.assert_allclose(weights @ weighted, 0.0, atol=1e-10)
    np.testing.assert_allclose(squareform(pdist(weighted)), distances, atol=1e-10)


def test_segment_map_matches_sklearn_classical_mds():
    # L1 distances between simplex rows are not Euclidean; scikit-learn's
    # ClassicalMDS (the same eigen-decomposition) is the reference, up to axis signs
    params, *_ = _random_problem(seed=5, num_components=8)
    coords = segment_map(params.probs)
    reference = ClassicalMDS(n_components=2, metric="precomputed").fit_transform(
        l1_distances(params.probs)
    )
    signs = np.sign(np.sum(coords * reference, axis=0))
    np.testing.assert_allclose(coords, reference * signs, atol=1e-10)


def test_segment_map_on_a_line():
    # rows (t, 1 - t): L1 distance 2|t - s|, a 1-D geometry: first axis recovers
    # 2 t up to shift and sign, the second is zero
    t = np.array([0.1, 0.25, 0.3, 0.7, 0.95])
    coords = segment_map(np.column_stack([t, 1 - t]))
    np.testing.assert_allclose(
        np.abs(coords[:, 0] - coords[0, 0]), 2 * (t - t[0]), atol=1e-12
    )
    np.testing.assert_allclose(coords[:, 1], 0.0, atol=1e-7)


def test_classical_mds_bad_input():
    with pytest.raises(ValueError, match="square"):
        classical_mds(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        classical_mds(np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="num_dims"):
        classical_mds(np.zeros((2, 2)), num_dims=3)


def test_plot_segment_map_bubble_areas():
    params, *_ = _random_problem(num_components=5)
    coords = segment_map(params)
    # a pyplot-free figure, so the test needs no display backend
    ax = Figure().subplots()
    returned = plot_segment_map(
        coords, params.weights, labels=list("abcde"), ax=ax, max_size=1000.0
    )
    assert returned is ax
    sizes = ax.collections[0].get_sizes()
    np.testing.assert_allclose(
        sizes, 1000.0 * params.weights / params.weights.max(), rtol=EXACT
    )
    assert [t.get_text() for t in ax.texts] == list("abcde")
    with pytest.raises(ValueError, match="labels has 2 entries"):
        plot_segment_map(coords, params.weights, labels=["a", "b"], ax=ax)


def test_global_household_profiles_against_loops():
    params, counts, resp, households, _ = _random_problem(seed=6)
    result = household_profiles(params, resp=resp, household_ids=households)
    np.testing.assert_array_equal(result.households, np.unique(households))
    for row, household in enumerate(result.households):
        profile = np.zeros(params.probs.shape[1])
        for i in np.flatnonzero(households == household):
            for k in range(params.probs.shape[0]):
                profile += resp[i, k] * params.probs[k]
        np.testing.assert_allclose(
            result.profiles[row], profile / profile.sum(), rtol=1e-12
        )

    # identity: the global profile is the grouped formula at the household's mean
    # responsibilities (the grouped model's M-step weights)
    mean_resp = np.stack([resp[households == h].mean(0) for h in result.households])
    grouped = household_profiles(
        params.probs, group_weights=mean_resp, households=result.households
    )
    np.testing.assert_allclose(grouped.profiles, result.profiles, rtol=1e-12)


def test_grouped_household_profiles_against_loops():
    params, *_ = _random_problem(seed=7)
    rng = np.random.default_rng(8)
    labels = np.array([30, 10, 20])
    weights = rng.dirichlet(np.ones(4), size=3)
    result = household_profiles(params, group_weights=weights, households=labels)
    np.testing.assert_array_equal(result.households, [10, 20, 30])
    for row, household in enumerate(result.households):
        source = int(np.flatnonzero(labels == household)[0])
        expected = sum(weights[source, k] * params.probs[k] for k in range(4))
        np.testing.assert_allclose(result.profiles[row], expected, rtol=1e-12)


def test_household_profiles_bad_input():
    params, _, resp, households, _ = _random_problem()
    with pytest.raises(ValueError, match="either resp"):
        household_profiles(params)
    with pytest.raises(ValueError, match="needs household_ids"):
        household_profiles(params, resp=resp)
    with pytest.raises(ValueError, match="households must not contain duplicate"):
        household_profiles(
            params, group_weights=np.full((2, 4), 0.25), households=[1, 1]
        )
    with pytest.raises(ValueError, match=r"shape \(num_households, 4\)"):
        household_profiles(
            params, group_weights=np.full((2, 3), 1 / 3), households=[1, 2]
        )


def test_profile_l1_error_by_hand():
    profile = np.array([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3], [0.2, 0.2, 0.6]])
    test_counts = sp.csr_matrix(np.array([[2, 1, 1], [0, 0, 4], [0, 0, 0]]))
    errors = profile_l1_error(profile, test_counts)
    # |0.5-0.5| + |0.3-0.25| + |0.2-0.25| = 0.1;  1/3 + 1/3 + 2/3 = 4/3;  no lines
    np.testing.assert_allclose(errors[:2], [0.1, 4 / 3], rtol=1e-14)
    assert np.isnan(errors[2])
    with pytest.raises(ValueError, match="same households in the same order"):
        profile_l1_error(profile[:2], test_counts)


def test_compare_global_grouped_by_hand():
    global_profiles = HouseholdProfiles(
        np.array([1, 2, 3, 4]),
        np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0]]),
    )
    grouped_profiles = HouseholdProfiles(
        np.array([4, 3, 2, 1]),  # other order: rows are matched by household id
        np.array([[0.0, 1.0, 0.0], [0.2, 0.2, 0.6], [0.2, 0.4, 0.4], [0.6, 0.4, 0.0]]),
    )
    # household 1 has two test baskets, households 2 and 3 one each, 4 none
    test_counts = sp.csr_matrix(np.array([[3, 0, 0], [0, 1, 0], [0, 2, 2], [1, 1, 2]]))
    test_households = np.array([1, 1, 2, 3])
    result = compare_global_grouped(
        global_profiles, grouped_profiles, test_counts, test_households
    )
    # household 1: empirical (0.75, 0.25, 0); global 0.25 + 0.25 = 0.5;
    #   grouped 0.15 + 0.15 = 0.3 -> better
    # household 2: empirical (0, 0.5, 0.5); both (0.2, 0.4, 0.4): 0.4 -> tie
    # household 3: empirical (0.25, 0.25, 0.5); global 0.15 + 0.15 + 0.3 = 0.6;
    #   grouped 0.05 + 0.05 + 0.1 = 0.2 -> better; household 4 has no test basket
    table = result.table
    np.testing.assert_array_equal(table["household"], [1, 2, 3])
    np.testing.assert_array_equal(table["num_baskets"], [2, 1, 1])
    np.testing.assert_array_equal(table["num_lines"], [4, 4, 4])
    # three float64 subtractions and sums: a few ulps
    np.testing.assert_allclose(table["global_l1"], [0.5, 0.4, 0.6], rtol=1e-13)
    np.testing.assert_allclose(table["grouped_l1"], [0.3, 0.4, 0.2], rtol=1e-13)
    np.testing.assert_array_equal(table["grouped_better"], [True, False, True])
    assert result.share_grouped_better == pytest.approx(2 / 3, rel=1e-15)

    unseen = np.array([1, 1, 2, 9])
    with pytest.raises(ValueError, match="1 test household.*no global profile.*9"):
        compare_global_grouped(global_profiles, grouped_profiles, test_counts, unseen)


def test_empirical_profiles_and_vectorised_comparison_at_scale():
    # 2,000 households, 20,000 baskets: the sparse household sums against a pandas
    # groupby, and the share against profile_l1_error on the groupby totals
    rng = np.random.default_rng(9)
    num_baskets, num_categories, num_components = 20_000, 30, 5
    counts = sp.random(
        num_baskets,
        num_categories,
        density=0.2,
        format="csr",
        rng=rng,
        data_rvs=lambda n: rng.integers(1, 4, n),
    )
    counts = counts[np.asarray(counts.sum(1)).ravel() > 0]
    households = rng.integers(0, 2000, counts.shape[0])
    empirical = empirical_profiles(counts, households)
    frame = pd.DataFrame(counts.toarray()).groupby(households).sum()
    np.testing.assert_allclose(
        empirical.profiles, frame.div(frame.sum(axis=1), axis=0).to_numpy(), rtol=1e-12
    )
    probs = rng.dirichlet(np.ones(num_categories), size=num_components)
    resp = rng.dirichlet(np.ones(num_components), size=counts.shape[0])
    global_profiles = household_profiles(probs, resp=resp, household_ids=households)
    grouped_profiles = household_profiles(
        probs,
        group_weights=rng.dirichlet(
            np.ones(num_components), size=empirical.households.size
        ),
        households=empirical.households,
    )
    result = compare_global_grouped(
        global_profiles, grouped_profiles, counts, households
    )
    assert result.table.shape[0] == empirical.households.size
    expected_share = np.mean(
        profile_l1_error(grouped_profiles.profiles, frame.to_numpy())
        < profile_l1_error(global_profiles.profiles, frame.to_numpy())
    )
    assert result.share_grouped_better == expected_share


def test_segment_weights():
    np.testing.assert_allclose(
        segment_weights(np.array([[0.2, 0.8], [0.6, 0.4]])), [0.4, 0.6]
    )
    with pytest.raises(ValueError, match="finite and >= 0"):
        segment_weights(np.array([0.5, -0.1]))


# --- checklist items 21-22: by hand -------------------------------------------------


def test_visit_instability_by_hand():
    from latentmix.inference.segments import visit_instability

    # Household 7: visits labelled 0, 0, 1, 1 -> pairs (0,0) (0,1) (1,1): 1 switch.
    # Household 3: visits 2, 0 -> 1 switch. Household 9: one visit, no pair.
    # 2 switches out of 4 pairs; mean of the row maxima (0.9+0.6+0.5+0.8+0.7+1+0.4)/7.
    resp = np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3],
                     [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [1.0, 0.0, 0.0],
                     [0.4, 0.3, 0.3]])
    households = np.array([7, 7, 7, 7, 3, 3, 9])
    result = visit_instability(resp, households)
    assert result.num_pairs == 4
    assert result.switch_share == 2 / 4
    np.testing.assert_allclose(result.mean_max_responsibility, 4.9 / 7, rtol=1e-15)


def test_visit_instability_needs_contiguous_households():
    from latentmix.inference.segments import visit_instability

    resp = np.eye(2)[[0, 1, 0]]
    with pytest.raises(ValueError, match="contiguous"):
        visit_instability(resp, np.array([1, 2, 1]))
    with pytest.raises(ValueError, match="no household has two visits"):
        visit_instability(np.eye(2), np.array([1, 2]))


def test_household_profiles_by_hand():
    """Two segments over three categories, probs p_0 = (1/2, 1/2, 0) and
    p_1 = (0, 1/4, 3/4).

    Global model: household 5 has baskets with gamma (1, 0) and (1/2, 1/2):
    sum_i sum_k gamma_ik p_k = p_0 + (p_0 + p_1)/2 = (3/4, 7/8, 3/8), total 2,
    so the profile is (3/8, 7/16, 3/16). Household 8 has one basket with
    gamma (0, 1): its profile is p_1.
    Grouped model: weights (1/4, 3/4) give 1/4 p_0 + 3/4 p_1 = (1/8, 5/16, 9/16).
    """
    probs = np.array([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])
    resp = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    result = household_profiles(probs, resp=resp, household_ids=np.array([5, 5, 8]))
    np.testing.assert_array_equal(result.households, [5, 8])
    np.testing.assert_allclose(result.profiles, [[3 / 8, 7 / 16, 3 / 16],
                                                 [0.0, 0.25, 0.75]], rtol=1e-15)
    grouped = household_profiles(probs, group_weights=np.array([[0.25, 0.75]]),
                                 households=np.array([42]))
    np.testing.assert_allclose(grouped.profiles, [[1 / 8, 5 / 16, 9 / 16]],
                               rtol=1e-15)
    # L1 error against held-out lines (2, 1, 1) of household 42: shares
    # (1/2, 1/4, 1/4), |1/8-1/2| + |5/16-1/4| + |9/16-1/4| = 3/8 + 1/16 + 5/16 = 3/4.
    np.testing.assert_allclose(profile_l1_error(grouped.profiles, [[2, 1, 1]]),
                               [0.75], rtol=1e-15)
