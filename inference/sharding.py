"""Data-parallel EM: rows sharded over devices, parameters replicated.

EM's sufficient statistics are sums over rows (counts N_k, weighted sums, weighted
second moments), so exact EM parallelises over rows: each device computes the
statistics of its rows and an all-reduce adds them up; the M-step then runs on the
(small) replicated statistics. We do not write that by hand. The rows are placed
with a ``NamedSharding`` over a one-axis ``Mesh`` named ``"rows"`` and the
parameters are replicated; ``jax.jit`` (GSPMD) partitions the same compiled EM
loop and inserts the all-reduces where a matmul or sum contracts the row axis.
The result equals the single-device fit up to the order of floating-point
summation.

A sharded axis must divide evenly, so the rows are padded to a multiple of the
number of devices with rows of weight zero: every fitter already carries per-row
weights (multiplicities of folded rows, or ones), and a zero-weight row adds
nothing to any statistic or to the objective.

Several GPUs on one host: ``devices=jax.devices()``. Several hosts: start every
process with ``jax.distributed.initialize()``, after which ``jax.devices()`` lists
the devices of all hosts and the same call runs on all of them (each process
passes the full data, or see ``jax.make_array_from_process_local_data`` to build
the global array from per-host parts). On CPU, tests force several host devices
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "ROW_AXIS",
    "check_devices",
    "padded_rows",
    "place_rows",
    "replicate",
    "shard_rows",
    "splits_rows",
]

ROW_AXIS = "rows"


def check_devices(devices) -> list | None:
    """None (default placement) or a non-empty list of distinct JAX devices.

    An integer m means the first m of ``jax.devices()``.
    """
    if devices is None:
        return None
    available = jax.devices()
    if isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices={devices} but {len(available)} device(s) are available "
                f"({available[0].platform}); pass 1..{len(available)}, or force "
                f"CPU host devices with XLA_FLAGS="
                f"--xla_force_host_platform_device_count=N before importing jax"
            )
        return list(available[:devices])
    if not isinstance(devices, Sequence) or not devices:
        raise TypeError(
            f"devices must be None, an int or a non-empty list of jax devices, got "
            f"{devices!r}; e.g. devices=jax.devices()"
        )
    devices = list(devices)
    for device in devices:
        if not isinstance(device, jax.Device):
            raise TypeError(
                f"devices must hold jax.Device objects (from jax.devices()), got "
                f"{device!r}"
            )
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices lists a device twice: {devices}")
    return devices


def splits_rows(devices) -> bool:
    """True when ``check_devices``'s result spreads the rows over several
    devices (the jitted EM cores' static ``sharded``)."""
    return bool(devices) and len(devices) > 1


def padded_rows(num_rows: int, devices) -> int:
    """Rows after padding to a multiple of the device count (unchanged if None)."""
    if not devices:
        return num_rows
    count = len(devices)
    return -(-num_rows // count) * count


def _mesh(devices) -> Mesh:
    return Mesh(np.asarray(devices), (ROW_AXIS,))


def shard_rows(array, devices):
    """Place ``array`` with its first axis split over ``devices`` (others whole).

    The row count must already be a multiple of ``len(devices)``
    (``padded_rows``).
    """
    spec = PartitionSpec(ROW_AXIS, *([None] * (np.ndim(array) - 1)))
    return jax.device_put(array, NamedSharding(_mesh(devices), spec))


def replicate(tree, devices):
    """Place every leaf of ``tree`` whole on every device."""
    sharding = NamedSharding(_mesh(devices), PartitionSpec())
    return jax.tree_util.tree_map(lambda leaf: jax.device_put(leaf, sharding), tree)


def place_rows(x, devices, replicated=None):
    """Rows ready for a data-parallel fit: ``(x, row_weights, replicated)``.

    x (n, ...) gets zero rows appended up to ``padded_rows(n, devices)`` and
    row_weights (1 for a real row, 0 for padding); with devices, both are sharded
    over rows and every leaf of ``replicated`` (starts, keys, prior) is copied to
    every device. Without devices, this is ``jnp.asarray`` and ones.
    """
    num_rows = np.shape(x)[0]
    total = padded_rows(num_rows, devices)
    if total > num_rows:
        x = np.asarray(x)
        padding = np.zeros((total - num_rows,) + x.shape[1:], x.dtype)
        x = np.concatenate([x, padding])
    x = jnp.asarray(x)
    row_weights = jnp.asarray(np.arange(total) < num_rows, x.dtype)
    if devices:
        x = shard_rows(x, devices)
        row_weights = shard_rows(row_weights, devices)
        replicated = replicate(replicated, devices)
    return x, row_weights, replicated
