"""The same user code with scikit-learn's GaussianMixture or latentmix's.

    python docs/examples/swap.py sklearn
    python docs/examples/swap.py latentmix

Each library runs in its own process (no shared caches or thread pools). The
user code below is written for scikit-learn and runs unchanged with either
class; only the import differs. Prints one JSON line: the seconds of the first
call (latentmix's includes compiling the EM), of a second call on new data of
the same shape, and what the fits found.
"""

import json
import sys
import time

import numpy as np


def user_code(GaussianMixture, X):
    """Unchanged scikit-learn code: fit, score, label, BIC."""
    model = GaussianMixture(n_components=8, covariance_type="full", n_init=4,
                            random_state=0)
    model.fit(X)
    labels = model.predict(X)
    return {"score": model.score(X), "bic": model.bic(X),
            "n_iter": int(model.n_iter_), "converged": bool(model.converged_),
            "sizes": np.bincount(labels, minlength=8).tolist()}


def blobs(seed, num_rows=100_000, num_features=8, num_clusters=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (num_clusters, num_features))
    labels = rng.integers(0, num_clusters, num_rows)
    scales = rng.uniform(0.5, 2.0, (num_clusters, 1))
    return centres[labels] + scales[labels] * rng.normal(size=(num_rows,
                                                               num_features))


def main(library: str) -> None:
    if library == "sklearn":
        from sklearn.mixture import GaussianMixture
    else:
        from latentmix.inference import GaussianMixture
    timings, results = [], []
    for seed in (0, 1):
        X = blobs(seed)
        started = time.perf_counter()
        results.append(user_code(GaussianMixture, X))
        timings.append(time.perf_counter() - started)
    print(json.dumps({"library": library, "first_s": round(timings[0], 2),
                      "second_s": round(timings[1], 2), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1])
