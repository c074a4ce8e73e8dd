"""The CPU settings the Gaussian-mixture EM programs run under (issue 14).

``inference.compiler``: XLA compiles the EM programs with matrix products
alone given to YNNPACK; ``inference.threads``: BLAS on one thread while a fit
runs. Both change speed only: the tests check that the settings are in force
where they should be, restored where they should not, and that results do not
move beyond rounding.
"""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import threadpoolctl

from latentmix.data.validation import check_finite
from latentmix.inference import compiler
from latentmix.inference.em import ConvergenceWarning, fit_gaussian_mixture
from latentmix.inference.em.gaussian_mixture import fit as gmm_fit
from latentmix.inference.em.gaussian_mixture import restarts
from latentmix.inference.em.gaussian_mixture.checks import check_representable
from latentmix.inference.em.gaussian_mixture.steps import statistics
from latentmix.inference.threads import blas_on_one_thread
from latentmix.models.gaussian_mixture import GMMParams


def _ynn_fusions_with_reduce(hlo: str) -> int:
    """Number of YNNPACK fusions whose fused computation holds a reduce."""
    count = 0
    for called in re.findall(r'calls=%([\w.-]+), [^\n]*"__ynn_fusion"', hlo):
        body = re.search(r"^%" + re.escape(called) + r" .*?^}", hlo, re.S | re.M)
        count += body is not None and " reduce(" in body.group(0)
    return count


def _problem(seed=0, num_rows=400, num_features=5, num_components=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_rows, num_features)) * 2.0
    roots = rng.normal(size=(num_components, num_features, num_features))
    params = GMMParams(
        jnp.asarray(rng.dirichlet(np.ones(num_components))),
        jnp.asarray(rng.normal(size=(num_components, num_features))),
        jnp.asarray(roots @ np.swapaxes(roots, 1, 2) / num_features
                    + np.eye(num_features)))
    return jnp.asarray(x), params


def test_this_jaxlib_takes_the_em_options():
    # The options are probed, not assumed: on the jaxlib this project pins for
    # its measurements (0.10) they must be accepted, else the speed-up of
    # docs/benchmarks.md silently vanished.
    if tuple(int(p) for p in jax.__version__.split(".")[:2]) != (0, 10):
        pytest.skip("the options were measured on jax 0.10")
    assert compiler.supported_options() == compiler.EM_COMPILER_OPTIONS


def test_em_programs_leave_reductions_to_xla_and_give_the_same_statistics():
    """With the options, no YNNPACK fusion holds a reduction (the default
    compile of the same function has some); the E-step statistics agree."""
    if not compiler.supported_options():
        pytest.skip("this jaxlib does not know the option")
    # Large enough for XLA to hand the reductions to YNNPACK by default.
    x, params = _problem(num_rows=4000, num_features=16, num_components=8)
    weights = jnp.ones(x.shape[0])

    def e_step(params, x, weights):
        return statistics(params, x, weights, "diag")

    plain = jax.jit(e_step).lower(params, x, weights).compile().as_text()
    tuned_fn = compiler.em_jit(e_step)
    tuned = tuned_fn.lower(params, x, weights).compile().as_text()
    assert _ynn_fusions_with_reduce(plain) > 0  # else the test proves nothing
    assert _ynn_fusions_with_reduce(tuned) == 0
    # Same arithmetic in another order: float64 sums of 4000 terms, whose
    # rounding error is at most 4000 eps ~ 4.4e-13 of their magnitude.
    for ours, reference in zip(tuned_fn(params, x, weights),
                               jax.jit(e_step)(params, x, weights), strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


def test_an_option_this_jaxlib_lacks_gives_a_plain_jit(monkeypatch):
    monkeypatch.setattr(compiler, "EM_COMPILER_OPTIONS",
                        {"xla_cpu_no_such_option_anywhere": "1"})
    compiler.supported_options.cache_clear()
    try:
        assert compiler.supported_options() == {}
        double = compiler.em_jit(lambda a: 2.0 * a)
        np.testing.assert_array_equal(double(jnp.arange(3.0)), [0.0, 2.0, 4.0])
        assert double._cache_size() == 1  # the jitted function's attributes
    finally:
        compiler.supported_options.cache_clear()


def _blas_threads():
    return {info["filepath"]: info["num_threads"]
            for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"}


def test_blas_on_one_thread_inside_and_restored_after():
    before = _blas_threads()
    assert before  # numpy's and SciPy's BLAS are loaded
    with blas_on_one_thread():
        assert set(_blas_threads().values()) == {1}
    assert _blas_threads() == before


def test_a_fit_runs_its_program_with_blas_on_one_thread(monkeypatch):
    seen = []
    original = gmm_fit.run_restarts

    def recording(*args, **kwargs):
        seen.append(set(_blas_threads().values()))
        return original(*args, **kwargs)

    monkeypatch.setattr(gmm_fit, "run_restarts", recording)
    before = _blas_threads()
    x, _ = _problem(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit_gaussian_mixture(np.asarray(x), 2, max_iters=3,
                             rng_key=jax.random.key(0))
    assert seen == [{1}]
    assert _blas_threads() == before


def test_blocks_laid_out_once_give_the_statistics_of_blocks_built_per_call(
        monkeypatch):
    """The row blocks kept for a whole fit (``blocked.lay_out_blocks`` in
    ``restarts.shared_problem``) give exactly what the blocks built inside
    every call give: the same arithmetic on the same rows."""
    monkeypatch.setattr(restarts, "PRODUCTS_MAX_ELEMENTS", 0)
    x, params = _problem(2, num_rows=517, num_features=6, num_components=3)
    weights = jnp.ones(x.shape[0]).at[5].set(0.0)
    problem = restarts.shared_problem(x, weights, 1e-6, None, "full", 3)
    assert problem.products is not None  # the blocks, not per-row products
    rows = np.asarray(problem.products.rows).reshape(-1, x.shape[1])
    np.testing.assert_array_equal(rows[:517], problem.centred)
    np.testing.assert_array_equal(rows[517:], 0.0)
    kept = statistics(params, problem.centred, weights, "full", problem.products)
    built = statistics(params, problem.centred, weights, "full", None)
    for a, b in zip(kept, built, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("num_rows, num_features", [(1000, 16), (1001, 3),
                                                    (70, 1500)])
def test_representable_check_reads_every_row(order, num_rows, num_features):
    """The column maxima and minima are taken over groups of rows at once;
    an out-of-range value in the rows after the last whole group, or in any
    column of a wide or Fortran-ordered array, is still found."""
    rng = np.random.default_rng(3)
    x = np.asarray(rng.normal(size=(num_rows, num_features)), order=order)
    check_representable(x)  # nothing to refuse
    for row, column in [(num_rows - 1, num_features - 1), (0, 0),
                        (num_rows // 2, num_features // 2)]:
        for value in (1e300, -1e300):
            bad = x.copy(order=order)
            bad[row, column] = value
            with pytest.raises(ValueError, match=rf"\[{column}\]"):
                check_representable(bad)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finite_check_finds_every_non_finite_entry_and_passes_a_sum_that_overflows(
        bad):
    """``check_finite`` proves finiteness from one sum; a NaN or infinity
    anywhere still makes it name the entry, and finite values whose sum
    overflows (1e308 + 1e308) are not mistaken for bad ones."""
    huge = np.full((4, 3), 1e308)
    huge[1, 1] = -1e308
    check_finite("x", huge)  # the sum overflows; every entry is finite
    for index in [(0, 0), (3, 2), (2, 1)]:
        x = np.random.default_rng(4).normal(size=(4, 3))
        x[index] = bad
        kind = "NaN" if np.isnan(bad) else "infinity"
        with pytest.raises(ValueError,
                           match=rf"contains {kind} at index \({index[0]}, "
                                 rf"{index[1]}\)"):
            check_finite("x", x)
