"""Ending a process that used a Temporal client.

The SDK's Rust runtime keeps threads that can crash CPython's finalization at exit
("Fatal Python error: PyGILState_Release", temporalio/sdk-python#300, still open), turning a
finished command into SIGABRT/SIGSEGV. Our command-line entry points therefore flush their
output and leave without finalization once their work (and their own cleanup) is done.
"""

from __future__ import annotations

import os
import sys


def exit_now(code: int) -> None:
    """Flush stdout/stderr and end the process with `code`, skipping interpreter teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
