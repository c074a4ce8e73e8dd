"""The Gaussian-mixture libraries a user could pick instead of ours, behind one call.

``fit_peer(name, x, start, covariance_type, iters)`` runs ``iters`` EM iterations
of library ``name`` from the start ``start`` (a ``GMMParams``, full matrices)
and returns ``PeerFit(params, num_iters)`` with the final parameters as a
``GMMParams`` in float64 numpy arrays; ``peer_log_likelihood`` scores them
(numpy, float64) so that every library's result is scored the same way.

  sklearn   ``sklearn.mixture.GaussianMixture`` with ``weights_init``,
            ``means_init``, ``precisions_init``, ``tol=0``, ``max_iter=iters``:
            the same start exactly; every covariance type; float32 stays
            float32.
  gmmx      ``gmmx.EMFitter(max_iter=iters, tol=0)`` on
            ``GaussianMixtureModelJax.from_squeezed(means, covariances,
            weights)``: the same start exactly; "full" and "diag" only (gmmx has
            no "tied" or "spherical": ``PeerUnavailable``); float32 only (gmmx
            refuses float64 arrays), so a float64 row runs it in float32.
  torchgmm  ``torchgmm.bayes.GaussianMixture`` (PyTorch Lightning). Its
            estimator cannot start from given covariances (``init_means`` sets
            the means, then one pass re-estimates priors and covariances), so
            the model's buffers (``component_probs``, ``means``,
            ``precisions_cholesky``) are set to the start and its own training
            module runs ``iters`` EM iterations, as ``GaussianMixture.fit`` does
            after its initialisation (one batch of all rows: two epochs per
            iteration, the library's own choice); float64 through
            ``trainer_params={"precision": 64}``; every covariance type.

A library that is not installed raises ``PeerUnavailable`` with the pip line
(``pip install -e ".[bench]"``), so a benchmark can report it and go on.
"""

import warnings
from typing import NamedTuple

import numpy as np

from latentmix.models.gaussian_mixture import GMMParams

__all__ = ["PEERS", "PeerFit", "PeerUnavailable", "fit_peer", "peer_log_likelihood",
           "sklearn_precisions"]

PEERS = ("sklearn", "gmmx", "torchgmm")
REG_COVAR = 1e-6  # scikit-learn's default; every library gets it


class PeerUnavailable(RuntimeError):
    """The library is not installed, or cannot run this configuration."""


class PeerFit(NamedTuple):
    """Final parameters (float64 numpy ``GMMParams``), EM iterations run and the
    dtype the library computed in."""

    params: GMMParams
    num_iters: int
    dtype: str


def fit_peer(name: str, x, start: GMMParams, covariance_type: str,
             iters: int) -> PeerFit:
    """Run ``iters`` EM iterations of library ``name`` from ``start``."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
    return {"sklearn": _fit_sklearn, "gmmx": _fit_gmmx,
            "torchgmm": _fit_torchgmm}[name](x, start, covariance_type, iters)


def peer_log_likelihood(params: GMMParams, x) -> float:
    """Mean log-likelihood (1/n) sum_i log sum_c w_c N(x_i | mu_c, S_c), float64.

    log N = -d/2 log 2 pi - sum_j log L_jj - ||L^-1 (x - mu)||^2 / 2 with
    S = L L^T, written with numpy alone (independent of every library timed).
    """
    x = np.asarray(x, np.float64)
    weights, means, covariances = (np.asarray(a, np.float64) for a in params)
    num_features = x.shape[1]
    columns = []
    for weight, mean, covariance in zip(weights, means, covariances, strict=True):
        chol = np.linalg.cholesky(covariance)
        whitened = np.linalg.solve(chol, (x - mean).T)
        columns.append(np.log(weight) - np.sum(np.log(np.diag(chol)))
                       - 0.5 * num_features * np.log(2 * np.pi)
                       - 0.5 * np.sum(whitened * whitened, axis=0))
    log_prob = np.stack(columns, axis=1)
    peak = log_prob.max(axis=1, keepdims=True)
    return float(np.mean(peak[:, 0] + np.log(np.exp(log_prob - peak).sum(axis=1))))


# ------------------------------------------------------------------ sklearn


def sklearn_precisions(params: GMMParams, covariance_type: str):
    """``precisions_init`` in scikit-learn's shape for each covariance type."""
    covariances = np.asarray(params.covariances, np.float64)
    if covariance_type == "full":
        return np.linalg.inv(covariances)
    if covariance_type == "tied":
        return np.linalg.inv(covariances[0])
    variances = np.diagonal(covariances, axis1=1, axis2=2)
    return 1.0 / (variances if covariance_type == "diag" else variances[:, 0])


def _fit_sklearn(x, start, covariance_type, iters):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    precisions = sklearn_precisions(start, covariance_type)
    model = GaussianMixture(
        start.weights.shape[0], covariance_type=covariance_type, tol=0.0,
        max_iter=iters, reg_covar=REG_COVAR, weights_init=start.weights,
        means_init=start.means, precisions_init=precisions.astype(x.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x)
    num_components, num_features = model.means_.shape
    covariances = {
        "full": lambda c: c,
        "tied": lambda c: np.broadcast_to(c, (num_components,) + c.shape),
        "diag": lambda c: c[:, :, None] * np.eye(num_features),
        "spherical": lambda c: c[:, None, None] * np.eye(num_features),
    }[covariance_type](np.asarray(model.covariances_, np.float64))
    return PeerFit(GMMParams(np.asarray(model.weights_, np.float64),
                             np.asarray(model.means_, np.float64),
                             np.array(covariances)), int(model.n_iter_),
                   str(model.means_.dtype))


# --------------------------------------------------------------------- gmmx


def _fit_gmmx(x, start, covariance_type, iters):
    if covariance_type not in ("full", "diag"):
        raise PeerUnavailable(f"gmmx has no {covariance_type!r} covariances "
                              f"(only full and diag)")
    try:
        import jax
        import jax.numpy as jnp
        from gmmx import EMFitter, GaussianMixtureModelJax
    except ImportError as error:
        raise PeerUnavailable(_missing("gmmx", error)) from None
    with jax.enable_x64(False):  # gmmx's M-step promotes to float64 otherwise
        return _run_gmmx(jnp, EMFitter, GaussianMixtureModelJax, x, start,
                         covariance_type, iters)


def _run_gmmx(jnp, EMFitter, GaussianMixtureModelJax, x, start, covariance_type,
              iters):
    dtype = np.float32  # gmmx checks that every array is float32
    covariances = np.asarray(start.covariances, dtype)
    if covariance_type == "diag":
        covariances = np.diagonal(covariances, axis1=1, axis2=2).copy()
    model = GaussianMixtureModelJax.from_squeezed(
        means=jnp.asarray(start.means, dtype), covariances=jnp.asarray(covariances),
        weights=jnp.asarray(start.weights, dtype), covariance_type=covariance_type)
    result = EMFitter(max_iter=iters, tol=0.0, reg_covar=REG_COVAR).fit(
        jnp.asarray(x, dtype), model)
    fitted = result.gmm
    covariances = np.asarray(fitted.covariances.values_numpy, np.float64)
    if covariance_type == "diag":
        covariances = covariances[..., None] * np.eye(covariances.shape[-1])
    return PeerFit(GMMParams(np.asarray(fitted.weights_numpy, np.float64),
                             np.asarray(fitted.means_numpy, np.float64),
                             covariances), int(result.n_iter), "float32")


# ----------------------------------------------------------------- torchgmm


def _fit_torchgmm(x, start, covariance_type, iters):
    try:
        import logging

        import torch
        from torchgmm.base.data import DataLoader, collate_tensor, dataset_from_tensors
        from torchgmm.bayes import GaussianMixture
        from torchgmm.bayes.core import cholesky_precision
        from torchgmm.bayes.gmm.lightning_module import GaussianMixtureLightningModule
        from torchgmm.bayes.gmm.model import (
            GaussianMixtureModel,
            GaussianMixtureModelConfig,
        )
    except ImportError as error:
        raise PeerUnavailable(_missing("torchgmm", error)) from None
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    num_components, num_features = start.means.shape
    precision = 64 if x.dtype == np.float64 else 32
    estimator = GaussianMixture(
        num_components, covariance_type=covariance_type, convergence_tolerance=0.0,
        covariance_regularization=REG_COVAR,
        trainer_params={"max_epochs": iters, "precision": precision,
                        "accelerator": "cpu", "enable_progress_bar": False,
                        "enable_model_summary": False, "logger": False,
                        "enable_checkpointing": False})
    torch_dtype = torch.float64 if precision == 64 else torch.float32
    data = torch.from_numpy(np.ascontiguousarray(x))
    model = GaussianMixtureModel(GaussianMixtureModelConfig(
        num_components=num_components, num_features=num_features,
        covariance_type=covariance_type)).to(torch_dtype)
    covariances = np.asarray(start.covariances, np.float64)
    covariances = {
        "full": lambda c: c,
        "tied": lambda c: c[0],
        "diag": lambda c: np.diagonal(c, axis1=1, axis2=2),
        "spherical": lambda c: np.diagonal(c, axis1=1, axis2=2)[:, 0],
    }[covariance_type](covariances)
    with torch.no_grad():
        model.component_probs.copy_(torch.as_tensor(start.weights, dtype=torch_dtype))
        model.means.copy_(torch.as_tensor(start.means, dtype=torch_dtype))
        model.precisions_cholesky.copy_(cholesky_precision(
            torch.as_tensor(np.ascontiguousarray(covariances), dtype=torch_dtype),
            covariance_type))
    loader = DataLoader(dataset_from_tensors(data), batch_size=len(data),
                        collate_fn=collate_tensor)
    # As GaussianMixture.fit after its initialisation: one batch per epoch is
    # its "batch training", two epochs per EM iteration.
    is_batch_training = estimator._num_batches_per_epoch(loader) == 1
    module = GaussianMixtureLightningModule(
        model, convergence_tolerance=0.0, covariance_regularization=REG_COVAR,
        is_batch_training=is_batch_training)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = estimator.trainer(max_epochs=iters * (1 + int(is_batch_training)))
        trainer.fit(module, loader)
    num_iters = module.current_epoch // (2 if is_batch_training else 1)
    covariances = _torchgmm_covariances(model, covariance_type, num_components,
                                        num_features)
    return PeerFit(GMMParams(model.component_probs.double().numpy(),
                             model.means.double().numpy(), covariances), num_iters,
                   str(model.means.dtype).replace("torch.", ""))


def _torchgmm_covariances(model, covariance_type, num_components, num_features):
    """(k, d, d) float64 covariances from torchgmm's Cholesky precisions."""
    factor = model.precisions_cholesky.double().numpy()
    if covariance_type in ("full", "tied"):
        factor = np.broadcast_to(factor, (num_components, num_features, num_features))
        precisions = factor @ np.swapaxes(factor, -1, -2)
        return np.linalg.inv(precisions)
    variances = 1.0 / factor**2
    if covariance_type == "spherical":
        variances = np.broadcast_to(variances[:, None], (num_components, num_features))
    return variances[:, :, None] * np.eye(num_features)


def _missing(name, error):
    return (f"{name} is not installed ({error}); pip install -e \".[bench]\" "
            f"installs the peers")
