"""``benchmark.py scale``: how the EM scales with rows, devices, categories and K.

    python scripts/benchmark.py scale [--quick | --full] [--device auto|cpu|gpu]
        [--dtype auto|float32|float64] [--sections time,memory,sharded,sparse,sweeps]
        [--n 1e4,1e5,1e6] [--d 16] [--k 16] [--covariance-type diag] [--iters 10]
        [--repeats 2] [--chunk-rows 65536] [--categories 100,1000,10000]
        [--dense-cap-gib 2] [--sweep-k 1,...,20] [--protocol-k 2,...,10]
        [--protocol-rows 20000] [--out out/benchmark_scale.md] [--seed 0] [--quiet]

Everything runs on the platform ``--device`` selects (``scripts/device.py``: a GPU
when JAX finds one, else the CPU) in ``--dtype`` (float64 on CPU, float32 on GPU by
default); run the command once with ``--device cpu`` and once with ``--device gpu``
for a CPU and a GPU column. Sections (``--sections`` picks some):

1. ``time``: ``inference.em.fit_gaussian_mixture`` (d = 16, K = 16, diag by
   default) from one fixed start with tol = 0, so that every call runs exactly
   ``max_iters`` iterations. Seconds per iteration = (fastest warm call of
   ``iters + 1`` iterations - fastest warm call of 1 iteration) / ``iters``: the
   difference removes compilation, validation, transfer and the final E-step.
   An iteration reads every row a fixed number of times, so the time per row and
   iteration should be flat in N (linear growth of the total).
2. ``memory``: peak memory of one fit (``--iters`` iterations) in a fresh
   subprocess per N, in memory (the whole ``.npy`` loaded) and out of core
   (``data.chunks.chunks_from_npy``: chunks of ``--chunk-rows`` rows read from
   the file at their offsets every iteration). Two numbers each: the peak
   resident set (VmHWM of /proc/self/status) and the peak anonymous memory (RssAnon
   of /proc/self/status, sampled every 5 ms), the memory the process allocates
   itself, which is what must stay flat out of core. The out-of-core result is
   compared with the in-memory one (same start and iterations).
3. ``sharded``: in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_
   count=4``, the GMM and the multinomial mixture fitted with ``devices=None``
   and ``devices=4`` (rows sharded, statistics all-reduced) from the same start:
   times and the largest parameter difference. The host devices share this
   machine's cores, so this shows correctness and overhead, not speed-up.
4. ``sparse``: multinomial EM (``fit_multinomial_mixture``, K = 10) on simulated
   baskets with about 5 non-zero categories per row, dense against sparse layout,
   against the number of categories c; seconds per iteration as in
   ``benchmark.py multinomial`` (calls of ``iters`` iterations minus calls of 0).
   The dense layout is skipped where the dense matrix would exceed
   ``--dense-cap-gib``. A last row (not with ``--quick``) does the same on real
   baskets: every Complete Journey basket, all departments, at product_type level.
5. ``sweeps``: a whole K sweep in one program (``fit_gaussian_mixture_sweep``,
   ``fit_multinomial_mixture_sweep``) against a Python loop of separate fits, wall
   time including compilation (the point of the sweep: one program instead of one
   per K), and the largest difference of the final log-likelihoods. The separate
   fit for the i-th K uses ``jax.random.split(rng_key, len(K list))[i]``, the
   sweep's key convention. GMM: K = 1..20 on simulated rows; multinomial: the
   tutorial's protocol (10 restarts, rtol 1e-4, at most 100 iterations) on
   Complete Journey training baskets (``--protocol-rows`` of them; ``--full``: all
   96,792 and K up to 100). A function that does not exist yet is reported as not
   available.

``--quick`` is a tiny version of everything (about 30 s; tests). The default
takes about 4-5 minutes on 2 cores and peaks below 4 GiB of memory (the dense
layout at c = 10,000). ``--full`` adds N = 1e7 (the in-memory fit of 1e7 x 16
float64 rows peaks near 10 GiB with diag covariances, far more with full ones)
and the whole multinomial protocol on every training basket (an hour or more on
2 cores).

Writes a markdown report to ``--out`` and prints it. Exit status: 0 ok, 2 bad
arguments (or ``--device gpu`` without a GPU), 5 output not writable.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from latentmix.data.chunks import DEFAULT_CHUNK_ROWS, chunks_from_npy
from latentmix.data.validation import DataWarning
from latentmix.inference.em import ConvergenceWarning, fit_gaussian_mixture
from latentmix.models.gaussian_mixture import COVARIANCE_TYPES, GMMParams
from latentmix.scripts import device
from latentmix.scripts import runtime as rt
from latentmix.scripts.bench import (
    choice_list,
    int_list,
    positive,
    simulate,
    simulate_to_npy,
    start_params,
    timed,
)

SECTIONS = ("time", "memory", "sharded", "sparse", "sweeps")
SCRIPT = Path(__file__).resolve()
# What a missing or partial implementation raises when handed chunks or an
# option it does not know yet: the row is then reported as not available.
NOT_AVAILABLE = (TypeError, ValueError, ImportError, NotImplementedError)


class Settings(NamedTuple):
    """Sizes of every section (one set per mode; options override fields)."""

    n: tuple  # rows of sections 1-2
    d: int
    k: int
    iters: int
    repeats: int
    chunk_rows: int
    shard_rows: int  # section 3
    shard_devices: int
    shard_count_rows: int
    shard_categories: int
    categories: tuple  # section 4
    sparse_rows: int
    sparse_k: int
    sparse_iters: int
    nonzeros: float
    complete_journey: bool  # also the real baskets at product_type level
    sweep_k: tuple  # section 5
    sweep_rows: int
    sweep_d: int
    sweep_restarts: int
    sweep_max_iters: int
    sweep_tol: float
    protocol_k: tuple
    protocol_rows: int | None
    protocol_restarts: int
    protocol_rtol: float
    protocol_max_iters: int


DEFAULT = Settings(
    n=(10_000, 100_000, 1_000_000), d=16, k=16, iters=10, repeats=2,
    chunk_rows=DEFAULT_CHUNK_ROWS,
    shard_rows=100_000, shard_devices=4, shard_count_rows=20_000,
    shard_categories=100,
    categories=(100, 1000, 10_000), sparse_rows=20_000, sparse_k=10, sparse_iters=5,
    nonzeros=5.0, complete_journey=True,
    sweep_k=tuple(range(1, 21)), sweep_rows=10_000, sweep_d=4, sweep_restarts=5,
    sweep_max_iters=100, sweep_tol=1e-3,
    protocol_k=tuple(range(2, 11)), protocol_rows=20_000, protocol_restarts=10,
    protocol_rtol=1e-4, protocol_max_iters=100,
)
FULL = DEFAULT._replace(
    n=(10_000, 100_000, 1_000_000, 10_000_000),
    protocol_k=(2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30, 40, 50, 60, 70, 80, 90,
                100),
    protocol_rows=None,
)
QUICK = Settings(
    n=(1_000, 4_000), d=2, k=2, iters=2, repeats=1, chunk_rows=512,
    shard_rows=1_000, shard_devices=4, shard_count_rows=400, shard_categories=20,
    categories=(20, 200), sparse_rows=500, sparse_k=2, sparse_iters=2, nonzeros=5.0,
    complete_journey=False,
    sweep_k=(1, 2), sweep_rows=300, sweep_d=2, sweep_restarts=2,
    sweep_max_iters=10, sweep_tol=1e-3,
    protocol_k=(2, 3), protocol_rows=500, protocol_restarts=2, protocol_rtol=1e-4,
    protocol_max_iters=10,
)


def _quiet_fit(fn, *args, **kwargs):
    """Call a fitter with tol = 0's ConvergenceWarning (expected) and the
    DataWarnings of sparse simulated data (unobserved categories) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", DataWarning)
        return jax.block_until_ready(fn(*args, **kwargs))


def _mib(num_bytes):
    return num_bytes / 2**20


def _first_line(error) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


# --- 1. time per iteration against N ----------------------------------------------


def gmm_fit(x, start, covariance_type, iters, **options):
    """Exactly ``iters`` EM iterations from ``start`` (tol = 0), results ready."""
    return _quiet_fit(fit_gaussian_mixture, x, start.weights.shape[0],
                      covariance_type=covariance_type, init=start, max_iters=iters,
                      tol=0.0, **options)


def fastest_call(fn, repeats):
    """(seconds of the first, compiling call, fastest of ``repeats`` further
    calls, the last value): on a shared machine other processes only ever add
    time, so the fastest call is the best estimate of the undisturbed cost."""
    first, value = timed(fn)
    fastest = float("inf")
    for _ in range(repeats):
        seconds, value = timed(fn)
        fastest = min(fastest, seconds)
    return first, fastest, value


def time_row(x, start, settings, covariance_type):
    """Seconds per iteration at this N: (t(iters + 1) - t(1)) / iters."""
    first, one, _ = fastest_call(lambda: gmm_fit(x, start, covariance_type, 1),
                                 settings.repeats)
    _, many, _ = fastest_call(
        lambda: gmm_fit(x, start, covariance_type, settings.iters + 1),
        settings.repeats)
    # When iterations are cheap, noise can make the difference negative: the
    # whole long call divided by its iterations then bounds the cost from above.
    per_iteration = ((many - one) / settings.iters if many > one
                     else many / (settings.iters + 1))
    return {"n": x.shape[0], "first_s": first, "per_iteration_s": per_iteration,
            "per_row_ns": 1e9 * per_iteration / x.shape[0]}


# --- 2. peak memory, in a subprocess per fit --------------------------------------


class AnonymousMemorySampler:
    """Peak of RssAnon (/proc/self/status) sampled every ``interval`` seconds.

    Anonymous memory is what the process allocated itself (arrays, buffers), not
    file pages mapped from disk. Sampling misses peaks shorter than the interval;
    large allocations take longer than that to fill. None where /proc is absent.
    """

    def __init__(self, interval=0.005):
        self.interval, self.peak_kib = interval, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current_kib():
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def _run(self):
        while not self._stop.is_set():
            value = self.current_kib()
            if value is None:
                return
            self.peak_kib = max(self.peak_kib or 0, value)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        value = self.current_kib()
        if value is not None:
            self.peak_kib = max(self.peak_kib or 0, value)


def peak_rss_mib():
    """Peak resident set of this process in MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this address
    space. Not ru_maxrss: Linux carries it across fork and exec, so a worker
    started by a large parent would report the parent's peak. Elsewhere
    ru_maxrss (macOS reports bytes).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def memory_worker(spec):
    """One fit in this fresh process: ``spec["mode"]`` is "baseline" (imports and
    a JAX start only), "in_memory" (np.load, then fit) or "out_of_core"
    (``chunks_from_npy``, then fit)."""
    result = {}
    with AnonymousMemorySampler() as sampler:
        import jax.numpy as jnp

        jnp.zeros(8).block_until_ready()  # starts the backend
        if spec["mode"] != "baseline":
            with np.load(spec["start"]) as saved:
                start = GMMParams(*(saved[name] for name in GMMParams._fields))
            if spec["mode"] == "in_memory":
                x = np.load(spec["path"])
            else:
                x = chunks_from_npy(spec["path"], chunk_rows=spec["chunk_rows"])
            try:
                seconds, fit = timed(lambda: gmm_fit(
                    x, start, spec["covariance_type"], spec["iters"],
                    rng_key=jax.random.key(0)))
                result.update(seconds=seconds,
                              log_likelihood=float(fit.log_likelihood),
                              params=[np.asarray(leaf).tolist() for leaf in fit.params])
            except NOT_AVAILABLE as error:
                result["error"] = _first_line(error)
    result.update(peak_rss_mib=peak_rss_mib(),
                  peak_anon_mib=None if sampler.peak_kib is None
                  else sampler.peak_kib / 1024)
    return result


def run_worker(spec, env=None, timeout=3600):
    """Run ``spec`` in ``python benchmark_scale.py --worker``; its result dict."""
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--worker", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, **(env or {})),
    )
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"worker exited with status {completed.returncode}: {tail}"}


def _max_difference(left, right):
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(left, right, strict=True))


def memory_rows(paths, starts, settings, args, choice, progress):
    """Baseline, then in-memory and out-of-core fits per N, each in a subprocess."""
    base = {"device": "cpu" if choice.platform == "cpu" else "gpu",
            "dtype": choice.dtype, "covariance_type": args.covariance_type,
            "iters": settings.iters, "chunk_rows": settings.chunk_rows}
    with progress.step("memory: baseline process"):
        baseline = run_worker({**base, "mode": "baseline"})
    rows = []
    for n, path in paths.items():
        row = {"n": n, "data_mib": _mib(os.path.getsize(path))}
        for mode in ("in_memory", "out_of_core"):
            with progress.step(f"memory: N={n} {mode.replace('_', ' ')}"):
                row[mode] = run_worker({**base, "mode": mode, "path": str(path),
                                        "start": str(starts[n])})
        inside, outside = row["in_memory"], row["out_of_core"]
        if "params" in inside and "params" in outside:
            row["difference"] = _max_difference(inside["params"], outside["params"])
        rows.append(row)
    return baseline, rows


# --- 3. sharded against single-device ---------------------------------------------


def sparse_counts(num_rows, num_categories, nonzeros, num_components, seed):
    """CSR baskets: each row draws 1 + Poisson(nonzeros - 1) items from one of
    ``num_components`` Dirichlet(0.5) category distributions (about ``nonzeros``
    distinct categories per row when c is large)."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(num_categories, 0.5), size=num_components)
    cumulative = np.cumsum(probs, axis=1)
    labels = rng.integers(0, num_components, num_rows)
    sizes = 1 + rng.poisson(nonzeros - 1.0, num_rows)
    rows = np.repeat(np.arange(num_rows), sizes)
    draws = rng.random(rows.size) * cumulative[labels[rows], -1]
    categories = np.empty(rows.size, dtype=np.int64)
    for component in range(num_components):  # inverse CDF, one component at a time
        chosen = labels[rows] == component
        categories[chosen] = np.searchsorted(cumulative[component], draws[chosen],
                                             side="right")
    categories = np.minimum(categories, num_categories - 1)
    matrix = sparse.coo_matrix((np.ones(rows.size, np.int64), (rows, categories)),
                               shape=(num_rows, num_categories)).tocsr()
    matrix.sum_duplicates()
    return matrix


def random_multinomial_start(num_components, num_categories, seed):
    from latentmix.inference.em import MultinomialMixtureParams

    rng = np.random.default_rng(seed + 1)
    return MultinomialMixtureParams(
        np.full(num_components, 1.0 / num_components),
        rng.dirichlet(np.ones(num_categories), size=num_components))


def sharded_worker(spec):
    """Single-device against ``devices=count`` fits, GMM then multinomial."""
    from latentmix.inference.em import fit_multinomial_mixture

    count = spec["devices"]
    found = jax.devices()
    result = {"devices": [str(device) for device in found], "rows": []}
    if len(found) < count:
        result["error"] = f"only {len(found)} device(s): {found}"
        return result
    x = simulate(spec["rows"], spec["d"], spec["k"], spec["dtype"], spec["seed"])
    start = start_params(x, spec["k"], spec["covariance_type"], spec["seed"])
    counts = sparse_counts(spec["count_rows"], spec["categories"], 5.0,
                           spec["count_k"], spec["seed"])
    counts_start = random_multinomial_start(spec["count_k"], spec["categories"],
                                            spec["seed"])
    problems = [
        (f"GMM, N = {spec['rows']:,}, d = {spec['d']}, K = {spec['k']}, "
         f"{spec['covariance_type']}",
         lambda devices: gmm_fit(x, start, spec["covariance_type"], spec["iters"],
                                 devices=devices)),
        (f"multinomial, N = {spec['count_rows']:,}, c = {spec['categories']}, "
         f"K = {spec['count_k']}, dense",
         lambda devices: _quiet_fit(
             fit_multinomial_mixture, counts, spec["count_k"], init=counts_start,
             max_iters=spec["iters"], tol=0.0, rtol=0.0, layout="dense",
             dtype=spec["dtype"], devices=devices)),
    ]
    for label, fit in problems:
        row = {"problem": label}
        try:
            fits = {}
            for devices in (None, count):
                first, fastest, fits[devices] = fastest_call(
                    lambda fit=fit, devices=devices: fit(devices), spec["repeats"])
                row[f"seconds_{devices}"] = fastest
                row[f"first_{devices}"] = first
            row["param_difference"] = _max_difference(fits[None].params,
                                                      fits[count].params)
            row["ll_difference"] = abs(float(fits[None].log_likelihood)
                                       - float(fits[count].log_likelihood))
        except NOT_AVAILABLE as error:
            row["error"] = _first_line(error)
        result["rows"].append(row)
    return result


def sharded_section(settings, args, choice, progress):
    spec = {"rows": settings.shard_rows, "d": settings.d, "k": settings.k,
            "covariance_type": args.covariance_type, "iters": settings.iters,
            "repeats": settings.repeats, "devices": settings.shard_devices,
            "count_rows": settings.shard_count_rows,
            "categories": settings.shard_categories, "count_k": settings.sparse_k,
            "dtype": choice.dtype, "seed": args.seed, "mode": "sharded",
            "device": "cpu"}
    # The forced host devices exist only if XLA reads the flag before it starts.
    env = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_"
                         f"platform_device_count={settings.shard_devices}").strip(),
           "JAX_PLATFORMS": "cpu"}
    with progress.step(f"sharded: {settings.shard_devices} host devices"):
        return run_worker(spec, env=env)


# --- 4. sparse against dense multinomial EM ---------------------------------------


def sparse_rows(settings, args, choice, progress):
    from latentmix.scripts import benchmark_multinomial as bm

    itemsize = np.dtype(choice.dtype).itemsize
    rows = []
    for num_categories in settings.categories:
        counts = sparse_counts(settings.sparse_rows, num_categories,
                               settings.nonzeros, settings.sparse_k, args.seed)
        dense_gib = settings.sparse_rows * num_categories * itemsize / 2**30
        row = {"c": num_categories, "nonzeros": counts.nnz / counts.shape[0],
               "dense_gib": dense_gib}
        for layout in ("sparse", "dense"):
            if layout == "dense" and dense_gib > args.dense_cap_gib:
                row[layout] = f"skipped: dense matrix {dense_gib:.1f} GiB > cap"
                continue
            with progress.step(f"sparse: c={num_categories} {layout}"):
                with warnings.catch_warnings():
                    # Sparse simulated data leave some categories unobserved.
                    warnings.simplefilter("ignore", DataWarning)
                    try:
                        row[layout] = bm.ours_per_iteration(
                            counts, settings.sparse_k, 1, settings.sparse_iters,
                            choice.dtype, settings.repeats, args.seed, layout=layout)
                    except NOT_AVAILABLE as error:
                        row[layout] = f"not available: {_first_line(error)}"
        rows.append(row)
    if settings.complete_journey:
        rows.append(complete_journey_row(settings, args, choice, progress, bm))
    return rows


def complete_journey_row(settings, args, choice, progress, bm):
    """The same comparison on real baskets: Complete Journey at product_type
    level, every department (every basket, a few non-zeros per row)."""
    from latentmix.data.shoppers import load_complete_journey

    with progress.step("sparse: Complete Journey product_type"):
        counts = load_complete_journey(department=None, level="product_type").counts
    num_rows, num_categories = counts.shape
    itemsize = np.dtype(choice.dtype).itemsize
    row = {"c": num_categories, "nonzeros": counts.nnz / num_rows,
           "dense_gib": num_rows * num_categories * itemsize / 2**30,
           "label": f"{num_categories:,} (Complete Journey product_type, all "
                    f"departments, {num_rows:,} baskets)"}
    for layout in ("sparse", "dense"):
        if layout == "dense" and row["dense_gib"] > args.dense_cap_gib:
            row[layout] = f"skipped: dense matrix {row['dense_gib']:.1f} GiB > cap"
            continue
        with progress.step(f"sparse: Complete Journey {layout}"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)
                row[layout] = bm.ours_per_iteration(
                    counts, settings.sparse_k, 1, settings.sparse_iters,
                    choice.dtype, settings.repeats, args.seed, layout=layout)
    return row


# --- 5. K sweeps in one program against separate fits -----------------------------


def _sweep_function(name):
    from latentmix.inference import em

    return getattr(em, name, None)


def compare_sweep(sweep_fn, separate_fn, num_components_list, rng_key):
    """Wall time of the sweep and of the separate fits (compilation included),
    and the largest |difference| of their final log-likelihoods."""
    keys = jax.random.split(rng_key, len(num_components_list))
    sweep_s, sweep = timed(lambda: _quiet_fit(sweep_fn, list(num_components_list),
                                              rng_key=rng_key))
    separate_s, separate = timed(lambda: [
        _quiet_fit(separate_fn, k, rng_key=key)
        for k, key in zip(num_components_list, keys, strict=True)])
    differences = [abs(float(a.log_likelihood) - float(b.log_likelihood))
                   for a, b in zip(sweep, separate, strict=True)]
    return {"sweep_s": sweep_s, "separate_s": separate_s,
            "ll_difference": max(differences),
            "worst_k": num_components_list[int(np.argmax(differences))]}


def sweep_rows(settings, args, choice, progress):
    rows = []
    key = jax.random.key(args.seed)
    gmm_sweep = _sweep_function("fit_gaussian_mixture_sweep")
    x = simulate(settings.sweep_rows, settings.sweep_d, 5, choice.dtype, args.seed)
    label = (f"GMM, N = {settings.sweep_rows:,}, d = {settings.sweep_d}, "
             f"{args.covariance_type}, K = {_k_range(settings.sweep_k)}, "
             f"{settings.sweep_restarts} restarts, tol {settings.sweep_tol:g}, "
             f"<= {settings.sweep_max_iters} iterations")
    options = {"covariance_type": args.covariance_type,
               "num_restarts": settings.sweep_restarts,
               "max_iters": settings.sweep_max_iters, "tol": settings.sweep_tol}
    if gmm_sweep is None:
        rows.append({"problem": label, "error": "fit_gaussian_mixture_sweep is not "
                     "available in inference.em yet"})
    else:
        with progress.step("sweeps: GMM"):
            rows.append(_compared(label, lambda: compare_sweep(
                lambda ks, rng_key: gmm_sweep(x, ks, rng_key=rng_key, **options),
                lambda k, rng_key: fit_gaussian_mixture(x, k, rng_key=rng_key,
                                                        **options),
                settings.sweep_k, key)))
    multinomial_sweep = _sweep_function("fit_multinomial_mixture_sweep")
    baskets = ("all" if settings.protocol_rows is None
               else f"{settings.protocol_rows:,}")
    label = (f"multinomial, Complete Journey {baskets} training baskets, "
             f"K = {_k_range(settings.protocol_k)}, "
             f"{settings.protocol_restarts} restarts, rtol "
             f"{settings.protocol_rtol:g}, <= {settings.protocol_max_iters} "
             f"iterations")
    if multinomial_sweep is None:
        rows.append({"problem": label, "error": "fit_multinomial_mixture_sweep is "
                     "not available in inference.em yet"})
        return rows
    from latentmix.inference.em import fit_multinomial_mixture
    from latentmix.scripts import benchmark_multinomial as bm

    with progress.step("sweeps: load the Complete Journey"):
        train, _ = bm.load_training(settings.protocol_rows, args.seed)
    counts = train.counts
    options = {"num_restarts": settings.protocol_restarts,
               "max_iters": settings.protocol_max_iters, "tol": 0.0,
               "rtol": settings.protocol_rtol, "dtype": choice.dtype}
    with progress.step("sweeps: multinomial protocol"):
        rows.append(_compared(label, lambda: compare_sweep(
            lambda ks, rng_key: multinomial_sweep(counts, ks, rng_key=rng_key,
                                                  **options),
            lambda k, rng_key: fit_multinomial_mixture(counts, k, rng_key=rng_key,
                                                       **options),
            settings.protocol_k, jax.random.fold_in(key, 1))))
    return rows


def _compared(label, run):
    try:
        return {"problem": label, **run()}
    except NOT_AVAILABLE as error:
        return {"problem": label, "error": _first_line(error)}


def _k_range(values):
    values = list(values)
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}..{values[-1]}"
    return ",".join(str(value) for value in values)


# --- report -----------------------------------------------------------------------


def _rows_label(n):
    """10000 -> 1e4 for powers of ten, else 12,345."""
    exponent = int(round(np.log10(n)))
    return f"1e{exponent}" if 10**exponent == n else f"{n:,}"


def _seconds(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _memory_cell(result, name):
    value = result.get(name)
    return "n/a" if value is None else f"{value:,.0f}"


def header_lines(choice, command, load):
    from importlib import metadata

    return [
        "# latentmix at scale: rows, memory, devices, categories, K sweeps",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        f"({platform.platform()}); load average (1 min) {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end (other processes on a shared machine add time). "
        f"JAX {jax.__version__} (jaxlib {metadata.version('jaxlib')}), platform "
        f"**{choice.platform}** ({jax.devices()[0].device_kind}; devices: "
        f"{choice.devices}), dtype **{choice.dtype}**.",
        "",
    ]


def time_lines(rows, settings, args, choice):
    if not rows:
        return []
    base = rows[0]["per_row_ns"]
    lines = [
        "## 1. Time per EM iteration against N",
        "",
        f"`fit_gaussian_mixture`, d = {settings.d}, K = {settings.k}, "
        f"{args.covariance_type} covariances, {choice.dtype}, on {choice.platform}, "
        f"one fixed start, tol = 0. s / iteration = (fastest of {settings.repeats} "
        f"warm calls of {settings.iters + 1} iterations - fastest of "
        f"{settings.repeats} of 1 iteration) / {settings.iters}; first call = the "
        f"compiling call of 1 iteration. Linear growth means a flat time per row.",
        "",
        "| N | first call (s) | s / iteration | ns / row / iteration | per row, "
        "relative to the smallest N |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {_rows_label(row['n'])} | {row['first_s']:.2f} | "
            f"{row['per_iteration_s']:.3g} | {row['per_row_ns']:.3g} | "
            f"{row['per_row_ns'] / base:.2f} |")
    return lines + [""]


def memory_lines(baseline, rows, settings, args, choice):
    if not rows:
        return []
    lines = [
        "## 2. Peak memory against N: in memory and out of core",
        "",
        f"One fit of {settings.iters} iterations (d = {settings.d}, K = "
        f"{settings.k}, {args.covariance_type}, {choice.dtype}) per fresh "
        f"subprocess. In memory: `np.load` of the whole `.npy`, then the fit. Out "
        f"of core: `chunks_from_npy(path, chunk_rows={settings.chunk_rows:,})`, "
        f"chunks read at their offsets every iteration. MiB of host memory: "
        f"peak RSS = VmHWM (it includes the libraries JAX maps); peak anon "
        f"= peak RssAnon sampled every 5 ms, the memory the process allocates "
        f"itself, which is what must stay flat out of core. A process that only "
        f"imports "
        f"and starts JAX peaks at {_memory_cell(baseline, 'peak_rss_mib')} MiB RSS, "
        f"{_memory_cell(baseline, 'peak_anon_mib')} MiB anon. |d| = largest "
        f"parameter difference between the two fits (same start and iterations).",
        "",
        "| N | data (MiB) | in memory: peak RSS | peak anon | fit (s) | out of core: "
        "peak RSS | peak anon | fit (s) | \\|d\\| |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for row in rows:
        cells = [_rows_label(row["n"]), f"{row['data_mib']:.3g}"]
        for mode in ("in_memory", "out_of_core"):
            result = row[mode]
            if "error" in result:
                cells += ["n/a", "n/a", "n/a"]
                note = f"{mode.replace('_', ' ')} not available: {result['error']}"
                if note not in notes:
                    notes.append(note)
                continue
            cells += [_memory_cell(result, "peak_rss_mib"),
                      _memory_cell(result, "peak_anon_mib"),
                      f"{result['seconds']:.2f}"]
        cells.append(f"{row['difference']:.1e}" if "difference" in row else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {note}" for note in notes]
    return lines + ([""] if notes else [])


def sharded_lines(result, settings):
    if result is None:
        return []
    count = settings.shard_devices
    lines = [
        f"## 3. Sharded over {count} devices against one device",
        "",
        f"In a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count="
        f"{count}` (CPU). Same start, {settings.iters} iterations (tol = 0); rows "
        f"sharded with `devices={count}`, statistics all-reduced, parameters "
        f"replicated. Seconds: fastest of {settings.repeats} warm calls. The "
        f"{count} host devices share this machine's {os.cpu_count()} cores, so "
        f"this shows correctness and overhead, not speed-up; on several GPUs each "
        f"device brings its own compute. |d params| = largest parameter "
        f"difference, |dLL| = difference of the mean log-likelihoods (summation "
        f"order only).",
        "",
        f"| problem | 1 device (s) | {count} devices (s) | first call, 1 / {count} "
        f"(s) | \\|d params\\| | \\|dLL\\| |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    if "error" in result and not result.get("rows"):
        return lines + [f"| not available: {result['error']} | | | | | |", ""]
    notes = []
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['problem']} | n/a | n/a | n/a | n/a | n/a |")
            notes.append(f"{row['problem']}: not available: {row['error']}")
            continue
        lines.append(
            f"| {row['problem']} | {row['seconds_None']:.3g} | "
            f"{row[f'seconds_{count}']:.3g} | {row['first_None']:.2f} / "
            f"{row[f'first_{count}']:.2f} | {row['param_difference']:.1e} | "
            f"{row['ll_difference']:.1e} |")
    lines.append("")
    return lines + [f"- {note}" for note in notes] + ([""] if notes else [])


def sparse_lines(rows, settings, args, choice):
    if not rows:
        return []
    lines = [
        "## 4. Sparse against dense multinomial EM against the number of categories",
        "",
        f"`fit_multinomial_mixture(layout=...)`, {settings.sparse_rows:,} simulated "
        f"baskets, K = {settings.sparse_k}, {choice.dtype}, one restart. ms / "
        f"iteration = (fastest of {settings.repeats} calls of "
        f"{settings.sparse_iters} iterations - fastest call of 0) / "
        f"{settings.sparse_iters}; fixed = that call of 0 iterations (validation, "
        f"folding, layout, transfer, final E-step). Dense skipped above "
        f"{args.dense_cap_gib:g} GiB.",
        "",
        "| c | non-zeros / row | dense matrix (GiB) | sparse: ms / iteration | "
        "fixed (s) | dense: ms / iteration | fixed (s) | dense / sparse |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for row in rows:
        cells = [row.get("label", f"{row['c']:,}"), f"{row['nonzeros']:.2f}",
                 f"{row['dense_gib']:.2f}"]
        for layout in ("sparse", "dense"):
            value = row[layout]
            if isinstance(value, str):
                cells += ["n/a", "n/a"]
                notes.append(f"c = {row['c']:,}, {layout}: {value}")
            else:
                cells += [f"{1e3 * value[0]:.3g}", f"{value[1]:.2f}"]
        both = all(not isinstance(row[layout], str) for layout in ("sparse", "dense"))
        cells.append(f"{row['dense'][0] / row['sparse'][0]:.1f}x" if both else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines + [f"- {note}" for note in notes] + ([""] if notes else [])


def sweep_lines(rows):
    if not rows:
        return []
    lines = [
        "## 5. K sweeps in one program against separate fits",
        "",
        "Wall time of the whole sweep, compilation included (one program for the "
        "sweep, one per K for the separate fits, each K's restarts under vmap). "
        "|dLL| = largest difference of the final mean log-likelihoods over K "
        "(equal starts: the separate fit of the i-th K uses the i-th of "
        "`jax.random.split(rng_key, number of K)`).",
        "",
        "| problem | sweep (s) | separate fits (s) | separate / sweep | \\|dLL\\| "
        "(at K) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['problem']} | not available | | | |")
            continue
        lines.append(
            f"| {row['problem']} | {row['sweep_s']:.1f} | {row['separate_s']:.1f} | "
            f"{row['separate_s'] / row['sweep_s']:.1f}x | "
            f"{row['ll_difference']:.1e} ({row['worst_k']}) |")
    lines.append("")
    notes = [f"- {row['problem']}: {row['error']}" for row in rows if "error" in row]
    return lines + notes + ([""] if notes else [])


# --- driver -----------------------------------------------------------------------


def run_scale(args, command) -> int:
    choice = device.configure(args.device, args.dtype)
    settings = args.settings
    out = Path(args.out)
    rt.prepare_output_dir(out.parent, overwrite=True, marker=out.name)
    progress = rt.Progress(quiet=args.quiet)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    sections = set(args.sections)
    times, baseline, memory, sharded, sparse, sweeps = [], {}, [], None, [], []
    if sections & {"time", "memory"}:
        with tempfile.TemporaryDirectory(prefix="latentmix-scale-") as folder:
            paths, starts = {}, {}
            for n in settings.n:
                with progress.step(f"simulate N={n}"):
                    paths[n] = Path(folder) / f"rows_{n}.npy"
                    simulate_to_npy(paths[n], n, settings.d, settings.k, choice.dtype,
                                    args.seed)
                    head = np.load(paths[n], mmap_mode="r")[: min(n, 10_000)]
                    start = start_params(np.asarray(head), settings.k,
                                         args.covariance_type, args.seed)
                    starts[n] = Path(folder) / f"start_{n}.npz"
                    np.savez(starts[n], **start._asdict())
                if "time" in sections:
                    with progress.step(f"time: N={n}"):
                        times.append(time_row(np.load(paths[n]), start, settings,
                                              args.covariance_type))
            if "memory" in sections:
                baseline, memory = memory_rows(paths, starts, settings, args, choice,
                                               progress)
    if "sharded" in sections:
        sharded = sharded_section(settings, args, choice, progress)
    if "sparse" in sections:
        sparse = sparse_rows(settings, args, choice, progress)
    if "sweeps" in sections:
        sweeps = sweep_rows(settings, args, choice, progress)
    load = (load_before, os.getloadavg()[0])
    lines = header_lines(choice, command, load)
    lines += time_lines(times, settings, args, choice)
    lines += memory_lines(baseline, memory, settings, args, choice)
    lines += sharded_lines(sharded, settings)
    lines += sparse_lines(sparse, settings, args, choice)
    lines += sweep_lines(sweeps)
    lines += [f"Total benchmark time: {time.perf_counter() - started:.0f} s.", ""]
    report = "\n".join(lines)
    rt.atomic_write_text(out, report)
    if not args.quiet:
        print(report)
    return rt.EXIT_OK


# --- command line -----------------------------------------------------------------


# Options that override a field of the mode's Settings: (option, field, type, help).
OVERRIDES = (
    ("--n", "n", int_list, "rows of sections 1-2, e.g. 1e4,1e5,1e6 (default; "
     "--full adds 1e7)"),
    ("--d", "d", positive(int), "features (default 16)"),
    ("--k", "k", positive(int), "components (default 16)"),
    ("--iters", "iters", positive(int), "EM iterations timed (default 10)"),
    ("--repeats", "repeats", positive(int),
     "warm calls per measurement, the fastest counts (default 2)"),
    ("--chunk-rows", "chunk_rows", positive(int),
     f"rows per chunk out of core (default {DEFAULT_CHUNK_ROWS})"),
    ("--categories", "categories", int_list,
     "categories of section 4 (default 100,1000,10000)"),
    ("--sweep-k", "sweep_k", int_list, "K of the GMM sweep (default 1..20)"),
    ("--protocol-k", "protocol_k", int_list,
     "K of the multinomial sweep (default 2..10; --full: the tutorial's 20 K)"),
    ("--protocol-rows", "protocol_rows", positive(int),
     "training baskets of the multinomial sweep (default 20000; --full: all)"),
)


def add_scale_parser(subparsers):
    parser = subparsers.add_parser(
        "scale", help="rows, memory, devices, categories and K sweeps",
        description="How the EM scales: time per iteration and peak memory "
        "against N (in memory and out of core), sharded against single-device, "
        "sparse against dense multinomial EM, K sweeps in one program (module "
        "docstring of scripts/benchmark_scale.py).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="tiny sizes in every section (about 30 s; tests)")
    mode.add_argument("--full", action="store_true",
                      help="N up to 1e7 (about 10 GiB of memory) and the whole "
                      "multinomial protocol (an hour or more)")
    device.add_arguments(parser, dtype=True)
    parser.add_argument("--sections", type=choice_list(SECTIONS), default=SECTIONS,
                        help="comma-separated subset of " + ",".join(SECTIONS))
    parser.add_argument("--covariance-type", choices=COVARIANCE_TYPES,
                        default="diag", help="GMM covariances (default diag)")
    parser.add_argument("--dense-cap-gib", type=positive(float), default=2.0,
                        help="skip the dense layout above this size (default 2)")
    for option, field, kind, text in OVERRIDES:
        parser.add_argument(option, dest=field, type=kind, default=None, help=text)
    parser.add_argument("--seed", type=int, default=0, help="data and start seed")
    parser.add_argument("--out", default="out/benchmark_scale.md",
                        help="markdown output (default out/benchmark_scale.md)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress messages, no printed report")
    parser.set_defaults(run=_run_with_settings)
    return parser


def settings_from_args(args) -> Settings:
    """The mode's ``Settings`` (--quick, --full or default) with the options given."""
    settings = QUICK if args.quick else FULL if args.full else DEFAULT
    given = {field: getattr(args, field) for _, field, _, _ in OVERRIDES
             if getattr(args, field) is not None}
    return settings._replace(**given)


def _run_with_settings(args, command):
    # A UsageError (--device gpu without a GPU) is reported by benchmark.main.
    args.settings = settings_from_args(args)
    return run_scale(args, command)


# --- worker entry point -----------------------------------------------------------


def worker_main(argv) -> int:
    """``benchmark_scale.py --worker SPEC``: run one measurement, print its JSON."""
    if len(argv) != 2 or argv[0] != "--worker":
        print("run this benchmark as: python scripts/benchmark.py scale [options]",
              file=sys.stderr)
        return rt.EXIT_USAGE
    spec = json.loads(argv[1])
    device.configure(spec["device"], spec["dtype"])
    worker = sharded_worker if spec["mode"] == "sharded" else memory_worker
    print("RESULT " + json.dumps(worker(spec)), flush=True)
    return rt.EXIT_OK


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
