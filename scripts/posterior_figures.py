"""Figures shared by the stories: EM against the NUTS posterior, segment lifts.

``plot_em_vs_nuts`` puts every parameter element of a mixture on one axis: the
NUTS posterior in units of its own sd (94% HDI as a bar, centred on the
posterior mean) and the EM estimate as a marker at (EM - mean) / sd, so a reader
sees at a glance whether EM sits inside the posterior. ``plot_lift_heatmap``
draws segments x categories as lift = P(c | k) / P(c) on a log scale.
"""

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from latentmix.inference.segments import category_lift

__all__ = ["plot_em_vs_nuts", "plot_lift_heatmap", "standardised_positions"]

HDI_PROB = 0.94


def standardised_positions(idata, em_sites: dict, hdi_prob: float = HDI_PROB):
    """Rows (label, hdi_low, hdi_high, em) in posterior-sd units around the mean.

    One row per element of every site in ``em_sites`` (name -> EM value with the
    posterior's element shape).
    """
    rows = []
    posterior = idata.posterior
    for name, value in em_sites.items():
        draws = np.asarray(posterior[name].values)
        draws = draws.reshape((-1,) + draws.shape[2:])
        value = np.asarray(value)
        for index in np.ndindex(value.shape):
            column = draws[(slice(None),) + index]
            mean, sd = column.mean(), column.std()
            if not sd > 0:
                continue
            low, high = az.hdi(column, hdi_prob=hdi_prob)
            label = f"{name}[{','.join(map(str, index))}]"
            rows.append((label, (low - mean) / sd, (high - mean) / sd,
                         (float(value[index]) - mean) / sd))
    return rows


def plot_em_vs_nuts(idata, em_sites: dict, title: str):
    """Every element's 94% HDI (bar) and the EM estimate (dot), in sd units."""
    rows = standardised_positions(idata, em_sites)
    height = max(3.0, 0.16 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(7.5, height))
    positions = np.arange(len(rows))[::-1]
    for y, (_, low, high, em) in zip(positions, rows, strict=True):
        inside = low <= em <= high
        ax.plot([low, high], [y, y], color="0.6", lw=3, solid_capstyle="butt")
        ax.plot(em, y, "o", ms=4, color="tab:blue" if inside else "tab:red")
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(positions, [row[0] for row in rows], fontsize=6)
    ax.set_xlabel("(value − posterior mean) / posterior sd")
    outside = sum(not low <= em <= high for _, low, high, em in rows)
    ax.set_title(f"{title}\ngrey: NUTS {HDI_PROB:.0%} HDI; dot: EM estimate "
                 f"({outside} of {len(rows)} outside)", fontsize=9)
    ax.set_xlim(-3, 3)
    fig.tight_layout()
    return fig


def plot_lift_heatmap(params, categories, overall, *, num_top: int = 4,
                      title: str = ""):
    """Segments (rows) x the union of their top categories by lift (columns)."""
    probs = np.asarray(params.probs)
    weights = np.asarray(params.weights)
    lift = category_lift(probs, overall)
    shares = overall if np.ndim(overall) == 1 else None
    chosen = []
    for segment in range(probs.shape[0]):
        order = np.argsort(-np.nan_to_num(lift[segment], nan=-np.inf),
                           kind="stable")
        if shares is not None:
            order = [c for c in order if shares[c] > 1e-4]
        for column in list(order)[:num_top]:
            if column not in chosen:
                chosen.append(int(column))
    names = [str(categories[c]).title()[:26] for c in chosen]
    matrix = lift[:, chosen]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.36 * len(chosen) + 2.5),
                                    0.42 * probs.shape[0] + 2.2))
    image = ax.imshow(np.clip(matrix, 0.1, 10.0), cmap="RdBu_r",
                      norm=LogNorm(vmin=0.1, vmax=10.0), aspect="auto")
    ax.set_xticks(range(len(chosen)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(probs.shape[0]),
                  [f"segment {k} ({w:.0%})" for k, w in enumerate(weights)],
                  fontsize=8)
    for (row, col), value in np.ndenumerate(matrix):
        if value >= 2:
            ax.annotate(f"{value:.1f}", (col, row), ha="center", va="center",
                        fontsize=6, color="w" if value > 5 else "k")
    fig.colorbar(image, ax=ax, label="lift P(c | segment) / P(c), log scale")
    ax.set_title(title or "Segments by category lift", fontsize=10)
    fig.tight_layout()
    return fig
