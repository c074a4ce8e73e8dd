"""The result of a cross-check: one table row per check, the fits, the draws.

Every row compares one method with an independent reference through one number
(``statistic``) and a ``tolerance`` derived from the error source of that method
(float rounding, the stopping rule, the optimiser, Monte Carlo noise); ``rule``
says how the two are compared and ``passed`` is the outcome. A failed row is a
finding, never a crash: callers turn it into a warning (``warn_failed``), an
exit status or a red cell in a report.
"""

import math
import time
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from latentmix.data.validation import warn
from latentmix.inference.mcmc import MIN_ESS_PER_CHAIN, RHAT_THRESHOLD, diagnostics

__all__ = [
    "COLUMNS",
    "CrossCheck",
    "CrossCheckWarning",
    "check_methods",
    "check_row",
    "diagnostics_row",
    "make_table",
    "max_abs",
    "timed_step",
    "verdict",
    "warn_failed",
]

COLUMNS = ("check", "method", "reference", "statistic", "tolerance", "rule",
           "passed", "note")


class CrossCheckWarning(UserWarning):
    """A cross-check failed: two methods disagree where theory says they must not."""


class CrossCheck(NamedTuple):
    """What ``crosscheck_*`` returns.

    table: pandas DataFrame, one row per check, columns ``COLUMNS`` (check,
        method, reference, statistic, tolerance, rule, passed, note).
    fits: method name -> fitted result: "em" (EMResult), "closed_form" (where
        one exists), "map", "vi" (SVIResult), "nuts" (the raw InferenceData),
        and model-specific extras (e.g. "map_em").
    idata: the NUTS draws as ArviZ InferenceData (relabelled against the EM fit
        for mixtures); None when NUTS was not run.
    """

    table: pd.DataFrame
    fits: dict
    idata: Any


def check_row(check: str, method: str, reference: str, statistic, tolerance,
              rule: str, passed: bool | None = None, note: str = "",
              **extra) -> dict:
    """One row; ``passed`` defaults to ``statistic <= tolerance`` (finite only).

    ``extra`` adds model-specific columns after ``COLUMNS`` (e.g. the largest
    difference of means in posterior sds).
    """
    statistic = float(statistic)
    tolerance = float(tolerance)
    if passed is None:
        passed = math.isfinite(statistic) and statistic <= tolerance
    return {"check": check, "method": method, "reference": reference,
            "statistic": statistic, "tolerance": tolerance, "rule": rule,
            "passed": bool(passed), "note": note, **extra}


def make_table(rows) -> pd.DataFrame:
    """The rows as a DataFrame: ``COLUMNS`` first, then any extra columns."""
    rows = list(rows)
    extra = [name for row in rows for name in row if name not in COLUMNS]
    columns = list(COLUMNS) + list(dict.fromkeys(extra))
    return pd.DataFrame.from_records(rows, columns=columns)


@contextmanager
def timed_step(label: str, progress_fn, seconds: dict):
    """Announce ``label`` to ``progress_fn`` (if any), record its duration."""
    if progress_fn is not None:
        progress_fn(f"{label} ...")
    started = time.perf_counter()
    yield
    seconds[label] = time.perf_counter() - started
    if progress_fn is not None:
        progress_fn(f"{label}: {seconds[label]:.1f}s")


def verdict(table: pd.DataFrame) -> str:
    """One line: how many checks passed and which failed, with their numbers."""
    failed = table.loc[~table["passed"].astype(bool)]
    head = f"{len(table) - len(failed)} of {len(table)} cross-checks passed"
    if failed.empty:
        return head
    details = "; ".join(
        f"{row.check} ({row.method}): {row.statistic:.3g} vs tolerance "
        f"{row.tolerance:.3g} ({row.rule}"
        + (f"; {row.note}" if getattr(row, "note", "") else "") + ")"
        for row in failed.itertuples(index=False))
    return f"{head}; FAILED: {details}"


def warn_failed(table: pd.DataFrame) -> None:
    """A ``CrossCheckWarning`` with the numbers when any check failed."""
    if not table["passed"].astype(bool).all():
        warn(verdict(table), CrossCheckWarning)


def max_abs(a, b) -> float:
    """max |a - b| over all elements, as a float."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def check_methods(methods, allowed, num_chains: int, num_samples: int) -> None:
    """Refuse a method the cross-check does not know; warn before NUTS runs
    when its sizes cannot pass the diagnostics gate.

    The gate asks for a bulk and tail ESS of ``MIN_ESS_PER_CHAIN`` per chain;
    draws of one chain are positively correlated in practice, so fewer draws
    per chain than that fail it whatever the sampler does (RELIABILITY b4.49:
    50 draws gave "14 elements failing" and nothing said why).
    """
    unknown = sorted(set(methods) - set(allowed))
    if unknown:
        raise ValueError(f"methods must be among {tuple(allowed)}, got {unknown}")
    if any(method.startswith("nuts") for method in methods) and (
            num_samples < MIN_ESS_PER_CHAIN):
        warn(f"num_samples={num_samples} draws per chain ({num_chains} chains) "
             f"cannot reach the effective sample size of {MIN_ESS_PER_CHAIN} per "
             f"chain that the NUTS diagnostics check asks for: expect it to fail; "
             f"draw at least {4 * MIN_ESS_PER_CHAIN} per chain", CrossCheckWarning)


def diagnostics_row(idata, names, method: str = "NUTS") -> dict:
    """The NUTS diagnostics gate as a row: every element of ``names`` with
    R-hat <= 1.01 and bulk/tail ESS >= 100 per chain, and no divergence."""
    table = diagnostics(idata, var_names=list(names), warn=False)
    divergences = int(table["divergences"].iloc[0])
    num_chains = int(idata.posterior.sizes["chain"])
    failing = table.index[~table["ok"]].tolist()
    return check_row(
        "NUTS diagnostics", method,
        f"r_hat <= {RHAT_THRESHOLD}, bulk/tail ESS >= {MIN_ESS_PER_CHAIN} per "
        f"chain, no divergence", len(failing), 0, "elements failing <= tol",
        note=(f"min bulk ESS {table['ess_bulk'].min():.0f} over {num_chains} "
              f"chains, {divergences} divergences"
              + (f"; failing: {', '.join(failing[:8])}" if failing else "")))
