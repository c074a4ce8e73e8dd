"""Issue 6 for the Gaussian mixture: sharded rows, out-of-core chunks, one-program
K sweeps, and the accuracy of the one-pass (matrix-product) statistics.

References are independent computations: the single-device in-memory fit (the
same EM iteration summed in another order), separate per-K fits, and the float64
fit for float32. Tolerances: the alternatives change only the order of
floating-point summation (float64 ulp ~1e-16 per operation, sums of ~10^3 terms),
and EM near its fixed point is a contraction, so differences stay ~1e-13; we
allow 1e-10 on parameters and 1e-12 on the mean log-likelihood (a mean of
log-densities of size ~5).
"""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.mixture import GaussianMixture

import latentmix.inference.em.gaussian_mixture as em
import latentmix.inference.em.gaussian_mixture.chunked as chunked_module
from latentmix.data.chunks import (
    chunks_from_array,
    chunks_from_factory,
    chunks_from_npy,
    chunks_from_parquet,
)
from latentmix.data.validation import DataWarning
from latentmix.inference.em import fit_gaussian_mixture, fit_gaussian_mixture_sweep
from latentmix.inference.em.gaussian_mixture.restarts import run_restarts
from latentmix.inference.em.gaussian_mixture.sweep import run_sweep
from latentmix.inference.selection import select_num_components
from latentmix.inference.sharding import check_devices, place_rows
from latentmix.models.gaussian_mixture import COVARIANCE_TYPES, GMMParams, default_prior

PARAMS_ATOL = 1e-10
LOGLIK_ATOL = 1e-12


def clusters(num_rows=1000, offset=50.0, seed=0):
    """Three 3-D clusters far from the origin (the fits must centre)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 3.0, -2.0], [-4.0, 4.0, 1.0]])
    labels = rng.integers(0, 3, num_rows)
    scales = np.array([1.0, 0.7, 1.3])[labels, None]
    return centres[labels] + scales * rng.normal(size=(num_rows, 3)) + offset


def assert_same_fit(a, b, params_atol=PARAMS_ATOL, loglik_atol=LOGLIK_ATOL):
    assert int(a.num_iters) == int(b.num_iters)
    assert bool(a.converged) == bool(b.converged)
    np.testing.assert_allclose(float(a.log_likelihood), float(b.log_likelihood),
                               atol=loglik_atol, rtol=0)
    for left, right in zip(a.params, b.params, strict=True):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right),
                                   atol=params_atol, rtol=0)


def fit(x, covariance_type="full", **kwargs):
    options = dict(covariance_type=covariance_type, num_restarts=1, tol=1e-9,
                   max_iters=300, rng_key=jax.random.key(3))
    options.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_gaussian_mixture(x, 3, **options)


# ------------------------------------------------------------ data-parallel EM


def test_four_host_devices_are_available():
    """conftest forces 4 CPU devices; every sharding test below relies on it."""
    assert len(jax.devices()) == 4


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sharded_fit_equals_single_device_fit(covariance_type):
    """n = 1000 is a multiple of 4: no padding, so even the k-means++ starts match."""
    x = clusters()
    single = fit(x, covariance_type)
    sharded = fit(x, covariance_type, devices=4)
    assert_same_fit(single, sharded)


def test_sharded_fit_with_padding_rows_and_a_prior():
    """n = 1003 needs one zero-weight row per... device count: padding changes
    nothing (explicit start, so the random draws of the starts play no part)."""
    x = clusters(1003)
    start = fit(x, max_iters=2).params
    prior = default_prior(x, 3)
    single = fit(x, init=start, prior=prior)
    sharded = fit(x, init=start, prior=prior, devices=jax.devices()[:3])
    assert_same_fit(single, sharded)


def test_sharded_program_reduces_across_devices_and_is_not_recompiled():
    x = clusters()
    fit(x, devices=4)
    size = run_restarts._cache_size()
    fit(x + 1.0, devices=4, tol=1e-7)  # new values, same shapes: same program
    assert run_restarts._cache_size() == size
    x_sharded, weights, _ = place_rows(x, check_devices(4), None)
    keys = jax.random.split(jax.random.key(0), 1)
    text = run_restarts.lower(
        x_sharded, weights, None, keys, 1e-3, 0.0, 1e-6, None, num_components=3,
        covariance_type="full", init_method="kmeans++", max_iters=5,
        sharded=True,  # as fit_gaussian_mixture passes for devices=4
    ).compile().as_text()
    # GSPMD reduces the per-device statistics with all-reduces; the only gathers
    # are of per-device winners of arg-reductions (k-means++ draws, the worst
    # row): a few numbers, never the rows.
    assert "all-reduce" in text
    gathered = re.findall(r"= \w+\[([\d,]*)\]\{[^}]*\} all-gather\(", text)
    assert all(np.prod([int(n) for n in shape.split(",") if n]) < 100
               for shape in gathered)


def test_bad_devices_are_refused():
    x = clusters(100)
    with pytest.raises(ValueError, match="devices=9"):
        fit(x, devices=9)
    with pytest.raises(TypeError, match="jax.Device"):
        fit(x, devices=["cpu:0"])
    with pytest.raises(ValueError, match="twice"):
        fit(x, devices=[jax.devices()[0]] * 2)


# ------------------------------------------------------------ out-of-core EM


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunked_fit_equals_in_memory_fit(covariance_type):
    """Same key, n <= INIT_SAMPLE_ROWS: the starts are computed on all rows, in
    order, as in memory; 1000 rows in chunks of 128 (the last one padded)."""
    x = clusters()
    options = dict(covariance_type=covariance_type, num_restarts=2, tol=1e-9,
                   max_iters=300, rng_key=jax.random.key(3))
    in_memory = em.fit_gaussian_mixture_restarts(x, 3, **options)
    chunked = em.fit_gaussian_mixture_restarts(chunks_from_array(x, 128), 3,
                                               **options)
    # Every restart, not just the best: two restarts may reach the same optimum
    # with permuted labels, and rounding then decides which one is "best".
    for r in range(2):
        assert_same_fit(*(jax.tree_util.tree_map(lambda a, r=r: a[r], fits.results)
                          for fits in (in_memory, chunked)))
    np.testing.assert_array_equal(in_memory.num_reseeds, chunked.num_reseeds)


def test_chunked_sources_npy_parquet_factory_agree(tmp_path):
    x = clusters(777)
    start = fit(x, max_iters=1).params
    reference = fit(x, init=start)
    np.save(tmp_path / "x.npy", x)
    pq.write_table(
        pa.table({f"f{j}": x[:, j] for j in range(3)}), tmp_path / "x.parquet",
        row_group_size=200,
    )

    def factory():
        # Uneven chunks, as a reader of many files would give.
        for start_row, stop_row in ((0, 100), (100, 400), (400, 777)):
            yield x[start_row:stop_row]

    sources = [
        chunks_from_npy(tmp_path / "x.npy", chunk_rows=250),
        chunks_from_parquet(tmp_path / "x.parquet", chunk_rows=300),
        chunks_from_factory(factory, num_columns=3, chunk_rows=377),
    ]
    for source in sources:
        assert_same_fit(reference, fit(source, init=start))


def test_chunked_fit_with_a_prior_and_sharded_chunks():
    x = clusters(600)
    prior = default_prior(x, 3)
    start = fit(x, max_iters=1, covariance_type="diag").params
    reference = fit(x, init=start, prior=prior, covariance_type="diag")
    chunked = fit(chunks_from_array(x, 97), init=start, prior=prior,
                  covariance_type="diag", devices=4)
    assert_same_fit(reference, chunked)


def test_chunked_fit_samples_its_starts_on_large_data(monkeypatch):
    """Above INIT_SAMPLE_ROWS the starts come from a random sample; the fit
    still finds the three clusters: its log-likelihood matches scikit-learn's
    best of 3 restarts to the stopping tolerance (optimiser tolerance 1e-6
    on a mean of ~1000 terms)."""
    monkeypatch.setattr(chunked_module, "INIT_SAMPLE_ROWS", 200)
    x = clusters(1000)
    chunked = fit(chunks_from_array(x, 100), num_restarts=3, tol=1e-8)
    sklearn = GaussianMixture(3, n_init=3, tol=1e-8, random_state=0).fit(x)
    np.testing.assert_allclose(float(chunked.log_likelihood),
                               sklearn.score(x), atol=1e-6)


def test_chunked_fit_stops_on_the_relative_tolerance_as_in_memory():
    """rtol reaches the chunked loop: with tol=0 both fits stop on
    rtol |objective| after the same number of iterations."""
    x = clusters(600)
    start = fit(x, max_iters=1).params
    options = dict(init=start, tol=0.0, rtol=1e-9, max_iters=300)
    in_memory = fit(x, **options)
    chunked_fit = fit(chunks_from_array(x, 128), **options)
    assert bool(in_memory.converged) and int(in_memory.num_iters) < 300
    assert_same_fit(in_memory, chunked_fit)


def test_chunked_fit_compiles_once_per_chunk_shape():
    x = clusters(512)
    fit(chunks_from_array(x, 64), max_iters=3)
    size = chunked_module.chunk_statistics._cache_size()
    fit(chunks_from_array(x * 2.0, 64), max_iters=3)
    assert chunked_module.chunk_statistics._cache_size() == size


def test_bad_chunks_name_the_chunk_and_the_row():
    x = clusters(300)
    bad = x.copy()
    bad[250, 1] = np.nan
    with pytest.raises(ValueError, match=r"chunk 2 .* row 250, column 1"):
        fit(chunks_from_array(bad, 100))
    with pytest.raises(ValueError, match="3 columns"):
        fit(chunks_from_factory(lambda: iter([x[:10, :2]]), num_columns=3,
                                chunk_rows=10))
    with pytest.raises(TypeError, match="numeric"):
        fit(chunks_from_factory(lambda: iter([np.array([["a", "b", "c"]])]),
                                num_columns=3, chunk_rows=10))
    with pytest.raises(ValueError, match="more than chunk_rows"):
        fit(chunks_from_factory(lambda: iter([x]), num_columns=3, chunk_rows=10))
    with pytest.raises(TypeError, match="callable"):
        chunks_from_factory(iter([x]), num_columns=3, chunk_rows=10)
    with pytest.raises(ValueError, match="num_components=3 exceeds"):
        fit(chunks_from_array(x[:2], 1))


def test_a_source_that_changes_between_passes_is_refused():
    x = clusters(300)
    calls = []

    def factory():
        calls.append(1)
        rows = 300 if len(calls) == 1 else 250  # a file rewritten meanwhile
        return iter([x[:rows]])

    with pytest.raises(ValueError, match="same rows on every pass"):
        fit(chunks_from_factory(factory, num_columns=3, chunk_rows=300))


# ------------------------------------------------------------ one-program sweeps


@pytest.mark.parametrize(
    ("covariance_type", "init"),
    [("full", "kmeans++"), ("tied", "kmeans++"), ("diag", "random_from_data"),
     ("spherical", "random_from_data")],
)
def test_sweep_equals_separate_fits(covariance_type, init):
    """Padding components carry weight exactly 0; the K fits inside the sweep
    are the separate fits (same per-K keys) summed in another order."""
    x = clusters(400)
    k_values = [3, 1, 4, 2]
    key = jax.random.key(11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swept = fit_gaussian_mixture_sweep(
            x, k_values, covariance_type=covariance_type, init=init,
            num_restarts=2, tol=1e-9, max_iters=200, rng_key=key,
        )
        separate = [
            fit_gaussian_mixture(x, k, covariance_type=covariance_type, init=init,
                                 num_restarts=2, tol=1e-9, max_iters=200,
                                 rng_key=k_key)
            for k, k_key in zip(k_values, jax.random.split(key, 4), strict=True)
        ]
    for k, a, b in zip(k_values, swept, separate, strict=True):
        assert a.params.weights.shape == (k,)
        # Separate fits differ from each other in GEMM blocking for different
        # K; over 200 iterations that is still ~1e-12 (contraction).
        assert_same_fit(a, b, params_atol=1e-8, loglik_atol=1e-10)


def test_sweep_is_one_program_and_refuses_what_padding_cannot_do():
    x = clusters(200)
    fit_gaussian_mixture_sweep(x, [1, 2, 3], rng_key=jax.random.key(0))
    size = run_sweep._cache_size()
    fit_gaussian_mixture_sweep(x * 3.0, [3, 1, 2], rng_key=jax.random.key(1))
    assert run_sweep._cache_size() == size
    with pytest.raises(ValueError, match="init must be"):
        fit_gaussian_mixture_sweep(x, [1, 2], init=GMMParams(*fit(x).params),
                                   rng_key=jax.random.key(0))
    with pytest.raises(ValueError, match="empty"):
        fit_gaussian_mixture_sweep(x, [], rng_key=jax.random.key(0))


def test_select_num_components_one_program_gives_the_same_table():
    x = clusters(300)
    options = dict(num_restarts=2, rng_key=jax.random.key(4), covariance_type="diag",
                   tol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = select_num_components(x, [1, 2, 3], one_program=True, **options)
        loop = select_num_components(x, [1, 2, 3], one_program=False, **options)
    assert one.best_num_components == loop.best_num_components == 3
    np.testing.assert_allclose(one.table["bic"], loop.table["bic"], rtol=1e-10)


# ------------------------------------------------------------ float32 accuracy


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_matches_float64_with_separated_clusters(covariance_type):
    """The one-pass statistics lose ~log10(1 + R^2) digits, R a component's
    distance from the data centre in its standard deviations; here R ~ 30, so
    float32 keeps ~4 digits: relative 1e-7 x 30^2 ~ 1e-4 on variances,
    ~1e-4 x mean on means and ~1e-4 on the mean log-likelihood (atol 2e-3 and
    rtol 2e-3 leave a margin of 10 for accumulation over 1000 rows)."""
    rng = np.random.default_rng(5)
    centres = np.array([[-30.0, 0.0], [30.0, 0.0], [0.0, 30.0]])
    labels = rng.integers(0, 3, 999)
    x64 = centres[labels] + rng.normal(size=(999, 2)) + 1e3
    start = GMMParams(
        np.full(3, 1 / 3), centres + 1e3 + 0.5, np.broadcast_to(np.eye(2), (3, 2, 2))
    )
    fits = []
    for dtype in (np.float64, np.float32):
        start_d = GMMParams(*(np.asarray(leaf, dtype) for leaf in start))
        fits.append(fit(x64.astype(dtype), covariance_type, init=start_d,
                        tol=0.0, max_iters=20))
    assert fits[1].params.means.dtype == jnp.float32
    for a, b in zip(fits[0].params, fits[1].params, strict=True):
        np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a),
                                   rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(float(fits[1].log_likelihood),
                               float(fits[0].log_likelihood), atol=2e-3)


def test_an_unresolvable_collapse_fails_the_restart():
    """reg_covar = 0 and one component on three identical rows far from the
    centre: the likelihood is unbounded and the variance falls below what the
    one-pass statistics resolve; the restart is failed, not followed."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(200, 2)), np.full((3, 2), 40.0)])
    start = GMMParams(np.array([0.9, 0.1]), np.array([[0.0, 0.0], [40.0, 40.0]]),
                      np.broadcast_to(np.eye(2), (2, 2, 2)))
    restarts = em.fit_gaussian_mixture_restarts(
        x, 2, covariance_type="diag", init=start, reg_covar=0.0, max_iters=10
    )
    assert restarts.failed[0] and not restarts.results.converged[0]
    with pytest.raises(FloatingPointError, match="reg_covar"):
        fit_gaussian_mixture(x, 2, covariance_type="diag", init=start,
                             reg_covar=0.0, max_iters=10)
    # The default floor resolves it: a finite, converged fit, whose collapsed
    # component is reported.
    with pytest.warns(DataWarning, match="collapsed"):
        result = fit_gaussian_mixture(x, 2, covariance_type="diag", init=start,
                                      max_iters=50)
    assert bool(result.converged)
