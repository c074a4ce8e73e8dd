"""MAP and variational inference on any NumPyro model, through NumPyro's SVI.

``fit_map`` maximises the log joint with an ``AutoDelta`` guide: the ELBO of a point
mass is the log joint itself (plus a constant), so the optimum is the MAP estimate in
the unconstrained space of NumPyro's transforms. ``fit_vi`` fits a mean-field
(``AutoNormal``) or full-rank (``AutoMultivariateNormal``) Gaussian in that space.

Both run Adam with a learning rate that decays geometrically from
``learning_rate`` to ``learning_rate * final_lr_ratio`` over ``num_steps`` (the
decay removes the stochastic jitter of the last iterates), in chunks of
``chunk_steps`` steps, each one compiled ``lax.scan``; between chunks
``callback(steps_done, num_steps)`` runs (progress, interrupts: a callback may
raise ``KeyboardInterrupt``, which then propagates at that chunk boundary).

Convergence is a stated criterion, never a step count:
  * MAP: after Adam, a BFGS polish of the (deterministic) negative log joint in
    the unconstrained coordinates, to a gradient norm below ``gtol``
    (``SVIResult.converged`` is BFGS's success; for more than
    ``BFGS_MAX_DIM`` unconstrained values, BFGS's p x p inverse Hessian would
    not fit and the relative change of the loss over the last chunk, below
    ``rtol``, decides instead).
  * VI: the ELBO is a Monte Carlo estimate, so the mean loss of the last chunk
    is compared with the previous chunk's: converged when they differ by less
    than three standard errors of the difference (or ``rtol`` relative).
    Without convergence at ``num_steps`` the optimiser goes on at the final
    learning rate, chunk by chunk, up to ``max_steps``.
A run that did not converge says so (``converged=False``, and a
``ConvergenceWarning``); a non-finite loss raises ``FloatingPointError``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal
from numpyro.infer.initialization import init_to_uniform, init_to_value
from numpyro.optim import Adam

from latentmix.data.validation import check_int, check_positive, warn

__all__ = [
    "BFGS_MAX_DIM",
    "GUIDES",
    "OptimiserWarning",
    "SVIResult",
    "fit_map",
    "fit_vi",
]

GUIDES = {"normal": AutoNormal, "mvn": AutoMultivariateNormal}
# BFGS keeps a p x p inverse Hessian: 4,000 values take 128 MB in float64.
BFGS_MAX_DIM = 4000
BFGS_RESTARTS = 4  # BFGS runs from where the previous one stopped, at most
DEFAULT_CHUNK_STEPS = 500


class OptimiserWarning(UserWarning):
    """An optimiser stopped before its convergence criterion was met."""


class SVIResult(NamedTuple):
    """Result of ``fit_map`` / ``fit_vi``.

    params: site name -> point estimate in the constrained space (the MAP value for
        ``fit_map``; the median of the variational posterior for ``fit_vi``).
    losses: (num_steps,) negative ELBO per Adam step (for MAP: the negative log
        joint up to a constant).
    guide: the fitted autoguide (``guide.get_posterior(guide_params)`` gives the
        variational distribution in unconstrained space).
    guide_params: the optimised guide parameters.
    converged: whether the convergence criterion of the module docstring held.
    criterion: the number it was judged on (the gradient norm after BFGS, or
        the loss change of the last chunk) and, in ``note``, which one.
    """

    params: dict
    losses: jax.Array
    guide: Any
    guide_params: dict
    converged: bool = True
    criterion: float = 0.0
    note: str = ""


def fit_map(
    model,
    *args,
    rng_key,
    num_steps: int,
    init_params: dict | None = None,
    learning_rate: float = 1e-2,
    final_lr_ratio: float = 1e-3,
    gtol: float | None = None,
    rtol: float = 1e-10,
    polish: bool = True,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    callback=None,
    **kwargs,
) -> SVIResult:
    """MAP estimate of the latent sites of ``model(*args, **kwargs)`` (AutoDelta).

    ``init_params`` (site -> value, constrained space) starts the optimiser there;
    mixtures should start from their EM estimate, since MAP is a local optimiser.
    ``gtol``: BFGS's gradient-norm tolerance (default 1e-6 times the square
    root of the loss's magnitude: a step of about 1e-6 posterior sds when the
    loss is a sum over rows in standardised coordinates). ``polish=False``
    skips BFGS and judges convergence by the relative loss change (``rtol``).
    """
    guide = AutoDelta(model, init_loc_fn=_init_strategy(init_params))
    svi, state, losses = _adam(guide, model, args, kwargs, rng_key, num_steps,
                               learning_rate, final_lr_ratio, 1, chunk_steps,
                               callback)
    change = _relative_change(losses, chunk_steps)
    converged, criterion = change <= rtol, change
    note = "relative loss change over the last chunk"
    unconstrained = svi.optim.get_params(state.optim_state)
    flat, unravel = ravel_pytree(unconstrained)
    if polish and flat.size <= BFGS_MAX_DIM:
        loss_key = jax.random.fold_in(rng_key, 1)

        def loss_fn(vector):
            params = svi.constrain_fn(unravel(vector))
            return Trace_ELBO().loss(loss_key, params, model, guide, *args, **kwargs)

        if gtol is None:
            gtol = 1e-6 * float(np.sqrt(max(abs(float(losses[-1])), 1.0)))
        # BFGS restarted (fresh inverse Hessian) while it stops short of gtol:
        # a first step of a far start can end its line search early.
        # SciPy's BFGS (its line search is robust where the loss is large and
        # the start far, e.g. a target offset of 1e7) on the compiled loss and
        # gradient; restarted with a fresh inverse Hessian while it stops
        # short of gtol.
        value_and_grad = jax.jit(jax.value_and_grad(loss_fn))

        def objective(vector):
            value, grad = value_and_grad(jnp.asarray(vector, flat.dtype))
            return float(value), np.asarray(grad, dtype=np.float64)

        start, fun = np.asarray(flat, dtype=np.float64), float(losses[-1])
        gradient = float(np.max(np.abs(objective(start)[1])))
        for _ in range(BFGS_RESTARTS):
            solved = scipy.optimize.minimize(
                objective, start, jac=True, method="BFGS",
                options={"gtol": gtol, "maxiter": 2000, "norm": np.inf})
            if not (np.isfinite(solved.fun) and solved.fun <= fun + abs(fun) * 1e-12):
                break
            start, fun = solved.x, float(solved.fun)
            gradient = float(np.max(np.abs(objective(start)[1])))
            unconstrained = unravel(jnp.asarray(start, flat.dtype))
            if gradient <= gtol:
                break
        converged, criterion = gradient <= gtol, gradient
        note = f"max |gradient| after BFGS (gtol {gtol:.2g})"
    guide_params = svi.constrain_fn(unconstrained)
    if not converged:
        warn(f"MAP did not converge: {note} = {criterion:.3g}; raise num_steps or "
             f"start closer to the mode (e.g. from the EM estimate)",
             OptimiserWarning)
    return SVIResult(guide.median(guide_params), losses, guide, guide_params,
                     bool(converged), float(criterion), note)


def fit_vi(
    model,
    *args,
    rng_key,
    guide: str = "normal",
    num_steps: int,
    init_params: dict | None = None,
    learning_rate: float = 1e-2,
    final_lr_ratio: float = 1e-2,
    num_particles: int = 4,
    max_steps: int | None = None,
    rtol: float = 1e-8,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    callback=None,
    **kwargs,
) -> SVIResult:
    """Gaussian variational posterior of ``model(*args, **kwargs)``.

    guide: "normal" (mean-field ``AutoNormal``) or "mvn" (full-rank
    ``AutoMultivariateNormal``), both in NumPyro's unconstrained space.
    ``max_steps`` (default 2 x num_steps) bounds the steps taken at the final
    learning rate while the ELBO still moves (module docstring).
    """
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {sorted(GUIDES)}, got {guide!r}")
    auto_guide = GUIDES[guide](model, init_loc_fn=_init_strategy(init_params))
    num_particles = check_int("num_particles", num_particles, minimum=1)
    max_steps = 2 * num_steps if max_steps is None else max_steps
    svi, state, losses = _adam(auto_guide, model, args, kwargs, rng_key, num_steps,
                               learning_rate, final_lr_ratio, num_particles,
                               chunk_steps, callback, max_steps=max_steps,
                               noisy=True)
    shift, noise = _chunk_shift(losses, chunk_steps)
    converged = shift <= max(3.0 * noise, rtol * abs(float(losses[-1])))
    if not converged:
        warn(f"VI did not converge in {losses.shape[0]} steps: the mean ELBO of "
             f"the last {chunk_steps} steps moved by {shift:.3g} (noise "
             f"{noise:.2g}); raise num_steps", OptimiserWarning)
    guide_params = svi.get_params(state)
    return SVIResult(auto_guide.median(guide_params), losses, auto_guide,
                     guide_params, bool(converged), float(shift),
                     "change of the mean loss between the last two chunks")


# ------------------------------------------------------------------ internals


def _optimizer(learning_rate, num_steps, final_lr_ratio):
    def schedule(step):
        fraction = jnp.minimum(step / num_steps, 1.0)
        return learning_rate * final_lr_ratio ** fraction

    return Adam(schedule)


def _init_strategy(init_params):
    if init_params is None:
        return init_to_uniform()
    return init_to_value(values=dict(init_params))


def _adam(guide, model, args, kwargs, rng_key, num_steps, learning_rate,
          final_lr_ratio, num_particles, chunk_steps, callback, *, max_steps=None,
          noisy=False):
    """Adam in compiled chunks of ``chunk_steps``; returns (svi, state, losses).

    Runs ``num_steps`` steps; with ``max_steps`` and ``noisy``, goes on chunk by
    chunk until the last two chunks' mean losses agree within noise.
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    chunk_steps = check_int("chunk_steps", chunk_steps, minimum=1)
    check_positive("learning_rate", learning_rate)
    check_positive("final_lr_ratio", final_lr_ratio)
    svi = SVI(model, guide, _optimizer(learning_rate, num_steps, final_lr_ratio),
              Trace_ELBO(num_particles=num_particles))
    state = svi.init(rng_key, *args, **kwargs)
    def run_chunk(state, length):
        def body(state, _):
            state, loss = svi.stable_update(state, *args, **kwargs)
            return state, loss

        return jax.lax.scan(body, state, None, length=length)

    chunk = jax.jit(run_chunk, static_argnums=1)
    pieces, done = [], 0
    limit = num_steps if max_steps is None else max(max_steps, num_steps)
    while done < limit:
        length = min(chunk_steps, limit - done)
        state, losses = chunk(state, length)
        pieces.append(np.asarray(losses))
        done += length
        if not np.isfinite(pieces[-1][-1]):
            raise FloatingPointError(
                "SVI ended with a non-finite loss; lower learning_rate or start "
                "from init_params (e.g. the EM estimate)")
        if callback is not None:
            callback(done, num_steps)
        if done >= num_steps and (not noisy or _converged_noisy(
                np.concatenate(pieces), chunk_steps)):
            break
    return svi, state, np.concatenate(pieces)


def _relative_change(losses, chunk_steps) -> float:
    """|first - last| / |last| over the last chunk of a deterministic loss."""
    tail = losses[-min(chunk_steps, losses.shape[0]):]
    return float(abs(tail[0] - tail[-1]) / max(abs(tail[-1]), 1e-300))


def _chunk_shift(losses, chunk_steps):
    """(|mean of the last chunk - mean of the one before|, its standard error)."""
    size = min(chunk_steps, losses.shape[0] // 2)
    if size < 2:
        return float("inf"), 0.0
    last, before = losses[-size:], losses[-2 * size:-size]
    noise = np.sqrt(last.var() / size + before.var() / size)
    return float(abs(last.mean() - before.mean())), float(noise)


def _converged_noisy(losses, chunk_steps) -> bool:
    shift, noise = _chunk_shift(losses, chunk_steps)
    return shift <= 3.0 * noise
