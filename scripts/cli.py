"""The ``latentmix`` command: one entry point for every script.

    latentmix demo [...]       the main job (scripts/demo.py)
    latentmix fit MODEL [...]  fit a model to your own table (scripts/fit.py)
    latentmix predict [...]    apply a fitted model to new rows (scripts/predict.py)
    latentmix benchmark [...]  speed against scikit-learn (scripts/benchmark.py)

Each subcommand is the same code as the script (``python scripts/fit.py ...``
and ``latentmix fit ...`` run the same ``main``), with the same options and exit
statuses; ``latentmix SUBCOMMAND --help`` lists them.
"""

import importlib
import sys

__all__ = ["SUBCOMMANDS", "main"]

# subcommand -> (module of latentmix.scripts, one-line description)
SUBCOMMANDS = {
    "demo": ("demo", "run the three stories and write out/report.html"),
    "fit": ("fit", "fit a model to your own CSV or parquet file"),
    "predict": ("predict", "apply a model saved by fit to new rows"),
    "benchmark": ("benchmark", "time the EM against scikit-learn and the machine"),
}

# The subcommands whose run honours interrupts at checkpoints
# (``runtime.interrupts``): a Ctrl-C while they import JAX is kept for their
# first checkpoint. The others keep Python's own handling (KeyboardInterrupt).
EARLY_INTERRUPTS = ("fit", "predict")


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return ("usage: latentmix {" + ",".join(SUBCOMMANDS) + "} ...\n\n"
            "Latent-variable models on JAX/NumPyro: EM checked against MAP, VI and "
            "NUTS.\n\nsubcommands:\n" + "\n".join(lines) + "\n\n"
            "latentmix SUBCOMMAND --help shows the options of one subcommand.\n")


def main(argv=None) -> int:
    """Dispatch ``latentmix SUBCOMMAND ARGS`` to that script's ``main(ARGS)``."""
    from_command_line = argv is None  # this process runs one command
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(usage(), end="", file=sys.stderr)
        print(f"latentmix: error: unknown subcommand {name!r}; choose one of "
              f"{', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    if from_command_line and name in EARLY_INTERRUPTS:  # before JAX's import
        from latentmix.scripts.runtime import catch_early_interrupts

        catch_early_interrupts()
    module = importlib.import_module(f"latentmix.scripts.{SUBCOMMANDS[name][0]}")
    return module.main(rest, prog=f"latentmix {name}")


if __name__ == "__main__":
    sys.exit(main())
