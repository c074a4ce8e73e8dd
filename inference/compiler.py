"""The EM programs' XLA options: matrix products to YNNPACK, reductions to XLA.

jax 0.10's CPU compiler hands matrix products to YNNPACK, and by default also
reductions and the element-wise work fused around the products ("YNN
fusions"). Per program, ``em_jit`` keeps YNNPACK for each matrix product alone
(``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``) and leaves reductions (the E-step's
max, exp and sum over components, the statistics' sums) to XLA's own loops.
Measured on a 2-core x86-64 CPU, float64, n = 1e5, one restart from the same
start (``scripts/benchmark.py gmm``'s problem), the compiled program alone:

  diagonal, d = k = 16, 10 iterations      100 -> 91 ms
  spherical, d = k = 16, 10 iterations      85 -> 76 ms
  full, d = k = 16, 10 iterations          402 -> 383 ms
  full, d = 64, k = 16, 5 iterations      2.02 -> 1.84 s

The option is given to each EM program (``jax.jit(compiler_options=...)``),
so the user's other JAX programs are untouched. It is experimental in XLA:
whether this jaxlib knows it is probed once per process (compiling a 2 x 2
product on the default backend), and a jaxlib that does not gets plain
``jax.jit``. It is an option of the CPU compiler; its effect on a GPU program
has not been measured (no GPU was lent to the sessions that wrote this).
"""

import functools

import jax
import jax.numpy as jnp

__all__ = ["EM_COMPILER_OPTIONS", "em_jit", "supported_options"]

EM_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


def em_jit(fn=None, **jit_kwargs):
    """``jax.jit(fn, **jit_kwargs)`` with ``supported_options()``.

    Used as ``@em_jit`` or ``@partial(em_jit, static_argnames=...)``. The jitted
    function is built on first use (the probe needs a backend, which importing
    latentmix does not start); attributes such as ``lower`` and ``_cache_size``
    are the jitted function's.
    """
    if fn is None:
        return functools.partial(em_jit, **jit_kwargs)
    return _LazyJit(fn, jit_kwargs)


@functools.cache
def supported_options() -> dict:
    """``EM_COMPILER_OPTIONS`` if this jaxlib compiles with them, else {}."""
    try:
        probe = jax.jit(jnp.matmul, compiler_options=EM_COMPILER_OPTIONS)
        probe.lower(jnp.ones((2, 2)), jnp.ones((2, 2))).compile()
    except (TypeError, ValueError, RuntimeError):
        # An unknown option or value (JaxRuntimeError is a RuntimeError), or a
        # jax without ``compiler_options``: compile without them.
        return {}
    return dict(EM_COMPILER_OPTIONS)


class _LazyJit:
    """A jitted function created with the probed options on first use."""

    def __init__(self, fn, jit_kwargs):
        self._fn = fn
        self._jit_kwargs = jit_kwargs
        self._jitted = None
        functools.update_wrapper(self, fn)

    def _get(self):
        if self._jitted is None:
            options = supported_options()
            extra = {"compiler_options": options} if options else {}
            self._jitted = jax.jit(self._fn, **self._jit_kwargs, **extra)
        return self._jitted

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name):
        # Only reached for attributes the instance lacks (lower, _cache_size...).
        if name.startswith("__") or name in ("_fn", "_jit_kwargs", "_jitted"):
            raise AttributeError(name)
        return getattr(self._get(), name)
