"""The Gaussian mixture fitted by EM, MAP-EM, MAP, VI and NUTS, and checked.

Each step is compared with an independent reference, with a tolerance from the
error source of the method (docs/gaussian_mixture.md):

  EM       vs scikit-learn's GaussianMixture from the same start for the same
           iterations (float64 rounding), vs its best of the same number of
           restarts (the stopping rule), and its own trace (never decreases);
           BIC vs scikit-learn's ``bic`` at the same parameters;
  MAP-EM   (EM with the conjugate prior's closed-form M-step) vs NumPyro's
           AutoDelta MAP of the same model and prior (optimiser precision, in
           posterior sds);
  NUTS     relabelled against the EM fit: R-hat, ESS and divergences, and the
           EM estimate inside every 94% HDI (``crosscheck.mixtures``);
  VI       mean-field means vs the NUTS means.

MAP, VI and NUTS run in standardised coordinates (``inference.posterior``):
none of them depends on the units of the columns.
"""

import warnings

import jax
import numpy as np
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture

from latentmix.inference.crosscheck.mixtures import (
    nuts_rows,
    permuted_starts,
    relabelled_nuts,
    vi_rows,
)
from latentmix.inference.crosscheck.table import (
    CrossCheck,
    check_methods,
    check_row,
    make_table,
    timed_step,
)
from latentmix.inference.em import fit_gaussian_mixture, fit_gaussian_mixture_restarts
from latentmix.inference.em.driver import ConvergenceWarning
from latentmix.inference.posterior.gaussian_mixture import gmm_map, gmm_nuts, gmm_vi
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.selection import gmm_bic
from latentmix.models import gaussian_mixture as gm

__all__ = [
    "METHODS",
    "crosscheck_gaussian_mixture",
    "fit_map_em",
    "naive_start",
    "sklearn_precisions",
]

METHODS = ("map", "vi", "nuts")
REG_COVAR = 1e-6  # scikit-learn's default floor, relative here, both sides
SAME_START_RTOL = 1e-10  # float64 rounding through a few contractive EM steps
MAP_TOL_SD = 1e-3  # optimiser precision, in posterior sds (see _check_map)
BIC_RTOL = 1e-10  # two float64 sums of n log-densities
# Without NUTS or VI draws there is no posterior sd to measure the MAP in; the
# log joint at the AutoDelta optimum is then compared with MAP-EM's: both are the
# same float64 sum, so they agree to rounding when the optimiser found the mode
# (a different mode differs by O(1) nats).
MAP_LOG_JOINT_RTOL = 1e-9


@follows_input_precision
def crosscheck_gaussian_mixture(
    x,
    num_components: int,
    *,
    covariance_type: str = "full",
    rng_key,
    methods=METHODS,
    num_restarts: int = 10,
    max_iters: int = 1000,
    tol: float = 1e-10,
    reg_covar: float | None = None,
    prior=None,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    map_steps: int = 2000,
    vi_steps: int = 1500,
    vi_draws: int = 4000,
    same_start_iters: int = 20,
    label_switching: bool = False,
    progress_fn=None,
    callback=None,
    em_fn=None,
) -> CrossCheck:
    """Fit a Gaussian mixture by EM, then by ``methods``, and compare.

    Args:
      x: (n, d) data.
      num_components: K.
      covariance_type: "full", "tied", "diag" or "spherical".
      rng_key: JAX PRNG key, split into em, start, map, vi, nuts.
      methods: any of "map" (MAP-EM and AutoDelta), "vi" (mean-field), "nuts".
        EM and its scikit-learn checks always run.
      num_restarts, max_iters, tol, reg_covar: EM settings (tol is absolute on
        the mean log-likelihood per row; the default 1e-10 lets the scikit-learn
        comparison resolve 1e-8 nats; reg_covar None: 1e-6 of the smallest
        column variance, ``models.gaussian_mixture.relative_floor``, given to
        scikit-learn too, so that the floor is negligible in any units).
      prior: GMMPrior of the Bayesian methods; None: ``default_prior(x, K)``.
      num_chains, num_warmup, num_samples: NUTS sizes.
      map_steps, vi_steps, vi_draws: SVI sizes.
      same_start_iters: iterations of the same-start comparison.
      label_switching: start NUTS chains in permuted labellings of the EM fit
        (and check that the raw draws switch); otherwise every chain starts at
        the EM fit itself.
      progress_fn: optional callable receiving one line per step.
      em_fn: optional callable receiving the EM result as soon as it exists
        (e.g. to write it before the slower methods run).
      callback: passed to the chunked samplers and optimisers
        (``inference.mcmc.run_nuts``): progress within a step, interrupts.

    Returns:
      ``CrossCheck``; ``fits`` holds "em" (the best EMResult), "restarts"
      (EMRestarts), "sklearn" (scikit-learn's best of num_restarts),
      "same_start" (GMMParams of the naive start), "map_em", "map"
      (SVIResult, standardised coordinates) and "map_sites" (the MAP in the
      data's units), "vi" and "vi_draws" (data's units), "nuts" (raw draws) as
      run, "prior" and "seconds";
      ``idata`` the relabelled NUTS draws (None without NUTS).
    """
    check_methods(methods, METHODS, num_chains, num_samples)
    x = np.asarray(x, dtype=np.float64)
    gm.check_covariance_type(covariance_type)
    if reg_covar is None:  # scale-free: relative to the smallest column variance
        reg_covar = gm.relative_floor(x, REG_COVAR)
    keys = dict(zip(("em", "start", "map", "vi", "nuts"),
                    jax.random.split(rng_key, 5), strict=True))
    prior = gm.default_prior(x, num_components) if prior is None else prior
    seconds: dict = {}
    fits = {"prior": prior, "seconds": seconds}
    options = {"covariance_type": covariance_type, "num_restarts": num_restarts,
               "max_iters": max_iters, "tol": tol, "reg_covar": reg_covar,
               "rng_key": keys["em"]}
    with timed_step("EM with restarts", progress_fn, seconds):
        fits["restarts"] = fit_gaussian_mixture_restarts(x, num_components, **options)
        # Same shapes and static options: the compiled program is reused.
        fits["em"] = fit_gaussian_mixture(x, num_components, **options)
    em = fits["em"]
    if em_fn is not None:
        em_fn(em)
    with timed_step("scikit-learn cross-check", progress_fn, seconds):
        start = naive_start(x, num_components, covariance_type,
                            int(jax.random.randint(keys["start"], (), 0, 2**31 - 1)))
        fits["same_start"] = start
        rows, fits["sklearn"] = _check_em(x, em, fits["restarts"], start, options,
                                          same_start_iters)
        rows.append(_check_bic(x, em, covariance_type))
    sites = gm.to_sites(em.params, covariance_type)
    sites = {name: np.asarray(value) for name, value in sites.items()}
    common = {"covariance_type": covariance_type, "prior": prior}
    if "map" in methods:
        with timed_step("MAP-EM and AutoDelta MAP", progress_fn, seconds):
            fits["map_em"] = fit_map_em(x, em, prior, covariance_type)
            fits["map"], fits["map_sites"] = gmm_map(
                x, num_components, init=fits["map_em"].params, rng_key=keys["map"],
                num_steps=map_steps, callback=callback, **common)
    idata = None
    if "nuts" in methods:
        with timed_step("NUTS", progress_fn, seconds):
            starts = permuted_starts(sites, num_chains, label_switching)
            fits["nuts"] = gmm_nuts(
                x, num_components, init=starts, rng_key=keys["nuts"],
                num_chains=num_chains, num_warmup=num_warmup,
                num_samples=num_samples, callback=callback, **common)
            idata = relabelled_nuts(fits["nuts"], em.params)
    if "vi" in methods:
        with timed_step("VI (mean-field)", progress_fn, seconds):
            fits["vi"], fits["vi_draws"] = gmm_vi(
                x, num_components, init=em.params, rng_key=keys["vi"],
                num_steps=vi_steps, num_draws=vi_draws, callback=callback, **common)
    if "map" in methods:
        rows.append(_check_map(fits, idata, covariance_type, x, num_components,
                               prior))
    if idata is not None:
        rows += nuts_rows(sites, fits["nuts"], idata,
                          label_switching=label_switching)
        if "vi_draws" in fits:
            rows += vi_rows(fits["vi_draws"], idata, list(sites))
    return CrossCheck(make_table(rows), fits, idata)


def naive_start(x, num_components: int, covariance_type: str = "full",
                seed: int = 0) -> gm.GMMParams:
    """A deliberately naive start: random rows as means, the data covariance each
    (in the structure of ``covariance_type``)."""
    rows = np.random.default_rng(seed).choice(len(x), num_components, replace=False)
    covariance = np.atleast_2d(np.cov(x.T, bias=True))
    if covariance_type == "diag":
        covariance = np.diag(np.diag(covariance))
    elif covariance_type == "spherical":
        covariance = np.mean(np.diag(covariance)) * np.eye(len(covariance))
    return gm.GMMParams(
        np.full(num_components, 1.0 / num_components), x[rows].copy(),
        np.broadcast_to(covariance, (num_components,) + covariance.shape).copy())


def sklearn_precisions(params: gm.GMMParams, covariance_type: str):
    """``precisions_init`` in scikit-learn's shape for each covariance type."""
    covariances = np.asarray(params.covariances, np.float64)
    if covariance_type == "full":
        return np.linalg.inv(covariances)
    if covariance_type == "tied":
        return np.linalg.inv(covariances[0])
    variances = np.diagonal(covariances, axis1=1, axis2=2)
    return 1.0 / (variances if covariance_type == "diag" else variances[:, 0])


def _sklearn_params(fitted: GaussianMixture, covariance_type: str) -> gm.GMMParams:
    """scikit-learn's fitted parameters as full (k, d, d) GMMParams."""
    covariances = np.asarray(fitted.covariances_)
    num_components, num_features = fitted.means_.shape
    if covariance_type == "tied":
        covariances = np.broadcast_to(covariances, (num_components,)
                                      + covariances.shape)
    elif covariance_type == "diag":
        covariances = covariances[:, :, None] * np.eye(num_features)
    elif covariance_type == "spherical":
        covariances = covariances[:, None, None] * np.eye(num_features)
    return gm.GMMParams(fitted.weights_, fitted.means_, covariances)


def _max_relative_diff(ours: gm.GMMParams, theirs: gm.GMMParams) -> float:
    """max over fields of max|ours - theirs| / max|theirs| (scale-free)."""
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))
                     / np.max(np.abs(np.asarray(b))))
               for a, b in zip(ours, theirs, strict=True))


def _check_em(x, em, restarts, start, options, same_start_iters):
    """EM against scikit-learn (same start; same restarts) and its own trace."""
    num_components = em.params.weights.shape[0]
    covariance_type = options["covariance_type"]
    common = {"covariance_type": covariance_type, "reg_covar": options["reg_covar"]}
    with warnings.catch_warnings():
        # tol=0 runs max_iter iterations and then warns that it did not converge.
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        same_start = GaussianMixture(
            num_components, tol=0.0, max_iter=same_start_iters,
            weights_init=start.weights, means_init=start.means,
            precisions_init=sklearn_precisions(start, covariance_type), **common,
        ).fit(x)
        ours = fit_gaussian_mixture(x, num_components, init=start,
                                    max_iters=same_start_iters, tol=0.0, **common)
    diff = _max_relative_diff(ours.params, _sklearn_params(same_start,
                                                           covariance_type))
    # The same float64 arithmetic up to operation order (~1e-16 relative per
    # step), damped by the contracting EM map; 1e-10 leaves room for BLAS.
    rows = [check_row("EM, same start and iterations", "EM",
                      f"sklearn GaussianMixture (max_iter={same_start_iters}, tol=0)",
                      diff, SAME_START_RTOL, "max relative param diff <= tol")]
    best_sklearn = GaussianMixture(
        num_components, n_init=options["num_restarts"], tol=options["tol"],
        max_iter=options["max_iters"],
        random_state=int(np.asarray(jax.random.key_data(options["rng_key"])).sum()
                         % (2**31)),
        **common,
    ).fit(x)
    ours_ll = float(em.log_likelihood)  # mean log-likelihood at the returned params
    theirs_ll = float(best_sklearn.score(x))
    # Both stop once the mean log-likelihood moves by < tol; EM converges
    # linearly, so with a contraction rate below 0.99 each is within 100 tol of
    # its local maximum.
    ll_tol = 100 * options["tol"]
    rows.append(check_row(
        "EM, best of restarts: mean log-lik", "EM",
        f"sklearn best of n_init={options['num_restarts']} ({theirs_ll:.10f})",
        theirs_ll - ours_ll, ll_tol, "sklearn - ours <= tol",
        note=f"ours {ours_ll:.10f}; {int(em.num_iters)} iterations"))
    trace = np.asarray(em.trace[: int(em.num_iters)])
    drops = max(0.0, -float(np.min(np.diff(trace), initial=0.0)))
    # Float rounding of a mean of n log-densities: a few ulp of its size.
    monotone_tol = 64 * np.finfo(float).eps * np.max(np.abs(trace), initial=1.0)
    rows.append(check_row("EM trace never decreases", "EM", "EM theory (Jensen)",
                          drops, monotone_tol, "largest drop <= tol",
                          note=f"{int(restarts.failed.sum())} failed restarts"))
    return rows, best_sklearn


def _check_bic(x, em, covariance_type):
    """gmm_bic against scikit-learn's bic evaluated at the same parameters."""
    num_components = em.params.weights.shape[0]
    reference = GaussianMixture(num_components, covariance_type=covariance_type)
    # scikit-learn reads only these attributes in bic(); set them from our fit,
    # in scikit-learn's shapes for the covariance type.
    precisions = sklearn_precisions(em.params, covariance_type)
    reference.weights_ = np.asarray(em.params.weights)
    reference.means_ = np.asarray(em.params.means)
    reference.precisions_ = precisions
    if covariance_type in ("full", "tied"):
        reference.precisions_cholesky_ = np.linalg.cholesky(precisions)
    else:
        reference.precisions_cholesky_ = np.sqrt(precisions)
    ours = float(gmm_bic(em.params, x, covariance_type))
    theirs = float(reference.bic(x))
    diff = abs(ours - theirs) / abs(theirs)
    return check_row("BIC", "EM", f"sklearn GaussianMixture.bic ({theirs:.6f})",
                     diff, BIC_RTOL, "relative diff <= tol", note=f"ours {ours:.6f}")


def fit_map_em(x, em, prior, covariance_type):
    """MAP-EM with ``prior`` from the EM fit (same labelling).

    reg_covar=0 puts it exactly on the posterior mode (the prior's scale keeps
    the covariances regular); tol 1e-13 on the mean log posterior leaves the
    parameters ~1e-6 relative from the mode (linear convergence).
    """
    return fit_gaussian_mixture(x, em.params.weights.shape[0], init=em.params,
                                covariance_type=covariance_type, prior=prior,
                                reg_covar=0.0, tol=1e-13, max_iters=5000)


def _check_map(fits, idata, covariance_type, x, num_components, prior):
    """Largest |AutoDelta - MAP-EM| in units of the posterior sd.

    Adam and then BFGS settle within ~1e-6 sd of the mode (``fit_map``). A real
    disagreement, e.g. a mode of the density with the Jacobian of the
    transforms, lies O(1/sqrt(n)) sd away: 1e-3 sd separates them. The
    posterior sd comes from the NUTS draws, else from the VI draws; without
    either, the log joint densities at both optima are compared.
    """
    map_em, map_sites = fits["map_em"], fits["map_sites"]
    sites = gm.to_sites(map_em.params, covariance_type)
    note = (f"MAP-EM {int(map_em.num_iters)} iterations, "
            f"converged={bool(map_em.converged)}; {fits['map'].note} "
            f"{fits['map'].criterion:.2g}")
    reference = "fit_map on models.gaussian_mixture.model, same prior"
    if idata is not None or "vi_draws" in fits:
        if idata is not None:
            posterior = idata.posterior
            sd = {name: posterior[name].std(("chain", "draw")).values
                  for name in sites}
        else:
            sd = {name: np.asarray(fits["vi_draws"][name]).std(axis=0)
                  for name in sites}
        diff = max(float(np.max(np.abs(np.asarray(map_sites[name])
                                       - np.asarray(value)) / sd[name]))
                   for name, value in sites.items())
        return check_row("MAP-EM vs AutoDelta MAP", "MAP", reference, diff,
                         MAP_TOL_SD, "max |diff| / posterior sd <= tol", note=note)
    from numpyro.infer.util import log_density

    def log_joint(values):
        return float(log_density(gm.model, (x, num_components),
                                 {"covariance_type": covariance_type,
                                  "prior": prior}, values)[0])

    ours = log_joint({name: np.asarray(v) for name, v in map_sites.items()})
    theirs = log_joint({name: np.asarray(v) for name, v in sites.items()})
    diff = abs(ours - theirs) / abs(theirs)
    return check_row("MAP-EM vs AutoDelta MAP", "MAP", reference, diff,
                     MAP_LOG_JOINT_RTOL, "relative log joint diff <= tol",
                     note=note + "; no draws to measure the posterior sd")
