"""Shared plumbing of the runnable scripts: exit codes, safe output, signals, progress.

Exit codes (RELIABILITY.md, section b): 0 ok (warnings allowed), 2 bad arguments,
3 invalid data, 4 numerical failure, 5 output/IO failure, 130 interrupted.

Output is written atomically: a temporary file in the destination folder, then
``os.replace``, so a crash never leaves a half-written file. The output folder is
checked for writability before any fitting starts, and held by one run at a time
(``OutputFolder``: a lock, stale temporary files of a killed run removed, the
previous run's files removed on ``--overwrite``).

Signals are handled in one place (``interrupts``): SIGINT and SIGTERM only set a
flag, which the progress lines and the chunked samplers' callbacks turn into a
``KeyboardInterrupt`` at their next boundary (a few seconds at most), never
inside an XLA computation or callback; a second signal removes this run's
temporary files and exits at once with status 130.
"""

import fcntl
import json
import os
import re
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
# Seconds a first interrupt waits for the next checkpoint before the run exits
# with what is on disk (an XLA compilation holds the main thread: 91 s seen).
INTERRUPT_GRACE_S = 15.0


class OutputError(OSError):
    """The output folder or a file in it cannot be written (exit status 5)."""


class UsageError(ValueError):
    """Bad command-line arguments (exit status 2)."""


def prepare_output_dir(path, *, overwrite: bool, marker: str = "params.json",
                       check_marker: bool = True) -> Path:
    """Create ``path`` if needed and prove it writable before any work starts.

    An existing ``marker`` file means a previous run's results are there: refuse
    unless ``overwrite`` (``check_marker=False`` leaves that to the caller).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create output folder {path}: {error}") from None
    if check_marker and (path / marker).exists() and not overwrite:
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


# atomic_write_bytes' temporary files: "." + the target's name + "." + mkstemp's
# eight random characters.
_TEMPORARY = re.compile(r"\.[^/]+\.[A-Za-z0-9_]{8}")


class OutputFolder:
    """One run's hold on its output folder, for the length of a ``with`` block.

    On entry: the folder is created and proved writable; a lock on the folder
    itself (``fcntl.flock`` on its descriptor: no lock file is left behind)
    makes a second run into the same folder fail at once with ``OutputError``
    (exit 5) instead of mixing its files with this run's; hidden temporary
    files left by a killed run are removed; an
    existing ``marker`` (a previous run's params.json) needs ``overwrite``, and
    then the files that run listed (params.json "files") are removed, so no
    output of another model stays beside the new ones. On exit the lock is
    released.
    """

    def __init__(self, path, *, overwrite: bool, marker: str = "params.json"):
        self.path = Path(path)
        self.overwrite = overwrite
        self.marker = marker
        self._lock = None

    def __enter__(self) -> "OutputFolder":
        self._created = not self.path.exists()
        path = prepare_output_dir(self.path, overwrite=self.overwrite,
                                  marker=self.marker, check_marker=False)
        try:
            self._lock = os.open(path, os.O_RDONLY)
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            self._lock = None
            raise OutputError(
                f"{path} is being written by another run right now; wait for it "
                f"to finish or choose another --out") from None
        except OSError as error:
            raise OutputError(f"cannot lock output folder {path}: {error}") from None
        self._remove_stale_temporaries()
        previous = path / self.marker
        if previous.exists():
            if not self.overwrite:
                self.__exit__(None, None, None)
                raise UsageError(_occupied_message(path, previous))
            self._remove_previous_outputs(previous)
        return self

    def __exit__(self, *exc):
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None
        if exc and exc[0] is not None and getattr(self, "_created", False):
            try:  # a run that failed before writing anything leaves no folder
                self.path.rmdir()
            except OSError:
                pass  # not empty (or gone): keep what is there

    def _remove_stale_temporaries(self) -> None:
        """Hidden ``.name.XXXX`` files and ``.tmp-*`` folders of atomic writes
        that a killed run left (no other run can be writing: we hold the lock)."""
        import shutil

        for entry in self.path.iterdir():
            name = entry.name
            if not name.startswith("."):
                continue
            if entry.is_dir() and name.startswith(".tmp-"):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_file() and (name.startswith(".write-test-")
                                      or _TEMPORARY.fullmatch(name)):
                entry.unlink(missing_ok=True)

    def _remove_previous_outputs(self, previous: Path) -> None:
        import shutil

        try:
            listed = json.loads(previous.read_text()).get("files", [])
        except (OSError, ValueError, AttributeError):
            listed = []
        for name in [*listed, self.marker]:
            target = (self.path / str(name)).resolve()
            if target.parent != self.path.resolve():
                continue  # only files directly inside the folder
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)


def _occupied_message(path: Path, previous: Path) -> str:
    """Why --overwrite is needed, saying when the earlier run never finished."""
    try:
        status = json.loads(previous.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "running":
        return (f"{path} holds the files of a run that never finished (params.json "
                f"says status 'running': it was killed); pass --overwrite to "
                f"replace them or choose another --out")
    return (f"{path} already holds results ({previous.name}); pass --overwrite "
            f"or choose another --out")


def atomic_write_bytes(path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        register_temporary(temporary)
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
        finally:
            forget_temporary(temporary)
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
    ``warnings_list``, or printed to stderr when there is none).
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
            warnings_list.append(message)  # the caller reports it
        else:
            print(f"warning: {message}", file=sys.stderr)
        return None
    finally:
        plt.close(fig)


_INTERRUPT = {"requested": False, "early": False, "early_handler": None,
              "temporary": set(), "on_abort": None}


def catch_early_interrupts() -> None:
    """Remember a SIGINT or SIGTERM that arrives before ``interrupts()`` starts
    (while JAX is imported: seconds); ``interrupts()`` then starts with the
    interrupt requested, and the run stops at its first check (exit 130).

    Without it a Ctrl-C in those seconds was lost: Python's default handler
    raises KeyboardInterrupt wherever the main thread is, and raised inside a
    garbage-collection callback (importing JAX runs some) the exception is
    printed and ignored, so the run went on and ended with exit status 0; a
    SIGTERM killed the process without a word. Only for a process that runs
    one command (it replaces process-wide handlers): call it before the heavy
    imports.
    """

    def handler(signum, frame):
        _INTERRUPT["early"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    _INTERRUPT["early_handler"] = handler


def interrupt_requested() -> bool:
    """True once SIGINT or SIGTERM arrived during ``interrupts()``."""
    return _INTERRUPT["requested"]


def check_interrupt() -> None:
    """Raise KeyboardInterrupt when an interrupt was requested (call between
    chunks of work: never inside jitted code)."""
    if _INTERRUPT["requested"]:
        raise KeyboardInterrupt("interrupt requested")


def register_temporary(path) -> None:
    """A file that a second interrupt must remove before exiting."""
    _INTERRUPT["temporary"].add(str(path))


def forget_temporary(path) -> None:
    _INTERRUPT["temporary"].discard(str(path))


def on_abort(fn) -> None:
    """``fn()`` runs (from a helper thread) when a second signal ends the run,
    e.g. to record status "interrupted"; None removes it."""
    _INTERRUPT["on_abort"] = fn


def _abort(reason: bytes = b"interrupted again: exiting now\n") -> None:
    """The second signal (or a checkpoint that did not come within the grace
    period): remove our temporary files, record, exit 130 now."""
    for path in list(_INTERRUPT["temporary"]):
        try:
            os.unlink(path)
        except OSError:
            pass
    if _INTERRUPT["on_abort"] is not None:
        try:
            _INTERRUPT["on_abort"]()
        except Exception:  # exiting anyway: nothing may stop it
            pass
    os.write(2, reason)
    os._exit(EXIT_INTERRUPTED)


@contextmanager
def interrupts():
    """SIGINT and SIGTERM set a flag (``check_interrupt`` raises at the next
    boundary); a second one removes registered temporary files and exits 130
    at once, even while an XLA computation runs.

    The Python-level handler only runs when the main thread next executes
    Python code, which a long compiled computation delays; so the C-level
    handler's wake-up byte (``signal.set_wakeup_fd``) is also read by a
    helper thread, which counts the signals and, at the second, exits. The
    first signal also prints how to quit at once. When no checkpoint comes
    within ``INTERRUPT_GRACE_S`` of the first signal (an XLA compilation or
    one long computation holds the main thread), the helper ends the run the
    same way, keeping what was already written. Outside the block the
    previous handlers are restored.
    """
    import select
    import threading

    def handler(signum, frame):
        if not _INTERRUPT["requested"]:
            _INTERRUPT["requested"] = True
            os.write(2, b"interrupt requested: stopping at the next checkpoint "
                        b"(a few seconds); interrupt again to quit at once\n")

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def watch():
        count, deadline = 0, None
        while True:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                ready, _, _ = select.select([read_fd], [], [], wait)
                if not ready:  # the block is still running after the grace
                    _abort(f"no checkpoint within {INTERRUPT_GRACE_S:g} s of the "
                           f"interrupt (a long compilation or computation): "
                           f"exiting now with what was written\n".encode())
                data = os.read(read_fd, 64)
            except (OSError, ValueError):
                return
            if not data:
                return
            count += sum(byte in (signal.SIGINT, signal.SIGTERM) for byte in data)
            if count >= 2:
                _abort()
            if count and deadline is None:
                deadline = time.monotonic() + INTERRUPT_GRACE_S

    previous = {sig: signal.signal(sig, handler)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="latentmix-interrupts",
                               daemon=True)
    watcher.start()
    # an interrupt caught before the block (catch_early_interrupts) counts
    _INTERRUPT["requested"], _INTERRUPT["early"] = _INTERRUPT["early"], False
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, old in previous.items():
            if old is not None and old is _INTERRUPT["early_handler"]:
                # after the block, Python's own handling, not the early catch
                old = (signal.default_int_handler if sig == signal.SIGINT
                       else signal.SIG_DFL)
            signal.signal(sig, old)
        os.close(write_fd)  # the watcher reads b"" and ends
        watcher.join(timeout=1.0)
        os.close(read_fd)
        _INTERRUPT["on_abort"] = None


def chunk_callback(progress, label: str):
    """A callback for the chunked samplers and optimisers: one progress line per
    chunk, and an interrupt checkpoint."""

    def callback(done, total):
        progress(f"{label}: {done}/{total}")

    return callback


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
        check_interrupt()

    @contextmanager
    def step(self, message: str):
        """Announce a step, then report its duration; an interrupt requested
        before or during the step is honoured at its start and end."""
        check_interrupt()
        self(message + " ...")
        started = time.perf_counter()
        yield
        self(f"{message}: done in {time.perf_counter() - started:.1f}s")
        check_interrupt()
