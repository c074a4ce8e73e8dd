"""Test configuration: CPU, float64, parallel host devices for NUTS chains.

x64 must be on before any array is created, and the host device count must be set
before JAX initialises its backends: ``pytest_configure`` runs after this file is
imported and before any test module is collected, and importing jax or numpyro
starts no backend.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpyro
import pytest


def pytest_configure(config):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    jax.config.update("jax_platforms", "cpu")
    # One persistent XLA compilation cache per test run, shared by the xdist
    # workers and the command-line runs they start (through the environment):
    # most of the suite's time is compiling the same programs in different
    # processes. Numbers are unchanged (a cache hit is the same executable).
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    cache = os.path.join(tempfile.gettempdir(), f"latentmix-xla-cache-{run_id}")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    jax.config.update("jax_compilation_cache_dir",
                      os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    # Compiling dominates the suite (thousands of small programs, each compiled
    # once per test module after jax.clear_caches below), not running them:
    # LLVM's optimisation level 0 for XLA's CPU code. Measured on 2 cores:
    # test_em_gaussian_mixture.py 58 -> 48 s, test_posterior_scale_free.py
    # 85 -> 70 s. XLA's own graph passes run as before and neither level uses
    # fast-math; results may differ in the last bits (which multiply-adds LLVM
    # fuses can depend on the level), far below every tolerance of the suite.
    # Users' runs (and the benchmarks) keep XLA's default level.
    if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_backend_optimization_level=0").strip()
    numpyro.set_host_device_count(4)
    numpyro.enable_x64()


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Each compiled XLA:CPU program keeps a few memory mappings for its machine
    code for as long as it is cached; a test worker that compiles thousands of
    programs reaches the kernel's limit (vm.max_map_count, 65,530) and XLA then
    crashes in its next compilation (measured: a worker passed 17,000 mappings
    in its first 80 s). Programs are rarely shared between modules, and those
    that are come back from the persistent cache above.
    """
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def demo_fast_run():
    """One ``scripts/demo.py --fast --quiet --seed 0`` run per test run, in a
    subprocess as a user starts it: (CompletedProcess, output folder).

    The demo runs every story (``<out>/<story>/``) and writes the report;
    test_demo.py checks the report and the story tests check their story's
    folder, so the stories run once per suite instead of twice. The run is
    kept on disk under the test run's id, behind a file lock: pytest-xdist may
    tear session fixtures down when a worker's queue runs dry (a full suite
    ran the demo twice that way), and the tests may land on different workers
    (``pytest.mark.xdist_group("demo")`` with ``--dist loadgroup`` keeps them
    together); whoever comes second waits for the first run and reads it.
    """
    import fcntl
    import json

    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    folder = Path(tempfile.gettempdir()) / f"latentmix-demo-{run_id}"
    folder.mkdir(exist_ok=True)
    out, record = folder / "out", folder / "completed.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            scripts = Path(__file__).resolve().parents[1] / "scripts"
            env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
            completed = subprocess.run(
                [sys.executable, str(scripts / "demo.py"), "--fast", "--quiet",
                 "--seed", "0", "--out", str(out)],
                capture_output=True, text=True, timeout=900, env=env)
            record.write_text(json.dumps({
                "args": completed.args, "returncode": completed.returncode,
                "stdout": completed.stdout, "stderr": completed.stderr}))
    saved = json.loads(record.read_text())
    return subprocess.CompletedProcess(**saved), out


@pytest.fixture
def rng_key():
    """A fixed PRNG key; tests split it for their own purposes."""
    return jax.random.key(0)
