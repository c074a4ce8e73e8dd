"""Gaussian mixture model: parameters, densities, conjugate priors, NumPyro model.

Model (articles 2 and 3 of the tutorial series; Bishop, PRML section 9.2):

    t_i ~ Categorical(weights)                          i = 1..n
    x_i | t_i = c ~ N(means_c, covariances_c)           x_i in R^d, c = 1..k

    log p(x_i | theta) = logsumexp_c [log weights_c + log N(x_i | means_c, cov_c)]

Covariance types (scikit-learn's names): "full" (one matrix per component), "tied"
(one matrix shared by all components), "diag" (one diagonal matrix per component)
and "spherical" (one variance per component). ``GMMParams.covariances`` always holds
full (k, d, d) matrices, whatever the type, so fits of different types compare with
each other, with the NumPyro model and with other libraries; the type only says
which entries are free.

Conjugate prior (``GMMPrior``; Murphy 2012, section 4.6.3; PRML eq. 2.157), with
alpha = weight_concentration, m0 = mean_prior, kappa0 = mean_precision,
nu = dof, Psi = scale:

    weights ~ Dirichlet(alpha)
    "full":      cov_c ~ InvWishart(nu, Psi),   means_c | cov_c ~ N(m0, cov_c / kappa0)
    "tied":      cov ~ InvWishart(nu, Psi),     means_c | cov ~ N(m0, cov / kappa0)
    "diag":      var_cj ~ InvGamma(nu / 2, Psi_jj / 2),
                 means_cj | var_cj ~ N(m0_j, var_cj / kappa0)
    "spherical": var_c ~ InvGamma(nu d / 2, tr(Psi) / 2),
                 means_c | var_c ~ N(m0, var_c I / kappa0)

Every variant reads the same way: nu pseudo-observations with scatter matrix Psi
(the diagonal and spherical priors are the conjugate priors of the variances a
d-dimensional observation informs). The NumPyro model samples each site in the
coordinates named here (weights, means, covariance matrix or variances), so its
log joint density is exactly ``log_prior + sum(log_likelihood)`` and its mode
(AutoDelta MAP) is the fixed point of MAP-EM (``inference.em.gaussian_mixture``).

Axis names: n rows, k components, d features.

References:
  1. C. M. Bishop, Pattern Recognition and Machine Learning, 2006, ch. 9.
  2. K. P. Murphy, Machine Learning: a Probabilistic Perspective, 2012, 4.6 and 11.4.
  3. scikit-learn, sklearn/mixture/_gaussian_mixture.py (parameter counts).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import gammaln, logsumexp, multigammaln, xlogy

from latentmix.data.simulate import simulate_gaussian_mixture
from latentmix.data.validation import check_int, is_traced

__all__ = [
    "COVARIANCE_TYPES",
    "GMMParams",
    "GMMPrior",
    "check_covariance_type",
    "check_params",
    "check_prior",
    "component_log_prob",
    "default_prior",
    "diagonal_variances",
    "from_sites",
    "log_likelihood",
    "log_prior",
    "model",
    "num_parameters",
    "responsibilities",
    "sample",
    "to_sites",
    # standardised coordinates (scale-free Bayesian inference)
    "AffineMap",
    "relative_floor",
    "standardise_prior",
    "standardise_sites",
    "standardising_map",
    "unstandardise_sites",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# Intermediates of shape (components in a batch, n, d) are capped at this many
# elements: large problems then loop over components (as scikit-learn does) instead
# of materialising an (n, k, d) array; small ones run all components at once.
_MAX_BATCH_ELEMENTS = 1 << 22

_HIGHEST = jax.lax.Precision.HIGHEST


class GMMParams(NamedTuple):
    """Parameters of a k-component Gaussian mixture in d dimensions.

    weights: (k,) mixing proportions, on the simplex.
    means: (k, d) component means.
    covariances: (k, d, d) symmetric positive-definite component covariances
        (full matrices for every covariance type).
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class GMMPrior(NamedTuple):
    """Hyperparameters of the conjugate prior (module docstring for the densities).

    weight_concentration: alpha, scalar or (k,), > 0 (>= 1 for MAP-EM, where the
        mode of the Dirichlet must exist).
    mean_prior: m0, (d,).
    mean_precision: kappa0 > 0, scalar; a mean's prior covariance is its
        component's covariance divided by kappa0.
    dof: nu > d - 1, scalar: the number of prior pseudo-observations.
    scale: Psi, (d, d) symmetric positive-definite scatter matrix of those
        pseudo-observations ("diag" reads its diagonal, "spherical" its trace).
    """

    weight_concentration: jax.Array
    mean_prior: jax.Array
    mean_precision: jax.Array
    dof: jax.Array
    scale: jax.Array


def check_covariance_type(covariance_type: str) -> str:
    """Raise ValueError unless ``covariance_type`` is one of COVARIANCE_TYPES."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got "
            f"{covariance_type!r}"
        )
    return covariance_type


def num_parameters(num_components: int, num_features: int, covariance_type: str) -> int:
    """Number of free parameters, as scikit-learn's ``GaussianMixture._n_parameters``.

    (k - 1) weights + k d means + the covariance entries: k d (d + 1) / 2 (full),
    d (d + 1) / 2 (tied), k d (diag) or k (spherical).
    """
    k = check_int("num_components", num_components, minimum=1)
    d = check_int("num_features", num_features, minimum=1)
    check_covariance_type(covariance_type)
    covariance_count = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return (k - 1) + k * d + covariance_count


def _check_shapes(params: GMMParams, x=None) -> None:
    """Static shape checks; they hold for tracers too."""
    k = params.weights.shape[-1]
    d = params.means.shape[-1]
    if (
        params.weights.ndim != 1
        or params.means.shape != (k, d)
        or params.covariances.shape != (k, d, d)
    ):
        raise ValueError(
            "GMMParams must have weights (k,), means (k, d) and covariances "
            f"(k, d, d); got {params.weights.shape}, {params.means.shape} and "
            f"{params.covariances.shape}"
        )
    if x is not None and (x.ndim != 2 or x.shape[1] != d):
        raise ValueError(
            f"x must have shape (n, {d}) to match the parameters, got {x.shape}"
        )


def map_components(batch_fn, xs, elements_per_component: int, out_axis: int = 0):
    """Apply ``batch_fn`` to memory-bounded batches of components and concatenate.

    ``batch_fn`` takes ``xs`` restricted to b components (leading axis b) and
    returns an array whose axis ``out_axis`` indexes those components. When all k
    components fit the budget (``_MAX_BATCH_ELEMENTS`` elements of size
    ``elements_per_component`` each) it is called once on everything, so XLA fuses
    across components; otherwise a ``lax.map`` loops over batches (the last one
    padded by repeating the last component, then cut).
    """
    num_components = jax.tree_util.tree_leaves(xs)[0].shape[0]
    batch_size = max(
        1, min(num_components, _MAX_BATCH_ELEMENTS // max(1, elements_per_component))
    )
    if batch_size == num_components:
        return batch_fn(xs)
    num_batches = -(-num_components // batch_size)
    padding = num_batches * batch_size - num_components

    def to_batches(leaf):
        leaf = jnp.concatenate([leaf, jnp.repeat(leaf[-1:], padding, axis=0)])
        return leaf.reshape((num_batches, batch_size) + leaf.shape[1:])

    out = jax.lax.map(batch_fn, jax.tree_util.tree_map(to_batches, xs))
    out = jnp.moveaxis(out, 0, out_axis)
    shape = out.shape
    out = out.reshape(shape[:out_axis] + (-1,) + shape[out_axis + 2 :])
    return jax.lax.slice_in_dim(out, 0, num_components, axis=out_axis)


def diagonal_variances(params: GMMParams, covariance_type: str) -> jax.Array:
    """Per-component, per-feature variances (k, d) of a diagonal/spherical type."""
    diagonal = jnp.diagonal(params.covariances, axis1=-2, axis2=-1)
    if covariance_type == "spherical":
        return jnp.broadcast_to(diagonal[:, :1], diagonal.shape)
    return diagonal


def component_log_prob(params: GMMParams, x, covariance_type: str = "full"):
    """log N(x_i | means_c, covariances_c) for every row and component, (n, k).

    log N(x | mu, S) = -d/2 log(2 pi) - 1/2 log|S| - 1/2 ||L^-1 (x - mu)||^2 with
    S = L L^T (Cholesky). "tied" factors one matrix; "diag" and "spherical" read
    only the diagonal of ``covariances`` and never factor a matrix.
    """
    check_covariance_type(covariance_type)
    x = jnp.asarray(x)
    _check_shapes(params, x)
    num_rows, num_features = x.shape
    means = params.means
    if covariance_type in ("full", "tied"):
        covariances = params.covariances
        if covariance_type == "tied":
            covariances = covariances[:1]
        chol = jnp.linalg.cholesky(covariances)
        eye = jnp.broadcast_to(jnp.eye(num_features, dtype=chol.dtype), chol.shape)
        inv_chol = solve_triangular(chol, eye, lower=True)
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
        half_log_det = jnp.broadcast_to(half_log_det, params.weights.shape)
    if covariance_type == "full":
        inv_chol = jnp.broadcast_to(inv_chol, params.covariances.shape)

        def mahalanobis(args):
            # L^-1 (x - mu) as x L^-T - mu L^-T: one GEMM over all components, as
            # scikit-learn does; the data are centred by the EM core, so the
            # difference loses no more digits than the component separation costs.
            mean, inv_factor = args
            z = jnp.einsum("nd,ked->nke", x, inv_factor, precision=_HIGHEST)
            z = z - jnp.einsum("kd,ked->ke", mean, inv_factor, precision=_HIGHEST)
            return jnp.sum(z * z, axis=-1)

        squared = map_components(
            mahalanobis, (means, inv_chol), num_rows * num_features, out_axis=1
        )
    elif covariance_type == "tied":
        # One factor for every component: whiten the data once (n d^2 flops, not
        # n k d^2), then expand ||w_i - v_c||^2 = ||w_i||^2 - 2 w_i.v_c + ||v_c||^2
        # so the n k d part is one matrix product (accuracy: _expanded_squares).
        whitened = jnp.matmul(x, inv_chol[0].T, precision=_HIGHEST)
        whitened_means = jnp.matmul(means, inv_chol[0].T, precision=_HIGHEST)
        squared = jnp.maximum(
            jnp.sum(whitened * whitened, axis=1)[:, None]
            - 2.0 * jnp.matmul(whitened, whitened_means.T, precision=_HIGHEST)
            + jnp.sum(whitened_means * whitened_means, axis=1),
            0.0,
        )
    else:
        variances = diagonal_variances(params, covariance_type)
        half_log_det = 0.5 * jnp.sum(jnp.log(variances), axis=-1)
        squared = _expanded_squares(x * x, x, 1.0 / variances, means)
    return -0.5 * (num_features * math.log(2.0 * math.pi) + squared) - half_log_det


def _expanded_squares(x_squared, x, precisions, means):
    """sum_j p_cj (x_ij - mu_cj)^2 for all rows and components, (n, k), by GEMMs.

    Expands the square: (x^2) p^T - 2 x (mu p)^T + sum_j mu_cj^2 p_cj, two matrix
    products instead of an (n, k, d) array (scikit-learn's form for "diag").
    Accuracy: the terms are of size p x^2 while the result is of size p (x - mu)^2,
    so about log10(1 + R^2) digits cancel, R being a row's distance from the
    origin in component standard deviations. The EM core centres the data, so R is
    a component's distance from the data centre: float64 keeps over 8 digits up to
    R = 10^4; float32 keeps 7 - log10(1 + R^2) (3 at R = 100). A rounding error
    below zero is clipped (a squared distance is never negative).
    """
    squared = (
        jnp.matmul(x_squared, precisions.T, precision=_HIGHEST)
        - 2.0 * jnp.matmul(x, (means * precisions).T, precision=_HIGHEST)
        + jnp.sum(means * means * precisions, axis=-1)
    )
    return jnp.maximum(squared, 0.0)


def _weighted_log_prob(params: GMMParams, x, covariance_type: str):
    return jnp.log(params.weights) + component_log_prob(params, x, covariance_type)


def log_likelihood(params: GMMParams, x, covariance_type: str = "full") -> jax.Array:
    """log p(x_i | theta) per row, (n,): logsumexp over components (PRML eq. 9.14)."""
    return logsumexp(_weighted_log_prob(params, x, covariance_type), axis=-1)


def responsibilities(params: GMMParams, x, covariance_type: str = "full") -> jax.Array:
    """gamma_ic = p(t_i = c | x_i, theta) by Bayes' rule (PRML eq. 9.23), (n, k).

    Normalised in log space, so rows far from every component do not underflow to
    0/0; each row sums to 1.
    """
    weighted = _weighted_log_prob(params, x, covariance_type)
    return jnp.exp(weighted - logsumexp(weighted, axis=-1, keepdims=True))


def sample(rng_key, params: GMMParams, num_samples: int):
    """Draw ``(x, labels)``: x (num_samples, d) and the component of each row."""
    num_samples = check_int("num_samples", num_samples, minimum=1)
    params = GMMParams(*(jnp.asarray(leaf) for leaf in params))
    _check_shapes(params)
    return simulate_gaussian_mixture(rng_key, params, num_samples)


# ----------------------------------------------------------------------------- prior


def default_prior(x, num_components: int) -> GMMPrior:
    """Weak data-dependent prior, close to scikit-learn's BayesianGaussianMixture.

    alpha = 1 (uniform on the simplex, so MAP weights equal ML weights; scikit-learn
    uses 1/k, under which the MAP does not exist); m0 = column means of x;
    kappa0 = 0.01 (a mean may lie ten component standard deviations from m0;
    scikit-learn's 1 pulls separated means towards the data centre); nu = d and
    Psi = diag(column variances of x) (scikit-learn's dof and, on the diagonal,
    its covariance prior; a zero variance is replaced by 1 so Psi stays
    positive-definite).
    """
    x = jnp.asarray(x)
    check_int("num_components", num_components, minimum=1)
    dtype = x.dtype
    centre = jnp.mean(x, axis=0)
    variance = jnp.mean((x - centre) ** 2, axis=0)
    variance = jnp.where(variance > 0, variance, 1.0)
    num_features = x.shape[1]
    return GMMPrior(
        weight_concentration=jnp.asarray(1.0, dtype),
        mean_prior=centre,
        mean_precision=jnp.asarray(0.01, dtype),
        dof=jnp.asarray(float(num_features), dtype),
        scale=jnp.diag(variance),
    )


def check_prior(
    prior: GMMPrior, num_components: int, num_features: int, *, for_map: bool = False
) -> GMMPrior:
    """Validate the hyperparameters at the Python boundary; return them as arrays.

    ``for_map`` additionally requires weight_concentration >= 1: below 1 the
    Dirichlet density is unbounded at the simplex boundary and MAP-EM has no mode.
    """
    if not isinstance(prior, GMMPrior):
        raise TypeError(
            f"prior must be a GMMPrior or None, got {type(prior).__name__}; build "
            f"one with GMMPrior(...) or default_prior(x, num_components)"
        )
    if any(is_traced(leaf) for leaf in prior):
        return prior
    alpha = np.asarray(prior.weight_concentration, dtype=float)
    m0 = np.asarray(prior.mean_prior, dtype=float)
    kappa0 = np.asarray(prior.mean_precision, dtype=float)
    nu = np.asarray(prior.dof, dtype=float)
    psi = np.asarray(prior.scale, dtype=float)
    if alpha.shape not in ((), (num_components,)) or not np.all(alpha > 0):
        raise ValueError(
            f"prior.weight_concentration must be > 0 with shape () or "
            f"({num_components},), got {prior.weight_concentration!r}"
        )
    if for_map and not np.all(alpha >= 1):
        raise ValueError(
            f"MAP-EM needs prior.weight_concentration >= 1, got "
            f"{prior.weight_concentration!r}: below 1 the Dirichlet density is "
            f"unbounded at the boundary and the posterior has no mode. Use 1 "
            f"(uniform) or sample the posterior with NUTS instead"
        )
    if m0.shape != (num_features,) or not np.all(np.isfinite(m0)):
        raise ValueError(
            f"prior.mean_prior must be finite with shape ({num_features},), got "
            f"shape {m0.shape}"
        )
    if kappa0.shape != () or not kappa0 > 0 or not np.isfinite(kappa0):
        raise ValueError(
            f"prior.mean_precision must be a finite scalar > 0, got "
            f"{prior.mean_precision!r}"
        )
    if nu.shape != () or not nu > num_features - 1 or not np.isfinite(nu):
        raise ValueError(
            f"prior.dof must be a finite scalar > d - 1 = {num_features - 1}, got "
            f"{prior.dof!r}"
        )
    if (
        psi.shape != (num_features, num_features)
        or not np.allclose(psi, psi.T)
        or not np.all(np.linalg.eigvalsh(psi) > 0)
    ):
        raise ValueError(
            f"prior.scale must be a symmetric positive-definite "
            f"({num_features}, {num_features}) matrix, got shape {psi.shape}"
        )
    return GMMPrior(*(jnp.asarray(leaf) for leaf in prior))


def _log_inverse_gamma(value, concentration, rate):
    """log InvGamma(v | a, b) = a log b - lgamma(a) - (a + 1) log v - b / v."""
    return (
        concentration * jnp.log(rate)
        - gammaln(concentration)
        - (concentration + 1.0) * jnp.log(value)
        - rate / value
    )


def _log_inverse_wishart(covariances, dof, scale):
    """log InvWishart(S | nu, Psi) per matrix (Murphy eq. 4.165).

    nu/2 log|Psi| - nu d/2 log 2 - log Gamma_d(nu/2) - (nu + d + 1)/2 log|S|
    - 1/2 tr(Psi S^-1).
    """
    d = scale.shape[-1]
    chol = jnp.linalg.cholesky(covariances)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    scale_log_det = jnp.linalg.slogdet(scale)[1]
    # tr(Psi S^-1) = ||L^-1 C||_F^2 with Psi = C C^T and S = L L^T.
    scale_chol = jnp.linalg.cholesky(scale)
    scale_chol = jnp.broadcast_to(scale_chol, chol.shape)
    solved = solve_triangular(chol, scale_chol, lower=True)
    trace = jnp.sum(solved**2, axis=(-2, -1))
    return (
        0.5 * dof * scale_log_det
        - 0.5 * dof * d * math.log(2.0)
        - multigammaln(0.5 * dof, d)
        - 0.5 * (dof + d + 1.0) * log_det
        - 0.5 * trace
    )


def _log_mean_prior(means, covariances, mean_prior, mean_precision):
    """sum_c log N(means_c | m0, covariances_c / kappa0) for full matrices."""
    d = means.shape[-1]
    chol = jnp.linalg.cholesky(covariances)
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    z = solve_triangular(chol, (means - mean_prior)[..., None], lower=True)[..., 0]
    return jnp.sum(
        0.5 * d * jnp.log(mean_precision / (2.0 * math.pi))
        - half_log_det
        - 0.5 * mean_precision * jnp.sum(z * z, axis=-1)
    )


def log_prior(params: GMMParams, prior: GMMPrior, covariance_type: str = "full"):
    """log p(theta) of the conjugate prior, in the coordinates the model samples.

    Those coordinates are (weights, means, covariance matrices) for "full",
    (weights, means, one covariance matrix) for "tied" and (weights, means,
    variances) for "diag" / "spherical"; the value equals the prior part of the
    NumPyro model's log joint. Densities: module docstring.
    """
    check_covariance_type(covariance_type)
    _check_shapes(params)
    num_components, num_features = params.means.shape
    alpha = jnp.broadcast_to(prior.weight_concentration, (num_components,))
    alpha = alpha.astype(params.weights.dtype)
    log_dirichlet = (
        gammaln(jnp.sum(alpha))
        - jnp.sum(gammaln(alpha))
        + jnp.sum(xlogy(alpha - 1.0, params.weights))
    )
    nu, kappa0, m0 = prior.dof, prior.mean_precision, prior.mean_prior
    if covariance_type in ("full", "tied"):
        matrices = params.covariances
        if covariance_type == "tied":
            matrices = matrices[:1]
        log_cov = jnp.sum(_log_inverse_wishart(matrices, nu, prior.scale))
        log_means = _log_mean_prior(params.means, params.covariances, m0, kappa0)
        return log_dirichlet + log_cov + log_means
    variances = diagonal_variances(params, covariance_type)
    if covariance_type == "diag":
        log_var = jnp.sum(
            _log_inverse_gamma(variances, 0.5 * nu, 0.5 * jnp.diagonal(prior.scale))
        )
    else:
        log_var = jnp.sum(
            _log_inverse_gamma(
                variances[:, 0], 0.5 * nu * num_features, 0.5 * jnp.trace(prior.scale)
            )
        )
    log_means = jnp.sum(
        -0.5 * jnp.log(2.0 * math.pi * variances / kappa0)
        - 0.5 * kappa0 * (params.means - m0) ** 2 / variances
    )
    return log_dirichlet + log_var + log_means


# --------------------------------------------------------------- NumPyro sites


def to_sites(params: GMMParams, covariance_type: str = "full") -> dict:
    """The NumPyro model's site values for ``params`` (e.g. to start MAP or NUTS).

    Sites: "weights" (k,), "means" (k, d), and "covariances" (k, d, d) for "full",
    "covariance" (d, d) for "tied", "variances" (k, d) for "diag", "variances"
    (k,) for "spherical". Leading batch axes are kept.
    """
    check_covariance_type(covariance_type)
    sites = {"weights": params.weights, "means": params.means}
    if covariance_type == "full":
        sites["covariances"] = params.covariances
    elif covariance_type == "tied":
        sites["covariance"] = params.covariances[..., 0, :, :]
    else:
        diagonal = jnp.diagonal(params.covariances, axis1=-2, axis2=-1)
        sites["variances"] = diagonal if covariance_type == "diag" else diagonal[..., 0]
    return sites


def from_sites(sites: dict) -> GMMParams:
    """GMMParams from the model's site values (posterior draws keep leading axes).

    The covariance type is read from the site names and shapes (``to_sites``).
    """
    weights = jnp.asarray(sites["weights"])
    means = jnp.asarray(sites["means"])
    num_features = means.shape[-1]
    eye = jnp.eye(num_features, dtype=means.dtype)
    if "covariances" in sites:
        covariances = jnp.asarray(sites["covariances"])
    elif "covariance" in sites:
        shared = jnp.asarray(sites["covariance"])[..., None, :, :]
        covariances = jnp.broadcast_to(shared, means.shape + (num_features,))
    elif "variances" in sites:
        variances = jnp.asarray(sites["variances"])
        if variances.ndim == means.ndim - 1:
            variances = jnp.broadcast_to(variances[..., None], means.shape)
        covariances = variances[..., None] * eye
    else:
        raise ValueError(
            f"sites must hold 'covariances', 'covariance' or 'variances', got "
            f"{sorted(sites)}"
        )
    return GMMParams(weights, means, covariances)


def model(x, num_components: int, *, covariance_type: str = "full", prior=None):
    """NumPyro Gaussian mixture with the assignments t_i summed out.

    The likelihood is ``MixtureSameFamily(Categorical(weights), components)``, the
    marginal p(x_i | theta) of PRML eq. 9.7, so the model has no discrete site and
    runs under NUTS, AutoDelta and AutoNormal without enumeration. Priors: module
    docstring; ``prior=None`` uses ``default_prior(x, num_components)``.

    Sites: "weights", "means" and the covariance site of ``to_sites``; observed "x".
    """
    check_covariance_type(covariance_type)
    x = jnp.asarray(x)
    num_rows, num_features = x.shape
    if prior is None:
        prior = default_prior(x, num_components)
    else:
        prior = check_prior(prior, num_components, num_features)
    dtype = x.dtype
    alpha = jnp.broadcast_to(
        jnp.asarray(prior.weight_concentration, dtype), (num_components,)
    )
    m0 = jnp.asarray(prior.mean_prior, dtype)
    kappa0 = jnp.asarray(prior.mean_precision, dtype)
    nu = jnp.asarray(prior.dof, dtype)
    psi = jnp.asarray(prior.scale, dtype)
    weights = numpyro.sample("weights", dist.Dirichlet(alpha))
    if covariance_type in ("full", "tied"):
        if covariance_type == "tied":
            covariance = numpyro.sample("covariance", dist.InverseWishart(nu, psi))
            covariances = jnp.broadcast_to(
                covariance, (num_components, num_features, num_features)
            )
        with numpyro.plate("components", num_components):
            if covariance_type == "full":
                covariances = numpyro.sample(
                    "covariances", dist.InverseWishart(nu, psi)
                )
            means = numpyro.sample(
                "means", dist.MultivariateNormal(m0, covariances / kappa0)
            )
        components = dist.MultivariateNormal(means, covariance_matrix=covariances)
    else:
        with numpyro.plate("components", num_components):
            if covariance_type == "diag":
                variances = numpyro.sample(
                    "variances",
                    dist.InverseGamma(0.5 * nu, 0.5 * jnp.diagonal(psi)).to_event(1),
                )
            else:
                variances = numpyro.sample(
                    "variances",
                    dist.InverseGamma(0.5 * nu * num_features, 0.5 * jnp.trace(psi)),
                )
                variances = jnp.broadcast_to(
                    variances[:, None], (num_components, num_features)
                )
            means = numpyro.sample(
                "means", dist.Normal(m0, jnp.sqrt(variances / kappa0)).to_event(1)
            )
        components = dist.Normal(means, jnp.sqrt(variances)).to_event(1)
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=weights), components)
    with numpyro.plate("data", num_rows):
        numpyro.sample("x", mixture, obs=x)


def check_params(
    params,
    num_features: int | None = None,
    covariance_type: str = "full",
    *,
    name: str = "params",
) -> GMMParams:
    """Validate concrete GMMParams (optionally with a leading batch axis).

    Checks shapes, weights on the simplex, symmetric positive-definite covariances
    and the structure the covariance type requires (diagonal for "diag", a common
    variance for "spherical", one shared matrix for "tied").
    """
    if not isinstance(params, GMMParams):
        raise TypeError(f"{name} must be a GMMParams, got {type(params).__name__}")
    arrays = [np.asarray(leaf) for leaf in params]
    for field, array in zip(GMMParams._fields, arrays, strict=True):
        if array.dtype == object or array.dtype.kind not in "fiu":
            raise TypeError(f"{name}.{field} must be a real array, got {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}.{field} contains NaN or infinity")
    weights, means, covariances = arrays
    batched = weights.ndim == 2
    single = GMMParams(*(a[0] if batched else a for a in arrays))
    _check_shapes(single)
    if (
        means.shape[:-2] != weights.shape[:-1]
        or covariances.shape[:-3] != weights.shape[:-1]
        or weights.ndim not in (1, 2)
    ):
        raise ValueError(
            f"{name} must have weights (k,) or (r, k) with matching means and "
            f"covariances, got {weights.shape}, {means.shape}, {covariances.shape}"
        )
    if num_features is not None and means.shape[-1] != num_features:
        raise ValueError(
            f"{name}.means has {means.shape[-1]} features but x has {num_features}"
        )
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    if np.any(weights < 0) or not np.allclose(weights.sum(-1), 1.0, atol=atol):
        raise ValueError(
            f"{name}.weights must be >= 0 and sum to 1, got sums "
            f"{np.round(weights.sum(-1), 6).tolist()}"
        )
    if not np.allclose(covariances, np.swapaxes(covariances, -1, -2)):
        raise ValueError(f"{name}.covariances must be symmetric")
    if not np.all(np.linalg.eigvalsh(covariances) > 0):
        raise ValueError(
            f"{name}.covariances must be positive-definite; add a small multiple "
            f"of the identity"
        )
    off_diagonal = covariances * (1.0 - np.eye(covariances.shape[-1]))
    diagonal = np.diagonal(covariances, axis1=-2, axis2=-1)
    structure_ok = {
        "full": True,
        "tied": np.allclose(covariances, covariances[..., :1, :, :]),
        "diag": np.all(off_diagonal == 0),
        "spherical": np.all(off_diagonal == 0)
        and np.allclose(diagonal, diagonal[..., :1]),
    }[check_covariance_type(covariance_type)]
    if not structure_ok:
        raise ValueError(
            f"{name}.covariances do not have the structure of covariance_type="
            f"{covariance_type!r} (tied: all equal; diag: diagonal; spherical: "
            f"a multiple of the identity)"
        )
    return GMMParams(*(jnp.asarray(a) for a in arrays))


# ----------------------------------------------------- standardised coordinates


class AffineMap(NamedTuple):
    """Standardised coordinates of the data: x_std = (x - centre) / scale.

    centre: (d,); scale: (d,) > 0 (one common value for "spherical", so that a
    spherical covariance stays spherical).
    """

    centre: jax.Array
    scale: jax.Array


def standardising_map(x, covariance_type: str = "full") -> AffineMap:
    """Column means and standard deviations of x (a constant column gets 1).

    For "spherical" every column gets the root mean square of the standard
    deviations: only a common scale maps a spherical covariance to one.
    """
    x = np.asarray(x, dtype=np.float64)
    check_covariance_type(covariance_type)
    centre = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    if covariance_type == "spherical":
        scale = np.full_like(scale, np.sqrt(np.mean(scale**2)))
    return AffineMap(centre, scale)


def relative_floor(x, reg_covar: float = 1e-6) -> float:
    """A variance floor ``reg_covar`` times the smallest column variance of x.

    scikit-learn's ``reg_covar`` (1e-6) is absolute: on a column measured in
    units where its variance is 1e-6 the floor doubles every variance and
    biases EM against the Bayesian posterior (which has no floor). Relative
    to the smallest non-zero column variance, the floor is negligible for
    every column whatever its units (1.0 if no column varies).
    """
    variances = np.var(np.asarray(x, dtype=np.float64), axis=0)
    positive = variances[variances > 0]
    return float(reg_covar * (positive.min() if positive.size else 1.0))


def standardise_prior(prior: GMMPrior, amap: AffineMap) -> GMMPrior:
    """The conjugate prior of the standardised parameters.

    Under x_std = S^-1 (x - c), S = diag(scale): mu_std = S^-1 (mu - c) and
    Sigma_std = S^-1 Sigma S^-1. Dirichlet weights are unchanged; the
    inverse-Wishart (and its inverse-gamma restrictions) maps to
    IW(nu, S^-1 Psi S^-1); the mean prior N(m0, Sigma / kappa0) to
    N(S^-1 (m0 - c), Sigma_std / kappa0). So the posterior of the standardised
    model, mapped back, is exactly the posterior of the original one.
    """
    scale = jnp.asarray(amap.scale)
    return prior._replace(
        mean_prior=(jnp.asarray(prior.mean_prior) - amap.centre) / scale,
        scale=jnp.asarray(prior.scale) / jnp.outer(scale, scale),
    )


def standardise_sites(sites: dict, amap: AffineMap) -> dict:
    """Site values (``to_sites``) in standardised coordinates (batch axes kept)."""
    return _map_sites(sites, amap, forward=True)


def unstandardise_sites(sites: dict, amap: AffineMap) -> dict:
    """Site values (or draws with leading axes) back in the data's units."""
    return _map_sites(sites, amap, forward=False)


def _map_sites(sites: dict, amap: AffineMap, forward: bool) -> dict:
    scale = np.asarray(amap.scale)
    centre = np.asarray(amap.centre)
    out = dict(sites)
    if "means" in sites:
        means = np.asarray(sites["means"])
        out["means"] = (means - centre) / scale if forward else centre + scale * means
    factor = np.outer(scale, scale)
    for name in ("covariances", "covariance"):
        if name in sites:
            value = np.asarray(sites[name])
            out[name] = value / factor if forward else value * factor
    if "variances" in sites:
        value = np.asarray(sites["variances"])
        # (..., k, d) for "diag"; (..., k) for "spherical" (one common scale).
        squares = scale**2 if value.shape[-1:] == scale.shape else scale[0] ** 2
        out["variances"] = value / squares if forward else value * squares
    return out
