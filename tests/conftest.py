"""Test configuration: CPU, float64, parallel host devices for NUTS chains.

x64 must be on before any array is created, and the host device count must be set
before JAX initialises its backends: ``pytest_configure`` runs after this file is
imported and before any test module is collected, and importing jax or numpyro
starts no backend.
"""

import os

import jax
import numpyro
import pytest


def pytest_configure(config):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    jax.config.update("jax_platforms", "cpu")
    numpyro.set_host_device_count(4)
    numpyro.enable_x64()


@pytest.fixture
def rng_key():
    """A fixed PRNG key; tests split it for their own purposes."""
    return jax.random.key(0)
