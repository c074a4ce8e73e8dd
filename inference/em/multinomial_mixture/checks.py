"""Argument checks of multinomial-mixture EM, at the Python boundary.

Options (counts of restarts and iterations, tolerances, ``screen_iters``), the
layout name, the float dtype (float32 holds every integer up to 2**24 =
FLOAT32_MAX_EXACT exactly, so larger baskets route to float64 when it is on),
the Dirichlet prior (MAP-EM needs concentrations >= 1: below 1 the density is
unbounded at the simplex boundary and has no mode) and an explicit init.

Explicit init (``check_init``): a MultinomialMixtureParams holding ONE start or
STACKED starts, told apart by ``probs`` alone:

* probs (K, C): one start; weights (K,), or (g, K) with groups to start the
  grouped stage directly. It is broadcast to ``num_restarts`` identical starts.
* probs (r, K, C): r stacked starts; weights (r, K), or (r, g, K) with groups.
  ``num_restarts`` must then be 1 or r.

So a (g, K) weight matrix always holds the per-group weights of one start, never
the weights of g starts.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.validation import check_int, check_nonnegative, warn
from latentmix.models.multinomial_mixture import (
    MultinomialMixtureParams,
    MultinomialMixturePrior,
)

__all__ = [
    "FLOAT32_MAX_EXACT",
    "Options",
    "check_distinct",
    "check_init",
    "check_layout",
    "check_options",
    "check_prior",
    "resolve_dtype",
]

FLOAT32_MAX_EXACT = 2**24  # float32 holds every integer up to here exactly


class Options(NamedTuple):
    """The checked integer options of a fit."""

    num_restarts: int
    max_iters: int
    screen_iters: int


def check_options(num_restarts, max_iters, tol, rtol, screen_iters=0) -> Options:
    """Integers >= their minimum, tolerances >= 0, screen_iters < max_iters."""
    num_restarts = check_int("num_restarts", num_restarts, minimum=1)
    max_iters = check_int("max_iters", max_iters, minimum=0)
    check_nonnegative("tol", tol)
    check_nonnegative("rtol", rtol)
    screen_iters = check_int("screen_iters", screen_iters, minimum=0)
    if screen_iters and screen_iters >= max_iters:
        raise ValueError(
            f"screen_iters={screen_iters} must be below max_iters={max_iters}: the "
            f"best restart needs iterations left to continue; use 0 to run every "
            f"restart to convergence"
        )
    return Options(num_restarts, max_iters, screen_iters)


def check_layout(layout: str) -> None:
    """``layout`` is one of "auto", "dense", "sparse"."""
    if layout not in ("auto", "dense", "sparse"):
        raise ValueError(f"layout must be 'auto', 'dense' or 'sparse', got {layout!r}")


def check_distinct(num_components: int, num_distinct: int) -> None:
    """K components need at least K distinct non-empty rows."""
    if num_components > num_distinct:
        raise ValueError(
            f"num_components={num_components} exceeds the number of distinct "
            f"non-empty rows ({num_distinct}); use at most {num_distinct} components"
        )


def resolve_dtype(dtype, max_row_total: float):
    """float32 or float64 (default: float64 in JAX's x64 mode).

    float32 with a basket above FLOAT32_MAX_EXACT items: float64 instead (with a
    warning) when x64 is on, else an error: float32 cannot hold the counts, and
    the log-likelihood would be silently wrong.
    """
    x64 = bool(jax.config.jax_enable_x64)
    if dtype is None:
        dtype = jnp.float64 if x64 else jnp.float32
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if dtype == jnp.float64 and not x64:
        raise ValueError(
            "dtype=float64 needs JAX's 64-bit mode; call "
            "jax.config.update('jax_enable_x64', True) at start-up"
        )
    if dtype == jnp.float32 and max_row_total > FLOAT32_MAX_EXACT:
        if x64:
            warn(
                f"a basket holds {max_row_total:.0f} items, beyond float32's exact "
                f"integer range (2**24): fitting in float64 instead",
            )
            return jnp.dtype(jnp.float64)
        raise ValueError(
            f"a basket holds {max_row_total:.0f} items, beyond float32's exact "
            f"integer range (2**24): float32 cannot hold these counts and their "
            f"log-likelihood would be wrong; fit in float64 (dtype=np.float64; "
            f"--dtype float64 on the command line)"
        )
    return dtype


def check_prior(prior, num_components, num_categories, dtype):
    """Concentrations broadcast to (k,) and (k, c); MAP-EM needs them >= 1."""
    if prior is None:
        prior = MultinomialMixturePrior()
    if not isinstance(prior, MultinomialMixturePrior):
        raise TypeError(
            f"prior must be a MultinomialMixturePrior or None, got {type(prior)}"
        )
    shapes = {
        "weight_concentration": (num_components,),
        "probs_concentration": (num_components, num_categories),
    }
    arrays = {}
    for name, shape in shapes.items():
        value = np.asarray(getattr(prior, name), dtype=np.float64)
        try:
            value = np.broadcast_to(value, shape)
        except ValueError:
            raise ValueError(
                f"prior.{name} must broadcast to {shape}, got shape {value.shape}"
            ) from None
        if not np.all(np.isfinite(value)) or np.any(value < 1.0):
            raise ValueError(
                f"prior.{name} must be >= 1 for MAP-EM, got minimum {value.min()!r}: "
                f"below 1 the Dirichlet density is unbounded at the simplex boundary "
                f"and has no mode. Use 1 for maximum likelihood, or 1 + pseudocount."
            )
        arrays[name] = jnp.asarray(value, dtype)
    return MultinomialMixturePrior(**arrays)


def check_init(init, num_components, num_categories, num_groups, num_restarts,
               dtype):
    """None for init="random", else the starts stacked on a restart axis.

    One start is broadcast to ``num_restarts`` identical starts; stacked starts
    (probs of 3 dimensions) are used as given (module docstring). Returns
    MultinomialMixtureParams with weights (r, K) or (r, g, K), probs (r, K, C).
    """
    if isinstance(init, str):
        if init != "random":
            raise ValueError(
                f"init must be 'random' or a MultinomialMixtureParams, got {init!r}"
            )
        return None
    if not isinstance(init, MultinomialMixtureParams):
        raise TypeError(
            f"init must be 'random' or a MultinomialMixtureParams, got {type(init)}"
        )
    weights = np.asarray(init.weights, dtype=np.float64)
    probs = np.asarray(init.probs, dtype=np.float64)
    stacked = probs.ndim == 3
    starts = probs.shape[0] if stacked else num_restarts
    lead = probs.shape[:1] if stacked else ()
    if probs.shape[len(lead):] != (num_components, num_categories):
        raise ValueError(
            f"init.probs must have shape ({num_components}, {num_categories}), or "
            f"(r, {num_components}, {num_categories}) for r stacked starts, got "
            f"{probs.shape}"
        )
    if stacked and num_restarts not in (1, starts):
        raise ValueError(
            f"init holds {starts} stacked starts but num_restarts={num_restarts}; "
            f"make them agree"
        )
    allowed = [lead + (num_components,)]
    if num_groups is not None:
        allowed.append(lead + (num_groups, num_components))
    if weights.shape not in allowed:
        raise ValueError(
            f"init.weights must have shape in {allowed}, got {weights.shape}"
        )
    for name, value in (("weights", weights), ("probs", probs)):
        if np.any(value < 0) or not np.allclose(value.sum(-1), 1.0, atol=1e-6):
            raise ValueError(f"init.{name} rows must lie on the simplex")
    if not stacked:
        weights = np.broadcast_to(weights, (starts,) + weights.shape)
        probs = np.broadcast_to(probs, (starts,) + probs.shape)
    return MultinomialMixtureParams(jnp.asarray(weights, dtype),
                                    jnp.asarray(probs, dtype))
