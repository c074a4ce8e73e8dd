"""Mixture models for ``fit.py``: Gaussian mixture and multinomial mixture.

Both follow one recipe: choose K (given, or swept with restarts and picked by
BIC, ICL or held-out log-likelihood), fit it by EM, then optionally MAP and VI
(started at the EM fit) and NUTS (chains started at the EM fit, draws relabelled
against it), and write per-row assignments.
"""

import jax
import numpy as np
import pandas as pd

from latentmix.data.tables import (
    DataError,
    count_matrix,
    numeric_matrix,
    require_columns,
)
from latentmix.scripts import runtime as rt
from latentmix.scripts.fitting import default_columns

HELDOUT_FRACTION = 0.2


def _methods(method: str) -> set:
    return {"em", "map", "vi", "nuts"} if method == "all" else {"em", method}


def _split_rows(num_rows: int, seed: int):
    """Shuffled train/held-out row indices for --criterion heldout."""
    order = np.random.default_rng(seed).permutation(num_rows)
    cut = num_rows - max(1, int(round(HELDOUT_FRACTION * num_rows)))
    if cut < 1:
        raise DataError("--criterion heldout needs at least 2 rows")
    return np.sort(order[:cut]), np.sort(order[cut:])


def _selection_figure(table: pd.DataFrame, criterion: str, out, name: str):
    import matplotlib.pyplot as plt

    columns = [c for c in ("bic", "icl", "aic") if c in table.columns]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for column in columns:
        axes[0].plot(table["num_components"], table[column], "o-", label=column.upper())
    axes[0].set_xlabel("K")
    axes[0].set_ylabel("criterion (-2 LL scale, lower is better)")
    axes[0].legend()
    heldout = "heldout_log_likelihood"
    if heldout in table.columns and table[heldout].notna().any():
        axes[1].plot(table["num_components"], table[heldout], "o-", color="C3")
        axes[1].set_ylabel("held-out log-likelihood")
    else:
        axes[1].plot(table["num_components"], table["log_likelihood"], "o-")
        axes[1].set_ylabel("mean training log-likelihood")
    axes[1].set_xlabel("K")
    fig.suptitle(f"Choice of K (criterion: {criterion})")
    return rt.save_figure(fig, out / name), f"Model selection ({criterion})"


def _nuts_block(model, model_args, model_kwargs, init_sites, reference, args,
                outcome, progress, key):
    """NUTS started at the EM fit; diagnostics before and after relabelling."""
    from latentmix.inference.align import relabel_samples
    from latentmix.inference.mcmc import diagnostics, run_nuts

    with progress.step("NUTS"):
        idata = run_nuts(model, *model_args, rng_key=key,
                         num_chains=args.num_chains, num_warmup=args.num_warmup,
                         num_samples=args.num_samples, init_params=init_sites,
                         progress_bar=not args.quiet, **model_kwargs)
    raw = diagnostics(idata, warn=False)
    relabelled, _ = relabel_samples(idata, reference)
    table = diagnostics(relabelled, warn=False)
    summary = pd.DataFrame({
        "r_hat raw": raw["r_hat"], "r_hat relabelled": table["r_hat"],
        "ess_bulk relabelled": table["ess_bulk"], "divergences": table["divergences"],
        "ok": table["ok"],
    })
    bad = summary.index[~summary["ok"]].tolist()
    if bad:
        outcome.diagnostics_failed = True
        outcome.diagnostic_messages.append(
            f"NUTS: r_hat > 1.01, ESS < 100 per chain or divergences for {bad}"
        )
    outcome.idata = relabelled
    outcome.tables.append(("NUTS diagnostics (before and after relabelling)",
                           summary))
    return relabelled


def _cross_table(estimates: dict, reference_name: str) -> pd.DataFrame:
    """Per-site largest absolute difference of each method to the reference."""
    reference = estimates[reference_name]
    rows = []
    for method, sites in estimates.items():
        for site, value in sites.items():
            if site not in reference:
                continue
            difference = np.max(np.abs(np.asarray(value) - np.asarray(reference[site])))
            rows.append({"method": method, "site": site,
                         f"max abs diff to {reference_name}": float(difference)})
    return pd.DataFrame(rows).set_index(["method", "site"])


# ------------------------------------------------------------ Gaussian mixture


def fit_gaussian_mixture(args, frame, progress, partial, Outcome):
    from latentmix.inference.align import align_components
    from latentmix.inference.em import fit_gaussian_mixture as em_fit
    from latentmix.inference.selection import gmm_bic, select_num_components
    from latentmix.inference.svi import fit_map, fit_vi
    from latentmix.models import gaussian_mixture as gm

    columns = args.columns or default_columns(frame, set())
    # The EM keeps the data's dtype: this is where --dtype reaches it.
    x = numeric_matrix(frame, columns, path=args.data).astype(args.dtype)
    key_select, key_fit, key_map, key_vi, key_nuts = jax.random.split(
        jax.random.key(args.seed), 5
    )
    payload = {"model": "gaussian-mixture", "columns": columns,
               "covariance_type": args.covariance_type}
    partial["payload"] = payload
    outcome = Outcome(payload, pd.DataFrame(), "assignments.csv")
    fit_options = {"covariance_type": args.covariance_type,
                   "num_restarts": args.restarts, "max_iters": args.max_iters}
    num_components = args.k
    if args.k_range is not None:
        k_values = [k for k in args.k_range if k <= len(x)]
        if not k_values:
            raise DataError(f"every K in --k-range exceeds the {len(x)} rows")
        if args.criterion == "heldout":
            train, test = _split_rows(len(x), args.seed)
            rows = []
            for key, k in zip(jax.random.split(key_select, len(k_values)), k_values,
                              strict=True):
                with progress.step(f"K = {k}"):
                    result = em_fit(x[train], k, rng_key=key, **fit_options)
                heldout = float(np.sum(gm.log_likelihood(
                    result.params, x[test], args.covariance_type)))
                rows.append({"num_components": k,
                             "log_likelihood": float(result.log_likelihood),
                             "bic": float(gmm_bic(result.params, x[train],
                                                  args.covariance_type)),
                             "heldout_log_likelihood": heldout})
                payload["selection"] = rows
            table = pd.DataFrame(rows)
            num_components = int(table["num_components"].iloc[
                int(np.argmax(table["heldout_log_likelihood"]))])
        else:
            with progress.step(f"sweeping K over {k_values}"):
                selection = select_num_components(
                    x, k_values, criterion=args.criterion, rng_key=key_select,
                    progress_fn=progress, **fit_options)
            table = selection.table
            num_components = selection.best_num_components
        payload["selection"] = table.to_dict(orient="list")
        outcome.tables.append((f"Choice of K by {args.criterion}", table))
        outcome.figures.append(lambda out: _selection_figure(
            table, args.criterion, out, "selection.png"))
    if num_components > len(x):
        raise DataError(f"--k {num_components} exceeds the number of rows {len(x)}")
    with progress.step(f"EM with K = {num_components}"):
        result = em_fit(x, num_components, rng_key=key_fit, **fit_options)
    params = result.params
    payload.update({
        "num_components": num_components,
        "log_likelihood_per_row": float(result.log_likelihood),
        "bic": float(gmm_bic(params, x, args.covariance_type)),
        "em": {"num_iters": int(result.num_iters),
               "converged": bool(result.converged)},
        "weights": params.weights, "means": params.means,
        "covariances": params.covariances,
    })
    resp = np.asarray(gm.responsibilities(params, x, args.covariance_type))
    rows = pd.DataFrame({"row": np.arange(1, len(x) + 1),
                         "component": resp.argmax(1),
                         "probability": resp.max(1)})
    for k in range(num_components):
        rows[f"resp_{k}"] = resp[:, k]
    outcome.rows = rows
    methods = _methods(args.method)
    model_kwargs = {"covariance_type": args.covariance_type}
    em_sites = {name: np.asarray(value)
                for name, value in gm.to_sites(params, args.covariance_type).items()}
    estimates = {"EM": em_sites}
    if "map" in methods:
        prior = gm.default_prior(x, num_components)
        with progress.step("MAP-EM and AutoDelta MAP with the default prior"):
            map_em = em_fit(x, num_components, init=params, prior=prior,
                            covariance_type=args.covariance_type,
                            max_iters=args.max_iters, tol=1e-8)
            fit = fit_map(gm.model, x, num_components, rng_key=key_map,
                          num_steps=3000, init_params=gm.to_sites(
                              map_em.params, args.covariance_type),
                          prior=prior, **model_kwargs)
        aligned, _ = align_components(gm.from_sites(fit.params), map_em.params)
        estimates["MAP-EM"] = gm.to_sites(map_em.params, args.covariance_type)
        estimates["MAP (AutoDelta)"] = gm.to_sites(aligned, args.covariance_type)
        payload["map"] = fit.params
    if "vi" in methods:
        with progress.step("VI (mean-field Gaussian)"):
            fit = fit_vi(gm.model, x, num_components, rng_key=key_vi,
                         num_steps=3000, init_params=em_sites, **model_kwargs)
        aligned, _ = align_components(gm.from_sites(fit.params), params)
        estimates["VI (median)"] = gm.to_sites(aligned, args.covariance_type)
        payload["vi"] = fit.params
    if "nuts" in methods:
        relabelled = _nuts_block(gm.model, (x, num_components), model_kwargs,
                                 em_sites, params, args, outcome, progress, key_nuts)
        estimates["NUTS (posterior mean)"] = {
            name: relabelled.posterior[name].mean(("chain", "draw")).values
            for name in em_sites}
    if len(estimates) > 1:
        cross = _cross_table(estimates, "MAP-EM" if "MAP-EM" in estimates else "EM")
        outcome.tables.insert(0, ("Cross-check of point estimates", cross))
        payload["cross_check"] = cross.reset_index().to_dict(orient="list")
    if x.shape[1] >= 2:
        outcome.figures.append(lambda out: _gmm_scatter(x, columns, params, resp, out))
    return outcome


def _gmm_scatter(x, columns, params, resp, out):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(x[:, 0], x[:, 1], c=resp.argmax(1), s=8, cmap="tab10", alpha=0.7)
    for mean, cov in zip(np.asarray(params.means), np.asarray(params.covariances),
                         strict=True):
        values, vectors = np.linalg.eigh(cov[:2, :2])
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        for radius in (1.0, 2.0):
            ax.add_patch(Ellipse(mean[:2], *(2 * radius * np.sqrt(values[::-1])),
                                 angle=angle, fill=False, lw=1.2))
    ax.set_xlabel(columns[0])
    ax.set_ylabel(columns[1])
    return (rt.save_figure(fig, out / "components.png"),
            "Data coloured by component, with 1- and 2-sd ellipses of the EM fit")


# ------------------------------------------------------------ multinomial mixture


def _basket_counts(args, frame):
    """BasketCounts-like (counts, row ids, groups, categories) from wide or long."""
    from scipy import sparse

    from latentmix.data.shoppers import baskets_from_lines

    if args.format == "long":
        needed = [args.basket_column, args.category_column]
        if args.groups:
            needed.append(args.groups)
        if args.quantity_column:
            needed.append(args.quantity_column)
        require_columns(frame, needed, path=args.data)
        lines = frame.copy()
        household = args.groups or "__household__"
        if not args.groups:
            lines[household] = 0
        baskets = baskets_from_lines(
            lines, basket_column=args.basket_column, household_column=household,
            category_column=args.category_column,
            quantity_column=args.quantity_column,
            value="quantity" if args.quantity_column else "lines")
        groups = np.asarray(baskets.household_ids) if args.groups else None
        return (sparse.csr_matrix(baskets.counts), np.asarray(baskets.basket_ids),
                groups, [str(c) for c in baskets.categories])
    exclude = {args.groups} if args.groups else set()
    columns = args.columns or default_columns(frame, exclude)
    if len(columns) < 2:
        raise DataError(
            f"a multinomial mixture needs at least 2 count columns, got {columns}"
        )
    counts = count_matrix(frame, columns, path=args.data)
    groups = None
    if args.groups:
        require_columns(frame, [args.groups], path=args.data, role="--groups column")
        if frame[args.groups].isna().any():
            row = int(np.flatnonzero(frame[args.groups].isna().to_numpy())[0]) + 1
            raise DataError(f"{args.data}: column {args.groups!r}, row {row} is empty;"
                            f" every row needs a group id")
        groups = frame[args.groups].astype(str).to_numpy()
    return counts, np.arange(1, len(counts) + 1), groups, columns


def fit_multinomial_mixture(args, frame, progress, partial, Outcome):
    from latentmix.inference.em import fit_multinomial_mixture as em_fit
    from latentmix.inference.segments import segment_map, top_categories
    from latentmix.inference.selection import (
        multinomial_bic,
        select_num_components_multinomial,
    )
    from latentmix.inference.svi import fit_map, fit_vi
    from latentmix.models import multinomial_mixture as mm

    counts, row_ids, groups, categories = _basket_counts(args, frame)
    key_select, key_fit, key_map, key_vi, key_nuts = jax.random.split(
        jax.random.key(args.seed), 5)
    payload = {"model": "multinomial-mixture", "categories": categories,
               "num_rows": int(counts.shape[0]),
               "groups_column": args.groups}
    partial["payload"] = payload
    outcome = Outcome(payload, pd.DataFrame(), "assignments.csv")
    fit_options = {"num_restarts": args.restarts, "max_iters": args.max_iters,
                   "dtype": args.dtype}
    num_components = args.k
    if args.k_range is not None:
        heldout = {}
        train_counts, train_groups = counts, groups
        if args.criterion == "heldout":
            train, test = _split_rows(counts.shape[0], args.seed)
            train_counts, heldout["heldout_counts"] = counts[train], counts[test]
            if groups is not None:
                train_groups = groups[train]
                known = np.isin(groups[test], train_groups)
                heldout["heldout_counts"] = heldout["heldout_counts"][known]
                heldout["heldout_groups"] = groups[test][known]
        with progress.step(f"sweeping K over {args.k_range}"):
            selection = select_num_components_multinomial(
                train_counts, args.k_range, criterion=args.criterion,
                rng_key=key_select, groups=train_groups, progress_fn=progress,
                **heldout, **fit_options)
        table = selection.table
        num_components = selection.best_num_components
        payload["selection"] = table.to_dict(orient="list")
        outcome.tables.append((f"Choice of K by {args.criterion}", table))
        outcome.figures.append(lambda out: _selection_figure(
            table, args.criterion, out, "selection.png"))
    with progress.step(f"EM with K = {num_components}"):
        result = em_fit(counts, num_components, groups=groups, rng_key=key_fit,
                        **fit_options)
    params = result.params
    codes = None if groups is None else mm.encode_groups(groups)[0]
    payload.update({
        "num_components": num_components,
        "log_likelihood_per_row": float(result.log_likelihood),
        "bic": float(multinomial_bic(params, counts, codes)),
        "em": {"num_iters": int(result.num_iters),
               "converged": bool(result.converged)},
        "weights": params.weights, "probs": params.probs,
    })
    if groups is not None:
        payload["group_labels"] = mm.encode_groups(groups)[1]
    resp = np.asarray(mm.responsibilities(params, counts, codes))
    labels = np.asarray(mm.assignments(params, counts, codes))
    rows = pd.DataFrame({"row": row_ids, "component": labels,
                         "probability": np.where(labels >= 0, resp.max(1), np.nan)})
    rows["component"] = rows["component"].astype(object).where(labels >= 0, "empty")
    for k in range(num_components):
        rows[f"resp_{k}"] = np.where(labels >= 0, resp[:, k], np.nan)
    outcome.rows = rows
    overall = np.asarray(counts.sum(axis=0)).ravel()
    overall = overall / overall.sum()
    outcome.tables.append(("Top categories per segment (by lift)",
                           top_categories(params, categories, overall)))
    mean_weights = np.asarray(params.weights).reshape(-1, num_components).mean(0)
    if num_components >= 3:
        outcome.figures.append(lambda out: _segment_map_figure(
            segment_map(np.asarray(params.probs), mean_weights), mean_weights, out))
    methods = _methods(args.method)
    model_kwargs = {} if codes is None else {"groups": codes}
    em_sites = {"weights": np.asarray(params.weights),
                "probs": np.asarray(params.probs)}
    if codes is not None:
        em_sites = {"weights": mean_weights, "probs": np.asarray(params.probs),
                    "group_weights": np.asarray(params.weights)}
    dense = np.asarray(counts.todense()) if hasattr(counts, "todense") else counts
    estimates = {"EM": em_sites}
    if "map" in methods:
        with progress.step("MAP (AutoDelta), flat Dirichlet priors"):
            fit = fit_map(mm.model, dense, num_components, rng_key=key_map,
                          num_steps=3000, init_params=em_sites, **model_kwargs)
        estimates["MAP (AutoDelta)"] = fit.params
        payload["map"] = fit.params
    if "vi" in methods:
        with progress.step("VI (mean-field Gaussian)"):
            fit = fit_vi(mm.model, dense, num_components, rng_key=key_vi,
                         num_steps=3000, init_params=em_sites, **model_kwargs)
        estimates["VI (median)"] = fit.params
        payload["vi"] = fit.params
    if "nuts" in methods:
        reference = mm.MultinomialMixtureParams(em_sites["weights"], em_sites["probs"])
        relabelled = _nuts_block(mm.model, (dense, num_components), model_kwargs,
                                 em_sites, reference, args, outcome, progress,
                                 key_nuts)
        estimates["NUTS (posterior mean)"] = {
            name: relabelled.posterior[name].mean(("chain", "draw")).values
            for name in ("weights", "probs")}
    if len(estimates) > 1:
        cross = _cross_table(estimates, "EM")
        outcome.tables.insert(0, ("Cross-check of point estimates", cross))
        payload["cross_check"] = cross.reset_index().to_dict(orient="list")
    return outcome


def _segment_map_figure(coords, weights, out):
    import matplotlib.pyplot as plt

    from latentmix.inference.segments import plot_segment_map

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    plot_segment_map(coords, weights, ax=ax)
    return (rt.save_figure(fig, out / "segment_map.png"),
            "Segments: classical MDS of L1 distances between category profiles, "
            "sized by weight")
