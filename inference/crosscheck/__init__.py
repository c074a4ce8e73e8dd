"""One model fitted by EM, MAP, VI and NUTS, and a table proving they agree.

Public: ``crosscheck_linear_regression``, ``crosscheck_gaussian_mixture``,
``crosscheck_multinomial_mixture``, ``crosscheck_latent_class``, each
returning a ``CrossCheck(table, fits, idata)``: ``table`` has one row per
check with the columns ``check``, ``method``, ``reference``, ``statistic``,
``tolerance``, ``rule``, ``passed`` and ``note``; ``fits`` the fitted results
by method name; ``idata`` the (relabelled) NUTS draws as ArviZ InferenceData.
``verdict(table)`` gives the one-line summary, ``warn_failed(table)`` a
``CrossCheckWarning`` with the numbers of every failed check.

Where to read: ``table`` (the result type), ``linear_regression``,
``gaussian_mixture``, ``multinomial_mixture`` (one file per model, each opening
with the list of its checks and their error sources) and ``mixtures`` (the
posterior checks both mixtures share: relabelling, R-hat, HDIs, VI).
"""

from latentmix.inference.crosscheck.gaussian_mixture import crosscheck_gaussian_mixture
from latentmix.inference.crosscheck.latent_class import crosscheck_latent_class
from latentmix.inference.crosscheck.linear_regression import (
    coefficient_table,
    crosscheck_linear_regression,
)
from latentmix.inference.crosscheck.multinomial_mixture import (
    crosscheck_multinomial_mixture,
)
from latentmix.inference.crosscheck.table import (
    CrossCheck,
    CrossCheckWarning,
    verdict,
    warn_failed,
)

__all__ = [
    "CrossCheck",
    "CrossCheckWarning",
    "coefficient_table",
    "crosscheck_gaussian_mixture",
    "crosscheck_latent_class",
    "crosscheck_linear_regression",
    "crosscheck_multinomial_mixture",
    "verdict",
    "warn_failed",
]
