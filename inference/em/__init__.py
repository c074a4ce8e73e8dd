"""EM fitters: the generic driver and one subpackage (or module) per model.

One contract for both mixtures (``gaussian_mixture``, ``multinomial_mixture``):
``fit_<model>(data, num_components, *, init, num_restarts, max_iters, tol, rtol,
prior, rng_key, devices, screen_iters, ...)`` returns the best restart's
``EMResult`` and raises ``AllRestartsFailedError`` (a FloatingPointError) when
every restart fails; ``fit_<model>_restarts`` returns every restart
(``EMRestarts``); ``fit_<model>_chunked`` fits rows streamed from a
``data.chunks.ChunkedRows`` (``fit_<model>`` also accepts one); and
``fit_<model>_sweep`` fits a list of K in one compiled program;
``fit_<model>_online`` runs stepwise EM over batches (one M-step per batch; its
state and single step are public for ``partial_fit``);
``fit_gaussian_mixture_weighted`` takes a weight per row (``sample_weight``).
Defaults differ where the models' users expect them to: the GMM's are
scikit-learn's (max_iters=100, tol=1e-3), the multinomial's the tutorial's
reference protocol made absolute (max_iters=1000, tol=1e-6 nats per basket; its
package docstring says why). ``fit_linear_regression`` fits the evidence's two
precisions; ``fit_latent_class`` the latent class model (independent
categorical answers) with the mixtures' restart contract.
"""

from latentmix.inference.em.driver import (
    AllRestartsFailedError,
    ConvergenceWarning,
    EMRestarts,
    EMResult,
    run_em,
)
from latentmix.inference.em.gaussian_mixture import (
    GMMPrior,
    GMMRestarts,
    fit_gaussian_mixture,
    fit_gaussian_mixture_chunked,
    fit_gaussian_mixture_online,
    fit_gaussian_mixture_restarts,
    fit_gaussian_mixture_sweep,
)
from latentmix.inference.em.gaussian_mixture_weighted import (
    fit_gaussian_mixture_weighted,
    fit_gaussian_mixture_weighted_restarts,
)
from latentmix.inference.em.latent_class import (
    fit_latent_class,
    fit_latent_class_restarts,
)
from latentmix.inference.em.linear_regression import (
    LinearRegressionParams,
    fit_linear_regression,
)
from latentmix.inference.em.multinomial_mixture import (
    fit_multinomial_mixture,
    fit_multinomial_mixture_chunked,
    fit_multinomial_mixture_online,
    fit_multinomial_mixture_restarts,
    fit_multinomial_mixture_sweep,
)
from latentmix.models.multinomial_mixture import (
    MultinomialMixtureParams,
    MultinomialMixturePrior,
)

__all__ = [
    "AllRestartsFailedError",
    "ConvergenceWarning",
    "EMRestarts",
    "EMResult",
    "GMMPrior",
    "GMMRestarts",
    "LinearRegressionParams",
    "MultinomialMixtureParams",
    "MultinomialMixturePrior",
    "fit_gaussian_mixture",
    "fit_gaussian_mixture_chunked",
    "fit_gaussian_mixture_online",
    "fit_gaussian_mixture_restarts",
    "fit_gaussian_mixture_sweep",
    "fit_gaussian_mixture_weighted",
    "fit_gaussian_mixture_weighted_restarts",
    "fit_latent_class",
    "fit_latent_class_restarts",
    "fit_linear_regression",
    "fit_multinomial_mixture",
    "fit_multinomial_mixture_chunked",
    "fit_multinomial_mixture_online",
    "fit_multinomial_mixture_restarts",
    "fit_multinomial_mixture_sweep",
    "run_em",
]
