"""Multinomial-mixture EM beyond one device (issue 6): sharded, out of core, swept.

Every test compares two routes to the *same* EM iterates: the single-device,
in-memory, one-K-at-a-time fit (itself checked against an independent NumPy/scipy
reference in tests/test_em_multinomial_mixture.py) and the scaled route. The
routes differ only in how the row sums N_k, S_kc and the objective are added up:

* sharded: per-device partial sums plus an all-reduce;
* out of core: per-chunk sums, and unfolded rows instead of folded ones;
* one-program sweep: components padded with masked ones whose terms are exact
  zeros, and K_max-wide reductions.

So the results agree to float64 rounding. Tolerances: a mean over ~10^3 terms of
size ~10 reordered moves by ~1e-16 * 10 * sqrt(10^3), a few 1e-14 (observed: up
to 1e-14 on the objective and 4e-16 on the parameters). EM is a contraction near
its fixed point, so these do not grow over iterations; 1e-12 on parameters and
objectives leaves two orders of magnitude of margin while still catching any
real difference (a wrong statistic moves parameters by >= 1e-6 here). The same
start and tolerance then give the same num_iters, since the stopping rule's
deltas sit far (>1e-9) from tol at the stopping iteration.

conftest.py forces 4 CPU host devices and float64.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latentmix.data.chunks import (
    chunks_from_array,
    chunks_from_factory,
    chunks_from_npy,
    chunks_from_parquet,
)
from latentmix.data.simulate_counts import sample_multinomial_mixture
from latentmix.data.validation import DataWarning
from latentmix.inference.em import (
    ConvergenceWarning,
    MultinomialMixtureParams,
    MultinomialMixturePrior,
    fit_multinomial_mixture,
    fit_multinomial_mixture_chunked,
    fit_multinomial_mixture_restarts,
    fit_multinomial_mixture_sweep,
)
from latentmix.inference.em.driver import AllRestartsFailedError
from latentmix.inference.em.multinomial_mixture import summarise_chunks
from latentmix.inference.em.multinomial_mixture.checks import check_prior
from latentmix.inference.em.multinomial_mixture.chunked import accumulate, advance
from latentmix.inference.em.multinomial_mixture.counts import (
    device_data,
    prepare_counts,
    size_bucket,
)
from latentmix.inference.em.multinomial_mixture.restarts import (
    random_starts,
    run_restarts,
)
from latentmix.inference.em.multinomial_mixture.sweep import padded_starts, run_sweep
from latentmix.inference.selection import select_num_components_multinomial
from latentmix.inference.sharding import replicate

TOL = 1e-12  # float64 summation-order noise, see the module docstring


def simulate(seed, num_rows=400, num_categories=6, num_components=3):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(num_categories, 0.5), size=num_components)
    weights = rng.dirichlet(np.full(num_components, 3.0))
    counts, _ = sample_multinomial_mixture(
        weights, probs, rng.poisson(8, size=num_rows) + 1, rng_key=jax.random.key(seed)
    )
    return counts


def start(seed, num_components, num_categories):
    rng = np.random.default_rng(seed)
    return MultinomialMixtureParams(
        rng.dirichlet(np.full(num_components, 5.0)),
        rng.dirichlet(np.full(num_categories, 5.0), size=num_components),
    )


def assert_same_fit(a, b, atol=TOL, same_iters=True):
    np.testing.assert_allclose(a.params.weights, b.params.weights, rtol=0, atol=atol)
    np.testing.assert_allclose(a.params.probs, b.params.probs, rtol=0, atol=atol)
    np.testing.assert_allclose(float(a.log_likelihood), float(b.log_likelihood),
                               rtol=atol)
    if same_iters:
        assert int(a.num_iters) == int(b.num_iters)
        assert bool(a.converged) == bool(b.converged)
        iters = int(a.num_iters)
        np.testing.assert_allclose(a.trace[:iters], b.trace[:iters], rtol=atol)
        assert np.all(np.isnan(np.asarray(b.trace[iters:])))


# ----------------------------------------------------------------------------
# Data-parallel EM over the 4 forced host devices
# ----------------------------------------------------------------------------


def test_four_host_devices_are_available():
    assert len(jax.devices()) == 4, "tests/conftest.py forces 4 host devices"


@pytest.mark.parametrize("grouped", [False, True], ids=["global", "grouped"])
@pytest.mark.parametrize("prior", [None, MultinomialMixturePrior(1.5, 1.2)],
                         ids=["ml", "map"])
def test_sharded_fit_equals_single_device_fit(grouped, prior, rng_key):
    counts = simulate(0)
    # 7 groups: the segment sum over group codes runs on row-sharded codes.
    groups = np.random.default_rng(1).integers(0, 7, len(counts)) if grouped else None
    options = dict(groups=groups, prior=prior, num_restarts=2, rng_key=rng_key,
                   tol=1e-9)
    single = fit_multinomial_mixture(counts, 3, **options)
    sharded = fit_multinomial_mixture(counts, 3, devices=4, **options)
    assert_same_fit(single, sharded)
    if grouped or prior is not None:
        return
    # Three devices do not divide the size bucket: more zero-weight padding.
    three = fit_multinomial_mixture(counts, 3, devices=jax.devices()[1:], **options)
    assert_same_fit(single, three)


def test_sharded_rows_are_split_and_reduced_not_gathered():
    """The compiled program keeps rows on their device: all-reduces, no gathers."""
    counts = simulate(2)
    prepared = prepare_counts(counts, None, True)
    devices = jax.devices()
    data = device_data(
        prepared.folded, "dense", prepared.num_rows, 0.0, jnp.float64, devices
    )
    matrix = data.counts.matrix
    assert {shard.data.shape[0] for shard in matrix.addressable_shards} == {
        matrix.shape[0] // 4
    }
    replicated = replicate(
        (random_starts(jax.random.key(0), 2, 3, 6, jnp.float64),
         check_prior(None, 3, 6, jnp.float64), jnp.asarray(1e-6)),
        devices,
    )
    init, prior, tol = replicated
    hlo = run_restarts.lower(
        data, init, prior, tol, tol, num_components=3, num_groups=None,
        max_iters=20, map_estimate=False, global_stage=True,
    ).compile().as_text()
    assert "all-reduce" in hlo and "all-gather" not in hlo


def test_sharded_fit_compiles_once(rng_key):
    first, second = simulate(3), simulate(8)
    # Different data, same padded size (313 and 297 distinct rows -> 320).
    assert {
        size_bucket(len(np.unique(x, axis=0))) for x in (first, second)
    } == {320}
    fit_multinomial_mixture(first, 3, rng_key=rng_key, devices=4, num_restarts=2)
    size = run_restarts._cache_size()
    fit_multinomial_mixture(second, 3, rng_key=jax.random.key(7), devices=4,
                            num_restarts=2, tol=1e-7)
    assert run_restarts._cache_size() == size


def test_sharding_options_are_checked(rng_key):
    counts = simulate(5, num_rows=60)
    with pytest.raises(ValueError, match="layout='dense'"):
        fit_multinomial_mixture(counts, 2, rng_key=rng_key, devices=4,
                                layout="sparse")
    with pytest.raises(ValueError, match="devices=9 but 4 device"):
        fit_multinomial_mixture(counts, 2, rng_key=rng_key, devices=9)
    with pytest.raises(TypeError, match="devices must"):
        fit_multinomial_mixture(counts, 2, rng_key=rng_key, devices="gpu")


# ----------------------------------------------------------------------------
# Out-of-core EM from chunked sources
# ----------------------------------------------------------------------------


def npy_source(counts, tmp_path):
    path = tmp_path / "counts.npy"
    np.save(path, counts)
    return chunks_from_npy(path, chunk_rows=128)  # 400 rows: 3 full, 1 padded


def parquet_source(counts, tmp_path):
    path = tmp_path / "counts.parquet"
    table = pa.table({f"c{j}": counts[:, j] for j in range(counts.shape[1])})
    pq.write_table(table, path, row_group_size=150)
    return chunks_from_parquet(path, chunk_rows=100)


def factory_source(counts, tmp_path):
    # Uneven chunks (every size up to chunk_rows) exercise the padding.
    edges = [0, 37, 137, 200, 299, 340, len(counts)]

    def factory():
        for lower, upper in zip(edges[:-1], edges[1:], strict=True):
            yield counts[lower:upper]

    return chunks_from_factory(factory, num_columns=counts.shape[1], chunk_rows=100)


@pytest.mark.parametrize("make_source", [npy_source, parquet_source, factory_source],
                         ids=["npy", "parquet", "factory"])
def test_chunked_fit_equals_in_memory_fit(make_source, tmp_path):
    counts = simulate(6)
    init = start(7, 3, counts.shape[1])
    in_memory = fit_multinomial_mixture(counts, 3, init=init, tol=1e-9)
    chunked = fit_multinomial_mixture(make_source(counts, tmp_path), 3, init=init,
                                      tol=1e-9)
    assert bool(in_memory.converged) and int(in_memory.num_iters) > 5
    assert_same_fit(in_memory, chunked)


@pytest.mark.slow
def test_chunked_restarts_map_and_devices_equal_in_memory(rng_key):
    """Random starts from the same key, a Dirichlet prior, sharded chunks."""
    counts = simulate(8)
    prior = MultinomialMixturePrior(2.0, 1.5)
    options = dict(num_restarts=3, rng_key=rng_key, prior=prior, tol=1e-9)
    in_memory = fit_multinomial_mixture(counts, 3, **options)
    source = chunks_from_array(counts, chunk_rows=90)
    assert_same_fit(in_memory, fit_multinomial_mixture(source, 3, **options))
    # 90-row chunks over 4 devices: padded to 92 rows, 23 per device.
    assert_same_fit(in_memory, fit_multinomial_mixture(source, 3, devices=4,
                                                       **options))


def test_chunked_fit_compiles_once(rng_key):
    source = chunks_from_array(simulate(9), chunk_rows=100)
    fit_multinomial_mixture(source, 3, rng_key=rng_key, num_restarts=2)
    sizes = (accumulate._cache_size(),
             advance._cache_size())
    other = chunks_from_array(simulate(10), chunk_rows=100)
    fit_multinomial_mixture(other, 3, rng_key=jax.random.key(3), num_restarts=2,
                            tol=1e-8)
    assert (accumulate._cache_size(),
            advance._cache_size()) == sizes


def test_chunked_empty_rows_are_excluded_with_the_same_warning(rng_key):
    counts = simulate(11)
    counts[[3, 150, 399]] = 0
    with pytest.warns(DataWarning, match="3 of 400 rows .* all zero") as memory:
        in_memory = fit_multinomial_mixture(counts, 3, rng_key=rng_key)
    with pytest.warns(DataWarning, match="3 of 400 rows .* all zero") as streamed:
        chunked = fit_multinomial_mixture(chunks_from_array(counts, 64), 3,
                                          rng_key=rng_key)
    assert str(memory[0].message) == str(streamed[0].message)
    assert streamed[0].filename == __file__  # attributed to the caller
    assert_same_fit(in_memory, chunked)


def test_chunked_float32_matches_float64():
    """A fixed 50 iterations (tol=0), so the float32 and float64 runs take the
    same steps: the difference is float32 round-off alone. Observed: 6e-8 on
    probs (float32 eps = 1.2e-7) and 2e-6 nats on the mean log-likelihood of
    ~-10 (eps x 10); the bounds leave a factor ~100 and ~5."""
    counts = simulate(12)
    options = dict(init=start(13, 3, counts.shape[1]), tol=0.0, max_iters=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f64 = fit_multinomial_mixture(counts, 3, **options)
        f32 = fit_multinomial_mixture(chunks_from_array(counts, 128), 3,
                                      dtype=jnp.float32, **options)
    assert f32.params.probs.dtype == jnp.float32 and int(f32.num_iters) == 50
    np.testing.assert_allclose(f32.params.probs, f64.params.probs, atol=1e-5)
    np.testing.assert_allclose(f32.params.weights, f64.params.weights, atol=1e-5)
    np.testing.assert_allclose(float(f32.log_likelihood), float(f64.log_likelihood),
                               atol=1e-5)


def test_zero_iterations_reports_the_start(rng_key):
    counts = simulate(14, num_rows=100)
    init = start(15, 3, counts.shape[1])
    in_memory = fit_multinomial_mixture(counts, 3, init=init, max_iters=0)
    chunked = fit_multinomial_mixture(chunks_from_array(counts, 30), 3, init=init,
                                      max_iters=0)
    assert int(chunked.num_iters) == 0 and not bool(chunked.converged)
    assert chunked.trace.shape == (0,)
    np.testing.assert_allclose(float(chunked.log_likelihood),
                               float(in_memory.log_likelihood), rtol=TOL)


def bad_chunks(value, row):
    counts = simulate(16, num_rows=300).astype(float)
    counts[row, 4] = value
    return chunks_from_array(counts, chunk_rows=100)


@pytest.mark.parametrize(
    "source, message",
    [
        (bad_chunks(-1, 250), r"chunk 2 .* negative count, -1.0, at row 250, col"),
        (bad_chunks(2.5, 120), r"chunk 1 .* non-integer count, 2.5, at row 120"),
        (bad_chunks(np.nan, 7), r"chunk 0 .* non-finite value at row 7, column 4"),
        (chunks_from_array(np.zeros((50, 3)), 20), "every row of counts is zero"),
        (chunks_from_array(np.ones((50, 1)), 20), "at least 2 categories"),
        (chunks_from_array(np.tile([[1, 2]], (50, 1)), 20), "distinct non-empty"),
    ],
    ids=["negative", "fraction", "nan", "all-zero", "one-column", "one-row-kind"],
)
def test_bad_chunks_are_rejected(source, message, rng_key):
    with pytest.raises(ValueError, match=message):
        fit_multinomial_mixture(source, 2, rng_key=rng_key)


def test_chunked_options_are_checked(rng_key):
    source = chunks_from_array(simulate(17, num_rows=60), 20)
    with pytest.raises(ValueError, match="groups are not supported"):
        fit_multinomial_mixture(source, 2, rng_key=rng_key, groups=np.zeros(60))
    with pytest.raises(ValueError, match="layout='dense'"):
        fit_multinomial_mixture(source, 2, rng_key=rng_key, layout="sparse")
    with pytest.raises(ValueError, match="rng_key is required"):
        fit_multinomial_mixture(source, 2)
    with pytest.raises(ValueError, match="init.probs must have shape"):
        fit_multinomial_mixture(source, 2, init=start(0, 2, 4))
    with pytest.raises(ValueError, match="screen_iters is not offered for chunked"):
        fit_multinomial_mixture(source, 2, rng_key=rng_key, num_restarts=2,
                                screen_iters=2)


def test_chunked_entry_points_and_failures(rng_key):
    """fit_multinomial_mixture_chunked is the chunked fit; the restarts function
    returns every restart of it; stacked starts and failures as in memory."""
    counts = simulate(24, num_rows=150)
    source = chunks_from_array(counts, 64)
    options = dict(num_restarts=2, rng_key=rng_key, tol=1e-9)
    direct = fit_multinomial_mixture_chunked(source, 3, **options)
    assert_same_fit(fit_multinomial_mixture(source, 3, **options), direct)
    every = fit_multinomial_mixture_restarts(source, 3, **options)
    assert every.results.params.probs.shape == (2, 3, counts.shape[1])
    assert_same_fit(
        jax.tree_util.tree_map(lambda a: a[every.best_index], every.results), direct
    )
    stacked = MultinomialMixtureParams(
        np.stack([start(25, 3, 6).weights, start(26, 3, 6).weights]),
        np.stack([start(25, 3, 6).probs, start(26, 3, 6).probs]),
    )
    in_memory = fit_multinomial_mixture_restarts(counts, 3, init=stacked, tol=1e-9)
    streamed = fit_multinomial_mixture_restarts(source, 3, init=stacked, tol=1e-9)
    for index in range(2):
        assert_same_fit(
            *(jax.tree_util.tree_map(lambda a, i=index: a[i], every.results)
              for every in (in_memory, streamed))
        )
    impossible = MultinomialMixtureParams(
        np.full(3, 1 / 3), np.tile([0.5, 0.5, 0.0, 0.0, 0.0, 0.0], (3, 1))
    )
    failed = fit_multinomial_mixture_restarts(source, 3, init=impossible)
    assert failed.best_index == -1 and np.all(failed.failed)
    assert not np.any(np.asarray(failed.results.converged))
    with pytest.raises(AllRestartsFailedError, match="non-finite"):
        fit_multinomial_mixture(source, 3, init=impossible)


def test_summary_holds_the_host_constants():
    """First pass: N, the float64 coefficient sum, column totals, max row total."""
    from scipy.special import gammaln

    counts = simulate(18, num_rows=250)
    counts[0] = 0
    summary = summarise_chunks(chunks_from_array(counts, 64), 3)
    totals = counts.sum(axis=1)
    expected = np.sum(gammaln(totals + 1.0)) - np.sum(gammaln(counts + 1.0))
    assert summary.num_input_rows == 250 and summary.num_rows == 249
    np.testing.assert_allclose(summary.log_coefficient, expected, rtol=1e-14)
    np.testing.assert_array_equal(summary.column_totals, counts.sum(axis=0))
    assert summary.max_row_total == totals.max() and summary.num_distinct == 3


# ----------------------------------------------------------------------------
# K sweep in one compiled program
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("prior", [None, MultinomialMixturePrior(1.5, 1.2)],
                         ids=["ml", "map"])
def test_sweep_equals_separate_fits(prior, rng_key):
    counts = simulate(19)
    k_values = [3, 1, 4, 2]  # any order
    swept = fit_multinomial_mixture_sweep(
        counts, k_values, num_restarts=2, rng_key=rng_key, prior=prior, tol=1e-9
    )
    keys = jax.random.split(rng_key, len(k_values))
    for key, num_components, result in zip(keys, k_values, swept, strict=True):
        assert result.params.weights.shape == (num_components,)
        assert result.params.probs.shape == (num_components, counts.shape[1])
        separate = fit_multinomial_mixture(
            counts, num_components, num_restarts=2, rng_key=key, prior=prior,
            tol=1e-9,
        )
        assert_same_fit(separate, result)


def test_masked_components_stay_exactly_zero_and_untouched(rng_key):
    """Raw padded results: weight exactly 0, probs exactly as initialised."""
    counts = simulate(20)
    prepared = prepare_counts(counts, None, True)
    data = device_data(
        prepared.folded, "dense", prepared.num_rows, 0.0, jnp.float64
    )
    init = padded_starts(
        random_starts(rng_key, 2, 2, 6, jnp.float64), 5
    )
    mask = jnp.arange(5) < 2
    for prior in (None, MultinomialMixturePrior(2.0, 1.5)):
        results = run_sweep(
            data, init, jnp.broadcast_to(mask, (2, 5)),
            check_prior(prior, 5, 6, jnp.float64),
            jnp.asarray(1e-9), jnp.asarray(0.0), max_iters=200,
            map_estimate=prior is not None,
        )
        assert np.all(np.asarray(results.params.weights)[:, 2:] == 0.0)
        np.testing.assert_array_equal(results.params.probs[:, 2:], init.probs[:, 2:])
        assert np.all(np.isfinite(np.asarray(results.log_likelihood)))
        assert np.all(np.asarray(results.converged))


def test_sweep_compiles_once(rng_key):
    counts = simulate(21)
    fit_multinomial_mixture_sweep(counts, [1, 2, 3], rng_key=rng_key)
    size = run_sweep._cache_size()
    # Other K values of the same count and maximum, other key and tol: no compile.
    fit_multinomial_mixture_sweep(counts, [3, 2, 1], rng_key=jax.random.key(4),
                                  tol=1e-8)
    fit_multinomial_mixture_sweep(simulate(22), [2, 1, 3], rng_key=rng_key)
    assert run_sweep._cache_size() == size


def test_sweep_float32_and_sharded(rng_key):
    counts = simulate(23)
    f64 = fit_multinomial_mixture_sweep(counts, [1, 2, 3], rng_key=rng_key,
                                        tol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f32 = fit_multinomial_mixture_sweep(counts, [1, 2, 3], rng_key=rng_key,
                                            dtype=jnp.float32, tol=1e-5)
    for low, high in zip(f32, f64, strict=True):
        assert low.params.probs.dtype == jnp.float32
        assert np.isfinite(float(low.log_likelihood))
        # float32 resolves ~1e-6 nats on a mean of ~-10; the fits stop at tol
        # 1e-5 (float32) and 1e-9 (float64): objectives within 1e-4.
        np.testing.assert_allclose(float(low.log_likelihood),
                                   float(high.log_likelihood), atol=1e-4)
    sharded = fit_multinomial_mixture_sweep(counts, [1, 2, 3], rng_key=rng_key,
                                            tol=1e-9, devices=4)
    for a, b in zip(f64, sharded, strict=True):
        assert_same_fit(a, b)


@pytest.mark.slow
def test_select_with_one_program_gives_the_same_table(rng_key):
    counts = simulate(24, num_rows=200)
    separate = select_num_components_multinomial(
        counts, [1, 2, 3], num_restarts=2, rng_key=rng_key, tol=1e-9
    )
    swept = select_num_components_multinomial(
        counts, [1, 2, 3], num_restarts=2, rng_key=rng_key, tol=1e-9,
        one_program=True,
    )
    assert swept.best_num_components == separate.best_num_components
    for column in ("log_likelihood", "bic", "icl"):
        np.testing.assert_allclose(swept.table[column], separate.table[column],
                                   rtol=TOL)
    assert list(swept.table["num_iters"]) == list(separate.table["num_iters"])
    with pytest.raises(ValueError, match="global model only"):
        select_num_components_multinomial(
            counts, [1, 2], rng_key=rng_key, groups=np.zeros(200), one_program=True
        )


@pytest.mark.parametrize(
    "k_values, kwargs, message",
    [
        ([2, 2], {}, "distinct integers"),
        ([], {}, "distinct integers"),
        ([0, 1], {}, "num_components_list"),
        ([1, 2], {"rng_key": None}, "rng_key is required"),
        ([1, 2], {"prior": MultinomialMixturePrior(np.array([1.0, 2.0]))},
         r"broadcast to \(1,\)"),
        ([1, 500], {}, "distinct non-empty rows"),
    ],
)
def test_bad_sweep_options_are_rejected(k_values, kwargs, message, rng_key):
    options = {"rng_key": rng_key, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit_multinomial_mixture_sweep(simulate(25, num_rows=60), k_values, **options)
