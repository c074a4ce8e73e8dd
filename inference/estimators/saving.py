"""Saved models: a documented, versioned folder format without pickle.

``est.save(path)`` writes two files into the folder ``path`` (created if
needed), each atomically (a temporary file, then ``os.replace``):

  model.json   metadata, UTF-8 JSON:
                 "format": "latentmix-model", "format_version": 1,
                 "latentmix_version": the package version that wrote it,
                 "model": "GaussianMixture" | "MultinomialMixture" |
                          "BayesianLinearRegression",
                 "covariance_type": the GMM's (else null),
                 "columns": the feature (count) column names, in order,
                 "named_columns": true when those names came from the data
                          (``feature_names_in_``), false for x0, x1, ...,
                 "dtype": the dtype of the fitted arrays ("float64"/"float32"),
                 "params": the constructor parameters that are plain values,
                 "attributes": the fitted scalars (n_iter_, converged_, ...),
                 "arrays": names of the arrays in arrays.npz, with "param."
                          (array parameters, e.g. means_init), "prior."
                          (the prior's fields) or no prefix (fitted arrays),
                 "prior": the prior's type name, or null,
                 "metadata": free-form facts from the writer (the CLI: the
                          data file, the target or groups column);
  arrays.npz   every array, ``numpy.savez`` (read with allow_pickle=False:
               numeric and fixed-width string arrays only).

``load(path)`` rebuilds the estimator (its class from "model", its parameters,
its fitted attributes) and gives identical predictions. ``devices`` is not
saved (a loaded model computes on JAX's default device) and a
``numpy.random.RandomState`` given as ``random_state`` is saved as None.
Format versions: 1 is the only one; a reader refuses a newer version.
"""

import importlib
import io
import json
import os
import tempfile
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np

__all__ = [
    "ARRAYS_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "load",
    "read_metadata",
    "register",
    "save_estimator",
]

FORMAT = "latentmix-model"
FORMAT_VERSION = 1
METADATA_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"

# model name -> (estimator class, prior class or None); filled by ``register``.
_REGISTRY: dict = {}


def register(estimator_class, prior_class=None):
    """Make ``load`` know a model class (each estimator module registers its
    own, so this module imports none of them)."""
    _REGISTRY[estimator_class.__name__] = (estimator_class, prior_class)
    return estimator_class


def save_estimator(estimator, path, *, metadata: dict | None = None) -> Path:
    """Write a fitted estimator to the folder ``path``; returns the folder.

    The fitted attributes written are the class's ``_saved_attributes``;
    ``metadata`` (JSON values) is stored as is.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    params, prior_name = {}, None
    for name, value in estimator.get_params(deep=False).items():
        if name == "devices":
            continue
        if hasattr(value, "_fields"):  # a prior (NamedTuple)
            prior_name = type(value).__name__
            for field, leaf in zip(value._fields, value, strict=True):
                arrays[f"prior.{field}"] = np.asarray(leaf)
        elif value is None or isinstance(value, bool | int | float | str):
            params[name] = value
        elif isinstance(value, np.integer | np.floating):
            params[name] = value.item()
        elif isinstance(value, np.ndarray | list | tuple):
            arrays[f"param.{name}"] = np.asarray(value)
        else:  # e.g. a RandomState: not a value that can be written
            params[name] = None
    attributes = {}
    for name in estimator._saved_attributes:
        if not hasattr(estimator, name):
            continue
        value = getattr(estimator, name)
        if isinstance(value, bool | int | float | str | np.generic):
            attributes[name] = value.item() if isinstance(value, np.generic) else value
        else:
            arrays[name] = _plain_array(value)
    named = hasattr(estimator, "feature_names_in_")
    columns = ([str(c) for c in estimator.feature_names_in_] if named else
               [f"x{j}" for j in range(estimator.n_features_in_)])
    dtype = next((str(a.dtype) for n, a in arrays.items()
                  if "." not in n and a.dtype.kind == "f"), "float64")
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "latentmix_version": _version(),
        "model": type(estimator).__name__,
        "covariance_type": getattr(estimator, "covariance_type", None),
        "columns": columns,
        "named_columns": named,
        "dtype": dtype,
        "params": params,
        "attributes": {k: _json_float(v) for k, v in attributes.items()},
        "arrays": sorted(arrays),
        "prior": prior_name,
        "metadata": metadata or {},
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _atomic_write(path / ARRAYS_FILE, buffer.getvalue())
    _atomic_write(path / METADATA_FILE,
                  (json.dumps(document, indent=2, allow_nan=False) + "\n").encode())
    return path


def read_metadata(path) -> dict:
    """model.json of a saved model, checked for format and version."""
    path = Path(path)
    file = path / METADATA_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} holds no saved model ({METADATA_FILE} not found); pass the "
            f"folder written by est.save(path) or by `latentmix fit --out`"
        )
    document = json.loads(file.read_text(encoding="utf-8"))
    if document.get("format") != FORMAT:
        raise ValueError(f"{file} is not a latentmix model (format "
                         f"{document.get('format')!r})")
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{file} has format version {version!r}; this latentmix "
            f"({_version()}) reads versions up to {FORMAT_VERSION}: upgrade it"
        )
    return document


def load(path):
    """The estimator saved in the folder ``path`` (``save_estimator``)."""
    document = read_metadata(path)
    model = document["model"]
    # The estimators register themselves when their package is imported.
    importlib.import_module("latentmix.inference.estimators")
    if model not in _REGISTRY:
        raise ValueError(f"unknown model {model!r} in {path}; known: "
                         f"{sorted(_REGISTRY)}")
    estimator_class, prior_class = _REGISTRY[model]
    with np.load(Path(path) / ARRAYS_FILE, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    params = dict(document["params"])
    for name, value in arrays.items():
        if name.startswith("param."):
            params[name[len("param."):]] = value
    if document.get("prior") is not None:
        fields = prior_class._fields
        params["prior"] = prior_class(*(arrays[f"prior.{field}"] for field in fields))
    estimator = estimator_class(**params)
    for name, value in document["attributes"].items():
        setattr(estimator, name, _from_json_float(value))
    for name, value in arrays.items():
        if "." not in name:
            setattr(estimator, name, value)
    for name in getattr(estimator_class, "_list_attributes", ()):
        if hasattr(estimator, name):
            setattr(estimator, name, [float(v) for v in getattr(estimator, name)])
    if document.get("named_columns"):
        estimator.feature_names_in_ = np.asarray(document["columns"], dtype=object)
    return estimator


def _plain_array(value) -> np.ndarray:
    """An array numpy.load can read without pickle: object arrays (e.g. group
    labels from pandas) become numeric or fixed-width strings."""
    array = np.asarray(value)
    if array.dtype == object:
        array = np.asarray(array.tolist())
        if array.dtype == object:
            array = array.astype(str)
    return array


def _version() -> str:
    try:
        return package_metadata.version("latentmix")
    except package_metadata.PackageNotFoundError:  # a source tree not installed
        return "unknown"


def _json_float(value):
    """Non-finite floats as strings ("inf", "-inf", "nan"): JSON has none."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def _from_json_float(value):
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def _atomic_write(path: Path, payload: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
