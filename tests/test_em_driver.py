"""The generic EM driver's stopping rule, and compile-once of a jitted EM fitter.

Step functions here are toy sequences whose objective values are known in closed
form, so every expected number (iterations, trace) is computed by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import latentmix.inference.em.linear_regression as em_linear_regression
from latentmix.inference.em import fit_linear_regression, run_em


def geometric_step(params):
    """Objective at params t is 1 - 2^-t; the step moves t -> t + 1.

    Iteration k (1-based) reports objective 1 - 2^-(k-1), so the change between
    iterations k-1 and k is 2^-(k-1).
    """
    return params + 1.0, 1.0 - 0.5**params


def test_converges_by_the_rule_and_pads_the_trace_with_nan():
    params, num_iters, converged, trace = run_em(
        geometric_step, jnp.asarray(0.0), max_iters=50, tol=1e-3
    )
    # First k with 2^-(k-1) < 1e-3 is k = 11 (2^-10 = 9.8e-4).
    assert int(num_iters) == 11 and bool(converged)
    assert float(params) == 11.0
    np.testing.assert_allclose(trace[:11], 1.0 - 0.5 ** np.arange(11), rtol=0,
                               atol=0)
    assert np.all(np.isnan(np.asarray(trace[11:])))


def test_converging_on_the_last_allowed_iteration_is_still_converged():
    # The gmmx rule `converged = num_iters < max_iters` would call this a failure.
    _, num_iters, converged, _ = run_em(
        geometric_step, jnp.asarray(0.0), max_iters=11, tol=1e-3
    )
    assert int(num_iters) == 11 and bool(converged)


def test_relative_tolerance():
    # |delta| < rtol * |objective| with objective -> 1: 2^-(k-1) < 1e-2 at k = 8.
    _, num_iters, converged, _ = run_em(
        geometric_step, jnp.asarray(0.0), max_iters=50, tol=0.0, rtol=1e-2
    )
    assert int(num_iters) == 8 and bool(converged)


def test_nan_objective_is_never_converged():
    """RELIABILITY.md L1: a NaN ends the loop early, and must not read as converged."""

    def step(params):
        objective = jnp.where(params >= 2, jnp.nan, params)
        return params + 1.0, objective

    params, num_iters, converged, trace = run_em(
        step, jnp.asarray(0.0), max_iters=100, tol=1e-3
    )
    # Iterations report 0, 1, NaN: the loop stops after the third, not converged.
    assert int(num_iters) == 3
    assert not bool(converged)
    np.testing.assert_array_equal(trace[:2], [0.0, 1.0])
    assert np.all(np.isnan(np.asarray(trace[2:])))
    assert float(params) == 3.0


def test_infinite_objective_is_never_converged():
    def step(params):
        return params + 1.0, jnp.where(params >= 3, jnp.inf, params)

    _, num_iters, converged, _ = run_em(step, jnp.asarray(0.0), max_iters=100,
                                        tol=1e-3)
    assert int(num_iters) == 4 and not bool(converged)


def test_max_iters_zero_returns_the_initialisation_unconverged():
    init = {"a": jnp.arange(3.0), "b": jnp.asarray(2.0)}
    params, num_iters, converged, trace = run_em(
        lambda p: (jax.tree.map(lambda v: v + 1, p), jnp.asarray(0.0)),
        init, max_iters=0, tol=1e-3,
    )
    jax.tree.map(np.testing.assert_array_equal, params, init)
    assert int(num_iters) == 0 and not bool(converged)
    assert trace.shape == (0,)


def test_tol_zero_never_converges():
    # A constant objective changes by exactly 0, and 0 < 0 is false: like
    # scikit-learn, tol = 0 runs to max_iters.
    params, num_iters, converged, trace = run_em(
        lambda p: (p + 1.0, jnp.asarray(5.0)), jnp.asarray(0.0), max_iters=7, tol=0.0
    )
    assert int(num_iters) == 7 and not bool(converged)
    np.testing.assert_array_equal(trace, np.full(7, 5.0))


def test_max_iters_reached_is_not_converged():
    _, num_iters, converged, trace = run_em(
        geometric_step, jnp.asarray(0.0), max_iters=5, tol=1e-3
    )
    assert int(num_iters) == 5 and not bool(converged)
    assert np.all(np.isfinite(np.asarray(trace)))


def test_driver_works_under_jit_with_traced_tol():
    run = jax.jit(lambda tol: run_em(geometric_step, jnp.asarray(0.0), max_iters=50,
                                     tol=tol))
    assert int(run(1e-3)[1]) == 11
    assert int(run(1e-6)[1]) == 21  # 2^-20 < 1e-6 <= 2^-19


@pytest.fixture
def count_em_traces(monkeypatch):
    """Count how often the jitted EM core traces its step (once per compilation)."""
    counter = {"traces": 0}
    step = em_linear_regression._em_step

    def counting_step(*args, **kwargs):
        counter["traces"] += 1  # Python side effect: runs only while tracing
        return step(*args, **kwargs)

    monkeypatch.setattr(em_linear_regression, "_em_step", counting_step)
    return counter


def test_fit_linear_regression_compiles_once(count_em_traces):
    # A shape no other test uses, so the first call must trace and compile.
    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(2, 37, 3))
    y1 = X1 @ [1.0, -1.0, 0.5] + rng.normal(size=37)
    y2 = X2 @ [0.3, 2.0, -1.0] + rng.normal(size=37)
    cache_size = em_linear_regression._fit._cache_size()
    fit_linear_regression(X1, y1, tol=1e-8)
    assert count_em_traces["traces"] == 1
    assert em_linear_regression._fit._cache_size() == cache_size + 1
    # New data of the same shape, new tol and new initial precisions: all traced
    # values, so neither a new trace nor a new compilation.
    fit_linear_regression(X2, y2, tol=1e-4, init_prior_precision=3.0)
    assert count_em_traces["traces"] == 1
    assert em_linear_regression._fit._cache_size() == cache_size + 1
    # max_iters sizes the trace: a new value is a new compilation, by design.
    fit_linear_regression(X2, y2, max_iters=456)
    assert count_em_traces["traces"] == 2


def test_over_restarts_equals_vmap_for_one_restart_and_several():
    """One restart runs unbatched (a faster program on XLA's CPU), its outputs
    given the restart axis back; the values are vmap's."""
    from latentmix.inference.em.driver import over_restarts

    def restart(key, start):
        step = jax.random.normal(key, (3,))
        return {"value": jnp.sum(start * step), "path": start + step}, None

    keys = jax.random.split(jax.random.key(0), 3)
    starts = jnp.arange(9.0).reshape(3, 3)
    for count in (1, 3):
        expected = jax.vmap(restart)(keys[:count], starts[:count])
        for sharded in (False, True):
            got = jax.jit(lambda k, s, sharded=sharded: over_restarts(
                restart, k, s, sharded=sharded))(keys[:count], starts[:count])
            assert got[1] is None
            for name in ("value", "path"):
                assert got[0][name].shape == expected[0][name].shape
                # The same arithmetic, batched or not: equal to rounding.
                np.testing.assert_allclose(got[0][name], expected[0][name],
                                           rtol=1e-14)
