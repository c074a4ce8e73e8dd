"""Latent class model: a mixture of independent categorical variables.

Article 1, "What is a latent variable model?": m discrete answers x_1..x_m, each
with V values (the hiring example: grades, GPA, an IQ test, a phone screen,
the on-site score), modelled through one latent class t with L values (the
candidate's unobserved "intelligence"):

    t_i ~ Cat(w)                                   w = weights (L,)
    x_ij | t_i = l ~ Cat(p_lj)   independently     p_lj = probs[l, j] (V,)

so that, summing the class out (eq. of article 1),

    p(x_i) = sum_l w_l prod_j p_lj[x_ij]
    log p(x_i) = logsumexp_l [ log w_l + sum_j sum_v X_ijv log p_ljv ]

with X_ijv = 1 when x_ij = v (one-hot). A missing answer (``MISSING`` = -1) has
an all-zero one-hot row: it drops out of the product, which is the exact
marginal over its V values (sum_v p_ljv = 1). That is how latent variables
"handle missing features naturally".

Parameter count (checklist item 4): the full joint table of m variables with V
values has V^m cells summing to 1, so ``full_table_num_parameters`` = V^m - 1,
exponential in m; the latent class model has (L - 1) weights plus, per class
and variable, V - 1 free probabilities: ``num_parameters`` = (L - 1) +
m L (V - 1), linear in m.

EM: ``latentmix.inference.em.latent_class``. Axis names: n rows, m variables,
V values, L classes.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln, xlogy

from latentmix.data.validation import check_int, is_traced

__all__ = [
    "MISSING",
    "LatentClassParams",
    "LatentClassPrior",
    "check_answers",
    "component_log_prob",
    "full_table_num_parameters",
    "log_likelihood",
    "log_prior",
    "log_responsibilities",
    "model",
    "num_parameters",
    "one_hot",
    "responsibilities",
    "sample",
]

MISSING = -1  # code of a missing answer


class LatentClassParams(NamedTuple):
    """weights (L,) on the simplex; probs (L, m, V), each probs[l, j] on the simplex."""

    weights: jax.Array
    probs: jax.Array


class LatentClassPrior(NamedTuple):
    """Dirichlet pseudocounts: w ~ Dirichlet(a 1_L), p_lj ~ Dirichlet(b 1_V).

    With a = b = 1 the densities are flat and the posterior mode is the
    maximum-likelihood estimate; MAP-EM needs a, b >= 1 (below 1 the density
    is unbounded on the simplex boundary and has no mode).
    """

    weight_concentration: float = 1.0
    probs_concentration: float = 1.0


def check_answers(answers, num_values: int | None = None) -> tuple[np.ndarray, int]:
    """Validate an (n, m) table of answers coded 0..V-1 (``MISSING`` = -1).

    Returns ``(answers as int32, V)``; V defaults to the largest code + 1.
    Raises ValueError for a table that is not 2-D, holds non-integers or codes
    outside [-1, V), a row with every answer missing, or V < 2.
    """
    array = np.asarray(answers)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(
            f"answers must be a non-empty 2-D table (n, m), got shape {array.shape}"
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(
                "answers must be integer codes 0..V-1 (-1 for missing), got "
                "non-integer or non-finite values"
            )
    elif array.dtype.kind not in "iu":
        raise ValueError(f"answers must be integer codes, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if num_values is None:
        num_values = int(array.max()) + 1
    num_values = check_int("num_values", num_values, minimum=2)
    bad = (array < MISSING) | (array >= num_values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"answers has code {array[row, col]} at row {row}, column {col}; codes "
            f"must lie in 0..{num_values - 1}, or {MISSING} for a missing answer"
        )
    empty = np.all(array == MISSING, axis=1)
    if empty.any():
        raise ValueError(
            f"{int(empty.sum())} row(s) have every answer missing, the first at row "
            f"{int(np.argmax(empty))}; drop them (they carry no information)"
        )
    return array.astype(np.int32), num_values


def one_hot(answers, num_values: int) -> jax.Array:
    """X_ijv = 1 where x_ij = v, all zeros where x_ij is missing: (n, m, V)."""
    return jax.nn.one_hot(jnp.asarray(answers), num_values,
                          dtype=jnp.result_type(float))


def component_log_prob(probs, indicators) -> jax.Array:
    """log p(x_i | t_i = l) = sum_j sum_v X_ijv log p_ljv, shape (n, L).

    xlogy makes 0 log 0 = 0: a zero probability costs nothing where the value
    is not observed and gives -inf where it is.
    """
    return jnp.sum(xlogy(indicators[:, None], probs[None]), axis=(-2, -1))


def _log_joint(params: LatentClassParams, answers):
    num_values = params.probs.shape[-1]
    indicators = one_hot(answers, num_values)
    return jnp.log(params.weights) + component_log_prob(params.probs, indicators)


@jax.jit
def _log_likelihood(params, answers):
    return jax.nn.logsumexp(_log_joint(params, answers), axis=-1)


@jax.jit
def _log_responsibilities(params, answers):
    joint = _log_joint(params, answers)
    return joint - jax.nn.logsumexp(joint, axis=-1, keepdims=True)


def _prepared(params, answers):
    params = LatentClassParams(*map(jnp.asarray, params))
    if params.probs.ndim != 3 or params.weights.shape != params.probs.shape[:1]:
        raise ValueError(
            f"params must hold weights (L,) and probs (L, m, V), got "
            f"{params.weights.shape} and {params.probs.shape}"
        )
    answers, _ = check_answers(answers, params.probs.shape[-1])
    if answers.shape[1] != params.probs.shape[1]:
        raise ValueError(
            f"answers has {answers.shape[1]} variables but probs has "
            f"{params.probs.shape[1]}"
        )
    return params, answers


def log_likelihood(params: LatentClassParams, answers) -> jax.Array:
    """Per-row log p(x_i) = logsumexp_l [log w_l + sum_j log p_lj[x_ij]], (n,)."""
    return _log_likelihood(*_prepared(params, answers))


def log_responsibilities(params: LatentClassParams, answers) -> jax.Array:
    """log p(t_i = l | x_i) by Bayes' rule, (n, L)."""
    return _log_responsibilities(*_prepared(params, answers))


def responsibilities(params: LatentClassParams, answers) -> jax.Array:
    """p(t_i = l | x_i), rows summing to 1, (n, L)."""
    return jnp.exp(log_responsibilities(params, answers))


def _dirichlet_log_density(value, concentration):
    concentration = jnp.broadcast_to(jnp.asarray(concentration, value.dtype),
                                     value.shape)
    return (jnp.sum(xlogy(concentration - 1.0, value), axis=-1)
            + gammaln(jnp.sum(concentration, axis=-1))
            - jnp.sum(gammaln(concentration), axis=-1))


def log_prior(params: LatentClassParams, prior: LatentClassPrior) -> jax.Array:
    """log Dirichlet(w | a) + sum_lj log Dirichlet(p_lj | b), normalised."""
    weights, probs = jnp.asarray(params.weights), jnp.asarray(params.probs)
    return (jnp.sum(_dirichlet_log_density(weights, prior.weight_concentration))
            + jnp.sum(_dirichlet_log_density(probs, prior.probs_concentration)))


def num_parameters(num_classes: int, num_variables: int, num_values: int) -> int:
    """Free parameters of the latent class model: (L - 1) + m L (V - 1)."""
    num_classes = check_int("num_classes", num_classes, minimum=1)
    num_variables = check_int("num_variables", num_variables, minimum=1)
    num_values = check_int("num_values", num_values, minimum=2)
    return (num_classes - 1) + num_variables * num_classes * (num_values - 1)


def full_table_num_parameters(num_variables: int, num_values: int) -> int:
    """Free parameters of the full joint probability table: V^m - 1."""
    num_variables = check_int("num_variables", num_variables, minimum=1)
    num_values = check_int("num_values", num_values, minimum=2)
    return num_values**num_variables - 1


def sample(params: LatentClassParams, num_rows: int, *, rng_key,
           missing_rate: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(answers (n, m), classes (n,))`` from the model.

    With ``missing_rate`` > 0 each answer is replaced by ``MISSING``
    independently with that probability (missing completely at random), except
    that every row keeps at least one answer.
    """
    num_rows = check_int("num_rows", num_rows, minimum=1)
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate!r}")
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    key_class, key_answer, key_missing = jax.random.split(rng_key, 3)
    classes = jax.random.categorical(key_class, jnp.log(jnp.asarray(weights)),
                                     shape=(num_rows,))
    answers = jax.random.categorical(key_answer, jnp.log(jnp.asarray(probs))[classes])
    answers = np.asarray(answers, np.int32)
    if missing_rate > 0:
        hidden = np.array(jax.random.uniform(key_missing, answers.shape)
                            < missing_rate)
        hidden[np.all(hidden, axis=1), 0] = False
        answers = np.where(hidden, MISSING, answers).astype(np.int32)
    return answers, np.asarray(classes, np.int64)


def model(answers, num_classes: int, *, num_values: int | None = None,
          prior: LatentClassPrior | None = None):
    """NumPyro model of the latent class model, with the class summed out.

    weights ~ Dirichlet(a 1_L); in plates "classes" x "variables",
    probs ~ Dirichlet(b 1_V); each row adds its log p(x_i) (``log_likelihood``)
    through ``numpyro.factor("answers", ...)`` in plate "data". The same
    expression as the E-step, so EM, MAP, VI and NUTS fit one model.

    Sites: "weights" (L,), "probs" (L, m, V).
    """
    prior = LatentClassPrior() if prior is None else prior
    num_classes = check_int("num_classes", num_classes, minimum=1)
    if not is_traced(answers):
        answers, num_values = check_answers(answers, num_values)
    elif num_values is None:
        raise ValueError("num_values is required for traced answers")
    num_rows, num_variables = answers.shape
    dtype = jnp.result_type(float)
    weights = numpyro.sample(
        "weights",
        dist.Dirichlet(jnp.full(num_classes, prior.weight_concentration, dtype)))
    with numpyro.plate("classes", num_classes, dim=-2), \
            numpyro.plate("variables", num_variables, dim=-1):
        probs = numpyro.sample(
            "probs",
            dist.Dirichlet(jnp.full(num_values, prior.probs_concentration, dtype)))
    joint = jnp.log(weights) + component_log_prob(probs, one_hot(answers, num_values))
    with numpyro.plate("data", num_rows):
        numpyro.factor("answers", jax.nn.logsumexp(joint, axis=-1))
