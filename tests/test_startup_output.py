"""A newcomer's first commands print what matters: no TensorFlow start-up notes, real errors still shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clifer_core.tensorflow_startup import STARTUP_NOTES

CLIFER = Path(sys.executable).with_name("clifer")


def newcomer_environment() -> dict[str, str]:
    """This environment without the log level the Makefile sets: what a user's shell has."""
    environment = dict(os.environ)
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return environment


@pytest.mark.parametrize("arguments", [["--help"], ["evaluate-imagination", "--help"]], ids=" ".join)
def test_help_prints_no_tensorflow_startup_notes(arguments):
    assert CLIFER.is_file(), f"{CLIFER} is not installed (make setup)"
    result = subprocess.run([str(CLIFER), *arguments], capture_output=True, text=True, timeout=120,
                            env=newcomer_environment())
    assert result.returncode == 0, result.stderr
    assert "usage: clifer" in result.stdout
    assert not [line for line in result.stderr.splitlines() if STARTUP_NOTES.search(line)], result.stderr
    assert "absl::InitializeLog" not in result.stderr and "oneDNN" not in result.stderr, result.stderr


def test_tensorflow_import_keeps_every_other_stderr_line():
    script = (
        "import os, threading, time, clifer_core\n"
        "from clifer_core.tensorflow_startup import stderr_without_startup_notes\n"
        "def start_up(i):\n"
        "    with stderr_without_startup_notes():\n"
        "        os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "        os.write(2, b'I0000 00:00:1.5   42 port.cc:153] oneDNN custom operations are on. You may see\\n')\n"
        "        time.sleep(0.05)\n"
        "        os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "        os.write(2, b'E0000 00:00:1.5   42 loader.cc:9] a real error %d\\n' % i)\n"
        "threads = [threading.Thread(target=start_up, args=(i,)) for i in range(3)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "import tensorflow\n"
        "os.write(2, b'after\\n')\n"
        "raise SystemExit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=newcomer_environment())
    assert result.returncode == 3
    errors = [f"E0000 00:00:1.5   42 loader.cc:9] a real error {i}" for i in range(3)]
    assert sorted(result.stderr.splitlines()) == sorted(errors + ["after"]), result.stderr
    assert result.stderr.splitlines()[-1] == "after", "stderr is back on the terminal after the captures"
