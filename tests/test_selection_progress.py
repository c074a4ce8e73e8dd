"""K sweeps report one progress line per finished K through ``progress_fn``."""

import jax
import numpy as np

from latentmix.inference.selection import (
    select_num_components,
    select_num_components_multinomial,
)


def test_gaussian_sweep_reports_every_k():
    x = np.random.default_rng(0).normal(size=(60, 2))
    lines = []
    selection = select_num_components(x, [1, 2], rng_key=jax.random.key(0),
                                      num_restarts=1, progress_fn=lines.append)
    assert [line.split(" (")[0] for line in lines] == ["K = 1", "K = 2"]
    assert "(2/2)" in lines[-1]
    bic_k2 = selection.table.set_index("num_components").loc[2, "bic"]
    assert f"BIC {bic_k2:.1f}" in lines[-1]


def test_multinomial_sweep_reports_every_k():
    counts = np.random.default_rng(1).multinomial(5, [0.5, 0.3, 0.2], size=40)
    lines = []
    select_num_components_multinomial(counts, [1, 2], rng_key=jax.random.key(0),
                                      num_restarts=1, progress_fn=lines.append)
    assert [line.split(" (")[0] for line in lines] == ["K = 1", "K = 2"]
