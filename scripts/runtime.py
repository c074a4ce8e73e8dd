"""Shared plumbing of the runnable scripts: exit codes, safe output, signals, progress.

Exit codes (RELIABILITY.md, section b): 0 ok (warnings allowed), 2 bad arguments,
3 invalid data, 4 numerical failure, 5 output/IO failure, 130 interrupted.

Output is written atomically: a temporary file in the destination folder, then
``os.replace``, so a crash never leaves a half-written file. The output folder is
checked for writability before any fitting starts.
"""

import json
import os
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_NUMERIC = 4
EXIT_OUTPUT = 5
EXIT_INTERRUPTED = 130


class OutputError(OSError):
    """The output folder or a file in it cannot be written (exit status 5)."""


class UsageError(ValueError):
    """Bad command-line arguments (exit status 2)."""


def prepare_output_dir(path, *, overwrite: bool, marker: str = "params.json") -> Path:
    """Create ``path`` if needed and prove it writable before any work starts.

    An existing ``marker`` file means a previous run's results are there: refuse
    unless ``overwrite``.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create output folder {path}: {error}") from None
    if (path / marker).exists() and not overwrite:
        raise UsageError(
            f"{path} already holds results ({marker}); pass --overwrite or choose "
            f"another --out"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OutputError(f"output folder {path} is not writable: {error}") from None
    return path


def atomic_write_bytes(path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(payload)
            # mkstemp creates 0600 files; give the result the usual permissions.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error}") from None
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _to_jsonable(value):
    """Nested dicts/lists/NamedTuples/arrays -> JSON values; non-finite -> None."""
    import numpy as np

    if isinstance(value, dict):
        return {str(key): _to_jsonable(item) for key, item in value.items()}
    if hasattr(value, "_asdict"):
        return _to_jsonable(value._asdict())
    if isinstance(value, list | tuple):
        return [_to_jsonable(item) for item in value]
    if hasattr(value, "__array__") and not isinstance(value, str):
        array = np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(object)
            array[~np.isfinite(array.astype(float))] = None
            return array.tolist() if array.ndim else array.item()
        if array.dtype.kind in "iub":
            return array.tolist()
        return array.astype(str).tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path, payload) -> Path:
    """Atomically write ``payload`` (arrays and NamedTuples allowed) as JSON.

    Non-finite floats become ``null`` so the file is strict JSON.
    """
    text = json.dumps(_to_jsonable(payload), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def use_agg_backend() -> None:
    """Draw with matplotlib's file-only Agg backend, whatever MPLBACKEND says.

    Called by every entry point's ``main()``: the scripts only write PNG files,
    and a backend set for another program (Jupyter's inline backend, a GUI one
    without a display) must neither fail a run nor open a window.
    """
    import os

    os.environ.pop("MPLBACKEND", None)
    import matplotlib

    matplotlib.use("Agg", force=True)


def draw_figure(make, path, caption, figures: list, messages: list) -> None:
    """Draw ``make()`` and save it to ``path``; on success append (path, caption).

    A failure to draw or to save becomes a message in ``messages``: a plot must
    never cost the user the results.
    """
    try:
        fig = make()
    except Exception as error:  # a plot must never cost the user the results
        messages.append(f"could not draw {Path(path).name}: {error}")
        return
    saved = save_figure(fig, path, messages)
    if saved is not None:
        figures.append((str(saved), caption))


def save_figure(fig, path, warnings_list: list | None = None):
    """Atomically save a matplotlib figure as PNG; a failure is a warning, not fatal.

    Returns the path, or None when plotting failed (the message is appended to
    ``warnings_list`` and printed to stderr).
    """
    import io

    import matplotlib.pyplot as plt

    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        atomic_write_bytes(path, buffer.getvalue())
        return Path(path)
    except Exception as error:  # a plot must never cost the user the results
        message = f"could not write figure {path}: {error}"
        if warnings_list is not None:
            warnings_list.append(message)
        print(f"warning: {message}", file=sys.stderr)
        return None
    finally:
        plt.close(fig)


@contextmanager
def interrupt_as_keyboard_interrupt():
    """Turn SIGTERM into KeyboardInterrupt for the duration of the block.

    A jitted computation cannot be interrupted from inside; Python raises the
    interrupt as soon as control returns from XLA, between fits.
    """

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def collect_warnings(categories, fn, messages: list):
    """Run ``fn()``, recording warnings of ``categories`` as text in ``messages``
    (once each) so a report can list them; other warnings pass on unchanged."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", categories)
        result = fn()
    for item in caught:
        if issubclass(item.category, categories):
            text = f"{item.category.__name__}: {item.message}"
            if text not in messages:
                messages.append(text)
        else:
            warnings.warn_explicit(item.message, item.category, item.filename,
                                   item.lineno)
    return result


class StepTimer:
    """Context manager: announce a step, then store its duration in ``timings``."""

    def __init__(self, timings: dict, label: str, progress):
        self.timings, self.label, self.progress = timings, label, progress

    def __enter__(self):
        self.progress(self.label + " ...")
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.label] = time.perf_counter() - self.start
        self.progress(f"{self.label}: {self.timings[self.label]:.1f}s")


class Progress:
    """One-line progress messages on stderr for steps longer than a few seconds."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self.start
            print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)

    @contextmanager
    def step(self, message: str):
        """Announce a step, then report its duration."""
        self(message + " ...")
        started = time.perf_counter()
        yield
        self(f"{message}: done in {time.perf_counter() - started:.1f}s")
