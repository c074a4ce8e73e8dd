"""NUTS on any NumPyro model, returned as ArviZ InferenceData, and its diagnostics.

Chains run in parallel on CPU when JAX sees enough host devices (pmap). That
number is fixed when JAX starts, so scripts call
``numpyro.set_host_device_count(n)`` before any JAX work (tests/conftest.py does
the same); otherwise chains are vectorised on one device (vmap): the same
kernel, the same distribution.

Diagnostics follow Stan/PyMC/ArviZ (Vehtari et al. 2021): rank-normalised split
R-hat, bulk and tail ESS, computed by ArviZ (not NumPyro's classic split R-hat),
plus NumPyro's per-draw divergence flags. Thresholds: R-hat > 1.01, ESS < 100 per
chain, any divergence.
"""


import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.hmc import hmc
from numpyro.infer.initialization import init_to_uniform, init_to_value
from numpyro.infer.util import initialize_model, unconstrain_fn

from latentmix.data.validation import check_int
from latentmix.data.validation import warn as emit_warning

__all__ = [
    "SamplerWarning",
    "SamplingInterrupted",
    "RHAT_THRESHOLD",
    "MIN_ESS_PER_CHAIN",
    "run_nuts",
    "diagnostics",
]

RHAT_THRESHOLD = 1.01
MIN_ESS_PER_CHAIN = 100


class SamplerWarning(UserWarning):
    """NUTS diagnostics say the draws may not represent the posterior."""


class SamplingInterrupted(KeyboardInterrupt):
    """NUTS was interrupted between two chunks of draws.

    idata: the draws made so far as InferenceData (None during warmup).
    """

    def __init__(self, idata):
        super().__init__("NUTS interrupted")
        self.idata = idata


def run_nuts(
    model,
    *args,
    rng_key,
    num_chains: int = 4,
    num_warmup: int,
    num_samples: int,
    init_params: dict | list | tuple | None = None,
    target_accept_prob: float = 0.8,
    dense_mass: bool = False,
    progress_bar: bool = False,
    chunk_size: int | None = None,
    callback=None,
    drop_sites=(),
    laplace_mass: bool = False,
    **kwargs,
) -> az.InferenceData:
    """Run NUTS on ``model(*args, **kwargs)``; return posterior draws as InferenceData.

    The InferenceData holds ``posterior`` (chain, draw, ...), ``sample_stats`` (with
    ``diverging``, ``tree_depth``, ``lp``...) and ``observed_data``.
    ``init_params`` (site -> constrained value) starts every chain there, e.g. at
    the EM or MAP estimate; a list or tuple of such dicts, one per chain, starts
    each chain at its own point (e.g. differently labelled EM solutions of a
    mixture); otherwise chains start uniformly in [-2, 2] in the unconstrained
    space (NumPyro's default).

    The sampler is NumPyro's NUTS kernel (``numpyro.infer.hmc.hmc``: the same
    transition, step-size and mass-matrix adaptation as ``MCMC(NUTS(model))``),
    driven here in chunks of ``chunk_size`` transitions per chain (default 50
    with a callback), warmup included: one compiled ``lax.scan`` serves every
    chunk, chains run in parallel over the host devices (else vectorised).
    After every chunk ``callback(draws_done, num_samples)`` runs (draws_done 0
    during warmup); when it raises ``KeyboardInterrupt`` (an interrupt
    requested in between), ``SamplingInterrupted`` is raised carrying the
    draws made so far.
    ``drop_sites``: sites left out of the posterior group (e.g. the
    standardised coordinates of a reparametrised model). ``laplace_mass``: start
    the mass matrix at the inverse Hessian of the potential at each chain's
    start (a Laplace approximation, when the chains start at a mode such as the
    EM estimate), so that warmup refines a good metric instead of finding one
    from the identity. ``progress_bar`` is kept for compatibility; progress
    goes through ``callback``.
    """
    del progress_bar
    num_chains = check_int("num_chains", num_chains, minimum=1)
    num_warmup = check_int("num_warmup", num_warmup, minimum=0)
    num_samples = check_int("num_samples", num_samples, minimum=1)
    total = num_warmup + num_samples
    if chunk_size is None:
        chunk_size = total if callback is None else 50
    chunk_size = min(check_int("chunk_size", chunk_size, minimum=1), total)
    num_chunks = -(-total // chunk_size)
    key_init, key_chains = jax.random.split(rng_key)
    potential_fn, postprocess_fn, starts = _initial_points(
        model, args, kwargs, init_params, num_chains, key_init)
    init_kernel, sample_kernel = hmc(potential_fn, algo="NUTS")
    chain_keys = jax.random.split(key_chains, num_chains)
    masses = (_laplace_inverse_masses(potential_fn, starts, dense_mass)
              if laplace_mass else [None] * num_chains)
    # One compiled initialisation serves every chain: eagerly, the potential's
    # value and gradient at the start compiled each of their operations on its
    # own (8.6 s of a NUTS run at K = 1 on Old Faithful). NumPyro itself traces
    # init_kernel under pmap/vmap; what it records in its closure at tracing
    # (warmup adapter, integrator) does not depend on the traced values.
    initialise = jax.jit(lambda start, key, mass: init_kernel(
        start, num_warmup, dense_mass=dense_mass,
        target_accept_prob=target_accept_prob, rng_key=key,
        inverse_mass_matrix=mass))
    states = [initialise(start, key, mass)
              for start, key, mass in zip(starts, chain_keys, masses, strict=True)]
    # Stacked, with Python scalars' weak types made strong: the state that comes
    # out of a chunk must match the one going in, or the chunk recompiles.
    state = jax.tree_util.tree_map(
        lambda *leaves: jax.lax.convert_element_type(
            jnp.stack(leaves), jnp.result_type(*leaves)), *states)

    def advance(state):
        def body(state, _):
            state = sample_kernel(state)
            return state, (state.z, state.diverging, state.num_steps,
                           state.potential_energy)

        return jax.lax.scan(body, state, None, length=chunk_size)

    if 1 < num_chains <= jax.local_device_count():
        step = jax.pmap(advance)
        # The state placed as a pmap output already is: else the second chunk,
        # fed the first one's (sharded) output, compiles the program again.
        state = jax.pmap(lambda leaf: leaf)(state)
    else:
        step = jax.jit(jax.vmap(advance))
    draws, extras, done = [], [], 0
    warmup_steps = np.zeros(num_chains, dtype=np.int64)

    def collected():
        if not draws:
            return None
        z, stats = _join(draws, num_samples), _join(extras, num_samples)
        sites = _constrained(postprocess_fn, z)
        idata = _to_inference_data(sites, stats, model, args, kwargs, drop_sites)
        # The cost of warmup, in gradient evaluations per chain.
        idata.sample_stats.attrs["warmup_leapfrog_steps"] = warmup_steps.tolist()
        return idata

    try:
        for _ in range(num_chunks):
            # Block: the callback (progress, interrupts) must see real progress,
            # not a queue of dispatched chunks.
            state, (z, diverging, num_steps, energy) = jax.block_until_ready(
                step(state))
            first = max(num_warmup - done, 0)  # this chunk's first kept draw
            warmup_steps += np.asarray(num_steps[:, :first]).sum(axis=1)
            done += chunk_size
            if done > num_warmup:
                draws.append({name: value[:, first:] for name, value in z.items()})
                extras.append({"diverging": diverging[:, first:],
                               "num_steps": num_steps[:, first:],
                               "potential_energy": energy[:, first:]})
            if callback is not None:
                callback(min(max(done - num_warmup, 0), num_samples), num_samples)
    except KeyboardInterrupt as interrupt:
        raise SamplingInterrupted(collected()) from interrupt
    return collected()


def _laplace_inverse_masses(potential_fn, starts, dense: bool) -> list:
    """Per chain, the inverse Hessian of the potential at its start (flattened
    in the order NumPyro flattens the parameters), its eigenvalues kept
    positive: the covariance of the Laplace approximation there; its diagonal
    if not ``dense``; None where the Hessian is not finite.

    Every chain's Hessian comes from one compiled call (jit of vmap): taken
    eagerly, one chain at a time, each of the hundreds of operations of the
    model's second derivative compiled on its own (15.6 s of a 35 s NUTS run
    at K = 1 on Old Faithful, against 4 s of sampling).
    """
    flat = [ravel_pytree(start)[0] for start in starts]
    unravel = ravel_pytree(starts[0])[1]
    hessians = np.asarray(jax.jit(jax.vmap(jax.hessian(
        lambda v: potential_fn(unravel(v)))))(jnp.stack(flat)))
    return [_inverse_mass(hessian, dense) for hessian in hessians]


def _inverse_mass(hessian, dense: bool):
    """The inverse of a Hessian with its eigenvalues floored, or None."""
    if not np.all(np.isfinite(hessian)):
        return None
    values, vectors = np.linalg.eigh(0.5 * (hessian + hessian.T))
    # Curvature below 1e-8 of the largest (or negative, away from the mode) is
    # treated as that floor: a wide direction, never a negative variance.
    values = np.maximum(values, 1e-8 * max(values.max(), 1e-300))
    covariance = (vectors / values) @ vectors.T
    return jnp.asarray(covariance if dense else np.diag(covariance))


def _initial_points(model, args, kwargs, init_params, num_chains, rng_key):
    """(potential_fn, postprocess_fn, one unconstrained start per chain)."""
    per_chain = isinstance(init_params, list | tuple)
    if per_chain and len(init_params) != num_chains:
        raise ValueError(
            f"init_params holds {len(init_params)} per-chain starts but "
            f"num_chains={num_chains}; give one dict per chain or a single dict"
        )
    strategy = (init_to_value(values=dict(init_params))
                if isinstance(init_params, dict) else init_to_uniform())
    keys = jax.random.split(rng_key, num_chains)
    # Every chain's key at once: NumPyro then searches the starts in one
    # compiled loop; with one key it evaluates the model and its gradient
    # eagerly, compiling each operation on its own (7.6 s of the run above).
    info = initialize_model(keys, model, init_strategy=strategy,
                            model_args=args, model_kwargs=kwargs)
    if per_chain:
        starts = [unconstrain_fn(model, args, kwargs, dict(start))
                  for start in init_params]
    else:
        starts = [jax.tree_util.tree_map(lambda leaf, i=i: leaf[i],
                                         info.param_info.z)
                  for i in range(num_chains)]
    return info.potential_fn, info.postprocess_fn, starts


def _constrained(postprocess_fn, z: dict) -> dict:
    """Unconstrained draws (chain, draw, ...) -> the model's sites (constrained,
    deterministic sites included)."""
    leaves = jax.tree_util.tree_leaves(z)
    num_chains, num_draws = leaves[0].shape[:2]
    flat = jax.tree_util.tree_map(
        lambda a: jnp.reshape(a, (num_chains * num_draws,) + a.shape[2:]), z)
    sites = jax.jit(jax.vmap(postprocess_fn))(flat)
    return {name: np.asarray(value).reshape((num_chains, num_draws)
                                            + value.shape[1:])
            for name, value in sites.items()}


def _join(chunks: list, num_samples: int) -> dict:
    """Concatenate per-chunk {name: (chain, draw, ...)} along draws, trimmed."""
    return {name: np.concatenate([np.asarray(chunk[name]) for chunk in chunks],
                                 axis=1)[:, :num_samples]
            for name in chunks[0]}


def _to_inference_data(draws: dict, extra: dict, model, args, kwargs,
                       drop_sites=()) -> az.InferenceData:
    """Build InferenceData without re-sampling the model from its prior.

    ``az.from_numpyro`` traces the model with prior draws to find observed sites,
    which fails for vague hyperpriors whose draws underflow to 0; here the model is
    traced at the first posterior draw instead.
    """
    first = {name: value[0, 0] for name, value in draws.items()}
    model_trace = handlers.trace(
        handlers.substitute(handlers.seed(model, 0), data=first)
    ).get_trace(*args, **kwargs)
    observed = {
        name: np.asarray(site["value"])
        for name, site in model_trace.items()
        if site["type"] == "sample" and site["is_observed"]
    }
    num_steps = np.asarray(extra["num_steps"])
    sample_stats = {
        "diverging": np.asarray(extra["diverging"]),
        "n_steps": num_steps,
        "tree_depth": np.floor(np.log2(np.maximum(num_steps, 1))).astype(int) + 1,
        "lp": -np.asarray(extra["potential_energy"]),
    }
    return az.from_dict(
        posterior={name: np.asarray(value) for name, value in draws.items()
                   if name not in drop_sites},
        sample_stats=sample_stats,
        observed_data=observed,
    )


def diagnostics(idata: az.InferenceData, *, var_names=None, warn: bool = True):
    """R-hat, bulk/tail ESS per parameter element and divergence counts.

    Returns a DataFrame indexed by parameter element (as ``az.summary``) with
    columns ``r_hat``, ``ess_bulk``, ``ess_tail``, ``divergences`` (the total number
    of divergent transitions, the same for every row: a divergence belongs to a
    draw, not to a variable) and ``ok``. With ``warn``, a SamplerWarning names every
    element with r_hat > 1.01 or ESS < 100 per chain, and any divergence.
    """
    # Unrounded: az.summary rounds to 2 decimals by default, which would let an
    # R-hat of 1.014 pass the 1.01 gate as "1.01".
    summary = az.summary(idata, var_names=var_names, kind="diagnostics",
                         round_to="none")
    num_chains = int(idata.posterior.sizes["chain"])
    divergent = 0
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        divergent = int(np.asarray(idata.sample_stats["diverging"]).sum())
    table = pd.DataFrame(
        {
            "r_hat": summary["r_hat"],
            "ess_bulk": summary["ess_bulk"],
            "ess_tail": summary["ess_tail"],
            "divergences": divergent,
        }
    )
    min_ess = MIN_ESS_PER_CHAIN * num_chains
    high_rhat = table.index[table["r_hat"] > RHAT_THRESHOLD].tolist()
    low_ess = table.index[
        (table["ess_bulk"] < min_ess) | (table["ess_tail"] < min_ess)
    ].tolist()
    table["ok"] = (
        (table["r_hat"] <= RHAT_THRESHOLD)
        & (table["ess_bulk"] >= min_ess)
        & (table["ess_tail"] >= min_ess)
        & (divergent == 0)
    )
    if warn:
        problems = []
        if high_rhat:
            problems.append(f"r_hat > {RHAT_THRESHOLD} for {high_rhat}")
        if low_ess:
            problems.append(f"ESS < {MIN_ESS_PER_CHAIN} per chain for {low_ess}")
        if divergent:
            problems.append(f"{divergent} divergent transition(s)")
        if problems:
            emit_warning(
                "NUTS diagnostics: " + "; ".join(problems)
                + ". Run longer chains, raise target_accept_prob, or reparametrise.",
                SamplerWarning,
            )
    return table
