"""Test configuration: CPU, float64, parallel host devices for NUTS chains.

x64 must be on before any array is created, and the host device count must be set
before JAX initialises its backends, hence both happen at import time here.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpyro  # noqa: E402

numpyro.set_host_device_count(4)
numpyro.enable_x64()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_platforms", "cpu")


@pytest.fixture
def rng_key():
    """A fixed PRNG key; tests split it for their own purposes."""
    return jax.random.key(0)
