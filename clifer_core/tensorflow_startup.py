"""TensorFlow's start-up without its chatter; every other line it writes still shows.

``TF_CPP_MIN_LOG_LEVEL=2`` silences the CPU-feature note, but TensorFlow 2.21 logs the
oneDNN note (``port.cc``) through absl before absl is initialised, so it prints anyway,
preceded by absl's "All log messages before absl::InitializeLog()" line, twice. Turning
oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``) would hide them by changing the numerics and
speed; instead :func:`quiet_first_import` runs the first ``import tensorflow`` with the
process's stderr (file descriptor 2, where C++ writes) captured, then writes back every
captured line except those start-up notes: warnings, errors and tracebacks stay visible.
The same filter wraps the TFLite interpreter's set-up, whose XNNPACK note ignores the
log level too. ``TF_CPP_MIN_LOG_LEVEL=0`` (asking for TensorFlow's INFO lines) keeps everything.

Training on the CPU is not bit-reproducible by default, even with a fixed seed: kernels
split sums over threads, and the order changes from run to run. :func:`deterministic_tensorflow`
asks for deterministic kernels and one thread per op before TensorFlow starts (the training
commands' ``--deterministic``).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

STARTUP_NOTES = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\s*$"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.\s*$"
    r"|^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\s*$",
    re.MULTILINE,
)
DETERMINISTIC_ENVIRONMENT = {"TF_DETERMINISTIC_OPS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
"""What :func:`deterministic_tensorflow` sets: deterministic kernels, and one thread per op so sums keep one order."""
_CAPTURING = threading.RLock()  # one capture at a time: interleaved dup2s would lose fd 2


def quiet_first_import() -> None:
    """Arrange for the next ``import tensorflow`` to drop the start-up notes (no-op if already imported)."""
    if "tensorflow" in sys.modules or _wants_info() or any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlow())


def deterministic_tensorflow() -> None:
    """Make this process's TensorFlow bit-reproducible (same seed, same machine: same weights), at the cost of
    one thread per op. Works until TensorFlow runs its first op; RuntimeError after that, when it is too late."""
    if all(os.environ.get(k) == v for k, v in DETERMINISTIC_ENVIRONMENT.items()):
        return
    os.environ.update(DETERMINISTIC_ENVIRONMENT)
    if "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as error:
        raise RuntimeError("deterministic TensorFlow must be asked for before TensorFlow runs its first op (its "
                           "thread pools are made then); run the training in its own process with --deterministic"
                           ) from error
    tf.config.experimental.enable_op_determinism()


def _wants_info() -> bool:
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() in ("", "0")


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, through the normal finders, and wraps its execution in the filter."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            with stderr_without_startup_notes():
                execute(module)

        spec.loader.exec_module = exec_module
        return spec


@contextmanager
def stderr_without_startup_notes():
    """Capture file descriptor 2 for the block; afterwards write back every line but :data:`STARTUP_NOTES`."""
    if _wants_info():
        yield
        return
    with _CAPTURING:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
                capture.seek(0)
                lines = capture.read().splitlines(keepends=True)
                kept = b"".join(line for line in lines if not STARTUP_NOTES.search(line.decode("utf-8", "replace")))
                if kept:
                    os.write(2, kept)
