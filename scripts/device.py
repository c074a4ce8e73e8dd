"""Where a script computes and in which precision: ``--device`` and ``--dtype``.

JAX picks its platform once, when the first computation (or ``jax.devices()``)
starts a backend; a platform chosen after that is ignored. Importing jax or
numpyro starts nothing, so scripts parse their arguments, then call
``configure`` before any JAX work.

  ``--device auto``: JAX's own choice (a usable GPU, else the CPU; the
  ``JAX_PLATFORMS`` environment variable is respected);
  ``--device cpu``: the CPU, even on a machine with a GPU;
  ``--device gpu``: a GPU, or a ``UsageError`` (exit status 2) naming the
  devices JAX found instead.

Precision: ``--dtype auto`` is float64 on the CPU (the scripts' tolerances are
set for it, and a CPU runs float64 at half its float32 speed) and float32 on a
GPU (most GPUs run float64 at 1/2 to 1/64 of their float32 rate). float64 needs
JAX's 64-bit mode, which ``configure`` switches on; for float32 it switches it
off, so that every JAX array and NumPyro sample defaults to float32.
"""

import os
from typing import NamedTuple

from latentmix.scripts import runtime as rt

DEVICES = ("auto", "cpu", "gpu")
DTYPES = ("auto", "float32", "float64")


class DeviceChoice(NamedTuple):
    """What ``configure`` settled on.

    Attributes:
      platform: JAX's backend, "cpu" or "gpu" (or "tpu").
      dtype: "float32" or "float64", the precision the script computes in.
      devices: the devices JAX sees, as text (for reports).
    """

    platform: str
    dtype: str
    devices: str


def add_arguments(parser, *, dtype: bool = False) -> None:
    """Add ``--device`` (and, with ``dtype``, ``--dtype``) to an argparse parser."""
    parser.add_argument(
        "--device", choices=DEVICES, default="auto",
        help="where to compute: auto (a GPU if JAX finds one, else the CPU; "
             "default), cpu, or gpu (exit status 2 if there is none)")
    if dtype:
        parser.add_argument(
            "--dtype", choices=DTYPES, default="auto",
            help="floating-point precision: auto (float64 on CPU, float32 on GPU; "
                 "default), float32 or float64")


def configure(device: str = "auto", dtype: str = "auto", *,
              host_devices: int | None = None) -> DeviceChoice:
    """Select JAX's platform and precision; call before any JAX computation.

    Every entry point calls this first thing in its ``main()`` (never at import
    time, so that importing a script, e.g. from ``demo.py`` or a test, changes
    nothing).

    Args:
      device: "auto", "cpu" or "gpu" (``DEVICES``).
      dtype: "auto", "float32" or "float64" (``DTYPES``); "auto" is float64 on
        the CPU and float32 elsewhere.
      host_devices: on the CPU, split the host into this many XLA devices (NUTS
        runs that many chains in parallel); None leaves JAX's default.

    Returns:
      The ``DeviceChoice`` made.

    Raises:
      UsageError: ``device="gpu"`` and JAX finds no GPU (the message lists the
        devices it found), or an unknown device or dtype.
      RuntimeError: JAX had already started on another platform.
    """
    if device not in DEVICES:
        raise rt.UsageError(f"--device must be one of {DEVICES}, got {device!r}")
    if dtype not in DTYPES:
        raise rt.UsageError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    import jax

    if host_devices is not None:
        import numpyro

        numpyro.set_host_device_count(host_devices)
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"  # and for any subprocess we start
        jax.config.update("jax_platforms", "cpu")
    elif device == "gpu":
        # An explicit --device gpu overrides JAX_PLATFORMS=cpu from the
        # environment: let JAX probe every platform, then insist on a GPU.
        os.environ.pop("JAX_PLATFORMS", None)
        jax.config.update("jax_platforms", None)
    found = jax.devices()
    platform = jax.default_backend()
    if device == "gpu" and platform != "gpu":
        raise rt.UsageError(
            f"--device gpu: JAX found no GPU, only {found} (backend {platform!r}); "
            f"install a CUDA build of jax (pip install 'jax[cuda12]'), check "
            f"nvidia-smi, or use --device cpu"
        )
    if device == "cpu" and platform != "cpu":
        raise RuntimeError(
            f"JAX already started on {platform!r} before --device cpu was applied; "
            f"call device.configure before any JAX computation"
        )
    if dtype == "auto":
        dtype = "float64" if platform == "cpu" else "float32"
    jax.config.update("jax_enable_x64", dtype == "float64")
    return DeviceChoice(platform, dtype, ", ".join(str(item) for item in found))


def configure_or_exit(device: str = "auto", dtype: str = "auto", *,
                      host_devices: int | None = None) -> DeviceChoice:
    """``configure`` for a script's ``main``: a UsageError exits with status 2."""
    import sys

    try:
        return configure(device, dtype, host_devices=host_devices)
    except rt.UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(rt.EXIT_USAGE)
