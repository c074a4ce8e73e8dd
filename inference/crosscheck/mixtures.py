"""Checks every mixture shares: NUTS against EM after relabelling, VI against NUTS.

A mixture's posterior is invariant under permutations of the components, so
NUTS chains may each settle in another labelling (and switch within a chain).
The draws are relabelled against the EM fit (``inference.align.relabel_samples``)
before any diagnostic; then

  * R-hat of every parameter element <= 1.01 (Vehtari et al. 2021);
  * the NUTS diagnostics gate: bulk/tail ESS >= 100 per chain, no divergence;
  * the EM (maximum-likelihood) estimate lies inside every 94% HDI: with a weak
    prior and a near-Gaussian posterior the mode sits within a fraction of a
    posterior sd of the centre, far inside +-1.9 sd;
  * mean-field VI means within 0.3 posterior sd of the NUTS means;
  * optionally (``label_switching=True``) chains started in permuted labellings
    show switching in the raw draws (max raw R-hat >= 1.1), which is what the
    relabelling removes.
"""

import arviz as az
import numpy as np

from latentmix.inference.align import relabel_samples
from latentmix.inference.crosscheck.table import check_row, diagnostics_row
from latentmix.inference.mcmc import RHAT_THRESHOLD

__all__ = [
    "HDI_PROB",
    "SWITCHING_RHAT",
    "VI_TOL_SD",
    "nuts_rows",
    "permuted_starts",
    "relabelled_nuts",
    "vi_rows",
]

HDI_PROB = 0.94
SWITCHING_RHAT = 1.1  # raw draws from permuted starts must exceed this
# Monte Carlo error of both means is ~0.02-0.03 sd (ESS ~ 1000, 4000 VI draws);
# mean-field VI in unconstrained space shifts means by a fraction of the
# posterior sd (tests measured <= 0.14 sd on Old Faithful and on basket
# subsamples); a guide or model error shows as shifts of several sds.
VI_TOL_SD = 0.3


def permuted_starts(sites: dict, num_chains: int, permute: bool) -> list[dict]:
    """One start per chain at the EM sites; with ``permute``, chain c has the
    component labels rolled by c (so chains disagree on what "component 0" is).

    Sites with a component axis first ("weights", "means", "covariances",
    "variances", "probs") are rolled; "group_weights" (g, k) along its last
    axis; shared sites ("covariance" of a tied GMM) are kept.
    """
    rolled_first = ("weights", "means", "covariances", "variances", "probs")
    starts = []
    for chain in range(num_chains):
        start = {}
        for name, value in sites.items():
            value = np.asarray(value)
            if permute and name in rolled_first:
                value = np.roll(value, chain, axis=0)
            elif permute and name == "group_weights":
                value = np.roll(value, chain, axis=-1)
            start[name] = value
        starts.append(start)
    return starts


def relabelled_nuts(raw, reference):
    """The draws relabelled against ``reference`` (the EM parameters)."""
    return relabel_samples(raw, reference)[0]


def _rhat(idata, names) -> dict:
    rhat = az.rhat(idata, var_names=list(names))
    return {name: np.asarray(rhat[name]) for name in names}


def _largest(values: dict) -> float:
    return max(float(np.max(value)) for value in values.values())


def nuts_rows(sites: dict, raw, relabelled, *, label_switching: bool,
              hdi_sites=None) -> list:
    """R-hat (raw and relabelled), the diagnostics gate and EM inside the HDIs.

    ``sites``: the EM estimate as the model's sites (the reference the draws
    were relabelled against); R-hat and the gate cover all of them, the HDI
    check those named in ``hdi_sites`` (default all).
    """
    names = list(sites)
    hdi_sites = names if hdi_sites is None else list(hdi_sites)
    fixed_rhat = _rhat(relabelled, names)
    fixed_max = _largest(fixed_rhat)
    divergences = int(np.asarray(relabelled.sample_stats["diverging"]).sum())
    rows = []
    if label_switching:
        raw_max = _largest(_rhat(raw, names))
        rows.append(check_row(
            "NUTS raw draws: label switching", "NUTS",
            "chains started in permuted labellings", raw_max, SWITCHING_RHAT,
            "max raw r_hat >= tol", passed=raw_max >= SWITCHING_RHAT,
            note="switching shown: component-specific sites cannot mix across "
                 "chains"))
    rows.append(check_row(
        "NUTS relabelled draws: r_hat", "NUTS",
        "relabel_samples against the EM fit",
        fixed_max, RHAT_THRESHOLD, "max r_hat <= tol",
        note=f"{divergences} divergences"))
    rows.append(diagnostics_row(relabelled, names))
    hdi = az.hdi(relabelled, hdi_prob=HDI_PROB, var_names=hdi_sites)
    outside = []
    for name in hdi_sites:
        value = sites[name]
        low = hdi[name].sel(hdi="lower").values
        high = hdi[name].sel(hdi="higher").values
        value = np.asarray(value)
        inside = (low <= value) & (value <= high)
        outside += [f"{name}{list(index)}" for index in np.argwhere(~inside)]
    count = sum(np.size(sites[name]) for name in hdi_sites)
    rows.append(check_row(
        f"EM inside NUTS {round(100 * HDI_PROB)}% HDI", "EM",
        f"relabelled NUTS draws ({count} parameter elements)", len(outside), 0,
        "elements outside <= tol", note=", ".join(outside) or "all inside"))
    return rows


def vi_rows(vi_draws: dict, relabelled, names) -> list:
    """Mean-field VI means against the relabelled NUTS means, in posterior sds."""
    posterior = relabelled.posterior
    worst, where = 0.0, ""
    for name in names:
        nuts_mean = posterior[name].mean(("chain", "draw")).values
        nuts_sd = posterior[name].std(("chain", "draw")).values
        shift = np.abs(np.asarray(vi_draws[name]).mean(axis=0) - nuts_mean) / nuts_sd
        if float(np.max(shift)) > worst:
            worst, where = float(np.max(shift)), name
    return [check_row("VI means vs NUTS means", "VI", "relabelled NUTS means",
                      worst, VI_TOL_SD, "max |diff| / posterior sd <= tol",
                      note=f"largest at {where}")]
