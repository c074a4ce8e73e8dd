"""MAP and variational inference on any NumPyro model, through NumPyro's SVI.

``fit_map`` maximises the log joint with an ``AutoDelta`` guide: the ELBO of a point
mass is the log joint itself (plus a constant), so the optimum is the MAP estimate in
the unconstrained space of NumPyro's transforms. ``fit_vi`` fits a mean-field
(``AutoNormal``) or full-rank (``AutoMultivariateNormal``) Gaussian in that space.

Both run the whole optimisation in one ``lax.scan`` (NumPyro's ``SVI.run`` with
``progress_bar=False``) with Adam and a learning rate that decays geometrically from
``learning_rate`` to ``learning_rate * final_lr_ratio``: the decay removes the
stochastic jitter of the last iterates (VI) and lets the deterministic MAP objective
settle to optimiser precision.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal
from numpyro.infer.initialization import init_to_uniform, init_to_value
from numpyro.optim import Adam

from latentmix.data.validation import check_int, check_positive

__all__ = ["SVIResult", "fit_map", "fit_vi", "GUIDES"]

GUIDES = {"normal": AutoNormal, "mvn": AutoMultivariateNormal}


class SVIResult(NamedTuple):
    """Result of ``fit_map`` / ``fit_vi``.

    params: site name -> point estimate in the constrained space (the MAP value for
        ``fit_map``; the median of the variational posterior for ``fit_vi``).
    losses: (num_steps,) negative ELBO per step (for MAP: the negative log joint
        up to a constant).
    guide: the fitted autoguide (``guide.get_posterior(guide_params)`` gives the
        variational distribution in unconstrained space).
    guide_params: the optimised guide parameters.
    """

    params: dict
    losses: jax.Array
    guide: Any
    guide_params: dict


def _optimizer(learning_rate, num_steps, final_lr_ratio):
    def schedule(step):
        return learning_rate * final_lr_ratio ** (step / num_steps)

    return Adam(schedule)


def _init_strategy(init_params):
    if init_params is None:
        return init_to_uniform()
    return init_to_value(values=dict(init_params))


def _run(guide, model, args, kwargs, rng_key, num_steps, learning_rate, final_lr_ratio,
         num_particles):
    num_steps = check_int("num_steps", num_steps, minimum=1)
    check_positive("learning_rate", learning_rate)
    check_positive("final_lr_ratio", final_lr_ratio)
    svi = SVI(
        model,
        guide,
        _optimizer(learning_rate, num_steps, final_lr_ratio),
        Trace_ELBO(num_particles=num_particles),
    )
    run = svi.run(rng_key, num_steps, *args, progress_bar=False, stable_update=True,
                  **kwargs)
    losses = run.losses
    if not bool(jnp.all(jnp.isfinite(losses[-1]))):
        raise FloatingPointError(
            "SVI ended with a non-finite loss; lower learning_rate or start from "
            "init_params (e.g. the EM estimate)"
        )
    return run.params, losses


def fit_map(
    model,
    *args,
    rng_key,
    num_steps: int,
    init_params: dict | None = None,
    learning_rate: float = 1e-2,
    final_lr_ratio: float = 1e-3,
    **kwargs,
) -> SVIResult:
    """MAP estimate of the latent sites of ``model(*args, **kwargs)`` (AutoDelta).

    ``init_params`` (site -> value, constrained space) starts the optimiser there;
    mixtures should start from their EM estimate, since MAP is a local optimiser.
    """
    guide = AutoDelta(model, init_loc_fn=_init_strategy(init_params))
    guide_params, losses = _run(
        guide, model, args, kwargs, rng_key, num_steps, learning_rate,
        final_lr_ratio, 1,
    )
    return SVIResult(guide.median(guide_params), losses, guide, guide_params)


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
    **kwargs,
) -> SVIResult:
    """Gaussian variational posterior of ``model(*args, **kwargs)``.

    guide: "normal" (mean-field ``AutoNormal``) or "mvn" (full-rank
    ``AutoMultivariateNormal``), both in NumPyro's unconstrained space.
    """
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {sorted(GUIDES)}, got {guide!r}")
    auto_guide = GUIDES[guide](model, init_loc_fn=_init_strategy(init_params))
    num_particles = check_int("num_particles", num_particles, minimum=1)
    guide_params, losses = _run(
        auto_guide, model, args, kwargs, rng_key, num_steps, learning_rate,
        final_lr_ratio, num_particles,
    )
    return SVIResult(auto_guide.median(guide_params), losses, auto_guide, guide_params)
