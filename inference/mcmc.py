"""NUTS on any NumPyro model, returned as ArviZ InferenceData, and its diagnostics.

Chains run in parallel on CPU when JAX sees enough host devices. That number is
fixed when JAX starts, so scripts call ``numpyro.set_host_device_count(n)`` before
any JAX work (tests/conftest.py does the same); otherwise chains are vectorised
on one device, which gives the same draws for the same key layout only up to
chain method, but the same distribution.

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
from numpyro import handlers
from numpyro.infer import MCMC, NUTS
from numpyro.infer.initialization import init_to_uniform, init_to_value
from numpyro.infer.util import unconstrain_fn

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


def _chain_method(num_chains: int) -> str:
    if num_chains == 1:
        return "sequential"
    if jax.local_device_count() >= num_chains:
        return "parallel"
    return "vectorized"


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

    Warmup runs as one compiled call, then the draws come in chunks of
    ``chunk_size`` per chain (default: all at once, or 100 with a callback);
    each chunk continues from the last state (NumPyro's ``post_warmup_state``),
    so chunked and unchunked runs are the same Markov chain. After warmup and
    after every chunk ``callback(draws_done, num_samples)`` runs; when it raises
    ``KeyboardInterrupt`` (an interrupt requested in between),
    ``SamplingInterrupted`` is raised carrying the draws made so far.
    ``drop_sites``: sites left out of the posterior group (e.g. the
    standardised coordinates of a reparametrised model).
    """
    num_chains = check_int("num_chains", num_chains, minimum=1)
    num_warmup = check_int("num_warmup", num_warmup, minimum=0)
    num_samples = check_int("num_samples", num_samples, minimum=1)
    if chunk_size is None:
        chunk_size = num_samples if callback is None else 100
    chunk_size = min(check_int("chunk_size", chunk_size, minimum=1), num_samples)
    num_chunks = -(-num_samples // chunk_size)
    # Equal chunks (one compiled program); the last draws beyond num_samples
    # are dropped.
    chunk_size = -(-num_samples // num_chunks)
    chain_starts = None
    if isinstance(init_params, list | tuple):
        if len(init_params) != num_chains:
            raise ValueError(
                f"init_params holds {len(init_params)} per-chain starts but "
                f"num_chains={num_chains}; give one dict per chain or a single dict"
            )
        # MCMC takes per-chain starts in the unconstrained space of the sites.
        unconstrained = [unconstrain_fn(model, args, kwargs, dict(start))
                         for start in init_params]
        # One chain takes an unbatched start, several a leading chain axis.
        chain_starts = unconstrained[0] if num_chains == 1 else jax.tree_util.tree_map(
            lambda *leaves: jnp.stack(leaves), *unconstrained
        )
        init_params = None
    init_strategy = (
        init_to_uniform()
        if init_params is None
        else init_to_value(values=dict(init_params))
    )
    kernel = NUTS(
        model,
        init_strategy=init_strategy,
        target_accept_prob=target_accept_prob,
        dense_mass=dense_mass,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=chunk_size,
        num_chains=num_chains,
        chain_method=_chain_method(num_chains),
        progress_bar=progress_bar,
    )
    extra_fields = ("diverging", "num_steps", "potential_energy")
    mcmc.warmup(rng_key, *args, extra_fields=extra_fields, init_params=chain_starts,
                collect_warmup=False, **kwargs)
    draws, extras = [], []

    def collected():
        if not draws:
            return None
        return _to_inference_data(_join(draws, num_samples), _join(extras, num_samples),
                                  model, args, kwargs, drop_sites)

    try:
        if callback is not None:
            callback(0, num_samples)
        for _ in range(num_chunks):
            mcmc.run(mcmc.post_warmup_state.rng_key, *args, extra_fields=extra_fields,
                     **kwargs)
            draws.append(mcmc.get_samples(group_by_chain=True))
            extras.append(mcmc.get_extra_fields(group_by_chain=True))
            mcmc.post_warmup_state = mcmc.last_state
            if callback is not None:
                callback(min(len(draws) * chunk_size, num_samples), num_samples)
    except KeyboardInterrupt as interrupt:
        raise SamplingInterrupted(collected()) from interrupt
    return collected()


def _join(chunks: list, num_samples: int) -> dict:
    """Concatenate per-chunk {site: (chain, draw, ...)} along draws, trimmed."""
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
