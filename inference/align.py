"""Label switching: match the components of one fit (or posterior draw) to another.

A mixture's likelihood is invariant under permutations of its components, so two
EM restarts, two NUTS chains, or two draws of one chain may number the same
clusters differently. ``align_components`` finds the permutation that best matches
a fit to a reference by solving the assignment problem (Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``) on a cost matrix

    cost[i, j] = distance(reference component i, params component j).

Default cost:
  * GMMParams: the symmetrised Kullback-Leibler (Jeffreys) divergence between the
    Gaussian components,
        J(N_a, N_b) = 1/2 [tr(S_b^-1 S_a) + tr(S_a^-1 S_b)
                           + (mu_a - mu_b)^T (S_a^-1 + S_b^-1)(mu_a - mu_b)] - d,
    which is affine invariant (no feature scaling needed) and separates components
    by location and by shape;
  * any other NamedTuple whose leaves have a leading component axis (e.g. the
    multinomial mixture's weights and probs): the squared Euclidean distance
    between the components' concatenated leaves.
A custom ``cost_fn(params, reference) -> (k, k)`` replaces either.

``relabel_samples`` applies the same matching to every (chain, draw) of posterior
draws against one reference (typically the EM fit): each draw is permuted to the
labelling closest to the reference, which removes switching between and within
chains so that R-hat and ESS of component-specific parameters become meaningful
(Stephens 2000; Stan User's Guide, "Mixture models: label switching"). Matching to a
fixed reference is a pivotal reordering (Marin, Mengersen & Robert 2005).
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy.optimize import linear_sum_assignment

from latentmix.models.gaussian_mixture import GMMParams, from_sites

__all__ = [
    "align_components",
    "component_cost",
    "gaussian_jeffreys_divergence",
    "relabel_samples",
]

# Sites of models.gaussian_mixture.model that carry a component axis; the tied
# covariance ("covariance") is shared and never permuted.
_GMM_COMPONENT_SITES = ("weights", "means", "covariances", "variances")

# Sites whose component axis is the last one: the per-group weights (g, k) of
# the hierarchical multinomial model.
_COMPONENT_LAST_SITES = ("group_weights",)


def gaussian_jeffreys_divergence(means_a, covs_a, means_b, covs_b):
    """Symmetrised KL divergence between every pair of Gaussians, (..., ka, kb).

    Inputs (..., ka, d), (..., ka, d, d), (..., kb, d), (..., kb, d, d); leading
    axes (chains, draws) broadcast.
    """
    d = means_a.shape[-1]
    prec_a = jnp.linalg.inv(covs_a)
    prec_b = jnp.linalg.inv(covs_b)
    trace_ab = jnp.einsum("...jpq,...iqp->...ij", prec_b, covs_a)
    trace_ba = jnp.einsum("...ipq,...jqp->...ij", prec_a, covs_b)
    diff = means_a[..., :, None, :] - means_b[..., None, :, :]
    precision_sum = prec_a[..., :, None, :, :] + prec_b[..., None, :, :, :]
    quad = jnp.einsum("...ijp,...ijpq,...ijq->...ij", diff, precision_sum, diff)
    return 0.5 * (trace_ab + trace_ba + quad) - d


def component_cost(params, reference):
    """Default cost matrix (..., k, k): rows reference components, columns params."""
    if isinstance(params, GMMParams):
        return gaussian_jeffreys_divergence(
            jnp.asarray(reference.means),
            jnp.asarray(reference.covariances),
            jnp.asarray(params.means),
            jnp.asarray(params.covariances),
        )
    num_components = np.shape(jax.tree_util.tree_leaves(reference)[0])[0]

    def flat(tree, lead):
        leaves = [jnp.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
        return jnp.concatenate(
            [leaf.reshape(leaf.shape[:lead] + (num_components, -1)) for leaf in leaves],
            axis=-1,
        )

    lead = np.ndim(jax.tree_util.tree_leaves(params)[0]) - np.ndim(
        jax.tree_util.tree_leaves(reference)[0]
    )
    ref = flat(reference, 0)
    par = flat(params, lead)
    return jnp.sum((ref[:, None, :] - par[..., None, :, :]) ** 2, axis=-1)


def _assign(cost: np.ndarray) -> np.ndarray:
    """Permutation perm with params component perm[i] matched to reference i."""
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def align_components(params, reference, *, cost_fn=None):
    """Permute the components of ``params`` to match ``reference``.

    Args:
      params: NamedTuple whose leaves all have a leading component axis k.
      reference: the same type, the labelling to match (e.g. another fit).
      cost_fn: optional ``cost_fn(params, reference) -> (k, k)`` cost matrix
        (rows reference components); default ``component_cost``.

    Returns:
      ``(aligned, permutation)``: ``aligned = params`` with every leaf indexed by
      ``permutation``, so that aligned component i matches reference component i.
    """
    cost = (cost_fn or component_cost)(params, reference)
    cost = np.asarray(cost, dtype=float)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"the cost matrix must be square (k, k), got {cost.shape}")
    if not np.all(np.isfinite(cost)):
        raise ValueError("the cost matrix is not finite; check params and reference")
    permutation = _assign(cost)
    aligned = jax.tree_util.tree_map(lambda leaf: leaf[permutation], params)
    return aligned, permutation


def relabel_samples(
    samples,
    reference,
    *,
    component_sites=None,
    params_fn=None,
    cost_fn=None,
):
    """Undo label switching in posterior draws, draw by draw, against ``reference``.

    Args:
      samples: dict site -> array (chain, draw, ...), or arviz InferenceData
        (its ``posterior`` group is relabelled, the other groups are kept).
      reference: parameters in the labelling to match (e.g. the EM fit's
        GMMParams).
      component_sites: names of the sites with a component axis right after
        (chain, draw) to permute. Default: for GMMParams references the sites of
        ``models.gaussian_mixture.model`` that have one ("weights", "means",
        "covariances", "variances"); otherwise the reference's field names.
        Whatever this says, a "group_weights" site (chain, draw, g, k) of the
        hierarchical multinomial model is permuted along its last axis, with
        the same permutation as the global weights.
      params_fn: maps the dict of draws to parameters of the reference's type with
        leading (chain, draw) axes. Default: ``models.gaussian_mixture.from_sites``
        for GMMParams, else the fields of the reference's type taken by name.
      cost_fn: as in ``align_components``, on batched params (chain, draw, k, ...).

    Returns:
      ``(relabelled, permutations)``: the draws in the input's type, and the
      permutations (chain, draw, k) applied (draw component permutations[c, s, i]
      became component i).
    """
    is_idata = isinstance(samples, az.InferenceData)
    draws = (
        {name: np.asarray(value) for name, value in samples.posterior.items()}
        if is_idata
        else {name: np.asarray(value) for name, value in samples.items()}
    )
    is_gmm = isinstance(reference, GMMParams)
    if component_sites is None:
        fields = _GMM_COMPONENT_SITES if is_gmm else type(reference)._fields
        component_sites = [name for name in fields if name in draws]
    if params_fn is None:
        if is_gmm:
            params_fn = from_sites
        else:

            def params_fn(draws_dict):
                return type(reference)(*(draws_dict[f] for f in reference._fields))

    batched = params_fn(draws)
    cost = np.asarray((cost_fn or component_cost)(batched, reference), dtype=float)
    num_chains, num_draws, num_components = cost.shape[:3]
    if not np.all(np.isfinite(cost)):
        raise ValueError(
            "the relabelling cost is not finite for some draws; check the draws"
        )
    permutations = np.empty((num_chains, num_draws, num_components), dtype=int)
    for chain in range(num_chains):
        for draw in range(num_draws):
            permutations[chain, draw] = _assign(cost[chain, draw])
    relabelled = dict(draws)
    for name in component_sites:
        value = draws[name]
        index = permutations.reshape(permutations.shape + (1,) * (value.ndim - 3))
        relabelled[name] = np.take_along_axis(value, index, axis=2)
    last_sites = [name for name in _COMPONENT_LAST_SITES
                  if name in draws and name not in component_sites]
    for name in last_sites:
        value = draws[name]
        shape = (num_chains, num_draws) + (1,) * (value.ndim - 3) + (num_components,)
        relabelled[name] = np.take_along_axis(value, permutations.reshape(shape),
                                              axis=-1)
    if not is_idata:
        return relabelled, permutations
    posterior = samples.posterior.copy()
    for name in list(component_sites) + last_sites:
        posterior[name] = xr.DataArray(
            relabelled[name], dims=samples.posterior[name].dims,
            coords=samples.posterior[name].coords,
        )
    out = samples.copy()
    out.posterior = posterior
    return out, permutations
